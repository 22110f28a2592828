"""Differential execution: a translated block against its guest bytes, from the same state.

For one block, :class:`DifferentialHarness` runs the x86-64 guest bytes on
unicorn x86-64 (the reference) and the cached AArch64 code on unicorn ARM64
(``UC_CPU_ARM64_MAX``) from the same register, flag and memory state, and
compares what docs/abi.md says must agree: the 16 GPRs, XMM0-15, the flags the
block defines, the bytes written to memory, the next RIP and the exit reason.

Speed is the point (docs/validation.md): both engines are created once, guest
memory is mapped once and only the bytes a case wrote are restored, registers
cross through memory (the loader and spill stubs of :mod:`stubs`), and every
``emu_start`` begins at a one-instruction jump so unicorn never re-translates
the block under test.

Memory: the module's PT_LOAD segments are mapped at a load base the harness
picks, a 1 MiB arena of random bytes (half its aligned words point back into
it) backs the registers the block uses as pointers, and any other page a case
touches below the harness's own pages is mapped on demand in both engines with
content that depends only on the page address and the seed.
"""

from __future__ import annotations

import dataclasses
import random
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

import iced_x86
import xxhash
from unicorn import (
    UC_ARCH_ARM64, UC_ARCH_X86, UC_ERR_FETCH_PROT, UC_ERR_FETCH_UNMAPPED, UC_HOOK_INTR, UC_HOOK_MEM_UNMAPPED, UC_HOOK_MEM_WRITE, UC_MEM_FETCH_UNMAPPED, UC_MODE_64,
    UC_MODE_ARM, UC_PROT_ALL, UC_PROT_EXEC, UC_PROT_READ, UC_PROT_WRITE, Uc, UcError,
)
from unicorn.arm64_const import UC_ARM64_REG_PC, UC_CPU_ARM64_MAX
from unicorn.x86_const import (
    UC_X86_REG_EFLAGS, UC_X86_REG_FPCW, UC_X86_REG_FPTAG, UC_X86_REG_FS_BASE, UC_X86_REG_GS_BASE,
    UC_X86_REG_MXCSR, UC_X86_REG_R8, UC_X86_REG_R9, UC_X86_REG_R10, UC_X86_REG_R11, UC_X86_REG_R12,
    UC_X86_REG_R13, UC_X86_REG_R14, UC_X86_REG_R15, UC_X86_REG_RAX, UC_X86_REG_RBP, UC_X86_REG_RBX,
    UC_X86_REG_RCX, UC_X86_REG_RDI, UC_X86_REG_RDX, UC_X86_REG_RIP, UC_X86_REG_RSI, UC_X86_REG_RSP,
    UC_X86_REG_XMM0,
)

from fexaot_tool.runtime.a64 import x87_from_engine, x87_to_registers
from fexaot_tool.translate import abi
from fexaot_tool.translate.block import is_x87
from fexaot_tool.validate import stubs
from fexaot_tool.validate.native import NativeReferee
from fexaot_tool.validate.guest_abi import (
    AF, CF, DF, FLAG_NAMES, GPR_NAMES, NZCV_C, NZCV_N, NZCV_V, NZCV_Z, OF, OFF_AF_SRC, OFF_DF, OFF_DISPATCH,
    OFF_EXIT_INFO, OFF_EXIT_REASON, OFF_EXIT_TO_RUNTIME, OFF_FS_BASE, OFF_GPR, OFF_GS_BASE, OFF_MXCSR, OFF_NZCV,
    OFF_PF_SRC, OFF_RFLAGS, OFF_RIP, OFF_XMM, PF, SF, STATE_SIZE, STATUS_FLAGS, ZF, ExitReason, rip_after,
)

PAGE = 0x1000

# Guest memory lies below INFRA_BASE; the harness's stubs, state block and the
# installed AArch64 code lie above it, so a guest access never lands on them and
# the write hooks (bounded to the guest range) never see the stubs' own stores.
INFRA_BASE = 0x7F00_0000_0000
GUEST_LIMIT = INFRA_BASE
ARENA_BASE = 0x0010_0000_0000
ARENA_SIZE = 0x10_0000
# Pointer registers start this far inside the arena, so displacements of a few
# KiB either way stay in pre-mapped memory.
ARENA_MARGIN = 0x1_0000
DEMAND_PAGE_LIMIT = 4096  # demand-mapped pages kept between cases before they are all dropped
A64_STEP_LIMIT = 100_000  # AArch64 instructions before a block is declared not to exit
FS_BASE = ARENA_BASE + ARENA_SIZE // 2
GS_BASE = ARENA_BASE + ARENA_SIZE // 4
MXCSR_DEFAULT = 0x1F80
SDM_REFEREE_CASES = 1  # per block: cases whose only differences are x87 SDM deviations the host CPU referees
SDM_REFEREE_ATTEMPTS = 2  # ... and native runs tried for them (a stack fault or #MF settles nothing)

# x86 engine layout (above INFRA_BASE).
_X86_ENTRY = INFRA_BASE + 0x000  # jmp [loader slot]
_X86_SPILL_ENTRY = INFRA_BASE + 0x040  # jmp [spill slot]
_X86_LOADER = INFRA_BASE + 0x100
_X86_SPILL = INFRA_BASE + 0x400
_X86_NEVER = INFRA_BASE + 0xFF0  # an ``until`` that is never reached: runs stop by count
_X86_DATA = INFRA_BASE + 0x1000
_X86_IMAGE_IN = _X86_DATA  # 16 GPRs, RFLAGS, block address
_X86_SLOTS = _X86_DATA + 0x100  # loader address, spill address
_X86_IMAGE_OUT = _X86_DATA + 0x200  # 16 GPRs, RFLAGS
_X86_MXCSR = _X86_DATA + 0x300  # MXCSR for ldmxcsr
_X86_XMM_IN = _X86_DATA + 0x400  # XMM0-15
_X86_XMM_OUT = _X86_DATA + 0x600

# AArch64 engine layout.
_A64_ENTRY = INFRA_BASE + 0x000  # b loader
_A64_LOADER = INFRA_BASE + 0x100
_A64_DISPATCH = INFRA_BASE + 0x400
_A64_EXIT_TO_RUNTIME = INFRA_BASE + 0x600
_A64_HALT = INFRA_BASE + 0x800
_A64_STATE = INFRA_BASE + 0x1000
A64_CODE_BASE = INFRA_BASE + 0x10_0000  # installed translated code, module after module

_IMAGE_IN = struct.Struct("<16QQQ")  # GPRs, RFLAGS, block address
_IMAGE_OUT = struct.Struct("<16QQ")
_STATE_HEAD = struct.Struct("<16QQQQQQQQQIIQQQ")  # the state block through exit_to_runtime
# _STATE_HEAD's fields in order with their docs/abi.md offsets and sizes, checked
# here so that a change of the ABI cannot silently shift what the harness reads.
_HEAD_LAYOUT = ((OFF_GPR, 128), (OFF_RIP, 8), (OFF_RFLAGS, 8), (OFF_FS_BASE, 8), (OFF_GS_BASE, 8), (OFF_DF, 8),
                (OFF_PF_SRC, 8), (OFF_AF_SRC, 8), (OFF_NZCV, 8), (OFF_EXIT_REASON, 4), (OFF_MXCSR, 4),
                (OFF_EXIT_INFO, 8), (OFF_DISPATCH, 8), (OFF_EXIT_TO_RUNTIME, 8))
assert _HEAD_LAYOUT[0][0] == 0 and all(a + n == b for (a, n), (b, _) in zip(_HEAD_LAYOUT, _HEAD_LAYOUT[1:]))
assert _STATE_HEAD.size == OFF_EXIT_TO_RUNTIME + 8
# Index of each named field in an unpacked _STATE_HEAD (the 16 GPRs come first).
_H = {name: 16 + i for i, name in enumerate((
    "rip", "rflags", "fs_base", "gs_base", "df", "pf_src", "af_src", "nzcv", "exit_reason", "mxcsr", "exit_info",
    "dispatch", "exit_to_runtime"))}
