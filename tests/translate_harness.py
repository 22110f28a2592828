"""Differential execution for translator tests: the same state through unicorn x86-64 and the translated AArch64.

State moves as docs/abi.md says: guest registers in x4..x20, PF/AF sources in
x21/x22, CF/ZF/SF/OF in NZCV, the state block at x28; both exits branch to
STOP.  Only the flags the last writer defines are compared (iced-x86's
``rflags_undefined``), as the validator does.

x87: a block with an x87 instruction (``translate.block.is_x87``) runs from
an x87 state on both sides, unicorn's ``FP0``-``FP7``/``FPSW``/``FPCW``/
``FPTAG`` and the state block at 0x400 (docs/abi.md "x87 state"), and the
registers (unless empty in both), control and status words, TOP and the
empty mask must agree afterwards; random states come from the validator's
generator, explicit ones are :class:`abi.X87Image` (``check(..., x87=[...])``).
As in the validator, where the SDM clears what unicorn's x87 keeps (OF/SF/AF
after ``fcomi``, C1 after a compare) the translation's 0 is accepted.  Other
blocks carry no x87 state and run as before.
"""

from __future__ import annotations

import random
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import iced_x86
from unicorn import (UC_ARCH_ARM64, UC_ARCH_X86, UC_ERR_EXCEPTION, UC_ERR_FETCH_UNMAPPED, UC_MODE_64, UC_MODE_ARM, Uc,
                     UcError)
from unicorn import arm64_const as A
from unicorn import x86_const as X

from fexaot_tool.runtime.a64 import x87_from_engine, x87_to_registers
from fexaot_tool.translate import GuestCode, abi, translate_block
from fexaot_tool.translate.abi import X87Image
from fexaot_tool.translate.block import is_x87
from fexaot_tool.validate import differential

GUEST = 0x400000  # guest code (also readable data: RIP-relative operands)
DATA = 0x600000  # guest data; pointer registers point into it
DATA_SIZE = 0x10000
HOST_CODE = 0x1000000
STATE = 0x2000000
STOP = 0x3000000  # dispatcher and runtime exit: emulation stops here

# Instructions whose translation exits to the runtime, and the reason it reports.
RUNTIME_EXITS = {iced_x86.Mnemonic.SYSCALL: abi.ExitReason.SYSCALL, iced_x86.Mnemonic.CPUID: abi.ExitReason.CPUID,
                 iced_x86.Mnemonic.RDTSC: abi.ExitReason.RDTSC, iced_x86.Mnemonic.INT3: abi.ExitReason.INT3,
                 iced_x86.Mnemonic.HLT: abi.ExitReason.HLT, iced_x86.Mnemonic.UD2: abi.ExitReason.UD2}
X86_GPRS = [X.UC_X86_REG_RAX, X.UC_X86_REG_RCX, X.UC_X86_REG_RDX, X.UC_X86_REG_RBX, X.UC_X86_REG_RSP,
            X.UC_X86_REG_RBP, X.UC_X86_REG_RSI, X.UC_X86_REG_RDI] + [getattr(X, f"UC_X86_REG_R{i}") for i in
                                                                     range(8, 16)]
A64_REGS = [getattr(A, f"UC_ARM64_REG_X{n}") for n in range(31)]
FLAG_BITS = {"CF": 0, "PF": 2, "AF": 4, "ZF": 6, "SF": 7, "OF": 11, "DF": 10}  # DF: the state block's df
ICED_FLAG = {"OF": 1, "SF": 2, "ZF": 4, "AF": 8, "CF": 16, "PF": 32, "DF": 64}
EDGES = [0, 1, 2, (1 << 64) - 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF,
         0x100000000, 0x7FFFFFFFFFFFFFFF, 0x8000000000000000, 0x8000000000000001, 0xFFFFFFFF80000000]
COUNTS = [0, 1, 2, 7, 8, 15, 16, 31, 32, 33, 63, 64, 65, 0xFF]


