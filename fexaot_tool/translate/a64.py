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


# --- SIMD&FP --------------------------------------------------------------------------
# Vector registers are numbered 0-31 (v0-v31).  ``size`` of a scalar access is log2 of
# its bytes (0 B, 1 H, 2 S, 3 D, 4 Q); ``q`` selects the 128-bit (1) or 64-bit (0) vector.

def _ldst_fp(opc_load: bool, size: int, rt: int, rn: int) -> tuple[int, int]:
    """(size field, opc field) of a SIMD&FP load/store of 2**size bytes."""
    if size == 4:
        return 0, 3 if opc_load else 2
    return size, 1 if opc_load else 0


def ldr_fp_uimm(size: int, rt: int, rn: int, offset: int = 0) -> int:
    """LDR Bt/Ht/St/Dt/Qt, [Xn, #offset] (unsigned offset, a multiple of the size)."""
    sz, opc = _ldst_fp(True, size, rt, rn)
    return 0x3D000000 | sz << 30 | opc << 22 | _check(offset >> size, 12, "offset") << 10 | rn << 5 | rt


def str_fp_uimm(size: int, rt: int, rn: int, offset: int = 0) -> int:
    sz, opc = _ldst_fp(False, size, rt, rn)
    return 0x3D000000 | sz << 30 | opc << 22 | _check(offset >> size, 12, "offset") << 10 | rn << 5 | rt


def ldur_fp(size: int, rt: int, rn: int, offset: int) -> int:
    """LDUR Bt/Ht/St/Dt/Qt, [Xn, #simm9]."""
    sz, opc = _ldst_fp(True, size, rt, rn)
    return 0x3C000000 | sz << 30 | opc << 22 | (offset & 0x1FF) << 12 | rn << 5 | rt


def stur_fp(size: int, rt: int, rn: int, offset: int) -> int:
    sz, opc = _ldst_fp(False, size, rt, rn)
    return 0x3C000000 | sz << 30 | opc << 22 | (offset & 0x1FF) << 12 | rn << 5 | rt


def _logical_v(base: int, q: int, rd: int, rn: int, rm: int) -> int:
    return base | q << 30 | rm << 16 | rn << 5 | rd


def and_v(q: int, rd: int, rn: int, rm: int) -> int:
    return _logical_v(0x0E201C00, q, rd, rn, rm)


def bic_v(q: int, rd: int, rn: int, rm: int) -> int:
    """Vd = Vn AND NOT Vm."""
    return _logical_v(0x0E601C00, q, rd, rn, rm)


def orr_v(q: int, rd: int, rn: int, rm: int) -> int:
    return _logical_v(0x0EA01C00, q, rd, rn, rm)


def orn_v(q: int, rd: int, rn: int, rm: int) -> int:
    return _logical_v(0x0EE01C00, q, rd, rn, rm)


def eor_v(q: int, rd: int, rn: int, rm: int) -> int:
    return _logical_v(0x2E201C00, q, rd, rn, rm)


def mov_v(q: int, rd: int, rn: int) -> int:
    """MOV Vd.16B/8B, Vn (ORR Vd, Vn, Vn); the 8B form zeroes bits 64-127."""
    return orr_v(q, rd, rn, rn)


def movi_zero(rd: int) -> int:
    """MOVI Vd.2D, #0."""
    return 0x6F00E400 | rd


def fmov_to_gpr(sf: int, rd: int, rn: int) -> int:
    """FMOV Wd, Sn (sf 0) / FMOV Xd, Dn (sf 1)."""
    return (0x9E660000 if sf else 0x1E260000) | rn << 5 | rd


def fmov_from_gpr(sf: int, rd: int, rn: int) -> int:
    """FMOV Sd, Wn (sf 0) / FMOV Dd, Xn (sf 1): the rest of Vd is zeroed."""
    return (0x9E670000 if sf else 0x1E270000) | rn << 5 | rd


def _imm5(size: int, index: int) -> int:
    return _check(index << (size + 1) | 1 << size, 5, "lane")


def ins_gpr(size: int, rd: int, index: int, rn: int) -> int:
    """INS Vd.<B,H,S,D>[index], Wn/Xn (MOV): the other lanes are kept."""
    return 0x4E001C00 | _imm5(size, index) << 16 | rn << 5 | rd


def umov(size: int, rd: int, rn: int, index: int) -> int:
    """UMOV Wd/Xd, Vn.<B,H,S,D>[index] (zero-extends into Wd/Xd)."""
    return 0x0E003C00 | (1 << 30 if size == 3 else 0) | _imm5(size, index) << 16 | rn << 5 | rd