assert len(_H) + 16 == len(_HEAD_LAYOUT) + 15
_MASK64 = (1 << 64) - 1
_X86_GPRS = (UC_X86_REG_RAX, UC_X86_REG_RCX, UC_X86_REG_RDX, UC_X86_REG_RBX, UC_X86_REG_RSP, UC_X86_REG_RBP,
             UC_X86_REG_RSI, UC_X86_REG_RDI, UC_X86_REG_R8, UC_X86_REG_R9, UC_X86_REG_R10, UC_X86_REG_R11,
             UC_X86_REG_R12, UC_X86_REG_R13, UC_X86_REG_R14, UC_X86_REG_R15)

# iced-x86 RflagsBits -> x86 RFLAGS bits
_ICED_FLAGS = ((iced_x86.RflagsBits.CF, CF), (iced_x86.RflagsBits.PF, PF), (iced_x86.RflagsBits.AF, AF),
               (iced_x86.RflagsBits.ZF, ZF), (iced_x86.RflagsBits.SF, SF), (iced_x86.RflagsBits.OF, OF),
               (iced_x86.RflagsBits.DF, DF))
COMPARED_FLAGS = STATUS_FLAGS | DF

# Instructions a translated block must leave through exit_to_runtime with a reason.
_EXIT_MNEMONICS = {
    iced_x86.Mnemonic.SYSCALL: ExitReason.SYSCALL,
    iced_x86.Mnemonic.CPUID: ExitReason.CPUID,
    iced_x86.Mnemonic.RDTSC: ExitReason.RDTSC,
    iced_x86.Mnemonic.INT3: ExitReason.INT3,
    iced_x86.Mnemonic.HLT: ExitReason.HLT,
    iced_x86.Mnemonic.UD2: ExitReason.UD2,
}
_DIVIDES = {iced_x86.Mnemonic.DIV, iced_x86.Mnemonic.IDIV}
_COUNTED_SHIFTS = {getattr(iced_x86.Mnemonic, m) for m in ("SHL", "SAL", "SHR", "SAR", "ROL", "ROR", "RCL", "RCR",
                                                             "SHLD", "SHRD")}
_X87_COMPARES = {getattr(iced_x86.Mnemonic, m) for m in (
    "FCOM", "FCOMP", "FCOMPP", "FUCOM", "FUCOMP", "FUCOMPP", "FICOM", "FICOMP", "FTST", "FCOMI", "FCOMIP", "FUCOMI",
    "FUCOMIP")}
_SETS_C1 = {"fxam", "fincstp", "fdecstp", "fninit", "fldenv", "frstor", "fxrstor", "fsqrt", "fnclex"}
_REG64 = {iced_x86.Register.RAX + n: n for n in range(16)}
_REG32 = {iced_x86.Register.EAX + n: n for n in range(16)}
_RCX = 1

# Values at the edges where flag and overflow logic goes wrong.
EDGE_VALUES = (
    0, 1, 2, _MASK64, _MASK64 - 1, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x7FFF_FFFF, 0x8000_0000,
    0xFFFF_FFFF, 0x1_0000_0000, 0x7FFF_FFFF_FFFF_FFFF, 0x8000_0000_0000_0000, 0x8000_0000_0000_0001,
)
_FIXED_PATTERNS = (
    (lambda n: 0, 0),
    (lambda n: 1, STATUS_FLAGS),
    (lambda n: _MASK64, STATUS_FLAGS),
    (lambda n: 0x7FFF_FFFF_FFFF_FFFF if n % 2 else 0x8000_0000_0000_0000, CF | ZF),
    (lambda n: (0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF, 0x1_0000_0000)[n % 4], SF | OF),
    (lambda n: (0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF)[n % 6], CF | PF | AF),
)


# --- what crosses the layer -------------------------------------------------------


@dataclass(frozen=True)
class GuestInstruction:
    """One decoded guest instruction, with the facts the comparison needs (from iced-x86)."""

    ip: int
    length: int
    text: str
    exit_reason: ExitReason | None  # the reason a translation must exit with, for syscall & co.
    divides: bool  # may raise #DE
    flow_control: bool  # a branch, call, return or interrupt: the block ends here
    repeats: bool  # a rep/repe/repne string instruction: one instruction, many iterations
    flags_modified: int  # x86 RFLAGS bits
    flags_undefined: int
    atomic: bool = False  # a locked memory access (its operands are given natural alignment)
    cmpxchg32: bool = False  # a 32-bit cmpxchg on memory (see make_states)
    count_may_be_zero: bool = False  # a shift/rotate by CL or a repe/repne string op: may write no flag
    x87: bool = False  # reads or writes x87 state
    x87_compare: bool = False  # fcom/fucom/ficom/ftst/fcomi and popping forms: the SDM clears C1

    @property
    def next_ip(self) -> int:
        return self.ip + self.length


@dataclass(frozen=True)
class BlockUnderTest:
    """A translated block, placed: guest bytes at ``guest_address``, relocated code at ``code_address``."""

    module: str
    guest_offset: int  # from the module's image base, as in the cache
    guest_address: int
    guest_bytes: bytes
    code_address: int
    code: bytes  # after relocation
    instructions: tuple[GuestInstruction, ...]
    pointer_registers: frozenset[int]  # GPR numbers used as a memory base (incl. RSP for the stack)
    index_registers: frozenset[int]
    count_registers: frozenset[int]  # RCX of a rep-prefixed instruction
    reads_df: bool
    # Length of the instruction right after the block, when known: a block translated
    # only up to an untranslatable instruction exits there with exit_info = this length.
    following_length: int | None = None

    @property
    def uses_x87(self) -> bool:
        return any(ins.x87 for ins in self.instructions)

    @property
    def rep_indexes(self) -> tuple[int, ...]:
        return tuple(i for i, ins in enumerate(self.instructions) if ins.repeats)

    @property
    def natural_stop(self) -> int:
        """How many instructions the reference runs when the translation exits normally."""
        for i, ins in enumerate(self.instructions):
            if ins.exit_reason is not None:
                return i
            if ins.flow_control:
                return i + 1
        return len(self.instructions)


@dataclass(frozen=True)
class GuestState:
    """An input state: GPRs, RFLAGS (status flags and DF), the AArch64 PF/AF sources that encode them, XMM0-15."""

    gpr: tuple[int, ...]
    rflags: int
    pf_src: int  # parity of its low byte is PF
    af_src: int  # its bit 4 is AF
    xmm: tuple[int, ...] = (0,) * 16  # 128-bit values
    # The x87 state as the state block holds it (docs/abi.md "x87 state"), for blocks that touch it.
    x87: bytes | None = None

    def describe(self) -> dict[str, str]:
        out = {name: f"{value:#x}" for name, value in zip(GPR_NAMES, self.gpr)}
        out["rflags"] = f"{self.rflags:#x} ({flag_names(self.rflags) or '-'})"
        out["pf_src"] = f"{self.pf_src:#x}"  # how the AArch64 side holds PF and AF (docs/abi.md)
        out["af_src"] = f"{self.af_src:#x}"
        out["fs_base"] = f"{FS_BASE:#x}"
        out["gs_base"] = f"{GS_BASE:#x}"
        for n, value in enumerate(self.xmm):
            out[f"xmm{n}"] = f"{value:#034x}"
        if self.x87 is not None:
            out.update(describe_x87(self.x87))
        return out


@dataclass(frozen=True)
class Difference:
    """One field where the translation disagrees with the reference."""

    field: str  # "rax", "rip", "ZF", "exit", "memory"
    expected: str  # the x86 reference
    actual: str  # the translation


@dataclass(frozen=True)
class CaseResult:
    state: GuestState
    differences: tuple[Difference, ...] = ()
    skipped: str | None = None  # why the case says nothing (the reference faulted, ...)
    # Where unicorn's x86 engine disagreed with the translation but the host CPU, run natively
    # from the same state (native.py), agrees with the translation in every compared field.
    unicorn_deviations: tuple[Difference, ...] = ()


@dataclass(frozen=True)
class _Exit:
    kind: str  # "next" or an ExitReason name
    rip: int


