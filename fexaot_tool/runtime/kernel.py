"""System calls: the dispatch table built from ``syscalls.py``, and the calls the runtime owns.

Each guest ``syscall`` instruction arrives here as (number, six arguments) and
leaves as the value for ``rax``.  The table is built once per process from the
rows of :mod:`fexaot_tool.runtime.syscalls`: a passed-through call is a direct
host system call, so the cost per call is one dict lookup and one ctypes call.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import signal
import struct
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

from fexaot_tool.runtime import host, syscalls
from fexaot_tool.runtime.errors import UnsupportedSystemCallError
from fexaot_tool.runtime.loader import MAX_ARG_STRLEN
from fexaot_tool.runtime.syscalls import NAMES, NUMBERS, PathArgument

if TYPE_CHECKING:
    from fexaot_tool.runtime.process import GuestProcess

Args = tuple[int, int, int, int, int, int]
Handler = Callable[[Args], "int | None"]

# arch_prctl codes (<asm/prctl.h>).
ARCH_SET_GS, ARCH_SET_FS, ARCH_GET_FS, ARCH_GET_GS = 0x1001, 0x1002, 0x1003, 0x1004
# rt_sigaction: struct kernel_sigaction { handler, flags, restorer, mask } for x86-64, 32 bytes.
_SIGACTION = struct.Struct("<QQQQ")
SIG_DFL, SIG_IGN = 0, 1
NSIG = 64
# struct stack_t { void *ss_sp; int ss_flags; size_t ss_size; }, 24 bytes.
_STACK_T = struct.Struct("<QiiQ")
SS_DISABLE = 2
ROBUST_LIST_HEAD_SIZE = 24
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
_PROC_EXE = re.compile(rb"^/proc/(self|\d+)/exe$")
_PROC_FD = re.compile(rb"^/proc/(self|\d+)/fd/\d+$")


def _signed32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


class Kernel:
    """The guest's system calls for one process (a forked child keeps its parent's, as a copy)."""

    def __init__(self, process: GuestProcess):
        self.process = process
        self.counts: Counter[int] = Counter()
        self.sigactions: dict[int, bytes] = {}  # signal -> the guest's struct kernel_sigaction
        self.altstack = _STACK_T.pack(0, SS_DISABLE, 0, 0)
        self.clear_child_tid = 0
        self.robust_list = (0, 0)
        self.table: dict[int, Handler] = self._build_table()

    def dispatch(self, number: int, args: Args) -> int | None:
        self.counts[number] += 1
        handler = self.table.get(number)
        if handler is None:
            raise UnsupportedSystemCallError(self.process.program, f"unknown system call number {number}")
        return handler(args)

    def counts_by_name(self) -> Counter[str]:
        return Counter({syscalls.name_of(n): c for n, c in self.counts.items()})

    def after_exec(self) -> None:
        """execve resets caught signals to SIG_DFL (ignored ones stay ignored) and the alternate stack."""
        for signo, raw in list(self.sigactions.items()):
            if _SIGACTION.unpack(raw)[0] not in (SIG_DFL, SIG_IGN):
                del self.sigactions[signo]
        self.altstack = _STACK_T.pack(0, SS_DISABLE, 0, 0)
        self.clear_child_tid = 0
        self.robust_list = (0, 0)

    # -- the table ---------------------------------------------------------------------

    def _build_table(self) -> dict[int, Handler]:
        table: dict[int, Handler] = {}
        for number, name in NAMES.items():
            if name in syscalls.OWNED:
                table[number] = getattr(self, f"sys_{name}")
            elif name in syscalls.ENOSYS:
                table[number] = _returns(-errno.ENOSYS)
            elif name in syscalls.NOT_SUPPORTED:
                table[number] = self._refuse(number, name, syscalls.NOT_SUPPORTED[name])
            elif name in syscalls.PATH_ARGUMENTS and not self.process.paths.identity:
                table[number] = self._with_paths(number, syscalls.PATH_ARGUMENTS[name])
            else:
                table[number] = _pass_through(number)
        return table

    def _refuse(self, number: int, name: str, reason: str) -> Handler:
        def refuse(_args: Args) -> int:
            raise UnsupportedSystemCallError(self.process.program,
                                             f"system call {name} ({number}) is not supported: {reason}")
        return refuse

    def _with_paths(self, number: int, spec: tuple[PathArgument, ...]) -> Handler:
        def translated(args: Args) -> int:
            call = list(args)
            keep = []
            for p in spec:
                if call[p.index] == 0:
                    continue  # a NULL path: the kernel answers (EFAULT, or utimensat's "the fd itself")
                raw = self.process.memory.read_c_string(call[p.index])
                if raw is None:
                    return -errno.EFAULT
                if not raw.startswith(b"/"):
                    continue
                path = self.process.paths.to_host(os.fsdecode(raw), follow=p.follows(args))
                buffer = ctypes.create_string_buffer(os.fsencode(path))
                keep.append(buffer)
                call[p.index] = ctypes.addressof(buffer)
            return host.syscall(number, *call)
        return translated

    def _guest_path(self, pointer: int) -> str | int:
        """A path argument as the guest wrote it, or -errno when it cannot be read."""
        raw = self.process.memory.read_c_string(pointer)
        if raw is None:
            return -errno.EFAULT
        return os.fsdecode(raw)

    # -- memory ------------------------------------------------------------------------

    def sys_mmap(self, a: Args) -> int:
        return self.process.memory.map(a[0], a[1], a[2], a[3] & 0xFFFFFFFF, _signed32(a[4]), a[5])

    def sys_munmap(self, a: Args) -> int:
        return self.process.memory.unmap(a[0], a[1])

    def sys_mprotect(self, a: Args) -> int:
        # PROT_GROWSDOWN/GROWSUP extend the change to the mapping's end; glibc uses them
        # only for executable stacks, which the runtime maps whole.
        return self.process.memory.protect(a[0], a[1], a[2] & 0x7)

    def sys_mremap(self, a: Args) -> int:
        return self.process.memory.remap(a[0], a[1], a[2], a[3], a[4])

    def sys_brk(self, a: Args) -> int:
        return self.process.memory.brk(a[0])

    def sys_arch_prctl(self, a: Args) -> int:
        code, addr = a[0], a[1]
        engine = self.process.engine
        if code in (ARCH_SET_FS, ARCH_SET_GS):
            engine.write_register("fs_base" if code == ARCH_SET_FS else "gs_base", addr)
            return 0
        if code in (ARCH_GET_FS, ARCH_GET_GS):
            if not self.process.memory.writable(addr, 8):
                return -errno.EFAULT
            value = engine.read_register("fs_base" if code == ARCH_GET_FS else "gs_base")
            host.write_memory(addr, struct.pack("<Q", value))
            return 0
        return -errno.EINVAL  # CET, CPUID faulting, AMX permissions: not modelled

    # -- process lifetime -------------------------------------------------------------------

    def sys_exit(self, a: Args) -> None:
        # A single-threaded guest: its last thread leaving ends the process.
        self.process.exit(a[0] & 0xFF)

    def sys_exit_group(self, a: Args) -> None:
        self.process.exit(a[0] & 0xFF)

    def sys_execve(self, a: Args) -> int | None:
        path = self._guest_path(a[0])
        if isinstance(path, int):
            return path
        return self._execve(path, a[1], a[2])

    def sys_execveat(self, a: Args) -> int | None:
        dirfd, flags = _signed32(a[0]), a[4]
        path = self._guest_path(a[1])
        if isinstance(path, int):
            return path
        if not path and flags & AT_EMPTY_PATH:
            try:
                path = self.process.paths.to_guest(os.readlink(f"/proc/self/fd/{dirfd}"))
            except OSError:
                return -errno.EBADF
        elif not path.startswith("/") and dirfd != AT_FDCWD:
            try:
                path = self.process.paths.to_guest(os.readlink(f"/proc/self/fd/{dirfd}")) + "/" + path
            except OSError:
                return -errno.EBADF
        return self._execve(path, a[2], a[3])

    def _execve(self, path: str, argv_pointer: int, envp_pointer: int) -> int | None:
        argv = self._string_array(argv_pointer)
        envp = self._string_array(envp_pointer)
        if argv is None or envp is None:
            return -errno.EFAULT
        return self.process.execve(path, argv, envp)

    def _string_array(self, pointer: int) -> tuple[bytes, ...] | None:
        """A NULL-terminated array of string pointers (argv, envp); NULL itself is an empty array."""
        out: list[bytes] = []
        memory = self.process.memory
        while pointer:
            raw = memory.read(pointer, 8)
            if raw is None:
                return None
            (item,) = struct.unpack("<Q", raw)
            if item == 0:
                break
            s = memory.read_c_string(item, MAX_ARG_STRLEN)
            if s is None:
                return None
            out.append(s)
            pointer += 8
        return tuple(out)

    def sys_fork(self, a: Args) -> int:
        return self.process.fork(signal.SIGCHLD, 0, 0, 0, 0)

    def sys_vfork(self, a: Args) -> int:
        return self.process.fork(signal.SIGCHLD, 0, 0, 0, 0)

    def sys_clone(self, a: Args) -> int:
        # x86-64 argument order: flags, newsp, parent_tid, child_tid, tls.
        return self.process.fork(a[0], a[1], a[2], a[3], a[4])

    # -- signals and thread bookkeeping ---------------------------------------------------------

    def sys_rt_sigaction(self, a: Args) -> int:
        signo, act, oldact, sigsetsize = a[0], a[1], a[2], a[3]
        memory = self.process.memory
        if sigsetsize != 8 or not 1 <= signo <= NSIG:
            return -errno.EINVAL
        new = None
        if act:
            new = memory.read(act, _SIGACTION.size)
            if new is None:
                return -errno.EFAULT
            if signo in (signal.SIGKILL, signal.SIGSTOP):
                return -errno.EINVAL
        if oldact:
            if not memory.writable(oldact, _SIGACTION.size):
                return -errno.EFAULT
            host.write_memory(oldact, self.sigactions.get(signo, bytes(_SIGACTION.size)))
        if new is not None:
            handler = _SIGACTION.unpack(new)[0]
            if handler in (SIG_DFL, SIG_IGN):
                # Default and ignore are the process's own business: the host process is the guest's.
                host.syscall(NUMBERS["rt_sigaction"], signo, act, 0, 8)
            else:
                # A handler is recorded, never entered (docs/runtime.md): the host keeps the
                # default action, which is what the guest would get without a handler.
                host.syscall(NUMBERS["rt_sigaction"], signo, ctypes.addressof(_DEFAULT_ACTION), 0, 8)
            self.sigactions[signo] = new
        return 0

    def sys_sigaltstack(self, a: Args) -> int:
        ss, old_ss = a[0], a[1]
        memory = self.process.memory
        new = None
        if ss:
            new = memory.read(ss, _STACK_T.size)
            if new is None:
                return -errno.EFAULT
        if old_ss:
            if not memory.writable(old_ss, _STACK_T.size):
                return -errno.EFAULT
            host.write_memory(old_ss, self.altstack)
        if new is not None:
            self.altstack = new
        return 0

    def sys_set_tid_address(self, a: Args) -> int:
        self.clear_child_tid = a[0]
        return os.getpid()  # a single-threaded process: its thread id is its process id

    def sys_set_robust_list(self, a: Args) -> int:
        if a[1] != ROBUST_LIST_HEAD_SIZE:
            return -errno.EINVAL
        self.robust_list = (a[0], a[1])
        return 0

    # -- the guest's view of paths -------------------------------------------------------

    def sys_readlink(self, a: Args) -> int:
        return self._readlink(AT_FDCWD, a[0], a[1], a[2])

    def sys_readlinkat(self, a: Args) -> int:
        return self._readlink(_signed32(a[0]), a[1], a[2], a[3])

    def _readlink(self, dirfd: int, path_pointer: int, buf: int, size: int) -> int:
        raw = self.process.memory.read_c_string(path_pointer)
        if raw is None:
            return -errno.EFAULT
        if _signed32(size) <= 0:
            return -errno.EINVAL
        if _PROC_EXE.match(raw) and raw.split(b"/")[2] in (b"self", str(os.getpid()).encode()):
            target = os.fsencode(self.process.executable)
        else:
            name = raw
            if raw.startswith(b"/"):
                name = os.fsencode(self.process.paths.to_host(os.fsdecode(raw), follow=False))
            try:
                target = os.readlink(name, dir_fd=None if dirfd == AT_FDCWD else dirfd)
            except OSError as e:
                return -(e.errno or errno.EINVAL)
            if _PROC_FD.match(raw):
                target = os.fsencode(self.process.paths.to_guest(os.fsdecode(target)))
        target = target[:size]
        if not self.process.memory.writable(buf, len(target)):
            return -errno.EFAULT
        host.write_memory(buf, target)
        return len(target)

    def sys_getcwd(self, a: Args) -> int:
        buf, size = a[0], a[1]
        try:
            cwd = os.fsencode(self.process.paths.to_guest(os.getcwd())) + b"\0"
        except OSError as e:
            return -(e.errno or errno.ENOENT)
        if len(cwd) > size:
            return -errno.ERANGE
        if not self.process.memory.writable(buf, len(cwd)):
            return -errno.EFAULT
        host.write_memory(buf, cwd)
        return len(cwd)


_DEFAULT_ACTION = ctypes.create_string_buffer(_SIGACTION.pack(SIG_DFL, 0, 0, 0), _SIGACTION.size)


def _pass_through(number: int) -> Handler:
    syscall = host.syscall

    def passed(a: Args) -> int:
        return syscall(number, *a)
    return passed


def _returns(value: int) -> Handler:
    return lambda _args: value
