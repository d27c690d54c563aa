"""Progress bars: tqdm's on a terminal or in a notebook; in a log (stderr a file or a pipe: nohup, a scheduler) a
plain line a minute instead of nothing, so that an hour of AttFind under nohup says how far it is.

A bar that ends within its first minute writes no line at all, so short commands and logs stay as they were.
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm as _plain_tqdm

PLAIN_SECONDS = 60.0
"""In a log: the first line after this long, then at most one line per this long, and a last one at the end."""


def progress_bar(iterable: Any = None, *, disable: bool | None = None, **kwargs: Any):
    """A tqdm bar, as `tqdm.auto.tqdm(iterable, disable=disable, **kwargs)`, except that `disable=None` (tqdm: no bar
    when stderr is not a terminal) writes plain lines into a log instead (module docstring). True: no bar at all."""
    if sys.stderr is None:  # pythonw, or a daemon that closed it: nowhere to write
        disable = True
    if disable is None and _into_a_log():
        for key in ("dynamic_ncols", "ncols", "file", "mininterval", "maxinterval", "delay"):
            kwargs.pop(key, None)
        return _LogLines(iterable, **kwargs)
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=disable, **kwargs)


def _into_a_log() -> bool:
    """stderr is not a terminal, and this is not a notebook (whose widgets tqdm.auto draws)."""
    try:
        terminal = sys.stderr.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream
        terminal = False
    return not terminal and "ipykernel" not in sys.modules


class _LogLines(_plain_tqdm):
    """tqdm that writes whole lines (no carriage returns, no bar): the first after `PLAIN_SECONDS`, then at most one
    per `PLAIN_SECONDS` however often the bar is refreshed (a new description, tqdm's monitor thread), and its last
    state when it closes if it wrote any line before."""

    def __init__(self, iterable: Any = None, **kwargs: Any) -> None:
        self._said, self._said_at, self._said_n, self._closing = "", None, None, False
        if kwargs.get("bar_format") is None:
            kwargs["ncols"] = 0  # the counts and times, no bar drawing (a custom format is kept as given)
        super().__init__(
            iterable, file=_Lines(sys.stderr), mininterval=PLAIN_SECONDS, maxinterval=max(PLAIN_SECONDS, 10.0),
            delay=PLAIN_SECONDS, disable=False, **kwargs,
        )  # fmt: skip

    def close(self) -> None:
        self._closing = True
        super().close()

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        now = self._time()
        started = getattr(self, "start_t", None)  # None: tqdm's first display, from its __init__ (delay 0)
        if msg is None and not self._closing and started is not None:
            since = now - (started if self._said_at is None else self._said_at)
            if since < PLAIN_SECONDS:
                return True  # too soon after the start or the last line
        if self._closing and self.n == self._said_n:  # its last state is said already (only the rate would differ)
            return True
        text = (self.__str__() if msg is None else msg).strip()
        if text and text != self._said:  # "": tqdm clearing a bar (leave=False); the same state twice: at its end
            self._said, self._said_at, self._said_n = text, now, self.n
            self.fp.write(text + "\n")
        return True


class _Lines:
    """A stream that passes on whole lines only (tqdm's bare carriage returns and newlines are dropped)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, s: str) -> None:
        if s.strip():
            self._stream.write(s)
            self._stream.flush()

    def flush(self) -> None:
        self._stream.flush()
