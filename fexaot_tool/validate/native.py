"""The host CPU as referee: run a guest block natively under ptrace, from a harness state.

unicorn's x86-64 engine is QEMU's, and it is not silicon everywhere: for SSE
floating point, when both operands are NaNs it returns the one with the
larger significand (the x87 rule) where x86 SSE returns the first operand's
(measured: ``addsd`` of 0x7ff0000000000001 and 0x7fffffffffffffff).  This
machine is an x86-64, so the validator can ask the CPU itself when unicorn and
a translation disagree (:mod:`differential`): a forked child maps the
harness's guest pages at their own addresses, stops itself, and the parent
(its tracer) loads the registers (``PTRACE_SETREGS``/``SETFPREGS``: GPRs,
RFLAGS, FS/GS base, MXCSR, XMM0-15, and for blocks that touch it the x87
state), single-steps exactly the instructions the unicorn reference ran (a
``rep`` string instruction counts once, however many iterations it takes), and
reads the registers and the written memory back.

x87 state crosses in the state block's format (docs/abi.md "x87 state":
physical registers R0-R7, control word, status word without TOP, TOP, empty
mask); the FXSAVE image holds the stack-relative ST(0)-ST(7) and an abridged
tag word with one bit per physical register (1 = valid), and this module
converts between the two.

It is used to adjudicate, never to hide: a disagreement stays a mismatch unless
the native run completed and the translation agrees with it in every compared
field.  When ptrace is not permitted (some containers), or a guest page cannot
be mapped at its address in the child, :meth:`NativeReferee.run` returns None
and the mismatch stands.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import platform
import signal
import struct
from dataclasses import dataclass

from fexaot_tool.translate import abi

PTRACE_TRACEME, PTRACE_GETREGS, PTRACE_SETREGS = 0, 12, 13
PTRACE_GETFPREGS, PTRACE_SETFPREGS, PTRACE_SINGLESTEP = 14, 15, 9
PTRACE_GETSIGINFO = 0x4202
_MAP_FIXED_NOREPLACE = 0x100000
_STEP_LIMIT = 1_000_000  # single steps before a run is abandoned (a rep with a huge count)

# struct user_regs_struct (x86-64), in order.
_REGS = ("r15 r14 r13 r12 rbp rbx r11 r10 r9 r8 rax rcx rdx rsi rdi orig_rax rip cs eflags rsp ss "
         "fs_base gs_base ds es fs gs").split()
_R = {name: i for i, name in enumerate(_REGS)}
_GPR_ORDER = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13", "r14",
              "r15")
# struct user_fpregs_struct: the FXSAVE image (512 bytes): FCW at 0, FSW at 2 (with TOP in bits 11-13),
# the abridged tag word at 4 (bit i: physical register i is valid), MXCSR at 24, ST0-ST7 at 32
# (16 bytes each, stack-relative), XMM0-15 at 160.
_FP_SIZE, _FP_FCW, _FP_FSW, _FP_FTW, _FP_MXCSR, _FP_ST, _FP_XMM = 512, 0, 2, 4, 24, 32, 160
_FPE_INTDIV = 1  # si_code of SIGFPE for #DE; x87/SSE floating-point exceptions have others

_libc = ctypes.CDLL(None, use_errno=True)
_libc.ptrace.restype = ctypes.c_long
_libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]


@dataclass(frozen=True)
class NativeRun:
    gpr: tuple[int, ...] = ()
    xmm: tuple[int, ...] = ()
    rflags: int = 0
    rip: int = 0
    memory: dict[tuple[int, int], bytes] | None = None  # (start, end) -> bytes, for the ranges asked for
    # The CPU raised a general-protection fault (SIGSEGV without a faulting address: a misaligned
    # movaps, a non-canonical address...) or #DE/#UD: the state is one the guest cannot be in.
    fault: str | None = None
    x87: bytes | None = None  # a state-block x87 image (docs/abi.md "x87 state"), when one was given


class NativeReferee:
    """Runs blocks natively; one child process per run."""

    def __init__(self) -> None:
        self.available = _ptrace_permitted()
        self.runs = 0

    def run(self, pages: dict[int, bytes], gpr: tuple[int, ...], rflags: int, xmm: tuple[int, ...], mxcsr: int,
            fs_base: int, gs_base: int, rip: int, steps: list[tuple[int, int]],
            ranges: list[tuple[int, int]], x87: bytes | None = None) -> NativeRun | None:
        """Run from ``rip``; ``steps`` is one (address, next address) per instruction to execute, in order
        (a rep instruction is stepped until RIP leaves it).  ``x87``: a state-block x87 image to start
        from, and to read back into :attr:`NativeRun.x87` (None: the child's own x87 state, not read).
        None when the run could not be made."""
        if not self.available:
            return None
        pid = os.fork()
        if pid == 0:  # the child: guest memory, then stop for the tracer; it never returns to Python
            try:
                _child(pages)
            finally:
                os._exit(99)
        try:
            return self._trace(pid, gpr, rflags, xmm, mxcsr, fs_base, gs_base, rip, steps, ranges, x87)
        finally:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass  # it had exited already, and was reaped

    def _trace(self, pid, gpr, rflags, xmm, mxcsr, fs_base, gs_base, rip, steps, ranges, x87) -> NativeRun | None:
        _, status = os.waitpid(pid, 0)
        if not os.WIFSTOPPED(status) or os.WSTOPSIG(status) != signal.SIGSTOP:
            self.available = not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 98
            return None  # the child could not map the pages (or trace itself)
        regs = (ctypes.c_ulonglong * len(_REGS))()
        if _libc.ptrace(PTRACE_GETREGS, pid, None, ctypes.byref(regs)) != 0:
            self.available = False
            return None
        for name, value in zip(_GPR_ORDER, gpr):
            regs[_R[name]] = value
        regs[_R["rip"]] = rip
        regs[_R["eflags"]] = rflags | 0x202  # IF stays set: the kernel refuses to clear it
        regs[_R["fs_base"]] = fs_base
        regs[_R["gs_base"]] = gs_base
        if _libc.ptrace(PTRACE_SETREGS, pid, None, ctypes.byref(regs)) != 0:
            return None
        fp = (ctypes.c_ubyte * _FP_SIZE)()
        if _libc.ptrace(PTRACE_GETFPREGS, pid, None, ctypes.byref(fp)) != 0:
            return None
        raw = bytearray(fp)
        raw[_FP_MXCSR:_FP_MXCSR + 4] = mxcsr.to_bytes(4, "little")
        for n, value in enumerate(xmm):
            raw[_FP_XMM + 16 * n:_FP_XMM + 16 * n + 16] = value.to_bytes(16, "little")
        if x87 is not None:
            x87_to_fxsave(x87, raw)
        ctypes.memmove(fp, bytes(raw), _FP_SIZE)
        if _libc.ptrace(PTRACE_SETFPREGS, pid, None, ctypes.byref(fp)) != 0:
            return None
        self.runs += 1
        taken = 0
        for address, next_address in steps:
            while True:
                if taken >= _STEP_LIMIT:
                    return None
                _libc.ptrace(PTRACE_SINGLESTEP, pid, None, None)
                taken += 1
                _, status = os.waitpid(pid, 0)
                if not os.WIFSTOPPED(status):
                    return None
                if os.WSTOPSIG(status) != signal.SIGTRAP:
                    return self._fault(pid, os.WSTOPSIG(status), address)
                _libc.ptrace(PTRACE_GETREGS, pid, None, ctypes.byref(regs))
                if regs[_R["rip"]] != address:  # a rep instruction stays at its address until done
                    break
        _libc.ptrace(PTRACE_GETREGS, pid, None, ctypes.byref(regs))
        _libc.ptrace(PTRACE_GETFPREGS, pid, None, ctypes.byref(fp))
        raw = bytes(fp)
        memory = {}
        try:
            with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
                for start, end in ranges:
                    mem.seek(start)
                    memory[(start, end)] = mem.read(end - start)
        except OSError:
            return None  # a written range on a page the child could not map: nothing to adjudicate with
        return NativeRun(tuple(regs[_R[name]] for name in _GPR_ORDER),
                         tuple(int.from_bytes(raw[_FP_XMM + 16 * n:_FP_XMM + 16 * n + 16], "little")
                               for n in range(16)),
                         regs[_R["eflags"]], regs[_R["rip"]], memory,
                         x87=None if x87 is None else x87_from_fxsave(raw))

    def _fault(self, pid: int, signo: int, address: int) -> NativeRun | None:
        """A fault the CPU raised at the instruction at ``address``; None when it may be the harness's doing."""
        at = _signal_address(pid)
        if signo == signal.SIGSEGV and at != 0:
            return None  # a page fault: maybe a page this child could not map at its address
        if signo == signal.SIGFPE and _signal_code(pid) != _FPE_INTDIV:
            # An unmasked x87 exception (#MF): silicon delivers it, translated code does not (docs/translator.md
            # "x87"), so the CPU cannot say what the translation should have computed.
            return None
        name = signal.Signals(signo).name
        return NativeRun(fault=f"{name} at {address:#x}" + (" (general protection)" if signo == signal.SIGSEGV else ""))


_PERMITTED: bool | None = None


def _ptrace_permitted() -> bool:
    """An x86-64 Linux host where a child may be traced (some containers forbid ptrace); probed once."""
    global _PERMITTED
    if _PERMITTED is None:
        _PERMITTED = False
        if platform.machine() in ("x86_64", "AMD64") and platform.system() == "Linux":
            pid = os.fork()
            if pid == 0:
                os._exit(0 if _libc.ptrace(PTRACE_TRACEME, 0, None, None) == 0 else 1)
            _, status = os.waitpid(pid, 0)
            _PERMITTED = os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    return _PERMITTED


def x87_to_fxsave(image: bytes, fxsave: bytearray) -> None:
    """Write a state-block x87 image into an FXSAVE image: FCW, FSW with TOP, the abridged tag word and
    ST(i) = physical register (TOP + i) & 7."""
    x87 = abi.X87Image.unpack(image)
    struct.pack_into("<HHB", fxsave, _FP_FCW, x87.cw, x87.sw | x87.top << 11, ~x87.empty & 0xFF)
    for i in range(8):
        struct.pack_into("<QH6x", fxsave, _FP_ST + 16 * i, *x87.st(i))


def x87_from_fxsave(fxsave: bytes) -> bytes:
    """The state-block x87 image of an FXSAVE image (the inverse of :func:`x87_to_fxsave`)."""
    cw, fsw, ftw = struct.unpack_from("<HHB", fxsave, _FP_FCW)
    top = fsw >> 11 & 7
    regs = [(0, 0)] * 8
    for i in range(8):
        regs[(top + i) & 7] = struct.unpack_from("<QH", fxsave, _FP_ST + 16 * i)
    return abi.X87Image(tuple(regs), top, cw, fsw & 0xC7FF, ~ftw & 0xFF).pack()


def _signal_code(pid: int) -> int:
    info = (ctypes.c_ubyte * 128)()  # siginfo_t: si_code at offset 8
    if _libc.ptrace(PTRACE_GETSIGINFO, pid, None, ctypes.byref(info)) != 0:
        return -1
    return int.from_bytes(bytes(info[8:12]), "little", signed=True)


def _signal_address(pid: int) -> int:
    info = (ctypes.c_ubyte * 128)()  # siginfo_t: si_addr at offset 16 for SIGSEGV/SIGBUS/SIGFPE/SIGILL
    if _libc.ptrace(PTRACE_GETSIGINFO, pid, None, ctypes.byref(info)) != 0:
        return -1
    return int.from_bytes(bytes(info[16:24]), "little")


def _child(pages: dict[int, bytes]) -> None:
    """Map ``pages`` (page address -> content) at their addresses, then PTRACE_TRACEME and stop.

    A page whose address this process already uses (random guest pointers can
    land on Python's heap) is left out: if the run touches it, it faults, and
    the case keeps whatever unicorn said.
    """
    page_size = mmap.PAGESIZE
    prot = mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _MAP_FIXED_NOREPLACE
    ordered = sorted(pages)
    runs: list[list[int]] = []
    for page in ordered:
        if runs and runs[-1][-1] + page_size == page:
            runs[-1].append(page)
        else:
            runs.append([page])
    for run in runs:
        if _libc.mmap(run[0], len(run) * page_size, prot, flags, -1, 0) == run[0]:
            mapped = run
        else:
            mapped = [p for p in run if _libc.mmap(p, page_size, prot, flags, -1, 0) == p]
        for page in mapped:
            ctypes.memmove(page, pages[page], page_size)
    if _libc.ptrace(PTRACE_TRACEME, 0, None, None) != 0:
        os._exit(98)  # ptrace is not permitted here
    os.kill(os.getpid(), signal.SIGSTOP)
    os._exit(96)  # the tracer never lets it get here


__all__ = ["NativeReferee", "NativeRun", "x87_from_fxsave", "x87_to_fxsave"]
