"""Lowering of x86-64 instructions: one row per mnemonic in :data:`LOWERINGS`, one semantic function per row.

A semantic function gets the :class:`Builder` (which has the instruction, the
flags it must produce — ``b.need`` — and the flags live after it) and emits the
AArch64 code.  It raises :class:`Unsupported` for a form it does not cover.
Control-flow rows end the block; the driver adds the fall-through exit for the
others.  Flag formulas follow the Intel SDM; where the SDM leaves a flag
undefined the code leaves whatever is cheapest (docs/translator.md lists them).
"""

from __future__ import annotations

from collections.abc import Callable

from iced_x86 import Mnemonic as M
from iced_x86 import OpKind, Register

from fexaot_tool.translate import a64, abi, ir
from fexaot_tool.translate.a64 import C_BIT, V_BIT, ZR, Cond, Shift
from fexaot_tool.translate.abi import ExitReason
from fexaot_tool.translate.builder import (
    AF, CC_A, CC_BE, CC_NP, CC_P, CF, HOST_RSP, NZCV_FLAGS, OF, PF, REASON_ATOMIC, REASON_OPERAND, REGISTERS, SF, ZF,
    Builder, Unsupported,
)

GPR = abi.GPR_HOST
RAX, RCX, RDX = GPR[0], GPR[1], GPR[2]
RBP = GPR[5]


def _sf(size: int) -> int:
    return 1 if size == 8 else 0


def _no_lock(b: Builder) -> None:
    if b.ins.has_lock_prefix:
        raise Unsupported(REASON_ATOMIC, "lock prefix")


def _dest_address(b: Builder) -> tuple[int, int] | None:
    """Compute operand 0's address once when it is memory (read-modify-write)."""
    return b.address(b.ins) if b.ins.op_kind(0) == OpKind.MEMORY else None


def _read_dest(b: Builder, size: int, address: tuple[int, int] | None, zero_extend: bool = False) -> int:
    if address is None:
        return b.read_reg(b.ins.op_register(0), zero_extend)
    return b.load(size, *address, stack=b.ins.memory_base == Register.RSP)


def _result_reg(b: Builder, size: int, address: tuple[int, int] | None) -> int:
    """Where to compute a result for operand 0: the guest register itself for 32/64-bit registers."""
    if address is None:
        return b.dest_reg(b.ins.op_register(0))
    return b.temp()


# --- mov family ------------------------------------------------------------------------

def lower_mov(b: Builder) -> None:
    ins = b.ins
    size = b.op_size(0) if ins.op_kind(0) != OpKind.MEMORY or ins.op_kind(1) != OpKind.REGISTER else b.op_size(1)
    if ins.op_kind(0) == OpKind.REGISTER and ins.op_register(0) not in REGISTERS:
        raise Unsupported(REASON_OPERAND, "mov to a segment or control register")
    if b.is_imm(1):
        if ins.op_kind(0) == OpKind.REGISTER and size >= 4:
            b.mov_imm(_sf(size), b.dest_reg(ins.op_register(0)), b.imm(1, size))
            return
        value = b.imm(1, size)
        src = ZR if value == 0 else b.read_op(1, size)
    else:
        src = b.read_op(1, size)
    if size == 4 and ins.op_kind(0) == OpKind.REGISTER:
        b.emit(ir.mov_reg(0, b.dest_reg(ins.op_register(0)), src))  # even mov esi, esi: it zero-extends
        return
    b.write_op(0, size, src)


def lower_movzx(b: Builder) -> None:
    src = b.read_op(1, b.op_size(1), zero_extend=True)
    b.write_reg(b.ins.op_register(0), src)


def lower_movsx(b: Builder) -> None:
    ins = b.ins
    dsize, ssize = b.op_size(0), b.op_size(1)
    if ins.op_kind(1) == OpKind.REGISTER:
        src = b.read_reg_sext(ins.op_register(1))
    else:
        base, disp = b.address(ins)
        raw = b.load(ssize, base, disp, ins.memory_base == Register.RSP)
        src = raw
        if ssize < 8:
            b.emit(ir.sbfx(1, raw, raw, 0, ssize * 8))
    if dsize == 4:
        b.emit(ir.mov_reg(0, b.dest_reg(ins.op_register(0)), src))
    else:
        b.write_reg(ins.op_register(0), src)


def lower_lea(b: Builder) -> None:
    ins = b.ins
    if ins.segment_prefix != Register.NONE:
        raise Unsupported(REASON_OPERAND, "lea with a segment prefix")
    size = b.op_size(0)
    base, disp = b.address(ins)
    reg = ins.op_register(0)
    if size == 8:
        dst = b.dest_reg(reg)
        if disp:
            b.add_const(dst, base, disp)
        elif base != dst:
            b.emit(ir.mov_reg(1, dst, base))
        return
    address = base
    if disp:
        address = b.temp()
        b.add_const(address, base, disp)
    if size == 4:
        b.emit(ir.mov_reg(0, b.dest_reg(reg), address))  # always: a 32-bit write zero-extends
    else:
        b.write_reg(reg, address)


# --- add/sub/logic ---------------------------------------------------------------------

_ADD, _SUB, _AND, _OR, _XOR, _ADC, _SBB = range(7)
_ARITH_OF = {
    M.ADD: (_ADD, True), M.SUB: (_SUB, True), M.CMP: (_SUB, False), M.AND: (_AND, True),
    M.TEST: (_AND, False), M.OR: (_OR, True), M.XOR: (_XOR, True), M.ADC: (_ADC, True), M.SBB: (_SBB, True),
}
_LOGICAL_REG = {_AND: ir.and_reg, _OR: ir.orr_reg, _XOR: ir.eor_reg}
_LOGICAL_IMM = {_AND: ir.and_imm, _OR: ir.orr_imm, _XOR: ir.eor_imm}


