"""The driver: decode a block, compute flag liveness, lower each instruction to IR, optimise, assemble, lay out.

A block is translated as one unit (its own literal pool, so a runtime can
install it alone).  When an instruction cannot be lowered, the instructions
before it are translated and the block exits to the runtime with
``UNTRANSLATABLE`` at that instruction (docs/translator.md, "Partial blocks");
a block whose first instruction cannot be lowered gets no code.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass

import iced_x86
import xxhash
from iced_x86 import Decoder, OpKind

from fexaot_tool.translate import abi, backend, passes
from fexaot_tool.translate.builder import (
    ALL_FLAGS, DEFAULT_FEATURES, REASON_ATOMIC, REASON_EXTENSION, REASON_NAMES, REASON_OPERAND, REASON_STRING,
    REASON_SYSTEM, REASON_UNDECODABLE, REASON_UNSUPPORTED, REASON_VECTOR, REASON_X87, Builder, Unsupported,
)
from fexaot_tool.translate.features import unadvertised
from fexaot_tool.translate.lower import LOCKABLE, LOWERINGS


@dataclass(frozen=True)
class GuestCode:
    """The guest bytes a module's blocks are read from: (virtual address, bytes) ranges, sorted."""

    image_base: int  # guest offsets (relocation addends) are relative to it
    ranges: tuple[tuple[int, bytes], ...]

    def read(self, address: int, size: int) -> bytes | None:
        i = bisect.bisect_right(self.ranges, address, key=lambda r: r[0]) - 1
        if i < 0:
            return None
        start, data = self.ranges[i]
        if address + size > start + len(data):
            return None
        return data[address - start:address - start + size]


@dataclass(frozen=True)
class BlockRequest:
    """One block to translate (a codemap block: start address and length in bytes).

    ``optimise=False`` skips the IR passes for this block: a profile-guided build
    translates blocks no profile saw run that way (fast to build, ~2% more code).
    """

    start: int
    length: int
    optimise: bool = True


@dataclass(frozen=True)
class TranslatedBlock:
    start: int  # guest address
    guest_size: int  # bytes translated: the whole block, or the prefix before an untranslatable instruction
    guest_hash: int  # xxh3_64 of those bytes
    code_offset: int  # into ModuleTranslation.code
    code_size: int  # bytes, literal pool included
    guest_instructions: int
    host_instructions: int  # AArch64 instructions, literal pool and padding excluded


@dataclass(frozen=True)
class UntranslatedBlock:
    start: int  # guest address of the block
    length: int  # bytes of the whole block
    reason: int  # REASON_* of builder.py (UNTRANSLATABLE section ``reason``)
    detail: str  # the instruction, e.g. "movaps xmm0,[rsp+10h]"
    at: int  # guest address of the instruction that stopped translation


@dataclass(frozen=True)
class ModuleTranslation:
    code: bytes  # every block's code, each 8-aligned
    relocations: tuple[tuple[int, int, int], ...]  # (offset into code, RelocationKind, guest offset addend)
    blocks: tuple[TranslatedBlock, ...]  # sorted by start
    untranslated: tuple[UntranslatedBlock, ...]  # blocks not translated in full, sorted by start


_FORMATTER = iced_x86.Formatter(iced_x86.FormatterSyntax.INTEL)
_MNEMONIC_NAMES = {v: k for k, v in vars(iced_x86.Mnemonic).items() if k.isupper() and isinstance(v, int)}
_VECTOR_REGISTERS = range(iced_x86.Register.XMM0, iced_x86.Register.ZMM31 + 1)
_MMX_REGISTERS = range(iced_x86.Register.MM0, iced_x86.Register.MM7 + 1)
_X87_REGISTERS = range(iced_x86.Register.ST0, iced_x86.Register.ST7 + 1)
_SYSTEM_PREFIXES = ("IN", "OUT", "LGDT", "LIDT", "MOV CR", "WRMSR", "RDMSR", "IRET", "SYSRET", "SWAPGS", "CLI",
                    "STI", "INT", "INTO", "LSL", "LAR", "VERR", "VERW", "SGDT", "SIDT", "STR", "SLDT", "LTR",
                    "XGETBV", "RDPID", "RDPKRU", "WRPKRU", "RDFSBASE", "RDGSBASE", "WRFSBASE", "WRGSBASE")


def is_x87(ins: iced_x86.Instruction) -> bool:
    """Whether an instruction reads or writes x87 state (docs/abi.md "x87 state"): the x87 instructions,
    the MMX ones (MMn are the x87 registers) and the FXSAVE/XSAVE families."""
    name = _MNEMONIC_NAMES.get(ins.mnemonic, "")
    if name.startswith(("F", "XSAVE", "XRSTOR")) or name == "EMMS":
        return True
    return any(ins.op_kind(i) == OpKind.REGISTER and (ins.op_register(i) in _X87_REGISTERS
                                                      or ins.op_register(i) in _MMX_REGISTERS)
               for i in range(ins.op_count))


