"""x87 conversions and comparisons, exact to the bit, as IR (used by :mod:`lower_x87`).

An 80-bit value is a pair of general-purpose registers ``(se, m)``: sign and
biased exponent in the low 16 bits of ``se``, the significand with its
explicit integer bit 63 in ``m``.  Every function emits inline code and
returns new registers; NZCV is clobbered (the lowering saves the guest's flags
around it when they are live).

The reference is the x87 of the reference engine (QEMU's softfloat ``floatx80``
in unicorn), which differs from the SDM in two places that matter here:

- NaNs convert with their payload and *without being quietened* (fld m64 of a
  signalling NaN stays signalling; fst m64 keeps the payload's high bits, and
  a payload that does not survive the narrowing gives the default NaN);
- invalid encodings (an exponent with the integer bit clear: unnormals,
  pseudo-infinities, pseudo-NaNs) convert to the default NaN and compare
  unordered.

Rounding follows the control word's RC (bits 10-11: nearest-even, down, up,
toward zero); conversions to float32/float64 round once, from the exact value,
including results that underflow to denormals (the significand is shifted
right with a sticky bit first), and overflow to infinity or the largest finite
value as RC says.  Conversions to integers give the "integer indefinite"
(the most negative value) for NaNs, infinities, invalid encodings and results
out of range.
"""

from __future__ import annotations

from dataclasses import dataclass

from fexaot_tool.translate import ir
from fexaot_tool.translate.a64 import ZR, Cond, Shift
from fexaot_tool.translate.builder import Builder

EXP_MASK = 0x7FFF
INTEGER_BIT = 1 << 63


# --- to 80 bits (exact) ------------------------------------------------------------------------

@dataclass(frozen=True)
class _Format:
    """An IEEE binary format as the conversions need it."""

    width: int  # 32 or 64
    fraction: int  # fraction bits: 23 or 52
    exponent_bias_delta: int  # 16383 - bias
    round_bits: int  # bits below the result's last when the significand's integer bit is at bit 62
    max_exponent: int  # the largest biased exponent a result can have before rounding (all ones - 2)
    default_nan: int

    @property
    def exponent_ones(self) -> int:
        return (1 << (self.width - 1 - self.fraction)) - 1


SINGLE = _Format(32, 23, 16383 - 127, 39, 0xFD, 0xFFC00000)
DOUBLE = _Format(64, 52, 16383 - 1023, 10, 0x7FD, 0xFFF8000000000000)


def _from_float(b: Builder, x: int, fmt: _Format) -> tuple[int, int]:
    """fld m32/m64: exact; denormals normalised; NaN payloads kept (not quietened, as the reference)."""
    sf = 1 if fmt.width == 64 else 0
    se, m, e = b.temp(), b.temp(), b.temp()
    b.emit(ir.ubfx(sf, e, x, fmt.fraction, fmt.width - 1 - fmt.fraction))
    # Normal, infinity and NaN: the fraction under an explicit integer bit.
    b.emit(ir.lsl_imm(1, m, x, 64 - fmt.fraction - 1))  # float32: bits 32-63 of x are shifted out
    b.emit(ir.orr_imm(1, m, m, INTEGER_BIT))
    small = b.branch(ir.cbz, 1, e)
    b.compare_imm(0, e, fmt.exponent_ones)
    special = b.branch(ir.b_cond, Cond.EQ)
    b.emit(ir.add_reg(0, se, e, b.constant(0, fmt.exponent_bias_delta)))
    done = b.branch(ir.b)
    b.place(special)
    b.mov_imm(0, se, EXP_MASK)
    b.emit(ir.b(done))
    b.place(small)
    fraction = b.temp()
    b.emit(ir.ubfx(1, fraction, x, 0, fmt.fraction))
    zero = b.branch(ir.cbz, 1, fraction)
    # Denormal: normalise so the leading one is the integer bit.
    k = b.temp()
    b.emit(ir.clz(1, k, fraction))
    b.emit(ir.lslv(1, m, fraction, k))
    b.emit(ir.sub_reg(0, se, b.constant(0, fmt.exponent_bias_delta + 64 - fmt.fraction), k))
    b.emit(ir.b(done))
    b.place(zero)
    b.mov_imm(1, m, 0)
    b.mov_imm(0, se, 0)
    b.place(done)
    sign = b.temp()
    b.emit(ir.ubfx(sf, sign, x, fmt.width - 1, 1))
    b.emit(ir.orr_reg(0, se, se, sign, Shift.LSL, 15))
    return se, m


