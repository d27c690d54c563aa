"""The one exception type for errors a user can cause; the CLI prints its message without a traceback."""


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
        raise StylexError(f"{name} must be a folder's path, got a {kind}{hint}.")
