"""StylEx: explain an image classifier by training a GAN whose StyleSpace holds what the classifier uses.

Lang et al., "Explaining in Style: Training a GAN to explain a classifier in StyleSpace", ICCV 2021.
Nothing heavy happens at import: the names below are imported on first use (module `__getattr__`).

    import stylex
    model, classifier = stylex.load_run("runs/demo-train/stylex")  # StylEx + the classifier it explains
    model, classifier = stylex.load_zoo("pepper-64")  # or a shipped model (stylex.list_models())
    result = stylex.AttFind(model, classifier, fast=50).run(x)  # x [N, 3, R, R] in [-1, 1]
    explanation = stylex.counterfactual(model, classifier, result, x[0])
    stylex.write_report("runs/demo-train/stylex", "runs/demo-train/report")  # static HTML; stylex.serve(...) is live
    stylex.train_stylex("data/", "runs/clf", "runs/mine", stylex.preset("shapes-32", max_minutes=10))  # training

`make demo-train` writes the run folder runs/demo-train/stylex (the whole chain from nothing); `make demo`
explains the shipped pepper-64 model without training and writes into runs/demo.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "StylEx": "stylex.models.stylex",
    "load_run": "stylex.pipeline",
    "AttFind": "stylex.api",
    "counterfactual": "stylex.api",
    "load_attfind": "stylex.api",
    "load_zoo": "stylex.zoo",
    "list_models": "stylex.zoo",
    "AttFindResult": "stylex.attfind.result",
    "ImageExplanation": "stylex.explain.counterfactual",
    "write_report": "stylex.explain.report",
    "explain_image": "stylex.explain.run",
    "explain_images": "stylex.explain.run",
    "serve": "stylex.explain.viewer",
    "StylexError": "stylex.errors",
    "train_stylex": "stylex.pipeline",
    "reconstruct": "stylex.pipeline",
    "preset": "stylex.config",
    "TrainConfig": "stylex.config",
    "export_run": "stylex.zoo",
}

__all__ = ["__version__", *_LAZY]


_SUBMODULES = {"attfind", "classifier", "config", "data", "device", "errors", "explain", "files", "metrics", "models",
               "pipeline", "training", "zoo"}  # fmt: skip
"""Reached as attributes after a bare `import stylex` too (`stylex.zoo.zoo_path(...)`, as the docs write it)."""


def __getattr__(name: str) -> Any:
    import importlib

    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"stylex.{name}")  # which sets the attribute itself
    raise AttributeError(f"module 'stylex' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
