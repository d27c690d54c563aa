"""Which classifier code this machine trusts: a run folder names its classifier, and two kinds are programs.

A `module:factory` classifier is imported, and a TorchScript file is a program too (its `forward` can read and
write files), so loading either because a run folder's config.json names it runs whatever its author chose. A
downloaded run or export is data; its classifier code is loaded only when trusted:

- explicitly: `stylex --trust-code ...`, `trust_code=True`, or the environment variable STYLEX_TRUST_CODE=1;
- or because this machine's user gave that classifier to stylex directly before (`stylex train --classifier X`,
  `load_classifier(X)`), which records it in a small trust list: a TorchScript file by the sha256 of its bytes, a
  factory by its name and the folder it was found in. Runs one trained oneself therefore need no flag.

The list is a JSON file, `$STYLEX_TRUST_STORE`, else `$XDG_CONFIG_HOME/stylex/trusted-classifiers.json` (XDG's
default is ~/.config). Folders of `stylex train-classifier` (safetensors weights and a whitelisted architecture) are
data, not code, and need no trust.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from stylex.classifier.adapter import ClassifierSource

TRUST_CODE_ENV = "STYLEX_TRUST_CODE"
STORE_ENV = "STYLEX_TRUST_STORE"
CODE_KINDS = ("factory", "torchscript")


def trusts_code() -> bool:
    """Whether this process may load any classifier code a run names (STYLEX_TRUST_CODE=1)."""
    return os.environ.get(TRUST_CODE_ENV, "").strip().lower() in ("1", "true", "yes")


def store_path() -> Path:
    """The trust list's file (see the module docstring)."""
    if os.environ.get(STORE_ENV):
        return Path(os.environ[STORE_ENV])
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "stylex" / "trusted-classifiers.json"


def code_key(src: ClassifierSource) -> str | None:
    """The trust list's key of a code classifier (None for one that is not code, or a file that is not there)."""
    if src.kind == "torchscript":
        try:
            digest = hashlib.sha256(Path(src.location).read_bytes()).hexdigest()
        except OSError:
            return None
        return f"torchscript:{digest}"
    if src.kind == "factory":
        return f"factory:{src.location}|{src.search_path or ''}"
    return None


def _read() -> set[str]:
    try:
        data = json.loads(store_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    return {k for k in data.get("trusted", []) if isinstance(k, str)} if isinstance(data, dict) else set()


def is_trusted(src: ClassifierSource) -> bool:
    """Whether `src` may be loaded without asking: not code, or on this machine's trust list."""
    if src.kind not in CODE_KINDS:
        return True
    key = code_key(src)
    return key is not None and key in _read()


def remember(src: ClassifierSource) -> None:
    """Add a code classifier the user gave stylex directly to the trust list (best effort: a read-only home only
    means later commands ask for --trust-code)."""
    key = code_key(src)
    if key is None:
        return
    keys = _read()
    if key in keys:
        return
    path = store_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"trusted": sorted(keys | {key})}, indent=1) + "\n", encoding="utf-8")
        tmp.replace(path)
    except OSError:
        pass
