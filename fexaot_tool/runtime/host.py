"""The host kernel, reached through libc's ``syscall(2)`` wrapper.

The runtime runs guest code in its own process with guest memory at the
guest's own addresses, so a guest system call is made by this process with
the guest's arguments unchanged.  Every call here returns what the raw system
call returns: a non-negative result, or ``-errno`` (the kernel's convention,
which is also what the guest expects in ``rax``).
"""

from __future__ import annotations

import ctypes
import errno
import os

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_syscall.argtypes = [ctypes.c_long] * 7

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
PAGE_MASK = PAGE_SIZE - 1

# x86-64 system call numbers the runtime itself makes on the host.
NR_MMAP, NR_MPROTECT, NR_MUNMAP, NR_MREMAP = 9, 10, 11, 25

# <sys/mman.h>
PROT_NONE, PROT_READ, PROT_WRITE, PROT_EXEC = 0, 1, 2, 4
MAP_SHARED, MAP_PRIVATE, MAP_SHARED_VALIDATE = 0x01, 0x02, 0x03
MAP_FIXED, MAP_ANONYMOUS = 0x10, 0x20
MAP_GROWSDOWN, MAP_DENYWRITE, MAP_NORESERVE = 0x100, 0x800, 0x4000
MAP_FIXED_NOREPLACE = 0x100000
MREMAP_MAYMOVE, MREMAP_FIXED, MREMAP_DONTUNMAP = 1, 2, 4


def syscall(number: int, a0: int = 0, a1: int = 0, a2: int = 0, a3: int = 0, a4: int = 0, a5: int = 0) -> int:
    """Make system call ``number`` on the host; returns the result or ``-errno``."""
    result = _syscall(number, a0, a1, a2, a3, a4, a5)
    if result == -1:
        # glibc's wrapper turned -errno into -1 + errno.  A call whose real
        # result is -1 (none on x86-64 Linux returns it on success) cannot be told apart.
        return -ctypes.get_errno()
    return result


def page_down(value: int) -> int:
    return value & ~PAGE_MASK


def page_up(value: int) -> int:
    return (value + PAGE_MASK) & ~PAGE_MASK


def mmap(addr: int, length: int, prot: int, flags: int, fd: int = -1, offset: int = 0) -> int:
    return syscall(NR_MMAP, addr, length, prot, flags, fd & 0xFFFFFFFF if fd < 0 else fd, offset)


def munmap(addr: int, length: int) -> int:
    return syscall(NR_MUNMAP, addr, length)


def mprotect(addr: int, length: int, prot: int) -> int:
    return syscall(NR_MPROTECT, addr, length, prot)


def read_memory(addr: int, length: int) -> bytes:
    """Bytes of this process's memory (guest memory is mapped at its own addresses)."""
    return ctypes.string_at(addr, length)


def write_memory(addr: int, data: bytes) -> None:
    ctypes.memmove(addr, data, len(data))


def host_mapping_at(addr: int) -> str | None:
    """What occupies ``addr`` in this process, from /proc/self/maps (for error messages)."""
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                fields = line.split(maxsplit=5)
                start, end = (int(x, 16) for x in fields[0].split("-"))
                if start <= addr < end:
                    name = fields[5].strip() if len(fields) > 5 else "[anonymous]"
                    return f"{start:#x}-{end:#x} {name}"
    except OSError:
        return None
    return None


def strerror(code: int) -> str:
    """``ENOENT (No such file or directory)`` for a positive errno value."""
    return f"{errno.errorcode.get(code, str(code))} ({os.strerror(code)})"
