"""The one exception type for errors a user can cause; the CLI prints its message without a traceback."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar


class StylexError(Exception):
    """A problem with the user's input (path, file, classifier, config, checkpoint).

    The message is one sentence that names the file and says what to do.
    """


def counted(n: int, noun: str) -> str:
    """'1 image', '3 images', '2 classes': a count with its noun in the right number (the plural adds s, or es
    after s, x, ch and sh)."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}{'es' if noun.endswith(('s', 'x', 'ch', 'sh')) else 's'}"


def check_folder_args(**given) -> None:
    """Refuse, in one sentence, a Python argument that should be a folder's path but is an object (a loaded model
    for `run_dir`, an `AttFindResult` for `attributes_dir`); None is let through (the default)."""
    import os

    for name, value in given.items():
        if value is None or isinstance(value, str | os.PathLike):
            continue
        kind = type(value).__name__
        hint = {
            "StylEx": " (the run folder it was loaded from)",
            "AttFindResult": ": save it first with result.save(FOLDER / 'attributes.json') and "
            "result.effects.save(FOLDER / 'effects.safetensors')",
        }.get(kind, "")
        article = "an" if kind[:1].lower() in "aeiou" else "a"
        raise StylexError(f"{name} must be a folder's path, got {article} {kind}{hint}.")


_COMMAND_LINE: ContextVar[bool] = ContextVar("stylex_command_line", default=False)


@contextlib.contextmanager
def on_command_line() -> Iterator[None]:
    """While a `stylex` command runs: errors name its options (`--data`), not the Python arguments (`data=`)."""
    token = _COMMAND_LINE.set(True)
    try:
        yield
    finally:
        _COMMAND_LINE.reset(token)


def option(flag: str, python: str | None = None) -> str:
    """How a message names an option: the command line's `flag` ("--out") in a `stylex` command, else the Python
    argument, `python` or the flag's own name ("out=")."""
    if _COMMAND_LINE.get():
        return flag
    return python or flag.removeprefix("--").replace("-", "_") + "="
