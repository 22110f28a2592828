"""Lowering of the x87 floating-point unit: rows merged into :data:`lower.LOWERINGS`.

The guest's x87 state lives in the state block (docs/abi.md, "x87 state"):
the eight *physical* registers R0-R7 as 80-bit values (significand, then sign
and exponent, 16 bytes each), the control word, the status word without TOP,
TOP and a mask of empty registers.  ST(i) is R((TOP + i) & 7), so every access
computes its slot from TOP; a push decrements TOP and marks the new top full, a
pop marks the old top empty and increments TOP, exactly as the reference
engine does (no stack-fault checks: neither does unicorn's x87, and compiled
code never over- or underflows the stack).

Values move as pairs of general-purpose registers ``(se, m)``: sign and
exponent in the low 16 bits of ``se``, the 64-bit significand with its
explicit integer bit in ``m``.  Loads, stores, exchanges, sign changes and
constants are bit moves.  Conversions (:mod:`x87_convert`) and arithmetic
(:mod:`x87_arith`) are exact 80-bit routines emitted inline, following the
control word's precision and rounding control, bit for bit with the reference.

Status word: C0-C3 as the instructions define them; compares clear C1 and
``fcomi`` clears OF/SF/AF as the SDM says (unicorn leaves them; the validator
counts that as the reference's deviation, docs/validation.md "x87").  The exception flags are not accumulated (like
MXCSR's, docs/translator.md "x87"), except ZE of a division by zero, which the
reference engine sets; nor is C1's round-up indication.

Those routines use NZCV, which may hold the guest's flags across an x87
instruction: when any of CF/ZF/SF/OF is live after an instruction that does
not write it, the lowering saves NZCV before and restores it after.
"""

from __future__ import annotations

from collections.abc import Callable

from iced_x86 import Mnemonic as M
from iced_x86 import MemorySize, OpKind, Register

from fexaot_tool.translate import abi, ir, x87_arith, x87_convert
from fexaot_tool.translate.a64 import ZR, Shift
from fexaot_tool.translate.builder import (AF, CC_B, CC_BE, CC_E, CC_P, NZCV_FLAGS, PF, REASON_X87,
                                           Builder, Unsupported)

REGS = abi.X87_REGS_OFFSET
EXP = 8  # byte offset of sign/exponent inside a register slot
# Status word condition codes.
C0, C1, C2, C3 = 0x100, 0x200, 0x400, 0x4000
# (significand, sign_exponent) of the constants, as the reference engine loads them (not rounded by RC).
CONSTANTS = {
    M.FLDZ: (0, 0), M.FLD1: (1 << 63, 0x3FFF), M.FLDPI: (0xC90FDAA22168C235, 0x4000),
    M.FLDL2E: (0xB8AA3B295C17F0BC, 0x3FFF), M.FLDL2T: (0xD49A784BCD1B8AFE, 0x4000),
    M.FLDLG2: (0x9A209A84FBCFF799, 0x3FFD), M.FLDLN2: (0xB17217F7D1CF79AC, 0x3FFE),
}


# --- the register stack ------------------------------------------------------------------------

def _top(b: Builder) -> int:
    top = b.temp()
    b.emit(ir.ldr_uimm(2, top, abi.STATE, abi.X87_TOP_OFFSET))
    return top


def _slot(b: Builder, top: int, i: int) -> int:
    """x28 + 16 * ((TOP + i) & 7): the state-block base of ST(i)'s slot (REGS is added by the access)."""
    index = top
    if i:
        index = b.temp()
        b.emit(ir.add_imm(0, index, top, i))
        b.emit(ir.and_imm(0, index, index, 7))
    slot = b.temp()
    b.emit(ir.add_reg(1, slot, abi.STATE, index, Shift.LSL, 4))
    return slot


def _read(b: Builder, slot: int) -> tuple[int, int]:
    se, m = b.temp(), b.temp()
    b.emit(ir.ldr_uimm(3, m, slot, REGS))
    b.emit(ir.ldr_uimm(1, se, slot, REGS + EXP))
    return se, m


def _write(b: Builder, slot: int, se: int, m: int) -> None:
    b.emit(ir.str_uimm(3, m, slot, REGS))
    b.emit(ir.str_uimm(1, se, slot, REGS + EXP))


def read_st(b: Builder, i: int) -> tuple[int, int]:
    return _read(b, _slot(b, _top(b), i))


