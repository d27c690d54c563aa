"""The on-disk format of a trained stylex classifier, and atomic file writes.

A classifier directory holds:
    config.json          format_version, architecture, num_classes, resolution, width, class_names,
                         model (constructor arguments), input_spec, train (ClassifierTrainConfig), fingerprint
    weights.safetensors  the state dict (no pickle)
    metrics.json         written by `train_classifier`: accuracies, counts, seconds
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch

from stylex.files import atomic_write, save_safetensors

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "weights.safetensors"
METRICS_NAME = "metrics.json"


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented JSON to `path` atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")

    atomic_write(path, write)


def save_weights_atomic(path: str | os.PathLike, state_dict: dict[str, torch.Tensor]) -> None:
    """Write a state dict to a safetensors file atomically (tensors are copied to CPU, contiguous)."""
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state_dict.items()}
    atomic_write(path, lambda tmp: save_safetensors(tensors, tmp, {"format": "pt"}))
