"""The x86 reference engine: unicorn 2.1.4's x86-64 CPU over identity-mapped guest memory.

It is the ground truth for translated code, the fallback for blocks the
translator cannot translate, and the profiler that sees every guest block.

Costs that shape this file (docs/runtime.md has the measurements): a register
read or write through the binding costs microseconds, so a system call reads
its seven registers in one batch; ``emu_start`` re-translates the block it
starts in, so the runtime enters it once per program image (and again only
when the block counter's buffer fills); and the block counter is native code
(blockcounter.py), because it runs for every block execution of the guest.
"""

from __future__ import annotations

import ctypes
import signal

import unicorn
from unicorn import unicorn_const as uc_const
from unicorn import x86_const as x86
from unicorn.unicorn_py3 import unicorn as uc_binding

from fexaot_tool.runtime.blockcounter import NativeBlockCounter
from fexaot_tool.runtime.cpuid import CpuidModel
from fexaot_tool.runtime.engine import BlockCount, Engine, EngineFault, SystemCallHandler

REGISTERS = {
    "rax": x86.UC_X86_REG_RAX, "rbx": x86.UC_X86_REG_RBX, "rcx": x86.UC_X86_REG_RCX,
    "rdx": x86.UC_X86_REG_RDX, "rsi": x86.UC_X86_REG_RSI, "rdi": x86.UC_X86_REG_RDI,
    "rbp": x86.UC_X86_REG_RBP, "rsp": x86.UC_X86_REG_RSP, "r8": x86.UC_X86_REG_R8,
    "r9": x86.UC_X86_REG_R9, "r10": x86.UC_X86_REG_R10, "r11": x86.UC_X86_REG_R11,
    "r12": x86.UC_X86_REG_R12, "r13": x86.UC_X86_REG_R13, "r14": x86.UC_X86_REG_R14,
    "r15": x86.UC_X86_REG_R15, "rip": x86.UC_X86_REG_RIP, "rflags": x86.UC_X86_REG_RFLAGS,
    "fs_base": x86.UC_X86_REG_FS_BASE, "gs_base": x86.UC_X86_REG_GS_BASE,
}
_SYSCALL_REGISTERS = [x86.UC_X86_REG_RAX, x86.UC_X86_REG_RDI, x86.UC_X86_REG_RSI, x86.UC_X86_REG_RDX,
                      x86.UC_X86_REG_R10, x86.UC_X86_REG_R8, x86.UC_X86_REG_R9]
_GPRS = [REGISTERS[n] for n in ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "r8", "r9", "r10",
                                  "r11", "r12", "r13", "r14", "r15")]

# A Linux process starts with the x87 control word 0x37F, MXCSR 0x1F80 (all
# exceptions masked, round to nearest) and an empty x87 stack; unicorn's reset
# state differs and gives different x87/SSE results (shared/NOTES.md).
_FPU_RESET = [(x86.UC_X86_REG_FPCW, 0x37F), (x86.UC_X86_REG_MXCSR, 0x1F80), (x86.UC_X86_REG_FPTAG, 0xFFFF)]
_RFLAGS_RESET = 0x202  # IF, and bit 1 which is always set

# What the kernel sends for each x86 exception vector (arch/x86/kernel/traps.c).
# Any other vector raised by `int n` is a #GP in user mode: SIGSEGV.
_SIGNAL_OF_VECTOR = {
    0: (signal.SIGFPE, "divide error (#DE)"),
    1: (signal.SIGTRAP, "debug exception (#DB)"),
    3: (signal.SIGTRAP, "breakpoint (int3)"),
    4: (signal.SIGSEGV, "overflow (#OF)"),
    5: (signal.SIGSEGV, "bound range exceeded (#BR)"),
    6: (signal.SIGILL, "invalid opcode (#UD)"),
    7: (signal.SIGFPE, "device not available (#NM)"),
    13: (signal.SIGSEGV, "general protection fault (#GP)"),
    14: (signal.SIGSEGV, "page fault (#PF)"),
    16: (signal.SIGFPE, "x87 floating-point error (#MF)"),
    17: (signal.SIGBUS, "alignment check (#AC)"),
    19: (signal.SIGFPE, "SIMD floating-point exception (#XM)"),
}
_ACCESS_NAMES = {
    uc_const.UC_MEM_READ_UNMAPPED: "read from unmapped address",
    uc_const.UC_MEM_WRITE_UNMAPPED: "write to unmapped address",
    uc_const.UC_MEM_FETCH_UNMAPPED: "jump to unmapped address",
    uc_const.UC_MEM_READ_PROT: "read from protected address",
    uc_const.UC_MEM_WRITE_PROT: "write to read-only address",
    uc_const.UC_MEM_FETCH_PROT: "jump to non-executable address",
}
_UNTIL_NEVER = (1 << 64) - 1  # not canonical, so the guest can never get there