def write_st(b: Builder, i: int, se: int, m: int) -> None:
    _write(b, _slot(b, _top(b), i), se, m)


def _empty_mask(b: Builder, top: int, set_empty: bool) -> None:
    """Mark physical register ``top`` empty (a pop) or full (a push)."""
    mask, bit = b.temp(), b.temp()
    b.emit(ir.ldr_uimm(2, mask, abi.STATE, abi.X87_EMPTY_OFFSET))
    b.mov_imm(0, bit, 1)
    b.emit(ir.lslv(0, bit, bit, top))
    b.emit((ir.orr_reg if set_empty else ir.bic_reg)(0, mask, mask, bit))
    b.emit(ir.str_uimm(2, mask, abi.STATE, abi.X87_EMPTY_OFFSET))


def push(b: Builder, se: int, m: int) -> None:
    """TOP -= 1, the new ST(0) := (se, m) and full."""
    top = b.temp()
    b.emit(ir.ldr_uimm(2, top, abi.STATE, abi.X87_TOP_OFFSET))
    b.emit(ir.sub_imm(0, top, top, 1))
    b.emit(ir.and_imm(0, top, top, 7))
    b.emit(ir.str_uimm(2, top, abi.STATE, abi.X87_TOP_OFFSET))
    _write(b, _slot(b, top, 0), se, m)
    _empty_mask(b, top, False)


def pop(b: Builder) -> None:
    """ST(0) becomes empty, TOP += 1."""
    top = _top(b)
    _empty_mask(b, top, True)
    new = b.temp()
    b.emit(ir.add_imm(0, new, top, 1))
    b.emit(ir.and_imm(0, new, new, 7))
    b.emit(ir.str_uimm(2, new, abi.STATE, abi.X87_TOP_OFFSET))


def control_word(b: Builder) -> int:
    cw = b.temp()
    b.emit(ir.ldr_uimm(2, cw, abi.STATE, abi.X87_CW_OFFSET))
    return cw


def _set_condition_codes(b: Builder, codes: int, clear: int) -> None:
    """status word := (status word & ~clear) | codes (a register holding C0-C3 bits)."""
    sw, mask = b.temp(), b.temp()
    b.emit(ir.ldr_uimm(2, sw, abi.STATE, abi.X87_SW_OFFSET))
    b.mov_imm(0, mask, clear)
    b.emit(ir.bic_reg(0, sw, sw, mask))
    if codes != ZR:
        b.emit(ir.orr_reg(0, sw, sw, codes))
    b.emit(ir.str_uimm(2, sw, abi.STATE, abi.X87_SW_OFFSET))


# --- operands ----------------------------------------------------------------------------------

def _st_index(reg: int) -> int:
    return reg - Register.ST0


_MEMORY_BYTES = {MemorySize.FLOAT32: 4, MemorySize.FLOAT64: 8, MemorySize.FLOAT80: 10, MemorySize.INT16: 2,
                 MemorySize.INT32: 4, MemorySize.INT64: 8, MemorySize.UINT16: 2}


def _memory_bytes(b: Builder) -> int:
    size = _MEMORY_BYTES.get(b.ins.memory_size)
    if size is None:
        raise Unsupported(REASON_X87, "x87 memory operand of another kind (BCD, environment)")
    return size


def _memory_value(b: Builder) -> tuple[int, int]:
    """The memory operand as an 80-bit value: a float (fld, fadd m32...) or a signed integer (fild, fiadd...)."""
    ins = b.ins
    size = _memory_bytes(b)
    integer = ins.memory_size in (MemorySize.INT16, MemorySize.INT32, MemorySize.INT64)
    base, disp = b.address(ins)
    stack = ins.memory_base == Register.RSP
    if size == 10:  # raw, as the reference engine loads it
        m = b.load(8, base, disp, stack)
        se = b.load(2, base, disp + 8, stack)
        return se, m
    raw = b.load(size, base, disp, stack)
    if integer:
        if size < 8:
            b.emit(ir.sbfx(1, raw, raw, 0, size * 8))
        return x87_convert.from_int(b, raw)
    return (x87_convert.from_f32 if size == 4 else x87_convert.from_f64)(b, raw)


def _store_memory(b: Builder, size: int, value: int) -> None:
    ins = b.ins
    base, disp = b.address(ins)
    b.store(size, value, base, disp, ins.memory_base == Register.RSP)