def from_f32(b: Builder, w: int) -> tuple[int, int]:
    return _from_float(b, w, SINGLE)


def from_f64(b: Builder, x: int) -> tuple[int, int]:
    return _from_float(b, x, DOUBLE)


def from_int(b: Builder, x: int) -> tuple[int, int]:
    """fild: a signed 64-bit integer, exactly."""
    se, m = b.temp(), b.temp()
    zero = b.branch(ir.cbz, 1, x)
    b.emit(ir.subs_imm(1, ZR, x, 0))
    magnitude = b.temp()
    b.emit(ir.csneg(1, magnitude, x, x, Cond.GE))  # 2^63 for the most negative value, as unsigned
    k = b.temp()
    b.emit(ir.clz(1, k, magnitude))
    b.emit(ir.lslv(1, m, magnitude, k))
    b.emit(ir.sub_reg(0, se, b.constant(0, 16383 + 63), k))
    sign = b.temp()
    b.emit(ir.lsr_imm(1, sign, x, 63))
    b.emit(ir.orr_reg(0, se, se, sign, Shift.LSL, 15))
    done = b.branch(ir.b)
    b.place(zero)
    b.mov_imm(1, m, 0)
    b.mov_imm(0, se, 0)
    b.place(done)
    return se, m


# --- from 80 bits (rounded) --------------------------------------------------------------------

def _increment(b: Builder, cw: int, se: int, half: int, below: int) -> int:
    """The increment that rounds a significand whose discarded bits are ``below`` (a mask of low ones)
    by RC for a value whose sign is bit 15 of ``se``: half of the last place for nearest, all of
    ``below`` toward the value's infinity, 0 otherwise."""
    rc, inc = b.temp(), b.temp()
    b.emit(ir.ubfx(0, rc, cw, 10, 2))
    directed = b.branch(ir.cbnz, 1, rc)
    b.mov_imm(1, inc, half)
    done = b.branch(ir.b)
    b.place(directed)
    # Toward +inf (RC 2) for a positive value, toward -inf (RC 1) for a negative one: RC + sign == 2.
    t = b.temp()
    b.emit(ir.ubfx(0, t, se, 15, 1))
    b.emit(ir.add_reg(0, t, t, rc))
    b.emit(ir.subs_imm(0, ZR, t, 2))
    b.emit(ir.csetm(1, inc, Cond.EQ))
    if below != (1 << 64) - 1:
        b.emit(ir.and_imm(1, inc, inc, below))
    b.place(done)
    return inc


def _nearest(b: Builder, cw: int) -> ir.Label:
    """A branch to the returned label unless RC is round-to-nearest."""
    rc = b.temp()
    b.emit(ir.ubfx(0, rc, cw, 10, 2))
    return b.branch(ir.cbnz, 1, rc)


def shift_right_jamming(b: Builder, sig: int, n: int) -> None:
    """sig >>= n with every bit shifted out ORed into bit 0 (n >= 1, any size)."""
    b.compare_imm(1, n, 63)
    big = b.branch(ir.b_cond, Cond.HI)
    lost = b.temp()
    b.emit(ir.sub_reg(0, lost, b.constant(0, 64), n))
    b.emit(ir.lslv(1, lost, sig, lost))
    b.emit(ir.lsrv(1, sig, sig, n))
    b.emit(ir.subs_imm(1, ZR, lost, 0))
    sticky = b.temp()
    b.emit(ir.cset(1, sticky, Cond.NE))
    b.emit(ir.orr_reg(1, sig, sig, sticky))
    done = b.branch(ir.b)
    b.place(big)
    b.emit(ir.subs_imm(1, ZR, sig, 0))
    b.emit(ir.cset(1, sig, Cond.NE))
    b.place(done)


def _sign_into(b: Builder, out: int, se: int, width: int) -> None:
    """out |= the sign (bit 15 of se) at bit ``width - 1``."""
    sign = b.temp()
    b.emit(ir.ubfx(0, sign, se, 15, 1))
    b.emit(ir.orr_reg(1, out, out, sign, Shift.LSL, width - 1))


