"""Lowering of SSE/SSE2 floating-point instructions onto NEON: rows merged into :data:`lower.LOWERINGS`.

Results are x86's bit for bit, NaNs included (docs/translator.md, "SSE floating
point"), which AArch64 does not give by itself in three places:

- *NaN propagation*: x86 returns the first source's NaN (quieted) when it is
  one, else the second's; AArch64 prefers a signalling NaN in either operand.
  Quietening the second operand first (``fmax b, b`` returns a NaN quieted and
  anything else unchanged) leaves AArch64 nothing to prefer, so its choice
  becomes x86's.
- *The default NaN* of an invalid operation (inf - inf, 0 * inf, sqrt(-1)) is
  negative on x86 (0xFFC00000) and positive on AArch64: where the result is a
  NaN but no operand was, the sign is flipped.
- *min/max* return the second operand when either is a NaN or both are zero,
  which is a compare and a select, not ``fmin``/``fmax``; *conversions to
  integers* give the "integer indefinite" (0x80000000...) for NaN and out of
  range, not AArch64's saturation.

Scalar forms (``ss``/``sd``) compute on the whole vector, lane 0 being the one
that counts, and insert lane 0 into the destination, which keeps its upper
lanes.  A scalar memory operand is loaded with its own size (the rest of the
temporary is zero).  Rounding follows FPCR, which ``ldmxcsr`` sets from MXCSR.RC.
"""

from __future__ import annotations

from collections.abc import Callable

from iced_x86 import Mnemonic as M
from iced_x86 import OpKind

from fexaot_tool.translate import abi, ir
from fexaot_tool.translate.a64 import N_BIT, Z_BIT, ZR, Cond, Shift
from fexaot_tool.translate.builder import (AF, NZCV_FLAGS, PF, REASON_OPERAND, REGISTERS, SF, Builder,
                                           Unsupported)
from fexaot_tool.translate.lower_sse import _check_registers, _is_xmm

S, D = 2, 3  # element sizes: log2 of a single's / a double's bytes


def _dest(b: Builder) -> int:
    return b.xmm(b.ins.op_register(0))


def _source(b: Builder, i: int, size: int, scalar: bool) -> int:
    """Operand ``i``: an XMM register, or memory loaded as one element (scalar) or 16 bytes (packed)."""
    return b.read_xmm_op(i, size if scalar else 4)


def _finish(b: Builder, size: int, scalar: bool, dst: int, result: int) -> None:
    """dst := result (packed) or dst's lane 0 := result's lane 0 (scalar)."""
    if scalar:
        b.emit(ir.ins_elem(size, dst, 0, result, 0))
    elif result != dst:
        b.emit(ir.mov_v(1, dst, result))


def _negative_default_nan(b: Builder, size: int, result: int, ordered: int) -> None:
    """Flip the sign of ``result``'s NaN elements where ``ordered`` (all ones: no operand was a NaN) is set.

    Those NaNs are AArch64's default NaN (positive); x86's is negative.
    """
    not_nan = b.vtemp()
    b.emit(ir.fcmeq_v(size, 1, not_nan, result, result))
    flip = b.vtemp()
    b.emit(ir.bic_v(1, flip, ordered, not_nan))
    negated = b.vtemp()
    b.emit(ir.fneg_v(size, 1, negated, result))
    b.emit(ir.bit_v(1, result, negated, flip))


# --- add, sub, mul, div, sqrt -----------------------------------------------------------------

_ARITH: dict[int, tuple[Callable[..., ir.Op], int, bool]] = {
    M.ADDSS: (ir.fadd_v, S, True), M.ADDSD: (ir.fadd_v, D, True), M.ADDPS: (ir.fadd_v, S, False),
    M.ADDPD: (ir.fadd_v, D, False), M.SUBSS: (ir.fsub_v, S, True), M.SUBSD: (ir.fsub_v, D, True),
    M.SUBPS: (ir.fsub_v, S, False), M.SUBPD: (ir.fsub_v, D, False), M.MULSS: (ir.fmul_v, S, True),
    M.MULSD: (ir.fmul_v, D, True), M.MULPS: (ir.fmul_v, S, False), M.MULPD: (ir.fmul_v, D, False),
    M.DIVSS: (ir.fdiv_v, S, True), M.DIVSD: (ir.fdiv_v, D, True), M.DIVPS: (ir.fdiv_v, S, False),
    M.DIVPD: (ir.fdiv_v, D, False),
}