class X86Engine(Engine):
    name = "x86"

    def __init__(self, cpuid: CpuidModel, on_syscall: SystemCallHandler) -> None:
        self.uc = unicorn.Uc(uc_const.UC_ARCH_X86, uc_const.UC_MODE_64)
        self.cpuid = cpuid
        self.on_syscall = on_syscall
        self._stop_requested = False
        self._bad_access: tuple[int, int] | None = None
        self._interrupt: int | None = None
        self._counter: NativeBlockCounter | None = None
        self.uc.hook_add(uc_const.UC_HOOK_INSN, self._syscall, aux1=x86.UC_X86_INS_SYSCALL)
        self.uc.hook_add(uc_const.UC_HOOK_INSN, self._cpuid, aux1=x86.UC_X86_INS_CPUID)
        self.uc.hook_add(uc_const.UC_HOOK_INTR, self._interrupt_hook)
        self.uc.hook_add(uc_const.UC_HOOK_MEM_UNMAPPED | uc_const.UC_HOOK_MEM_PROT, self._invalid_access)

    # -- memory ------------------------------------------------------------------------

    def map(self, start: int, size: int, perms: int) -> None:
        self.uc.mem_map_ptr(start, size, perms, start)

    def unmap(self, start: int, size: int) -> None:
        self.uc.mem_unmap(start, size)

    def protect(self, start: int, size: int, perms: int) -> None:
        self.uc.mem_protect(start, size, perms)

    def invalidate_code(self, start: int, end: int) -> None:
        self.uc.ctl_remove_cache(start, end)

    # -- state -------------------------------------------------------------------------

    def reset_thread(self, pc: int, sp: int) -> None:
        self.uc.reg_write_batch([(r, 0) for r in _GPRS] + _FPU_RESET + [
            (x86.UC_X86_REG_RSP, sp), (x86.UC_X86_REG_RIP, pc), (x86.UC_X86_REG_RFLAGS, _RFLAGS_RESET),
            (x86.UC_X86_REG_FS_BASE, 0), (x86.UC_X86_REG_GS_BASE, 0)])

    def read_register(self, name: str) -> int:
        return self.uc.reg_read(REGISTERS[name])

    def write_register(self, name: str, value: int) -> None:
        self.uc.reg_write(REGISTERS[name], value)

    # -- running -----------------------------------------------------------------------

    def run(self) -> None:
        self._stop_requested = False
        self._bad_access = None
        self._interrupt = None
        while True:
            try:
                self.uc.emu_start(self.uc.reg_read(x86.UC_X86_REG_RIP), _UNTIL_NEVER)
            except unicorn.UcError as e:
                raise self._fault(e.errno) from None
            if self._stop_requested or self._interrupt is not None or self._counter is None or not self._counter.full:
                break
            # The block counter's buffer filled up and stopped the engine: drain it and go on.
            self._counter.drain_after_stop()
        if self._interrupt is not None:
            signo, what = _SIGNAL_OF_VECTOR.get(self._interrupt, (signal.SIGSEGV, f"int {self._interrupt:#x}"))
            raise EngineFault(signo, what, self.read_register("rip"))
        if not self._stop_requested:
            raise EngineFault(signal.SIGSEGV, "execution stopped unexpectedly", self.read_register("rip"))

    def stop(self) -> None:
        self._stop_requested = True
        self.uc.emu_stop()

    # -- profiling ---------------------------------------------------------------------

    def enable_block_counting(self) -> None:
        if self._counter is not None:
            return
        emu_stop = ctypes.cast(uc_binding.uclib.uc_emu_stop, ctypes.c_void_p).value
        self._counter = NativeBlockCounter(emu_stop)
        handle = uc_binding.uc_hook_h()
        status = uc_binding.uclib.uc_hook_add(self.uc._uch, ctypes.byref(handle), uc_const.UC_HOOK_BLOCK,
                                              ctypes.c_void_p(self._counter.hook_address),
                                              ctypes.c_void_p(self._counter.user_data),
                                              ctypes.c_uint64(1), ctypes.c_uint64(0))
        if status != uc_const.UC_ERR_OK:
            raise unicorn.UcError(status)

    def take_block_counts(self) -> list[BlockCount]:
        if self._counter is None:
            return []
        return [BlockCount(address, size, n) for address, size, n in self._counter.take()]

    def close(self) -> None:
        # Unicorn frees its translation buffers when the handle goes; the guest pages are ours.
        self.uc = None  # type: ignore[assignment]
        if self._counter is not None:
            self._counter.close()
            self._counter = None

    # -- hooks -------------------------------------------------------------------------

    def _syscall(self, uc, _user_data) -> None:
        number, *args = uc.reg_read_batch(_SYSCALL_REGISTERS)
        result = self.on_syscall(number, tuple(args))
        if result is not None:
            uc.reg_write(x86.UC_X86_REG_RAX, result & 0xFFFFFFFFFFFFFFFF)

    def _cpuid(self, uc, _user_data) -> int:
        leaf, subleaf = uc.reg_read_batch([x86.UC_X86_REG_EAX, x86.UC_X86_REG_ECX])
        r = self.cpuid.query(leaf, subleaf)
        uc.reg_write_batch([(x86.UC_X86_REG_RAX, r.eax), (x86.UC_X86_REG_RBX, r.ebx),
                            (x86.UC_X86_REG_RCX, r.ecx), (x86.UC_X86_REG_RDX, r.edx)])
        return 1  # skip unicorn's own cpuid

    def _interrupt_hook(self, uc, intno, _user_data) -> None:
        self._interrupt = intno
        uc.emu_stop()

    def _invalid_access(self, uc, access, address, size, value, _user_data) -> bool:
        self._bad_access = (access, address)
        return False

    def _fault(self, error: int) -> EngineFault:
        rip = self.read_register("rip")
        if self._bad_access is not None:
            access, address = self._bad_access
            return EngineFault(signal.SIGSEGV, f"{_ACCESS_NAMES.get(access, 'bad access to')} {address:#x}", rip)
        if error == uc_const.UC_ERR_INSN_INVALID:
            return EngineFault(signal.SIGILL, "invalid or unsupported instruction", rip)
        return EngineFault(signal.SIGSEGV, str(unicorn.UcError(error)), rip)