def _round_pack(b: Builder, fmt: _Format, se: int, exp: int, sig: int, cw: int, out: int) -> None:
    """out := the IEEE value of the sign (bit 15 of se), biased exponent ``exp`` (signed; one less than the
    field: the integer bit adds it) and significand ``sig`` (integer bit at 62, a sticky bit at 0), rounded
    by RC.  ``exp`` and ``sig`` are consumed."""
    below = (1 << fmt.round_bits) - 1
    half = 1 << (fmt.round_bits - 1)
    inc = _increment(b, cw, se, half, below)
    b.compare_imm(1, exp, fmt.max_exponent)
    in_range = b.branch(ir.b_cond, Cond.LO)  # unsigned: negative exponents are not in range
    tiny = b.branch(ir.tbnz, exp, 63)
    overflow = b.branch(ir.b_cond, Cond.NE)  # above the largest
    b.emit(ir.add_reg(1, out, sig, inc))
    b.emit(ir.tbnz(out, 63, overflow))  # rounds up into the next binade: overflow too
    b.emit(ir.b(in_range))
    b.place(overflow)
    # Infinity when rounding goes that way (any increment), else the largest finite value.
    b.emit(ir.subs_imm(1, ZR, inc, 0))
    b.emit(ir.cset(1, out, Cond.EQ))
    b.emit(ir.sub_reg(1, out, b.constant(1, fmt.exponent_ones << fmt.fraction), out))
    done = b.branch(ir.b)
    b.place(tiny)
    b.emit(ir.sub_reg(1, exp, ZR, exp))
    shift_right_jamming(b, sig, exp)
    b.mov_imm(1, exp, 0)
    b.place(in_range)
    b.emit(ir.and_imm(1, out, sig, below))  # the discarded bits, for the tie test
    b.emit(ir.add_reg(1, sig, sig, inc))
    b.emit(ir.lsr_imm(1, sig, sig, fmt.round_bits))
    # A tie under nearest-even: clear the last bit.
    not_tie = _nearest(b, cw)
    b.compare_imm(1, out, half)
    b.emit(ir.b_cond(Cond.NE, not_tie))
    b.emit(ir.and_imm(1, sig, sig, ~1 & (1 << 64) - 1))
    b.place(not_tie)
    b.emit(ir.add_reg(1, out, sig, exp, Shift.LSL, fmt.fraction))
    b.place(done)
    _sign_into(b, out, se, fmt.width)


def _to_float(b: Builder, se: int, m: int, cw: int, fmt: _Format) -> int:
    """fst m32/m64."""
    out, e = b.temp(), b.temp()
    b.emit(ir.and_imm(0, e, se, EXP_MASK))
    default_nan, finite = ir.Label(), ir.Label()
    b.emit(ir.cbz(1, e, finite))
    b.emit(ir.tbz(m, 63, default_nan))  # an invalid encoding
    b.compare_imm(0, e, EXP_MASK)
    b.emit(ir.b_cond(Cond.NE, finite))
    # Infinity or NaN: the payload's top bits under the all-ones exponent, keeping a signalling NaN.
    b.emit(ir.lsl_imm(1, out, m, 1))
    infinity = b.branch(ir.cbz, 1, out)
    b.emit(ir.lsr_imm(1, out, out, 64 - fmt.fraction))
    b.emit(ir.cbz(1, out, default_nan))  # a NaN whose payload does not survive
    b.place(infinity)
    b.emit(ir.orr_imm(1, out, out, fmt.exponent_ones << fmt.fraction))
    _sign_into(b, out, se, fmt.width)
    done = b.branch(ir.b)
    b.place(default_nan)
    b.mov_imm(1, out, fmt.default_nan)
    b.emit(ir.b(done))
    b.place(finite)
    sig, exp = b.temp(), b.temp()
    b.emit(ir.and_imm(1, sig, m, 1))
    b.emit(ir.orr_reg(1, sig, sig, m, Shift.LSR, 1))
    # exp = e - (bias delta + 1), except for zero (e == 0 and m == 0), which packs as 0.
    b.emit(ir.sub_reg(1, exp, e, b.constant(1, fmt.exponent_bias_delta + 1)))
    b.emit(ir.orr_reg(1, out, e, m))
    b.emit(ir.subs_imm(1, ZR, out, 0))
    b.emit(ir.csel(1, exp, exp, ZR, Cond.NE))
    _round_pack(b, fmt, se, exp, sig, cw, out)
    b.place(done)
    return out