def assemble(source: str) -> bytes:
    """x86-64 machine code of Intel-syntax ``source`` (GNU as)."""
    with tempfile.TemporaryDirectory() as d:
        s, o, b = Path(d, "t.s"), Path(d, "t.o"), Path(d, "t.bin")
        s.write_text(".intel_syntax noprefix\n" + source + "\n")
        subprocess.run(["as", "--64", "-o", str(o), str(s)], check=True, capture_output=True)
        subprocess.run(["objcopy", "-O", "binary", "-j", ".text", str(o), str(b)], check=True)
        return b.read_bytes()


@dataclass
class Outcome:
    gprs: list[int]
    rip: int
    flags: dict[str, int]
    memory: bytes
    exit_reason: int
    xmm: list[int] = field(default_factory=list)
    x87: bytes | None = None  # the state-block x87 image after the run (x87 blocks only)


def x87_image(state: X87Image | bytes) -> bytes:
    """A state-block x87 image from an :class:`abi.X87Image`, or an image as it is."""
    if isinstance(state, (bytes, bytearray)):
        assert len(state) == abi.X87_SIZE
        return bytes(state)
    return state.pack()


def uses_x87(instructions) -> bool:
    return any(is_x87(ins) for ins in instructions)


def random_x87(rnd: random.Random, index: int, code: bytes, address: int) -> bytes:
    """A random x87 state for the block ``code`` at ``address``: the validator's (validate/differential.py)."""
    return differential.random_x87_image(rnd, index, differential.x87_stack_use(code, address))


# Lane values where SIMD and floating-point code goes wrong: signed zeros, infinities, quiet and
# signalling NaNs, denormals, the largest/smallest normals, integers at lane-size edges.
F32_EDGES = [0x00000000, 0x80000000, 0x3F800000, 0xBF800000, 0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00000,
             0x7F800001, 0x00000001, 0x807FFFFF, 0x7F7FFFFF, 0x00800000, 0x4F000000, 0xCF000000, 0x5F000000]
F64_EDGES = [0x0000000000000000, 0x8000000000000000, 0x3FF0000000000000, 0xBFF0000000000000, 0x7FF0000000000000,
             0xFFF0000000000000, 0x7FF8000000000000, 0xFFF8000000000000, 0x7FF0000000000001, 0x0000000000000001,
             0x800FFFFFFFFFFFFF, 0x7FEFFFFFFFFFFFFF, 0x0010000000000000, 0x43E0000000000000, 0xC3E0000000000000,
             0x41DFFFFFFFC00000]


def random_xmm(rnd: random.Random) -> int:
    """A 128-bit value: random bits, float/double edge lanes, or byte patterns (zero bytes, 0x80 bytes)."""
    kind = rnd.randrange(5)
    if kind == 0:
        return rnd.getrandbits(128)
    if kind == 1:
        return sum(rnd.choice(F32_EDGES) << (32 * i) for i in range(4))
    if kind == 2:
        return sum(rnd.choice(F64_EDGES) << (64 * i) for i in range(2))
    if kind == 3:
        return sum(rnd.choice((0, 0x80, 0xFF, 0x7F, 0x01, rnd.getrandbits(8))) << (8 * i) for i in range(16))
    return sum(rnd.choice(EDGES) << (64 * i) for i in range(2)) & ((1 << 128) - 1)


def _set_x86_vector_state(uc: Uc, state: dict) -> None:
    for n, value in enumerate(state["xmm"]):
        uc.reg_write(X.UC_X86_REG_XMM0 + n, value)
    uc.reg_write(X.UC_X86_REG_MXCSR, 0x1F80)  # a Linux process's
    if state.get("x87") is not None:
        uc.reg_write_batch(x87_to_registers(state["x87"]))


def _set_a64_vector_state(uc: Uc, state: dict) -> None:
    for n, value in enumerate(state["xmm"]):
        uc.reg_write(A.UC_ARM64_REG_Q0 + abi.XMM_HOST[n], value)
    uc.reg_write(A.UC_ARM64_REG_FPCR, 0)  # round to nearest, no flush-to-zero: MXCSR 0x1F80