@dataclass
class _Run:
    """What one engine did in one case (mutable while it is collected)."""

    gpr: tuple[int, ...] = ()
    xmm: tuple[int, ...] = ()
    rip: int = 0
    flags: int = 0
    exit: _Exit | None = None
    fault: str | None = None
    exit_info: int = 0
    interrupts: list[int] = field(default_factory=list)
    fault_word: int | None = None  # the AArch64 instruction that faulted
    x87: bytes | None = None


def flag_names(bits: int) -> str:
    return " ".join(name for bit, name in FLAG_NAMES.items() if bits & bit)


def parity_even(byte: int) -> bool:
    return bin(byte & 0xFF).count("1") % 2 == 0


# --- decoding a block -------------------------------------------------------------


def _x86_flags(iced_bits: int) -> int:
    return sum(bit for iced, bit in _ICED_FLAGS if iced_bits & iced)


def _is_atomic(ins: iced_x86.Instruction) -> bool:
    """A locked memory access: lock prefix, xchg with memory, cmpxchg/xadd on memory."""
    memory = any(ins.op_kind(i) == iced_x86.OpKind.MEMORY for i in range(ins.op_count))
    return memory and (ins.has_lock_prefix or ins.mnemonic in _ATOMIC_MNEMONICS)


_ATOMIC_MNEMONICS = frozenset({iced_x86.Mnemonic.XCHG, iced_x86.Mnemonic.XADD, iced_x86.Mnemonic.CMPXCHG,
                               iced_x86.Mnemonic.CMPXCHG8B, iced_x86.Mnemonic.CMPXCHG16B})


def decode_block(guest_bytes: bytes, address: int) -> tuple[GuestInstruction, ...] | str:
    """The block's instructions, or why it cannot be run (a string)."""
    decoder = iced_x86.Decoder(64, guest_bytes, ip=address)
    formatter = iced_x86.Formatter(iced_x86.FormatterSyntax.INTEL)
    out = []
    for ins in decoder:
        if ins.is_invalid:
            return f"undecodable bytes at {ins.ip:#x}"
        mnemonic = ins.mnemonic
        out.append(GuestInstruction(
            ip=ins.ip, length=ins.len, text=formatter.format(ins),
            exit_reason=_EXIT_MNEMONICS.get(mnemonic), divides=mnemonic in _DIVIDES,
            flow_control=ins.flow_control != iced_x86.FlowControl.NEXT,
            repeats=ins.is_string_instruction and (ins.has_rep_prefix or ins.has_repe_prefix or ins.has_repne_prefix),
            atomic=_is_atomic(ins),
            cmpxchg32=ins.mnemonic == iced_x86.Mnemonic.CMPXCHG and ins.op_kind(0) == iced_x86.OpKind.MEMORY
            and iced_x86.MemorySizeExt.size(ins.memory_size) == 4,
            flags_modified=_x86_flags(ins.rflags_modified), flags_undefined=_x86_flags(ins.rflags_undefined),
            count_may_be_zero=(mnemonic in _COUNTED_SHIFTS and ins.op_kind(ins.op_count - 1) == iced_x86.OpKind.REGISTER)
            or (ins.is_string_instruction and (ins.has_repe_prefix or ins.has_repne_prefix)),
            x87=is_x87(ins), x87_compare=mnemonic in _X87_COMPARES,
        ))
    return tuple(out)


def instruction_length(data: bytes, address: int) -> int | None:
    """Length of the instruction at the start of ``data``, None when it does not decode."""
    ins = iced_x86.Decoder(64, data, ip=address).decode()
    return None if ins.is_invalid else ins.len


def register_roles(guest_bytes: bytes, address: int) -> tuple[frozenset[int], frozenset[int], frozenset[int], bool]:
    """(pointer, index, count registers, reads DF) of a block, from iced-x86's used-memory facts."""
    info = iced_x86.InstructionInfoFactory()
    pointers: set[int] = set()
    indexes: set[int] = set()
    counts: set[int] = set()
    reads_df = False
    for ins in iced_x86.Decoder(64, guest_bytes, ip=address):
        for mem in info.info(ins).used_memory():
            for reg, into in ((mem.base, pointers), (mem.index, indexes)):
                n = _REG64.get(reg, _REG32.get(reg))
                if n is not None:
                    into.add(n)
        if ins.mnemonic == iced_x86.Mnemonic.LEA:
            # An address computed for a later access (lea rdx, [r8+16]; lock xadd [rdx], eax).
            n = _REG64.get(ins.memory_base)
            if n is not None:
                pointers.add(n)
        if ins.has_rep_prefix or ins.has_repe_prefix or ins.has_repne_prefix:
            counts.add(_RCX)
        reads_df |= bool(ins.rflags_read & iced_x86.RflagsBits.DF)
    return frozenset(pointers), frozenset(indexes - pointers), frozenset(counts), reads_df


def defined_flags(instructions: Sequence[GuestInstruction]) -> int:
    """The flags whose value after ``instructions`` x86 defines (unwritten flags keep their input: defined).

    A shift or rotate by CL, and a repe/repne string instruction, write no flag when the count is 0:
    a flag an earlier instruction left undefined stays undefined through them.
    """
    undefined = 0
    for ins in instructions:
        if ins.count_may_be_zero:
            undefined |= ins.flags_undefined
        else:
            undefined = (undefined & ~ins.flags_modified) | ins.flags_undefined
    return COMPARED_FLAGS & ~undefined


# --- input states -----------------------------------------------------------------


def block_rng(seed: int, module: str, guest_offset: int) -> random.Random:
    """A generator that depends only on the seed and the block, not on the sample around it."""
    return random.Random(xxhash.xxh3_64_intdigest(f"{seed}:{module}:{guest_offset:x}".encode()))


def make_states(block: BlockUnderTest, rng: random.Random, count: int,
                unicorn_only: bool = False) -> list[GuestState]:
    """Edge-case states first (0, 1, -1, sign and carry boundaries), then random ones.

    Registers the block dereferences point into the arena; index registers stay
    small; a rep count stays small so a case is a few iterations, not 2^64.
    ``unicorn_only``: no host CPU can referee, so avoid inputs where unicorn is
    known to differ from silicon.
    """
    states = []
    stack = x87_stack_use(block.guest_bytes, block.guest_address) if block.uses_x87 else None
    for i in range(count):
        if i < len(_FIXED_PATTERNS):
            pattern, flags = _FIXED_PATTERNS[i]
            values = [pattern(n) for n in range(16)]
        else:
            values = [_random_value(rng) for _ in range(16)]
            flags = rng.getrandbits(12) & STATUS_FLAGS
        for n in block.index_registers:
            values[n] = rng.choice((0, 1, 2, 7, -1 & _MASK64, -8 & _MASK64, rng.randrange(256)))
        for n in block.count_registers:
            values[n] = rng.choice((0, 1, 3, rng.randrange(32)))
        # Atomics get naturally aligned operands, as real programs give them: an unaligned
        # locked access faults on AArch64 (docs/translator.md "Atomics").
        aligned = any(ins.atomic for ins in block.instructions)
        if unicorn_only and any(ins.cmpxchg32 for ins in block.instructions):
            # A 32-bit cmpxchg that succeeds leaves RAX's upper half on silicon (and QEMU >= 8.1);
            # unicorn's x86 engine clears it.  Without the host CPU to settle it: a zero upper half.
            values[0] &= 0xFFFF_FFFF
        for n in block.pointer_registers:
            offset = rng.randrange(ARENA_MARGIN, ARENA_SIZE - ARENA_MARGIN)
            values[n] = ARENA_BASE + (offset & ~15 if aligned else offset & ~7 if rng.random() < 0.7 else offset)
        if block.reads_df and rng.random() < 0.5:
            flags |= DF
        pf_src = rng.randrange(256)
        if parity_even(pf_src) != bool(flags & PF):
            pf_src ^= 1
        af_src = (rng.getrandbits(64) & ~0x10) | (0x10 if flags & AF else 0)
        xmm = tuple(_random_xmm(rng) for _ in range(16))
        x87 = random_x87_image(rng, i, stack) if stack is not None else None
        states.append(GuestState(tuple(values), flags, pf_src | (rng.getrandbits(56) << 8), af_src, xmm, x87))
    return states


