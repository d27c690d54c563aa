"""The bad-input matrix: every input a user can get wrong, through the CLI end to end.

Each row of `CASES` builds one bad input and runs one `stylex` command on it. Every row must end with:
a non-zero exit status, exactly one line on stderr (besides one-line warnings), starting `error: `, that names
the file (or option) and says what to do, no traceback, no pickle payload executed, and no half-written output
(the guarded folders are absent or byte-for-byte unchanged). `SUCCEEDS` lists the unusual inputs that must load
instead (grey, RGBA, 16-bit, palette, non-square and mixed-size images), each checked to come out as 8-bit RGB.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import load_file, save_file

from stylex.cli import main
from stylex.data import load_dataset
from stylex.errors import StylexError

RES = 16

# ------------------------------------------------------------------------------------------------ fixtures


def cli(*args) -> object:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def ok(*args) -> object:
    result = cli(*args)
    assert result.exit_code == 0, result.output
    return result


BAD_CLASSIFIERS = """
import torch

class Lambda(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn
        self.w = torch.nn.Parameter(torch.ones(1))

    def forward(self, x):
        return self.fn(x * self.w)

def flat():  # [N]: no class dimension
    return Lambda(lambda x: x.mean(dim=(1, 2, 3)))

def one_logit():  # [N, 1]: K = 1
    return Lambda(lambda x: x.mean(dim=(1, 2, 3))[:, None])

def nan():  # [N, 3] of NaN
    return Lambda(lambda x: x.mean(dim=(2, 3)) * float("nan"))

def indices():  # class indices instead of logits
    return Lambda(lambda x: x.mean(dim=(2, 3)).argmax(1, keepdim=True).repeat(1, 2))

def crashes():
    return Lambda(lambda x: x.view(7, -1))
"""


@dataclass
class World:
    """Shared, read-only inputs: synthetic data, two classifiers with different weights, a tiny trained run."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def clf(self) -> Path:
        return self.root / "clf"

    @property
    def clf_other(self) -> Path:
        return self.root / "clf_other"

    @property
    def run(self) -> Path:
        return self.root / "run"

    def train_args(self, data, out, *extra, classifier=None) -> list:
        return ["train", "--data", data, "--classifier", classifier or self.clf, "--out", out, "--preset", "tiny",
                "--max-steps", 2, "--quiet", *extra]  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    w = World(tmp_path_factory.mktemp("world"))
    ok("data", "synth", "--out", w.data, "--num-images", 32, "--resolution", RES, "--quiet")
    for out, seed in ((w.clf, 0), (w.clf_other, 1)):
        ok("train-classifier", "--data", w.data, "--out", out, "--resolution", RES, "--epochs", 1, "--width", 8,
           "--seed", seed, "--quiet")  # fmt: skip
    ok(*w.train_args(w.data, w.run))
    (w.root / "stylex_bad_classifiers.py").write_text(BAD_CLASSIFIERS)
    return w


# ------------------------------------------------------------------------------------------------ builders


class Payload:
    """Unpickling this creates `marker` (a harmless stand-in for any code a pickle can run)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def png(path: Path, array: np.ndarray) -> Path:
    """Save `array` as a PNG (the mode follows the array: [H, W] grey or 16-bit, [H, W, 3] RGB, [H, W, 4] RGBA)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def rgb(seed: int, h: int = RES, w: int | None = None) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w or h, 3), dtype=np.uint8)


def image_folder(root: Path, n: int = 4) -> Path:
    for i in range(n):
        png(root / "imgs" / ("a" if i % 2 else "b") / f"{i}.png", rgb(i))
    return root / "imgs"


def copy_run(w: World, t: Path) -> Path:
    shutil.copytree(w.run, t / "run")
    return t / "run"


def edit_json(path: Path, edit: Callable[[dict], None]) -> None:
    d = json.loads(path.read_text())
    edit(d)
    path.write_text(json.dumps(d))


def resave_weights(path: Path, **metadata: str) -> None:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = {**(f.metadata() or {}), **metadata}
    save_file(load_file(str(path)), str(path), metadata=meta)


def resave_state(path: Path, **changes) -> None:
    state = torch.load(path, weights_only=True)
    torch.save({**state, **changes}, path)


def run_with_classifier_from(w: World, t: Path, source: Path) -> Path:
    """A copy of the run whose recorded classifier folder now holds the classifier in `source`."""
    run = copy_run(w, t)
    shutil.copytree(source, t / "clf")
    edit_json(run / "config.json", lambda d: d["classifier"].update(location=str(t / "clf")))
    return run


