"""Loading a classifier from a stylex directory, a TorchScript file, or `package.module:factory`.

Nothing here unpickles: weights are safetensors, TorchScript goes through `torch.jit.load`, and a
factory is the user's own code, imported by name.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import re
import shlex
import sys
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from stylex.classifier import trust
from stylex.classifier.adapter import ClassifierAdapter, ClassifierSource
from stylex.classifier.small_cnn import SmallCNN
from stylex.classifier.spec import InputSpec
from stylex.classifier.store import CONFIG_NAME, FORMAT_VERSION, WEIGHTS_NAME
from stylex.errors import StylexError

_FACTORY = re.compile(r"^([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)$")
ARCHITECTURES = {"SmallCNN": SmallCNN}
_SPEC_HINT = "--classifier-input-size / --classifier-range / --classifier-mean / --classifier-std"


def load_classifier(
    source: str,
    weights: str | None = None,
    input_spec: InputSpec | None = None,
    device: str | torch.device = "cpu",
    resolution: int | None = None,
    class_names: list[str] | None = None,
) -> ClassifierAdapter:
    """Load a classifier and wrap it as a frozen `ClassifierAdapter`.

    Args:
        source: One of
            - a directory written by `train_classifier` (config.json + weights.safetensors);
            - a TorchScript file (`torch.jit.save`), loaded with `torch.jit.load`;
            - "package.module:factory": `factory()` must return an `nn.Module` (the current directory is
              searched too). The module may define `input_spec` (InputSpec or dict) and `class_names`.
        weights: Safetensors state dict to load strictly into the module (factory or TorchScript), or
            to use instead of a directory's weights.safetensors; None = the source's own weights.
        input_spec: The classifier's input convention; None = the directory's recorded spec, the
            factory module's `input_spec`, or else [-1, 1] at the model resolution (with a warning).
        device: Where the classifier runs.
        resolution: The model resolution; when given (or known from the spec), the classifier is
            checked at once with `ClassifierAdapter.check`, which also fixes `num_classes`.
        class_names: The names of the classifier's outputs, in order, replacing any the source declares (for a
            TorchScript or factory model without `class_names`); one per output, all different.

    Returns:
        The adapter, in eval mode with frozen parameters, on `device`.

    Raises:
        StylexError: Missing file, unimportable module, factory not returning a module, weights that
            do not match, a classifier whose output fails `check`, or `class_names` that do not name its outputs.
    """
    from stylex.device import check_device

    adapter = _load(str(source), weights, input_spec, check_device(device))
    check_at = resolution or adapter.input_spec.size
    if check_at is not None:
        adapter.check(check_at)
    trust.remember(ClassifierSource.from_dict(adapter.to_dict()))  # given directly: its runs need no --trust-code
    if class_names is not None:
        adapter.class_names = _checked_names(class_names, adapter)
    return adapter


def _checked_names(names: list[str], adapter: ClassifierAdapter) -> list[str]:
    """`names`, stripped, when they are one distinct non-empty name per output of `adapter`."""
    names = [str(n).strip() for n in names]
    if not all(names) or len(set(names)) != len(names):
        raise StylexError(f"class names {names} must be distinct and non-empty, one per classifier output.")
    k = adapter._num_classes
    if k is not None and len(names) != k:
        raise StylexError(
            f"{len(names)} class names ({', '.join(names)}) for a classifier with {k} outputs; give one per output, "
            "in the order of its logits."
        )
    return names


def _load(
    source: str,
    weights: str | None,
    input_spec: InputSpec | None,
    device: str | torch.device,
    search_path: str | None = None,
    kind: str | None = None,
    program: bytes | None = None,
) -> ClassifierAdapter:
    """Dispatch on the kind of source (given: a run's record, which must match what is on disk; else guessed from
    the disk); no check. `program`: a TorchScript file's bytes, read once by the caller that checked them. Building
    the module (its initial weights, replaced by the saved ones) leaves the caller's random numbers alone."""
    if weights is not None and not os.path.isfile(weights):
        raise StylexError(
            f"Classifier weights file '{weights}' does not exist; check the path to the .safetensors file."
        )
    found = "stylex" if os.path.isdir(source) else "torchscript" if os.path.isfile(source) else "factory"
    if kind is not None and kind != found:  # a record naming a folder kind at a program file loaded it unchecked
        what = {"stylex": "folder", "torchscript": "file", "factory": "module name"}[found]
        raise StylexError(
            f"The run records its classifier '{source}' as a {kind!r} classifier, but it is a {what}; the record "
            "was changed by hand: point it at the classifier the run was trained with."
        )
    with torch.random.fork_rng(devices=[]):
        if found == "stylex":
            adapter = _load_directory(source, weights, input_spec)
        elif found == "torchscript":
            adapter = _load_torchscript(source, weights, input_spec, device, program)
        elif _FACTORY.match(source):
            adapter = _load_factory(source, weights, input_spec, search_path, recorded=kind is not None)
        else:
            dotted = _dotted_factory(source)
            raise StylexError(
                f"Classifier '{source}' is neither an existing directory or file nor 'package.module:factory'; "
                + (
                    f"a factory is named by its module, not its file: {dotted} (with the folder holding it on "
                    "PYTHONPATH)."
                    if dotted
                    else "give a classifier directory from `stylex train-classifier`, a TorchScript file, or "
                    "module:factory."
                )
            )
    return adapter.to(device)