# 80-bit values (significand, sign_exponent) where x87 code goes wrong: zeros, denormals and
# pseudo-denormals, unnormals, infinities, quiet/signalling/default NaNs, the largest and smallest
# normals, 1.0 and values next to integers and to rounding boundaries.
_X80_EDGES = (
    (0, 0), (0, 0x8000), (1, 0), (0x7FFFFFFFFFFFFFFF, 0x8000), (1 << 63, 0), (1 << 63, 1), (1 << 63, 0x3FFF),
    (1 << 63, 0xBFFF), (1 << 63, 0x7FFF), (1 << 63, 0xFFFF), (0xC000000000000000, 0x7FFF),
    (0xC000000000000000, 0xFFFF), (0xA000000000000000, 0x7FFF), (0x4000000000000000, 0x3FFF),
    (0xFFFFFFFFFFFFFFFF, 0x7FFE), (0xFFFFFFFFFFFFFFFF, 0x403E), (1 << 63, 0x403E), (0xC000000000000000, 0x4000),
    (0x8000000000000400, 0x3FFF), (0xFFFFFFFFFFFFF800, 0x43FE), (1 << 63, 0x3C01), (0xC000000000000000, 0x3FFE),
)


def _random_x80(rng: random.Random) -> tuple[int, int]:
    kind = rng.getrandbits(3)
    if kind < 2:
        return _X80_EDGES[rng.getrandbits(8) % len(_X80_EDGES)]
    if kind < 4:  # a double's value, as loaded from memory
        return (rng.getrandbits(52) << 11 | 1 << 63, 0x3FFF + rng.randrange(-60, 60) | rng.getrandbits(1) << 15)
    if kind < 7:
        return (rng.getrandbits(64) | 1 << 63, 0x3FFF + rng.randrange(-200, 200) | rng.getrandbits(1) << 15)
    return rng.getrandbits(64), rng.getrandbits(16)


def x87_stack_use(guest_bytes: bytes, address: int) -> tuple[int, int]:
    """(n, p): the block reads ST(0)..ST(n-1) of the stack it starts with and pushes p deep below it
    (iced-x86's register accesses and FPU stack increments, in order; branches ignored)."""
    info = iced_x86.InstructionInfoFactory()
    pushed = reads = deepest = 0  # pushed: net pushes so far, so ST(i) now is ST(i - pushed) at entry
    for ins in iced_x86.Decoder(64, guest_bytes, ip=address):
        for used in info.info(ins).used_registers():
            if iced_x86.Register.ST0 <= used.register <= iced_x86.Register.ST7 and used.access in _READS:
                reads = max(reads, used.register - iced_x86.Register.ST0 - pushed + 1)
        pushed -= ins.fpu_stack_increment_info().increment
        deepest = max(deepest, pushed)
    return reads, deepest


_READS = (iced_x86.OpAccess.READ, iced_x86.OpAccess.READ_WRITE, iced_x86.OpAccess.COND_READ,
          iced_x86.OpAccess.READ_COND_WRITE)


def random_x87_image(rng: random.Random, index: int, stack: tuple[int, int] = (0, 0)) -> bytes:
    """A state-block x87 image: the Linux control word in a third of the states, others with every
    precision and rounding control and some exceptions unmasked.  Registers: in half the states as
    compiled code has them for the block (``stack``, from :func:`x87_stack_use`: the registers it reads
    full, those its pushes land in empty, so the host CPU sees no stack fault), in a quarter all full,
    in a quarter any of them empty."""
    regs = tuple(_random_x80(rng) for _ in range(8))
    cw = 0x37F if index % 3 == 0 else 0x40 | rng.choice((0, 2, 3)) << 8 | rng.getrandbits(2) << 10 | (
        0x3F if rng.random() < 0.8 else rng.getrandbits(6))
    sw = rng.getrandbits(16) & 0x4700 | (rng.getrandbits(6) if rng.random() < 0.2 else 0)
    top = rng.getrandbits(3)
    empty = rng.getrandbits(8) if index % 2 == 1 or index % 4 == 0 else 0
    reads, pushes = stack
    if index % 2 == 1 and reads + pushes <= 8:
        for i in range(reads):
            empty &= ~(1 << ((top + i) & 7))
        for i in range(1, pushes + 1):
            empty |= 1 << ((top - i) & 7)
    return abi.X87Image(regs, top, cw, sw, empty).pack()


def describe_x87(image: bytes) -> dict[str, str]:
    """The fields of a state-block x87 image, for reports."""
    x87 = abi.X87Image.unpack(image)
    out = {f"x87_r{i}": f"{se:04x}:{m:016x}{' (empty)' if x87.empty >> i & 1 else ''}"
           for i, (m, se) in enumerate(x87.regs)}
    out["x87_cw"], out["x87_sw"], out["x87_top"] = f"{x87.cw:#06x}", f"{x87.sw:#06x}", str(x87.top)
    return out


# Status word bits compared against the host CPU: not the exception flags (bits 0-5), ES (7), C1 (9) or
# B (15), which silicon accumulates and sets (C1: round-up) and translated code does not (docs/translator.md
# "x87").  A run where silicon sets SF (6, a stack fault) does not referee at all (_native_differences).
# Against unicorn's x87, which does not accumulate them either, the whole word is compared.
NATIVE_X87_SW_MASK = 0xFFFF & ~(0x3F | 0x80 | 0x200 | 0x8000)
X87_SW_STACK_FAULT = 0x40  # SF: silicon detects stack overflow and underflow, translated code does not


def x87_differences(expected: bytes, actual: bytes, sw_mask: int = 0xFFFF) -> list[Difference]:
    """Where two state-block x87 images differ: registers (unless empty in both), control word, status
    word (the bits of ``sw_mask``), TOP and the empty mask."""
    out = []
    e, a = abi.X87Image.unpack(expected), abi.X87Image.unpack(actual)
    for i, (e_reg, a_reg) in enumerate(zip(e.regs, a.regs)):
        if e_reg != a_reg and not (e.empty & a.empty) >> i & 1:
            out.append(Difference(f"x87_r{i}", f"{e_reg[1]:04x}{e_reg[0]:016x}", f"{a_reg[1]:04x}{a_reg[0]:016x}"))
    for name, e, a in (("x87_cw", e.cw, a.cw), ("x87_sw", e.sw & sw_mask, a.sw & sw_mask), ("x87_top", e.top, a.top),
                       ("x87_empty", e.empty, a.empty)):
        if e != a:
            out.append(Difference(name, f"{e:#x}", f"{a:#x}"))
    return out


# Lanes where SIMD and floating-point code goes wrong: ±0, ±1, ±inf, quiet and signalling NaNs
# (both signs), denormals, the largest normal, values beyond the integer conversion ranges.
_F32_EDGES = (0x00000000, 0x80000000, 0x3F800000, 0xBF800000, 0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00000,
              0x7F800001, 0x00000001, 0x807FFFFF, 0x7F7FFFFF, 0x00800000, 0x4F000000, 0xCF000000, 0x5F000000)
_F64_EDGES = (0x0000000000000000, 0x8000000000000000, 0x3FF0000000000000, 0xBFF0000000000000, 0x7FF0000000000000,
              0xFFF0000000000000, 0x7FF8000000000000, 0xFFF8000000000000, 0x7FF0000000000001, 0x0000000000000001,
              0x800FFFFFFFFFFFFF, 0x7FEFFFFFFFFFFFFF, 0x0010000000000000, 0x43E0000000000000, 0xC3E0000000000000,
              0x41DFFFFFFFC00000)


