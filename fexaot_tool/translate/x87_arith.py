"""x87 arithmetic (add, subtract, multiply, divide) on 80-bit values, exact to the bit, as IR.

Values are ``(se, m)`` register pairs as in :mod:`x87_convert`.  The results
are those of the reference x87 (QEMU's softfloat ``floatx80`` in unicorn):

- The exact result is formed as a 128-bit significand ``hi:lo`` (leading one
  at bit 63 of ``hi``, bits shifted out of an operand ORed into bit 0 of
  ``lo``) and an exponent, then rounded once by :func:`round_pack`: to the
  precision control's 64, 53 or 24 bits (PC 11/10/00; the reserved 01 counts
  as 64) and the rounding control's mode, keeping x87's 15-bit exponent range
  at every precision.  Results below the smallest normal become denormals
  (shifted right with a sticky bit, then rounded); results above the largest
  finite value become infinity, or the largest value of the precision when
  the mode rounds toward zero for that sign.
- NaNs: an invalid encoding (an exponent with the integer bit clear) in either
  operand gives the default NaN; otherwise a quiet NaN beats a signalling one,
  between two of a kind the larger significand wins (equal ones: the positive
  one), and the NaN returned is quietened.  inf - inf, 0 * inf, 0 / 0 and
  inf / inf give the default NaN; x / 0 gives a signed infinity.
- An exact zero difference is +0, or -0 when rounding down.
- Pseudo-denormals (exponent 0, integer bit set) count as exponent 1.

Division is a shift-and-subtract loop producing the 65 quotient bits a
rounding needs, the remainder's being zero as the sticky bit.

Register budget: the routines park their operands in the state block's x87
scratch (docs/abi.md) and reload them where needed, and read the control word
from the state block, so no more than eight general-purpose values are live
at any point: one more may be live across a call (the guest's saved NZCV).  NZCV is clobbered (the
lowering saves live guest flags around it).
"""

from __future__ import annotations

from fexaot_tool.translate import abi, ir
from fexaot_tool.translate.a64 import ZR, Cond, Shift
from fexaot_tool.translate.builder import Builder
from fexaot_tool.translate.x87_convert import EXP_MASK, INTEGER_BIT

QUIET_BIT = 1 << 62
DEFAULT_NAN = (0xFFFF, 0xC000000000000000)  # (sign_exponent, significand)
# Scratch slots (state-block offsets).
_A_M, _A_SE, _C_M, _C_SE = (abi.X87_SCRATCH_OFFSET + o for o in (0x00, 0x08, 0x10, 0x18))
_R_M, _R_SE, _SIGN, _SIGN_C = (abi.X87_SCRATCH_OFFSET + o for o in (0x20, 0x28, 0x30, 0x38))
_DIFFER = abi.X87_SCRATCH_OFFSET + 0x40


def _save(b: Builder, offset: int, reg: int) -> None:
    b.emit(ir.str_uimm(3, reg, abi.STATE, offset))


def _load(b: Builder, offset: int) -> int:
    t = b.temp()
    b.emit(ir.ldr_uimm(3, t, abi.STATE, offset))
    return t


def _control_word(b: Builder) -> int:
    cw = b.temp()
    b.emit(ir.ldr_uimm(2, cw, abi.STATE, abi.X87_CW_OFFSET))
    return cw


# --- rounding -------------------------------------------------------------------------------------