def lower_binary(b: Builder) -> None:
    """add, sub, cmp, and, test, or, xor, adc, sbb: one shape, picked by the mnemonic."""
    _no_lock(b)
    ins = b.ins
    op, writes = _ARITH_OF[ins.mnemonic]
    size = b.op_size(0)
    sf = _sf(size)
    bits = size * 8
    address = _dest_address(b)
    a = _read_dest(b, size, address)
    # xor r, r / sub r, r: the value is 0 whatever r holds.
    zero_idiom = (writes and op in (_XOR, _SUB) and address is None and ins.op_kind(1) == OpKind.REGISTER
                  and ins.op_register(0) == ins.op_register(1))
    if zero_idiom:
        a = ZR
    need = b.need
    if not writes and not need and address is None:
        return  # cmp/test whose flags nobody reads (a memory operand is still loaded: it may fault)
    flags = bool(need & NZCV_FLAGS)
    dst = _result_reg(b, size, address) if writes else (abi.PF_SRC if need & PF else b.temp())
    imm = 0 if zero_idiom else b.imm(1, size) if b.is_imm(1) else None
    if op in (_AND, _OR, _XOR):
        if imm is not None and a64.encode_bitmask(imm, 64 if sf else 32):
            if op == _AND and flags and size >= 4:
                b.emit(ir.ands_imm(sf, dst, a, imm))
            else:
                b.emit(_LOGICAL_IMM[op](sf, dst, a, imm))
                if flags:
                    b.logic_flags(size, dst)
        else:
            src = b.read_op(1, size) if imm is None or imm else ZR
            if op == _AND and flags and size >= 4:
                b.emit(ir.ands_reg(sf, dst, a, src))
            else:
                b.emit(_LOGICAL_REG[op](sf, dst, a, src))
                if flags:
                    b.logic_flags(size, dst)
        if flags and op == _AND and size >= 4:
            b.cf_inverted = False
        b.write_pf(dst)
        if writes:
            b.write_op(0, size, dst, address)
        return
    if op in (_ADC, _SBB):
        src = b.read_op(1, size) if imm is None or imm else ZR
        if need & AF:
            b.emit(ir.eor_reg(sf, abi.AF_SRC, a, src))
        # adcs adds C; sbcs subtracts NOT C: so C must be CF for adc and NOT CF for sbb.
        b.set_carry_inverted(op == _SBB)
        if flags and size < 4:
            _narrow_carry_op(b, op, size, dst, a, src)
        elif op == _ADC:
            b.emit((ir.adcs if flags else ir.adc)(sf, dst, a, src))
        else:
            b.emit((ir.sbcs if flags else ir.sbc)(sf, dst, a, src))
        if not flags:
            b.cf_inverted = False  # C untouched, but CF is dead: nothing to track
        _finish_arith(b, size, dst, address, writes)
        return
    subtract = op == _SUB
    if size >= 4:
        # Immediate forms read SP, not XZR, as register 31: the zero idiom takes the register form.
        small = not zero_idiom and imm is not None and (imm < 4096 or (1 << bits) - imm < 4096)
        src = ZR if zero_idiom else None if small else b.read_op(1, size)
        if need & AF:
            b.emit(ir.eor_reg(sf, abi.AF_SRC, a, src if src is not None else b.read_op(1, size)))
        if small:
            # add #-k == sub #k with the same NZCV (C is the carry of a + 2^n - k either way).
            negate = imm >= 4096
            k = (1 << bits) - imm if negate else imm
            use_sub = subtract != negate
            encoder = {(False, False): ir.add_imm, (False, True): ir.adds_imm,
                       (True, False): ir.sub_imm, (True, True): ir.subs_imm}[use_sub, flags]
            b.emit(encoder(sf, dst, a, k))
        else:
            encoder = {(False, False): ir.add_reg, (False, True): ir.adds_reg,
                       (True, False): ir.sub_reg, (True, True): ir.subs_reg}[subtract, flags]
            b.emit(encoder(sf, dst, a, src))
        if flags:
            b.cf_inverted = subtract
    else:
        src = ZR if zero_idiom else b.read_op(1, size)
        if need & AF:
            b.emit(ir.eor_reg(0, abi.AF_SRC, a, src))
        if flags:
            # Flags of an 8/16-bit op: do it in the top bits of a w register.
            shift = 32 - bits
            t = b.temp()
            b.emit(ir.lsl_imm(0, t, a, shift))
            b.emit((ir.subs_reg if subtract else ir.adds_reg)(0, t, t, src, Shift.LSL, shift))
            b.emit(ir.lsr_imm(0, dst, t, shift))
            b.cf_inverted = subtract
        else:
            b.emit((ir.sub_reg if subtract else ir.add_reg)(0, dst, a, src))
    _finish_arith(b, size, dst, address, writes)


def _narrow_carry_op(b: Builder, op: int, size: int, dst: int, a: int, src: int) -> None:
    """8/16-bit adc/sbb with flags: the carry-in must reach the operands' top bits.

    With the operands in the top bits of a w register, sbcs's NOT C borrows
    through the all-ones low bits of NOT src; for adcs the low bits of the first
    operand are set to ones so that C carries through them.  C and V are then
    the narrow op's; N and Z come from the narrow result (setf8/setf16, which
    clobber V, so V is put back from the saved NZCV).
    """
    shift = 32 - size * 8
    t = b.temp()
    b.emit(ir.lsl_imm(0, t, a, shift))
    if op == _ADC:
        b.emit(ir.orr_imm(0, t, t, (1 << shift) - 1))
    shifted = b.temp()
    b.emit(ir.lsl_imm(0, shifted, src, shift))
    b.emit((ir.adcs if op == _ADC else ir.sbcs)(0, t, t, shifted))
    saved = b.temp()
    b.emit(ir.mrs_nzcv(saved))
    b.emit(ir.lsr_imm(0, dst, t, shift))
    b.emit((ir.setf8 if size == 1 else ir.setf16)(dst))
    b.emit(ir.rmif(saved, 28, V_BIT))


def _finish_arith(b: Builder, size: int, dst: int, address, writes: bool) -> None:
    if b.need & AF:
        b.emit(ir.eor_reg(1, abi.AF_SRC, abi.AF_SRC, dst))
    b.write_pf(dst)
    if writes:
        b.write_op(0, size, dst, address)


def lower_incdec(b: Builder) -> None:
    _no_lock(b)
    ins = b.ins
    size = b.op_size(0)
    sf = _sf(size)
    subtract = ins.mnemonic == M.DEC
    address = _dest_address(b)
    a = _read_dest(b, size, address)
    dst = _result_reg(b, size, address)
    need = b.need
    if need & AF:
        b.emit(ir.eor_imm(sf, abi.AF_SRC, a, 1))
    if need & (OF | SF | ZF):
        saved = None
        if b.live_after & CF:
            saved = b.temp()  # inc/dec leave CF alone: keep C (inverted or not) across the adds
            b.emit(ir.mrs_nzcv(saved))
        if size >= 4:
            b.emit((ir.subs_imm if subtract else ir.adds_imm)(sf, dst, a, 1))
        else:
            shift = 32 - size * 8
            t, one = b.temp(), b.temp()
            b.emit(ir.lsl_imm(0, t, a, shift))
            b.emit(ir.movz(0, one, 1 << (shift - 16), 1) if shift >= 16 else ir.movz(0, one, 1 << shift))
            b.emit((ir.subs_reg if subtract else ir.adds_reg)(0, t, t, one))
            b.emit(ir.lsr_imm(0, dst, t, shift))
        if saved is not None:
            b.emit(ir.rmif(saved, 28, C_BIT))
    else:
        b.emit((ir.sub_imm if subtract else ir.add_imm)(sf, dst, a, 1))
    _finish_arith(b, size, dst, address, True)


