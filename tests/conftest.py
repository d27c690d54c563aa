"""Shared fixtures: tiny, seeded, CPU-only."""

from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path

import pytest
import torch
from torch import nn

# The classifier trust list (stylex.classifier.trust) of the tests: a fresh file, never the user's own; subprocesses
# inherit it.
os.environ["STYLEX_TRUST_STORE"] = str(Path(tempfile.mkdtemp(prefix="stylex-tests-")) / "trusted-classifiers.json")
os.environ.pop("STYLEX_TRUST_CODE", None)

# A shell without job control starts background commands (`nohup make test &`) with Ctrl-C ignored, and Python keeps
# it so; the tests that interrupt stylex (and the subprocesses they start, which inherit it) need Ctrl-C to act.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


class StandInClassifier(nn.Module):
    """A frozen 2-class classifier on brightness of the left vs right half, with `features` like SmallCNN."""

    num_classes = 2
    has_features = True

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.c1 = nn.Conv2d(3, 8, 3, 2, 1)
        self.c2 = nn.Conv2d(8, 8, 3, 2, 1)
        self.fc = nn.Linear(8, 2)
        self.requires_grad_(False)
        self.eval()

    def features(self, x):
        a = torch.relu(self.c1(x))
        return [a, torch.relu(self.c2(a))]

    def forward(self, x):
        return self.fc(self.features(x)[1].mean((2, 3))) * 3


@pytest.fixture
def stand_in_classifier():
    return StandInClassifier()


@pytest.fixture
def tiny_images():
    g = torch.Generator().manual_seed(0)
    return torch.rand(40, 3, 16, 16, generator=g) * 2 - 1


def run_cli(*args, ok: bool = True):
    """Invoke the `stylex` CLI in-process; with ok=True, assert it succeeded."""
    from click.testing import CliRunner

    from stylex.cli import main

    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def make_tiny_run(root, num_images: int = 32, steps: int = 3, data=None):
    """synth (16 px) -> train-classifier (1 epoch) -> train (tiny preset) under `root`; returns `root`.

    Args:
        root: folder for data/, clf/, run/.
        num_images: synthetic images to render (ignored when `data` is given).
        steps: StylEx training steps.
        data: an existing image folder to use instead of rendering one.
    """
    if data is None:
        data = root / "data"
        run_cli("data", "synth", "--out", data, "--num-images", num_images, "--resolution", 16, "--quiet")
    run_cli("train-classifier", "--data", data, "--out", root / "clf", "--resolution", 16, "--epochs", 1,
            "--width", 8, "--quiet")  # fmt: skip
    run_cli("train", "--data", data, "--classifier", root / "clf", "--out", root / "run", "--preset", "tiny",
            "--max-steps", steps, "--quiet")  # fmt: skip
    return root


def use_stand_in_zoo(monkeypatch, zoo_dir, models: dict | None = None):
    """Point `stylex.zoo.zoo_root()` at `zoo_dir`, first copying exported model folders into it.

    Args:
        zoo_dir: the stand-in zoo folder (created).
        models: {name: an exported folder (`stylex export --out`)} to copy in as `zoo_dir/<name>`.
    """
    import shutil

    import stylex.zoo

    zoo_dir.mkdir(parents=True, exist_ok=True)
    for name, folder in (models or {}).items():
        shutil.copytree(folder, zoo_dir / name)
    monkeypatch.setattr(stylex.zoo, "zoo_root", lambda: zoo_dir)
    return zoo_dir
