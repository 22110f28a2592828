"""AArch64 instruction encoders: one small function per instruction form, named like it.

In the spirit of box64's ``arm64_emitter.h``: every function returns the 32-bit
word of one instruction (Arm ARM, "A64 Base Instruction Descriptions"); field
names follow the manual (sf, Rd, Rn, Rm, imm12, ...).  ``sf`` selects the 64-bit
(1) or 32-bit (0) form.  Register number 31 means XZR/WZR or SP as the form's
description says.  Branch offsets are in bytes, relative to the instruction.

Nothing here checks more than field ranges: the translator is the only caller,
and ``tests/test_a64_encoder.py`` round-trips every form through capstone and
GNU as.
"""

from __future__ import annotations

import enum

ZR = 31  # XZR / WZR in forms where 31 is the zero register
SP = 31  # SP in forms where 31 is the stack pointer


class Cond(enum.IntEnum):
    """Condition codes (Arm ARM C1.2.4)."""

    EQ = 0
    NE = 1
    HS = 2  # C set (unsigned >=)
    LO = 3  # C clear
    MI = 4
    PL = 5
    VS = 6
    VC = 7
    HI = 8  # C set and Z clear
    LS = 9  # C clear or Z set
    GE = 10
    LT = 11
    GT = 12
    LE = 13
    AL = 14

    def invert(self) -> Cond:
        return Cond(self ^ 1)


class Shift(enum.IntEnum):
    LSL = 0
    LSR = 1
    ASR = 2
    ROR = 3


# NZCV bit masks as ``rmif`` and ``ccmp`` take them (N=8, Z=4, C=2, V=1).
N_BIT, Z_BIT, C_BIT, V_BIT = 8, 4, 2, 1


def _check(value: int, bits: int, what: str) -> int:
    if not 0 <= value < (1 << bits):
        raise ValueError(f"{what} {value} does not fit in {bits} bits")
    return value


def _offset(offset: int, bits: int, scale: int = 4) -> int:
    """A signed, scaled branch/literal offset field."""
    if offset % scale:
        raise ValueError(f"offset {offset} is not a multiple of {scale}")
    value = offset // scale
    if not -(1 << (bits - 1)) <= value < (1 << (bits - 1)):
        raise ValueError(f"offset {offset} out of range for a {bits}-bit field")
    return value & ((1 << bits) - 1)


# --- Data processing: immediate -----------------------------------------------------

def _addsub_imm(op: int, sf: int, rd: int, rn: int, imm12: int, lsl12: bool) -> int:
    return op | sf << 31 | int(lsl12) << 22 | _check(imm12, 12, "imm12") << 10 | rn << 5 | rd


def add_imm(sf: int, rd: int, rn: int, imm12: int, lsl12: bool = False) -> int:
    return _addsub_imm(0x11000000, sf, rd, rn, imm12, lsl12)


def adds_imm(sf: int, rd: int, rn: int, imm12: int, lsl12: bool = False) -> int:
    return _addsub_imm(0x31000000, sf, rd, rn, imm12, lsl12)


def sub_imm(sf: int, rd: int, rn: int, imm12: int, lsl12: bool = False) -> int:
    return _addsub_imm(0x51000000, sf, rd, rn, imm12, lsl12)


def subs_imm(sf: int, rd: int, rn: int, imm12: int, lsl12: bool = False) -> int:
    return _addsub_imm(0x71000000, sf, rd, rn, imm12, lsl12)


def encode_bitmask(value: int, width: int) -> tuple[int, int, int] | None:
    """(N, immr, imms) of a logical immediate, or None if ``value`` has no encoding.

    A logical immediate is a rotated run of ones replicated in elements of 2,
    4, ..., 64 bits (Arm ARM "DecodeBitMasks"); all-zeros and all-ones have none.
    """
    mask = (1 << width) - 1
    value &= mask
    if value == 0 or value == mask:
        return None
    size = width
    # The smallest element size whose replication gives the value.
    while size > 2:
        half = size // 2
        if (value >> half) & ((1 << half) - 1) != value & ((1 << half) - 1):
            break
        size = half
    element = value & ((1 << size) - 1)
    emask = (1 << size) - 1
    ones = bin(element).count("1")
    # Rotate right until the run of ones sits at bit 0: then element == 2**ones - 1.
    run = (1 << ones) - 1
    for rotation in range(size):
        rotated = ((element >> rotation) | (element << (size - rotation))) & emask
        if rotated == run:
            immr = (size - rotation) % size
            imms = ((~(size - 1) << 1) & 0x3F) | (ones - 1)
            n = 1 if size == 64 else 0
            return n, immr, imms & 0x3F
    return None


