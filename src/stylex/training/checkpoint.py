"""Checkpoints: config.json + weights.safetensors + state.pt (tensors and plain values only).

Never pickles code or objects: weights are safetensors, and state.pt loads with
`torch.load(weights_only=True)`. Both files carry the step.

Weights and state are one pair, written so that a crash at any moment (SIGKILL, the out-of-memory killer, a
power cut) leaves a pair that loads (`save_checkpoint`):

1. the new weights go to `weights.safetensors.tmp` and the new state to `state.pt.tmp`, each flushed to disk;
2. `state.pt.tmp` is renamed to `state.pt`: the commit point;
3. `weights.safetensors.tmp` is renamed to `weights.safetensors`.

A crash before 2 leaves the previous pair in place (the temporary files are discarded on resume); a crash
between 2 and 3 leaves the new state beside its complete weights under the temporary name, which
`recover_checkpoint` renames into place. `weights.safetensors` itself is complete at every moment, so
readers (`StylEx.load`, also while a run is training) need no recovery. Runs lose at most the steps since
the last checkpoint.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from stylex.errors import StylexError
from stylex.failpoints import failpoint
from stylex.files import save_safetensors

CHECKPOINT_FORMAT_VERSION = 1
WEIGHTS = "weights.safetensors"
STATE = "state.pt"
TMP_SUFFIX = ".tmp"


def _tmp(path: Path) -> Path:
    return path.with_name(path.name + TMP_SUFFIX)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(folder: Path) -> None:
    """Make renames in `folder` durable (where the platform allows opening a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """A failed write (a full disk, above all) removes its partial file and ends as an OSError naming `path`, which
    commands report in one line; safetensors and torch.save raise their own types for it ("unexpected pos ...")."""
    try:
        yield
    except BaseException as e:
        cause = _likely_cause(Path(path)) if isinstance(e, Exception) else ""  # seen before the partial file goes
        Path(path).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.filename is not None or not isinstance(e, Exception):
            raise
        reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise OSError(errno.EIO, f"could not be written ({reason}{cause})", str(path)) from e


def _likely_cause(path: Path) -> str:
    """ "; the disk is full" or "; a file-size limit of N bytes is set (ulimit -f)": what the libraries' own messages
    of a cut write ("unexpected pos 407232 vs 407120") do not say, judged while the partial file `path` is still
    there; "" when neither is seen."""
    import shutil

    try:
        if shutil.disk_usage(path.parent).free < 64 * 2**20:
            return "; the disk is full"
    except OSError:
        pass
    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        written = path.stat().st_size if path.exists() else 0
        if limit != resource.RLIM_INFINITY and written >= limit - 2**20:  # the file had reached the limit
            return f"; a file-size limit of {limit} bytes is set (ulimit -f)"
    except (ImportError, OSError, ValueError):
        pass
    return ""


def _write_weights(path: Path, modules: dict[str, nn.Module], step: int) -> None:
    """The state dicts of `modules` into one safetensors file at `path`, keys prefixed "<name>.", flushed."""
    tensors = {}
    for name, module in modules.items():
        for key, value in module.state_dict().items():
            tensors[f"{name}.{key}"] = value.detach().contiguous().cpu()
    with _writing(path):
        save_safetensors(tensors, path, {"format_version": str(CHECKPOINT_FORMAT_VERSION), "step": str(step)})
        _fsync_file(path)


def _write_state(path: Path, state: dict[str, Any]) -> None:
    with _writing(path):
        torch.save({"format_version": CHECKPOINT_FORMAT_VERSION, **state}, path)
        _fsync_file(path)


def save_checkpoint(run_dir: Path, modules: dict[str, nn.Module], state: dict[str, Any]) -> None:
    """Write weights and state as one pair that survives a crash at any point (see the module docstring).

    Args:
        run_dir: the run folder (exists).
        modules: name -> network; stored as "<name>.<key>" tensors in weights.safetensors.
        state: tensors and plain values for state.pt, with the int "step".
    """
    run_dir = Path(run_dir)
    step = int(state["step"])
    weights, state_path = run_dir / WEIGHTS, run_dir / STATE
    _write_weights(_tmp(weights), modules, step)
    failpoint("checkpoint-weights", step)
    with _writing(_tmp(weights)):  # a state that cannot be written takes the new weights with it
        _write_state(_tmp(state_path), state)
    failpoint("checkpoint-state", step)
    os.replace(_tmp(state_path), state_path)  # the commit
    _fsync_dir(run_dir)
    failpoint("checkpoint-commit", step)
    os.replace(_tmp(weights), weights)
    _fsync_dir(run_dir)


def save_weights(path: Path, modules: dict[str, nn.Module], step: int) -> None:
    """Write the state dicts of `modules` to `path` atomically (temporary file, flush, rename): readers see the
    previous file or the new one, never a part (used for `best.safetensors`)."""
    path = Path(path)
    _write_weights(_tmp(path), modules, step)
    os.replace(_tmp(path), path)
    _fsync_dir(path.parent)


def _weights_step(path: Path) -> int | None:
    """The step recorded in a complete weights file; None when it is missing, damaged or incomplete."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return int((f.metadata() or {})["step"])
    except Exception:  # noqa: BLE001 - any failure means: not a complete weights file
        return None


def recover_checkpoint(run_dir: Path) -> None:
    """Finish or discard a `save_checkpoint` that a crash interrupted, so that weights and state form a pair.

    After a crash between the commit and the last rename, the complete new weights wait under the temporary
    name beside the new state: they are renamed into place. Temporary files of a save that never committed are
    deleted. Only the process that writes the run may call this (it renames and deletes files).

    Args:
        run_dir: the run folder.
    """
    run_dir = Path(run_dir)
    weights, state_path = run_dir / WEIGHTS, run_dir / STATE
    if _tmp(state_path).exists():  # written, never committed: its pair is not the current one
        _tmp(state_path).unlink()
    if not _tmp(weights).exists():
        return
    tmp_step = _weights_step(_tmp(weights))
    committed = None
    if tmp_step is not None and state_path.is_file():
        try:
            committed = int(torch.load(state_path, map_location="cpu", weights_only=True)["step"])
        except Exception:  # noqa: BLE001 - a damaged state is reported by load_state
            committed = None
    if tmp_step is not None and tmp_step == committed and _weights_step(weights) != committed:
        os.replace(_tmp(weights), weights)
        _fsync_dir(run_dir)
    else:
        _tmp(weights).unlink()


def read_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a weights file, with a clear error when it is missing or damaged."""
    path = Path(path)
    if not path.is_file():
        raise StylexError(f"{path} does not exist; point to a run folder written by `stylex train`.")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise StylexError(f"{path} is not a readable safetensors file ({e}); re-create or re-download it.") from None
    version = metadata.get("format_version")
    if version != str(CHECKPOINT_FORMAT_VERSION):
        raise StylexError(
            f"{path} has checkpoint format version {version}, this stylex reads version "
            f"{CHECKPOINT_FORMAT_VERSION}; use the stylex version that wrote it, or "
            f"{'ask for an export made with this version' if metadata.get('exported') else 're-train'}."
        )
    return tensors, metadata


def load_modules(tensors: dict[str, torch.Tensor], modules: dict[str, nn.Module], source: Path) -> None:
    """Load prefixed tensors into `modules` strictly; mismatches end in one clear error."""
    for name, module in modules.items():
        prefix = name + "."
        sub = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        if not sub:
            raise StylexError(f"{source} holds no weights for {name}; it was not written by this trainer.")
        try:
            module.load_state_dict(sub, strict=True)
        except RuntimeError as e:
            first = str(e).splitlines()[0]
            raise StylexError(
                f"{source}: the {name} weights do not fit the network of config.json ({first}); "
                "the config and weights come from different runs."
            ) from None


def load_state(path: Path) -> dict[str, Any]:
    """The dict in state.pt, loaded with `weights_only=True`: a file holding code or objects is refused unread."""
    path = Path(path)
    if not path.is_file():
        raise StylexError(f"{path} does not exist; nothing to resume in {path.parent}.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means: refuse the file
        raise StylexError(
            f"{path} could not be loaded safely ({type(e).__name__}); it is damaged or holds objects "
            "other than tensors and plain values, which stylex refuses to unpickle."
        ) from None
    if not isinstance(state, dict) or "step" not in state:
        raise StylexError(f"{path} is not a stylex training state (no step); resume a run written by `stylex train`.")
    version = state.get("format_version")
    if version != CHECKPOINT_FORMAT_VERSION:
        raise StylexError(
            f"{path} has checkpoint format version {version}, this stylex reads version "
            f"{CHECKPOINT_FORMAT_VERSION}; use the stylex version that wrote it, or re-train."
        )
    return state
