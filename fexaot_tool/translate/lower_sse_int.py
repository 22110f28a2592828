"""Lowering of SSE2 integer instructions onto NEON: rows merged into :data:`lower.LOWERINGS`.

Most rows are one NEON instruction on the destination XMM register in place
(``paddb x, y`` is ``add vX.16b, vX.16b, vY.16b``); the others are short
sequences whose steps the functions below explain.  Semantics follow the
Intel SDM exactly, including the edge cases NEON does differently: shift
counts of at least the lane width (logical shifts give 0, arithmetic ones all
sign bits; a count from an XMM register is its whole low 64 bits),
``pslldq``/``psrldq`` by more than 15 bytes, and ``pmaddwd``'s wrap-around for
-32768 * -32768 * 2.  Memory operands are read as 16 bytes (as x86 does) and,
like the moves of :mod:`lower_sse`, without the #GP check for misaligned
16-byte operands.  MMX-register forms of the same mnemonics are not
translated (REASON_VECTOR).
"""

from __future__ import annotations

from collections.abc import Callable

from iced_x86 import Mnemonic as M
from iced_x86 import OpKind

from fexaot_tool.translate import ir
from fexaot_tool.translate.builder import REASON_EXTENSION, REGISTERS, Builder, Unsupported
from fexaot_tool.translate.lower_sse import _check_registers, lower_mov128

B, H, S, D = 0, 1, 2, 3  # NEON element sizes: log2 of the lane's bytes


def _operands(b: Builder) -> tuple[int, int]:
    """(destination XMM register, source operand as a vector register) of a two-operand form."""
    _check_registers(b)
    return b.xmm(b.ins.op_register(0)), b.read_xmm_op(1)


# --- element-wise: dst := op(dst, src), one NEON instruction ----------------------------------

_ELEMENTWISE: dict[int, tuple[Callable[..., ir.Op], int]] = {
    M.PADDB: (ir.add_v, B), M.PADDW: (ir.add_v, H), M.PADDD: (ir.add_v, S), M.PADDQ: (ir.add_v, D),
    M.PSUBB: (ir.sub_v, B), M.PSUBW: (ir.sub_v, H), M.PSUBD: (ir.sub_v, S), M.PSUBQ: (ir.sub_v, D),
    M.PADDUSB: (ir.uqadd, B), M.PADDUSW: (ir.uqadd, H), M.PADDSB: (ir.sqadd, B), M.PADDSW: (ir.sqadd, H),
    M.PSUBUSB: (ir.uqsub, B), M.PSUBUSW: (ir.uqsub, H), M.PSUBSB: (ir.sqsub, B), M.PSUBSW: (ir.sqsub, H),
    M.PCMPEQB: (ir.cmeq_v, B), M.PCMPEQW: (ir.cmeq_v, H), M.PCMPEQD: (ir.cmeq_v, S),
    M.PCMPGTB: (ir.cmgt_v, B), M.PCMPGTW: (ir.cmgt_v, H), M.PCMPGTD: (ir.cmgt_v, S),
    M.PMINUB: (ir.umin_v, B), M.PMAXUB: (ir.umax_v, B), M.PMINSW: (ir.smin_v, H), M.PMAXSW: (ir.smax_v, H),
    M.PAVGB: (ir.urhadd, B), M.PAVGW: (ir.urhadd, H),  # (a + b + 1) >> 1 without overflow
    M.PMULLW: (ir.mul_v, H),
    # Interleaving the low (l) or high (h) halves of dst and src is zip1/zip2.
    M.PUNPCKLBW: (ir.zip1, B), M.PUNPCKLWD: (ir.zip1, H), M.PUNPCKLDQ: (ir.zip1, S), M.PUNPCKLQDQ: (ir.zip1, D),
    M.PUNPCKHBW: (ir.zip2, B), M.PUNPCKHWD: (ir.zip2, H), M.PUNPCKHDQ: (ir.zip2, S), M.PUNPCKHQDQ: (ir.zip2, D),
}