def lower_arith(b: Builder) -> None:
    """dst := dst op src with x86's NaN rules (module docstring): eight NEON instructions, nine for scalars."""
    _check_registers(b)
    form, size, scalar = _ARITH[b.ins.mnemonic]
    dst = _dest(b)
    src = _source(b, 1, size, scalar)
    quiet = b.vtemp()
    b.emit(ir.fmax_v(size, 1, quiet, src, src))
    # Neither operand a NaN: fmax of them is not one either.
    either = b.vtemp()
    b.emit(ir.fmax_v(size, 1, either, dst, quiet))
    ordered = b.vtemp()
    b.emit(ir.fcmeq_v(size, 1, ordered, either, either))
    result = b.vtemp() if scalar else dst
    b.emit(form(size, 1, result, dst, quiet))
    _negative_default_nan(b, size, result, ordered)
    _finish(b, size, scalar, dst, result)


_SQRT = {M.SQRTSS: (S, True), M.SQRTSD: (D, True), M.SQRTPS: (S, False), M.SQRTPD: (D, False)}


def lower_sqrt(b: Builder) -> None:
    """dst := sqrt(src); sqrt of a negative number is x86's negative default NaN."""
    _check_registers(b)
    size, scalar = _SQRT[b.ins.mnemonic]
    dst = _dest(b)
    src = _source(b, 1, size, scalar)
    ordered = b.vtemp()
    b.emit(ir.fcmeq_v(size, 1, ordered, src, src))
    result = b.vtemp() if scalar else dst
    b.emit(ir.fsqrt_v(size, 1, result, src))
    _negative_default_nan(b, size, result, ordered)
    _finish(b, size, scalar, dst, result)


# --- min, max ---------------------------------------------------------------------------------

_MINMAX = {
    M.MINSS: (False, S, True), M.MINSD: (False, D, True), M.MINPS: (False, S, False), M.MINPD: (False, D, False),
    M.MAXSS: (True, S, True), M.MAXSD: (True, D, True), M.MAXPS: (True, S, False), M.MAXPD: (True, D, False),
}


def lower_minmax(b: Builder) -> None:
    """min: dst < src ? dst : src; max: dst > src ? dst : src.  A NaN or two zeros give src, as on x86."""
    _check_registers(b)
    is_max, size, scalar = _MINMAX[b.ins.mnemonic]
    dst = _dest(b)
    src = _source(b, 1, size, scalar)
    keep = b.vtemp()
    b.emit(ir.fcmgt_v(size, 1, keep, dst, src) if is_max else ir.fcmgt_v(size, 1, keep, src, dst))
    if scalar:
        b.emit(ir.bsl_v(1, keep, dst, src))
        b.emit(ir.ins_elem(size, dst, 0, keep, 0))
    else:
        b.emit(ir.bif_v(1, dst, src, keep))


# --- compares ---------------------------------------------------------------------------------

_CMP = {M.CMPSS: (S, True), M.CMPSD: (D, True), M.CMPPS: (S, False), M.CMPPD: (D, False)}


def lower_cmp(b: Builder) -> None:
    """cmpps/pd/ss/sd with predicate imm8 & 7: eq, lt, le, unord, neq, nlt, nle, ord (all ones or zero).

    lt/le compare src > dst / src >= dst (false when unordered); the "not" predicates are
    their complements, so unordered elements give all ones, as on x86.
    """
    _check_registers(b)
    size, scalar = _CMP[b.ins.mnemonic]
    if b.ins.op_count != 3 or b.ins.op_kind(2) != OpKind.IMMEDIATE8:
        raise Unsupported(REASON_OPERAND, "compare without an immediate predicate")
    predicate = b.ins.immediate(2) & 7
    dst = _dest(b)
    src = _source(b, 1, size, scalar)
    result = b.vtemp() if scalar else dst
    negate = predicate in (3, 4, 5, 6)  # unord, neq, nlt, nle: the complement of ord, eq, lt, le
    mask = b.vtemp() if negate else result
    if predicate & 3 == 3:  # ord / unord: fmax is a NaN exactly when an operand is
        either = b.vtemp()
        b.emit(ir.fmax_v(size, 1, either, dst, src))
        b.emit(ir.fcmeq_v(size, 1, mask, either, either))
    elif predicate & 3 == 0:
        b.emit(ir.fcmeq_v(size, 1, mask, dst, src))
    elif predicate & 3 == 1:
        b.emit(ir.fcmgt_v(size, 1, mask, src, dst))  # dst < src
    else:
        b.emit(ir.fcmge_v(size, 1, mask, src, dst))  # dst <= src
    if negate:
        b.emit(ir.not_v(1, result, mask))
    _finish(b, size, scalar, dst, result)