def to_f32(b: Builder, se: int, m: int, cw: int) -> int:
    return _to_float(b, se, m, cw, SINGLE)


def to_f64(b: Builder, se: int, m: int, cw: int) -> int:
    return _to_float(b, se, m, cw, DOUBLE)


def to_int(b: Builder, se: int, m: int, cw: int, bits: int) -> int:
    """fist/fistp m16/m32/m64: rounded by RC; the integer indefinite (1 << (bits - 1)) for NaN,
    infinity, an invalid encoding or a result out of range.  The result is in the low ``bits`` bits."""
    out, e = b.temp(), b.temp()
    b.emit(ir.and_imm(0, e, se, EXP_MASK))
    indefinite = ir.Label()
    zero_exp = b.branch(ir.cbz, 1, e)
    b.emit(ir.tbz(m, 63, indefinite))
    b.place(zero_exp)
    # The binary point sits `shift` bits above m's bit 0.
    shift, integer, fraction = b.temp(), b.temp(), b.temp()
    b.emit(ir.sub_reg(1, shift, b.constant(1, 16383 + 63), e))
    b.emit(ir.tbnz(shift, 63, indefinite))  # >= 2^64, infinity, NaN
    whole = b.branch(ir.cbz, 1, shift)
    b.compare_imm(1, shift, 64)
    partial = b.branch(ir.b_cond, Cond.LO)
    b.mov_imm(1, integer, 0)
    exactly = b.branch(ir.b_cond, Cond.EQ)
    b.emit(ir.subs_imm(1, ZR, m, 0))
    b.emit(ir.cset(1, fraction, Cond.NE))  # below a half: only whether it is zero counts
    rounded = b.branch(ir.b)
    b.place(exactly)
    b.emit(ir.mov_reg(1, fraction, m))
    b.emit(ir.b(rounded))
    b.place(whole)
    b.emit(ir.mov_reg(1, integer, m))
    b.mov_imm(1, fraction, 0)
    b.emit(ir.b(rounded))
    b.place(partial)
    back = b.temp()
    b.emit(ir.sub_reg(0, back, b.constant(0, 64), shift))
    b.emit(ir.lslv(1, fraction, m, back))
    b.emit(ir.lsrv(1, integer, m, shift))
    b.place(rounded)
    # fraction holds the discarded bits with the binary point above bit 63.
    inc = _increment(b, cw, se, 1 << 63, (1 << 64) - 1)
    no_carry = ir.Label()
    directed = _nearest(b, cw)
    b.emit(ir.subs_reg(1, ZR, fraction, inc))  # inc is the half here
    up = b.branch(ir.b_cond, Cond.HI)
    b.emit(ir.b_cond(Cond.NE, no_carry))
    b.emit(ir.tbz(integer, 0, no_carry))
    b.emit(ir.b(up))
    b.place(directed)
    b.emit(ir.cbz(1, inc, no_carry))
    b.emit(ir.cbz(1, fraction, no_carry))
    b.place(up)
    b.emit(ir.add_imm(1, integer, integer, 1))
    b.place(no_carry)
    limit = b.constant(1, 1 << (bits - 1))
    b.emit(ir.subs_reg(1, ZR, integer, limit))
    negative = b.branch(ir.tbnz, se, 15)
    b.emit(ir.b_cond(Cond.HS, indefinite))
    b.emit(ir.mov_reg(1, out, integer))
    done = b.branch(ir.b)
    b.place(negative)
    b.emit(ir.b_cond(Cond.HI, indefinite))
    b.emit(ir.sub_reg(1, out, ZR, integer))
    b.emit(ir.b(done))
    b.place(indefinite)
    b.emit(ir.mov_reg(1, out, b.constant(1, 1 << (bits - 1))))
    b.place(done)
    return out


# --- compare and classify ----------------------------------------------------------------------

