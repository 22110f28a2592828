"""The lock protocol between a runtime using caches and tools changing a cache directory.

Two kinds of ``flock(2)`` locks (advisory, on open file descriptions, released
when the descriptor is closed or the process dies, so a crash never leaves a
stale lock):

- **A cache file in use.**  A runtime that loads ``D/<lookup name>`` opens it and
  holds ``LOCK_SH`` on that descriptor for as long as it uses the file (keep the
  descriptor open beside the mapping).  :func:`open_cache_for_use` does this
  and, because a collector may have unlinked the name between the ``open`` and
  the lock, checks that the name still refers to the locked inode.
- **The directory.**  ``D/.lock``: tools that add files (install) hold
  ``LOCK_SH``; tools that remove files or rewrite the index (``fexaot gc``,
  ``fexaot index``) hold ``LOCK_EX``.  A runtime never takes it.

``fexaot gc`` removes a cache file only after taking ``LOCK_EX | LOCK_NB`` on it:
a file some runtime holds is skipped ("in use"), never waited for.  It unlinks
while holding the lock, so a runtime that opened the file just before blocks
in ``LOCK_SH`` until the unlink, then sees the name gone and treats the cache
as missing.  Files are only ever replaced by rename (``cache.atomic``), so a
mapping stays valid whatever happens to the name.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator

from fexaot_tool.errors import FexaotError

DIRECTORY_LOCK = ".lock"


class LockError(FexaotError):
    """A lock file cannot be opened (missing directory, permissions)."""


def open_cache_for_use(path: str | os.PathLike) -> int | None:
    """Open a cache file and hold a shared lock on it; the caller closes the descriptor when done.

    Returns None when the file does not exist (or was removed by a collector
    while this call waited for the lock) or cannot be opened (the caller's
    reader then says why).  Blocks only for as long as a collector holds the
    file, which is one ``unlink``.
    """
    name = os.fspath(path)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        if not _still_named(fd, name):
            os.close(fd)
            return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def try_lock_for_removal(path: str | os.PathLike) -> int | None:
    """An exclusive lock on a cache file nobody uses, or None if a runtime holds it (or it is gone)."""
    name = os.fspath(path)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise LockError(name, f"cannot open to lock it: {e.strerror or e}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return None
        raise
    if not _still_named(fd, name):
        os.close(fd)
        return None
    return fd


@contextlib.contextmanager
def directory_lock(cache_dir: str | os.PathLike, exclusive: bool) -> Iterator[None]:
    """Hold ``D/.lock`` shared (adding files) or exclusive (removing files, rewriting the index)."""
    path = os.path.join(os.fspath(cache_dir), DIRECTORY_LOCK)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise LockError(path, f"cannot open lock file: {e.strerror or e}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


def _still_named(fd: int, name: str) -> bool:
    try:
        st = os.stat(name)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)