def lower_neg(b: Builder) -> None:
    _no_lock(b)
    size = b.op_size(0)
    sf = _sf(size)
    address = _dest_address(b)
    a = _read_dest(b, size, address)
    dst = _result_reg(b, size, address)
    need = b.need
    if need & AF:
        b.emit(ir.mov_reg(1, abi.AF_SRC, a))
    if need & NZCV_FLAGS:
        if size >= 4:
            b.emit(ir.subs_reg(sf, dst, ZR, a))
        else:
            shift = 32 - size * 8
            b.emit(ir.subs_reg(0, dst, ZR, a, Shift.LSL, shift))
            b.emit(ir.lsr_imm(0, dst, dst, shift))
        b.cf_inverted = True  # 0 - a: C = (a == 0) = NOT CF
    else:
        b.emit(ir.sub_reg(sf, dst, ZR, a))
    _finish_arith(b, size, dst, address, True)


def lower_not(b: Builder) -> None:
    _no_lock(b)
    size = b.op_size(0)
    address = _dest_address(b)
    a = _read_dest(b, size, address)
    dst = _result_reg(b, size, address)
    b.emit(ir.orn_reg(_sf(size), dst, ZR, a))
    b.write_op(0, size, dst, address)


# --- shifts and rotates ----------------------------------------------------------------

def _count(b: Builder, size: int) -> tuple[int | None, int | None]:
    """(constant count, or None) and (register holding the masked CL count, or None)."""
    mask = 63 if size == 8 else 31
    if b.is_imm(1):
        return b.ins.immediate(1) & mask, None
    t = b.temp()
    b.emit(ir.and_imm(0, t, RCX, mask))
    return None, t


def _shifted_by_count_minus_one(b: Builder, mnemonic: int, a: int, constant: int | None, creg: int | None) -> int:
    last = b.temp()
    signed = mnemonic == M.SAR
    if creg is None:
        n = constant - 1
        if mnemonic == M.SHL:
            b.emit(ir.lsl_imm(1, last, a, min(n, 63)) if n else ir.mov_reg(1, last, a))
        else:
            b.emit((ir.asr_imm if signed else ir.lsr_imm)(1, last, a, min(n, 63)) if n else ir.mov_reg(1, last, a))
    else:
        c1 = b.temp()
        b.emit(ir.sub_imm(0, c1, creg, 1))  # count 0 is skipped, so no wrap
        b.emit({M.SHL: ir.lslv, M.SHR: ir.lsrv, M.SAR: ir.asrv}[mnemonic](1, last, a, c1))
    return last


def _zero_count(b: Builder, size: int) -> None:
    """A masked count of 0 changes nothing, but a 32-bit register operand is still written (zero-extended)."""
    if size == 4 and b.ins.op_kind(0) == OpKind.REGISTER:
        reg = b.dest_reg(b.ins.op_register(0))
        b.emit(ir.mov_reg(0, reg, reg))


def lower_shift(b: Builder) -> None:
    """shl/sal, shr, sar.  Flags as QEMU computes them, which is the SDM's wherever it defines them."""
    ins = b.ins
    mnemonic = ins.mnemonic
    size = b.op_size(0)
    bits = size * 8
    constant, creg = _count(b, size)
    if constant == 0:
        _zero_count(b, size)
        return
    address = _dest_address(b)
    signed = mnemonic == M.SAR
    if signed:
        raw = _read_dest(b, size, address)
        a = raw
        if size < 8:
            a = b.temp()
            b.emit(ir.sbfx(1, a, raw, 0, bits))
    else:
        a = _read_dest(b, size, address, zero_extend=size <= 4)
    sfw = 0 if size == 4 else 1
    dst = _result_reg(b, size, address)
    need = b.need
    # ``last``: the operand shifted by count-1, whose edge bit is the last bit shifted out.
    # Computed first: the result may overwrite the operand's register.
    last = _shifted_by_count_minus_one(b, mnemonic, a, constant, creg) if need else None
    skip = None
    if creg is None:
        if mnemonic == M.SHL:
            b.emit(ir.lsl_imm(sfw, dst, a, constant) if constant < (64 if sfw else 32) else ir.mov_reg(0, dst, ZR))
        elif signed:
            b.emit(ir.asr_imm(sfw, dst, a, min(constant, 63 if sfw else 31)))
        else:
            b.emit(ir.lsr_imm(sfw, dst, a, constant) if constant < (64 if sfw else 32) else ir.mov_reg(0, dst, ZR))
    else:
        encoder = {M.SHL: ir.lslv, M.SHR: ir.lsrv, M.SAR: ir.asrv}[mnemonic]
        b.emit(encoder(sfw, dst, a, creg))
    b.write_op(0, size, dst, address)
    if not need:
        return
    if creg is not None:
        b.normalise_carry()  # both paths (count 0: flags unchanged) must agree on C's meaning
        skip = b.branch(ir.cbz, 0, creg)
    if need & NZCV_FLAGS:
        b.emit(ir.adds_reg(_sf(size), ZR, ZR, dst, Shift.LSL, 0 if size >= 4 else 32 - bits))
        b.insert_flag(last, bits - 1 if mnemonic == M.SHL else 0, C_BIT)
        if need & OF:
            # OF = MSB(result) XOR MSB(operand shifted by count-1) (SDM for count 1).
            t = b.temp()
            b.emit(ir.eor_reg(1, t, dst, last))
            b.insert_flag(t, bits - 1, V_BIT)
    b.write_pf(dst)
    if skip is not None:
        b.place(skip)


def lower_rotate(b: Builder) -> None:
    """rol/ror: only CF and OF change (SF, ZF, PF, AF are untouched)."""
    ins = b.ins
    size = b.op_size(0)
    bits = size * 8
    rol = ins.mnemonic == M.ROL
    constant, creg = _count(b, size)
    if constant == 0:
        _zero_count(b, size)
        return
    address = _dest_address(b)
    a = _read_dest(b, size, address, zero_extend=size < 4)
    sf = _sf(size)
    if size < 4:
        # Replicate the value across 32 bits so a 32-bit rotate rotates it within itself.
        rep = b.temp()
        b.emit(ir.orr_reg(0, rep, a, a, Shift.LSL, bits))
        if size == 1:
            b.emit(ir.orr_reg(0, rep, rep, rep, Shift.LSL, 16))
        a = rep
    dst = _result_reg(b, size, address)
    if creg is None:
        amount = constant % bits
        amount = (bits - amount) % bits if rol else amount
        b.emit(ir.ror_imm(sf, dst, a, amount) if amount else ir.mov_reg(sf, dst, a))
    else:
        amount = creg
        if rol:
            amount = b.temp()
            b.emit(ir.sub_reg(0, amount, ZR, creg))  # rol by c == ror by -c (mod the width)
        b.emit(ir.rorv(sf, dst, a, amount))
    b.write_op(0, size, dst, address)
    need = b.need
    if not need & (CF | OF):
        return
    skip = None
    if creg is not None:
        b.normalise_carry()
        skip = b.branch(ir.cbz, 0, creg)
    if rol:
        b.insert_flag(dst, 0, C_BIT)  # CF = LSB(result); OF = MSB(result) XOR CF
        if need & OF:
            t = b.temp()
            b.emit(ir.eor_reg(1, t, dst, dst, Shift.LSL, bits - 1))
            b.insert_flag(t, bits - 1, V_BIT)
    else:
        b.insert_flag(dst, bits - 1, C_BIT)  # CF = MSB(result); OF = MSB XOR the bit below it
        if need & OF:
            t = b.temp()
            b.emit(ir.eor_reg(1, t, dst, dst, Shift.LSL, 1))
            b.insert_flag(t, bits - 1, V_BIT)
    if skip is not None:
        b.place(skip)