_COMIS = {M.COMISS: S, M.UCOMISS: S, M.COMISD: D, M.UCOMISD: D}


def lower_comis(b: Builder) -> None:
    """comiss/comisd/ucomiss/ucomisd: ZF, PF, CF from the compare; OF = SF = AF = 0.

    x86: unordered 1,1,1; less 0,0,1; equal 1,0,0; greater 0,0,0 (ZF, PF, CF).
    ``fcmp`` gives unordered 0011, less 1000, equal 0110, greater 0010 (NZCV);
    ``fccmp ..., #0100, vc`` turns unordered into 0100, and clearing N leaves
    Z = ZF, C = NOT CF (the builder's inverted carry), N = SF = 0, V = OF = 0.
    PF (x21) is 0 (even parity: PF = 1) when unordered, 1 otherwise.  The
    quiet/signalling difference between the u- and plain forms is only in the
    exception flag, which is not kept.
    """
    _check_registers(b)
    size = _COMIS[b.ins.mnemonic]
    a = _dest(b)
    c = _source(b, 1, size, True)
    need = b.need
    if not need & (NZCV_FLAGS | PF | AF):
        return
    b.emit(ir.fcmp(size, a, c))
    if need & PF:
        b.emit(ir.cset(1, abi.PF_SRC, Cond.VC))
    if need & NZCV_FLAGS:
        b.emit(ir.fccmp(size, a, c, Z_BIT, Cond.VC))
        if need & SF:
            b.emit(ir.rmif(ZR, 0, N_BIT))
        b.cf_inverted = True
    if need & AF:
        b.emit(ir.movz(1, abi.AF_SRC, 0))


# --- conversions ------------------------------------------------------------------------------

_GPR_SF = {4: 0, 8: 1}


def lower_cvtsi2f(b: Builder) -> None:
    """cvtsi2ss/cvtsi2sd xmm, r/m32|64: rounded per FPCR (= MXCSR.RC); upper lanes kept."""
    _check_registers(b)
    size = S if b.ins.mnemonic == M.CVTSI2SS else D
    src_size = b.op_size(1)
    if src_size not in _GPR_SF:
        raise Unsupported(REASON_OPERAND, "cvtsi2ss/sd from a narrow operand")
    value = b.read_op(1, src_size)
    t = b.vtemp()
    b.emit(ir.scvtf_gpr(_GPR_SF[src_size], size, t, value))
    b.emit(ir.ins_elem(size, _dest(b), 0, t, 0))


_CVT_TO_INT = {M.CVTSS2SI: (S, False), M.CVTSD2SI: (D, False), M.CVTTSS2SI: (S, True), M.CVTTSD2SI: (D, True)}


def lower_cvtf2si(b: Builder) -> None:
    """cvt(t)ss2si/cvt(t)sd2si r32|64, xmm/m: x86's integer indefinite (only the sign bit) for NaN and overflow.

    ``fcvtzs`` saturates instead, but raises FPSR.IOC exactly then: clear FPSR, convert,
    and where IOC is set replace the result.  The rounding forms round to an integral
    value per FPCR first (``frinti``), which leaves the conversion exact.
    """
    _check_registers(b)
    size, truncate = _CVT_TO_INT[b.ins.mnemonic]
    reg = b.ins.op_register(0)
    if reg not in REGISTERS or REGISTERS[reg][1] not in _GPR_SF:
        raise Unsupported(REASON_OPERAND, "conversion to a narrow register")
    sf = _GPR_SF[REGISTERS[reg][1]]
    src = _source(b, 1, size, True)
    if not truncate:
        rounded = b.vtemp()
        b.emit(ir.frinti_v(size, 1, rounded, src))
        src = rounded
    b.emit(ir.msr_fpsr(ZR))
    value = b.temp()
    b.emit(ir.fcvtzs_gpr(sf, size, value, src))
    fpsr = b.temp()
    b.emit(ir.mrs_fpsr(fpsr))
    invalid = b.temp()
    b.emit(ir.sbfx(1, invalid, fpsr, 0, 1))  # all ones if IOC
    kept = b.temp()
    b.emit(ir.bic_reg(sf, kept, value, invalid))
    b.emit(ir.orr_reg(sf, b.dest_reg(reg), kept, invalid, Shift.LSL, 63 if sf else 31))