def _random_xmm(rng: random.Random) -> int:
    kind = rng.getrandbits(3)
    if kind < 3:
        return rng.getrandbits(128)
    if kind == 3:
        return sum(_F32_EDGES[rng.getrandbits(4)] << (32 * i) for i in range(4))
    if kind == 4:
        return sum(_F64_EDGES[rng.getrandbits(4)] << (64 * i) for i in range(2))
    if kind == 5:
        return sum((0, 0x80, 0xFF, 0x7F, 0x01, 0x20, 0x30, 0x61)[rng.getrandbits(3)] << (8 * i) for i in range(16))
    low = EDGE_VALUES[rng.getrandbits(16) % len(EDGE_VALUES)]
    return low | EDGE_VALUES[rng.getrandbits(16) % len(EDGE_VALUES)] << 64


def _random_value(rng: random.Random) -> int:
    # getrandbits, not choice/randrange: state generation was a third of a case's time.
    r = rng.getrandbits(8)
    if r < 90:
        return EDGE_VALUES[rng.getrandbits(16) % len(EDGE_VALUES)]
    if r < 180:
        return rng.getrandbits(64)
    if r < 218:
        return rng.getrandbits(32)
    return (rng.getrandbits(10) - 512) & _MASK64


# --- the harness ------------------------------------------------------------------