def lower_double_shift(b: Builder) -> None:
    """shld/shrd (32/64-bit; the 16-bit forms' counts above 16 are undefined, so not covered)."""
    ins = b.ins
    size = b.op_size(0)
    if size < 4:
        raise Unsupported(REASON_OPERAND, "16-bit shld/shrd")
    bits = size * 8
    sf = _sf(size)
    left = ins.mnemonic == M.SHLD
    if ins.op_kind(2) == OpKind.REGISTER:
        constant, creg = None, b.temp()
        b.emit(ir.and_imm(0, creg, RCX, bits - 1))
    else:
        constant, creg = ins.immediate(2) & (bits - 1), None
    if constant == 0:
        _zero_count(b, size)
        return
    address = _dest_address(b)
    a = _read_dest(b, size, address)
    src = b.read_reg(ins.op_register(1))
    dst = b.temp()
    zero_skip = None
    if creg is None:
        b.emit(ir.extr(sf, dst, a, src, bits - constant) if left else ir.extr(sf, dst, src, a, constant))
    else:
        b.normalise_carry()
        zero_skip = b.branch(ir.cbz, 0, creg)
        inv = b.temp()
        b.emit(ir.sub_reg(0, inv, ZR, creg))  # bits - count, modulo the width
        t = b.temp()
        if left:
            b.emit(ir.lslv(sf, dst, a, creg))
            b.emit(ir.lsrv(sf, t, src, inv))
        else:
            b.emit(ir.lsrv(sf, dst, a, creg))
            b.emit(ir.lslv(sf, t, src, inv))
        b.emit(ir.orr_reg(sf, dst, dst, t))
    need = b.need
    if need:
        last = b.temp()
        if creg is None:
            n = constant - 1
            b.emit((ir.lsl_imm if left else ir.lsr_imm)(sf, last, a, n) if n else ir.mov_reg(sf, last, a))
        else:
            c1 = b.temp()
            b.emit(ir.sub_imm(0, c1, creg, 1))
            b.emit((ir.lslv if left else ir.lsrv)(sf, last, a, c1))
        if need & NZCV_FLAGS:
            b.emit(ir.adds_reg(sf, ZR, ZR, dst))
            b.insert_flag(last, bits - 1 if left else 0, C_BIT)
            if need & OF:
                t = b.temp()
                b.emit(ir.eor_reg(1, t, dst, a))  # OF: the sign changed (SDM, count 1)
                b.insert_flag(t, bits - 1, V_BIT)
        b.write_pf(dst)
    b.write_op(0, size, dst, address)
    if zero_skip is not None:
        done = b.branch(ir.b)
        b.place(zero_skip)
        if address is None and size == 4:
            reg = b.dest_reg(ins.op_register(0))
            b.emit(ir.mov_reg(0, reg, reg))  # a 32-bit destination is written (zero-extended) even for count 0
        b.place(done)


# --- multiply and divide ---------------------------------------------------------------

def _set_cf_of(b: Builder, overflow_cond: Cond) -> None:
    """CF = OF = condition (mul/imul); SF, ZF, AF, PF are undefined."""
    t = b.temp()
    b.emit(ir.csetm(1, t, overflow_cond))
    b.emit(ir.rmif(t, 0, C_BIT | V_BIT))
    b.cf_inverted = False


def lower_mul_one(b: Builder) -> None:
    """mul/imul r/m: rdx:rax (or ax, dx:ax, edx:eax) = rax * operand."""
    ins = b.ins
    size = b.op_size(0)
    signed = ins.mnemonic == M.IMUL
    flags = b.need & (CF | OF)
    if size == 8:
        src = b.read_op(0, 8)
        hi, lo = b.temp(), b.temp()
        b.emit((ir.smulh if signed else ir.umulh)(hi, RAX, src))
        b.emit(ir.madd(1, lo, RAX, src, ZR))
        b.emit(ir.mov_reg(1, RAX, lo))
        b.emit(ir.mov_reg(1, RDX, hi))
        if flags:
            b.emit(ir.subs_reg(1, ZR, RDX, RAX, Shift.ASR, 63) if signed else ir.subs_reg(1, ZR, RDX, ZR))
            _set_cf_of(b, Cond.NE)
        return
    bits = size * 8
    if signed:
        src = b.temp()
        raw = b.read_op(0, size)
        b.emit(ir.sbfx(1, src, raw, 0, bits))
        x = b.temp()
        b.emit(ir.sbfx(1, x, RAX, 0, bits))
    else:
        src = b.read_op(0, size, zero_extend=True)
        x = b.temp()
        b.emit(ir.ubfx(1, x, RAX, 0, bits))
    p = b.temp()
    b.emit(ir.madd(1, p, x, src, ZR))
    if size == 1:
        b.emit(ir.bfi(1, RAX, p, 0, 16))
    elif size == 2:
        b.emit(ir.bfi(1, RAX, p, 0, 16))
        hi = b.temp()
        b.emit(ir.lsr_imm(1, hi, p, 16))
        b.emit(ir.bfi(1, RDX, hi, 0, 16))
    else:
        b.emit(ir.mov_reg(0, RAX, p))
        b.emit(ir.lsr_imm(1, RDX, p, 32))
    if flags:
        if signed:
            b.emit(ir.sbfx(1, x, p, 0, bits))
            b.emit(ir.subs_reg(1, ZR, p, x))
        else:
            b.emit(ir.subs_reg(1, ZR, ZR, p, Shift.LSR, bits))
        _set_cf_of(b, Cond.NE)


def lower_imul(b: Builder) -> None:
    ins = b.ins
    if ins.op_count == 1:
        lower_mul_one(b)
        return
    size = b.op_size(0)
    bits = size * 8
    if ins.op_count == 3:
        left = b.read_op(1, size)
        right = b.temp()
        b.mov_imm(1, right, ins.immediate(2))
    else:
        left = b.read_reg(ins.op_register(0))
        right = b.read_op(1, size)
    flags = b.need & (CF | OF)
    dst = b.dest_reg(ins.op_register(0))
    if size == 8:
        if flags:
            hi = b.temp()
            b.emit(ir.smulh(hi, left, right))
        b.emit(ir.madd(1, dst, left, right, ZR))
        if flags:
            b.emit(ir.subs_reg(1, ZR, hi, dst, Shift.ASR, 63))
            _set_cf_of(b, Cond.NE)
        return
    x, y, p = b.temp(), b.temp(), b.temp()
    b.emit(ir.sbfx(1, x, left, 0, bits))
    b.emit(ir.sbfx(1, y, right, 0, bits))
    b.emit(ir.madd(1, p, x, y, ZR))
    b.write_reg(ins.op_register(0), p)
    if flags:
        b.emit(ir.sbfx(1, x, p, 0, bits))
        b.emit(ir.subs_reg(1, ZR, p, x))
        _set_cf_of(b, Cond.NE)


