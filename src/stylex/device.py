"""The device the networks run on, checked where it is given: a name torch does not know, or a GPU this machine
lacks, is one sentence (it was an error from deep inside torch, "Torch not compiled with CUDA enabled")."""

from __future__ import annotations

from typing import Any

from stylex.errors import StylexError


def check_device(device: Any) -> Any:
    """`device` itself when this PyTorch can run on it, else a StylexError naming what to pass instead.

    Args:
        device: "cpu", "cuda", "cuda:N", "mps", or a `torch.device`.
    """
    if device == "cpu":
        return device
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise StylexError(f"{device!r} is not a device; use cpu, cuda or cuda:N.") from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise StylexError(f"{device}: this PyTorch sees no CUDA device (a CPU build, or no GPU); use cpu.")
        if parsed.index is not None and parsed.index >= count:
            raise StylexError(f"{device}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}.")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise StylexError(f"{device}: this PyTorch has no MPS (Apple GPU) backend here; use cpu.")
    elif parsed.type not in ("cpu", "cuda", "mps"):
        raise StylexError(f"{device!r} is not a device stylex runs on; use cpu, cuda or cuda:N.")
    return device
