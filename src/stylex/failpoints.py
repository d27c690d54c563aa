"""Fault injection for the crash-safety tests: kill this process at a named point of a file write.

The writers that must survive a crash (training checkpoints, AttFind's saved chunks) call `failpoint(name, n)`
at each point where a crash would leave a different set of files behind. Unless the environment variable
`STYLEX_FAILPOINT` is set to exactly `name@n`, the call does nothing. The tests set it on a subprocess to
stop `stylex train` or `stylex attfind` there with SIGKILL (no clean-up runs, as in a power cut of the process)
and then check that the next run resumes from what was left.
"""

from __future__ import annotations

import os
import signal

FAILPOINT_ENV = "STYLEX_FAILPOINT"
"""Name of the environment variable: `point@n`, e.g. `checkpoint-commit@4` (see the callers for the points)."""


def failpoint(name: str, n: int) -> None:
    """SIGKILL this process when `STYLEX_FAILPOINT` is `name@n`; otherwise return at once.

    Args:
        name: the point in the writer, e.g. "checkpoint-commit".
        n: which occurrence, e.g. the step of the checkpoint or the number of the chunk.
    """
    if os.environ.get(FAILPOINT_ENV) == f"{name}@{n}":
        os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))