def lower_elementwise(b: Builder) -> None:
    form, size = _ELEMENTWISE[b.ins.mnemonic]
    dst, src = _operands(b)
    b.emit(form(size, 1, dst, dst, src))


# --- multiplies and sums that widen -----------------------------------------------------------

def lower_mulhi(b: Builder) -> None:
    """pmulhw/pmulhuw: the high 16 bits of each 32-bit product.

    smull/smull2 (umull for pmulhuw) give the eight full products; uzp2 takes
    their odd halfwords, which are the high halves.
    """
    widen = ir.smull_v if b.ins.mnemonic == M.PMULHW else ir.umull_v
    dst, src = _operands(b)
    low, high = b.vtemp(), b.vtemp()
    b.emit(widen(H, 0, low, dst, src))
    b.emit(widen(H, 1, high, dst, src))
    b.emit(ir.uzp2(H, 1, dst, low, high))


def lower_pmaddwd(b: Builder) -> None:
    """pmaddwd: signed 16x16 products, adjacent pairs added into 32-bit lanes (mod 2**32, as x86)."""
    dst, src = _operands(b)
    low, high = b.vtemp(), b.vtemp()
    b.emit(ir.smull_v(H, 0, low, dst, src))
    b.emit(ir.smull_v(H, 1, high, dst, src))
    b.emit(ir.addp_v(S, 1, dst, low, high))


def lower_pmuludq(b: Builder) -> None:
    """pmuludq: each 64-bit lane := its low 32 bits of dst times those of src, unsigned."""
    dst, src = _operands(b)
    a, c = b.vtemp(), b.vtemp()
    b.emit(ir.xtn(S, a, dst))
    b.emit(ir.xtn(S, c, src))
    b.emit(ir.umull_v(S, 0, dst, a, c))


def lower_psadbw(b: Builder) -> None:
    """psadbw: per 64-bit half, the sum of the eight absolute byte differences, zero-extended."""
    dst, src = _operands(b)
    b.emit(ir.uabd(B, 1, dst, dst, src))
    for size in (B, H, S):  # pairwise widening adds: 16 bytes -> 8 halves -> 4 words -> 2 doublewords
        b.emit(ir.uaddlp(size, 1, dst, dst))


# --- shifts -----------------------------------------------------------------------------------

LEFT, LOGICAL_RIGHT, ARITHMETIC_RIGHT = 0, 1, 2
_SHIFTS: dict[int, tuple[int, int]] = {
    M.PSLLW: (H, LEFT), M.PSLLD: (S, LEFT), M.PSLLQ: (D, LEFT),
    M.PSRLW: (H, LOGICAL_RIGHT), M.PSRLD: (S, LOGICAL_RIGHT), M.PSRLQ: (D, LOGICAL_RIGHT),
    M.PSRAW: (H, ARITHMETIC_RIGHT), M.PSRAD: (S, ARITHMETIC_RIGHT),
}