def load_classifier_from_dict(
    d: dict[str, Any],
    device: str | torch.device = "cpu",
    base_dir: str | os.PathLike | None = None,
    check_fingerprint: bool = True,
    resolution: int | None = None,
    trust_code: bool | None = None,
) -> ClassifierAdapter:
    """Reload the classifier a StylEx run recorded with `ClassifierAdapter.to_dict()`.

    Args:
        d: The recorded dict (kind, location, weights, input_spec, num_classes, fingerprint, ...).
        device: Where the classifier runs.
        base_dir: Directory that relative locations in `d` are relative to (e.g. the run folder,
            see `ClassifierSource.relative_to`); None = the current directory.
        check_fingerprint: Raise if the weights differ from those recorded.
        resolution: Model resolution to run `check` at (None = the spec's size, if any).
        trust_code: load the classifier code `d` names (a `module:factory` or a TorchScript file) even when this
            machine has not trusted it before (see `stylex.classifier.trust`): a run folder from elsewhere is
            data, but its classifier code runs whatever its author chose. None = STYLEX_TRUST_CODE or the
            machine's trust list; True also adds it to that list.

    Returns:
        The adapter, with the recorded input spec and class names.
    """
    src = ClassifierSource.from_dict(d)
    if src.kind == "module":
        raise StylexError(
            f"The run's classifier '{src.location}' was an in-memory module, which the run cannot reload; from "
            "Python pass the same module again (classifier=...), else its folder, TorchScript file or module:factory."
        )
    src = _moved_along(src.resolved(base_dir), d, base_dir)
    if src.kind != "factory" and not os.path.exists(src.location):
        where = f" (recorded in {Path(base_dir) / 'config.json'})" if base_dir is not None else ""
        raise StylexError(
            f"The run's classifier {src.location}{where} is not there; put it back, or move it beside the run as "
            "it was (the run finds it by its relative place too), or `stylex export` the run where it is."
        )
    program = None
    if src.kind == "torchscript" and os.path.isfile(src.location):  # read once: the bytes checked are those loaded
        program = Path(src.location).read_bytes()
    if src.kind in trust.CODE_KINDS:
        trust_code = trust.trusts_code() if trust_code is None else trust_code
        if not (trust_code or trust.is_trusted(src, program)):
            what = "Python code" if src.kind == "factory" else "a TorchScript program"
            raise StylexError(
                f"The run's classifier is {what}, {os.path.normpath(src.location)!r}, which this machine has not "
                "trusted yet: loading it runs what the run folder's author chose. For your own run, or one you "
                "trust, add --trust-code "
                + (
                    "once"
                    if trust.can_write()
                    else "(every time: STYLEX_TRUST_STORE is empty, so none is kept)"
                    if not trust.keeps_a_list()
                    else f"(every time: the trust list {trust.store_path()} cannot be written here)"
                )
                + " (`stylex --trust-code COMMAND ...`; trust_code=True from Python, or STYLEX_TRUST_CODE=1)."
            )
    adapter = _load(src.location, src.weights, src.input_spec, device, src.search_path, src.kind, program)
    if src.kind in trust.CODE_KINDS and trust_code:  # remembered once it loaded: a failed import trusts nothing
        trust.remember(src, program)
    if src.class_names is not None and adapter.class_names is None:
        adapter.class_names = list(src.class_names)
    if src.num_classes is not None and adapter._num_classes is None:
        adapter._num_classes = src.num_classes
    if check_fingerprint and src.fingerprint is not None and adapter.fingerprint() != src.fingerprint:
        raise StylexError(
            f"Classifier {src.describe()} has weights fingerprint {adapter.fingerprint()}, but the run was trained "
            f"with {src.fingerprint}; point the run at the original classifier or retrain the run"
            + (
                " (a factory that builds its model without loading saved weights gives new ones at every call: load "
                "them, or pass --classifier-weights)."
                if src.kind == "factory" and src.weights is None
                else "."
            )
        )
    check_at = resolution or adapter.input_spec.size
    if check_at is not None:
        adapter.check(check_at)
    return adapter