def ins_elem(size: int, rd: int, dst_index: int, rn: int, src_index: int) -> int:
    """INS Vd.<T>[dst_index], Vn.<T>[src_index] (MOV element)."""
    return 0x6E000400 | _imm5(size, dst_index) << 16 | _check(src_index << size, 4, "lane") << 11 | rn << 5 | rd


DMB_ISH, DMB_ISHLD = 0b1011, 0b1001


def dmb(option: int) -> int:
    return 0xD50330BF | option << 8


# --- Atomics: LSE read-modify-write, compare-and-swap, exclusive pairs, barriers ------
# ``size`` is log2 of the access in bytes, as for loads and stores.  The LSE forms
# (FEAT_LSE) here are the acquire+release ("al") variants the translator uses for
# x86 locked instructions; the exclusive forms are the fallback without LSE.

def _lse_rmw(o3: int, opc: int, size: int, rs: int, rt: int, rn: int) -> int:
    """LDADD/LDCLR/LDEOR/LDSET/SWP with A=1, R=1: Rt := [Rn]; [Rn] := op([Rn], Rs)."""
    return size << 30 | 0x38E00000 | rs << 16 | o3 << 15 | opc << 12 | rn << 5 | rt


def ldaddal(size: int, rs: int, rt: int, rn: int) -> int:
    return _lse_rmw(0, 0b000, size, rs, rt, rn)


def ldclral(size: int, rs: int, rt: int, rn: int) -> int:
    """[Rn] &= ~Rs."""
    return _lse_rmw(0, 0b001, size, rs, rt, rn)


def ldeoral(size: int, rs: int, rt: int, rn: int) -> int:
    return _lse_rmw(0, 0b010, size, rs, rt, rn)


def ldsetal(size: int, rs: int, rt: int, rn: int) -> int:
    """[Rn] |= Rs."""
    return _lse_rmw(0, 0b011, size, rs, rt, rn)


def swpal(size: int, rs: int, rt: int, rn: int) -> int:
    return _lse_rmw(1, 0b000, size, rs, rt, rn)


def casal(size: int, rs: int, rt: int, rn: int) -> int:
    """If [Rn] == Rs (its low 8 << size bits): [Rn] := Rt.  Rs := the old [Rn], zero-extended."""
    return size << 30 | 0x08E0FC00 | rs << 16 | rn << 5 | rt


def ldaxr(size: int, rt: int, rn: int) -> int:
    return size << 30 | 0x085FFC00 | rn << 5 | rt


def stlxr(size: int, rs: int, rt: int, rn: int) -> int:
    """Store-release exclusive; Rs := 0 on success, 1 on failure."""
    return size << 30 | 0x0800FC00 | rs << 16 | rn << 5 | rt


def ldaxp(rt: int, rt2: int, rn: int) -> int:
    """64-bit pair: Rt := [Rn], Rt2 := [Rn + 8], one exclusive access."""
    return 0xC87F8000 | rt2 << 10 | rn << 5 | rt


def stlxp(rs: int, rt: int, rt2: int, rn: int) -> int:
    return 0xC8208000 | rs << 16 | rt2 << 10 | rn << 5 | rt


# --- SIMD integer ---------------------------------------------------------------------
# ``size`` is log2 of the element's bytes (0 B, 1 H, 2 S, 3 D) and ``q`` selects the 128-bit (1) or
# 64-bit (0) vector, as in the Arm ARM's "<T>" arrangements (8B/16B, 4H/8H, 2S/4S, 1D/2D).

def _three_same(u: int, opcode: int, size: int, q: int, rd: int, rn: int, rm: int) -> int:
    """Advanced SIMD three same: 0 Q U 01110 size 1 Rm opcode 1 Rn Rd."""
    return 0x0E200400 | q << 30 | u << 29 | _check(size, 2, "size") << 22 | rm << 16 | opcode << 11 | rn << 5 | rd


def add_v(size: int, q: int, rd: int, rn: int, rm: int) -> int:
    return _three_same(0, 0b10000, size, q, rd, rn, rm)


def sub_v(size: int, q: int, rd: int, rn: int, rm: int) -> int:
    return _three_same(1, 0b10000, size, q, rd, rn, rm)


def uqadd(size: int, q: int, rd: int, rn: int, rm: int) -> int:
    return _three_same(1, 0b00001, size, q, rd, rn, rm)