def lower_div(b: Builder) -> None:
    """div/idiv: #DE (divisor 0 or quotient overflow) exits to the runtime; all flags undefined."""
    ins = b.ins
    size = b.op_size(0)
    signed = ins.mnemonic == M.IDIV
    flags = _save_flags(b)
    if size == 8:
        _div128(b, signed, flags)
        return
    bits = size * 8
    # Dividend (ax, dx:ax or edx:eax) and divisor, extended to 64 bits.
    n, d = b.temp(), b.temp()
    raw = b.read_op(0, size)
    b.emit((ir.sbfx if signed else ir.ubfx)(1, d, raw, 0, bits))
    if size == 1:
        b.emit((ir.sbfx if signed else ir.ubfx)(1, n, RAX, 0, 16))
    else:
        b.emit(ir.ubfx(1, n, RAX, 0, bits))
        b.emit(ir.bfi(1, n, RDX, bits, bits))
        if signed:
            b.emit(ir.sbfx(1, n, n, 0, 2 * bits))
    de = b.branch(ir.cbz, 1, d)
    q, r = b.temp(), b.temp()
    b.emit((ir.sdiv if signed else ir.udiv)(1, q, n, d))
    b.emit(ir.msub(1, r, q, d, n))
    # The quotient must fit the operand size: sign-extending (signed) or zero-extending its low bits gives it back.
    t = b.temp()
    b.emit((ir.sbfx if signed else ir.ubfx)(1, t, q, 0, bits))
    b.emit(ir.subs_reg(1, ZR, t, q))
    overflow = b.branch(ir.b_cond, Cond.NE)
    if size == 1:
        b.emit(ir.bfi(1, RAX, q, 0, 8))
        b.emit(ir.bfi(1, RAX, r, 8, 8))
    elif size == 2:
        b.emit(ir.bfi(1, RAX, q, 0, 16))
        b.emit(ir.bfi(1, RDX, r, 0, 16))
    else:
        b.emit(ir.mov_reg(0, RAX, q))
        b.emit(ir.mov_reg(0, RDX, r))
    _divide_error_path(b, [de, overflow], flags)


def _save_flags(b: Builder) -> tuple[int, bool]:
    """A faulting div changes no flag, but the division code uses NZCV: keep them for the #DE exit."""
    t = b.temp()
    b.emit(ir.mrs_nzcv(t))
    return t, b.cf_inverted


def _divide_error_path(b: Builder, branches: list[ir.Label], flags: tuple[int, bool]) -> None:
    """Skip over an out-of-line #DE exit that ``branches`` go to."""
    skip = b.branch(ir.b)
    for target in branches:
        b.place(target)
    b.emit(ir.msr_nzcv(flags[0]))
    saved = flags[1]
    b.exit_to_runtime(ExitReason.DIVIDE_ERROR, b.ins.ip)
    b.cf_inverted = saved
    b.place(skip)
    b.cf_inverted = False


def _div128(b: Builder, signed: bool, flags: tuple[int, bool]) -> None:
    """rdx:rax / r/m64 by restoring shift-subtract division (AArch64 has no 128/64 divide)."""
    d = b.temp()
    src = b.read_op(0, 8)
    b.emit(ir.mov_reg(1, d, src))
    hi, lo, q, c, t, neg = (b.temp() for _ in range(6))
    b.emit(ir.mov_reg(1, hi, RDX))
    b.emit(ir.mov_reg(1, lo, RAX))
    if signed:
        # |dividend| (128-bit negate if negative), |divisor|; neg = sign of the quotient (bit 63) and of the remainder (bit 0).
        b.emit(ir.subs_imm(1, ZR, hi, 0))
        b.emit(ir.lsr_imm(1, neg, hi, 63))
        skip = b.branch(ir.b_cond, Cond.PL)
        b.emit(ir.subs_reg(1, lo, ZR, lo))
        b.emit(ir.sbc(1, hi, ZR, hi))
        b.place(skip)
        b.emit(ir.eor_reg(1, t, neg, d, Shift.LSR, 63))  # quotient sign
        b.emit(ir.orr_reg(1, neg, neg, t, Shift.LSL, 1))  # bit 0: dividend sign, bit 1: quotient sign
        b.emit(ir.subs_imm(1, ZR, d, 0))
        b.emit(ir.csneg(1, d, d, d, Cond.PL))
    de = b.branch(ir.cbz, 1, d)
    b.emit(ir.subs_reg(1, ZR, hi, d))
    too_big = b.branch(ir.b_cond, Cond.HS)  # the quotient needs more than 64 bits
    b.emit(ir.movz(0, c, 64))
    b.emit(ir.movz(0, q, 0))
    loop = b.label()
    b.emit(ir.lsr_imm(1, t, hi, 63))
    b.emit(ir.extr(1, hi, hi, lo, 63))
    b.emit(ir.lsl_imm(1, lo, lo, 1))
    b.emit(ir.subs_reg(1, ZR, hi, d))
    b.emit(ir.csinc(1, t, t, t, Cond.LO))  # t = carry-out | (hi >= d), as 1 or more
    b.emit(ir.subs_imm(1, ZR, t, 0))
    b.emit(ir.csel(1, t, d, ZR, Cond.NE))
    b.emit(ir.sub_reg(1, hi, hi, t))
    b.emit(ir.cset(1, t, Cond.NE))
    b.emit(ir.orr_reg(1, q, t, q, Shift.LSL, 1))
    b.emit(ir.subs_imm(0, c, c, 1))
    b.emit(ir.b_cond(Cond.NE, loop))
    branches = [de, too_big]
    if signed:
        # The quotient must fit: below 2^63, or up to 2^63 when it is negative.
        positive = b.branch(ir.tbz, neg, 1)  # to the check of a positive quotient
        negated = b.branch(ir.tbz, q, 63)  # |q| < 2^63: negate it
        b.emit(ir.lsl_imm(1, t, q, 1))
        over_neg = b.branch(ir.cbnz, 1, t)  # q > 2^63
        b.place(negated)
        b.emit(ir.sub_reg(1, q, ZR, q))
        checked = b.branch(ir.b)
        b.place(positive)
        over_pos = b.branch(ir.tbnz, q, 63)
        b.place(checked)
        remainder = b.branch(ir.tbz, neg, 0)
        b.emit(ir.sub_reg(1, hi, ZR, hi))  # the remainder has the dividend's sign
        b.place(remainder)
        branches += [over_neg, over_pos]
    b.emit(ir.mov_reg(1, RAX, q))
    b.emit(ir.mov_reg(1, RDX, hi))
    _divide_error_path(b, branches, flags)