def lower_shift(b: Builder) -> None:
    """psll/psrl/psra by an imm8 or by the low 64 bits of an XMM register or m128.

    A count of at least the lane width gives 0 (logical) or every bit the sign
    (arithmetic).  An immediate count is resolved here.  A register count is
    saturated to 32 bits (uqxtn), limited to 64 (umin: a byte that every lane
    width treats as "everything shifted out"), negated for right shifts and
    spread to every byte, because ushl/sshl shift each lane by the signed low
    byte of the matching lane of the count vector, right when it is negative.
    """
    size, kind = _SHIFTS[b.ins.mnemonic]
    _check_registers(b)
    dst = b.xmm(b.ins.op_register(0))
    bits = 8 << size
    if b.is_imm(1):
        count = b.ins.immediate(1) & 0xFF
        if count == 0:
            return
        if count >= bits and kind != ARITHMETIC_RIGHT:
            b.emit(ir.movi_zero(dst))
        elif kind == LEFT:
            b.emit(ir.shl_v(size, 1, dst, dst, count))
        elif kind == LOGICAL_RIGHT:
            b.emit(ir.ushr_v(size, 1, dst, dst, count))
        else:
            b.emit(ir.sshr_v(size, 1, dst, dst, min(count, bits)))  # sshr by the width: all sign bits
        return
    source = b.read_xmm_op(1)
    narrow, limit, count = b.vtemp(), b.vtemp(), b.vtemp()
    b.emit(ir.uqxtn(S, narrow, source))
    b.emit(ir.movi_v(S, 0, limit, 64))
    b.emit(ir.umin_v(S, 0, count, narrow, limit))
    if kind != LEFT:
        negated = b.vtemp()
        b.emit(ir.neg_v(B, 0, negated, count))
        count = negated
    spread = b.vtemp()
    b.emit(ir.dup_elem(B, 1, spread, count, 0))
    shift = ir.sshl_v if kind == ARITHMETIC_RIGHT else ir.ushl_v
    b.emit(shift(size, 1, dst, dst, spread))


def lower_byte_shift(b: Builder) -> None:
    """pslldq/psrldq: the whole register shifted by imm8 bytes (more than 15 clears it), via ext with zero."""
    _check_registers(b)
    dst = b.xmm(b.ins.op_register(0))
    count = b.ins.immediate(1) & 0xFF
    if count == 0:
        return
    if count >= 16:
        b.emit(ir.movi_zero(dst))
        return
    zero = b.vtemp()
    b.emit(ir.movi_zero(zero))
    if b.ins.mnemonic == M.PSLLDQ:
        b.emit(ir.ext_v(1, dst, zero, dst, 16 - count))  # bytes 16-count.. of dst:zero
    else:
        b.emit(ir.ext_v(1, dst, dst, zero, count))  # bytes count.. of zero:dst


# --- packs and shuffles -----------------------------------------------------------------------

_PACKS: dict[int, tuple[Callable[..., ir.Op], Callable[..., ir.Op], int]] = {
    M.PACKSSWB: (ir.sqxtn, ir.sqxtn2, B), M.PACKUSWB: (ir.sqxtun, ir.sqxtun2, B),
    M.PACKSSDW: (ir.sqxtn, ir.sqxtn2, H),
}


def lower_pack(b: Builder) -> None:
    """packsswb/packuswb/packssdw: dst's lanes narrowed with saturation into the low half, src's into the high."""
    low, high, size = _PACKS[b.ins.mnemonic]
    dst, src = _operands(b)
    if src != dst:
        b.emit(low(size, dst, dst))  # src is another register: narrowing dst in place first is safe
        b.emit(high(size, dst, src))
        return
    half = b.vtemp()
    b.emit(low(size, half, dst))
    b.emit(ir.zip1(D, 1, dst, half, half))  # the same 64 bits in both halves


def _permute(b: Builder, size: int, dst: int, src: int, selection: list[int]) -> None:
    """dst lane i := src lane selection[i], lanes of 2**size bytes, with the fewest dup/mov/ins.

    Either start from a copy of src and move the lanes that change, or from
    every lane set to the most frequent source lane (dup) and move the others.
    When dst is src the original must survive until the last lane is moved.
    """
    changed = [i for i, s in enumerate(selection) if s != i]
    common = max(sorted(set(selection)), key=selection.count)
    others = [i for i, s in enumerate(selection) if s != common]
    if not changed:
        if dst != src:
            b.emit(ir.mov_v(1, dst, src))
        return
    if dst == src and not others:
        b.emit(ir.dup_elem(size, 1, dst, src, common))
        return
    if dst == src:
        if 1 + len(changed) <= 2 + len(others):
            original = b.vtemp()
            b.emit(ir.mov_v(1, original, src))
            for i in changed:
                b.emit(ir.ins_elem(size, dst, i, original, selection[i]))
        else:
            result = b.vtemp()
            b.emit(ir.dup_elem(size, 1, result, src, common))
            for i in others:
                b.emit(ir.ins_elem(size, result, i, src, selection[i]))
            b.emit(ir.mov_v(1, dst, result))
        return
    if len(others) < len(changed):
        b.emit(ir.dup_elem(size, 1, dst, src, common))
        lanes = others
    else:
        b.emit(ir.mov_v(1, dst, src))
        lanes = changed
    for i in lanes:
        b.emit(ir.ins_elem(size, dst, i, src, selection[i]))


