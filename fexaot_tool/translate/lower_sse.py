"""Lowering of SSE/SSE2 instructions onto NEON: rows merged into :data:`lower.LOWERINGS`.

Guest XMMn lives in vN (docs/abi.md); temporaries are SIMD&FP virtual
registers (``Builder.vtemp()``).  Legacy-SSE (non-VEX) forms write only their
destination's 128 bits: there is no upper half to zero, since AVX (VEX forms)
is not translated and the CPUID model does not advertise it.  Alignment checks
of ``movdqa``/``movaps``/``movapd`` and of memory operands of arithmetic forms
(x86 raises #GP on a misaligned 16-byte operand) are not reproduced: translated
code accesses the misaligned address, which only matters for a program that
relies on the fault.
"""

from __future__ import annotations

from collections.abc import Callable

from iced_x86 import Mnemonic as M
from iced_x86 import OpKind, Register

from fexaot_tool.translate import ir
from fexaot_tool.translate.builder import REASON_OPERAND, REASON_VECTOR, REGISTERS, Builder, Unsupported

_GPR_SIZES = {4: 0, 8: 1}  # operand bytes -> sf


def _is_xmm(b: Builder, i: int) -> bool:
    return b.ins.op_kind(i) == OpKind.REGISTER and Register.XMM0 <= b.ins.op_register(i) <= Register.XMM15


def _check_registers(b: Builder) -> None:
    """MMX and wider-than-XMM registers are not this table's (REASON_VECTOR)."""
    ins = b.ins
    for i in range(ins.op_count):
        if ins.op_kind(i) == OpKind.REGISTER:
            reg = ins.op_register(i)
            if reg not in REGISTERS and not Register.XMM0 <= reg <= Register.XMM15:
                raise Unsupported(REASON_VECTOR, "MMX or AVX register operand")


# --- moves -----------------------------------------------------------------------------------

def lower_mov128(b: Builder) -> None:
    """movdqa/movdqu/movaps/movups/movapd/movupd: 128-bit register or memory moves."""
    _check_registers(b)
    if b.ins.op_kind(0) == OpKind.MEMORY:
        b.write_xmm_memory(4, b.xmm(b.ins.op_register(1)))
        return
    dst = b.xmm(b.ins.op_register(0))
    if b.ins.op_kind(1) == OpKind.MEMORY:
        base, disp = b.address(b.ins)
        b.vload(4, base, disp, b._is_stack(b.ins), rd=dst)
    else:
        src = b.xmm(b.ins.op_register(1))
        if src != dst:
            b.emit(ir.mov_v(1, dst, src))


def lower_movd_movq(b: Builder) -> None:
    """movd/movq between XMM registers, general-purpose registers and memory.

    Writes to an XMM register zero the bits above the moved 32 or 64 (``fmov``
    to S/D and scalar loads do that); writes to a 32-bit GPR zero-extend.
    """
    _check_registers(b)
    ins = b.ins
    size = 2 if ins.mnemonic == M.MOVD else 3  # log2 bytes
    to_xmm = _is_xmm(b, 0)
    if to_xmm:
        dst = b.xmm(ins.op_register(0))
        kind = ins.op_kind(1)
        if kind == OpKind.MEMORY:
            base, disp = b.address(ins)
            b.vload(size, base, disp, b._is_stack(ins), rd=dst)
        elif _is_xmm(b, 1):
            # movq xmm, xmm: the low 64 bits, the upper 64 zeroed (an 8B move does both).
            b.emit(ir.mov_v(0, dst, b.xmm(ins.op_register(1))))
        else:
            gpr_size = REGISTERS[ins.op_register(1)][1]
            b.emit(ir.fmov_from_gpr(_GPR_SIZES[gpr_size], dst, b.read_reg(ins.op_register(1))))
        return
    src = b.xmm(ins.op_register(1))
    if ins.op_kind(0) == OpKind.MEMORY:
        b.write_xmm_memory(size, src)
        return
    gpr_size = REGISTERS[ins.op_register(0)][1]
    if gpr_size not in _GPR_SIZES:
        raise Unsupported(REASON_OPERAND, "movd/movq to a narrow register")
    b.emit(ir.fmov_to_gpr(_GPR_SIZES[gpr_size], b.dest_reg(ins.op_register(0)), src))


# --- bitwise logic ---------------------------------------------------------------------------

_LOGIC = {
    M.PXOR: ir.eor_v, M.XORPS: ir.eor_v, M.XORPD: ir.eor_v,
    M.POR: ir.orr_v, M.ORPS: ir.orr_v, M.ORPD: ir.orr_v,
    M.PAND: ir.and_v, M.ANDPS: ir.and_v, M.ANDPD: ir.and_v,
    M.PANDN: ir.bic_v, M.ANDNPS: ir.bic_v, M.ANDNPD: ir.bic_v,
}


def lower_logic(b: Builder) -> None:
    """pxor/por/pand/pandn and their ps/pd twins: the same 128 bits either way."""
    _check_registers(b)
    ins = b.ins
    form = _LOGIC[ins.mnemonic]
    dst = b.xmm(ins.op_register(0))
    if form is ir.eor_v and _is_xmm(b, 1) and ins.op_register(1) == ins.op_register(0):
        b.emit(ir.movi_zero(dst))  # pxor x, x: zero whatever x holds
        return
    src = b.read_xmm_op(1)
    if form is ir.bic_v:
        b.emit(ir.bic_v(1, dst, src, dst))  # andn: dst = NOT dst AND src
    else:
        b.emit(form(1, dst, dst, src))


SSE_LOWERINGS: dict[int, tuple[Callable[[Builder], None], bool]] = {
    M.MOVDQA: (lower_mov128, False), M.MOVDQU: (lower_mov128, False), M.MOVAPS: (lower_mov128, False),
    M.MOVUPS: (lower_mov128, False), M.MOVAPD: (lower_mov128, False), M.MOVUPD: (lower_mov128, False),
    M.MOVD: (lower_movd_movq, False), M.MOVQ: (lower_movd_movq, False),
    **{mnemonic: (lower_logic, False) for mnemonic in _LOGIC},
}

__all__ = ["SSE_LOWERINGS"]