def classify(ins: iced_x86.Instruction) -> int:
    """Why an instruction with no lowering row (or an uncovered form) is untranslatable."""
    if unadvertised(ins) is not None:
        return REASON_EXTENSION  # code the guest does not run on the advertised CPU
    name = _MNEMONIC_NAMES.get(ins.mnemonic, "")
    if ins.has_lock_prefix and ins.mnemonic in LOCKABLE:
        return REASON_ATOMIC  # a locked form no row covers (the rows raise their own reasons)
    if ins.is_string_instruction and not name.startswith(("INS", "OUTS")):
        return REASON_STRING  # ins/outs are I/O: system, below
    for i in range(ins.op_count):
        if ins.op_kind(i) == OpKind.REGISTER:
            reg = ins.op_register(i)
            if reg in _VECTOR_REGISTERS or reg in _MMX_REGISTERS:
                return REASON_VECTOR
            if reg in _X87_REGISTERS:
                return REASON_X87
    if name.startswith("F"):
        return REASON_X87
    if ins.encoding != iced_x86.EncodingKind.LEGACY or name in ("LDMXCSR", "STMXCSR", "EMMS"):
        return REASON_VECTOR
    if name.startswith(("FXSAVE", "FXRSTOR", "XSAVE", "XRSTOR")):
        return REASON_X87
    if name.startswith(_SYSTEM_PREFIXES) or ins.is_privileged or ins.is_jmp_far or ins.is_call_far:
        return REASON_SYSTEM
    return REASON_UNSUPPORTED


def describe(ins: iced_x86.Instruction) -> str:
    return _FORMATTER.format(ins)


# Shifts and rotates by CL leave every flag unchanged when the count is 0, so for
# liveness they read the flags they write: earlier writers must still produce them.
_COUNT_DEPENDENT = frozenset({iced_x86.Mnemonic.SHL, iced_x86.Mnemonic.SAL, iced_x86.Mnemonic.SHR,
                              iced_x86.Mnemonic.SAR, iced_x86.Mnemonic.ROL, iced_x86.Mnemonic.ROR,
                              iced_x86.Mnemonic.SHLD, iced_x86.Mnemonic.SHRD})


_MAY_FAULT_DIVIDING = frozenset({iced_x86.Mnemonic.DIV, iced_x86.Mnemonic.IDIV})


def flag_liveness(instructions: list[iced_x86.Instruction]) -> list[tuple[int, int]]:
    """(flags an instruction must produce, flags live after it), per instruction.

    Every flag is live at the block's end (docs/abi.md); a flag an instruction
    leaves undefined counts as written, since any value is then correct.
    """
    live = ALL_FLAGS
    out: list[tuple[int, int]] = [(0, 0)] * len(instructions)
    for i in range(len(instructions) - 1, -1, -1):
        ins = instructions[i]
        written = ins.rflags_modified & ALL_FLAGS
        read = ins.rflags_read & ALL_FLAGS
        if ins.mnemonic in _COUNT_DEPENDENT and written and ins.op_kind(ins.op_count - 1) == OpKind.REGISTER:
            read |= written
        elif written and ins.is_string_instruction and (ins.has_rep_prefix or ins.has_repne_prefix):
            read |= written  # rep cmps/scas with RCX = 0 leave every flag alone
        elif ins.mnemonic in _MAY_FAULT_DIVIDING:
            read = ALL_FLAGS  # the #DE exit reports the flags from before the div
        out[i] = (written & live, live)
        live = (live & ~written) | read
    return out


@dataclass(frozen=True)
class _BlockCode:
    code: bytes
    literals: list[tuple[int, int]]  # (offset in code, guest address)
    guest_size: int
    guest_instructions: int
    host_instructions: int
    stop: tuple[int, str, int] | None  # (reason, detail, address) when not translated in full


def _decode(data: bytes, start: int) -> tuple[list[iced_x86.Instruction], bool]:
    """The block's instructions, and whether they decode completely."""
    instructions = []
    for ins in Decoder(64, data, ip=start):
        if ins.is_invalid:
            return instructions, False
        instructions.append(ins)
    return instructions, True


