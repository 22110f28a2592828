"""Replace a file all or nothing: write ``.<name>.<pid>.partial`` beside it, fsync, rename.

A reader sees the old file or the new one, never a torn one, whatever kills
the writer.  Partial files left by a killed writer are removed by the next
writer of the same target once their pid no longer exists.  Used for cache
files and the FileId memo.  One process writes a given target from one
thread at a time (SCons never builds a target twice at once).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable

from fexaot_tool.errors import FexaotError

Buffer = bytes | bytearray | memoryview

_PARTIAL_SUFFIX = ".partial"


class WriteError(FexaotError):
    """A file could not be written (no such directory, disk full, permission denied)."""


def partial_path(target: str | os.PathLike, pid: int | None = None) -> str:
    """Where ``target`` is written before it is renamed into place."""
    directory, name = os.path.split(os.fspath(target))
    return os.path.join(directory, f".{name}.{os.getpid() if pid is None else pid}{_PARTIAL_SUFFIX}")


def atomic_write(target: str | os.PathLike, chunks: Iterable[Buffer]) -> None:
    """Replace ``target`` with the concatenation of ``chunks``."""
    target = os.fspath(target)
    remove_stale_partials(target)
    partial = partial_path(target)
    try:
        # Not O_EXCL: a partial with our own pid can only be left by this process.
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
        with open(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, target)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        if isinstance(e, OSError):
            raise WriteError(target, f"cannot write: {e.strerror or e}") from None
        raise
    _fsync_directory(os.path.dirname(target) or ".")


def remove_stale_partials(target: str | os.PathLike) -> list[str]:
    """Delete the partial files of ``target`` whose writer process no longer exists; return their names."""
    directory, name = os.path.split(os.fspath(target))
    prefix = f".{name}."
    try:
        candidates = [e.name for e in os.scandir(directory or ".")
                      if e.name.startswith(prefix) and e.name.endswith(_PARTIAL_SUFFIX)]
    except OSError:
        return []  # a missing directory is reported by the write itself
    removed = []
    for candidate in sorted(candidates):
        pid_text = candidate[len(prefix):-len(_PARTIAL_SUFFIX)]
        if not pid_text.isdigit() or _process_exists(int(pid_text)):
            continue
        with contextlib.suppress(FileNotFoundError):  # another writer removed it first
            os.unlink(os.path.join(directory, candidate))
            removed.append(candidate)
    return removed


def _process_exists(pid: int) -> bool:
    if pid <= 0:  # kill(0, ...) would address our own process group
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _fsync_directory(directory: str) -> None:
    """Make the rename durable.  Some filesystems cannot fsync a directory; the rename happened anyway."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
