"""The one exception type for errors a user can cause; the CLI prints its message without a traceback."""


class StylexError(Exception):
    """A problem with the user's input (path, file, classifier, config, checkpoint).

    The message is one sentence that names the file and says what to do.
    """


def counted(n: int, noun: str) -> str:
    """'1 image', '3 images', '2 classes': a count with its noun in the right number (the plural adds s, or es
    after s, x, ch and sh)."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}{'es' if noun.endswith(('s', 'x', 'ch', 'sh')) else 's'}"