def sqadd(size: int, q: int, rd: int, rn: int, rm: int) -> int:
    return _three_same(0, 0b00001, size, q, rd, rn, rm)


def uqsub(size: int, q: int, rd: int, rn: int, rm: int) -> int:
    return _three_same(1, 0b00101, size, q, rd, rn, rm)


def sqsub(size: int, q: int, rd: int, rn: int, rm: int) -> int:
    return _three_same(0, 0b00101, size, q, rd, rn, rm)


def cmeq_v(size: int, q: int, rd: int, rn: int, rm: int) -> int:
    """Each element: all ones if Vn == Vm, else zero."""
    return _three_same(1, 0b10001, size, q, rd, rn, rm)


def cmgt_v(size: int, q: int, rd: int, rn: int, rm: int) -> int:
    """Each element: all ones if Vn > Vm (signed), else zero."""
    return _three_same(0, 0b00110, size, q, rd, rn, rm)


def umax_v(size: int, q: int, rd: int, rn: int, rm: int) -> int:
    return _three_same(1, 0b01100, size, q, rd, rn, rm)


def umin_v(size: int, q: int, rd: int, rn: int, rm: int) -> int:
    return _three_same(1, 0b01101, size, q, rd, rn, rm)


def smax_v(size: int, q: int, rd: int, rn: int, rm: int) -> int:
    return _three_same(0, 0b01100, size, q, rd, rn, rm)


def smin_v(size: int, q: int, rd: int, rn: int, rm: int) -> int:
    return _three_same(0, 0b01101, size, q, rd, rn, rm)


def urhadd(size: int, q: int, rd: int, rn: int, rm: int) -> int:
    """Unsigned rounding halving add: (Vn + Vm + 1) >> 1 without overflow."""
    return _three_same(1, 0b00010, size, q, rd, rn, rm)


def uabd(size: int, q: int, rd: int, rn: int, rm: int) -> int:
    """Unsigned absolute difference."""
    return _three_same(1, 0b01110, size, q, rd, rn, rm)


def mul_v(size: int, q: int, rd: int, rn: int, rm: int) -> int:
    return _three_same(0, 0b10011, size, q, rd, rn, rm)


def addp_v(size: int, q: int, rd: int, rn: int, rm: int) -> int:
    """Pairwise add of the concatenation Vm:Vn (Vn's pairs go to the low half)."""
    return _three_same(0, 0b10111, size, q, rd, rn, rm)


def sshl_v(size: int, q: int, rd: int, rn: int, rm: int) -> int:
    """Shift each element by the signed low byte of Vm's element (negative: arithmetic right)."""
    return _three_same(0, 0b01000, size, q, rd, rn, rm)


def ushl_v(size: int, q: int, rd: int, rn: int, rm: int) -> int:
    """Shift each element by the signed low byte of Vm's element (negative: logical right)."""
    return _three_same(1, 0b01000, size, q, rd, rn, rm)


def _three_different(u: int, opcode: int, size: int, q: int, rd: int, rn: int, rm: int) -> int:
    """Advanced SIMD three different: 0 Q U 01110 size 1 Rm opcode 00 Rn Rd (q 1: the "2" form, upper halves)."""
    return 0x0E200000 | q << 30 | u << 29 | _check(size, 2, "size") << 22 | rm << 16 | opcode << 12 | rn << 5 | rd


def smull_v(size: int, q: int, rd: int, rn: int, rm: int) -> int:
    """SMULL/SMULL2: widening signed multiply of the low (q 0) or high (q 1) elements of size ``size``."""
    return _three_different(0, 0b1100, size, q, rd, rn, rm)


def umull_v(size: int, q: int, rd: int, rn: int, rm: int) -> int:
    return _three_different(1, 0b1100, size, q, rd, rn, rm)


def _two_misc(u: int, opcode: int, size: int, q: int, rd: int, rn: int) -> int:
    """Advanced SIMD two-register miscellaneous: 0 Q U 01110 size 10000 opcode 10 Rn Rd."""
    return 0x0E200800 | q << 30 | u << 29 | _check(size, 2, "size") << 22 | opcode << 12 | rn << 5 | rd


def neg_v(size: int, q: int, rd: int, rn: int) -> int:
    return _two_misc(1, 0b01011, size, q, rd, rn)


def uaddlp(size: int, q: int, rd: int, rn: int) -> int:
    """Add adjacent pairs of unsigned elements of size ``size`` into elements twice as wide."""
    return _two_misc(1, 0b00010, size, q, rd, rn)


