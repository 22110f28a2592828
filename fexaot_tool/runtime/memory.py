"""Guest memory: host mappings at the guest's own addresses, mirrored into the CPU engine.

Every guest mapping is a real mapping of this process (``mmap`` at the address
the guest asked for, or the one the host kernel chose), so a pointer the guest
passes to a system call is valid for the host kernel as it is.  The engine
sees the same pages through ``mem_map_ptr``; :class:`GuestMemory` keeps the
two in step and tells its observer about every change, because the module map
and the profiler must see a mapping before it goes away.

The host process has mappings of its own (the Python interpreter, unicorn,
their heaps and stacks).  The guest must never replace one: a ``MAP_FIXED``
request over addresses the guest does not own is first reserved with
``MAP_FIXED_NOREPLACE``, which fails with ``EEXIST`` instead of clobbering.
"""

from __future__ import annotations

import bisect
import errno
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Protocol

from fexaot_tool.runtime import host
from fexaot_tool.runtime.host import (
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_FIXED_NOREPLACE,
    MAP_PRIVATE,
    MREMAP_DONTUNMAP,
    MREMAP_FIXED,
    PAGE_MASK,
    PROT_EXEC,
    PROT_NONE,
    PROT_READ,
    PROT_WRITE,
    page_down,
    page_up,
)

PROT_MASK = PROT_READ | PROT_WRITE | PROT_EXEC
TASK_SIZE = 1 << 47  # x86-64 user address space with 4-level paging


@dataclass(frozen=True)
class FileBacking:
    """The file a mapping shows, as the host kernel names it, and where in it the mapping starts."""

    host_path: str
    offset: int
    st_dev: int
    st_ino: int

    def at(self, delta: int) -> FileBacking:
        return replace(self, offset=self.offset + delta)


@dataclass(frozen=True)
class Mapping:
    """One run of guest pages with the same protection and backing (a VMA, for the kernel)."""

    start: int
    end: int
    prot: int
    backing: FileBacking | None = None  # None: anonymous memory
    label: str = ""  # "[stack]", "[heap]" or "" as in /proc/PID/maps

    @property
    def executable(self) -> bool:
        return bool(self.prot & PROT_EXEC)

    def slice(self, start: int, end: int) -> Mapping:
        backing = self.backing.at(start - self.start) if self.backing else None
        return Mapping(start, end, self.prot, backing, self.label)


class MemoryObserver(Protocol):
    """Told about every change: first that [start, end) is about to change (the pages are still as
    they were, so code there can still be read), then which pages went, then which came."""

    def changing(self, start: int, end: int) -> None: ...

    def mapped(self, mapping: Mapping) -> None: ...

    def unmapping(self, mapping: Mapping) -> None: ...

    def protected(self, before: Mapping, prot: int) -> None: ...


class GuestMemoryError(OSError):
    """A mapping the runtime could not make; ``errno`` is what the guest gets."""


class MappingTable:
    """Non-overlapping guest mappings sorted by start address."""

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._maps: list[Mapping] = []

    def __iter__(self) -> Iterator[Mapping]:
        return iter(list(self._maps))

    def __len__(self) -> int:
        return len(self._maps)

    def find(self, addr: int) -> Mapping | None:
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0 and addr < self._maps[i].end:
            return self._maps[i]
        return None

    def overlapping(self, start: int, end: int) -> list[Mapping]:
        """Mappings that share a page with [start, end), clipped to it, in address order."""
        i = max(bisect.bisect_right(self._starts, start) - 1, 0)
        out = []
        while i < len(self._maps) and self._maps[i].start < end:
            m = self._maps[i]
            if m.end > start:
                out.append(m.slice(max(m.start, start), min(m.end, end)))
            i += 1
        return out

    def gaps(self, start: int, end: int) -> list[tuple[int, int]]:
        """Sub-ranges of [start, end) that no guest mapping covers."""
        gaps, cursor = [], start
        for m in self.overlapping(start, end):
            if m.start > cursor:
                gaps.append((cursor, m.start))
            cursor = m.end
        if cursor < end:
            gaps.append((cursor, end))
        return gaps

    def covers(self, start: int, end: int) -> bool:
        return not self.gaps(start, end)

    def remove(self, start: int, end: int) -> None:
        """Forget [start, end), splitting mappings that straddle its ends."""
        i = max(bisect.bisect_right(self._starts, start) - 1, 0)
        keep_before, keep_after = [], []
        j = i
        while j < len(self._maps) and self._maps[j].start < end:
            m = self._maps[j]
            if m.end <= start:
                keep_before.append(m)
            else:
                if m.start < start:
                    keep_before.append(m.slice(m.start, start))
                if m.end > end:
                    keep_after.append(m.slice(end, m.end))
            j += 1
        self._maps[i:j] = keep_before + keep_after
        self._starts[i:j] = [m.start for m in keep_before + keep_after]

    def insert(self, mapping: Mapping) -> None:
        self.remove(mapping.start, mapping.end)
        i = bisect.bisect_left(self._starts, mapping.start)
        self._maps.insert(i, mapping)
        self._starts.insert(i, mapping.start)