def lower_pshufd(b: Builder) -> None:
    """pshufd: dword i := source dword imm8[2i+1:2i]."""
    dst, src = _operands(b)
    imm = b.ins.immediate(2) & 0xFF
    if imm == 0x4E:  # swap the 64-bit halves: one ext
        b.emit(ir.ext_v(1, dst, src, src, 8))
        return
    _permute(b, S, dst, src, [imm >> (2 * i) & 3 for i in range(4)])


def lower_pshuflw_hw(b: Builder) -> None:
    """pshuflw/pshufhw: the low (high) four words shuffled by imm8, the other 64 bits copied."""
    dst, src = _operands(b)
    imm = b.ins.immediate(2) & 0xFF
    words = [imm >> (2 * i) & 3 for i in range(4)]
    low = b.ins.mnemonic == M.PSHUFLW
    if len(set(words)) == 1:
        # One word broadcast into a half (0x00, 0x55, ...): dup it, then take the other half from src.
        word, half = words[0] + (0 if low else 4), 0 if low else 1
        if dst != src:
            b.emit(ir.dup_elem(H, 1, dst, src, word))
            b.emit(ir.ins_elem(D, dst, 1 - half, src, 1 - half))
        else:
            spread = b.vtemp()
            b.emit(ir.dup_elem(H, 1, spread, src, word))
            b.emit(ir.ins_elem(D, dst, half, spread, half))
        return
    if low:
        selection = words + [4, 5, 6, 7]
    else:
        selection = [0, 1, 2, 3] + [4 + w for w in words]
    _permute(b, H, dst, src, selection)


# --- moves between lanes and general-purpose registers ----------------------------------------

def lower_pinsrw(b: Builder) -> None:
    """pinsrw xmm, r32/m16, imm8: word imm8[2:0] := the low 16 bits of the source."""
    _check_registers(b)
    ins = b.ins
    dst = b.xmm(ins.op_register(0))
    if ins.op_kind(1) == OpKind.MEMORY:
        base, disp = b.address(ins)
        value = b.load(2, base, disp, b._is_stack(ins))
    else:
        value = b.read_reg(ins.op_register(1))
    b.emit(ir.ins_gpr(H, dst, ins.immediate(2) & 7, value))


def lower_pextrw(b: Builder) -> None:
    """pextrw r32/r64, xmm, imm8: the word imm8[2:0], zero-extended (umov into a w register)."""
    _check_registers(b)
    ins = b.ins
    if ins.op_kind(0) != OpKind.REGISTER:
        raise Unsupported(REASON_EXTENSION, "pextrw to memory is SSE4.1")
    reg = ins.op_register(0)
    rd = b.dest_reg(reg)
    b.emit(ir.umov(H, rd, b.xmm(ins.op_register(1)), ins.immediate(2) & 7))
    b.write_reg(reg, rd)


