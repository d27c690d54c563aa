"""File modes: what stylex writes is readable as the user's umask says, like any file `open` creates.

safetensors' `save_file`, `tempfile.mkstemp` and `tempfile.mkdtemp` create files and folders that only their owner
can read (0600 / 0700); a model to ship, or a run folder on a filesystem that several machines share, must not be.
"""

from __future__ import annotations

import contextlib
import os

_UMASK = os.umask(0)
os.umask(_UMASK)


def share(path: str | os.PathLike, directory: bool = False) -> None:
    """Give `path` the mode a plain `open` (or `mkdir`) would have given it under the user's umask."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_UMASK)


def atomic_write(path: str | os.PathLike, write) -> None:
    """`write(tmp)` to a new temporary file beside `path`, then rename it to `path`: never a half-written file, and
    never a write through a link someone left at a fixed temporary name (mkstemp makes a file of its own)."""
    import tempfile
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        share(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(e, OSError) and e.filename is None and e.errno is not None:  # a cut write names no file
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise


def save_safetensors(tensors: dict, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
    """`safetensors.torch.save_file`, but byte-identical for identical inputs, and with the user's file mode.

    safetensors writes the metadata from a hash map, so its keys come out in a different order from one process
    to the next and identical runs gave files with different checksums (which make, DVC and friends read as a
    change). The header is re-written here with the metadata keys sorted, padded to its original length.
    """
    import json

    from safetensors.torch import save

    data = save(tensors, metadata=metadata)
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    if isinstance(header.get("__metadata__"), dict):
        ordered = {"__metadata__": dict(sorted(header.pop("__metadata__").items())), **header}
        text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        if len(text) <= n:
            data = data[:8] + text + b" " * (n - len(text)) + data[8 + n :]
    try:
        with open(path, "wb") as f:
            f.write(data)
    except OSError as e:  # a full disk or a file-size limit: no truncated file left behind, and the error names it
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise OSError(e.errno, e.strerror or str(e), os.fspath(path)) from None
    share(path)


LOCK_NAME = ".stylex.lock"
"""The file a writer holds locked in its output folder while it writes there (see `folder_lock`)."""
_HELD: set[str] = set()  # the lock files this process holds


def _same_file(fd: int, path) -> bool:
    """Whether the open `fd` is still the file at `path` (not one that was removed, and another made in its place)."""
    try:
        a, b = os.fstat(fd), os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _open_lock(path, create: bool) -> int | None:
    """An fd of the lock file for flock (which needs no write access: another user's lock is read-only to us), never
    through a link; None where it cannot be opened so (a link, a folder, no permission)."""
    flags = getattr(os, "O_NOFOLLOW", 0) | (os.O_CREAT if create else 0)
    for mode in (os.O_RDWR, os.O_RDONLY):
        try:
            return os.open(path, mode | flags, 0o666)
        except PermissionError:
            continue
        except OSError:
            return None
    return None


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, what: str):
    """Hold `folder` for one writer while the block runs: a second stylex process that asks for it (two trainings
    into one --out interleaved their logs and overwrote each other's checkpoints) is refused at once, saying who holds
    it. The lock is an flock on `folder/.stylex.lock`, so it ends with its process, kill -9 included; the file is
    removed at the end, and so are `folder` and its parents where the lock made them and they stayed empty. Where no
    lock can be taken (Windows, a file system without flock, a link at the lock file's name), the block runs unlocked.

    Raises:
        StylexError: another process holds `folder`.
    """
    from pathlib import Path

    from stylex.errors import StylexError

    folder = Path(folder)
    made = [d for d in [folder, *folder.parents] if not d.exists()]  # nearest first
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    key = os.path.realpath(path)
    fd = None if key in _HELD else _take(path, folder, what, StylexError)  # held: train_stylex, then its Trainer
    if fd is not None:
        _HELD.add(key)
    try:
        yield
    finally:
        if fd is not None:
            _HELD.discard(key)
            if _same_file(fd, path):
                with contextlib.suppress(OSError):
                    os.unlink(path)
            os.close(fd)
        for d in made:
            try:
                d.rmdir()  # only while empty
            except OSError:
                break


def _take(path, folder, what: str, error) -> int | None:
    """The fd of `path` locked by this process for `what`, or None where no lock can be taken here; `error`
    (StylexError) when another process holds it."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return None
    while True:
        fd = _open_lock(path, create=True)
        if fd is None:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise error(
                f"{folder} is being written by {holder}; wait until it ends, or choose another output folder."
            ) from None
        except OSError:  # no flock on this file system (some network mounts)
            os.close(fd)
            return None
        if _same_file(fd, path):  # not a file its last holder removed meanwhile
            break
        os.close(fd)
    import socket
    import stat

    st = os.fstat(fd)
    if stat.S_ISREG(st.st_mode) and st.st_nlink == 1:  # never write through a hard link planted there
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.write(fd, f"`{what}` (process {os.getpid()} on {socket.gethostname()})".encode())
    return fd


def clear_stale_lock(folder: str | os.PathLike) -> None:
    """Remove `folder/.stylex.lock` when no process holds it (its writer was killed with SIGKILL, which removes
    nothing): a folder left holding only that file read as "not empty" to the commands that write a new folder."""
    from pathlib import Path

    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return
    path = Path(folder) / LOCK_NAME
    if path.is_symlink() or not path.is_file():
        return
    fd = _open_lock(path, create=False)
    if fd is None:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if _same_file(fd, path):  # not a live holder's new file made since we opened the old one
            os.unlink(path)
    except OSError:  # held (BlockingIOError), or gone meanwhile
        pass
    finally:
        os.close(fd)