# Narrowing forms: ``size`` is the narrow (destination) element's.  The plain form writes the low
# 64 bits and zeroes the rest; the "2" form writes the high 64 bits and keeps the low ones.

def xtn(size: int, rd: int, rn: int) -> int:
    return _two_misc(0, 0b10010, size, 0, rd, rn)


def sqxtn(size: int, rd: int, rn: int) -> int:
    """Signed saturating narrow to the low half."""
    return _two_misc(0, 0b10100, size, 0, rd, rn)


def sqxtn2(size: int, rd: int, rn: int) -> int:
    return _two_misc(0, 0b10100, size, 1, rd, rn)


def sqxtun(size: int, rd: int, rn: int) -> int:
    """Signed in, unsigned saturating narrow to the low half."""
    return _two_misc(1, 0b10010, size, 0, rd, rn)


def sqxtun2(size: int, rd: int, rn: int) -> int:
    return _two_misc(1, 0b10010, size, 1, rd, rn)


def uqxtn(size: int, rd: int, rn: int) -> int:
    """Unsigned saturating narrow to the low half."""
    return _two_misc(1, 0b10100, size, 0, rd, rn)


def _shift_imm(u: int, opcode: int, immhb: int, q: int, rd: int, rn: int) -> int:
    """Advanced SIMD shift by immediate: 0 Q U 011110 immh:immb opcode 1 Rn Rd."""
    return 0x0F000400 | q << 30 | u << 29 | _check(immhb, 7, "immh:immb") << 16 | opcode << 11 | rn << 5 | rd


def _right_shift(size: int, shift: int) -> int:
    esize = 8 << size
    if not 1 <= shift <= esize:
        raise ValueError(f"right shift {shift} out of range for {esize}-bit elements")
    return 2 * esize - shift


def shl_v(size: int, q: int, rd: int, rn: int, shift: int) -> int:
    esize = 8 << size
    if not 0 <= shift < esize:
        raise ValueError(f"left shift {shift} out of range for {esize}-bit elements")
    return _shift_imm(0, 0b01010, esize + shift, q, rd, rn)


def ushr_v(size: int, q: int, rd: int, rn: int, shift: int) -> int:
    return _shift_imm(1, 0b00000, _right_shift(size, shift), q, rd, rn)


def sshr_v(size: int, q: int, rd: int, rn: int, shift: int) -> int:
    return _shift_imm(0, 0b00000, _right_shift(size, shift), q, rd, rn)


def usra(size: int, q: int, rd: int, rn: int, shift: int) -> int:
    """Vd += Vn >> shift (unsigned), per element."""
    return _shift_imm(1, 0b00010, _right_shift(size, shift), q, rd, rn)


def _permute(opcode: int, size: int, q: int, rd: int, rn: int, rm: int) -> int:
    """Advanced SIMD permute: 0 Q 001110 size 0 Rm 0 opcode 10 Rn Rd."""
    return 0x0E000800 | q << 30 | _check(size, 2, "size") << 22 | rm << 16 | opcode << 12 | rn << 5 | rd


def uzp1(size: int, q: int, rd: int, rn: int, rm: int) -> int:
    return _permute(0b001, size, q, rd, rn, rm)


def uzp2(size: int, q: int, rd: int, rn: int, rm: int) -> int:
    return _permute(0b101, size, q, rd, rn, rm)


def zip1(size: int, q: int, rd: int, rn: int, rm: int) -> int:
    """Interleave the low halves: Vn[0], Vm[0], Vn[1], Vm[1], ..."""
    return _permute(0b011, size, q, rd, rn, rm)


def zip2(size: int, q: int, rd: int, rn: int, rm: int) -> int:
    """Interleave the high halves."""
    return _permute(0b111, size, q, rd, rn, rm)


def ext_v(q: int, rd: int, rn: int, rm: int, index: int) -> int:
    """Bytes index.. of the concatenation Vm:Vn (Vn low)."""
    return 0x2E000000 | q << 30 | rm << 16 | _check(index, 4, "index") << 11 | rn << 5 | rd


def dup_elem(size: int, q: int, rd: int, rn: int, index: int) -> int:
    """DUP Vd.<T>, Vn.<Ts>[index]: every element := one element of Vn."""
    return 0x0E000400 | q << 30 | _imm5(size, index) << 16 | rn << 5 | rd