def _shift_right_jamming_128(b: Builder, hi: int, lo: int, n: int) -> None:
    """hi:lo >>= n (n >= 1), bits shifted out ORed into bit 0 of lo."""
    done = ir.Label()
    t = b.temp()
    b.compare_imm(1, n, 64)
    wide = b.branch(ir.b_cond, Cond.HS)
    b.emit(ir.sub_reg(0, t, ZR, n))  # -n: shifts use it modulo 64, so 64 - n
    sticky = b.temp()
    b.emit(ir.lslv(1, sticky, lo, t))
    b.emit(ir.lsrv(1, lo, lo, n))
    b.emit(ir.lslv(1, t, hi, t))
    b.emit(ir.orr_reg(1, lo, lo, t))
    b.emit(ir.lsrv(1, hi, hi, n))
    b.emit(ir.subs_imm(1, ZR, sticky, 0))
    b.emit(ir.cset(1, sticky, Cond.NE))
    b.emit(ir.orr_reg(1, lo, lo, sticky))
    b.emit(ir.b(done))
    b.place(wide)
    # n >= 64: lo := hi >> (n - 64) (nothing of hi when n >= 128), with everything below as the sticky bit.
    b.emit(ir.orr_reg(1, t, ZR, lo))
    b.emit(ir.sub_imm(1, n, n, 64))
    b.compare_imm(1, n, 64)
    gone = b.branch(ir.b_cond, Cond.HS)
    sticky = b.temp()
    b.emit(ir.sub_reg(0, sticky, ZR, n))
    b.emit(ir.lslv(1, sticky, hi, sticky))
    b.emit(ir.subs_imm(1, ZR, n, 0))
    b.emit(ir.csel(1, sticky, sticky, ZR, Cond.NE))  # n == 64: lslv by 64 is by 0, and nothing is lost
    b.emit(ir.orr_reg(1, t, t, sticky))
    b.emit(ir.lsrv(1, lo, hi, n))
    after = b.branch(ir.b)
    b.place(gone)
    b.emit(ir.orr_reg(1, t, t, hi))
    b.mov_imm(1, lo, 0)
    b.place(after)
    b.emit(ir.subs_imm(1, ZR, t, 0))
    b.emit(ir.cset(1, t, Cond.NE))
    b.emit(ir.orr_reg(1, lo, lo, t))
    b.mov_imm(1, hi, 0)
    b.place(done)