def _guard_flags(lower: Callable[[Builder], None]) -> Callable[[Builder], None]:
    """``lower`` with NZCV saved before it and restored after it, when the routines it emitted write NZCV
    and the guest's flags in NZCV are live across the instruction."""
    def guarded(b: Builder) -> None:
        start, inverted = len(b.ops), b.cf_inverted
        lower(b)
        if not b.live_after & NZCV_FLAGS or not any(op.effects & ir.WRITES_NZCV for op in b.ops[start:]):
            return
        saved = b.temp()
        b.ops.insert(start, ir.mrs_nzcv(saved))
        b.emit(ir.msr_nzcv(saved))
        b.cf_inverted = inverted
    guarded.__name__ = lower.__name__
    guarded.__doc__ = lower.__doc__
    return guarded


# --- loads, stores, moves ----------------------------------------------------------------------

def lower_fld(b: Builder) -> None:
    """fld m32/m64/m80 or ST(i), fild m16/m32/m64: push the value (converted exactly)."""
    if b.ins.op0_kind == OpKind.MEMORY:
        se, m = _memory_value(b)
    else:
        se, m = read_st(b, _st_index(b.ins.op0_register))
    push(b, se, m)


def lower_constant(b: Builder) -> None:
    """fldz, fld1, fldpi, fldl2e, fldl2t, fldlg2, fldln2: push a constant."""
    significand, sign_exponent = CONSTANTS[b.ins.mnemonic]
    se, m = b.temp(), b.temp()
    b.mov_imm(0, se, sign_exponent)
    b.mov_imm(1, m, significand)
    push(b, se, m)


_STORE_POPS = {M.FST: False, M.FSTP: True, M.FIST: False, M.FISTP: True}


def lower_fst(b: Builder) -> None:
    """fst/fstp m32/m64/m80 or ST(i), fist/fistp m16/m32/m64: store ST(0), then pop for the p forms.

    (fisttp is SSE3, which the CPUID model does not advertise.)"""
    ins = b.ins
    se, m = read_st(b, 0)
    if ins.op0_kind != OpKind.MEMORY:
        write_st(b, _st_index(ins.op0_register), se, m)
    else:
        size = _memory_bytes(b)
        if size == 10:
            base, disp = b.address(ins)
            stack = ins.memory_base == Register.RSP
            b.store(8, m, base, disp, stack)
            b.store(2, se, base, disp + 8, stack)
        elif ins.mnemonic in (M.FST, M.FSTP):
            cw = control_word(b)
            _store_memory(b, size, (x87_convert.to_f32 if size == 4 else x87_convert.to_f64)(b, se, m, cw))
        else:
            cw = control_word(b)
            value = x87_convert.to_int(b, se, m, cw, size * 8)
            _store_memory(b, size, value)
    if _STORE_POPS[ins.mnemonic]:
        pop(b)


def lower_fxch(b: Builder) -> None:
    """fxch ST(i): swap ST(0) and ST(i) (the tags stay, as on the reference engine)."""
    top = _top(b)
    here, there = _slot(b, top, 0), _slot(b, top, _st_index(b.ins.op1_register))
    a_se, a_m = _read(b, here)
    c_se, c_m = _read(b, there)
    _write(b, here, c_se, c_m)
    _write(b, there, a_se, a_m)


def lower_sign(b: Builder) -> None:
    """fchs / fabs: flip / clear ST(0)'s sign bit."""
    slot = _slot(b, _top(b), 0)
    se = b.temp()
    b.emit(ir.ldr_uimm(1, se, slot, REGS + EXP))
    if b.ins.mnemonic == M.FCHS:
        b.emit(ir.eor_imm(0, se, se, 0x8000))
    else:
        b.emit(ir.and_imm(0, se, se, 0x7FFF))
    b.emit(ir.str_uimm(1, se, slot, REGS + EXP))


# fcmovcc: (x86 condition, negated)
_FCMOV = {M.FCMOVB: (CC_B, False), M.FCMOVNB: (CC_B, True), M.FCMOVE: (CC_E, False), M.FCMOVNE: (CC_E, True),
          M.FCMOVBE: (CC_BE, False), M.FCMOVNBE: (CC_BE, True), M.FCMOVU: (CC_P, False),
          M.FCMOVNU: (CC_P, True)}