def movi_v(size: int, q: int, rd: int, imm8: int) -> int:
    """MOVI Vd.<T>, #imm8: every 8-, 16- or 32-bit element := imm8 (zero-extended)."""
    cmode = {0: 0b1110, 1: 0b1000, 2: 0b0000}[size]
    imm8 = _check(imm8, 8, "imm8")
    return 0x0F000400 | q << 30 | (imm8 >> 5) << 16 | cmode << 12 | (imm8 & 31) << 5 | rd


# --- SIMD floating point --------------------------------------------------------------
# ``size`` is log2 of the element's bytes, 2 (single) or 3 (double), as in the SIMD integer section;
# vector forms take ``q`` (1: 4S/2D, 0: 2S).  Scalar forms name their FP type by the same ``size``
# and read lane 0 of their vector registers; scalar results zero the rest of the register.

def _ftype(size: int) -> int:
    if size not in (2, 3):
        raise ValueError(f"floating-point element size {size} is not 2 (single) or 3 (double)")
    return size - 2


def _three_same_fp(u: int, a: int, opcode: int, size: int, q: int, rd: int, rn: int, rm: int) -> int:
    """Advanced SIMD three same (FP): 0 Q U 01110 a sz 1 Rm opcode 1 Rn Rd."""
    return 0x0E200400 | q << 30 | u << 29 | a << 23 | _ftype(size) << 22 | rm << 16 | opcode << 11 | rn << 5 | rd


def fadd_v(size: int, q: int, rd: int, rn: int, rm: int) -> int:
    return _three_same_fp(0, 0, 0b11010, size, q, rd, rn, rm)


def fsub_v(size: int, q: int, rd: int, rn: int, rm: int) -> int:
    return _three_same_fp(0, 1, 0b11010, size, q, rd, rn, rm)


def fmul_v(size: int, q: int, rd: int, rn: int, rm: int) -> int:
    return _three_same_fp(1, 0, 0b11011, size, q, rd, rn, rm)


def fdiv_v(size: int, q: int, rd: int, rn: int, rm: int) -> int:
    return _three_same_fp(1, 0, 0b11111, size, q, rd, rn, rm)


def fmax_v(size: int, q: int, rd: int, rn: int, rm: int) -> int:
    """The larger element; a NaN operand gives a NaN (not FMAXNM)."""
    return _three_same_fp(0, 0, 0b11110, size, q, rd, rn, rm)


def fcmeq_v(size: int, q: int, rd: int, rn: int, rm: int) -> int:
    """Each element: all ones if Vn == Vm (false when either is a NaN), else zero."""
    return _three_same_fp(0, 0, 0b11100, size, q, rd, rn, rm)


def fcmge_v(size: int, q: int, rd: int, rn: int, rm: int) -> int:
    return _three_same_fp(1, 0, 0b11100, size, q, rd, rn, rm)


def fcmgt_v(size: int, q: int, rd: int, rn: int, rm: int) -> int:
    return _three_same_fp(1, 1, 0b11100, size, q, rd, rn, rm)


def _two_misc_fp(u: int, a: int, opcode: int, size: int, q: int, rd: int, rn: int) -> int:
    """Advanced SIMD two-register miscellaneous (FP): 0 Q U 01110 a sz 10000 opcode 10 Rn Rd."""
    return 0x0E200800 | q << 30 | u << 29 | a << 23 | _ftype(size) << 22 | opcode << 12 | rn << 5 | rd


def fsqrt_v(size: int, q: int, rd: int, rn: int) -> int:
    return _two_misc_fp(1, 1, 0b11111, size, q, rd, rn)


def fneg_v(size: int, q: int, rd: int, rn: int) -> int:
    """Flip each element's sign bit (NaNs included, not quieted)."""
    return _two_misc_fp(1, 1, 0b01111, size, q, rd, rn)


def frinti_v(size: int, q: int, rd: int, rn: int) -> int:
    """Round each element to an integral value in the FPCR rounding mode."""
    return _two_misc_fp(1, 1, 0b11001, size, q, rd, rn)


def scvtf_v(size: int, q: int, rd: int, rn: int) -> int:
    """Signed integer elements to floating point, rounded per FPCR."""
    return _two_misc_fp(0, 0, 0b11101, size, q, rd, rn)


def fcvtzs_v(size: int, q: int, rd: int, rn: int) -> int:
    """Floating point to signed integer elements, toward zero, saturating (a NaN gives 0)."""
    return _two_misc_fp(0, 1, 0b11011, size, q, rd, rn)