def round_pack(b: Builder, exp: int, hi: int, lo: int) -> tuple[int, int]:
    """(se, m) of (-1)^sign * hi:lo * 2^(exp - 16383 - 63), rounded by the control word's PC and RC; the
    sign (0 or 1) is in the scratch slot _SIGN.

    ``exp`` is signed; hi:lo need not be normalised (zero gives a zero).  ``exp``, ``hi`` and ``lo``
    are consumed."""
    se = b.temp()
    zero = ir.Label()
    # Normalise: the leading one to bit 63 of hi.
    high = b.branch(ir.cbnz, 1, hi)
    b.emit(ir.cbz(1, lo, zero))
    b.emit(ir.orr_reg(1, hi, ZR, lo))
    b.mov_imm(1, lo, 0)
    b.emit(ir.sub_imm(1, exp, exp, 64))
    b.place(high)
    k = b.temp()
    b.emit(ir.clz(1, k, hi))
    normal = b.branch(ir.cbz, 1, k)
    b.emit(ir.sub_reg(1, exp, exp, k))
    b.emit(ir.lslv(1, hi, hi, k))
    t = b.temp()
    b.emit(ir.sub_reg(0, t, ZR, k))  # 64 - k modulo 64 (k >= 1 here)
    b.emit(ir.lsrv(1, t, lo, t))
    b.emit(ir.orr_reg(1, hi, hi, t))
    b.emit(ir.lslv(1, lo, lo, k))
    b.place(normal)
    # Tiny: denormalise to exponent 0 (the field's 0 means 2^(1 - bias)).
    b.compare_imm(1, exp, 0)
    not_tiny = b.branch(ir.b_cond, Cond.GT)
    n = b.temp()
    b.emit(ir.sub_reg(1, n, b.constant(1, 1), exp))
    _shift_right_jamming_128(b, hi, lo, n)
    b.mov_imm(1, exp, 0)
    b.place(not_tiny)
    # Precision: k bits of hi are discarded (PC 00: 40, PC 10: 11, else 0).  Move them to the top of
    # lo (a fraction of the last kept place), with lo as their sticky bit, and hi := the kept bits.
    pc = _control_word(b)
    b.emit(ir.ubfx(0, pc, pc, 8, 2))
    b.mov_imm(1, k, 0)
    full = b.branch(ir.tbnz, pc, 0)
    b.mov_imm(1, k, 40)
    single = b.branch(ir.cbz, 1, pc)
    b.mov_imm(1, k, 11)
    b.place(single)
    b.emit(ir.subs_imm(1, ZR, lo, 0))
    b.emit(ir.cset(1, lo, Cond.NE))
    b.emit(ir.sub_reg(0, t, ZR, k))
    b.emit(ir.lslv(1, t, hi, t))
    b.emit(ir.orr_reg(1, lo, lo, t))
    b.emit(ir.lsrv(1, hi, hi, k))
    b.place(full)
    # Increment by RC: nearest: lo above a half, or a half and hi odd; toward the sign's infinity: lo != 0.
    rc, m = _control_word(b), b.temp()
    b.emit(ir.ubfx(0, rc, rc, 10, 2))
    up, keep, carried, rounded = ir.Label(), ir.Label(), ir.Label(), ir.Label()
    directed = b.branch(ir.cbnz, 1, rc)
    b.emit(ir.subs_reg(1, ZR, lo, b.constant(1, INTEGER_BIT)))
    b.emit(ir.b_cond(Cond.HI, up))
    b.emit(ir.b_cond(Cond.NE, keep))
    b.emit(ir.tbz(hi, 0, keep))
    b.emit(ir.b(up))
    b.place(directed)
    b.emit(ir.add_reg(0, t, rc, _load(b, _SIGN)))
    b.emit(ir.subs_imm(0, ZR, t, 2))  # RC up (2) for a positive value, down (1) for a negative one
    b.emit(ir.b_cond(Cond.NE, keep))
    b.emit(ir.cbz(1, lo, keep))
    b.place(up)
    # hi + 1 may carry out of the kept bits: into bit 64 - k, or (k == 0) out of the register.
    b.emit(ir.add_imm(1, hi, hi, 1))
    whole = b.branch(ir.cbz, 1, k)
    b.emit(ir.sub_reg(0, t, ZR, k))
    b.emit(ir.lsrv(1, t, hi, t))
    b.emit(ir.cbz(1, t, keep))
    b.emit(ir.b(carried))
    b.place(whole)
    b.emit(ir.cbnz(1, hi, keep))
    b.place(carried)
    b.emit(ir.add_imm(1, exp, exp, 1))
    b.mov_imm(1, m, INTEGER_BIT)
    b.emit(ir.b(rounded))
    b.place(keep)
    b.emit(ir.lslv(1, m, hi, k))
    # A denormal that rounded up into bit 63 is the smallest normal.
    b.emit(ir.cbnz(1, exp, rounded))
    b.emit(ir.lsr_imm(1, exp, m, 63))
    b.place(rounded)
    # Overflow: infinity, or the largest value of the precision when RC rounds toward zero for the sign.
    b.compare_imm(1, exp, EXP_MASK)
    finite = b.branch(ir.b_cond, Cond.LT)
    b.mov_imm(1, m, INTEGER_BIT)
    b.mov_imm(1, exp, EXP_MASK)
    b.emit(ir.cbz(1, rc, finite))  # nearest
    b.emit(ir.add_reg(0, t, rc, _load(b, _SIGN)))
    b.emit(ir.subs_imm(0, ZR, t, 2))
    b.emit(ir.b_cond(Cond.EQ, finite))
    b.mov_imm(1, exp, EXP_MASK - 1)
    b.emit(ir.movn(1, m, 0, 0))
    b.emit(ir.lslv(1, m, m, k))
    b.place(finite)
    b.emit(ir.orr_reg(0, se, exp, _load(b, _SIGN), Shift.LSL, 15))
    done = b.branch(ir.b)
    b.place(zero)
    b.emit(ir.lsl_imm(0, se, _load(b, _SIGN), 15))
    b.mov_imm(1, m, 0)
    b.place(done)
    return se, m


# --- operands and special results -------------------------------------------------------------------

def _park(b: Builder, a_se: int, a_m: int, c_se: int, c_m: int) -> None:
    for offset, reg in ((_A_M, a_m), (_A_SE, a_se), (_C_M, c_m), (_C_SE, c_se)):
        _save(b, offset, reg)


def _result(b: Builder, se: int, m: int, special: ir.Label) -> None:
    """The operation's result is (se, m): park it and leave by ``special``."""
    _save(b, _R_SE, se)
    _save(b, _R_M, m)
    b.emit(ir.b(special))


def _result_constant(b: Builder, se_value: int, m_value: int, special: ir.Label) -> None:
    se, m = b.temp(), b.temp()
    b.mov_imm(0, se, se_value)
    b.mov_imm(1, m, m_value)
    _result(b, se, m, special)