def lower_fcmov(b: Builder) -> None:
    """fcmovcc ST(0), ST(i): ST(0) := ST(i) when the condition holds."""
    cc, negated = _FCMOV[b.ins.mnemonic]
    if cc == CC_P:
        odd = b.parity_odd()  # PF = NOT bit 0
        skip = b.branch(ir.tbz if negated else ir.tbnz, odd, 0)
    else:
        cond = b.condition(cc)
        skip = b.branch(ir.b_cond, cond.invert() if not negated else cond)
    top = _top(b)
    se, m = _read(b, _slot(b, top, _st_index(b.ins.op1_register)))
    _write(b, _slot(b, top, 0), se, m)
    b.place(skip)


def lower_ffree(b: Builder) -> None:
    """ffree ST(i): mark it empty."""
    top = _top(b)
    i = _st_index(b.ins.op0_register)
    index = top
    if i:
        index = b.temp()
        b.emit(ir.add_imm(0, index, top, i))
        b.emit(ir.and_imm(0, index, index, 7))
    _empty_mask(b, index, True)


def lower_stack_pointer(b: Builder) -> None:
    """fincstp / fdecstp: TOP += 1 / -= 1 (no tag changes); C0-C3 := 0 as the reference engine does."""
    top = _top(b)
    b.emit((ir.add_imm if b.ins.mnemonic == M.FINCSTP else ir.sub_imm)(0, top, top, 1))
    b.emit(ir.and_imm(0, top, top, 7))
    b.emit(ir.str_uimm(2, top, abi.STATE, abi.X87_TOP_OFFSET))
    _set_condition_codes(b, ZR, C0 | C1 | C2 | C3)


# --- control and status --------------------------------------------------------------------------

def lower_fnstcw(b: Builder) -> None:
    _store_memory(b, 2, control_word(b))


def lower_fldcw(b: Builder) -> None:
    ins = b.ins
    base, disp = b.address(ins)
    cw = b.load(2, base, disp, ins.memory_base == Register.RSP)
    b.emit(ir.str_uimm(2, cw, abi.STATE, abi.X87_CW_OFFSET))


def lower_fnstsw(b: Builder) -> None:
    """fnstsw ax / m16: the status word with TOP in bits 11-13."""
    sw, top = b.temp(), _top(b)
    b.emit(ir.ldr_uimm(2, sw, abi.STATE, abi.X87_SW_OFFSET))
    b.emit(ir.orr_reg(0, sw, sw, top, Shift.LSL, 11))
    if b.ins.op0_kind == OpKind.MEMORY:
        _store_memory(b, 2, sw)
    else:
        b.write_reg(b.ins.op0_register, sw)


def lower_fnclex(b: Builder) -> None:
    """fnclex: clear the exception flags, ES and B."""
    _set_condition_codes(b, ZR, 0x80FF)


def lower_fninit(b: Builder) -> None:
    """fninit: control word 0x37F, status word 0, TOP 0, every register empty."""
    t = b.temp()
    b.mov_imm(0, t, abi.X87_CW_DEFAULT)
    b.emit(ir.str_uimm(2, t, abi.STATE, abi.X87_CW_OFFSET))
    b.emit(ir.str_uimm(2, ZR, abi.STATE, abi.X87_SW_OFFSET))
    b.emit(ir.str_uimm(2, ZR, abi.STATE, abi.X87_TOP_OFFSET))
    b.mov_imm(0, t, 0xFF)
    b.emit(ir.str_uimm(2, t, abi.STATE, abi.X87_EMPTY_OFFSET))


def lower_fxam(b: Builder) -> None:
    """fxam: C1 = the sign; C3/C2/C0 = the class (empty: C3 and C0)."""
    top = _top(b)
    se, m = _read(b, _slot(b, top, 0))
    codes = x87_convert.classify(b, se, m)
    c = _codes_to_status(b, codes)
    sign = b.temp()
    b.emit(ir.ubfx(0, sign, se, 15, 1))
    b.emit(ir.orr_reg(0, c, c, sign, Shift.LSL, 9))
    # Empty: C3 and C0 (with the sign's C1), whatever the register holds.
    empty = b.temp()
    b.emit(ir.ldr_uimm(2, empty, abi.STATE, abi.X87_EMPTY_OFFSET))
    b.emit(ir.lsrv(0, empty, empty, _top(b)))
    full = b.branch(ir.tbz, empty, 0)
    b.emit(ir.and_imm(0, c, c, C1))
    b.emit(ir.orr_reg(0, c, c, b.constant(0, C3 | C0)))
    b.place(full)
    _set_condition_codes(b, c, C0 | C1 | C2 | C3)