# ------------------------------------------------------------------------------------------------ the matrix


@dataclass
class Case:
    """One bad input.

    Attributes:
        id: the test id.
        build: (world, scratch folder) -> CLI arguments; creates the bad input under the scratch folder.
        words: what the error line must contain (the file or option it names, and the gist of the fix).
        guard: scratch-relative paths that must be absent or unchanged afterwards (outputs and run folders).
        marker: the case plants a pickle payload; its marker file must never appear.
        exit_code: 1 for errors stylex finds, 2 for click's usage errors (a path that does not exist, ...).
        needs_factory: the case names a factory in the `stylex_bad_classifiers` module the world fixture writes.
    """

    id: str
    build: Callable[[World, Path], list]
    words: tuple[str, ...]
    guard: tuple[str, ...] = ("out",)
    marker: bool = False
    exit_code: int = 1
    needs_factory: bool = False


def _t(w: World, t: Path, data) -> list:
    """`stylex train` on `data` into t/out."""
    return w.train_args(data, t / "out")


def _write(path: Path, content: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def _truncated_png(t: Path) -> Path:
    folder = image_folder(t)
    p = folder / "a" / "1.png"
    p.write_bytes(p.read_bytes()[:60])
    return folder


def _npz(t: Path, **arrays) -> Path:
    np.savez(t / "x.npz", **arrays)
    return t / "x.npz"


def _evil_npz(t: Path) -> Path:
    images = np.zeros((4, RES, RES, 3), np.uint8)
    names = np.array([Payload(t / "marker"), "b"], dtype=object)
    np.savez(t / "x.npz", images=images, labels=np.array([0, 1, 0, 1]), class_names=names)
    return t / "x.npz"


def _factory(name: str) -> Callable[[World, Path], list]:
    return lambda w, t: w.train_args(w.data, t / "out", classifier=f"stylex_bad_classifiers:{name}")


def _hostile_export(edit: Callable[[Path, Path], None]) -> Callable[[World, Path], list]:
    """An export of the world's run, edited as a hostile author would (edit(export, tmp)), then reconstructed."""

    def build(w: World, t: Path) -> list:
        ok("export", w.run, "--out", t / "exp", "--num-samples", 2)
        (t / "private").mkdir()
        png(t / "private" / "patient_0043.png", rgb(7))
        edit(t / "exp", t)
        return ["reconstruct", "--model", t / "exp", "--out", t / "out"]

    return build


def _huge_clf(w: World, t: Path) -> Path:
    """A copy of the classifier folder whose config.json asks for a 36 TB network."""
    shutil.copytree(w.clf, t / "clf")
    edit_json(t / "clf" / "config.json", lambda d: d["model"].update(width=10**6))
    return t / "clf"


def _run_with_program_as_folder(w: World, t: Path) -> list:
    run = copy_run(w, t)
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(run / "clf.pt"))
    edit_json(run / "config.json", lambda d: d["classifier"].update(kind="stylex", location="clf.pt"))
    return ["reconstruct", "--model", run, "--out", t / "out"]


def _run_naming_code(w: World, t: Path) -> list:
    """A run folder from elsewhere whose config.json names a factory classifier shipped beside it, which writes the
    marker when imported: importing it would run the author's code."""
    run = copy_run(w, t)
    (run / "evil_factory.py").write_text(f"open({str(t / 'marker')!r}, 'w').close()\ndef build():\n    pass\n")
    edit_json(run / "config.json", lambda d: d["classifier"].update(kind="factory", location="evil_factory:build",
                                                                    search_path=str(run)))  # fmt: skip
    return ["reconstruct", "--model", run, "--out", t / "out"]


def _evil_torch_save(t: Path) -> Path:
    torch.save({"model": Payload(t / "marker")}, t / "clf.pt")
    return t / "clf.pt"


def _evil_raw_pickle(t: Path) -> Path:
    (t / "clf.pt").write_bytes(pickle.dumps(Payload(t / "marker")))
    return t / "clf.pt"


def _evil_classifier_dir(w: World, t: Path) -> Path:
    shutil.copytree(w.clf, t / "clf")
    torch.save({"weights": Payload(t / "marker")}, t / "clf" / "weights.safetensors")
    return t / "clf"


def _evil_state(w: World, t: Path) -> list:
    run = copy_run(w, t)
    state = torch.load(run / "state.pt", weights_only=True)
    torch.save({**state, "extra": Payload(t / "marker")}, run / "state.pt")
    return w.train_args(w.data, run, "--resume")