def _result_signed(b: Builder, sign: int, infinite: bool, special: ir.Label) -> None:
    """A zero or an infinity with the sign ``sign`` (0 or 1)."""
    se, m = b.temp(), b.temp()
    b.emit(ir.lsl_imm(0, se, sign, 15))
    if infinite:
        b.emit(ir.orr_imm(0, se, se, EXP_MASK))
    b.mov_imm(1, m, INTEGER_BIT if infinite else 0)
    _result(b, se, m, special)


def _nan_rank(b: Builder, se: int, m: int) -> int:
    """0 for a number or infinity, 1 for a signalling NaN, 2 for a quiet one."""
    r, e = b.temp(), b.temp()
    b.mov_imm(0, r, 0)
    b.emit(ir.and_imm(0, e, se, EXP_MASK))
    b.compare_imm(0, e, EXP_MASK)
    done = b.branch(ir.b_cond, Cond.NE)
    b.emit(ir.lsl_imm(1, e, m, 1))
    b.emit(ir.cbz(1, e, done))
    b.emit(ir.ubfx(1, r, m, 62, 1))
    b.emit(ir.add_imm(0, r, r, 1))
    b.place(done)
    return r


def _nans(b: Builder, special: ir.Label) -> None:
    """When either parked operand is an invalid encoding (the default NaN) or a NaN (the chosen one,
    quietened), that is the result."""
    default, take_a, take_c = ir.Label(), ir.Label(), ir.Label()
    for se_slot, m_slot in ((_A_SE, _A_M), (_C_SE, _C_M)):
        e = _exponent(b, _load(b, se_slot))
        valid = b.branch(ir.cbz, 1, e)
        b.emit(ir.tbz(_load(b, m_slot), 63, default))
        b.place(valid)
    ra = _nan_rank(b, _load(b, _A_SE), _load(b, _A_M))
    rc = _nan_rank(b, _load(b, _C_SE), _load(b, _C_M))
    t = b.temp()
    b.emit(ir.orr_reg(0, t, ra, rc))
    numbers = b.branch(ir.cbz, 1, t)
    # The higher rank wins; between equals the larger significand, then the smaller se (the positive one).
    b.emit(ir.subs_reg(0, ZR, ra, rc))
    b.emit(ir.b_cond(Cond.HI, take_a))
    b.emit(ir.b_cond(Cond.LO, take_c))
    b.emit(ir.subs_reg(1, ZR, _load(b, _A_M), _load(b, _C_M)))
    b.emit(ir.b_cond(Cond.HI, take_a))
    b.emit(ir.b_cond(Cond.LO, take_c))
    b.emit(ir.subs_reg(0, ZR, _load(b, _A_SE), _load(b, _C_SE)))
    b.emit(ir.b_cond(Cond.LS, take_a))
    for label, (se_slot, m_slot) in ((take_c, (_C_SE, _C_M)), (take_a, (_A_SE, _A_M))):
        b.place(label)
        m = _load(b, m_slot)
        b.emit(ir.orr_imm(1, m, m, QUIET_BIT))
        _result(b, _load(b, se_slot), m, special)
    b.place(default)
    _result_constant(b, *DEFAULT_NAN, special)
    b.place(numbers)


def _finish(b: Builder, r_se: int, r_m: int, special: ir.Label) -> tuple[int, int]:
    """The result registers: the rounded (r_se, r_m), or the special result parked before ``special``."""
    se, m = b.temp(), b.temp()
    b.emit(ir.orr_reg(0, se, ZR, r_se))
    b.emit(ir.orr_reg(1, m, ZR, r_m))
    done = b.branch(ir.b)
    b.place(special)
    b.emit(ir.ldr_uimm(3, se, abi.STATE, _R_SE))
    b.emit(ir.ldr_uimm(3, m, abi.STATE, _R_M))
    b.place(done)
    return se, m


def _exponent(b: Builder, se: int) -> int:
    e = b.temp()
    b.emit(ir.and_imm(0, e, se, EXP_MASK))
    return e


def _is_zero(b: Builder, se: int, m: int) -> int:
    """A register that is zero exactly when (se, m) is a zero of either sign."""
    t = b.temp()
    b.emit(ir.and_imm(0, t, se, EXP_MASK))
    b.emit(ir.orr_reg(1, t, t, m))
    return t