def _logical_imm(opc: int, sf: int, rd: int, rn: int, value: int) -> int:
    fields = encode_bitmask(value, 64 if sf else 32)
    if fields is None:
        raise ValueError(f"{value:#x} is not a logical immediate")
    n, immr, imms = fields
    return opc | sf << 31 | n << 22 | immr << 16 | imms << 10 | rn << 5 | rd


def and_imm(sf: int, rd: int, rn: int, value: int) -> int:
    return _logical_imm(0x12000000, sf, rd, rn, value)


def orr_imm(sf: int, rd: int, rn: int, value: int) -> int:
    return _logical_imm(0x32000000, sf, rd, rn, value)


def eor_imm(sf: int, rd: int, rn: int, value: int) -> int:
    return _logical_imm(0x52000000, sf, rd, rn, value)


def ands_imm(sf: int, rd: int, rn: int, value: int) -> int:
    return _logical_imm(0x72000000, sf, rd, rn, value)


def movz(sf: int, rd: int, imm16: int, hw: int = 0) -> int:
    return 0x52800000 | sf << 31 | hw << 21 | _check(imm16, 16, "imm16") << 5 | rd


def movn(sf: int, rd: int, imm16: int, hw: int = 0) -> int:
    return 0x12800000 | sf << 31 | hw << 21 | _check(imm16, 16, "imm16") << 5 | rd


def movk(sf: int, rd: int, imm16: int, hw: int = 0) -> int:
    return 0x72800000 | sf << 31 | hw << 21 | _check(imm16, 16, "imm16") << 5 | rd


def _bitfield(opc: int, sf: int, rd: int, rn: int, immr: int, imms: int) -> int:
    width = 6 if sf else 5
    return (opc | sf << 31 | sf << 22 | _check(immr, width, "immr") << 16 | _check(imms, width, "imms") << 10
            | rn << 5 | rd)


def sbfm(sf: int, rd: int, rn: int, immr: int, imms: int) -> int:
    return _bitfield(0x13000000, sf, rd, rn, immr, imms)


def bfm(sf: int, rd: int, rn: int, immr: int, imms: int) -> int:
    return _bitfield(0x33000000, sf, rd, rn, immr, imms)


def ubfm(sf: int, rd: int, rn: int, immr: int, imms: int) -> int:
    return _bitfield(0x53000000, sf, rd, rn, immr, imms)


def extr(sf: int, rd: int, rn: int, rm: int, lsb: int) -> int:
    return 0x13800000 | sf << 31 | sf << 22 | rm << 16 | _check(lsb, 6 if sf else 5, "lsb") << 10 | rn << 5 | rd


def adr(rd: int, offset: int) -> int:
    imm = _offset(offset, 21, 1)
    return 0x10000000 | (imm & 3) << 29 | (imm >> 2) << 5 | rd


# --- Data processing: register ------------------------------------------------------

def _addsub_reg(op: int, sf: int, rd: int, rn: int, rm: int, shift: Shift, amount: int) -> int:
    return op | sf << 31 | shift << 22 | rm << 16 | _check(amount, 6 if sf else 5, "amount") << 10 | rn << 5 | rd


def add_reg(sf: int, rd: int, rn: int, rm: int, shift: Shift = Shift.LSL, amount: int = 0) -> int:
    return _addsub_reg(0x0B000000, sf, rd, rn, rm, shift, amount)


def adds_reg(sf: int, rd: int, rn: int, rm: int, shift: Shift = Shift.LSL, amount: int = 0) -> int:
    return _addsub_reg(0x2B000000, sf, rd, rn, rm, shift, amount)


def sub_reg(sf: int, rd: int, rn: int, rm: int, shift: Shift = Shift.LSL, amount: int = 0) -> int:
    return _addsub_reg(0x4B000000, sf, rd, rn, rm, shift, amount)


def subs_reg(sf: int, rd: int, rn: int, rm: int, shift: Shift = Shift.LSL, amount: int = 0) -> int:
    return _addsub_reg(0x6B000000, sf, rd, rn, rm, shift, amount)