class DifferentialHarness:
    """Two unicorn engines with shared guest memory, the stubs, and the case loop."""

    def __init__(self, seed: int = 0, native_referee: bool = True):
        self.seed = seed
        self.native = NativeReferee() if native_referee else None
        self.x86 = Uc(UC_ARCH_X86, UC_MODE_64)
        self.a64 = Uc(UC_ARCH_ARM64, UC_MODE_ARM)
        self.a64.ctl_set_cpu_model(UC_CPU_ARM64_MAX)
        self._original: dict[int, bytes] = {}  # page -> content every case starts from
        self._demand_pages: list[int] = []
        self._writes: list[tuple[int, int]] = []
        self._x86_interrupts: list[int] = []
        self._a64_unmapped: int | None = None  # last unmapped address the AArch64 side touched
        # Per block: (cases whose SDM deviations the host CPU confirmed, native runs tried for them);
        # (-1, 0) once it contradicted one: then every such case goes to it.
        self._sdm_refereed: dict[tuple[str, int, int], tuple[int, int]] = {}
        self._x87_stacks: dict[tuple[str, int, int], tuple[int, int]] = {}  # per block: x87_stack_use
        self._code_end = A64_CODE_BASE
        self._install_x86_stubs()
        self._install_a64_stubs()
        self._map_arena()
        for uc in (self.x86, self.a64):
            uc.hook_add(UC_HOOK_MEM_WRITE, self._on_write, begin=0, end=GUEST_LIMIT - 1)
            uc.hook_add(UC_HOOK_MEM_UNMAPPED, self._on_unmapped)
        self.x86.hook_add(UC_HOOK_INTR, self._on_x86_interrupt)

    # -- setup ------------------------------------------------------------------

    def _install_x86_stubs(self) -> None:
        x86 = self.x86
        x86.mem_map(INFRA_BASE, PAGE, UC_PROT_READ | UC_PROT_EXEC)
        x86.mem_map(_X86_DATA, PAGE, UC_PROT_READ | UC_PROT_WRITE)
        x86.mem_write(_X86_ENTRY, stubs.x86_jmp_abs(_X86_SLOTS, _X86_ENTRY))
        x86.mem_write(_X86_SPILL_ENTRY, stubs.x86_jmp_abs(_X86_SLOTS + 8, _X86_SPILL_ENTRY))
        x86.mem_write(_X86_LOADER, stubs.x86_loader(_X86_IMAGE_IN, _X86_IMAGE_IN + 0x88, _X86_LOADER, _X86_XMM_IN,
                                                    _X86_MXCSR))
        x86.mem_write(_X86_SPILL, stubs.x86_spill(_X86_IMAGE_OUT, _X86_SPILL, _X86_XMM_OUT))
        x86.mem_write(_X86_MXCSR, struct.pack("<I", MXCSR_DEFAULT))
        x86.mem_write(_X86_SLOTS, struct.pack("<QQ", _X86_LOADER, _X86_SPILL))
        # A Linux process's FPU state, not unicorn's (NOTES.md), for blocks that touch x87/SSE.
        x86.reg_write(UC_X86_REG_FPCW, 0x37F)
        x86.reg_write(UC_X86_REG_FPTAG, 0xFFFF)
        x86.reg_write(UC_X86_REG_MXCSR, MXCSR_DEFAULT)
        x86.reg_write(UC_X86_REG_FS_BASE, FS_BASE)
        x86.reg_write(UC_X86_REG_GS_BASE, GS_BASE)
        self._x86_clean = x86.context_save()

    def _install_a64_stubs(self) -> None:
        a64 = self.a64
        a64.mem_map(INFRA_BASE, PAGE, UC_PROT_READ | UC_PROT_EXEC)
        a64.mem_map(_A64_STATE, PAGE, UC_PROT_READ | UC_PROT_WRITE)
        a64.mem_write(_A64_ENTRY, stubs.a64_branch(_A64_LOADER - _A64_ENTRY))
        a64.mem_write(_A64_LOADER, stubs.a64_loader(_A64_STATE))
        a64.mem_write(_A64_DISPATCH, stubs.a64_exit_entry(stubs.EXIT_VIA_DISPATCH, _A64_HALT - _A64_DISPATCH))
        a64.mem_write(_A64_EXIT_TO_RUNTIME,
                      stubs.a64_exit_entry(stubs.EXIT_VIA_RUNTIME, _A64_HALT - _A64_EXIT_TO_RUNTIME))
        a64.mem_write(_A64_HALT, struct.pack("<I", stubs.NOP))
        self._a64_clean = a64.context_save()

    def _map_arena(self) -> None:
        rng = random.Random(self.seed ^ 0xA4E7A)
        words = []
        for _ in range(ARENA_SIZE // 8):
            # Half the words are pointers back into the arena, so a block that loads
            # a pointer and dereferences it still stays in mapped memory.
            if rng.random() < 0.5:
                words.append(ARENA_BASE + rng.randrange(ARENA_MARGIN, ARENA_SIZE - ARENA_MARGIN, 8))
            else:
                words.append(rng.getrandbits(64))
        self.map_guest(ARENA_BASE, struct.pack(f"<{len(words)}Q", *words), executable=False)

    def map_guest(self, address: int, data: bytes, executable: bool = True) -> None:
        """Map guest memory (page-aligned ``address``) with ``data`` in both engines."""
        assert address % PAGE == 0 and address + len(data) <= GUEST_LIMIT
        size = -(-len(data) // PAGE) * PAGE
        padded = bytes(data) + bytes(size - len(data))
        self.x86.mem_map(address, size, UC_PROT_ALL if executable else UC_PROT_READ | UC_PROT_WRITE)
        self.a64.mem_map(address, size, UC_PROT_READ | UC_PROT_WRITE)
        self.x86.mem_write(address, padded)
        self.a64.mem_write(address, padded)
        for page in range(address, address + size, PAGE):
            self._original[page] = padded[page - address:page - address + PAGE]

    def install_code(self, code: bytes) -> int:
        """Map AArch64 code (already relocated) after what was installed before; return its address."""
        address = self._code_end
        size = max(PAGE, -(-len(code) // PAGE) * PAGE)
        self.a64.mem_map(address, size, UC_PROT_READ | UC_PROT_EXEC)
        self.a64.mem_write(address, bytes(code))
        self._code_end = address + size + PAGE  # a guard page between modules
        return address

    # -- hooks ------------------------------------------------------------------

    def _on_write(self, uc, access, address, size, value, data) -> None:
        self._writes.append((address, size))

    def _on_unmapped(self, uc, access, address, size, value, data) -> bool:
        if access == UC_MEM_FETCH_UNMAPPED:
            return False  # guest code is the module's; a jump elsewhere ends the block (see _run_x86)
        if uc is self.a64:
            self._a64_unmapped = address
        page = address & ~(PAGE - 1)
        last = (address + max(size, 1) - 1) & ~(PAGE - 1)
        if last + PAGE > GUEST_LIMIT:
            return False  # the harness's own pages, or not a user address at all
        for p in range(page, last + PAGE, PAGE):
            if p not in self._original:
                content = random.Random((self.seed << 48) ^ p).randbytes(PAGE)
                self.x86.mem_map(p, PAGE, UC_PROT_READ | UC_PROT_WRITE)
                self.a64.mem_map(p, PAGE, UC_PROT_READ | UC_PROT_WRITE)
                self.x86.mem_write(p, content)
                self.a64.mem_write(p, content)
                self._original[p] = content
                self._demand_pages.append(p)
        return True

    def _on_x86_interrupt(self, uc, intno, data) -> None:
        self._x86_interrupts.append(intno)
        uc.emu_stop()

    # -- one case ---------------------------------------------------------------

    def run_case(self, block: BlockUnderTest, state: GuestState) -> CaseResult:
        self._writes.clear()
        self._a64_unmapped = None
        try:
            return self._compare(block, state)
        finally:
            self._restore()

    def _compare(self, block: BlockUnderTest, state: GuestState) -> CaseResult:
        translated = self._run_a64(block, state)
        differences: list[Difference] = []
        stop, expected_exit = self._reference_stop(block, translated, differences)
        reference = self._run_x86(block, state, stop)
        if reference.fault is not None:
            return CaseResult(state, skipped=f"reference faulted: {reference.fault}")
        if reference.interrupts:
            at = next((i for i in block.instructions if i.ip == reference.rip), None)
            if reference.interrupts[0] == 0 and at is not None and at.divides:
                expected_exit = _Exit(ExitReason.DIVIDE_ERROR.name, at.ip)
            else:
                return CaseResult(state, skipped=f"reference raised interrupt {reference.interrupts[0]} at {reference.rip:#x}")
        if expected_exit is None:
            expected_exit = _Exit("next", reference.rip)
        if translated.fault is not None and _non_canonical(self._a64_unmapped):
            # unicorn's x86 engine drops address bits above 47 where silicon raises
            # #GP, so the reference "succeeded" at an alias: nothing to compare.
            return CaseResult(state, skipped=f"non-canonical address: {self._a64_unmapped:#x}")
        if translated.fault is not None and _is_atomic_access(translated.fault_word):
            # Only an address that is not naturally aligned faults there: an x86 split lock,
            # which AArch64 does not have (docs/translator.md "Atomics"); not what programs do.
            return CaseResult(state, skipped="unaligned locked access (a documented deviation)")
        if translated.fault is not None:
            differences.append(Difference("exit", _describe_exit(expected_exit), f"AArch64 engine: {translated.fault}"))
            return CaseResult(state, tuple(differences))
        if translated.exit != expected_exit:
            differences.append(Difference("exit", _describe_exit(expected_exit), _describe_exit(translated.exit)))
        for n, name in enumerate(GPR_NAMES):
            if reference.gpr[n] != translated.gpr[n]:
                differences.append(Difference(name, f"{reference.gpr[n]:#x}", f"{translated.gpr[n]:#x}"))
        for n in range(16):
            if reference.xmm[n] != translated.xmm[n]:
                differences.append(Difference(f"xmm{n}", f"{reference.xmm[n]:#034x}", f"{translated.xmm[n]:#034x}"))
        executed = block.instructions[:stop]
        mask = defined_flags(executed)
        deviations = []
        for bit, name in FLAG_NAMES.items():
            if mask & bit and (reference.flags ^ translated.flags) & bit:
                d = Difference(name, str(int(bool(reference.flags & bit))), str(int(bool(translated.flags & bit))))
                (deviations if sdm_clears_flag(executed, bit, translated.flags) else differences).append(d)
        if reference.x87 is not None and translated.x87 is not None:
            for d in x87_differences(reference.x87, translated.x87):
                (deviations if sdm_clears_c1(executed, d, translated.x87) else differences).append(d)
        differences.extend(self._memory_differences())
        structural = any(d.field in ("exit", "exit_info") for d in differences)  # never unicorn's semantics
        # The SDM deviations of an x87 block (above) go to the host CPU too: it, not the rule, settles them,
        # in the first SDM_REFEREE_CASES cases of a block where they are all that differs (a native run
        # costs ~13 ms, and a fifth of the cases of compare-heavy code have them; a run where the CPU
        # detects a stack fault says nothing, and SDM_REFEREE_ATTEMPTS bounds those); later ones follow the
        # rule unless the CPU has contradicted it in that block.
        rule_only = bool(deviations) and not differences
        if rule_only:
            key = (block.module, block.guest_offset, block.code_address)
            refereed = self._sdm_refereed.get(key, (0, 0))  # (verdicts, attempts); verdicts < 0: contradicted
            if (refereed[0] >= SDM_REFEREE_CASES or refereed[1] >= SDM_REFEREE_ATTEMPTS
                    or not self._x87_refereeable(block, key, state.x87)):
                return CaseResult(state, unicorn_deviations=tuple(deviations))
        disputed = differences + deviations if block.uses_x87 else differences
        if disputed and not structural and self.native is not None and self.native.available:
            native = self._native_differences(block, state, stop, translated, expected_exit, reference)
            if rule_only and refereed[0] >= 0:
                self._sdm_refereed[key] = (refereed[0], refereed[1] + 1)
            if isinstance(native, str):
                # Silicon faults where unicorn did not (a misaligned movaps, a non-canonical address):
                # no guest reaches this state, as for "reference faulted".
                return CaseResult(state, skipped=f"host CPU faults: {native}")
            if native is not None and not block.uses_x87:
                if not native:
                    return CaseResult(state, unicorn_deviations=tuple(differences))
                return CaseResult(state, tuple(differences))
            if native is not None:
                # x87: field by field.  The CPU settles each field unicorn disputes; a field where unicorn
                # and the translation agree stays settled, as where the translation follows the reference
                # and not the SDM (signalling NaNs kept, unnormals; docs/translator.md "x87").
                wrong = {d.field: d for d in native}
                settled = tuple(d for d in disputed if not _contradicts(wrong.get(d.field), d))
                against = tuple(d for d in disputed if _contradicts(wrong.get(d.field), d))
                if rule_only:
                    self._sdm_refereed[key] = (refereed[0] + 1, refereed[1] + 1) if not against else (-1, 0)
                return CaseResult(state, against, unicorn_deviations=settled)
        if rule_only:
            return CaseResult(state, unicorn_deviations=tuple(deviations))
        return CaseResult(state, tuple(differences))

    def _x87_refereeable(self, block: BlockUnderTest, key: tuple[str, int, int], x87: bytes | None) -> bool:
        """Whether the host CPU can say something about an x87 state: no stack fault (the registers the block
        reads full, those it pushes into empty) and no unmasked exception pending."""
        if x87 is None:
            return True
        stack = self._x87_stacks.get(key)
        if stack is None:
            stack = self._x87_stacks[key] = x87_stack_use(block.guest_bytes, block.guest_address)
        image = abi.X87Image.unpack(x87)
        reads, pushes = stack
        return (not image.sw & ~image.cw & 0x3F and reads + pushes <= 8
                and not any(image.empty >> ((image.top + i) & 7) & 1 for i in range(reads))
                and all(image.empty >> ((image.top - i) & 7) & 1 for i in range(1, pushes + 1)))

    def _native_differences(self, block: BlockUnderTest, state: GuestState, stop: int, translated: _Run,
                            expected_exit: _Exit, reference: _Run) -> list[Difference] | str | None:
        """How the translation differs from the host CPU running the same instructions (None: no native run;
        a string: the CPU faulted, which unicorn did not).

        A block's last instruction, when it is a branch, call or return, is not run natively: where it
        goes is unicorn's to say (a return to a non-canonical address faults on silicon, and unicorn's
        RIP is right for integer control flow), and it changes no XMM register or flag.  So RSP, the
        exit and the bytes a call pushes are compared with unicorn's result, everything else with the
        CPU's.
        """
        executed = block.instructions[:stop]
        terminal = executed[-1] if executed and executed[-1].flow_control else None
        native_steps = executed[:-1] if terminal is not None else executed
        if expected_exit.kind == ExitReason.DIVIDE_ERROR.name:
            # The div raises #DE on silicon too; the translation's state is the one before it.
            native_steps = [i for i in native_steps if i.ip != expected_exit.rip]
        ranges = self._written_ranges()
        x87 = None
        if translated.x87 is not None:  # the stack fault flag cleared, so that the run shows whether one happens
            given = abi.X87Image.unpack(state.x87)
            x87 = dataclasses.replace(given, sw=given.sw & ~X87_SW_STACK_FAULT).pack()
        run = self.native.run(
            dict(self._original), state.gpr, state.rflags, state.xmm, MXCSR_DEFAULT, FS_BASE, GS_BASE,
            block.guest_address, [(i.ip, i.next_ip) for i in native_steps], ranges, x87)
        if run is None:
            return None
        if run.fault is not None:
            return run.fault
        if run.x87 is not None and abi.X87Image.unpack(run.x87).sw & X87_SW_STACK_FAULT:
            # The CPU detected a stack overflow or underflow (an empty register read, a full one pushed
            # onto), which translated code, like unicorn's x87, does not (docs/translator.md "x87").
            return None
        out = []
        want_exit = _Exit("next", run.rip) if terminal is None and expected_exit.kind == "next" else expected_exit
        if translated.exit != want_exit:
            out.append(Difference("exit", _describe_exit(want_exit), _describe_exit(translated.exit)))
        for n, name in enumerate(GPR_NAMES):
            want = reference.gpr[n] if terminal is not None and n == 4 else run.gpr[n]  # n 4: RSP
            if want != translated.gpr[n]:
                out.append(Difference(name, f"{want:#x}", f"{translated.gpr[n]:#x}"))
        for n in range(16):
            if run.xmm[n] != translated.xmm[n]:
                out.append(Difference(f"xmm{n}", f"{run.xmm[n]:#034x}", f"{translated.xmm[n]:#034x}"))
        mask = defined_flags(executed)
        for bit, name in FLAG_NAMES.items():
            if mask & bit and (run.rflags ^ translated.flags) & bit:
                out.append(Difference(name, str(int(bool(run.rflags & bit))),
                                      str(int(bool(translated.flags & bit)))))
        if run.x87 is not None:
            out.extend(x87_differences(run.x87, translated.x87, sw_mask=NATIVE_X87_SW_MASK))
        pushed = None
        if terminal is not None and reference.gpr[4] < state.gpr[4]:  # a call pushed its return address
            pushed = (reference.gpr[4], state.gpr[4])
        for (start, end), native_bytes in run.memory.items():
            got = bytes(self.a64.mem_read(start, end - start))
            if pushed is not None:
                lo, hi = max(start, pushed[0]), min(end, pushed[1])
                if lo < hi:  # those bytes are the call's: unicorn's
                    unicorn = bytes(self.x86.mem_read(lo, hi - lo))
                    native_bytes = native_bytes[:lo - start] + unicorn + native_bytes[hi - start:]
            if got != native_bytes:
                out.append(Difference(f"memory[{start:#x}:{end:#x}]", native_bytes.hex(), got.hex()))
        return out

    def _reference_stop(self, block: BlockUnderTest, translated: _Run,
                        differences: list[Difference]) -> tuple[int, _Exit | None]:
        """How many instructions the reference runs, and the exit it implies when not a plain 'next'."""
        natural = block.natural_stop
        ins = block.instructions
        natural_exit = None
        if natural < len(ins) and ins[natural].exit_reason is not None:
            reason = ins[natural].exit_reason
            natural_exit = _Exit(reason.name, ins[natural].next_ip if rip_after(reason) else ins[natural].ip)
        exit = translated.exit
        if exit is None or exit.kind not in ExitReason.__members__:
            return natural, natural_exit  # "next", or a reason docs/abi.md does not know: the exit comparison says
        reason = ExitReason[exit.kind]
        end = block.guest_address + len(block.guest_bytes)
        if reason is ExitReason.UNTRANSLATABLE and exit.rip == end and natural == len(ins):
            # The cache covers the prefix before the instruction the translator gave up on.
            if block.following_length is not None and translated.exit_info != block.following_length:
                differences.append(Difference("exit_info", str(block.following_length), str(translated.exit_info)))
            return natural, exit
        for i, candidate in enumerate(ins[:natural + 1]):
            at = candidate.next_ip if rip_after(reason) else candidate.ip
            if at != exit.rip:
                continue
            if reason is ExitReason.UNTRANSLATABLE:
                if translated.exit_info != candidate.length:
                    differences.append(Difference("exit_info", str(candidate.length), str(translated.exit_info)))
                return i, exit  # the translator may give up at any instruction
            if reason is ExitReason.DIVIDE_ERROR:
                return i + 1, None  # the reference must raise #DE at this instruction itself
            return i, natural_exit
        return natural, natural_exit  # x0 is no instruction of the block: the exit comparison reports it

    def _run_a64(self, block: BlockUnderTest, state: GuestState) -> _Run:
        a64 = self.a64
        nzcv = ((NZCV_N if state.rflags & SF else 0) | (NZCV_Z if state.rflags & ZF else 0)
                | (NZCV_C if state.rflags & CF else 0) | (NZCV_V if state.rflags & OF else 0))
        head = _STATE_HEAD.pack(
            *state.gpr, block.guest_address, state.rflags | 2, FS_BASE, GS_BASE, 1 if state.rflags & DF else 0,
            state.pf_src, state.af_src, nzcv, 0, MXCSR_DEFAULT, 0, _A64_DISPATCH, _A64_EXIT_TO_RUNTIME)
        image = bytearray(STATE_SIZE)
        image[:len(head)] = head
        for n, value in enumerate(state.xmm):
            image[OFF_XMM + 16 * n:OFF_XMM + 16 * n + 16] = value.to_bytes(16, "little")
        struct.pack_into("<QQ", image, stubs.OFF_EXIT_PATH, 0, block.code_address)
        if state.x87 is not None:
            image[abi.X87_REGS_OFFSET:abi.X87_REGS_OFFSET + abi.X87_SIZE] = state.x87
        a64.mem_write(_A64_STATE, bytes(image))
        run = _Run()
        try:
            a64.emu_start(_A64_ENTRY, _A64_HALT, count=A64_STEP_LIMIT)
        except UcError as e:
            pc = a64.reg_read(UC_ARM64_REG_PC)
            run.fault = f"{e} at pc {pc:#x}"
            try:
                run.fault_word = int.from_bytes(a64.mem_read(pc, 4), "little")
            except UcError:
                pass
            a64.context_restore(self._a64_clean)
            return run
        out = a64.mem_read(_A64_STATE, stubs.OFF_ENTRY)
        fields = _STATE_HEAD.unpack_from(out, 0)
        path = struct.unpack_from("<Q", out, stubs.OFF_EXIT_PATH)[0]
        if path == 0:
            run.fault = f"no exit after {A64_STEP_LIMIT} instructions"
            return run
        run.gpr = fields[:16]
        run.xmm = tuple(int.from_bytes(out[OFF_XMM + 16 * n:OFF_XMM + 16 * n + 16], "little") for n in range(16))
        if state.x87 is not None:
            run.x87 = bytes(a64.mem_read(_A64_STATE + abi.X87_REGS_OFFSET, abi.X87_SIZE))
        run.rip = fields[_H["rip"]]
        nzcv = fields[_H["nzcv"]]
        pf_src, af_src = fields[_H["pf_src"]], fields[_H["af_src"]]
        run.flags = ((SF if nzcv & NZCV_N else 0) | (ZF if nzcv & NZCV_Z else 0) | (CF if nzcv & NZCV_C else 0)
                     | (OF if nzcv & NZCV_V else 0) | (PF if parity_even(pf_src) else 0)
                     | (AF if af_src & 0x10 else 0) | (DF if fields[_H["df"]] & 1 else 0))
        if path == stubs.EXIT_VIA_DISPATCH:
            run.exit = _Exit("next", run.rip)
        else:
            reason, run.exit_info = fields[_H["exit_reason"]], fields[_H["exit_info"]]
            try:
                run.exit = _Exit(ExitReason(reason).name, run.rip)
            except ValueError:
                run.exit = _Exit(f"unknown exit reason {reason}", run.rip)
        return run

    def _run_x86(self, block: BlockUnderTest, state: GuestState, stop: int) -> _Run:
        """Run the first ``stop`` guest instructions, then spill the registers.

        Runs stop by instruction count, except across a rep-prefixed string
        instruction: unicorn counts each of its iterations, so it runs alone
        from its address until the next instruction's.  A count stop happens
        only once unicorn fetches the next instruction, so a fetch fault outside
        the block after the last instruction is the block's normal exit.
        """
        x86 = self.x86
        self._x86_interrupts.clear()
        x86.mem_write(_X86_IMAGE_IN, _IMAGE_IN.pack(*state.gpr, state.rflags | 2, block.guest_address))
        x86.mem_write(_X86_XMM_IN, b"".join(value.to_bytes(16, "little") for value in state.xmm))
        if state.x87 is not None:
            x86.reg_write_batch(x87_to_registers(state.x87))
        run = _Run()
        reps = [i for i in block.rep_indexes if i < stop]
        try:
            first = reps[0] if reps else stop
            x86.emu_start(_X86_ENTRY, _X86_NEVER, count=1 + stubs.X86_LOADER_INSTRUCTIONS + first)
            for n, i in enumerate(reps):
                if self._x86_interrupts:
                    break
                rep = block.instructions[i]
                x86.emu_start(rep.ip, rep.next_ip)
                until = reps[n + 1] if n + 1 < len(reps) else stop
                if until > i + 1 and not self._x86_interrupts:
                    x86.emu_start(rep.next_ip, _X86_NEVER, count=until - i - 1)
        except UcError as e:
            rip = x86.reg_read(UC_X86_REG_RIP)
            inside = block.guest_address <= rip < block.guest_address + len(block.guest_bytes)
            if e.errno not in (UC_ERR_FETCH_UNMAPPED, UC_ERR_FETCH_PROT) or inside:
                run.fault = f"{e} at rip {rip:#x}"
                x86.context_restore(self._x86_clean)  # leave no half-taken exception for the next case
                return run
        run.rip = x86.reg_read(UC_X86_REG_RIP)
        run.interrupts = list(self._x86_interrupts)
        if run.interrupts:
            # After an exception unicorn keeps it pending: the next emu_start would
            # raise a double fault.  So read the registers one by one (this is rare)
            # and reset the CPU to the clean context saved at start-up.
            run.gpr = tuple(x86.reg_read(r) for r in _X86_GPRS)
            run.xmm = tuple(x86.reg_read(UC_X86_REG_XMM0 + n) for n in range(16))
            run.flags = x86.reg_read(UC_X86_REG_EFLAGS) & COMPARED_FLAGS
            if state.x87 is not None:
                run.x87 = x87_from_engine(x86)
            x86.context_restore(self._x86_clean)
            return run
        x86.emu_start(_X86_SPILL_ENTRY, _X86_NEVER, count=1 + stubs.X86_SPILL_INSTRUCTIONS)
        fields = _IMAGE_OUT.unpack(x86.mem_read(_X86_IMAGE_OUT, _IMAGE_OUT.size))
        run.gpr = fields[:16]
        xmm = x86.mem_read(_X86_XMM_OUT, 256)
        run.xmm = tuple(int.from_bytes(xmm[16 * n:16 * n + 16], "little") for n in range(16))
        run.flags = fields[16] & COMPARED_FLAGS
        if state.x87 is not None:
            run.x87 = x87_from_engine(x86)
        return run

    # -- memory -----------------------------------------------------------------

    def _written_ranges(self) -> list[tuple[int, int]]:
        spans = sorted((a, a + s) for a, s in self._writes if a < GUEST_LIMIT)
        merged: list[list[int]] = []
        for start, end in spans:
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        return [(s, e) for s, e in merged]

    def _memory_differences(self) -> list[Difference]:
        out = []
        for start, end in self._written_ranges():
            ref = bytes(self.x86.mem_read(start, end - start))
            got = bytes(self.a64.mem_read(start, end - start))
            if ref != got:
                was = self._original_bytes(start, end)
                out.append(Difference(f"memory[{start:#x}:{end:#x}]", ref.hex() + f" (was {was.hex()})", got.hex()))
        return out

    def _original_bytes(self, start: int, end: int) -> bytes:
        parts = []
        address = start
        while address < end:
            page = address & ~(PAGE - 1)
            chunk_end = min(end, page + PAGE)
            parts.append(self._original[page][address - page:chunk_end - page])
            address = chunk_end
        return b"".join(parts)

    def _restore(self) -> None:
        """Put back every byte the case wrote, in both engines; drop demand pages when there are many."""
        for start, end in self._written_ranges():
            original = self._original_bytes(start, end)
            self.x86.mem_write(start, original)
            self.a64.mem_write(start, original)
        self._writes.clear()
        if len(self._demand_pages) > DEMAND_PAGE_LIMIT:
            for page in self._demand_pages:
                self.x86.mem_unmap(page, PAGE)
                self.a64.mem_unmap(page, PAGE)
                del self._original[page]
            self._demand_pages.clear()


def _last_writer(executed: Sequence[GuestInstruction], bit: int) -> GuestInstruction | None:
    return next((ins for ins in reversed(executed) if ins.flags_modified & bit), None)


def sdm_clears_flag(executed: Sequence[GuestInstruction], bit: int, translated_flags: int) -> bool:
    """fcomi/fucomi clear OF, SF and AF (SDM); unicorn's x87 leaves them: the translation's 0 is right."""
    last = _last_writer(executed, bit)
    return (bit in (OF, SF, AF) and not translated_flags & bit and last is not None
            and last.text.split()[0] in ("fcomi", "fcomip", "fucomi", "fucomip"))


def sdm_clears_c1(executed: Sequence[GuestInstruction], d: Difference, translated_x87: bytes) -> bool:
    """The x87 compares clear C1 (SDM); unicorn's leave it: the translation's 0 is right when the last
    instruction that sets C1 (in either engine) was a compare."""
    if d.field != "x87_sw" or (int(d.expected, 16) ^ int(d.actual, 16)) != 0x200 or int(d.actual, 16) & 0x200:
        return False
    for ins in reversed(executed):
        if ins.x87_compare:
            return True
        if ins.text.split()[0] in _SETS_C1:
            return False
    return False


def _contradicts(native: Difference | None, disputed: Difference) -> bool:
    """Whether the host CPU's difference in a field leaves unicorn's difference there standing.  The x87
    status word is a field of bits: the CPU must agree with the translation in the bits unicorn disputes
    (its C2 after ``fxam`` of an unnormal, a reference choice, does not decide a C1 that a compare cleared)."""
    if native is None:
        return False
    if disputed.field != "x87_sw":
        return True
    bits = int(disputed.expected, 16) ^ int(disputed.actual, 16)
    return bool((int(native.expected, 16) ^ int(native.actual, 16)) & bits)


def _is_atomic_access(word: int | None) -> bool:
    """An AArch64 load/store exclusive, compare-and-swap or LSE atomic memory operation.

    Not the plain load-acquire/store-release of TSO accesses (ldar/stlr: the exclusive
    group with o2 = 1 and o1 = 0; ldapr: the LSE group with o3 = 1 and opc = 100), whose
    faults are the translation's to answer for.
    """
    if word is None:
        return False
    if (word >> 24) & 0x3F == 0x08:  # load/store exclusive group (ldxr, stxr, ldaxp, cas, ldar, stlr)
        return not (word >> 23 & 1 and not word >> 21 & 1)
    if word & 0x3B200C00 == 0x38200000:  # atomic memory operations (ldadd, swp, ..., ldapr)
        return not (word >> 15 & 1 and (word >> 12) & 7 == 0b100)
    return False


def _non_canonical(address: int | None) -> bool:
    return address is not None and (address >> 47) not in (0, (1 << 17) - 1)


def _describe_exit(exit: _Exit | None) -> str:
    if exit is None:
        return "no exit"
    if exit.kind == "next":
        return f"next rip {exit.rip:#x}"
    return f"{exit.kind} at rip {exit.rip:#x}"