def _codes_to_status(b: Builder, r: int) -> int:
    """CF/PF/ZF-ordered bits 0/1/2 (x87_convert's compare and classify) -> C0/C2/C3 of the status word."""
    c, t = b.temp(), b.temp()
    b.emit(ir.and_imm(0, c, r, 1))
    b.emit(ir.lsl_imm(0, c, c, 8))
    b.emit(ir.and_imm(0, t, r, 2))
    b.emit(ir.orr_reg(0, c, c, t, Shift.LSL, 9))
    t2 = b.temp()
    b.emit(ir.and_imm(0, t2, r, 4))
    b.emit(ir.orr_reg(0, c, c, t2, Shift.LSL, 12))
    return c


# --- compares ----------------------------------------------------------------------------------

_COMPARE_POPS = {M.FCOM: 0, M.FCOMP: 1, M.FCOMPP: 2, M.FUCOM: 0, M.FUCOMP: 1, M.FUCOMPP: 2, M.FICOM: 0,
                 M.FICOMP: 1, M.FTST: 0, M.FCOMI: 0, M.FCOMIP: 1, M.FUCOMI: 0, M.FUCOMIP: 1}


def _compare_operands(b: Builder) -> tuple[int, int, int, int]:
    ins = b.ins
    if ins.mnemonic == M.FTST:
        c_se, c_m = b.temp(), b.temp()
        b.mov_imm(0, c_se, 0)
        b.mov_imm(1, c_m, 0)
    elif ins.op_count == 1 and ins.op0_kind == OpKind.MEMORY:
        c_se, c_m = _memory_value(b)
    elif ins.op_count == 0:  # fcompp, fucompp: ST(1)
        c_se, c_m = read_st(b, 1)
    else:
        c_se, c_m = read_st(b, _st_index(ins.op1_register))
    a_se, a_m = read_st(b, 0)
    return a_se, a_m, c_se, c_m


def lower_fcom(b: Builder) -> None:
    """fcom/fucom/ficom/ftst (and the popping forms): C3/C2/C0 from the comparison, C1 := 0."""
    r = x87_convert.compare(b, *_compare_operands(b))
    _set_condition_codes(b, _codes_to_status(b, r), C0 | C1 | C2 | C3)
    for _ in range(_COMPARE_POPS[b.ins.mnemonic]):
        pop(b)


def lower_fcomi(b: Builder) -> None:
    """fcomi/fucomi (and the popping forms): ZF/PF/CF from the comparison, OF = SF = AF = 0, C1 := 0."""
    r = x87_convert.compare(b, *_compare_operands(b))
    nzcv, t = b.temp(), b.temp()
    b.emit(ir.and_imm(0, nzcv, r, 4))  # ZF -> Z (bit 30)
    b.emit(ir.lsl_imm(0, nzcv, nzcv, 28))
    b.emit(ir.and_imm(0, t, r, 1))  # CF -> C (bit 29)
    b.emit(ir.orr_reg(0, nzcv, nzcv, t, Shift.LSL, 29))
    b.emit(ir.msr_nzcv(nzcv))
    b.cf_inverted = False
    if b.need & PF:  # PF is set (PF_SRC's low byte has even parity) exactly when bit 1 is: PF_SRC = NOT bit 1
        b.emit(ir.ubfx(0, abi.PF_SRC, r, 1, 1))
        b.emit(ir.eor_imm(0, abi.PF_SRC, abi.PF_SRC, 1))
    if b.need & AF:
        b.emit(ir.mov_reg(1, abi.AF_SRC, ZR))
    _set_condition_codes(b, ZR, C1)
    for _ in range(_COMPARE_POPS[b.ins.mnemonic]):
        pop(b)


# --- arithmetic --------------------------------------------------------------------------------

# mnemonic -> (operation, reversed operands, pops)
_ARITH = {
    M.FADD: ("add", False, False), M.FADDP: ("add", False, True), M.FIADD: ("add", False, False),
    M.FSUB: ("sub", False, False), M.FSUBP: ("sub", False, True), M.FISUB: ("sub", False, False),
    M.FSUBR: ("sub", True, False), M.FSUBRP: ("sub", True, True), M.FISUBR: ("sub", True, False),
    M.FMUL: ("mul", False, False), M.FMULP: ("mul", False, True), M.FIMUL: ("mul", False, False),
    M.FDIV: ("div", False, False), M.FDIVP: ("div", False, True), M.FIDIV: ("div", False, False),
    M.FDIVR: ("div", True, False), M.FDIVRP: ("div", True, True), M.FIDIVR: ("div", True, False),
}