def _branch_if_unordered(b: Builder, se: int, m: int, unordered: ir.Label) -> None:
    """To ``unordered`` when (se, m) is a NaN or an invalid encoding."""
    e = b.temp()
    b.emit(ir.and_imm(0, e, se, EXP_MASK))
    ordered = b.branch(ir.cbz, 1, e)
    b.emit(ir.tbz(m, 63, unordered))
    b.compare_imm(0, e, EXP_MASK)
    b.emit(ir.b_cond(Cond.NE, ordered))
    t = b.temp()
    b.emit(ir.lsl_imm(1, t, m, 1))
    b.emit(ir.cbnz(1, t, unordered))
    b.place(ordered)


def compare(b: Builder, a_se: int, a_m: int, c_se: int, c_m: int) -> int:
    """fcom/fucom/fcomi/fucomi: bits 0/1/2 = CF/PF/ZF (C0/C2/C3): greater 0, less 1, equal 4, unordered 7."""
    r = b.temp()
    unordered = ir.Label()
    _branch_if_unordered(b, a_se, a_m, unordered)
    _branch_if_unordered(b, c_se, c_m, unordered)
    sign = b.temp()
    b.emit(ir.ubfx(0, sign, a_se, 15, 1))
    t = b.temp()
    b.emit(ir.eor_reg(0, t, a_se, c_se))
    equal = ir.Label()
    signs_differ = b.branch(ir.tbnz, t, 15)
    # Same sign: compare (se, m) as one 80-bit unsigned number, then let the sign decide.
    b.emit(ir.subs_reg(0, ZR, a_se, c_se))
    decided = b.branch(ir.b_cond, Cond.NE)
    b.emit(ir.subs_reg(1, ZR, a_m, c_m))
    b.emit(ir.b_cond(Cond.EQ, equal))
    b.place(decided)
    b.emit(ir.cset(0, r, Cond.LO))
    b.emit(ir.eor_reg(0, r, r, sign))
    done = b.branch(ir.b)
    b.place(signs_differ)
    # Different signs: equal only for two zeros, else the negative one is less.
    u = b.temp()
    b.emit(ir.orr_reg(0, u, a_se, c_se))
    b.emit(ir.and_imm(0, u, u, EXP_MASK))
    b.emit(ir.orr_reg(1, u, u, a_m))
    b.emit(ir.orr_reg(1, u, u, c_m))
    b.emit(ir.cbz(1, u, equal))
    b.emit(ir.mov_reg(0, r, sign))
    b.emit(ir.b(done))
    b.place(equal)
    b.mov_imm(0, r, 4)
    b.emit(ir.b(done))
    b.place(unordered)
    b.mov_imm(0, r, 7)
    b.place(done)
    return r


def classify(b: Builder, se: int, m: int) -> int:
    """fxam of a full register: bits 0/1/2 = C0/C2/C3: NaN 1, normal 2, infinity 3, zero 4, denormal 6.

    As the reference: an exponent of all ones is an infinity only with the significand 1 << 63 (else a
    NaN), any other nonzero exponent is "normal" (unnormals included), exponent 0 is a zero or a denormal.
    """
    r, e = b.temp(), b.temp()
    b.emit(ir.and_imm(0, e, se, EXP_MASK))
    small = b.branch(ir.cbz, 1, e)
    b.compare_imm(0, e, EXP_MASK)
    special = b.branch(ir.b_cond, Cond.EQ)
    b.mov_imm(0, r, 2)
    done = b.branch(ir.b)
    b.place(special)
    t = b.temp()
    b.emit(ir.eor_imm(1, t, m, INTEGER_BIT))
    b.emit(ir.subs_imm(1, ZR, t, 0))
    b.emit(ir.cset(0, r, Cond.EQ))
    b.emit(ir.lsl_imm(0, r, r, 1))
    b.emit(ir.orr_imm(0, r, r, 1))  # 1 NaN, 3 infinity
    b.emit(ir.b(done))
    b.place(small)
    b.emit(ir.subs_imm(1, ZR, m, 0))
    b.emit(ir.cset(0, r, Cond.NE))  # 0 zero, 1 denormal
    b.emit(ir.lsl_imm(0, r, r, 1))
    b.emit(ir.orr_imm(0, r, r, 4))
    b.place(done)
    return r