# --- bits ----------------------------------------------------------------------------------

def lower_bt(b: Builder) -> None:
    """bt/bts/btr/btc: CF = the bit; a register offset on memory addresses the bit string."""
    _no_lock(b)
    ins = b.ins
    mnemonic = ins.mnemonic
    size = b.op_size(0)
    bits = size * 8
    memory = ins.op_kind(0) == OpKind.MEMORY
    if memory:
        # Byte-granular access: same bits, and x86 allows the bit string to be unaligned.
        base, disp = b.address(ins)
        addr = b.temp()
        b.add_const(addr, base, disp)
        if b.is_imm(1):
            offset = ins.immediate(1) & (bits - 1)
            if offset >> 3:
                b.add_const(addr, addr, offset >> 3)
            bit_reg = None
            bit = offset & 7
        else:
            off = b.read_reg_sext(ins.op_register(1))
            b.emit(ir.add_reg(1, addr, addr, off, Shift.ASR, 3))
            bit_reg = b.temp()
            b.emit(ir.and_imm(0, bit_reg, off, 7))
            bit = None
        value = b.load(1, addr, 0, ins.memory_base == Register.RSP)
    else:
        value = b.read_reg(ins.op_register(0))
        if b.is_imm(1):
            bit_reg, bit = None, ins.immediate(1) & (bits - 1)
        else:
            bit_reg = b.temp()
            b.emit(ir.and_imm(0, bit_reg, b.read_reg(ins.op_register(1)), bits - 1))
            bit = None
    if b.need & CF:
        if bit_reg is None:
            b.insert_flag(value, bit, C_BIT)
        else:
            t = b.temp()
            b.emit(ir.lsrv(1, t, value, bit_reg))
            b.insert_flag(t, 0, C_BIT)
    if mnemonic == M.BT:
        return
    if bit_reg is None:
        mask_value = 1 << bit
        new = b.temp()
        op = {M.BTS: ir.orr_imm, M.BTR: ir.and_imm, M.BTC: ir.eor_imm}[mnemonic]
        b.emit(op(1, new, value, ~mask_value & ((1 << 64) - 1) if mnemonic == M.BTR else mask_value))
    else:
        one, new = b.temp(), b.temp()
        b.emit(ir.movz(1, one, 1))
        b.emit(ir.lslv(1, one, one, bit_reg))
        op = {M.BTS: ir.orr_reg, M.BTR: ir.bic_reg, M.BTC: ir.eor_reg}[mnemonic]
        b.emit(op(1, new, value, one))
    if memory:
        b.store(1, new, addr, 0, ins.memory_base == Register.RSP)
    else:
        b.write_reg(ins.op_register(0), new)


def lower_bitscan(b: Builder) -> None:
    """bsf/bsr: ZF = (source == 0); a zero source leaves the destination's value (as QEMU does)."""
    ins = b.ins
    size = b.op_size(0)
    src = b.read_op(1, size, zero_extend=True)
    t = b.temp()
    if ins.mnemonic == M.BSF:
        b.emit(ir.rbit(1, t, src))
        b.emit(ir.clz(1, t, t))
    else:
        b.emit(ir.clz(1, t, src))
        b.emit(ir.sub_imm(1, t, t, 63))
        b.emit(ir.sub_reg(1, t, ZR, t))  # 63 - clz
    b.emit(ir.subs_imm(1, ZR, src, 0))
    b.cf_inverted = False
    old = b.read_reg(ins.op_register(0))
    dst = b.dest_reg(ins.op_register(0))
    b.emit(ir.csel(_sf(size), dst, old, t, Cond.EQ))
    if size < 4:
        b.write_reg(ins.op_register(0), dst)
    if b.need & PF:
        b.emit(ir.mov_reg(1, abi.PF_SRC, t))


def lower_count_zeros(b: Builder) -> None:
    """tzcnt/lzcnt: CF = (source == 0), ZF = (result == 0)."""
    ins = b.ins
    size = b.op_size(0)
    bits = size * 8
    src = b.read_op(1, size, zero_extend=True)
    t = b.temp()
    if ins.mnemonic == M.TZCNT:
        if bits < 64:
            b.emit(ir.orr_imm(1, t, src, 1 << bits))  # a zero source counts to the operand size
            b.emit(ir.rbit(1, t, t))
        else:
            b.emit(ir.rbit(1, t, src))
        b.emit(ir.clz(1, t, t))
    else:
        b.emit(ir.clz(1, t, src))
        if bits < 64:
            b.emit(ir.sub_imm(1, t, t, 64 - bits))
    if b.need & NZCV_FLAGS:
        b.emit(ir.subs_imm(1, ZR, t, 0))
        b.insert_flag(t, bits.bit_length() - 1, C_BIT)  # result == size exactly when the source is 0
    b.write_reg(ins.op_register(0), t)
    if b.need & PF:
        b.emit(ir.mov_reg(1, abi.PF_SRC, t))


def lower_popcnt(b: Builder) -> None:
    """popcnt by SWAR (no vector register needed); ZF = (source == 0), others 0."""
    size = b.op_size(0)
    src = b.read_op(1, size, zero_extend=True)
    x, t = b.temp(), b.temp()
    b.emit(ir.lsr_imm(1, t, src, 1))
    b.emit(ir.and_imm(1, t, t, 0x5555555555555555))
    b.emit(ir.sub_reg(1, x, src, t))
    b.emit(ir.lsr_imm(1, t, x, 2))
    b.emit(ir.and_imm(1, t, t, 0x3333333333333333))
    b.emit(ir.and_imm(1, x, x, 0x3333333333333333))
    b.emit(ir.add_reg(1, x, x, t))
    b.emit(ir.add_reg(1, x, x, x, Shift.LSR, 4))
    b.emit(ir.and_imm(1, x, x, 0x0F0F0F0F0F0F0F0F))
    b.emit(ir.add_reg(1, x, x, x, Shift.LSR, 8))
    b.emit(ir.add_reg(1, x, x, x, Shift.LSR, 16))
    b.emit(ir.add_reg(1, x, x, x, Shift.LSR, 32))
    b.emit(ir.and_imm(1, x, x, 0x7F))
    if b.need & NZCV_FLAGS:
        b.emit(ir.ands_reg(1, ZR, x, x))
        b.cf_inverted = False
    if b.need & PF:
        b.emit(ir.movz(1, abi.PF_SRC, 1))  # odd parity: PF = 0
    if b.need & AF:
        b.emit(ir.movz(1, abi.AF_SRC, 0))
    b.write_reg(b.ins.op_register(0), x)


def lower_bswap(b: Builder) -> None:
    size = b.op_size(0)
    if size < 4:
        raise Unsupported(REASON_OPERAND, "16-bit bswap (undefined)")
    reg = b.ins.op_register(0)
    host = b.read_reg(reg)
    b.emit(ir.rev(_sf(size), host, host))