def _carry(op: int, sf: int, rd: int, rn: int, rm: int) -> int:
    return op | sf << 31 | rm << 16 | rn << 5 | rd


def adc(sf: int, rd: int, rn: int, rm: int) -> int:
    return _carry(0x1A000000, sf, rd, rn, rm)


def adcs(sf: int, rd: int, rn: int, rm: int) -> int:
    return _carry(0x3A000000, sf, rd, rn, rm)


def sbc(sf: int, rd: int, rn: int, rm: int) -> int:
    return _carry(0x5A000000, sf, rd, rn, rm)


def sbcs(sf: int, rd: int, rn: int, rm: int) -> int:
    return _carry(0x7A000000, sf, rd, rn, rm)


def _logical_reg(op: int, sf: int, rd: int, rn: int, rm: int, shift: Shift, amount: int) -> int:
    return op | sf << 31 | shift << 22 | rm << 16 | _check(amount, 6 if sf else 5, "amount") << 10 | rn << 5 | rd


def and_reg(sf: int, rd: int, rn: int, rm: int, shift: Shift = Shift.LSL, amount: int = 0) -> int:
    return _logical_reg(0x0A000000, sf, rd, rn, rm, shift, amount)


def bic_reg(sf: int, rd: int, rn: int, rm: int, shift: Shift = Shift.LSL, amount: int = 0) -> int:
    return _logical_reg(0x0A200000, sf, rd, rn, rm, shift, amount)


def orr_reg(sf: int, rd: int, rn: int, rm: int, shift: Shift = Shift.LSL, amount: int = 0) -> int:
    return _logical_reg(0x2A000000, sf, rd, rn, rm, shift, amount)


def orn_reg(sf: int, rd: int, rn: int, rm: int, shift: Shift = Shift.LSL, amount: int = 0) -> int:
    return _logical_reg(0x2A200000, sf, rd, rn, rm, shift, amount)


def eor_reg(sf: int, rd: int, rn: int, rm: int, shift: Shift = Shift.LSL, amount: int = 0) -> int:
    return _logical_reg(0x4A000000, sf, rd, rn, rm, shift, amount)


def ands_reg(sf: int, rd: int, rn: int, rm: int, shift: Shift = Shift.LSL, amount: int = 0) -> int:
    return _logical_reg(0x6A000000, sf, rd, rn, rm, shift, amount)


def _two_source(op: int, sf: int, rd: int, rn: int, rm: int) -> int:
    return op | sf << 31 | rm << 16 | rn << 5 | rd


def lslv(sf: int, rd: int, rn: int, rm: int) -> int:
    return _two_source(0x1AC02000, sf, rd, rn, rm)


def lsrv(sf: int, rd: int, rn: int, rm: int) -> int:
    return _two_source(0x1AC02400, sf, rd, rn, rm)


def asrv(sf: int, rd: int, rn: int, rm: int) -> int:
    return _two_source(0x1AC02800, sf, rd, rn, rm)


def rorv(sf: int, rd: int, rn: int, rm: int) -> int:
    return _two_source(0x1AC02C00, sf, rd, rn, rm)


def udiv(sf: int, rd: int, rn: int, rm: int) -> int:
    return _two_source(0x1AC00800, sf, rd, rn, rm)


def sdiv(sf: int, rd: int, rn: int, rm: int) -> int:
    return _two_source(0x1AC00C00, sf, rd, rn, rm)


def madd(sf: int, rd: int, rn: int, rm: int, ra: int) -> int:
    return 0x1B000000 | sf << 31 | rm << 16 | ra << 10 | rn << 5 | rd


def msub(sf: int, rd: int, rn: int, rm: int, ra: int) -> int:
    return 0x1B008000 | sf << 31 | rm << 16 | ra << 10 | rn << 5 | rd


def smaddl(rd: int, rn: int, rm: int, ra: int) -> int:
    return 0x9B200000 | rm << 16 | ra << 10 | rn << 5 | rd


def umaddl(rd: int, rn: int, rm: int, ra: int) -> int:
    return 0x9BA00000 | rm << 16 | ra << 10 | rn << 5 | rd


def smulh(rd: int, rn: int, rm: int) -> int:
    return 0x9B407C00 | rm << 16 | rn << 5 | rd


def umulh(rd: int, rn: int, rm: int) -> int:
    return 0x9BC07C00 | rm << 16 | rn << 5 | rd


