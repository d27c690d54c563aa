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

import errno
import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path

from stylex.classifier.adapter import ClassifierSource

TRUST_CODE_ENV = "STYLEX_TRUST_CODE"
STORE_ENV = "STYLEX_TRUST_STORE"
CODE_KINDS = ("factory", "torchscript")


def trusts_code() -> bool:
    """Whether this process may load any classifier code a run names (STYLEX_TRUST_CODE=1)."""
    return os.environ.get(TRUST_CODE_ENV, "").strip().lower() in ("1", "true", "yes")


def store_path() -> Path:
    """The trust list's file (see the module docstring; `keeps_a_list` says whether there is one)."""
    if os.environ.get(STORE_ENV):
        return Path(os.environ[STORE_ENV])
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "stylex" / "trusted-classifiers.json"


def code_key(src: ClassifierSource, program: bytes | None = None) -> str | None:
    """The trust list's key of a code classifier (None for one that is not code, or a file that is not there).
    `program`: a TorchScript file's bytes when the caller read them (the key is then of the bytes it loads)."""
    if src.kind == "torchscript":
        try:
            data = program if program is not None else Path(src.location).read_bytes()
        except OSError:
            return None
        return f"torchscript:{hashlib.sha256(data).hexdigest()}"
    if src.kind == "factory":
        return f"factory:{src.location}|{src.search_path or ''}"
    return None


def _read() -> tuple[set[str], bool]:
    """(the trusted keys, whether the list may be written: absent, or a list stylex can read). A list it cannot
    read is said once and left alone (rewriting it would drop what it held)."""
    if not keeps_a_list():
        return set(), False
    path = store_path()
    if not path.exists():
        return set(), True
    if not path.is_file():  # a FIFO would hang the read; a folder or device is no list
        _say_once(f"the classifier trust list {path} is not a regular file; stylex trusts nothing from it.")
        return set(), False
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        keys = data["trusted"] if isinstance(data, dict) else None
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise ValueError("not {'trusted': [...]}")
    except (OSError, ValueError, UnicodeDecodeError, KeyError) as e:
        _say_once(f"the classifier trust list {path} cannot be read ({e}); stylex leaves it as it is and trusts "
                  "nothing from it: fix or delete it.")  # fmt: skip
        return set(), False
    return set(keys), True


_SAID: set[str] = set()


def _say_once(message: str) -> None:
    if message not in _SAID:
        _SAID.add(message)
        warnings.warn(message, stacklevel=3)


def is_trusted(src: ClassifierSource, program: bytes | None = None) -> bool:
    """Whether `src` may be loaded without asking: not code, or on this machine's trust list."""
    if src.kind not in CODE_KINDS:
        return True
    key = code_key(src, program)
    return key is not None and key in _read()[0]


def remember(src: ClassifierSource, program: bytes | None = None) -> None:
    """Add a code classifier the user gave stylex directly to the trust list. When that cannot be done (no list, a
    list it cannot read or write), it says so once: later commands on its runs will ask for --trust-code."""
    key = code_key(src, program)
    if key is None or not keeps_a_list():  # no list at all, by choice
        return
    keys, writable = _read()
    if key in keys:
        return
    path = store_path().resolve()  # a symlinked list (dotfiles) is written where it points
    why = None if writable else "it cannot be read"
    if why is None and path.exists() and not path.is_file():  # /dev/null, a folder: never replaced
        why = "it is not a regular file"
    if why is None:
        try:
            if os.environ.get(STORE_ENV) is None:  # only the default place is created; a given one's must exist
                _make_config_folder(path.parent)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # new, no link
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(json.dumps({"trusted": sorted(keys | {key})}, indent=1) + "\n")
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
        except OSError as e:
            why = e.strerror or str(e)
    if why is not None:
        _say_once(
            f"could not add the classifier to the trust list {path} ({why}): commands on its runs will ask for "
            "--trust-code (set STYLEX_TRUST_STORE to a file in a folder you can write)."
        )


def _make_config_folder(folder: Path) -> None:
    """Create the default list's folder (~/.config/stylex), but never a home folder that does not exist: as root in a
    container, HOME=/nonexistent made stylex create /nonexistent/.config/stylex."""
    if _home_missing():
        raise OSError(errno.ENOENT, f"the home folder {Path.home()} does not exist")
    folder.mkdir(parents=True, exist_ok=True)


def _home_missing() -> bool:
    """Whether the default list would lie in a home folder that does not exist (HOME=/nonexistent)."""
    return not os.environ.get("XDG_CONFIG_HOME") and not Path.home().is_dir()


def can_write() -> bool:
    """Whether the trust list can be written: it keeps one (`keeps_a_list`), and its file, or the nearest folder that
    exists on the way to it, is writable."""
    if not keeps_a_list():
        return False
    if os.environ.get(STORE_ENV) is None and _home_missing():
        return False  # `_make_config_folder` creates no home folder
    path = store_path()
    while not path.exists() and path.parent != path:
        path = path.parent
    return os.access(path, os.W_OK)


def keeps_a_list() -> bool:
    """False when STYLEX_TRUST_STORE is set but empty: nothing is remembered, --trust-code is needed every time."""
    return os.environ.get(STORE_ENV) != ""