def lower_pmovmskb(b: Builder) -> None:
    """pmovmskb r32/r64, xmm: bit i := the top bit of byte i, the rest of the register zeroed.

    ushr #7 leaves each byte's top bit at its bit 0; three shift-right-and-add
    steps at 16, 32 and 64 bits gather 2, 4, then 8 of them into the low byte
    of each 64-bit half; ins puts the high half's byte next to the low one and
    umov reads both as one zero-extended halfword.
    """
    _check_registers(b)
    ins = b.ins
    reg = ins.op_register(0)
    rd = b.dest_reg(reg)
    t = b.vtemp()
    b.emit(ir.ushr_v(B, 1, t, b.xmm(ins.op_register(1)), 7))
    b.emit(ir.usra(H, 1, t, t, 7))
    b.emit(ir.usra(S, 1, t, t, 14))
    b.emit(ir.usra(D, 1, t, t, 28))
    b.emit(ir.ins_elem(B, t, 1, t, 8))
    b.emit(ir.umov(H, rd, t, 0))
    b.write_reg(reg, rd)


def lower_movmsk(b: Builder) -> None:
    """movmskps/movmskpd r32/r64, xmm: bit i := the sign bit of float (double) i, the rest zeroed.

    The sign bits are shifted down to bit 0 of their lanes and gathered with
    shift-right-and-add; xtn brings the two 64-bit halves into one doubleword
    for the last gather step, and fmov reads its low 32 bits.
    """
    _check_registers(b)
    ins = b.ins
    reg = ins.op_register(0)
    rd = b.dest_reg(reg)
    src = b.xmm(ins.op_register(1))
    bits, halves = b.vtemp(), b.vtemp()
    if ins.mnemonic == M.MOVMSKPS:
        b.emit(ir.ushr_v(S, 1, bits, src, 31))
        b.emit(ir.usra(D, 1, bits, bits, 31))  # each half: bits 0-1 = its two signs
        b.emit(ir.xtn(S, halves, bits))
        b.emit(ir.usra(D, 1, halves, halves, 30))  # bits 0-3
    else:
        b.emit(ir.ushr_v(D, 1, bits, src, 63))
        b.emit(ir.xtn(S, halves, bits))
        b.emit(ir.usra(D, 1, halves, halves, 31))  # bits 0-1
    b.emit(ir.fmov_to_gpr(0, rd, halves))
    b.write_reg(reg, rd)


# --- non-temporal stores: plain stores (the hint changes no result) ---------------------------

def lower_movnti(b: Builder) -> None:
    """movnti m32/m64, r32/r64."""
    ins = b.ins
    size = REGISTERS[ins.op_register(1)][1]
    value = b.read_reg(ins.op_register(1))
    base, disp = b.address(ins)
    b.store(size, value, base, disp, b._is_stack(ins))


SSE_INT_LOWERINGS: dict[int, tuple[Callable[[Builder], None], bool]] = {
    **{mnemonic: (lower_elementwise, False) for mnemonic in _ELEMENTWISE},
    M.PMULHW: (lower_mulhi, False), M.PMULHUW: (lower_mulhi, False), M.PMADDWD: (lower_pmaddwd, False),
    M.PMULUDQ: (lower_pmuludq, False), M.PSADBW: (lower_psadbw, False),
    **{mnemonic: (lower_shift, False) for mnemonic in _SHIFTS},
    M.PSLLDQ: (lower_byte_shift, False), M.PSRLDQ: (lower_byte_shift, False),
    **{mnemonic: (lower_pack, False) for mnemonic in _PACKS},
    M.PSHUFD: (lower_pshufd, False), M.PSHUFLW: (lower_pshuflw_hw, False), M.PSHUFHW: (lower_pshuflw_hw, False),
    M.PINSRW: (lower_pinsrw, False), M.PEXTRW: (lower_pextrw, False), M.PMOVMSKB: (lower_pmovmskb, False),
    M.MOVMSKPS: (lower_movmsk, False), M.MOVMSKPD: (lower_movmsk, False),
    M.MOVNTI: (lower_movnti, False), M.MOVNTDQ: (lower_mov128, False), M.MOVNTPS: (lower_mov128, False),
    M.MOVNTPD: (lower_mov128, False),
}

__all__ = ["SSE_INT_LOWERINGS"]