def relative_places(d: dict[str, Any], run_dir: str | os.PathLike) -> dict[str, Any]:
    """`d` (a classifier entry of a run's config.json) with the classifier's and its weights' places relative to the
    run folder too ("location_relative", "weights_relative"), so that a project folder moved as a whole (run, data
    and classifier together) still finds its classifier."""
    d = dict(d)
    for key in ("location", "weights"):
        value = d.get(key)
        if d.get("kind") != "factory" or key == "weights":
            if isinstance(value, str) and os.path.isabs(value):
                d[f"{key}_relative"] = os.path.relpath(value, os.path.abspath(run_dir))
    return d


def _moved_along(src: ClassifierSource, d: dict[str, Any], base_dir: str | os.PathLike | None) -> ClassifierSource:
    """`src` with a missing absolute place replaced by the recorded relative one, when that one exists."""
    if base_dir is None:
        return src
    changes: dict[str, Any] = {}
    for key in ("location", "weights"):
        value, rel = getattr(src, key), d.get(f"{key}_relative")
        if key == "location" and src.kind == "factory":
            continue
        if value is not None and not os.path.exists(value) and isinstance(rel, str):
            moved = os.path.normpath(os.path.join(os.fspath(base_dir), rel))
            if os.path.exists(moved):
                changes[key] = moved
    return replace(src, **changes) if changes else src


# --- the three kinds of source ---------------------------------------------------------------------------