def lower_cvt_precision(b: Builder) -> None:
    """cvtss2sd / cvtsd2ss: one element, upper lanes kept; NaNs are quieted with their payload, as on x86."""
    _check_registers(b)
    src_size, dst_size = (S, D) if b.ins.mnemonic == M.CVTSS2SD else (D, S)
    src = _source(b, 1, src_size, True)
    t = b.vtemp()
    b.emit(ir.fcvt(dst_size, src_size, t, src))
    b.emit(ir.ins_elem(dst_size, _dest(b), 0, t, 0))


def _packed_conversion_source(b: Builder, size: int, rounding: int) -> tuple[int, int]:
    """(destination, source) of a packed float-to-int32 conversion; the source rounded by MXCSR's
    mode (FPCR) first when the form is ``rounding`` (cvtps2dq/cvtpd2dq), not the truncating one."""
    _check_registers(b)
    dst = _dest(b)
    value = b.read_xmm_op(1)
    if b.ins.mnemonic == rounding:
        rounded = b.vtemp()
        b.emit(ir.frinti_v(size, 1, rounded, value))
        value = rounded
    return dst, value


def lower_cvt_ps2dq(b: Builder) -> None:
    """cvtps2dq / cvttps2dq: four singles to int32, 0x80000000 for NaN and out of range.

    ``fcvtzs`` already gives 0x80000000 below -2^31; at or above 2^31 it saturates to
    0x7FFFFFFF and a NaN gives 0, so those lanes are replaced.
    """
    dst, value = _packed_conversion_source(b, S, M.CVTPS2DQ)
    limit = b.vtemp()
    b.emit(ir.movi_shifted(1, limit, 0x4F, 24))  # 2^31 as a single
    ok = b.vtemp()
    b.emit(ir.fcmgt_v(S, 1, ok, limit, value))  # before dst is written: value may be dst
    b.emit(ir.fcvtzs_v(S, 1, dst, value))
    indefinite = b.vtemp()
    b.emit(ir.movi_shifted(1, indefinite, 0x80, 24))
    b.emit(ir.bif_v(1, dst, indefinite, ok))


def lower_cvt_pd2dq(b: Builder) -> None:
    """cvtpd2dq / cvttpd2dq: two doubles to int32 in the low 64 bits, the high 64 zeroed.

    ``fcvtzs`` to int64 then ``sqxtn`` (saturating) gives the indefinite for everything
    below -2^31; lanes at or above 2^31, and NaNs, are first replaced by -2^31 as a double,
    whose bits read as an int64 far below -2^31, so they saturate to 0x80000000 too.
    """
    dst, value = _packed_conversion_source(b, D, M.CVTPD2DQ)
    bits = b.temp()
    b.mov_imm(1, bits, 0x41E0000000000000)  # 2^31
    limit = b.vtemp()
    b.emit(ir.dup_gpr(D, 1, limit, bits))
    ok = b.vtemp()
    b.emit(ir.fcmgt_v(D, 1, ok, limit, value))
    converted = b.vtemp()
    b.emit(ir.fcvtzs_v(D, 1, converted, value))
    low = b.vtemp()
    b.emit(ir.fneg_v(D, 1, low, limit))
    b.emit(ir.bif_v(1, converted, low, ok))
    b.emit(ir.sqxtn(S, dst, converted))


def lower_cvtdq2ps(b: Builder) -> None:
    _check_registers(b)
    b.emit(ir.scvtf_v(S, 1, _dest(b), b.read_xmm_op(1)))


def lower_cvtdq2pd(b: Builder) -> None:
    """Two int32 (the low 64 bits) to doubles: exact."""
    _check_registers(b)
    src = b.read_xmm_op(1, 3)
    wide = b.vtemp()
    b.emit(ir.sxtl(S, wide, src))
    b.emit(ir.scvtf_v(D, 1, _dest(b), wide))


def lower_cvtps2pd(b: Builder) -> None:
    _check_registers(b)
    b.emit(ir.fcvtl(_dest(b), b.read_xmm_op(1, 3)))


def lower_cvtpd2ps(b: Builder) -> None:
    """Two doubles to singles in the low 64 bits; the high 64 zeroed (fcvtn does it)."""
    _check_registers(b)
    b.emit(ir.fcvtn(_dest(b), b.read_xmm_op(1)))


# --- shuffles and moves -----------------------------------------------------------------------

