"""The one exception type for errors a user can cause; the CLI prints its message without a traceback."""


class StylexError(Exception):
    """A problem with the user's input (path, file, classifier, config, checkpoint).

    The message is one sentence that names the file and says what to do.
    """