def _load_directory(path: str, weights: str | None, input_spec: InputSpec | None) -> ClassifierAdapter:
    config_path = Path(path) / CONFIG_NAME
    if not config_path.is_file():
        raise StylexError(
            f"Classifier directory '{path}' has no {CONFIG_NAME}; "
            f"train one with `stylex train-classifier --out {shlex.quote(str(path))}` or give a TorchScript file or "
            "module:factory."
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise StylexError(
            f"Classifier config '{config_path}' is not readable JSON ({e}); retrain the classifier."
        ) from e
    version = config.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise StylexError(
            f"Classifier config '{config_path}' has format_version {version!r}, this stylex reads up to "
            f"{FORMAT_VERSION}; upgrade stylex or retrain the classifier."
        )
    arch = config.get("architecture")
    if arch not in ARCHITECTURES:
        raise StylexError(
            f"Classifier config '{config_path}' names architecture {arch!r}; known: {sorted(ARCHITECTURES)}."
        )
    sizes = config.get("model") if isinstance(config.get("model"), dict) else {}
    for key, high in (("num_classes", 100_000), ("resolution", 4096), ("width", 4096), ("num_stages", 16),
                      ("blocks_per_stage", 64)):  # fmt: skip
        value = sizes.get(key)
        if isinstance(value, int) and value > high:  # a hostile config asking for a 36 TB network
            raise StylexError(f"Classifier config '{config_path}' asks for {key} {value}; the most is {high}.")
    try:
        model = ARCHITECTURES[arch](**config["model"])
    except (KeyError, TypeError, AssertionError) as e:
        raise StylexError(
            f"Classifier config '{config_path}' has bad model arguments ({e}); retrain the classifier."
        ) from e
    weights_path = weights if weights is not None else str(Path(path) / WEIGHTS_NAME)
    if not os.path.isfile(weights_path):
        raise StylexError(f"Classifier directory '{path}' has no {WEIGHTS_NAME}; retrain the classifier.")
    _load_weights(model, weights_path, path)
    spec = input_spec if input_spec is not None else InputSpec.from_dict(config.get("input_spec") or {})
    source = ClassifierSource(
        kind="stylex",
        location=os.path.abspath(path),
        weights=None if weights is None else os.path.abspath(weights),
        input_spec=spec,
    )
    return ClassifierAdapter(
        model,
        spec,
        source=source,
        num_classes=config.get("num_classes"),
        class_names=config.get("class_names"),
    )


def _dotted_factory(source: str) -> str | None:
    """'mypkg.models:make' for a factory named by its file ('mypkg/models.py:make'), else None."""
    path, sep, name = source.rpartition(":")
    if not sep or not path.endswith(".py") or not name.isidentifier():
        return None
    parts = Path(path[:-3]).parts
    if not parts or not all(p.isidentifier() for p in parts):
        return None
    return ".".join(parts) + ":" + name


def _load_torchscript(
    path: str,
    weights: str | None,
    input_spec: InputSpec | None,
    device: str | torch.device,
    program: bytes | None = None,
) -> ClassifierAdapter:
    if path.endswith(".safetensors"):
        raise StylexError(
            f"Classifier '{path}' is a weights file, not a model; give the architecture as module:factory "
            f"and this file as the weights (--classifier-weights {path})."
        )
    if path.endswith(".pt2"):
        raise StylexError(
            f"Classifier '{path}' is a torch.export archive, which loads through pickle; "
            "give a TorchScript file or module:factory plus safetensors weights instead."
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated from torch 2.10
            model = torch.jit.load(io.BytesIO(program) if program is not None else path, map_location=device)
    except Exception as e:
        raise StylexError(
            f"Classifier '{path}' is not a TorchScript file ({type(e).__name__}); save one with "
            "torch.jit.script(model).save(path), or give module:factory plus safetensors weights."
        ) from e
    if weights is not None:
        _load_weights(model, weights, path)
    if input_spec is None:
        input_spec = InputSpec()
        warnings.warn(
            f"Classifier '{path}': no input spec given, assuming images in [-1, 1] at the model resolution; "
            f"set {_SPEC_HINT} if it expects otherwise.",
            stacklevel=4,
        )
    source = ClassifierSource(
        kind="torchscript",
        location=os.path.abspath(path),
        weights=None if weights is None else os.path.abspath(weights),
        input_spec=input_spec,
    )
    class_names = _declared_class_names(model)  # a scripted `class_names: List[str]` attribute, if any
    return ClassifierAdapter(model, input_spec, source=source, class_names=class_names)


def _declared_class_names(model) -> list[str] | None:
    """The model's `class_names` attribute when it is a list of strings (kept by torch.jit.script), else None."""
    try:
        names = getattr(model, "class_names", None)
    except Exception:  # a TorchScript attribute of a type Python cannot read
        return None
    if isinstance(names, list | tuple) and names and all(isinstance(n, str) for n in names):
        return list(names)
    return None


def _load_factory(
    spec: str,
    weights: str | None,
    input_spec: InputSpec | None,
    search_path: str | None = None,
    recorded: bool = False,
) -> ClassifierAdapter:
    match = _FACTORY.match(spec)
    assert match is not None  # the caller (_load) checked the form
    module_name, attr_path = match.groups()
    # `stylex` run as a console script does not search the current directory; a run records where its factory's
    # module was found there, so that it loads from anywhere later. A run's record is searched in that folder first
    # and only there: a module of the same name in today's working directory is not the one it was trained (and
    # trusted) with.
    if recorded:  # the recorded folder, or none (an installed package): never today's working directory
        candidates = [search_path] if search_path else []
        module = _import_recorded(module_name, spec, search_path)
    else:
        candidates = [d for d in [os.getcwd(), search_path] if d]
        added = [d for d in candidates if d not in sys.path]
        sys.path.extend(added)
        try:
            module = importlib.import_module(module_name)
        except Exception as e:
            raise StylexError(
                f"Cannot import module '{module_name}' for classifier '{spec}' ({type(e).__name__}: {e}); "
                "install it or run from the directory that holds it (or add it to PYTHONPATH)."
            ) from e
        finally:
            for d in added:
                if d in sys.path:
                    sys.path.remove(d)
    found_in = _found_in(module_name, candidates)
    if found_in is None and not recorded:  # found through PYTHONPATH (or a .pth): recorded like the working directory
        found_in = _outside_installed(module_name)
    factory: Any = module
    for part in attr_path.split("."):
        if not hasattr(factory, part):
            raise StylexError(
                f"Module '{module_name}' has no '{attr_path}' for classifier '{spec}'; check the name after ':'."
            )
        factory = getattr(factory, part)
    if not callable(factory):
        raise StylexError(
            f"Classifier factory '{spec}' is a {type(factory).__name__}, not callable; name a function or class."
        )
    try:
        model = factory()
    except Exception as e:
        raise StylexError(
            f"Classifier factory '{spec}' raised {type(e).__name__}: {e}; it must build the model with no arguments."
        ) from e
    if not isinstance(model, nn.Module):
        raise StylexError(
            f"Classifier factory '{spec}' returned {type(model).__name__}, expected a torch.nn.Module; "
            "return the model."
        )
    if weights is not None:
        _load_weights(model, weights, spec)
    if input_spec is None:
        declared = getattr(module, "input_spec", None)
        if isinstance(declared, InputSpec):
            input_spec = declared
        elif isinstance(declared, dict):
            input_spec = InputSpec.from_dict(declared)
        else:
            input_spec = InputSpec()
            warnings.warn(
                f"Classifier '{spec}': no input spec given and module '{module_name}' defines no `input_spec`, "
                f"assuming images in [-1, 1] at the model resolution; set {_SPEC_HINT} if it expects otherwise.",
                stacklevel=4,
            )
    class_names = getattr(module, "class_names", None)
    source = ClassifierSource(
        kind="factory",
        location=spec,
        weights=None if weights is None else os.path.abspath(weights),
        input_spec=input_spec,
        search_path=found_in,
    )
    return ClassifierAdapter(
        model, input_spec, source=source, class_names=list(class_names) if class_names is not None else None
    )


def _import_recorded(module_name: str, spec: str, search_path: str | None):
    """Import the module a run's record names from the recorded folder only (or, with none, from the installed
    packages), never from the working directory that `python -m`, `python -c` and notebooks put on sys.path: the
    top package is located first and nothing runs unless it is there."""
    import importlib.machinery

    cwd = os.getcwd()
    installed = [p for p in sys.path if p not in ("", ".") and os.path.abspath(p) != cwd]
    search = [search_path] if search_path else installed
    top = module_name.split(".")[0]
    found = importlib.machinery.PathFinder.find_spec(top, search)
    where = search_path or "the installed packages"
    if found is None and search_path is None:  # a run written before stylex recorded the factory's folder
        raise StylexError(
            f"Module '{top}' for classifier '{spec}' is not among the installed packages, and the run records no "
            "folder for it (older versions of stylex recorded none for a module found through PYTHONPATH, or for "
            "any module before that); install it, or name its folder for this command: "
            f"PYTHONPATH=/its/folder stylex ... (from Python, pass the classifier)."
        )
    if found is None:
        raise StylexError(
            f"Module '{top}' for classifier '{spec}' is not in {where}, where the run recorded it; put it back there "
            "(a run loads its factory from the recorded folder only, never from PYTHONPATH or the working directory; "
            "or edit search_path in the run's config.json; from Python, pass the classifier)."
        )
    loaded = sys.modules.get(top)
    if loaded is not None and getattr(loaded, "__file__", None) != found.origin:
        raise StylexError(
            f"Module '{top}' for classifier '{spec}' is already imported from {getattr(loaded, '__file__', None)}, "
            f"not from {where}; load the run in a fresh Python process."
        )
    saved = sys.path[:]
    sys.path[:] = [*search, *(p for p in installed if p not in search)]
    try:
        return importlib.import_module(module_name)
    except Exception as e:
        raise StylexError(
            f"Cannot import module '{module_name}' for classifier '{spec}' ({type(e).__name__}: {e}); "
            "install it or put it back where the run recorded it."
        ) from e
    finally:
        sys.path[:] = saved


def _outside_installed(module_name: str) -> str | None:
    """The folder the module's top package came from when that is not where Python installs packages (site-packages,
    the standard library): a folder on PYTHONPATH, which a run must record, as it records the working directory (a
    factory found there was unfindable by every later command without the same PYTHONPATH)."""
    import site
    import sysconfig

    folder = _module_folder(module_name)
    if folder is None:
        return None
    roots = {sysconfig.get_paths().get(k) for k in ("purelib", "platlib", "stdlib", "platstdlib")}
    roots |= {*site.getsitepackages(), site.getusersitepackages()}
    real = os.path.realpath(folder)
    for root in filter(None, roots):
        root = os.path.realpath(root)
        if real == root or real.startswith(root + os.sep):
            return None
    return folder


def _module_folder(module_name: str) -> str | None:
    """The folder holding the (already imported) module's top package or module file."""
    top = sys.modules.get(module_name.split(".")[0])
    where = getattr(top, "__file__", None)
    if where is None:
        return None
    folder = os.path.dirname(os.path.abspath(where))
    return os.path.dirname(folder) if os.path.basename(where) == "__init__.py" else folder


def _found_in(module_name: str, candidates: list[str]) -> str | None:
    """The directory among `candidates` (the working directory, a recorded one) that the module's top package came
    from, else None (an installed package)."""
    folder = _module_folder(module_name)
    return folder if folder is not None and folder in [os.path.abspath(d) for d in candidates] else None


def _load_weights(model: nn.Module, weights: str, name: str) -> None:
    """Strictly load a safetensors state dict, with one sentence listing what does not match."""
    try:
        state = load_file(weights)
    except Exception as e:
        raise StylexError(
            f"Classifier weights '{weights}' are not a readable safetensors file ({type(e).__name__}: {e}); "
            "save them with safetensors.torch.save_file(model.state_dict(), path)."
        ) from e
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong_shape:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)):
            if keys:
                shown = ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
                parts.append(f"{label}: {shown}")
        raise StylexError(
            f"Classifier weights '{weights}' do not match the model from '{name}' ({'; '.join(parts)}); "
            "pass the weights saved from this exact architecture."
        )
    try:
        model.load_state_dict(state, strict=True)
    except Exception as e:
        raise StylexError(
            f"Classifier weights '{weights}' could not be loaded into the model from '{name}' ({e}); "
            "pass the weights saved from this exact architecture."
        ) from e