def _product_sign(b: Builder) -> int:
    """The sign of a product or quotient of the parked operands; also parked."""
    sign, t = _load(b, _A_SE), _load(b, _C_SE)
    b.emit(ir.eor_reg(0, sign, sign, t))
    b.emit(ir.ubfx(0, sign, sign, 15, 1))
    _save(b, _SIGN, sign)
    return sign


def _normalised(b: Builder, se_slot: int, m_slot: int) -> tuple[int, int]:
    """(exponent, significand) of a parked nonzero operand, a denormal's (or pseudo-denormal's) leading
    one moved to bit 63 and its exponent lowered to match."""
    e, m = _exponent(b, _load(b, se_slot)), _load(b, m_slot)
    done = b.branch(ir.cbnz, 1, e)
    k = b.temp()
    b.emit(ir.clz(1, k, m))
    b.emit(ir.lslv(1, m, m, k))
    b.emit(ir.sub_reg(1, e, b.constant(1, 1), k))
    b.place(done)
    return e, m


# --- the operations -------------------------------------------------------------------------------

def add(b: Builder, a_se: int, a_m: int, c_se: int, c_m: int, subtract: bool = False) -> tuple[int, int]:
    """a + c, or a - c with ``subtract`` (fadd, fsub and their forms)."""
    special = ir.Label()
    _park(b, a_se, a_m, c_se, c_m)
    _nans(b, special)
    ase, cse = _load(b, _A_SE), _load(b, _C_SE)
    sa, sc = b.temp(), b.temp()
    b.emit(ir.ubfx(0, sa, ase, 15, 1))
    b.emit(ir.ubfx(0, sc, cse, 15, 1))
    if subtract:
        b.emit(ir.eor_imm(0, sc, sc, 1))
    ea, ec = _exponent(b, ase), _exponent(b, cse)
    # Infinities: inf - inf is invalid, else the infinity wins (a as it is, or c with its effective sign).
    finite, a_wins = ir.Label(), ir.Label()
    b.compare_imm(0, ea, EXP_MASK)
    a_finite = b.branch(ir.b_cond, Cond.NE)
    b.compare_imm(0, ec, EXP_MASK)
    b.emit(ir.b_cond(Cond.NE, a_wins))
    b.emit(ir.subs_reg(0, ZR, sa, sc))
    b.emit(ir.b_cond(Cond.EQ, a_wins))
    _result_constant(b, *DEFAULT_NAN, special)
    b.place(a_wins)
    _result(b, _load(b, _A_SE), _load(b, _A_M), special)
    b.place(a_finite)
    b.compare_imm(0, ec, EXP_MASK)
    b.emit(ir.b_cond(Cond.NE, finite))
    _result_signed(b, sc, True, special)
    b.place(finite)
    _save(b, _SIGN, sa)
    _save(b, _SIGN_C, sc)
    b.emit(ir.eor_reg(0, sa, sa, sc))
    _save(b, _DIFFER, sa)
    # Order as the reference does: by exponent, then significand; the result has the larger one's
    # exponent and sign (exponent 0 counts as 1 for the alignment).
    am, cm = _load(b, _A_M), _load(b, _C_M)
    b.emit(ir.subs_reg(0, ZR, ea, ec))
    decided = b.branch(ir.b_cond, Cond.NE)
    b.emit(ir.subs_reg(1, ZR, am, cm))
    b.place(decided)
    swap = b.temp()
    b.emit(ir.cset(0, swap, Cond.LO))  # c is the larger
    for e in (ea, ec):
        b.emit(ir.subs_imm(0, ZR, e, 0))
        b.emit(ir.csinc(0, e, e, ZR, Cond.NE))
    b.emit(ir.subs_imm(0, ZR, swap, 0))
    exp, d, big, hi = b.temp(), b.temp(), b.temp(), b.temp()
    b.emit(ir.csel(0, exp, ec, ea, Cond.NE))
    b.emit(ir.sub_reg(0, d, ea, ec))
    b.emit(ir.csneg(0, d, d, d, Cond.EQ))
    b.emit(ir.csel(1, big, cm, am, Cond.NE))
    b.emit(ir.csel(1, hi, am, cm, Cond.NE))
    sign = _load(b, _SIGN_C)
    b.emit(ir.csel(0, sign, sign, _load(b, _SIGN), Cond.NE))
    _save(b, _SIGN, sign)
    lo = b.temp()
    b.mov_imm(1, lo, 0)
    aligned = b.branch(ir.cbz, 1, d)
    _shift_right_jamming_128(b, hi, lo, d)
    b.place(aligned)
    pack = ir.Label()
    subtracting = b.branch(ir.cbnz, 1, _load(b, _DIFFER))
    # Same signs: add; a carry out shifts right by one (jamming) into the next binade.
    b.emit(ir.adds_reg(1, hi, big, hi))
    b.emit(ir.b_cond(Cond.LO, pack))
    # The reference drops the carry of two pseudo-denormals (both exponents 0): so does this.
    sticky = _load(b, _A_SE)
    b.emit(ir.orr_reg(0, sticky, sticky, _load(b, _C_SE)))
    b.emit(ir.and_imm(0, sticky, sticky, EXP_MASK))
    b.emit(ir.cbz(1, sticky, pack))
    b.emit(ir.and_imm(1, sticky, lo, 1))
    b.emit(ir.extr(1, lo, hi, lo, 1))
    b.emit(ir.orr_reg(1, lo, lo, sticky))
    b.emit(ir.extr(1, hi, b.constant(1, 1), hi, 1))
    b.emit(ir.add_imm(0, exp, exp, 1))
    b.emit(ir.b(pack))
    b.place(subtracting)
    # Different signs: big - small over 128 bits; an exact zero is -0 only when rounding down.
    b.emit(ir.subs_reg(1, lo, ZR, lo))
    b.emit(ir.sbc(1, hi, big, hi))
    t = b.temp()
    b.emit(ir.orr_reg(1, t, hi, lo))
    b.emit(ir.cbnz(1, t, pack))
    # (Only from equal exponents: a pseudo-denormal minus the smallest normal keeps the sign.)
    b.emit(ir.eor_reg(0, t, _load(b, _A_SE), _load(b, _C_SE)))
    b.emit(ir.and_imm(0, t, t, EXP_MASK))
    b.emit(ir.cbnz(1, t, pack))
    cw = _control_word(b)
    b.emit(ir.ubfx(0, cw, cw, 10, 2))
    b.emit(ir.subs_imm(0, ZR, cw, 1))
    b.emit(ir.cset(0, t, Cond.EQ))
    _save(b, _SIGN, t)
    b.place(pack)
    r_se, r_m = round_pack(b, exp, hi, lo)
    return _finish(b, r_se, r_m, special)