def lower_arith(b: Builder) -> None:
    """dst := dst op src (or src op dst for the r forms); dst is ST(0) for a memory source."""
    ins = b.ins
    operation, reverse, pops = _ARITH[ins.mnemonic]
    if ins.op_count == 1:
        dst = 0
        s_se, s_m = _memory_value(b)
    else:
        dst = _st_index(ins.op0_register)
        s_se, s_m = read_st(b, _st_index(ins.op1_register))
    d_se, d_m = read_st(b, dst)
    a, c = ((s_se, s_m), (d_se, d_m)) if reverse else ((d_se, d_m), (s_se, s_m))
    if operation == "div":
        _zero_divide_flag(b, *c)
    if operation in ("add", "sub"):
        r_se, r_m = x87_arith.add(b, *a, *c, subtract=operation == "sub")
    else:
        r_se, r_m = (x87_arith.mul if operation == "mul" else x87_arith.div)(b, *a, *c)
    write_st(b, dst, r_se, r_m)
    if pops:
        pop(b)


def _zero_divide_flag(b: Builder, se: int, m: int) -> None:
    """A zero divisor sets ZE (and ES and B when ZE is unmasked), as the reference engine's fdiv does."""
    t = b.temp()
    b.emit(ir.orr_reg(1, t, m, se, Shift.LSL, 49))  # the exponent bits only: the sign is shifted out
    nonzero = b.branch(ir.cbnz, 1, t)
    sw, cw = b.temp(), control_word(b)
    b.emit(ir.ldr_uimm(2, sw, abi.STATE, abi.X87_SW_OFFSET))
    b.emit(ir.orr_imm(0, sw, sw, 4))
    unmasked = b.temp()
    b.emit(ir.bic_reg(0, unmasked, sw, cw))
    b.emit(ir.and_imm(0, unmasked, unmasked, 0x3F))
    masked = b.branch(ir.cbz, 1, unmasked)
    b.emit(ir.orr_reg(0, sw, sw, b.constant(0, 0x8080)))
    b.place(masked)
    b.emit(ir.str_uimm(2, sw, abi.STATE, abi.X87_SW_OFFSET))
    b.place(nonzero)


def lower_nop(b: Builder) -> None:
    """fnop, fwait: nothing (translated code raises no x87 exception a wait could deliver)."""


_ROWS: dict[Callable[[Builder], None], str] = {
    lower_fld: "FLD FILD",
    lower_constant: "FLDZ FLD1 FLDPI FLDL2E FLDL2T FLDLG2 FLDLN2",
    lower_fst: "FST FSTP FIST FISTP",
    lower_fxch: "FXCH", lower_sign: "FCHS FABS",
    lower_fcmov: "FCMOVB FCMOVNB FCMOVE FCMOVNE FCMOVBE FCMOVNBE FCMOVU FCMOVNU",
    lower_ffree: "FFREE", lower_stack_pointer: "FINCSTP FDECSTP",
    lower_fnstcw: "FNSTCW", lower_fldcw: "FLDCW", lower_fnstsw: "FNSTSW", lower_fnclex: "FNCLEX",
    lower_fninit: "FNINIT", lower_fxam: "FXAM",
    lower_fcom: "FCOM FCOMP FCOMPP FUCOM FUCOMP FUCOMPP FICOM FICOMP FTST",
    lower_fcomi: "FCOMI FCOMIP FUCOMI FUCOMIP",
    lower_arith: "FADD FADDP FIADD FSUB FSUBP FISUB FSUBR FSUBRP FISUBR FMUL FMULP FIMUL FDIV FDIVP FIDIV FDIVR "
                 "FDIVRP FIDIVR",
    lower_nop: "FNOP WAIT",
}
# fcomi writes the flags itself and fcmov only reads them; every other row hides its routines' use of
# NZCV from the guest.
_UNGUARDED = {lower_fcomi, lower_fcmov}


def merge_into(lowerings: dict[int, tuple[Callable[[Builder], None], bool]]) -> None:
    for lower, names in _ROWS.items():
        row = lower if lower in _UNGUARDED else _guard_flags(lower)
        for name in names.split():
            lowerings[getattr(M, name)] = (row, False)
