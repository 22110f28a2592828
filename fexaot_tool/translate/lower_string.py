"""Lowering of the string instructions: movs, stos, lods, cmps, scas in every width, rep/repe/repne, cld/std.

x86 semantics, element by element (Intel SDM vol. 2, "REP/REPE/REPZ/REPNE/REPNZ"):
while RCX != 0: do the operation on [RSI]/[RDI]; step RSI/RDI by the element size
(+ with DF clear, - with DF set); RCX -= 1; for repe/repne stop when ZF says so.
The translation keeps that order, with the guest registers themselves as the
loop's state, so an element access that faults leaves RSI, RDI and RCX as x86
has them before that element (the runtime can resume the instruction).

DF lives in the state block (docs/abi.md, ``df`` at 0xa0, 0 or 1): a string
instruction loads it and computes its step, ``size - (df << (log2(size) + 1))``;
``cld``/``std`` store it.  Each access goes through :meth:`Builder.load`/
:meth:`Builder.store`, so TSO mode keeps x86 ordering element by element
(``ldapr``/``stlr``; docs/translator.md "String instructions" says why that
and not plain accesses with barriers).

Covered: 64-bit addressing (RSI/RDI/RCX).  The 0x67 forms (ESI/EDI/ECX) and
FS/GS source overrides stay untranslatable (operand-form); ``rep``/``repne``
on movs/stos/lods repeat as plain ``rep`` does, as silicon and QEMU do.
"""

from __future__ import annotations

from collections.abc import Callable

from iced_x86 import Mnemonic as M
from iced_x86 import OpKind, Register

from fexaot_tool.translate import abi, ir
from fexaot_tool.translate.a64 import ZR, Cond, Shift
from fexaot_tool.translate.builder import (
    REASON_OPERAND, REASON_VECTOR, ZF, Builder, Unsupported,
)

GPR = abi.GPR_HOST
RAX, RCX, RSI, RDI = GPR[0], GPR[1], GPR[6], GPR[7]
_LOG2 = {1: 0, 2: 1, 4: 2, 8: 3}
_ACCUMULATOR = {1: Register.AL, 2: Register.AX, 4: Register.EAX, 8: Register.RAX}
_64BIT_OPERANDS = (OpKind.MEMORY_SEG_RSI, OpKind.MEMORY_ESRDI)

_MOVS, _STOS, _LODS, _CMPS, _SCAS = range(5)
_KINDS: dict[int, tuple[int, int]] = {}  # mnemonic -> (kind, element size)
for _kind, _names in ((_MOVS, "MOVS"), (_STOS, "STOS"), (_LODS, "LODS"), (_CMPS, "CMPS"), (_SCAS, "SCAS")):
    for _suffix, _size in (("B", 1), ("W", 2), ("D", 4), ("Q", 8)):
        _KINDS[getattr(M, _names + _suffix)] = (_kind, _size)


def _step(b: Builder, size: int) -> int:
    """A register holding the signed step of RSI/RDI: +size with DF clear, -size with DF set."""
    df = b.temp()
    b.emit(ir.ldr_uimm(3, df, abi.STATE, abi.DF_OFFSET))
    step = b.temp()
    b.emit(ir.sub_reg(1, step, ZR, df, Shift.LSL, _LOG2[size] + 1))
    b.emit(ir.add_imm(1, step, step, size))
    return step


def _element(b: Builder, kind: int, size: int, step: int, need: int) -> None:
    """One iteration: the access(es), the flags, then RSI/RDI stepped (after anything that may fault)."""
    if kind == _MOVS:
        value = b.load(size, RSI, 0, False)
        b.store(size, value, RDI, 0, False)
    elif kind == _STOS:
        b.store(size, RAX, RDI, 0, False)
    elif kind == _LODS:
        value = b.load(size, RSI, 0, False)
        b.write_reg(_ACCUMULATOR[size], value)
    elif kind == _CMPS:
        first = b.load(size, RSI, 0, False)
        second = b.load(size, RDI, 0, False)
        b.add_sub_flags(size, first, second, True, need)
    else:
        b.add_sub_flags(size, RAX, b.load(size, RDI, 0, False), True, need)
    if kind in (_MOVS, _LODS, _CMPS):
        b.emit(ir.add_reg(1, RSI, RSI, step))
    if kind != _LODS:
        b.emit(ir.add_reg(1, RDI, RDI, step))


def lower_string(b: Builder) -> None:
    ins = b.ins
    kind, size = _KINDS[ins.mnemonic]
    for i in range(ins.op_count):
        if ins.op_kind(i) not in (OpKind.REGISTER, *_64BIT_OPERANDS):
            raise Unsupported(REASON_OPERAND, "string instruction with 32-bit addressing")
    if ins.segment_prefix not in (Register.NONE, Register.DS, Register.ES):
        raise Unsupported(REASON_OPERAND, "string instruction with an FS/GS override")
    compares = kind in (_CMPS, _SCAS)
    repeat = ins.has_rep_prefix or ins.has_repne_prefix
    if not repeat:
        step = _step(b, size)
        _element(b, kind, size, step, b.need if compares else 0)
        return
    # rep: RCX = 0 does nothing (no access, no flag change).  Both ways out must
    # agree on what C means, so the loop's exit turns C back to the entry's meaning.
    entry_inverted = b.cf_inverted
    step = _step(b, size)
    done = b.branch(ir.cbz, 1, RCX)
    loop = b.label()
    need = (b.need | ZF) if compares else 0
    _element(b, kind, size, step, need)
    b.emit(ir.sub_imm(1, RCX, RCX, 1))
    if compares:
        leave = ir.Label()
        # repe (F3) goes on while ZF = 1, repne (F2) while ZF = 0.
        b.emit(ir.b_cond(Cond.NE if ins.has_repe_prefix else Cond.EQ, leave))
        b.emit(ir.cbnz(1, RCX, loop))
        b.place(leave)
        if not entry_inverted:
            b.emit(ir.cfinv())
        b.cf_inverted = entry_inverted
    else:
        b.emit(ir.cbnz(1, RCX, loop))
    b.place(done)


def lower_direction(b: Builder) -> None:
    """cld / std: DF in the state block."""
    if b.ins.mnemonic == M.CLD:
        b.emit(ir.str_uimm(3, ZR, abi.STATE, abi.DF_OFFSET))
        return
    one = b.temp()
    b.emit(ir.movz(0, one, 1))
    b.emit(ir.str_uimm(3, one, abi.STATE, abi.DF_OFFSET))


Lowering = tuple[Callable[[Builder], None], bool]


def _string_or(other: Lowering | None) -> Lowering:
    """A row for a mnemonic shared by a string instruction and an SSE one (movsd, cmpsd)."""
    def lower(b: Builder) -> None:
        if b.ins.is_string_instruction:
            lower_string(b)
        elif other is not None:
            other[0](b)
        else:
            raise Unsupported(REASON_VECTOR, "SSE form of a string mnemonic")
    lower.__name__ = "lower_string_or_vector"
    return lower, False


def merge_into(lowerings: dict[int, Lowering]) -> None:
    """Add the string rows to ``lowerings``, keeping the rows of the SSE movsd/cmpsd already there."""
    for mnemonic in _KINDS:
        if mnemonic in (M.MOVSD, M.CMPSD):
            lowerings[mnemonic] = _string_or(lowerings.get(mnemonic))
        else:
            lowerings[mnemonic] = (lower_string, False)
    lowerings[M.CLD] = (lower_direction, False)
    lowerings[M.STD] = (lower_direction, False)


__all__ = ["lower_direction", "lower_string", "merge_into"]