def _load_a64_state(uc: Uc, state: dict, state_block: int, fs_base: int, stop: int) -> None:
    """Guest registers, flags and XMM into their AArch64 registers (docs/abi.md), and the state block at
    ``state_block`` with DF, FS base, MXCSR and both exits pointing at ``stop``."""
    for n, value in enumerate(state["gprs"]):
        uc.reg_write(A64_REGS[abi.GPR_HOST[n]], value)
    _set_a64_vector_state(uc, state)
    f = state["flags"]
    uc.reg_write(A.UC_ARM64_REG_NZCV, f["SF"] << 31 | f["ZF"] << 30 | f["CF"] << 29 | f["OF"] << 28)
    uc.reg_write(A64_REGS[abi.PF_SRC], 0 if f["PF"] else 1)
    uc.reg_write(A64_REGS[abi.AF_SRC], f["AF"] << 4)
    uc.reg_write(A64_REGS[abi.STATE], state_block)
    block = bytearray(0x100)
    block[abi.DF_OFFSET] = f["DF"]
    block[abi.FS_BASE_OFFSET:abi.FS_BASE_OFFSET + 8] = fs_base.to_bytes(8, "little")
    block[abi.DISPATCH_OFFSET:abi.DISPATCH_OFFSET + 8] = stop.to_bytes(8, "little")
    block[abi.EXIT_TO_RUNTIME_OFFSET:abi.EXIT_TO_RUNTIME_OFFSET + 8] = stop.to_bytes(8, "little")
    block[abi.MXCSR_OFFSET:abi.MXCSR_OFFSET + 4] = (0x1F80).to_bytes(4, "little")  # the guest MXCSR
    uc.mem_write(state_block, bytes(block))
    if state.get("x87") is not None:
        uc.mem_write(state_block + abi.X87_REGS_OFFSET, state["x87"])


def _a64_x87(uc: Uc, state: dict, state_block: int) -> bytes | None:
    if state.get("x87") is None:
        return None
    return bytes(uc.mem_read(state_block + abi.X87_REGS_OFFSET, abi.X87_SIZE))


def _x86_xmm(uc: Uc) -> list[int]:
    return [uc.reg_read(X.UC_X86_REG_XMM0 + n) for n in range(16)]


def _a64_xmm(uc: Uc) -> list[int]:
    return [uc.reg_read(A.UC_ARM64_REG_Q0 + abi.XMM_HOST[n]) for n in range(16)]


def _compare_xmm(state: dict, want: Outcome, got: Outcome, where: str) -> None:
    for n in range(16):
        assert got.xmm[n] == want.xmm[n], (
            f"xmm{n}: got {got.xmm[n]:#034x} want {want.xmm[n]:#034x}: {where} xmm {[hex(v) for v in state['xmm']]}")


def _executed(code: bytes, address: int, instructions) -> tuple:
    """The validator's view (differential.GuestInstruction) of the instructions that ran, the first
    ``len(instructions)`` of ``code`` at ``address``."""
    return differential.decode_block(code, address)[:len(instructions)]


def _compare_x87(state: dict, want: Outcome, got: Outcome, executed, where: str) -> None:
    """The x87 images after the run agree (C1 cleared by a compare where unicorn keeps it: the SDM's).
    ``executed``: from :func:`_executed`."""
    if want.x87 is None or got.x87 is None:
        return
    wrong = [d for d in differential.x87_differences(want.x87, got.x87)
             if not differential.sdm_clears_c1(executed, d, got.x87)]
    assert not wrong, (f"x87: {', '.join(f'{d.field}: got {d.actual} want {d.expected}' for d in wrong)}: {where} "
                       f"x87 {differential.describe_x87(state['x87'])}")


def _sdm_cleared_flag(executed, name: str, got: int) -> bool:
    """fcomi/fucomi clear OF, SF and AF (SDM) where unicorn's x87 keeps them: the translation's 0 is right.
    ``executed``: from :func:`_executed`."""
    bit = {"OF": differential.OF, "SF": differential.SF, "AF": differential.AF}.get(name)
    return bit is not None and not got and differential.sdm_clears_flag(executed, bit, 0)