def lower_convert(b: Builder) -> None:
    """cbw, cwde, cdqe, cwd, cdq, cqo."""
    mnemonic = b.ins.mnemonic
    if mnemonic == M.CBW:
        t = b.temp()
        b.emit(ir.sbfx(0, t, RAX, 0, 8))
        b.emit(ir.bfi(1, RAX, t, 0, 16))
    elif mnemonic == M.CWDE:
        b.emit(ir.sbfx(0, RAX, RAX, 0, 16))
    elif mnemonic == M.CDQE:
        b.emit(ir.sbfx(1, RAX, RAX, 0, 32))
    elif mnemonic == M.CWD:
        t = b.temp()
        b.emit(ir.sbfx(0, t, RAX, 15, 1))
        b.emit(ir.bfi(1, RDX, t, 0, 16))
    elif mnemonic == M.CDQ:
        b.emit(ir.asr_imm(0, RDX, RAX, 31))
    else:
        b.emit(ir.asr_imm(1, RDX, RAX, 63))


# --- conditions ----------------------------------------------------------------------------

def lower_setcc(b: Builder) -> None:
    ins = b.ins
    cc = ins.condition_code
    t = b.temp()
    if cc in (CC_P, CC_NP):
        odd = b.parity_odd()
        b.emit(ir.and_imm(0, t, odd, 1))
        if cc == CC_P:
            b.emit(ir.eor_imm(0, t, t, 1))
    else:
        b.emit(ir.cset(0, t, b.condition(cc)))
    b.write_op(0, 1, t)


def lower_cmovcc(b: Builder) -> None:
    ins = b.ins
    size = b.op_size(0)
    sf = _sf(size)
    cc = ins.condition_code
    src = b.read_op(1, size)  # x86 reads (and may fault on) the source whatever the condition
    reg = ins.op_register(0)
    old = b.read_reg(reg)
    dst = b.dest_reg(reg)
    if cc in (CC_P, CC_NP):
        odd = b.parity_odd()
        t = b.temp()
        b.emit(ir.and_imm(0, t, odd, 1))
        # Compare without touching NZCV: choose by a select on a computed mask.
        mask = b.temp()
        b.emit(ir.sub_reg(1, mask, ZR, t) if cc == CC_NP else ir.sub_imm(1, mask, t, 1))
        chosen = b.temp()
        b.emit(ir.and_reg(1, chosen, src, mask))
        b.emit(ir.bic_reg(1, mask, old, mask))
        b.emit(ir.orr_reg(sf, dst, chosen, mask))
    else:
        b.emit(ir.csel(sf, dst, src, old, b.condition(cc)))
    if size < 4:
        b.write_reg(reg, dst)


# --- data movement -------------------------------------------------------------------------

def lower_xchg(b: Builder) -> None:
    ins = b.ins
    if ins.op_kind(0) == OpKind.MEMORY or ins.op_kind(1) == OpKind.MEMORY:
        raise Unsupported(REASON_ATOMIC, "xchg with memory (implicitly locked)")
    r0, r1 = ins.op_register(0), ins.op_register(1)
    a, c = b.temp(), b.temp()
    b.emit(ir.mov_reg(1, a, b.read_reg(r0)))
    b.emit(ir.mov_reg(1, c, b.read_reg(r1)))
    b.write_reg(r0, c)
    b.write_reg(r1, a)


def _push(b: Builder, value: int) -> None:
    # The stack is thread-private: plain accesses suffice even in TSO mode (as FEX does),
    # and they need no alignment, unlike stlr without FEAT_LSE2.
    b.emit(ir.str_pre(3, value, HOST_RSP, -8))


def lower_push(b: Builder) -> None:
    ins = b.ins
    if b.is_imm(0):
        t = b.temp()
        b.mov_imm(1, t, ins.immediate(0))
        _push(b, t)
        return
    size = b.op_size(0)
    if size != 8:
        raise Unsupported(REASON_OPERAND, "16-bit push")
    value = b.read_op(0, 8)
    if value == HOST_RSP:
        t = b.temp()
        b.emit(ir.mov_reg(1, t, value))  # str with writeback may not store its own base
        value = t
    _push(b, value)


def lower_pop(b: Builder) -> None:
    ins = b.ins
    if ins.op_kind(0) != OpKind.REGISTER or b.op_size(0) != 8:
        raise Unsupported(REASON_OPERAND, "pop to memory or 16-bit pop")
    reg = ins.op_register(0)
    host = b.dest_reg(reg)
    if host == HOST_RSP:
        b.emit(ir.ldr_uimm(3, HOST_RSP, HOST_RSP, 0))  # pop rsp: the loaded value wins
    else:
        b.emit(ir.ldr_post(3, host, HOST_RSP, 8))


def lower_leave(b: Builder) -> None:
    b.emit(ir.mov_reg(1, HOST_RSP, RBP))
    b.emit(ir.ldr_post(3, RBP, HOST_RSP, 8))


def lower_carry(b: Builder) -> None:
    """stc, clc, cmc."""
    if b.ins.mnemonic == M.CMC:
        b.emit(ir.cfinv())  # flips CF whichever way C currently encodes it
        return
    t = b.temp()
    b.emit(ir.movz(0, t, C_BIT if b.ins.mnemonic == M.STC else 0))
    b.emit(ir.rmif(t, 0, C_BIT))
    b.cf_inverted = False


def lower_nop(b: Builder) -> None:
    """nop, endbr64, pause, prefetch hints: nothing the guest can observe."""


# --- control flow (end the block) ------------------------------------------------------------

def _branch_target_to_x0(b: Builder) -> None:
    ins = b.ins
    if ins.op_kind(0) == OpKind.REGISTER:
        b.emit(ir.mov_reg(1, abi.NEXT_RIP, b.read_reg(ins.op_register(0))))
    else:
        base, disp = b.address(ins)
        b.load(8, base, disp, ins.memory_base == Register.RSP, rd=abi.NEXT_RIP)


def lower_jmp(b: Builder) -> None:
    ins = b.ins
    if ins.op_kind(0) in (OpKind.NEAR_BRANCH64,):
        b.exit_to(ins.near_branch_target)
        return
    if ins.op_kind(0) not in (OpKind.REGISTER, OpKind.MEMORY):
        raise Unsupported(REASON_OPERAND, "far jmp")
    _branch_target_to_x0(b)
    b.exit_to(None)


def lower_call(b: Builder) -> None:
    ins = b.ins
    direct = ins.op_kind(0) == OpKind.NEAR_BRANCH64
    if not direct:
        if ins.op_kind(0) not in (OpKind.REGISTER, OpKind.MEMORY):
            raise Unsupported(REASON_OPERAND, "far call")
        _branch_target_to_x0(b)  # before the push: the operand may be RSP-relative
    t = b.temp()
    b.load_guest_address(t, ins.next_ip)
    _push(b, t)
    b.exit_to(ins.near_branch_target if direct else None)


