"""What the scripts under `benchmarks/` and `scripts/` share with the command line: `--help` that shows the whole
module docstring (what is measured, how long it takes) and every default, and user errors in one `error:` line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from stylex.errors import StylexError


class ScriptHelp(argparse.RawDescriptionHelpFormatter):
    """The description as written (line breaks kept)."""


class ScriptParser(argparse.ArgumentParser):
    """An ArgumentParser whose `--help` shows the whole description as written and each option's default."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", ScriptHelp)
        super().__init__(*args, **kwargs)

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        default = action.default
        if action.option_strings and default not in (None, False, "", [], argparse.SUPPRESS):
            if "%(default)" not in (action.help or "") and action.help != argparse.SUPPRESS:
                action.help = ((action.help or "") + " (default: %(default)s)").strip()
        return action


def script_main(main: Callable[[], Any]) -> None:
    """Run a script's `main`; a `StylexError` (a user's mistake: a missing file, a bad value) ends in one `error:` line
    and exit status 1, as in `stylex` itself, instead of a traceback."""
    try:
        main()
    except StylexError as e:
        sys.exit(f"error: {e}")
