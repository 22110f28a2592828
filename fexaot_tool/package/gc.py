"""Collect a cache directory: stale caches first, then the least recently used beyond a budget.

A cache is **stale** when its FileId is not the FileId of any x86-64 ELF file of
the rootfs (the library was upgraded or removed: no runtime can ever look its
name up again), or when it is not a valid cache at all.  Then, while the
directory holds more than ``max_size`` bytes of caches, the least recently
used go, by access time (the kernel's ``relatime`` updates it when a runtime
maps the file, at most once a day), oldest first, ties by name.

Removal follows the lock protocol of :mod:`fexaot_tool.cache.lock`: the whole
collection holds ``D/.lock`` exclusively, and a file is unlinked only under an
exclusive non-blocking lock of its own, so a cache a runtime holds is skipped
and reported, never removed.  Unlinking is atomic and the index is rewritten
by rename, so a killed collection leaves whole files only.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from fexaot_tool.cache.atomic import remove_stale_partials
from fexaot_tool.cache.key import FileIdCache, IdentityError
from fexaot_tool.cache.lock import directory_lock, try_lock_for_removal
from fexaot_tool.elf.rootfs import Rootfs
from fexaot_tool.package.layout import LayoutError, scan, write_index_locked

# Where an x86-64 rootfs keeps executables and libraries (merged-/usr links are
# walked once: the walk resolves /lib to /usr/lib).
DEFAULT_DIRS = ("/usr", "/opt", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
FILEID_MEMO = ".fileids"


@dataclass(frozen=True)
class Removal:
    name: str
    size: int
    why: str  # "stale", "lru", or "invalid: <reason>"


@dataclass(frozen=True)
class GcReport:
    removed: tuple[Removal, ...]
    in_use: tuple[str, ...]  # would have been removed, but a runtime holds them
    kept: int
    kept_bytes: int
    elf_files: int  # x86-64 ELF files found in the rootfs

    @property
    def removed_bytes(self) -> int:
        return sum(r.size for r in self.removed)


def live_file_ids(rootfs: Rootfs, dirs: Iterable[str], memo: FileIdCache) -> tuple[set[int], int]:
    """FileIds of every x86-64 executable and library under ``dirs`` of the rootfs, and how many files."""
    present = [d for d in dirs if rootfs.is_dir(d)]
    files = rootfs.walk_elf_files(present)
    ids = set()
    for path in files:
        try:
            ids.add(memo.identity(rootfs.host(path)).file_id)
        except IdentityError:
            continue  # unreadable: no runtime can map it either
    return ids, len(files)


def collect(rootfs_dir: str, cache_dir: str, max_size: int | None = None, dirs: Iterable[str] = DEFAULT_DIRS,
            dry_run: bool = False) -> GcReport:
    if not os.path.isdir(cache_dir):
        raise LayoutError(cache_dir, "cache directory does not exist")
    if not dry_run and not os.access(cache_dir, os.W_OK | os.X_OK):
        raise LayoutError(cache_dir, "cache directory is not writable")
    rootfs = Rootfs(rootfs_dir)
    with directory_lock(cache_dir, exclusive=not dry_run):
        memo = FileIdCache(os.path.join(cache_dir, FILEID_MEMO))
        live, elf_files = live_file_ids(rootfs, dirs, memo)
        if not dry_run:
            memo.save()
        # Reading a cache's header (scan) is an access: with relatime it moves the atime the LRU order
        # is made of.  So the times are taken first, and put back after gc's own reads.
        times = _times(cache_dir)
        entries, invalid = scan(cache_dir)
        _restore_atimes(cache_dir, times)
        removed: list[Removal] = []
        in_use: list[str] = []

        def remove(name: str, size: int, why: str) -> bool:
            if dry_run:
                removed.append(Removal(name, size, why))
                return True
            path = os.path.join(cache_dir, name)
            fd = try_lock_for_removal(path)
            if fd is None:
                if os.path.exists(path):
                    in_use.append(name)
                return False
            try:
                os.unlink(path)  # under the lock: a runtime waiting for it then finds the name gone
            finally:
                os.close(fd)
            removed.append(Removal(name, size, why))
            return True

        for name, reason in invalid:
            remove(name, _size(os.path.join(cache_dir, name)), f"invalid: {reason}")
        survivors = []
        for entry in entries:
            if entry.file_id not in live:
                if remove(entry.name, entry.cache_size, "stale"):
                    continue
            survivors.append(entry)
        total = sum(e.cache_size for e in survivors)
        if max_size is not None and total > max_size:
            by_age = sorted(survivors, key=lambda e: (times.get(e.name, (0, 0))[0], e.name))
            for entry in by_age:
                if total <= max_size:
                    break
                if remove(entry.name, entry.cache_size, "lru"):
                    survivors.remove(entry)
                    total -= entry.cache_size
        if not dry_run:
            _remove_dead_partials(cache_dir)
            write_index_locked(cache_dir)
    return GcReport(tuple(removed), tuple(in_use), len(survivors), total, elf_files)


def _remove_dead_partials(cache_dir: str) -> None:
    """Partial files of killed writers (``.<name>.<pid>.partial``), whatever their target."""
    for name in os.listdir(cache_dir):
        if name.startswith(".") and name.endswith(".partial"):
            target = name[1:].rsplit(".", 2)[0]
            remove_stale_partials(os.path.join(cache_dir, target))


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _times(cache_dir: str) -> dict[str, tuple[int, int]]:
    """name -> (atime, mtime) in ns, of every cache file in the directory."""
    out = {}
    for name in os.listdir(cache_dir):
        if name.endswith(".fexcache"):
            try:
                st = os.stat(os.path.join(cache_dir, name))
            except OSError:
                continue
            out[name] = (st.st_atime_ns, st.st_mtime_ns)
    return out


def _restore_atimes(cache_dir: str, times: dict[str, tuple[int, int]]) -> None:
    for name, ns in times.items():
        try:
            os.utime(os.path.join(cache_dir, name), ns=ns)
        except OSError:
            pass  # gone, or not ours to touch: its order is what it is