def lower_shufps(b: Builder) -> None:
    """dst := dst[i0], dst[i1], src[i2], src[i3] (two bits each of imm8, low lanes first)."""
    _check_registers(b)
    imm = b.ins.immediate(2) & 0xFF
    dst = _dest(b)
    src = b.read_xmm_op(1)
    picks = [imm >> (2 * k) & 3 for k in range(4)]
    if picks[0] == 0 and picks[1] == 1 and src != dst:
        for lane in (2, 3):
            b.emit(ir.ins_elem(S, dst, lane, src, picks[lane]))
        return
    t = b.vtemp()
    b.emit(ir.dup_elem(S, 1, t, dst, picks[0]))
    if picks[1] != picks[0]:
        b.emit(ir.ins_elem(S, t, 1, dst, picks[1]))
    for lane in (2, 3):
        b.emit(ir.ins_elem(S, t, lane, src, picks[lane]))
    b.emit(ir.mov_v(1, dst, t))


def lower_shufpd(b: Builder) -> None:
    """dst := dst[imm & 1], src[imm >> 1 & 1]."""
    _check_registers(b)
    imm = b.ins.immediate(2) & 3
    dst = _dest(b)
    src = b.read_xmm_op(1)
    if imm & 1 == 0:
        b.emit(ir.ins_elem(D, dst, 1, src, imm >> 1))
        return
    t = b.vtemp()
    b.emit(ir.dup_elem(D, 1, t, dst, 1))
    b.emit(ir.ins_elem(D, t, 1, src, imm >> 1))
    b.emit(ir.mov_v(1, dst, t))


_UNPACK = {M.UNPCKLPS: (ir.zip1, S), M.UNPCKHPS: (ir.zip2, S), M.UNPCKLPD: (ir.zip1, D),
           M.UNPCKHPD: (ir.zip2, D)}


def lower_unpack(b: Builder) -> None:
    """unpck{l,h}{ps,pd}: interleave the low or high halves of dst and src (zip1/zip2)."""
    _check_registers(b)
    form, size = _UNPACK[b.ins.mnemonic]
    dst = _dest(b)
    b.emit(form(size, 1, dst, dst, b.read_xmm_op(1)))


def lower_movss_movsd(b: Builder) -> None:
    """movss/movsd: register to register merges lane 0; a load zeroes the rest; a store writes one element."""
    _check_registers(b)
    size = S if b.ins.mnemonic == M.MOVSS else D
    ins = b.ins
    if ins.op_kind(0) == OpKind.MEMORY:
        b.write_xmm_memory(size, b.xmm(ins.op_register(1)))
        return
    dst = _dest(b)
    if ins.op_kind(1) == OpKind.MEMORY:
        base, disp = b.address(ins)
        b.vload(size, base, disp, b._is_stack(ins), rd=dst)
        return
    src = b.xmm(ins.op_register(1))
    if src != dst:
        b.emit(ir.ins_elem(size, dst, 0, src, 0))


def lower_move_half(b: Builder) -> None:
    """movlps/movlpd/movhps/movhpd (memory forms) and movhlps/movlhps: one 64-bit half."""
    _check_registers(b)
    ins = b.ins
    high = ins.mnemonic in (M.MOVHPS, M.MOVHPD)
    if ins.mnemonic in (M.MOVHLPS, M.MOVLHPS):
        if not (_is_xmm(b, 0) and _is_xmm(b, 1)):
            raise Unsupported(REASON_OPERAND, "movhlps/movlhps operands")
        dst, src = _dest(b), b.xmm(ins.op_register(1))
        if ins.mnemonic == M.MOVHLPS:
            b.emit(ir.ins_elem(D, dst, 0, src, 1))
        else:
            b.emit(ir.ins_elem(D, dst, 1, src, 0))
        return
    if ins.op_kind(0) == OpKind.MEMORY:
        src = b.xmm(ins.op_register(1))
        if high:
            t = b.vtemp()
            b.emit(ir.dup_elem(D, 1, t, src, 1))
            src = t
        b.write_xmm_memory(D, src)
        return
    if ins.op_kind(1) != OpKind.MEMORY:
        raise Unsupported(REASON_OPERAND, "movlps/movhps between registers")
    t = b.read_xmm_op(1, D)
    b.emit(ir.ins_elem(D, _dest(b), 1 if high else 0, t, 0))


# --- MXCSR ------------------------------------------------------------------------------------

MXCSR_RC_SHIFT = 13  # rounding control: 00 nearest, 01 down, 10 up, 11 toward zero
MXCSR_DAZ, MXCSR_FTZ = 1 << 6, 1 << 15
FPCR_RMODE_SHIFT = 22  # 00 nearest, 01 up (+inf), 10 down (-inf), 11 toward zero
FPCR_FZ = 1 << 24