def mul(b: Builder, a_se: int, a_m: int, c_se: int, c_m: int) -> tuple[int, int]:
    """a * c (fmul and its forms)."""
    special = ir.Label()
    _park(b, a_se, a_m, c_se, c_m)
    _nans(b, special)
    sign = _product_sign(b)
    # inf * 0 is invalid, inf * x infinite; 0 * x is zero.
    infinite, zero = ir.Label(), ir.Label()
    for x, y in ((_A_SE, _C_SE), (_C_SE, _A_SE)):
        b.compare_imm(0, _exponent(b, _load(b, x)), EXP_MASK)
        not_inf = b.branch(ir.b_cond, Cond.NE)
        y_m = _A_M if y == _A_SE else _C_M
        b.emit(ir.cbnz(1, _is_zero(b, _load(b, y), _load(b, y_m)), infinite))
        _result_constant(b, *DEFAULT_NAN, special)
        b.place(not_inf)
    b.emit(ir.cbz(1, _is_zero(b, _load(b, _A_SE), _load(b, _A_M)), zero))
    b.emit(ir.cbz(1, _is_zero(b, _load(b, _C_SE), _load(b, _C_M)), zero))
    _signed_results(b, sign, infinite, zero, special)
    ea, ma = _normalised(b, _A_SE, _A_M)
    ec, mc = _normalised(b, _C_SE, _C_M)
    exp, hi, lo = b.temp(), b.temp(), b.temp()
    b.emit(ir.add_reg(1, exp, ea, ec))
    b.emit(ir.sub_reg(1, exp, exp, b.constant(1, 0x3FFE)))
    b.emit(ir.umulh(hi, ma, mc))
    b.emit(ir.madd(1, lo, ma, mc, ZR))
    r_se, r_m = round_pack(b, exp, hi, lo)
    return _finish(b, r_se, r_m, special)


