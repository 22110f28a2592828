"""The host CPU as the x86 side of a differential test: ``NativeDiffer`` runs the block natively.

unicorn's x86 engine (QEMU's softfloat) is not silicon for SSE floating point:
when both operands of ``addps``/``mulsd``/... are NaNs it returns the one with
the larger significand (the x87 rule), where x86 SSE returns the first
operand's.  The machine the tests run on is an x86-64, so the referee is the
CPU itself: a forked child maps the guest data at DATA, the block at GUEST
followed by an epilogue, loads the state (GPRs, RFLAGS, XMM, MXCSR) from a
fixed buffer, runs the block and stores the state back.  The block must fall
through at its end, use no RIP-relative operand (the epilogue follows it)
and no FS/GS segment.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import platform

from translate_harness import DATA, DATA_SIZE, FLAG_BITS, GUEST, Differ, Outcome, assemble

STATE = 0x2000000  # the state buffer in the child
ENTRY = 0x1000000  # the prologue
_GPRS = "rax rcx rdx rbx rsp rbp rsi rdi r8 r9 r10 r11 r12 r13 r14 r15".split()
_RFLAGS, _HOST_RSP, _MXCSR, _HOST_MXCSR, _XMM = 0x80, 0x88, 0x90, 0x94, 0x100
_SIZE = 0x200

_PROLOGUE = "\n".join(
    ["push rbx", "push rbp", "push r12", "push r13", "push r14", "push r15", f"mov r15, {STATE:#x}",
     f"mov [r15+{_HOST_RSP:#x}], rsp", f"stmxcsr [r15+{_HOST_MXCSR:#x}]", f"ldmxcsr [r15+{_MXCSR:#x}]"]
    + [f"movdqu xmm{n}, [r15+{_XMM + 16 * n:#x}]" for n in range(16)]
    + [f"push qword ptr [r15+{_RFLAGS:#x}]", "popfq"]
    + [f"mov {r}, [r15+{8 * n:#x}]" for n, r in enumerate(_GPRS)]
    + ["jmp qword ptr [rip]", f".quad {GUEST:#x}"])
_EPILOGUE = "\n".join(
    [f"movabs [{STATE:#x}], rax", f"mov rax, {STATE:#x}"]
    + [f"mov [rax+{8 * n:#x}], {r}" for n, r in enumerate(_GPRS) if r != "rax"]
    + [f"mov rsp, [rax+{_HOST_RSP:#x}]", "pushfq", f"pop qword ptr [rax+{_RFLAGS:#x}]", f"stmxcsr [rax+{_MXCSR:#x}]"]
    + [f"movdqu [rax+{_XMM + 16 * n:#x}], xmm{n}" for n in range(16)]
    + [f"ldmxcsr [rax+{_HOST_MXCSR:#x}]", "cld", "pop r15", "pop r14", "pop r13", "pop r12", "pop rbp", "pop rbx",
       "ret"])

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_MAP_FIXED_NOREPLACE = 0x100000


def available() -> bool:
    return platform.machine() in ("x86_64", "AMD64")


def _map(address: int, size: int, data: bytes, executable: bool) -> None:
    prot = mmap.PROT_READ | mmap.PROT_WRITE | (mmap.PROT_EXEC if executable else 0)
    got = _libc.mmap(address, size, prot, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _MAP_FIXED_NOREPLACE, -1, 0)
    if got != address:
        raise OSError(ctypes.get_errno(), f"cannot map {address:#x}")
    ctypes.memmove(address, data, len(data))


class NativeDiffer(Differ):
    """A Differ whose x86 side is the host CPU (the ARM side stays unicorn's AArch64)."""

    _prologue = _epilogue = None

    def _run_x86(self, state: dict, memory: bytes, instructions) -> Outcome:
        if NativeDiffer._prologue is None:
            NativeDiffer._prologue, NativeDiffer._epilogue = assemble(_PROLOGUE), assemble(_EPILOGUE)
        buffer = bytearray(_SIZE)
        for n, value in enumerate(state["gprs"]):
            buffer[8 * n:8 * n + 8] = value.to_bytes(8, "little")
        rflags = 2 | sum(v << FLAG_BITS[f] for f, v in state["flags"].items())
        buffer[_RFLAGS:_RFLAGS + 8] = rflags.to_bytes(8, "little")
        buffer[_MXCSR:_MXCSR + 4] = (0x1F80).to_bytes(4, "little")
        for n, value in enumerate(state["xmm"]):
            buffer[_XMM + 16 * n:_XMM + 16 * n + 16] = value.to_bytes(16, "little")
        shared = mmap.mmap(-1, _SIZE + DATA_SIZE)  # anonymous and shared with the child
        pid = os.fork()
        if pid == 0:
            try:
                _map(STATE, 0x1000, bytes(buffer), False)
                _map(DATA, DATA_SIZE, memory, False)
                _map(GUEST, 0x10000, self.code + NativeDiffer._epilogue, True)
                _map(ENTRY, 0x1000, NativeDiffer._prologue, True)
                ctypes.CFUNCTYPE(None)(ENTRY)()
                shared[:_SIZE] = ctypes.string_at(STATE, _SIZE)
                shared[_SIZE:] = ctypes.string_at(DATA, DATA_SIZE)
                os._exit(0)
            except BaseException:
                os._exit(3)
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"native run failed: status {status:#x}"
        out = bytes(shared[:_SIZE])
        memory_after = bytes(shared[_SIZE:])
        shared.close()
        gprs = [int.from_bytes(out[8 * n:8 * n + 8], "little") for n in range(16)]
        rflags = int.from_bytes(out[_RFLAGS:_RFLAGS + 8], "little")
        xmm = [int.from_bytes(out[_XMM + 16 * n:_XMM + 16 * n + 16], "little") for n in range(16)]
        return Outcome(gprs, GUEST + len(self.code), {f: rflags >> b & 1 for f, b in FLAG_BITS.items()},
                       memory_after, 0, xmm)
