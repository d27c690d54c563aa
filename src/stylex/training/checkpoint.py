"""Checkpoints: config.json + weights.safetensors + state.pt (tensors and plain values only).

Never pickles code or objects: weights are safetensors, and state.pt loads with
`torch.load(weights_only=True)`. Each file is written to a temporary name and renamed, and both
weights and state carry the step, so a half-written checkpoint is detected rather than loaded.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from stylex.errors import StylexError

CHECKPOINT_FORMAT_VERSION = 1
WEIGHTS = "weights.safetensors"
STATE = "state.pt"


def _fsync_replace(tmp: Path, final: Path) -> None:
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)


def save_weights(path: Path, modules: dict[str, nn.Module], step: int) -> None:
    """Write the state dicts of `modules` into one safetensors file, keys prefixed "<name>."."""
    tensors = {}
    for name, module in modules.items():
        for key, value in module.state_dict().items():
            tensors[f"{name}.{key}"] = value.detach().contiguous().cpu()
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"format_version": str(CHECKPOINT_FORMAT_VERSION), "step": str(step)})
    _fsync_replace(tmp, path)


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
    except (SafetensorError, OSError, ValueError) as e:
        raise StylexError(f"{path} is not a readable safetensors file ({e}); re-create or re-download it.") from None
    version = metadata.get("format_version")
    if version != str(CHECKPOINT_FORMAT_VERSION):
        raise StylexError(
            f"{path} has checkpoint format version {version}, this stylex reads version "
            f"{CHECKPOINT_FORMAT_VERSION}; re-train or use the stylex version that wrote it."
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


def save_state(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format_version": CHECKPOINT_FORMAT_VERSION, **state}, tmp)
    _fsync_replace(tmp, path)


def load_state(path: Path) -> dict[str, Any]:
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
    if state.get("format_version") != CHECKPOINT_FORMAT_VERSION:
        raise StylexError(f"{path} has state format {state.get('format_version')}; re-train with this version.")
    return state