def _cond_select(op: int, sf: int, rd: int, rn: int, rm: int, cond: Cond) -> int:
    return op | sf << 31 | rm << 16 | cond << 12 | rn << 5 | rd


def csel(sf: int, rd: int, rn: int, rm: int, cond: Cond) -> int:
    return _cond_select(0x1A800000, sf, rd, rn, rm, cond)


def csinc(sf: int, rd: int, rn: int, rm: int, cond: Cond) -> int:
    return _cond_select(0x1A800400, sf, rd, rn, rm, cond)


def csinv(sf: int, rd: int, rn: int, rm: int, cond: Cond) -> int:
    return _cond_select(0x5A800000, sf, rd, rn, rm, cond)


def csneg(sf: int, rd: int, rn: int, rm: int, cond: Cond) -> int:
    return _cond_select(0x5A800400, sf, rd, rn, rm, cond)


def ccmp_imm(sf: int, rn: int, imm5: int, nzcv: int, cond: Cond) -> int:
    return 0x7A400800 | sf << 31 | _check(imm5, 5, "imm5") << 16 | cond << 12 | rn << 5 | _check(nzcv, 4, "nzcv")


def _one_source(op: int, rd: int, rn: int) -> int:
    return op | rn << 5 | rd


def clz(sf: int, rd: int, rn: int) -> int:
    return _one_source(0x5AC01000 | sf << 31, rd, rn)


def rbit(sf: int, rd: int, rn: int) -> int:
    return _one_source(0x5AC00000 | sf << 31, rd, rn)


def rev16(sf: int, rd: int, rn: int) -> int:
    return _one_source(0x5AC00400 | sf << 31, rd, rn)


def rev32(rd: int, rn: int) -> int:
    """Byte-reverse each 32-bit word of a 64-bit register."""
    return _one_source(0xDAC00800, rd, rn)


def rev(sf: int, rd: int, rn: int) -> int:
    return _one_source(0xDAC00C00 if sf else 0x5AC00800, rd, rn)


# --- Loads and stores ---------------------------------------------------------------
# ``size`` is log2 of the access in bytes (0 byte, 1 half, 2 word, 3 doubleword).

def _ldst_uimm(opc: int, size: int, rt: int, rn: int, offset: int) -> int:
    if offset % (1 << size):
        raise ValueError(f"offset {offset} is not a multiple of {1 << size}")
    return size << 30 | 0x39000000 | opc << 22 | _check(offset >> size, 12, "imm12") << 10 | rn << 5 | rt


def str_uimm(size: int, rt: int, rn: int, offset: int = 0) -> int:
    return _ldst_uimm(0, size, rt, rn, offset)


def ldr_uimm(size: int, rt: int, rn: int, offset: int = 0) -> int:
    return _ldst_uimm(1, size, rt, rn, offset)


def ldrs_uimm(size: int, rt: int, rn: int, offset: int = 0) -> int:
    """Sign-extending load to 64 bits (ldrsb/ldrsh/ldrsw)."""
    return _ldst_uimm(2, size, rt, rn, offset)


def _ldst_imm9(op: int, opc: int, size: int, rt: int, rn: int, offset: int) -> int:
    return size << 30 | op | opc << 22 | _offset(offset, 9, 1) << 12 | rn << 5 | rt


def stur(size: int, rt: int, rn: int, offset: int) -> int:
    return _ldst_imm9(0x38000000, 0, size, rt, rn, offset)


def ldur(size: int, rt: int, rn: int, offset: int) -> int:
    return _ldst_imm9(0x38000000, 1, size, rt, rn, offset)


def str_pre(size: int, rt: int, rn: int, offset: int) -> int:
    """``str rt, [rn, #offset]!``"""
    return _ldst_imm9(0x38000C00, 0, size, rt, rn, offset)


def ldr_post(size: int, rt: int, rn: int, offset: int) -> int:
    """``ldr rt, [rn], #offset``"""
    return _ldst_imm9(0x38000400, 1, size, rt, rn, offset)


def ldr_literal(sf: int, rt: int, offset: int) -> int:
    return (0x58000000 if sf else 0x18000000) | _offset(offset, 19) << 5 | rt


def ldapr(size: int, rt: int, rn: int) -> int:
    """Load-acquire RCpc (FEAT_LRCPC): ldaprb/ldaprh/ldapr."""
    return size << 30 | 0x38BFC000 | rn << 5 | rt