def fcvtl(rd: int, rn: int) -> int:
    """FCVTL Vd.2D, Vn.2S: the two low singles widened to doubles."""
    return _two_misc_fp(0, 0, 0b10111, 3, 0, rd, rn)


def fcvtn(rd: int, rn: int) -> int:
    """FCVTN Vd.2S, Vn.2D: two doubles narrowed (per FPCR) to the low 64 bits; the high 64 are zeroed."""
    return _two_misc_fp(0, 0, 0b10110, 3, 0, rd, rn)


def not_v(q: int, rd: int, rn: int) -> int:
    """NOT (MVN) Vd.16B/8B, Vn."""
    return 0x2E205800 | q << 30 | rn << 5 | rd


def sxtl(size: int, rd: int, rn: int) -> int:
    """SXTL (SSHLL #0): the low elements of size ``size`` sign-extended to twice their width."""
    return 0x0F00A400 | (8 << size) << 16 | rn << 5 | rd


def bsl_v(q: int, rd: int, rn: int, rm: int) -> int:
    """Vd := Vn where Vd's bits are set, Vm where they are clear."""
    return _logical_v(0x2E601C00, q, rd, rn, rm)


def bit_v(q: int, rd: int, rn: int, rm: int) -> int:
    """Vd := Vn where Vm's bits are set (insert if true), Vd elsewhere."""
    return _logical_v(0x2EA01C00, q, rd, rn, rm)


def bif_v(q: int, rd: int, rn: int, rm: int) -> int:
    """Vd := Vn where Vm's bits are clear (insert if false), Vd elsewhere."""
    return _logical_v(0x2EE01C00, q, rd, rn, rm)


def movi_shifted(q: int, rd: int, imm8: int, shift: int) -> int:
    """MOVI Vd.4S/2S, #imm8, LSL #shift (0, 8, 16 or 24): every 32-bit element := imm8 << shift."""
    if shift not in (0, 8, 16, 24):
        raise ValueError(f"MOVI shift {shift} is not 0, 8, 16 or 24")
    imm8 = _check(imm8, 8, "imm8")
    return 0x0F000400 | q << 30 | (imm8 >> 5) << 16 | (shift // 8) << 13 | (imm8 & 31) << 5 | rd


def dup_gpr(size: int, q: int, rd: int, rn: int) -> int:
    """DUP Vd.<T>, Wn/Xn: every element := the general-purpose register's low bits."""
    return 0x0E000C00 | q << 30 | _imm5(size, 0) << 16 | rn << 5 | rd


def fcmp(size: int, rn: int, rm: int) -> int:
    """FCMP Sn, Sm / Dn, Dm: NZCV := 0110 equal, 1000 less, 0010 greater, 0011 unordered."""
    return 0x1E202000 | _ftype(size) << 22 | rm << 16 | rn << 5


def fccmp(size: int, rn: int, rm: int, nzcv: int, cond: Cond) -> int:
    """If ``cond`` holds, NZCV := FCMP(Sn, Sm), else NZCV := ``nzcv``."""
    return 0x1E200400 | _ftype(size) << 22 | rm << 16 | cond << 12 | rn << 5 | _check(nzcv, 4, "nzcv")


def scvtf_gpr(sf: int, size: int, rd: int, rn: int) -> int:
    """SCVTF Sd/Dd, Wn/Xn: a signed integer to floating point, rounded per FPCR."""
    return 0x1E220000 | sf << 31 | _ftype(size) << 22 | rn << 5 | rd


def fcvtzs_gpr(sf: int, size: int, rd: int, rn: int) -> int:
    """FCVTZS Wd/Xd, Sn/Dn: toward zero, saturating; a NaN gives 0.  Invalid sets FPSR.IOC."""
    return 0x1E380000 | sf << 31 | _ftype(size) << 22 | rn << 5 | rd


def fcvt(dst_size: int, src_size: int, rd: int, rn: int) -> int:
    """FCVT between single and double precision (narrowing rounds per FPCR)."""
    return 0x1E224000 | _ftype(src_size) << 22 | _ftype(dst_size) << 15 | rn << 5 | rd


def msr_fpcr(rt: int) -> int:
    return 0xD51B4400 | rt


def mrs_fpcr(rt: int) -> int:
    return 0xD53B4400 | rt


def msr_fpsr(rt: int) -> int:
    return 0xD51B4420 | rt


def mrs_fpsr(rt: int) -> int:
    """Bit 0 of FPSR is IOC, the cumulative invalid-operation flag."""
    return 0xD53B4420 | rt