def lower_ret(b: Builder) -> None:
    ins = b.ins
    b.emit(ir.ldr_post(3, abi.NEXT_RIP, HOST_RSP, 8))
    if ins.op_count == 1:
        b.add_const(HOST_RSP, HOST_RSP, ins.immediate(0))
    b.exit_to(None)


def lower_jcc(b: Builder) -> None:
    ins = b.ins
    cc = ins.condition_code
    b.normalise_carry()
    taken = ir.Label()  # the exit to the branch target
    if cc in (CC_P, CC_NP):
        odd = b.parity_odd()
        b.emit((ir.tbz if cc == CC_P else ir.tbnz)(odd, 0, taken))
    elif cc in (CC_BE, CC_A):  # with C = CF: two branches (no single AArch64 condition)
        if cc == CC_BE:
            b.emit(ir.b_cond(Cond.HS, taken))
            b.emit(ir.b_cond(Cond.EQ, taken))
        else:
            not_taken = b.branch(ir.b_cond, Cond.HS)  # CF set: not taken
            b.emit(ir.b_cond(Cond.NE, taken))
            b.place(not_taken)
    else:
        b.emit(ir.b_cond(b.condition(cc), taken))
    b.exit_to(ins.next_ip)
    b.place(taken)
    b.exit_to(ins.near_branch_target)


def _runtime_exit(reason: ExitReason) -> Callable[[Builder], None]:
    def lower(b: Builder) -> None:
        ins = b.ins
        b.exit_to_runtime(reason, ins.next_ip if reason in abi.EXIT_AFTER else ins.ip)
    lower.__name__ = f"lower_{reason.name.lower()}"
    return lower


# --- the table -----------------------------------------------------------------------------

_CONDITIONAL = {
    "J": ("JO JNO JB JAE JE JNE JBE JA JS JNS JP JNP JL JGE JLE JG", lower_jcc),
    "SET": ("SETO SETNO SETB SETAE SETE SETNE SETBE SETA SETS SETNS SETP SETNP SETL SETGE SETLE SETG", lower_setcc),
    "CMOV": ("CMOVO CMOVNO CMOVB CMOVAE CMOVE CMOVNE CMOVBE CMOVA CMOVS CMOVNS CMOVP CMOVNP CMOVL CMOVGE "
             "CMOVLE CMOVG", lower_cmovcc),
}

# mnemonic -> (semantic function, ends the block)
LOWERINGS: dict[int, tuple[Callable[[Builder], None], bool]] = {
    M.MOV: (lower_mov, False), M.MOVZX: (lower_movzx, False), M.MOVSX: (lower_movsx, False),
    M.MOVSXD: (lower_movsx, False), M.LEA: (lower_lea, False),
    M.ADD: (lower_binary, False), M.ADC: (lower_binary, False), M.SUB: (lower_binary, False),
    M.SBB: (lower_binary, False), M.CMP: (lower_binary, False), M.AND: (lower_binary, False),
    M.OR: (lower_binary, False), M.XOR: (lower_binary, False), M.TEST: (lower_binary, False),
    M.INC: (lower_incdec, False), M.DEC: (lower_incdec, False), M.NEG: (lower_neg, False),
    M.NOT: (lower_not, False),
    M.SHL: (lower_shift, False), M.SAL: (lower_shift, False), M.SHR: (lower_shift, False),
    M.SAR: (lower_shift, False), M.ROL: (lower_rotate, False), M.ROR: (lower_rotate, False),
    M.SHLD: (lower_double_shift, False), M.SHRD: (lower_double_shift, False),
    M.MUL: (lower_mul_one, False), M.IMUL: (lower_imul, False), M.DIV: (lower_div, False),
    M.IDIV: (lower_div, False),
    M.BT: (lower_bt, False), M.BTS: (lower_bt, False), M.BTR: (lower_bt, False), M.BTC: (lower_bt, False),
    M.BSF: (lower_bitscan, False), M.BSR: (lower_bitscan, False), M.TZCNT: (lower_count_zeros, False),
    M.LZCNT: (lower_count_zeros, False), M.POPCNT: (lower_popcnt, False), M.BSWAP: (lower_bswap, False),
    M.CBW: (lower_convert, False), M.CWDE: (lower_convert, False), M.CDQE: (lower_convert, False),
    M.CWD: (lower_convert, False), M.CDQ: (lower_convert, False), M.CQO: (lower_convert, False),
    M.XCHG: (lower_xchg, False), M.PUSH: (lower_push, False), M.POP: (lower_pop, False),
    M.LEAVE: (lower_leave, False), M.STC: (lower_carry, False), M.CLC: (lower_carry, False),
    M.CMC: (lower_carry, False), M.NOP: (lower_nop, False), M.ENDBR64: (lower_nop, False),
    M.PAUSE: (lower_nop, False), M.PREFETCHT0: (lower_nop, False), M.PREFETCHT1: (lower_nop, False),
    M.PREFETCHT2: (lower_nop, False), M.PREFETCHNTA: (lower_nop, False), M.PREFETCHW: (lower_nop, False),
    M.JMP: (lower_jmp, True), M.CALL: (lower_call, True), M.RET: (lower_ret, True),
    M.SYSCALL: (_runtime_exit(ExitReason.SYSCALL), True), M.CPUID: (_runtime_exit(ExitReason.CPUID), True),
    M.RDTSC: (_runtime_exit(ExitReason.RDTSC), True), M.INT3: (_runtime_exit(ExitReason.INT3), True),
    M.HLT: (_runtime_exit(ExitReason.HLT), True), M.UD2: (_runtime_exit(ExitReason.UD2), True),
}
for _names, _lower in _CONDITIONAL.values():
    for _name in _names.split():
        LOWERINGS[getattr(M, _name)] = (_lower, _lower is lower_jcc)

# SSE/SSE2 on NEON (lower_sse.py).
from fexaot_tool.translate.lower_sse import SSE_LOWERINGS  # noqa: E402

LOWERINGS.update(SSE_LOWERINGS)
from fexaot_tool.translate.lower_sse_int import SSE_INT_LOWERINGS  # noqa: E402

LOWERINGS.update(SSE_INT_LOWERINGS)
from fexaot_tool.translate.lower_sse_fp import SSE_FP_LOWERINGS  # noqa: E402

LOWERINGS.update(SSE_FP_LOWERINGS)

# String instructions and atomics (lower_string.py, lower_atomic.py): after the SSE rows,
# because movsd/cmpsd name both a string and an SSE instruction and the string row keeps the other.
from fexaot_tool.translate import lower_atomic, lower_string  # noqa: E402

lower_string.merge_into(LOWERINGS)
lower_atomic.merge_into(LOWERINGS)
LOCKABLE = lower_atomic.LOCKABLE

# The x87 unit (lower_x87.py).
from fexaot_tool.translate import lower_x87  # noqa: E402

lower_x87.merge_into(LOWERINGS)