def _signed_results(b: Builder, sign: int, infinite: ir.Label, zero: ir.Label, special: ir.Label) -> None:
    """The code at ``infinite`` and ``zero`` (an infinity or a zero with the sign ``sign``), jumped over."""
    main = b.branch(ir.b)
    b.place(infinite)
    _result_signed(b, sign, True, special)
    b.place(zero)
    _result_signed(b, sign, False, special)
    b.place(main)


def div(b: Builder, a_se: int, a_m: int, c_se: int, c_m: int) -> tuple[int, int]:
    """a / c (fdiv and its forms)."""
    special = ir.Label()
    _park(b, a_se, a_m, c_se, c_m)
    _nans(b, special)
    sign = _product_sign(b)
    infinite, zero, invalid = ir.Label(), ir.Label(), ir.Label()
    ec = _exponent(b, _load(b, _C_SE))
    b.compare_imm(0, _exponent(b, _load(b, _A_SE)), EXP_MASK)
    a_finite = b.branch(ir.b_cond, Cond.NE)
    b.compare_imm(0, ec, EXP_MASK)
    b.emit(ir.b_cond(Cond.EQ, invalid))  # inf / inf
    b.emit(ir.b(infinite))
    b.place(a_finite)
    b.compare_imm(0, ec, EXP_MASK)
    b.emit(ir.b_cond(Cond.EQ, zero))  # x / inf
    c_nonzero = b.branch(ir.cbnz, 1, _is_zero(b, _load(b, _C_SE), _load(b, _C_M)))
    b.emit(ir.cbz(1, _is_zero(b, _load(b, _A_SE), _load(b, _A_M)), invalid))  # 0 / 0
    b.emit(ir.b(infinite))  # x / 0
    b.place(invalid)
    _result_constant(b, *DEFAULT_NAN, special)
    b.place(c_nonzero)
    b.emit(ir.cbz(1, _is_zero(b, _load(b, _A_SE), _load(b, _A_M)), zero))
    _signed_results(b, sign, infinite, zero, special)
    ea, ma = _normalised(b, _A_SE, _A_M)
    ec, mc = _normalised(b, _C_SE, _C_M)
    exp = b.temp()
    b.emit(ir.sub_reg(1, exp, ea, ec))
    b.emit(ir.add_reg(1, exp, exp, b.constant(1, 0x3FFE)))
    # Quotient bits by shift and subtract, keeping the remainder r < mc: 64 bits into hi (the first is
    # known when ma >= mc), then one more for lo's top bit; a nonzero remainder is the sticky bit.
    r, hi, n = b.temp(), b.temp(), b.temp()
    b.emit(ir.orr_reg(1, r, ZR, ma))
    b.mov_imm(1, hi, 0)
    b.mov_imm(0, n, 65)
    b.emit(ir.subs_reg(1, ZR, ma, mc))
    loop = b.branch(ir.b_cond, Cond.LO)
    b.emit(ir.sub_reg(1, r, ma, mc))
    b.mov_imm(1, hi, 1)
    b.mov_imm(0, n, 64)
    b.emit(ir.add_imm(1, exp, exp, 1))
    b.place(loop)
    top = b.label()
    bit = b.temp()
    b.emit(ir.adds_reg(1, r, r, r))
    b.emit(ir.cset(0, bit, Cond.HS))  # the bit shifted out of r counts
    b.emit(ir.subs_reg(1, ZR, r, mc))
    b.emit(ir.csinc(0, bit, bit, bit, Cond.LO))
    zero_bit = b.branch(ir.cbz, 1, bit)
    b.emit(ir.sub_reg(1, r, r, mc))
    b.place(zero_bit)
    b.emit(ir.subs_imm(0, ZR, bit, 0))
    lo = b.temp()
    b.emit(ir.cset(1, lo, Cond.NE))
    b.emit(ir.sub_imm(0, n, n, 1))
    last = b.branch(ir.cbz, 1, n)
    b.emit(ir.orr_reg(1, hi, lo, hi, Shift.LSL, 1))
    b.emit(ir.b(top))
    b.place(last)
    b.emit(ir.lsl_imm(1, lo, lo, 63))
    b.emit(ir.subs_imm(1, ZR, r, 0))
    b.emit(ir.cset(1, r, Cond.NE))
    b.emit(ir.orr_reg(1, lo, lo, r))
    r_se, r_m = round_pack(b, exp, hi, lo)
    return _finish(b, r_se, r_m, special)