def engine_perms(prot: int) -> int:
    """The access an x86 page with protection ``prot`` allows: write and execute imply read."""
    prot &= PROT_MASK
    return prot | PROT_READ if prot else PROT_NONE


class GuestMemory:
    """The guest's address space in this process, kept in step with the engine through an observer."""

    def __init__(self, observer: MemoryObserver):
        self.table = MappingTable()
        self.observer = observer
        self.brk_start = 0
        self.brk_current = 0

    # -- queries -----------------------------------------------------------------------

    def readable(self, addr: int, size: int) -> bool:
        if size <= 0:
            return True
        start, end = page_down(addr), page_up(addr + size)
        parts = self.table.overlapping(start, end)
        return self.table.covers(start, end) and all(engine_perms(m.prot) & PROT_READ for m in parts)

    def writable(self, addr: int, size: int) -> bool:
        if size <= 0:
            return True
        start, end = page_down(addr), page_up(addr + size)
        return self.table.covers(start, end) and all(m.prot & PROT_WRITE for m in self.table.overlapping(start, end))

    def read(self, addr: int, size: int) -> bytes | None:
        """Guest bytes, or None when a page is unmapped or unreadable (the kernel's EFAULT)."""
        return host.read_memory(addr, size) if self.readable(addr, size) else None

    def read_c_string(self, addr: int, limit: int = 4096) -> bytes | None:
        """A NUL-terminated string (without the NUL), None on EFAULT or when longer than ``limit``."""
        out = b""
        while len(out) <= limit:
            chunk_end = page_down(addr) + host.PAGE_SIZE
            if not self.readable(addr, 1):
                return None
            chunk = host.read_memory(addr, chunk_end - addr)
            nul = chunk.find(b"\0")
            if nul >= 0:
                out += chunk[:nul]
                return out if len(out) <= limit else None
            out += chunk
            addr = chunk_end
        return None

    # -- mapping ---------------------------------------------------------------------

    def map(self, addr: int, length: int, prot: int, flags: int, fd: int = -1, offset: int = 0,
            label: str = "") -> int:
        """``mmap`` for the guest; returns the address or ``-errno``.

        Without MAP_FIXED the host kernel picks the address (taking ``addr`` as a
        hint), so it cannot land on anything. With MAP_FIXED, pages the guest does
        not own are reserved with MAP_FIXED_NOREPLACE first.
        """
        if length == 0 or addr & PAGE_MASK or offset & PAGE_MASK:
            return -errno.EINVAL
        length = page_up(length)
        if length > TASK_SIZE:
            return -errno.ENOMEM
        backing = None
        if not flags & MAP_ANONYMOUS:
            backing = _file_backing(fd, offset)
            if backing is None:
                return -errno.EBADF
        if flags & MAP_FIXED and not flags & MAP_FIXED_NOREPLACE:
            reserved = self._reserve(addr, addr + length)
            if reserved < 0:
                return reserved
            self.observer.changing(addr, addr + length)
        result = host.mmap(addr, length, prot, flags, fd, offset)
        if result < 0:
            if flags & MAP_FIXED and not flags & MAP_FIXED_NOREPLACE:
                self._forget_unknown(addr, addr + length)
            return result
        self._install(Mapping(result, result + length, prot & PROT_MASK, backing, label))
        return result

    def map_fixed(self, addr: int, length: int, prot: int, fd: int = -1, offset: int = 0, label: str = "",
                  over_guest_pages: bool = False) -> int:
        """A mapping the runtime itself makes at ``addr`` (loader, stack, brk).

        By default it must land on free addresses (MAP_FIXED_NOREPLACE); with
        ``over_guest_pages`` it may replace guest pages, but never host ones.
        """
        flags = MAP_PRIVATE | (MAP_ANONYMOUS if fd < 0 else 0)
        flags |= MAP_FIXED if over_guest_pages else MAP_FIXED_NOREPLACE
        result = self.map(addr, length, prot, flags, fd, offset, label)
        if result >= 0 and result != addr:
            # A kernel older than 4.17 ignores MAP_FIXED_NOREPLACE and uses the address as a hint.
            self.unmap(result, length)
            return -errno.EEXIST
        return result

    def unmap(self, addr: int, length: int) -> int:
        """``munmap`` for the guest: only the guest's own pages in the range go; the rest is already "unmapped"."""
        if addr & PAGE_MASK or length == 0:
            return -errno.EINVAL
        end = addr + page_up(length)
        self.observer.changing(addr, end)
        for part in self.table.overlapping(addr, end):
            self.observer.unmapping(part)
            self.table.remove(part.start, part.end)
            host.munmap(part.start, part.end - part.start)
        return 0

    def protect(self, addr: int, length: int, prot: int) -> int:
        """``mprotect`` for the guest: every page must be the guest's (else ENOMEM, as for unmapped pages)."""
        if addr & PAGE_MASK:
            return -errno.EINVAL
        end = addr + page_up(length)
        if not self.table.covers(addr, end):
            return -errno.ENOMEM
        self.observer.changing(addr, end)
        result = host.mprotect(addr, end - addr, prot)
        if result < 0:
            return result
        for part in self.table.overlapping(addr, end):
            self.observer.protected(part, prot & PROT_MASK)
            self.table.insert(replace(part, prot=prot & PROT_MASK))
        return 0

    def remap(self, old: int, old_size: int, new_size: int, flags: int, new_addr: int) -> int:
        """``mremap`` for the guest, over one guest mapping."""
        if old & PAGE_MASK or new_size == 0:
            return -errno.EINVAL
        old_end = old + page_up(old_size)
        source = self.table.find(old)
        if source is None or (old_size and not self.table.covers(old, old_end)) or source.end < old_end:
            return -errno.EFAULT  # the kernel's answer for a range that is not one mapping
        if flags & MREMAP_DONTUNMAP:
            return -errno.EINVAL  # not needed by glibc; would leave two views of one file offset
        new_size = page_up(new_size)
        self.observer.changing(old, old_end)
        if flags & MREMAP_FIXED:
            if new_addr & PAGE_MASK:
                return -errno.EINVAL
            reserved = self._reserve(new_addr, new_addr + new_size)
            if reserved < 0:
                return reserved
            self.observer.changing(new_addr, new_addr + new_size)
        result = host.syscall(host.NR_MREMAP, old, old_size, new_size, flags, new_addr)
        if result < 0:
            if flags & MREMAP_FIXED:
                self._release_reservation(new_addr, new_addr + new_size)
            return result
        moved = source.slice(old, old_end)
        if old_size:
            self._forget(old, old_end)
        if flags & MREMAP_FIXED:
            self._forget(result, result + new_size)
        self._install(Mapping(result, result + new_size, moved.prot, moved.backing, moved.label))
        return result

    def brk(self, requested: int) -> int:
        """``brk`` for the guest: the heap after the program's last segment, grown with fresh pages."""
        if requested < self.brk_start:
            return self.brk_current
        old_top, new_top = page_up(self.brk_current), page_up(requested)
        if new_top > old_top:
            if self.map_fixed(old_top, new_top - old_top, PROT_READ | PROT_WRITE, label="[heap]") < 0:
                return self.brk_current  # as the kernel: brk fails by returning the old break
        elif new_top < old_top:
            self.unmap(new_top, old_top - new_top)
        self.brk_current = requested
        return requested

    def unmap_all(self) -> None:
        """Drop every guest mapping (execve: the old image goes)."""
        self.observer.changing(0, TASK_SIZE)
        for m in list(self.table):
            self.observer.unmapping(m)
            self.table.remove(m.start, m.end)
            host.munmap(m.start, m.end - m.start)
        self.brk_start = self.brk_current = 0

    # -- internals ---------------------------------------------------------------------

    def _install(self, mapping: Mapping) -> None:
        self._forget(mapping.start, mapping.end)
        self.table.insert(mapping)
        self.observer.mapped(mapping)

    def _forget(self, start: int, end: int) -> None:
        """The host pages in [start, end) were replaced or moved: forget what the guest had there."""
        for part in self.table.overlapping(start, end):
            self.observer.unmapping(part)
            self.table.remove(part.start, part.end)

    def _forget_unknown(self, start: int, end: int) -> None:
        """After a failed MAP_FIXED the kernel may have dropped the old pages: unmap them for sure."""
        self._forget(start, end)
        host.munmap(start, end - start)

    def _reserve(self, start: int, end: int) -> int:
        """Claim the pages of [start, end) the guest does not own; -ENOMEM if the host has any."""
        if end > TASK_SIZE or end <= start:
            return -errno.ENOMEM
        done = []
        for gap_start, gap_end in self.table.gaps(start, end):
            got = host.mmap(gap_start, gap_end - gap_start, PROT_NONE,
                            MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE)
            if got != gap_start:
                if got >= 0:
                    host.munmap(got, gap_end - gap_start)
                for s, e in done:
                    host.munmap(s, e - s)
                return -errno.ENOMEM
            done.append((gap_start, gap_end))
        return 0

    def _release_reservation(self, start: int, end: int) -> None:
        for gap_start, gap_end in self.table.gaps(start, end):
            host.munmap(gap_start, gap_end - gap_start)


def _file_backing(fd: int, offset: int) -> FileBacking | None:
    try:
        st = os.fstat(fd)
        path = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None
    return FileBacking(path, offset, st.st_dev, st.st_ino)