class Differ:
    def __init__(self, memory_order: str = "tso", features: tuple[str, ...] | None = None, optimise: bool = True):
        self.memory_order = memory_order
        self.features = features  # None: the translator's default
        self.optimise = optimise  # False: without the IR passes (speed-profile's reached blocks)
        self.arm = Uc(UC_ARCH_ARM64, UC_MODE_ARM)
        self.arm.ctl_set_cpu_model(A.UC_CPU_ARM64_MAX)
        for base, size in ((GUEST, 0x10000), (DATA, DATA_SIZE), (HOST_CODE, 0x10000), (STATE, 0x1000),
                           (STOP, 0x1000)):
            self.arm.mem_map(base, size)

    def check(self, code: bytes, states: int = 20, seed: int = 1, count_reg: bool = False,
              load_base: int = 0, overrides: dict | None = None, fill=None, reference: bytes | None = None,
              x87: Sequence | None = None) -> int:
        """Run ``code`` (one block) from ``states`` random states on both engines; assert equal.  Returns the
        number of AArch64 instructions.

        A block with an x87 instruction also gets a random x87 state in each case (the validator's:
        edge values, every precision and rounding control, full and partly empty stacks), and the x87
        state after it is compared.  ``x87``: explicit x87 states (:class:`abi.X87Image`, anything with its
        fields, or state-block images), one case each before the random ones (with random GPRs, flags
        and XMM as usual; ``states=0`` runs only these).

        The code is translated as linked at GUEST - load_base and run at GUEST, with its GUEST_ABS64
        relocations patched for that load base: the cached bytes must not depend on where the module is.
        ``overrides`` maps a GPR number to a function of the Random giving its value; ``fill`` is a
        function of the Random giving DATA's bytes (default: random bytes).  ``reference``: the x86 code
        unicorn runs instead of ``code`` (the same length and effect, where unicorn gets ``code`` wrong).
        """
        instructions = list(iced_x86.Decoder(64, code, ip=GUEST))
        linked = GUEST - load_base
        guest = GuestCode(0, ((linked, code),))
        kwargs = {"features": self.features} if self.features is not None else {}
        block = translate_block(guest, linked, len(code), self.memory_order == "tso", optimise=self.optimise, **kwargs)
        assert block.stop is None, f"not translated in full: {block.stop}"
        host = bytearray(block.code)
        for at, address in block.literals:
            host[at:at + 8] = (load_base + address).to_bytes(8, "little")  # GUEST_ABS64, image base 0
        self.arm.mem_write(HOST_CODE, bytes(host))
        self.arm.ctl_remove_cache(HOST_CODE, HOST_CODE + 0x10000)
        self.arm.mem_write(GUEST, code)
        self.code = code
        if reference is not None:
            assert len(reference) == len(code)
            self.code = reference
            instructions = list(iced_x86.Decoder(64, reference, ip=GUEST))
        explicit = [x87_image(x) for x in x87 or ()]
        x87_block = uses_x87(instructions)
        assert x87_block or not explicit, "x87 states for a block without x87 instructions"
        rnd = random.Random(seed)
        for n in range(len(explicit) + states):
            state = self._random_state(rnd, count_reg)
            if x87_block:
                state["x87"] = explicit[n] if n < len(explicit) else random_x87(rnd, n - len(explicit), self.code,
                                                                                 GUEST)
            for r, value in (overrides or {}).items():
                state["gprs"][r] = value(rnd)
            memory = rnd.randbytes(DATA_SIZE) if fill is None else fill(rnd)
            want = self._run_x86(state, memory, instructions)
            got = self._run_arm(state, memory)
            self._compare(code, state, want, got, instructions)
        return block.host_instructions

    def _random_state(self, rnd: random.Random, count_reg: bool) -> dict:
        gprs = [rnd.choice(EDGES) if rnd.random() < 0.7 else rnd.getrandbits(64) for _ in range(16)]
        gprs[3] = DATA + 0x4000 + rnd.randrange(64)  # rbx: a pointer
        gprs[4] = DATA + 0x8000 + 8 * rnd.randrange(8)  # rsp
        gprs[5] = DATA + 0x6000 + 8 * rnd.randrange(8)  # rbp: a frame pointer (leave)
        gprs[6] = rnd.randrange(256)  # rsi: a small index
        if count_reg:
            gprs[1] = rnd.choice(COUNTS) | (rnd.getrandbits(56) << 8 if rnd.random() < 0.3 else 0)
        flags = {f: rnd.getrandbits(1) for f in FLAG_BITS}
        return {"gprs": gprs, "flags": flags, "xmm": [random_xmm(rnd) for _ in range(16)]}

    def _run_x86(self, state: dict, memory: bytes, instructions) -> Outcome:
        # A fresh engine per run: after a #DE, unicorn's x86 engine did not fault again on a later run.
        uc = Uc(UC_ARCH_X86, UC_MODE_64)
        uc.mem_map(GUEST, 0x10000)
        uc.mem_map(DATA, DATA_SIZE)
        uc.mem_write(GUEST, self.code)
        for reg, value in zip(X86_GPRS, state["gprs"]):
            uc.reg_write(reg, value)
        _set_x86_vector_state(uc, state)
        uc.reg_write(X.UC_X86_REG_FS_BASE, DATA)
        uc.reg_write(X.UC_X86_REG_RFLAGS, 2 | sum(v << FLAG_BITS[f] for f, v in state["flags"].items()))
        uc.mem_write(DATA, memory)
        exit_reason = RUNTIME_EXITS.get(instructions[-1].mnemonic, 0)
        count = len(instructions) - 1 if exit_reason else len(instructions)
        rip = None
        if exit_reason:
            last = instructions[-1]
            rip = last.next_ip if exit_reason in abi.EXIT_AFTER else last.ip
        try:
            if count and not exit_reason and any(_repeats(i) for i in instructions):
                # unicorn counts each iteration of a rep string instruction: run to the block's end.
                uc.emu_start(GUEST, instructions[-1].next_ip)
            elif count:
                uc.emu_start(GUEST, GUEST + 0x10000, count=count)
        except UcError as e:
            if e.errno != UC_ERR_FETCH_UNMAPPED:  # a branch out of the mapped code is fine
                assert e.errno == UC_ERR_EXCEPTION, e
                exit_reason = abi.ExitReason.DIVIDE_ERROR  # the only fault these tests provoke
        rflags = uc.reg_read(X.UC_X86_REG_RFLAGS)
        if rip is None:
            rip = uc.reg_read(X.UC_X86_REG_RIP)
        return Outcome([uc.reg_read(r) for r in X86_GPRS], rip,
                       {f: rflags >> b & 1 for f, b in FLAG_BITS.items()}, bytes(uc.mem_read(DATA, DATA_SIZE)),
                       exit_reason, _x86_xmm(uc), x87_from_engine(uc) if state.get("x87") is not None else None)

    def _run_arm(self, state: dict, memory: bytes) -> Outcome:
        uc = self.arm
        _load_a64_state(uc, state, STATE, DATA, STOP)
        uc.mem_write(DATA, memory)
        uc.emu_start(HOST_CODE, STOP, count=100_000)
        assert uc.reg_read(A.UC_ARM64_REG_PC) == STOP, "translated code did not reach an exit"
        nzcv = uc.reg_read(A.UC_ARM64_REG_NZCV)
        pf_src = uc.reg_read(A64_REGS[abi.PF_SRC]) & 0xFF
        flags = {"SF": nzcv >> 31 & 1, "ZF": nzcv >> 30 & 1, "CF": nzcv >> 29 & 1, "OF": nzcv >> 28 & 1,
                 "PF": 1 - bin(pf_src).count("1") % 2, "AF": uc.reg_read(A64_REGS[abi.AF_SRC]) >> 4 & 1,
                 "DF": uc.mem_read(STATE + abi.DF_OFFSET, 8)[0]}
        exit_reason = int.from_bytes(uc.mem_read(STATE + abi.EXIT_REASON_OFFSET, 4), "little")
        return Outcome([uc.reg_read(A64_REGS[h]) for h in abi.GPR_HOST], uc.reg_read(A64_REGS[0]), flags,
                       bytes(uc.mem_read(DATA, DATA_SIZE)), exit_reason, _a64_xmm(uc), _a64_x87(uc, state, STATE))

    def _compare(self, code: bytes, state: dict, want: Outcome, got: Outcome, instructions) -> None:
        where = f"{' ; '.join(str(i) for i in instructions)} from {[hex(v) for v in state['gprs']]} {state['flags']}"
        assert got.exit_reason == want.exit_reason, f"exit reason {got.exit_reason} != {want.exit_reason}: {where}"
        if want.exit_reason == abi.ExitReason.DIVIDE_ERROR:
            instructions = instructions[:-1]  # the faulting div changed nothing
        for n in range(16):
            assert got.gprs[n] == want.gprs[n], (
                f"{X86_NAMES[n]}: got {got.gprs[n]:#x} want {want.gprs[n]:#x}: {where}")
        _compare_xmm(state, want, got, where)
        assert got.rip == want.rip, f"rip got {got.rip:#x} want {want.rip:#x}: {where}"
        executed = _executed(self.code, GUEST, instructions) if want.x87 is not None else ()
        _compare_x87(state, want, got, executed, where)
        defined = _defined_flags(instructions, want.rip)
        for f, v in want.flags.items():
            if defined & ICED_FLAG[f]:
                assert got.flags[f] == v or _sdm_cleared_flag(executed, f, got.flags[f]), (
                    f"{f}: got {got.flags[f]} want {v}: {where}")
        if got.memory != want.memory:
            diff = next(i for i in range(DATA_SIZE) if got.memory[i] != want.memory[i])
            raise AssertionError(f"memory differs at {DATA + diff:#x}: {where}")


