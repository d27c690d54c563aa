"""File modes: what stylex writes is readable as the user's umask says, like any file `open` creates.

safetensors' `save_file`, `tempfile.mkstemp` and `tempfile.mkdtemp` create files and folders that only their owner
can read (0600 / 0700); a model to ship, or a run folder on a filesystem that several machines share, must not be.
"""

from __future__ import annotations

import os

_UMASK = os.umask(0)
os.umask(_UMASK)


def share(path: str | os.PathLike, directory: bool = False) -> None:
    """Give `path` the mode a plain `open` (or `mkdir`) would have given it under the user's umask."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_UMASK)