def ldar(size: int, rt: int, rn: int) -> int:
    return size << 30 | 0x08DFFC00 | rn << 5 | rt


def stlr(size: int, rt: int, rn: int) -> int:
    return size << 30 | 0x089FFC00 | rn << 5 | rt


# --- Branches, system ---------------------------------------------------------------

def b(offset: int) -> int:
    return 0x14000000 | _offset(offset, 26)


def bl(offset: int) -> int:
    return 0x94000000 | _offset(offset, 26)


def b_cond(cond: Cond, offset: int) -> int:
    return 0x54000000 | _offset(offset, 19) << 5 | cond


def cbz(sf: int, rt: int, offset: int) -> int:
    return 0x34000000 | sf << 31 | _offset(offset, 19) << 5 | rt


def cbnz(sf: int, rt: int, offset: int) -> int:
    return 0x35000000 | sf << 31 | _offset(offset, 19) << 5 | rt


def tbz(rt: int, bit: int, offset: int) -> int:
    return 0x36000000 | (bit >> 5) << 31 | (_check(bit, 6, "bit") & 31) << 19 | _offset(offset, 14) << 5 | rt


def tbnz(rt: int, bit: int, offset: int) -> int:
    return 0x37000000 | (bit >> 5) << 31 | (_check(bit, 6, "bit") & 31) << 19 | _offset(offset, 14) << 5 | rt


def br(rn: int) -> int:
    return 0xD61F0000 | rn << 5


def blr(rn: int) -> int:
    return 0xD63F0000 | rn << 5


def ret(rn: int = 30) -> int:
    return 0xD65F0000 | rn << 5


def mrs_nzcv(rt: int) -> int:
    return 0xD53B4200 | rt


def msr_nzcv(rt: int) -> int:
    return 0xD51B4200 | rt


def cfinv() -> int:
    """Invert the carry flag (FEAT_FlagM)."""
    return 0xD500401F


def rmif(rn: int, rotate: int, mask: int) -> int:
    """Rotate Xn right by ``rotate`` and insert its bits 3:0 into the NZCV flags chosen by ``mask`` (FEAT_FlagM)."""
    return 0xBA000400 | _check(rotate, 6, "rotate") << 15 | rn << 5 | _check(mask, 4, "mask")


def setf8(rn: int) -> int:
    return 0x3A00080D | rn << 5


def setf16(rn: int) -> int:
    return 0x3A00480D | rn << 5


def nop() -> int:
    return 0xD503201F


def brk(imm16: int) -> int:
    return 0xD4200000 | _check(imm16, 16, "imm16") << 5


def udf(imm16: int = 0) -> int:
    return _check(imm16, 16, "imm16")


# --- Aliases the translator uses by their assembler names --------------------------

def mov_reg(sf: int, rd: int, rm: int) -> int:
    return orr_reg(sf, rd, ZR, rm)


def lsl_imm(sf: int, rd: int, rn: int, shift: int) -> int:
    width = 64 if sf else 32
    return ubfm(sf, rd, rn, (width - shift) % width, width - 1 - shift)


def lsr_imm(sf: int, rd: int, rn: int, shift: int) -> int:
    return ubfm(sf, rd, rn, shift, 63 if sf else 31)


def asr_imm(sf: int, rd: int, rn: int, shift: int) -> int:
    return sbfm(sf, rd, rn, shift, 63 if sf else 31)


def ror_imm(sf: int, rd: int, rn: int, shift: int) -> int:
    return extr(sf, rd, rn, rn, shift)


def ubfx(sf: int, rd: int, rn: int, lsb: int, width: int) -> int:
    return ubfm(sf, rd, rn, lsb, lsb + width - 1)


def sbfx(sf: int, rd: int, rn: int, lsb: int, width: int) -> int:
    return sbfm(sf, rd, rn, lsb, lsb + width - 1)


def bfi(sf: int, rd: int, rn: int, lsb: int, width: int) -> int:
    size = 64 if sf else 32
    return bfm(sf, rd, rn, (size - lsb) % size, width - 1)


def cset(sf: int, rd: int, cond: Cond) -> int:
    return csinc(sf, rd, ZR, ZR, cond.invert())


def csetm(sf: int, rd: int, cond: Cond) -> int:
    return csinv(sf, rd, ZR, ZR, cond.invert())