def _lower_prefix(instructions: list[iced_x86.Instruction], count: int, stop: tuple[int, str, int] | None,
                  tso: bool, image_base: int, optimise: bool, stats: passes.PassStats | None,
                  features: tuple[str, ...] = DEFAULT_FEATURES,
                  ) -> _BlockCode | tuple[int, Unsupported]:
    """Code for the first ``count`` instructions; or (index, why) for one whose form is not covered."""
    prefix = instructions[:count]
    liveness = flag_liveness(prefix)
    b = Builder(tso, image_base, features)
    ended = False
    for i, ins in enumerate(prefix):
        lower, terminates = LOWERINGS[ins.mnemonic]
        need, live_after = liveness[i]
        b.begin_instruction(ins, need, live_after)
        try:
            lower(b)
        except Unsupported as why:
            return i, why
        if terminates:
            ended = True
            break
    guest_instructions = i + 1 if prefix else 0
    last = prefix[guest_instructions - 1]
    if stop is not None:
        _, _, address = stop
        b.exit_to_runtime(abi.ExitReason.UNTRANSLATABLE, address, instructions[count].len)
    elif not ended:
        b.begin_instruction(last, 0, ALL_FLAGS)
        b.exit_to(last.next_ip)  # the block falls through into the next one
    ops = passes.optimise(b.ops, stats) if optimise else b.ops
    code, literals, host_instructions = backend.assemble(ops)
    return _BlockCode(code, literals, last.next_ip - prefix[0].ip, guest_instructions, host_instructions, stop)


def translate_block(guest: GuestCode, start: int, length: int, tso: bool = True, *, optimise: bool = True,
                    stats: passes.PassStats | None = None,
                    features: tuple[str, ...] = DEFAULT_FEATURES) -> _BlockCode:
    """Code for one block (possibly a prefix of it; ``stop`` says why).

    ``optimise=False`` skips the IR passes (to measure what they do, and for
    the blocks a speed-profile cache holds that no profile saw run);
    ``stats`` sums what the passes did.
    ``features``: the target's AArch64 features (TranslatorConfig.cpu_features);
    "lse" selects LSE atomics over exclusive-pair loops.
    """
    data = guest.read(start, length)
    if data is None:
        return _BlockCode(b"", [], 0, 0, 0, (REASON_UNDECODABLE, "outside the file image", start))
    instructions, complete = _decode(data, start)
    count = len(instructions)
    stop = None if complete else (REASON_UNDECODABLE, "bytes that do not decode", start + sum(
        i.len for i in instructions))
    for i, ins in enumerate(instructions):
        row = LOWERINGS.get(ins.mnemonic)
        if row is None or (ins.has_lock_prefix and ins.mnemonic not in LOCKABLE):
            count, stop = i, (classify(ins), describe(ins), ins.ip)
            break
        if row[1]:
            # The codemap does not end blocks at cpuid/rdtsc (not control flow), but the
            # translation exits there: the rest is not part of it, nor of its flag liveness.
            count, stop = i + 1, None
            break
    while True:
        if count == 0:
            return _BlockCode(b"", [], 0, 0, 0, stop)
        result = _lower_prefix(instructions, count, stop, tso, guest.image_base, optimise, stats, features)
        if isinstance(result, _BlockCode):
            return result
        # A form the row does not cover: retranslate the shorter prefix (its flag liveness changes too).
        index, why = result
        ins = instructions[index]
        count, stop = index, (why.reason, describe(ins), ins.ip)


def translate_module(guest: GuestCode, blocks: Iterable[BlockRequest], memory_order: str = "tso", *,
                     optimise: bool = True, stats: passes.PassStats | None = None,
                     features: tuple[str, ...] = DEFAULT_FEATURES) -> ModuleTranslation:
    """Translate ``blocks`` (sorted by start) into one code area with relocations and per-block metadata."""
    tso = memory_order == "tso"
    code = bytearray()
    relocations: list[tuple[int, int, int]] = []
    translated: list[TranslatedBlock] = []
    untranslated: list[UntranslatedBlock] = []
    for block in blocks:
        result = translate_block(guest, block.start, block.length, tso, optimise=optimise and block.optimise, stats=stats,
                                 features=features)
        if result.stop is not None:
            reason, detail, at = result.stop
            untranslated.append(UntranslatedBlock(block.start, block.length, reason, detail, at))
        if not result.code:
            continue
        if len(code) % 8:
            code += bytes(8 - len(code) % 8)  # literal pools need 8-aligned blocks
        offset = len(code)
        code += result.code
        for at, address in result.literals:
            relocations.append((offset + at, abi.RelocationKind.GUEST_ABS64, address - guest.image_base))
        guest_bytes = guest.read(block.start, result.guest_size) or b""
        translated.append(TranslatedBlock(block.start, result.guest_size, xxhash.xxh3_64_intdigest(guest_bytes),
                                          offset, len(result.code), result.guest_instructions,
                                          result.host_instructions))
    return ModuleTranslation(bytes(code), tuple(relocations), tuple(translated), tuple(untranslated))


__all__ = ["BlockRequest", "GuestCode", "ModuleTranslation", "REASON_NAMES", "TranslatedBlock", "UntranslatedBlock",
           "classify", "describe", "flag_liveness", "translate_block", "translate_module"]