def _evil_weights(w: World, t: Path) -> list:
    run = copy_run(w, t)
    torch.save({"G_ema.const": Payload(t / "marker")}, run / "weights.safetensors")
    return ["reconstruct", "--model", run]


def _set(*overrides: str) -> Callable[[World, Path], list]:
    return lambda w, t: w.train_args(w.data, t / "out", *[a for o in overrides for a in ("--set", o)])


def _resume_with(setup: Callable[[Path], None]) -> Callable[[World, Path], list]:
    def build(w: World, t: Path) -> list:
        run = copy_run(w, t)
        setup(run)
        return w.train_args(w.data, run, "--resume")

    return build


def _reconstruct_with(setup: Callable[[Path], None]) -> Callable[[World, Path], list]:
    def build(w: World, t: Path) -> list:
        run = copy_run(w, t)
        setup(run)
        return ["reconstruct", "--model", run, "--out", t / "out"]

    return build


CASES = [
    # --- data ---------------------------------------------------------------------------------------------
    Case("data-missing-path", lambda w, t: _t(w, t, t / "nope"), ("nope", "does not exist")),
    Case("data-empty-folder", lambda w, t: _t(w, t, (t / "empty").mkdir() or t / "empty"), ("empty", "no images")),
    Case(
        "data-only-non-image-files",
        lambda w, t: _t(w, t, _write(t / "docs" / "README.txt", "hello").parent),
        ("docs", "no images"),
    ),
    Case("data-truncated-image", lambda w, t: _t(w, t, _truncated_png(t)), ("1.png", "re-export or delete")),
    Case(
        "data-corrupt-image",
        lambda w, t: _t(w, t, _write(t / "imgs" / "a" / "x.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64).parent.parent),
        ("x.png", "re-export or delete"),
    ),
    Case(
        "data-non-image-with-image-name",
        lambda w, t: _t(w, t, _write(t / "imgs" / "a" / "notes.jpg", "just text").parent.parent),
        ("notes.jpg", "re-export or delete"),
    ),
    Case(
        "data-non-image-file-as-data",
        lambda w, t: _t(w, t, _write(t / "notes.txt", "just text")),
        ("notes.txt", "pass a folder of images or an .npz"),
    ),
    Case(
        "data-images-and-class-folders-mixed",
        lambda w, t: _t(w, t, png(image_folder(t) / "loose.png", rgb(9)).parent),
        ("loose.png", "move the loose images"),
    ),
    Case(
        "data-too-few-images",
        lambda w, t: _t(w, t, png(t / "few" / "0.png", rgb(0)).parent),
        ("few", "at least 4"),
    ),
    Case(
        "npz-wrong-dtype",
        lambda w, t: _t(w, t, _npz(t, images=np.zeros((4, RES, RES, 3), np.float32))),
        ("x.npz", "float32", "uint8"),
    ),
    Case(
        "npz-wrong-shape-nchw",
        lambda w, t: _t(w, t, _npz(t, images=np.zeros((4, 3, RES, RES), np.uint8))),
        ("x.npz", "NCHW"),
    ),
    Case(
        "npz-wrong-shape-2d",
        lambda w, t: _t(w, t, _npz(t, images=np.zeros((4, RES), np.uint8))),
        ("x.npz", "[N, H, W, 3]"),
    ),
    Case(
        "npz-labels-wrong-shape",
        lambda w, t: _t(w, t, _npz(t, images=np.zeros((4, RES, RES, 3), np.uint8), labels=np.zeros((4, 2), int))),
        ("x.npz", "labels"),
    ),
    Case("npz-no-images", lambda w, t: _t(w, t, _npz(t, pixels=np.zeros(3))), ("x.npz", "no 'images'")),
    Case("npz-not-a-zip", lambda w, t: _t(w, t, _write(t / "x.npz", b"garbage")), ("x.npz", "numpy.savez")),
    Case("npz-pickle-payload", lambda w, t: _t(w, t, _evil_npz(t)), ("x.npz", "object arrays"), marker=True),
    # --- classifier --------------------------------------------------------------------------------------
    Case(
        "classifier-returns-N",
        _factory("flat"),
        ("stylex_bad_classifiers:flat", "shape [2]", "one logit per class"),
        needs_factory=True,
    ),
    Case("classifier-returns-K1", _factory("one_logit"), ("one_logit", "K >= 2"), needs_factory=True),
    Case("classifier-returns-nan", _factory("nan"), ("stylex_bad_classifiers:nan", "non-finite"), needs_factory=True),
    Case("classifier-returns-indices", _factory("indices"), ("indices", "raw logits"), needs_factory=True),
    Case("classifier-crashes", _factory("crashes"), ("crashes", "failed on a batch"), needs_factory=True),
    Case(
        "classifier-module-missing",
        lambda w, t: w.train_args(w.data, t / "out", classifier="no_such_module_xyz:make"),
        ("no_such_module_xyz", "install it"),
    ),
    Case(
        "classifier-not-torchscript",
        lambda w, t: w.train_args(w.data, t / "out", classifier=_write(t / "clf.pt", b"junk")),
        ("clf.pt", "TorchScript"),
    ),
    Case(
        "classifier-pickle-payload-torch-save",
        lambda w, t: w.train_args(w.data, t / "out", classifier=_evil_torch_save(t)),
        ("clf.pt", "not a TorchScript file"),
        marker=True,
    ),
    Case(
        "classifier-pickle-payload-raw",
        lambda w, t: w.train_args(w.data, t / "out", classifier=_evil_raw_pickle(t)),
        ("clf.pt", "not a TorchScript file"),
        marker=True,
    ),
    Case(
        "classifier-weights-pickle-payload",
        lambda w, t: w.train_args(
            w.data,
            t / "out",
            "--classifier-weights",
            _write(t / "w.safetensors", pickle.dumps(Payload(t / "marker"))),
            classifier="stylex_bad_classifiers:flat",
        ),
        ("w.safetensors", "safetensors"),
        marker=True,
        needs_factory=True,
    ),
    Case(
        "classifier-dir-pickle-payload",
        lambda w, t: w.train_args(w.data, t / "out", classifier=_evil_classifier_dir(w, t)),
        ("weights.safetensors", "safetensors"),
        marker=True,
    ),
    Case(
        "classifier-dir-without-config",
        lambda w, t: w.train_args(w.data, t / "out", classifier=(t / "c").mkdir() or t / "c"),
        ("config.json", "train-classifier"),
    ),
    # --- config ------------------------------------------------------------------------------------------
    Case("config-unknown-key", _set("lr_q=1"), ("lr_q", "unknown config key", "did you mean lr_g, lr_e or lr_d")),
    Case("config-misspelt-key", _set("batchsize=8"), ("batchsize", "did you mean batch_size?")),
    Case("config-unknown-nested-key", _set("model.depth=3"), ("model.depth", "unknown config key")),
    Case("config-wrong-type", _set("lr_g=fast"), ("lr_g", "float", "fast")),
    Case("config-wrong-type-bool", _set("channels_last=3"), ("channels_last", "true or false")),
    Case("config-wrong-length", _set("betas=[0.5]"), ("betas", "2 numbers")),
    Case("config-out-of-range-lr", _set("lr_g=-1"), ("lr_g", "positive")),
    Case("config-out-of-range-interval", _set("log_every=0"), ("log_every", ">= 1")),
    Case("config-resolution", _set("model.resolution=12"), ("model.resolution", "power of two")),
    Case("config-no-equals", _set("lr_g"), ("lr_g", "key=value")),
    Case(
        "config-unknown-preset",
        lambda w, t: [*w.train_args(w.data, t / "out"), "--preset", "huge"],
        ("huge", "tiny"),
    ),
    Case(
        "config-json-unknown-key",
        _resume_with(lambda run: edit_json(run / "config.json", lambda d: d["train"].update(warp=9))),
        ("config.json", "warp"),
        guard=("run",),
    ),
    Case("config-too-large", _set("model.w_dim=100000"), ("model.w_dim", "<= 4096", "100000")),
    Case(  # a hostile run folder: refused before the networks are built (it asked for 40 GB)
        "config-json-huge-network",
        _reconstruct_with(
            lambda run: edit_json(run / "config.json", lambda d: d["train"]["model"].update(w_dim=100000))
        ),
        ("model.w_dim must be an integer <= 4096, got 100000",),
        guard=("run", "out"),
    ),
    Case(  # every size within its own bound, 12 billion parameters together
        "config-json-huge-in-total",
        _reconstruct_with(
            lambda run: edit_json(
                run / "config.json",
                lambda d: d["train"]["model"].update(
                    resolution=1024,
                    z_dim=4096,
                    w_dim=4096,
                    num_mapping_layers=64,
                    channel_base=131072,
                    channel_max=4096,
                ),
            )
        ),
        ("billion parameters; stylex loads at most 1 billion",),
        guard=("run", "out"),
    ),  # fmt: skip
    Case(
        "config-json-huge-num-classes",
        _reconstruct_with(lambda run: edit_json(run / "config.json", lambda d: d.update(num_classes=10**9))),
        ("declares num_classes 1000000000", "2 to 100,000"),
        guard=("run", "out"),
    ),
    Case(
        "classifier-config-huge-width",
        lambda w, t: w.train_args(w.data, t / "out", classifier=_huge_clf(w, t)),
        ("asks for width 1000000; the most is 4096",),
    ),  # fmt: skip
    Case(
        "config-json-damaged",
        _reconstruct_with(lambda run: (run / "config.json").write_text('{"train": ')),
        ("config.json", "not valid JSON"),
        guard=("run", "out"),
    ),
    Case(
        "config-resume-changed",
        lambda w, t: [*w.train_args(w.data, copy_run(w, t), "--resume"), "--set", "lr_g=0.1"],
        ("config.json", "lr_g", "same preset"),
        guard=("run",),
    ),
    # --- checkpoints -------------------------------------------------------------------------------------
    Case(
        "checkpoint-weights-other-version",
        _reconstruct_with(lambda run: resave_weights(run / "weights.safetensors", format_version="0")),
        ("weights.safetensors", "format version 0", "re-train"),
        guard=("run", "out"),
    ),
    Case(  # a downloaded export whose config points at files outside it: they ended up in reports
        "export-data-outside",
        _hostile_export(lambda e, t: edit_json(e / "stylex" / "config.json", lambda d: d.update(data="../../private"))),
        ("records its data at '../../private', outside the exported model's folder",),
    ),
    Case(
        "export-classifier-outside",
        _hostile_export(
            lambda e, t: edit_json(e / "stylex" / "config.json", lambda d: d["classifier"].update(location=str(t)))
        ),
        ("records its classifier location at", "outside the exported model's folder"),
    ),
    Case(
        "export-link-outside",
        _hostile_export(lambda e, t: (e / "samples" / "x.png").symlink_to(t / "private" / "patient_0043.png")),
        ("x.png in the exported model's folder is a link to", "patient_0043.png, outside it"),
    ),
    Case(  # a record saying "a classifier folder" at a TorchScript file loaded the program without any trust
        "pairing-run-kind-changed",
        _run_with_program_as_folder,
        ("records its classifier", "as a 'stylex' classifier, but it is a file"),
        guard=("run", "out"),
    ),
    Case(
        "pairing-run-names-code",
        _run_naming_code,
        ("Python code, 'evil_factory:build'", "--trust-code"),
        guard=("run", "out"),
    ),  # fmt: skip
    Case(  # the receiver of an export cannot re-train: it is told to ask for a new export
        "checkpoint-export-other-version",
        _reconstruct_with(lambda run: resave_weights(run / "weights.safetensors", format_version="0", exported="1")),
        ("weights.safetensors", "format version 0", "ask for an export made with this version"),
        guard=("run", "out"),
    ),
    Case(
        "config-other-version",
        _reconstruct_with(
            lambda run: (run / "config.json").write_text(
                json.dumps({**json.loads((run / "config.json").read_text()), "format_version": 2})
            )
        ),
        ("config.json", "format version 2", "reads version 1", "re-train"),
        guard=("run", "out"),
    ),
    Case(
        "checkpoint-state-other-version",
        _resume_with(lambda run: resave_state(run / "state.pt", format_version=2)),
        ("state.pt", "format version 2", "re-train"),
        guard=("run",),
    ),
    Case(
        "checkpoint-weights-truncated",
        _reconstruct_with(lambda run: (run / "weights.safetensors").write_bytes(b"\x10\x00")),
        ("weights.safetensors", "not a readable safetensors"),
        guard=("run", "out"),
    ),
    Case(
        "checkpoint-weights-other-network",
        _reconstruct_with(lambda run: edit_json(run / "config.json", lambda d: d["train"]["model"].update(w_dim=8))),
        ("weights.safetensors", "do not fit the network of config.json"),
        guard=("run", "out"),
    ),
    Case(
        "checkpoint-state-pickle-payload",
        _evil_state,
        ("state.pt", "refuses to unpickle"),
        guard=("run",),
        marker=True,
    ),
    Case(
        "checkpoint-weights-pickle-payload",
        _evil_weights,
        ("weights.safetensors", "not a readable safetensors"),
        guard=("run",),
        marker=True,
    ),
    Case(
        "checkpoint-not-a-run",
        lambda w, t: ["reconstruct", "--model", shutil.copytree(w.clf, t / "run"), "--out", t / "out"],
        ("run", "not a StylEx run folder", "stylex train"),
        guard=("run", "out"),
    ),
    # --- a model paired with another classifier -------------------------------------------------------------
    Case(
        "pairing-resume-other-classifier",
        lambda w, t: w.train_args(w.data, copy_run(w, t), "--resume", classifier=w.clf_other),
        ("another classifier", "fingerprint", "the classifier the run was started with"),
        guard=("run",),
    ),
    Case(
        "pairing-reconstruct-other-classifier",
        lambda w, t: ["reconstruct", "--model", run_with_classifier_from(w, t, w.clf_other), "--out", t / "out"],
        ("fingerprint", "clf", "original classifier"),
        guard=("run", "out"),
    ),
    Case(
        "pairing-attfind-other-classifier",
        lambda w, t: [
            "attfind",
            "--model",
            run_with_classifier_from(w, t, w.clf_other),
            "--out",
            t / "out",
            "--num-images",
            4,
            "--quiet",
        ],
        ("fingerprint", "clf", "original classifier"),
        guard=("run", "out"),
    ),
    # --- outputs and paths ---------------------------------------------------------------------------------
    Case(
        "out-holds-a-run",
        lambda w, t: w.train_args(w.data, copy_run(w, t)),
        ("already holds a run", "--resume"),
        guard=("run",),
    ),
    Case(
        "out-resume-nothing",
        lambda w, t: w.train_args(w.data, t / "out", "--resume"),
        ("no checkpoint to resume", "drop --resume"),
    ),
    Case(
        "out-inside-a-file",
        lambda w, t: w.train_args(w.data, _write(t / "afile", "x") / "out"),
        ("afile is a file, so", "afile/out cannot be made there"),
        guard=("afile",),
        exit_code=2,
    ),
    Case(
        "out-synth-not-empty",
        lambda w, t: ["data", "synth", "--out", _write(t / "out" / "keep.txt", "mine").parent, "--num-images", 4],
        ("out", "not empty"),
    ),
    Case(
        "synth-bad-label-rule",
        lambda w, t: ["data", "synth", "--out", t / "out", "--num-images", 4, "--label", "shape==hexagon"],
        ("hexagon", "circle"),
    ),
    Case(
        "synth-bad-correlate",
        lambda w, t: ["data", "synth", "--out", t / "out", "--num-images", 4, "--correlate", "bg_hue=2"],
        ("bg_hue", "[0, 1]"),
    ),
    Case(
        "attfind-damaged-effects",
        lambda w, t: [
            "attfind",
            "--model",
            w.run,
            "--num-images",
            4,
            "--quiet",
            "--out",
            _write(t / "out" / "effects.safetensors", b"junk").parent,
        ],
        ("effects.safetensors", "re-run `stylex attfind`"),
    ),
    Case(  # NaN and inf passed "<= 0" and ended in a traceback ("cannot convert float NaN to integer")
        "attfind-memory-not-finite",
        lambda w, t: ["attfind", "--model", w.run, "--quiet", "--out", t / "out", "--memory-mb", "nan"],
        ("--memory-mb must be finite positive numbers", "nan"),
    ),
    Case(
        "attfind-memory-inf",
        lambda w, t: ["attfind", "--model", w.run, "--quiet", "--out", t / "out", "--memory-mb", "inf"],
        ("--memory-mb must be finite positive numbers", "inf"),
    ),
    Case(
        "train-classifier-lr-inf",
        lambda w, t: ["train-classifier", "--data", w.data, "--out", t / "out", "--lr", "inf"],
        ("lr must be a finite number > 0", "got lr inf"),
    ),
    Case(
        "usage-missing-model-folder",
        lambda w, t: ["reconstruct", "--model", t / "nope", "--out", t / "out"],
        ("nope", "does not exist", "--help"),
        exit_code=2,
    ),
    Case(
        "usage-missing-option",
        lambda w, t: ["train", "--classifier", w.clf, "--out", t / "out"],
        ("--data", "--help"),
        exit_code=2,
    ),
    Case(  # was a traceback from inside torch, in every command with --device
        "usage-device-not-a-device",
        lambda w, t: ["attfind", "--model", w.clf, "--device", "gpu", "--out", t / "out"],
        ("'gpu' is not a device; use cpu, cuda or cuda:N",),
        exit_code=2,
    ),
    Case(
        "usage-device-absent",
        lambda w, t: ["train-classifier", "--data", w.data, "--out", t / "out", "--device", "cuda:7"],
        ("--device", "cuda:7: this", "use cpu" if not torch.cuda.is_available() else "cuda:7"),
        exit_code=2,
    ),
    Case(  # click's message lists the choices on lines of their own: one line here
        "usage-missing-choice",
        lambda w, t: ["baseline", "--model", w.clf, "--out", t / "out"],
        ("Missing option '--method'. Choose from: wu, random; see `", "baseline --help`"),
        exit_code=2,
    ),
    Case(  # "already holds a run; pass --resume", and --resume then failed on the classifier's config keys
        "out-is-a-classifier-folder",
        lambda w, t: w.train_args(w.data, shutil.copytree(w.clf, t / "clfcopy")),
        ("clfcopy holds a config.json that is not a StylEx run's (a classifier folder?)",),
        guard=("clfcopy",),
    ),
    Case(  # it failed after the work, naming a temporary folder below the file
        "out-below-a-file",
        lambda w, t: ["reconstruct", "--model", w.run, "--out", (t / "afile").write_text("x") and t / "afile" / "sub"],
        ("afile is a file, so", "afile/sub cannot be made there"),
        exit_code=2,
    ),
    Case(  # named by the folder asked for, not the temporary one stylex writes first
        "out-cannot-be-created",
        lambda w, t: ["data", "synth", "--out", "/proc/stylex-nope", "--num-images", 4, "--quiet"],
        ("cannot create /proc/stylex-nope (",),
    ),
]


def snapshot(path: Path) -> dict[str, str] | None:
    """None if `path` is absent, else {relative file path: sha1} of everything under it (or of the file)."""
    if not path.exists():
        return None
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p.relative_to(path)): hashlib.sha1(p.read_bytes()).hexdigest() for p in files}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, world: World, tmp_path: Path, monkeypatch):
    if case.needs_factory:
        monkeypatch.syspath_prepend(str(world.root))
    args = case.build(world, tmp_path)
    before = {g: snapshot(tmp_path / g) for g in case.guard}
    result = cli(*args)

    assert result.exit_code == case.exit_code, result.output
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("warning: ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    message = lines[0]
    assert "Traceback" not in result.output
    for word in case.words:
        assert word in message, f"{word!r} not in {message!r}"
    assert message.rstrip().endswith("."), "one full sentence"
    for g in case.guard:
        assert snapshot(tmp_path / g) == before[g], f"{g} was changed or half-written"
    assert not (tmp_path / "marker").exists(), "a pickle payload was executed"


def test_matrix_covers_the_issue():
    """The kinds of bad input issue 9 lists, each present in the matrix at least once."""
    prefixes = {c.id.split("-")[0] for c in CASES}
    assert {"data", "npz", "classifier", "config", "checkpoint", "pairing", "out"} <= prefixes
    assert sum(c.marker for c in CASES) >= 6, "pickle payloads in npz, classifier files, weights and state"


def test_payloads_would_run_if_unpickled(tmp_path):
    """The planted payload is real: plain pickle.loads runs it (so the marker checks above mean something)."""
    pickle.loads(pickle.dumps(Payload(tmp_path / "marker")))
    assert (tmp_path / "marker").exists()


# ------------------------------------------------------------------------------------------------ inputs that load


def _grey(t: Path) -> np.ndarray:
    g = rgb(1)[..., 0]
    for i in range(4):
        png(t / "imgs" / ("a" if i % 2 else "b") / f"{i}.png", g)
    return np.repeat(g[..., None], 3, axis=-1)


def _rgba(t: Path) -> np.ndarray:
    a = np.dstack([rgb(2), np.full((RES, RES), 128, np.uint8)])
    a[0, 0, 3] = 0  # a fully transparent pixel whose hidden colour must not leak
    for i in range(4):
        png(t / "imgs" / ("a" if i % 2 else "b") / f"{i}.png", a)
    return ((a[..., :3].astype(np.uint32) * a[..., 3:] + 127) // 255).astype(np.uint8)


def _sixteen_bit(t: Path) -> np.ndarray:
    g16 = (rgb(3)[..., 0].astype(np.uint16) * 257).astype(np.uint16)
    for i in range(4):
        png(t / "imgs" / ("a" if i % 2 else "b") / f"{i}.png", g16)
    return np.repeat((g16 / 257).round().astype(np.uint8)[..., None], 3, axis=-1)


def _palette(t: Path) -> np.ndarray:
    p = Image.fromarray(rgb(4)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    for i in range(4):
        (t / "imgs" / ("a" if i % 2 else "b")).mkdir(parents=True, exist_ok=True)
        p.save(t / "imgs" / ("a" if i % 2 else "b") / f"{i}.png")
    return np.asarray(p.convert("RGB"))


def _mixed_sizes(t: Path) -> None:
    for i, size in enumerate((RES, 2 * RES, 3 * RES, RES // 2)):
        png(t / "imgs" / ("a" if i % 2 else "b") / f"{i}.png", rgb(i, size))
    with pytest.raises(StylexError, match=r"pass a resolution"):  # only without a resolution is this an error
        load_dataset(t / "imgs")


def _non_square(t: Path) -> None:
    for i in range(4):
        png(t / "imgs" / ("a" if i % 2 else "b") / f"{i}.png", rgb(i, RES, 2 * RES))


SUCCEEDS = {
    "grey": _grey,
    "rgba": _rgba,
    "16-bit": _sixteen_bit,
    "palette": _palette,
    "mixed-sizes": _mixed_sizes,
    "non-square": _non_square,
}


@pytest.mark.parametrize("make", SUCCEEDS.values(), ids=list(SUCCEEDS))
def test_unusual_images_load_as_rgb(make, tmp_path):
    expected = make(tmp_path)
    ok("train-classifier", "--data", tmp_path / "imgs", "--out", tmp_path / "clf", "--resolution", RES,
       "--epochs", 1, "--width", 4, "--val-fraction", 0.5, "--quiet")  # fmt: skip
    ds = load_dataset(tmp_path / "imgs", resolution=RES, progress=False)
    assert ds.images.dtype == np.uint8 and ds.images.shape == (4, RES, RES, 3)
    if expected is not None:
        np.testing.assert_array_equal(ds.images[0], expected)


def test_factory_module_is_importable(world, monkeypatch):
    """Guards the classifier rows: the bad factories import, so their errors come from the checks."""
    monkeypatch.syspath_prepend(str(world.root))
    import importlib

    module = importlib.import_module("stylex_bad_classifiers")
    assert module.flat()(torch.zeros(2, 3, 4, 4)).shape == (2,)


def test_snapshot_sees_changes(tmp_path):
    (tmp_path / "d").mkdir()
    before = snapshot(tmp_path / "d")
    (tmp_path / "d" / "f").write_text("x")
    assert snapshot(tmp_path / "d") != before and snapshot(tmp_path / "nope") is None


def test_every_unreadable_image_of_a_folder_is_named_at_once(tmp_path):
    """A folder with three bad files stopped at the first; the next run at the second (each run re-reading the
    whole folder). Now one error names them all; a single bad file keeps its own one-line message."""
    for k in range(4):
        (tmp_path / "a").mkdir(exist_ok=True)
        Image.new("RGB", (8, 8), (k, 0, 0)).save(tmp_path / "a" / f"{k}.png")
    (tmp_path / "a" / "notes.PNG").write_text("not an image")
    with pytest.raises(StylexError, match=r"^Cannot read image .*notes\.PNG"):
        load_dataset(tmp_path, resolution=8, progress=False)
    good = (tmp_path / "a" / "1.png").read_bytes()
    (tmp_path / "a" / "1.png").write_bytes(good[: len(good) // 2])  # truncated
    (tmp_path / "a" / "3.png").write_bytes(b"")
    with pytest.raises(StylexError) as caught:
        load_dataset(tmp_path, resolution=8, progress=False)
    message = str(caught.value)
    assert message.startswith("3 of 5 images cannot be read; re-export or delete them:")
    assert all(name in message for name in ("notes.PNG", "1.png", "3.png")) and "0.png" not in message


@pytest.mark.parametrize(
    ("device", "said"),
    [
        ("gpu", "'gpu' is not a device; use cpu"),
        ("meta", "'meta' is not a device stylex runs on"),
        ("mps", "no MPS (Apple GPU) backend"),
        ("cuda", "sees no CUDA device"),
        ("cuda:1", "sees no CUDA device"),
    ],
)
def test_a_device_this_machine_cannot_use_is_one_sentence(device, said):
    from stylex.device import check_device

    assert check_device("cpu") == "cpu"
    if device.startswith("cuda") and torch.cuda.is_available() or device == "mps" and torch.backends.mps.is_available():
        pytest.skip(f"this machine has {device}")
    with pytest.raises(StylexError, match=re.escape(said)):
        check_device(device)