def lower_ldmxcsr(b: Builder) -> None:
    """MXCSR := m32 (kept in the state block) and FPCR := its rounding control and flush mode.

    MXCSR.RC's two bits are FPCR.RMode's in reverse order (down and up swap places): the
    field reversed with ``rbit`` and shifted puts MXCSR bit 13 at FPCR bit 23 and bit 14 at
    bit 22.  FPCR.FZ (flush denormal inputs and results) is set when MXCSR has both
    DAZ and FTZ, the setting compilers' fast-math start-up code makes.
    """
    ins = b.ins
    base, disp = b.address(ins)
    value = b.load(4, base, disp, b._is_stack(ins))
    b.emit(ir.str_uimm(2, value, abi.STATE, abi.MXCSR_OFFSET))
    rc = b.temp()
    b.emit(ir.ubfx(0, rc, value, MXCSR_RC_SHIFT, 2))
    reversed_rc = b.temp()
    b.emit(ir.rbit(0, reversed_rc, rc))  # bit 0 (RC low) -> 31, bit 1 -> 30
    rmode = b.temp()
    b.emit(ir.lsr_imm(0, rmode, reversed_rc, 31 - (FPCR_RMODE_SHIFT + 1)))  # 31 -> 23, 30 -> 22
    both = b.temp()
    b.emit(ir.and_reg(0, both, value, value, Shift.LSL, 15 - 6))  # bit 15: FTZ AND DAZ
    flush = b.temp()
    b.emit(ir.ubfx(0, flush, both, 15, 1))
    fpcr = b.temp()
    b.emit(ir.orr_reg(0, fpcr, rmode, flush, Shift.LSL, FPCR_FZ.bit_length() - 1))
    b.emit(ir.msr_fpcr(fpcr))


def lower_stmxcsr(b: Builder) -> None:
    """m32 := the MXCSR value of the last ldmxcsr (exception flags are not accumulated: docs/translator.md)."""
    ins = b.ins
    value = b.temp()
    b.emit(ir.ldr_uimm(2, value, abi.STATE, abi.MXCSR_OFFSET))
    base, disp = b.address(ins)
    b.store(4, value, base, disp, b._is_stack(ins))


SSE_FP_LOWERINGS: dict[int, tuple[Callable[[Builder], None], bool]] = {
    **{mnemonic: (lower_arith, False) for mnemonic in _ARITH},
    **{mnemonic: (lower_sqrt, False) for mnemonic in _SQRT},
    **{mnemonic: (lower_minmax, False) for mnemonic in _MINMAX},
    **{mnemonic: (lower_cmp, False) for mnemonic in _CMP},
    **{mnemonic: (lower_comis, False) for mnemonic in _COMIS},
    M.CVTSI2SS: (lower_cvtsi2f, False), M.CVTSI2SD: (lower_cvtsi2f, False),
    **{mnemonic: (lower_cvtf2si, False) for mnemonic in _CVT_TO_INT},
    M.CVTSS2SD: (lower_cvt_precision, False), M.CVTSD2SS: (lower_cvt_precision, False),
    M.CVTPS2DQ: (lower_cvt_ps2dq, False), M.CVTTPS2DQ: (lower_cvt_ps2dq, False),
    M.CVTPD2DQ: (lower_cvt_pd2dq, False), M.CVTTPD2DQ: (lower_cvt_pd2dq, False),
    M.CVTDQ2PS: (lower_cvtdq2ps, False), M.CVTDQ2PD: (lower_cvtdq2pd, False),
    M.CVTPS2PD: (lower_cvtps2pd, False), M.CVTPD2PS: (lower_cvtpd2ps, False),
    M.SHUFPS: (lower_shufps, False), M.SHUFPD: (lower_shufpd, False),
    **{mnemonic: (lower_unpack, False) for mnemonic in _UNPACK},
    M.MOVSS: (lower_movss_movsd, False), M.MOVSD: (lower_movss_movsd, False),
    M.MOVLPS: (lower_move_half, False), M.MOVLPD: (lower_move_half, False), M.MOVHPS: (lower_move_half, False),
    M.MOVHPD: (lower_move_half, False), M.MOVHLPS: (lower_move_half, False), M.MOVLHPS: (lower_move_half, False),
    M.LDMXCSR: (lower_ldmxcsr, False), M.STMXCSR: (lower_stmxcsr, False),
}

__all__ = ["SSE_FP_LOWERINGS"]