X86_NAMES = "rax rcx rdx rbx rsp rbp rsi rdi r8 r9 r10 r11 r12 r13 r14 r15".split()


def _repeats(ins: iced_x86.Instruction) -> bool:
    return ins.is_string_instruction and (ins.has_rep_prefix or ins.has_repne_prefix)


def _defined_flags(instructions, end_rip: int) -> int:
    """Flags whose last writer defines them (or that nothing wrote)."""
    defined = 0x7F
    for ins in instructions:
        if _repeats(ins):
            continue  # with RCX = 0 it writes nothing: a flag is defined after it if it was before
        modified = ins.rflags_modified
        defined = (defined & ~modified) | (modified & ~ins.rflags_undefined)
    return defined


class ModuleDiffer:
    """Differential runs of real blocks of a module: any page a block touches is mapped on demand on both
    engines with the same content (the module's file image where it has one, else bytes derived from the
    address), so blocks can be run from random states without knowing what they access."""

    HOST = 0x7F0000000000  # translated code, state block and exit page, far above any guest module
    MAX_PAGES = 64

    def __init__(self, guest: GuestCode, memory_order: str = "tso"):
        self.guest = guest
        self.tso = memory_order == "tso"

    def _page(self, page: int) -> bytes:
        data = bytearray(self.guest.read(page, 0x1000) or b"")
        if len(data) < 0x1000:
            rnd = random.Random(page)
            data = bytearray(rnd.randbytes(0x1000))
            for start, chunk in self.guest.ranges:  # partly covered pages keep the file's bytes
                lo, hi = max(start, page), min(start + len(chunk), page + 0x1000)
                if lo < hi:
                    data[lo - page:hi - page] = chunk[lo - start:hi - start]
        return bytes(data)

    def _engine(self, arch: int, mode: int) -> tuple[Uc, dict[int, bytes]]:
        uc = Uc(arch, mode)
        if arch == UC_ARCH_ARM64:
            uc.ctl_set_cpu_model(A.UC_CPU_ARM64_MAX)  # before anything initialises the CPU
        pages: dict[int, bytes] = {}

        def on_unmapped(uc, access, address, size, value, user):
            if address >= 1 << 47 or len(pages) >= self.MAX_PAGES:
                return False
            for page in range(address & ~0xFFF, (address + max(size, 1) + 0xFFF) & ~0xFFF, 0x1000):
                if page not in pages:
                    pages[page] = self._page(page)
                    uc.mem_map(page, 0x1000)
                    uc.mem_write(page, pages[page])
            return True

        from unicorn import UC_HOOK_MEM_READ_UNMAPPED, UC_HOOK_MEM_WRITE_UNMAPPED
        uc.hook_add(UC_HOOK_MEM_READ_UNMAPPED | UC_HOOK_MEM_WRITE_UNMAPPED, on_unmapped)
        return uc, pages

    def check(self, start: int, length: int, states: int, seed: int, x87: Sequence | None = None) -> int:
        """Returns the number of states compared (states whose accesses could be mapped).

        x87 blocks get x87 state as in :meth:`Differ.check`; ``x87``: explicit states, one case each
        before the ``states`` random ones."""
        from fexaot_tool.translate import translate_block
        block = translate_block(self.guest, start, length, self.tso)
        if not block.code:
            return 0
        data = self.guest.read(start, block.guest_size)
        instructions = list(iced_x86.Decoder(64, data, ip=start))
        expect_reason = 0
        if block.stop is not None:
            expect_reason = abi.ExitReason.UNTRANSLATABLE
        elif instructions[-1].mnemonic in RUNTIME_EXITS:
            expect_reason = RUNTIME_EXITS[instructions[-1].mnemonic]
        host = bytearray(block.code)
        for at, address in block.literals:
            host[at:at + 8] = address.to_bytes(8, "little")
        explicit = [x87_image(x) for x in x87 or ()]
        x87_block = uses_x87(instructions)
        assert x87_block or not explicit, "x87 states for a block without x87 instructions"
        rnd = random.Random(seed)
        compared = 0
        for n in range(len(explicit) + states):
            state = self._state(rnd)
            if x87_block:
                state["x87"] = explicit[n] if n < len(explicit) else random_x87(rnd, n - len(explicit), data, start)
            if any(_repeats(i) for i in instructions):
                state["gprs"][1] = rnd.choice((0, 1, 3, rnd.randrange(64)))  # a rep count, not 2^64
            want = self._x86(state, instructions, expect_reason, block)
            if want is None:
                continue
            got = self._arm(state, bytes(host))
            if got is None:
                continue
            self._compare(instructions if expect_reason != abi.ExitReason.DIVIDE_ERROR else instructions[:-1],
                          state, want, got, data)
            compared += 1
        return compared

    def _state(self, rnd: random.Random) -> dict:
        base = 0x10000000
        gprs = []
        for _ in range(16):
            r = rnd.random()
            gprs.append(base + rnd.randrange(0, 0x10000, 8) if r < 0.45 else rnd.choice(EDGES) if r < 0.75
                        else rnd.getrandbits(64) if r < 0.85 else rnd.randrange(256))
        gprs[4] = base + 0x20000 + 8 * rnd.randrange(64)
        return {"gprs": gprs, "flags": {f: rnd.getrandbits(1) for f in FLAG_BITS},
                "xmm": [random_xmm(rnd) for _ in range(16)]}

    def _x86(self, state, instructions, expect_reason, block):
        uc, pages = self._engine(UC_ARCH_X86, UC_MODE_64)
        first, end = instructions[0].ip, instructions[-1].next_ip
        # The block's code and the page after it: unicorn decodes ahead of the instruction count.
        for page in range(first & ~0xFFF, (end + 0x1FFF) & ~0xFFF, 0x1000):
            pages[page] = self._page(page)
            uc.mem_map(page, 0x1000)
            uc.mem_write(page, pages[page])
        for reg, value in zip(X86_GPRS, state["gprs"]):
            uc.reg_write(reg, value)
        _set_x86_vector_state(uc, state)
        uc.reg_write(X.UC_X86_REG_FS_BASE, 0x10008000)
        uc.reg_write(X.UC_X86_REG_RFLAGS, 2 | sum(v << FLAG_BITS[f] for f, v in state["flags"].items()))
        count = len(instructions) - (1 if expect_reason and expect_reason != abi.ExitReason.UNTRANSLATABLE else 0)
        reason = expect_reason
        try:
            if any(_repeats(i) for i in instructions) and instructions[-1].flow_control == iced_x86.FlowControl.NEXT:
                uc.emu_start(instructions[0].ip, end)  # unicorn counts rep iterations as instructions
            else:
                uc.emu_start(instructions[0].ip, 1 << 62, count=count)
        except UcError as e:
            if e.errno == UC_ERR_EXCEPTION and instructions[-1].mnemonic in (iced_x86.Mnemonic.DIV,
                                                                           iced_x86.Mnemonic.IDIV):
                reason = abi.ExitReason.DIVIDE_ERROR
            elif e.errno != UC_ERR_FETCH_UNMAPPED:
                return None  # an access that could not be mapped (non-canonical): not comparable
        rip = uc.reg_read(X.UC_X86_REG_RIP)
        if reason and reason != abi.ExitReason.DIVIDE_ERROR:
            last = instructions[-1]
            rip = last.next_ip if reason in abi.EXIT_AFTER else (
                block.stop[2] if reason == abi.ExitReason.UNTRANSLATABLE else last.ip)
        if reason == abi.ExitReason.DIVIDE_ERROR:
            rip = instructions[-1].ip
        rflags = uc.reg_read(X.UC_X86_REG_RFLAGS)
        memory = {p: bytes(uc.mem_read(p, 0x1000)) for p in pages}
        return Outcome([uc.reg_read(r) for r in X86_GPRS], rip, {f: rflags >> b & 1 for f, b in FLAG_BITS.items()},
                       memory, reason, _x86_xmm(uc), x87_from_engine(uc) if state.get("x87") is not None else None)

    def _arm(self, state, host: bytes):
        uc, pages = self._engine(UC_ARCH_ARM64, UC_MODE_ARM)
        code, st, stop = self.HOST, self.HOST + 0x100000, self.HOST + 0x200000
        uc.mem_map(code, 0x100000)
        uc.mem_map(st, 0x1000)
        uc.mem_map(stop, 0x1000)
        uc.mem_write(code, host)
        _load_a64_state(uc, state, st, 0x10008000, stop)
        try:
            uc.emu_start(code, stop, count=1_000_000)
        except UcError:
            return None
        assert uc.reg_read(A.UC_ARM64_REG_PC) == stop, "translated code did not reach an exit"
        nzcv = uc.reg_read(A.UC_ARM64_REG_NZCV)
        pf_src = uc.reg_read(A64_REGS[abi.PF_SRC]) & 0xFF
        flags = {"SF": nzcv >> 31 & 1, "ZF": nzcv >> 30 & 1, "CF": nzcv >> 29 & 1, "OF": nzcv >> 28 & 1,
                 "PF": 1 - bin(pf_src).count("1") % 2, "AF": uc.reg_read(A64_REGS[abi.AF_SRC]) >> 4 & 1,
                 "DF": uc.mem_read(st + abi.DF_OFFSET, 8)[0]}
        reason = int.from_bytes(uc.mem_read(st + abi.EXIT_REASON_OFFSET, 4), "little")
        memory = {p: bytes(uc.mem_read(p, 0x1000)) for p in pages}
        return Outcome([uc.reg_read(A64_REGS[h]) for h in abi.GPR_HOST], uc.reg_read(A64_REGS[0]), flags, memory,
                       reason, _a64_xmm(uc), _a64_x87(uc, state, st))

    def _compare(self, instructions, state, want: Outcome, got: Outcome, code: bytes = b"") -> None:
        where = f"{' ; '.join(str(i) for i in instructions)} @ {instructions[0].ip:#x} from " \
                f"{[hex(v) for v in state['gprs']]} {state['flags']}"
        assert got.exit_reason == want.exit_reason, f"exit reason {got.exit_reason} != {want.exit_reason}: {where}"
        if want.exit_reason in (abi.ExitReason.DIVIDE_ERROR, *RUNTIME_EXITS.values()):
            instructions = instructions[:-1]  # the exit happens before the instruction's effects
        for n in range(16):
            assert got.gprs[n] == want.gprs[n], f"{X86_NAMES[n]}: got {got.gprs[n]:#x} want {want.gprs[n]:#x}: {where}"
        _compare_xmm(state, want, got, where)
        assert got.rip == want.rip, f"rip got {got.rip:#x} want {want.rip:#x}: {where}"
        executed = _executed(code, instructions[0].ip, instructions) if want.x87 is not None and instructions else ()
        _compare_x87(state, want, got, executed, where)
        defined = _defined_flags(instructions, want.rip)
        for f, v in want.flags.items():
            if defined & ICED_FLAG[f]:
                assert got.flags[f] == v or _sdm_cleared_flag(executed, f, got.flags[f]), (
                    f"{f}: got {got.flags[f]} want {v}: {where}")
        for page in set(want.memory) | set(got.memory):
            a, b = want.memory.get(page), got.memory.get(page)
            if a is not None and b is not None:
                assert a == b, f"memory differs in page {page:#x}: {where}"
