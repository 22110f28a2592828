"""The per-block IR builder: temporaries, literals, labels, guest operands, flags.

Semantic functions (:mod:`fexaot_tool.translate.lower`) describe an x86
instruction with the helpers here; the builder knows the guest-state ABI
(:mod:`abi`), the partial-register rules of x86 and the memory-ordering mode,
so the semantic functions do not.
"""

from __future__ import annotations

import iced_x86
from iced_x86 import OpKind, Register

from fexaot_tool.translate import a64, abi, ir
from fexaot_tool.translate.a64 import C_BIT, V_BIT, ZR, Cond, Shift

# RflagsBits as iced-x86 numbers them.
OF, SF, ZF, AF, CF, PF = 1, 2, 4, 8, 16, 32
NZCV_FLAGS = OF | SF | ZF | CF
ALL_FLAGS = OF | SF | ZF | AF | CF | PF


class Unsupported(Exception):
    """An instruction (or one form of it) the translator cannot express; ``reason`` is an UntranslatableReason."""

    def __init__(self, reason: int, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _register_table() -> dict[int, tuple[int, int, bool]]:
    """iced Register -> (x86 register number, size in bytes, is AH/CH/DH/BH)."""
    names64 = ["RAX", "RCX", "RDX", "RBX", "RSP", "RBP", "RSI", "RDI"] + [f"R{i}" for i in range(8, 16)]
    names32 = ["EAX", "ECX", "EDX", "EBX", "ESP", "EBP", "ESI", "EDI"] + [f"R{i}D" for i in range(8, 16)]
    names16 = ["AX", "CX", "DX", "BX", "SP", "BP", "SI", "DI"] + [f"R{i}W" for i in range(8, 16)]
    names8 = ["AL", "CL", "DL", "BL", "SPL", "BPL", "SIL", "DIL"] + [f"R{i}L" for i in range(8, 16)]
    table: dict[int, tuple[int, int, bool]] = {}
    for size, names in ((8, names64), (4, names32), (2, names16), (1, names8)):
        for n, name in enumerate(names):
            table[getattr(Register, name)] = (n, size, False)
    for n, name in enumerate(("AH", "CH", "DH", "BH")):
        table[getattr(Register, name)] = (n, 1, True)
    return table


REGISTERS = _register_table()
# The target AArch64 features (FEAT_* names) of the default TranslatorConfig
# (cache.key.DEFAULT_CPU_FEATURES; tests/test_translate_strings_atomics.py checks they agree).
DEFAULT_FEATURES: tuple[str, ...] = ("flagm", "lrcpc", "lse")
GPR_HOST = abi.GPR_HOST
HOST_RSP = GPR_HOST[abi.RSP]
_SIZE_LOG2 = {1: 0, 2: 1, 4: 2, 8: 3}


class Builder:
    """The IR (:mod:`ir`) of one block under construction."""

    def __init__(self, tso: bool, image_base: int, features: tuple[str, ...] = DEFAULT_FEATURES):
        self.tso = tso
        self.image_base = image_base
        self.lse = "lse" in features  # FEAT_LSE atomics; without it, exclusive-pair loops
        self.ops: list[ir.Op] = []
        self.cf_inverted = False  # C holds NOT x86 CF (after subs/cmp/sbb)
        self._next_vreg = ir.VREG_BASE
        # Per instruction, set by the driver:
        self.ins: iced_x86.Instruction | None = None
        self.need = ALL_FLAGS  # flags this instruction writes that someone reads
        self.live_after = ALL_FLAGS  # flags live after this instruction

    # -- emission -----------------------------------------------------------------------

    def emit(self, op: ir.Op) -> None:
        self.ops.append(op)

    def begin_instruction(self, ins: iced_x86.Instruction, need: int, live_after: int) -> None:
        self.ins = ins
        self.need = need
        self.live_after = live_after

    def temp(self) -> int:
        """A new general-purpose virtual register (the backend gives it a host register)."""
        self._next_vreg += 2
        return self._next_vreg - 2

    def vtemp(self) -> int:
        """A new SIMD&FP virtual register."""
        self._next_vreg += 2
        return self._next_vreg - 1

    def branch(self, form, *args) -> ir.Label:
        """A forward branch (``ir.cbz``, ``ir.b_cond``, ...: its arguments but the target) to a new label."""
        target = ir.Label()
        self.emit(form(*args, target))
        return target

    def place(self, target: ir.Label) -> None:
        """Put ``target`` here: branches to it continue with what is emitted next."""
        self.emit(ir.label(target))

    def label(self) -> ir.Label:
        """A label here, for backward branches."""
        target = ir.Label()
        self.place(target)
        return target

    def mov_imm(self, sf: int, rd: int, value: int) -> None:
        """rd = a constant (the backend materialises it with the fewest instructions)."""
        self.emit(ir.mov_imm(sf, rd, value))

    def constant(self, sf: int, value: int) -> int:
        """A new temporary holding a constant."""
        t = self.temp()
        self.mov_imm(sf, t, value)
        return t

    def compare_imm(self, sf: int, rn: int, value: int) -> None:
        """NZCV := flags of rn - value (cmp), through a temporary when value is no 12-bit immediate."""
        if 0 <= value < 4096:
            self.emit(ir.subs_imm(sf, ZR, rn, value))
        else:
            self.emit(ir.subs_reg(sf, ZR, rn, self.constant(sf, value)))

    def load_guest_address(self, rd: int, address: int) -> None:
        """rd = a guest address of this module, through a relocated literal (cached code runs at any base)."""
        self.emit(ir.literal(rd, address))

    # -- guest registers ----------------------------------------------------------------

    def read_reg(self, reg: int, zero_extend: bool = False) -> int:
        """A host register holding guest ``reg``'s value.

        Without ``zero_extend`` only the operand's low bits are meaningful (callers
        use w-forms or shift the garbage out); AH..DH are always extracted.
        """
        n, size, high = REGISTERS[reg]
        host = GPR_HOST[n]
        if high:
            t = self.temp()
            self.emit(ir.ubfx(0, t, host, 8, 8))
            return t
        if zero_extend and size < 8:
            t = self.temp()
            if size == 4:
                self.emit(ir.mov_reg(0, t, host))
            else:
                self.emit(ir.ubfx(0, t, host, 0, size * 8))
            return t
        return host

    def read_reg_sext(self, reg: int) -> int:
        """guest ``reg`` sign-extended to 64 bits."""
        n, size, high = REGISTERS[reg]
        host = GPR_HOST[n]
        if size == 8:
            return host
        t = self.temp()
        self.emit(ir.sbfx(1, t, host, 8 if high else 0, size * 8))
        return t

    def dest_reg(self, reg: int) -> int:
        """Where to compute a value for guest ``reg``: the host register itself for 32/64-bit writes."""
        n, size, _ = REGISTERS[reg]
        return GPR_HOST[n] if size >= 4 else self.temp()

    def write_reg(self, reg: int, src: int) -> None:
        """guest ``reg`` := src, with x86's rules: 32-bit writes zero-extend, 8/16-bit writes merge."""
        n, size, high = REGISTERS[reg]
        host = GPR_HOST[n]
        if size == 8:
            if src != host:
                self.emit(ir.mov_reg(1, host, src))
        elif size == 4:
            # A w-form op that computed into ``host`` already zero-extended it.
            if src != host:
                self.emit(ir.mov_reg(0, host, src))
        else:
            self.emit(ir.bfi(1, host, src, 8 if high else 0, size * 8))

    # -- memory -------------------------------------------------------------------------

    def _is_stack(self, ins: iced_x86.Instruction) -> bool:
        return ins.memory_base == Register.RSP

    def address(self, ins: iced_x86.Instruction) -> tuple[int, int]:
        """(host register, byte offset) whose sum is the memory operand's effective address.

        The offset is nonzero only when it fits a plain load/store (relaxed mode or
        RSP-relative); otherwise it is folded into a temporary.
        """
        if ins.is_ip_rel_memory_operand:
            t = self.temp()
            self.load_guest_address(t, ins.ip_rel_memory_address)
            base, disp = t, 0
        else:
            base_reg, index_reg = ins.memory_base, ins.memory_index
            disp = ins.memory_displacement
            if disp >= 1 << 63:
                disp -= 1 << 64
            base = index = None
            if base_reg != Register.NONE:
                if REGISTERS.get(base_reg, (0, 0, False))[1] != 8:
                    raise Unsupported(REASON_OPERAND, "32-bit or unusual address base")
                base = GPR_HOST[REGISTERS[base_reg][0]]
            if index_reg != Register.NONE:
                if REGISTERS.get(index_reg, (0, 0, False))[1] != 8:
                    raise Unsupported(REASON_OPERAND, "32-bit or vector address index")
                index = GPR_HOST[REGISTERS[index_reg][0]]
            if index is not None:
                t = self.temp()
                scale = {1: 0, 2: 1, 4: 2, 8: 3}[ins.memory_index_scale]
                if base is None:
                    self.emit(ir.lsl_imm(1, t, index, scale))
                else:
                    self.emit(ir.add_reg(1, t, base, index, Shift.LSL, scale))
                base = t
            elif base is None:
                t = self.temp()
                self.mov_imm(1, t, disp)
                base, disp = t, 0
        segment = ins.segment_prefix
        if segment in (Register.FS, Register.GS):
            t = self.temp()
            offset = abi.FS_BASE_OFFSET if segment == Register.FS else abi.GS_BASE_OFFSET
            self.emit(ir.ldr_uimm(3, t, abi.STATE, offset))
            self.emit(ir.add_reg(1, t, t, base))
            base = t
        return base, disp

    def _fold(self, base: int, disp: int) -> int:
        """A register holding base + disp.

        Always a new temporary, never ``base`` updated in place: a read-modify-write
        folds the same (base, disp) pair again for its store.
        """
        if disp == 0:
            return base
        t = self.temp()
        self.add_const(t, base, disp)
        return t

    def add_const(self, rd: int, rn: int, value: int) -> None:
        """rd = rn + value (64-bit), without touching the flags."""
        if 0 <= value < 4096:
            self.emit(ir.add_imm(1, rd, rn, value))
        elif -4096 < value < 0:
            self.emit(ir.sub_imm(1, rd, rn, -value))
        elif 0 <= value < (1 << 24) and not value & 0xFFF:
            self.emit(ir.add_imm(1, rd, rn, value >> 12, lsl12=True))
        else:
            t = self.temp()
            self.mov_imm(1, t, value)
            self.emit(ir.add_reg(1, rd, rn, t))

    def load(self, size: int, base: int, disp: int, stack: bool, rd: int | None = None) -> int:
        """Zero-extending load of ``size`` bytes at base + disp."""
        rd = self.temp() if rd is None else rd
        log2 = _SIZE_LOG2[size]
        if self.tso and not stack:
            self.emit(ir.ldapr(log2, rd, self._fold(base, disp)))
        elif 0 <= disp < (4096 << log2) and not disp % size:
            self.emit(ir.ldr_uimm(log2, rd, base, disp))
        elif -256 <= disp < 256:
            self.emit(ir.ldur(log2, rd, base, disp))
        else:
            self.emit(ir.ldr_uimm(log2, rd, self._fold(base, disp), 0))
        return rd

    def store(self, size: int, src: int, base: int, disp: int, stack: bool) -> None:
        log2 = _SIZE_LOG2[size]
        if self.tso and not stack:
            self.emit(ir.stlr(log2, src, self._fold(base, disp)))
        elif 0 <= disp < (4096 << log2) and not disp % size:
            self.emit(ir.str_uimm(log2, src, base, disp))
        elif -256 <= disp < 256:
            self.emit(ir.stur(log2, src, base, disp))
        else:
            self.emit(ir.str_uimm(log2, src, self._fold(base, disp), 0))

    # -- SIMD&FP: guest XMM registers and vector memory accesses ------------------------

    def xmm(self, reg: int) -> int:
        """The IR register holding guest XMM ``reg`` (an iced Register)."""
        n = reg - Register.XMM0
        if not 0 <= n < 16:
            raise Unsupported(REASON_VECTOR, "MMX, AVX-512 or an unusual vector register")
        return ir.V(abi.XMM_HOST[n])

    def vload(self, size: int, base: int, disp: int, stack: bool, rd: int | None = None) -> int:
        """A vector register loaded with 2**size bytes at base + disp (the rest of it zeroed).

        No acquire form exists for SIMD&FP loads: in TSO mode a ``dmb ishld`` after
        the load orders it before every later access, as ``ldapr`` would.
        """
        rd = self.vtemp() if rd is None else rd
        width = 1 << size
        if 0 <= disp < (4096 << size) and not disp % width:
            self.emit(ir.ldr_fp_uimm(size, rd, base, disp))
        elif -256 <= disp < 256:
            self.emit(ir.ldur_fp(size, rd, base, disp))
        else:
            self.emit(ir.ldr_fp_uimm(size, rd, self._fold(base, disp), 0))
        if self.tso and not stack:
            self.emit(ir.dmb(a64.DMB_ISHLD))
        return rd

    def vstore(self, size: int, src: int, base: int, disp: int, stack: bool) -> None:
        """Store the low 2**size bytes of vector register ``src``; TSO: ``dmb ish`` first (a release)."""
        if self.tso and not stack:
            self.emit(ir.dmb(a64.DMB_ISH))
        width = 1 << size
        if 0 <= disp < (4096 << size) and not disp % width:
            self.emit(ir.str_fp_uimm(size, src, base, disp))
        elif -256 <= disp < 256:
            self.emit(ir.stur_fp(size, src, base, disp))
        else:
            self.emit(ir.str_fp_uimm(size, src, self._fold(base, disp), 0))

    def read_xmm_op(self, i: int, size: int = 4) -> int:
        """Operand ``i`` as a vector register: an XMM register, or 2**size bytes loaded from memory."""
        ins = self.ins
        kind = ins.op_kind(i)
        if kind == OpKind.REGISTER:
            return self.xmm(ins.op_register(i))
        if kind != OpKind.MEMORY:
            raise Unsupported(REASON_OPERAND, "vector operand kind")
        base, disp = self.address(ins)
        return self.vload(size, base, disp, self._is_stack(ins))

    def write_xmm_memory(self, size: int, src: int) -> None:
        """The memory operand := the low 2**size bytes of ``src``."""
        ins = self.ins
        base, disp = self.address(ins)
        self.vstore(size, src, base, disp, self._is_stack(ins))

    # -- operands -----------------------------------------------------------------------

    def op_size(self, i: int) -> int:
        ins = self.ins
        kind = ins.op_kind(i)
        if kind == OpKind.REGISTER:
            return REGISTERS[ins.op_register(i)][1]
        if kind == OpKind.MEMORY:
            return iced_x86.MemorySizeExt.size(ins.memory_size)
        raise Unsupported(REASON_OPERAND, "operand size of an immediate")

    def read_op(self, i: int, size: int, zero_extend: bool = False) -> int:
        """Operand ``i`` in a host register (memory is loaded, immediates materialised)."""
        ins = self.ins
        kind = ins.op_kind(i)
        if kind == OpKind.REGISTER:
            reg = ins.op_register(i)
            if reg not in REGISTERS:
                raise Unsupported(REASON_OPERAND, f"register operand {reg}")
            return self.read_reg(reg, zero_extend)
        if kind == OpKind.MEMORY:
            base, disp = self.address(ins)
            return self.load(size, base, disp, self._is_stack(ins))
        t = self.temp()
        self.mov_imm(1 if size == 8 else 0, t, self.imm(i, size))
        return t

    def imm(self, i: int, size: int) -> int:
        """Immediate operand ``i`` as an unsigned value of ``size`` bytes."""
        return self.ins.immediate(i) & ((1 << (size * 8)) - 1)

    def is_imm(self, i: int) -> bool:
        return self.ins.op_kind(i) not in (OpKind.REGISTER, OpKind.MEMORY)

    def write_op(self, i: int, size: int, value: int, address: tuple[int, int] | None = None) -> None:
        """Operand ``i`` := value; ``address`` reuses an already computed memory address."""
        ins = self.ins
        if ins.op_kind(i) == OpKind.REGISTER:
            self.write_reg(ins.op_register(i), value)
            return
        base, disp = address if address is not None else self.address(ins)
        self.store(size, value, base, disp, self._is_stack(ins))

    # -- flags --------------------------------------------------------------------------

    def set_carry_inverted(self, inverted: bool) -> None:
        """Make C hold NOT CF (``inverted``) or CF, with one cfinv if needed."""
        if self.cf_inverted != inverted:
            self.emit(ir.cfinv())
            self.cf_inverted = inverted

    def normalise_carry(self) -> None:
        """At block exits and before conditional flag updates, C must be x86 CF (docs/abi.md)."""
        self.set_carry_inverted(False)

    def write_pf(self, result: int) -> None:
        if self.need & PF and result != abi.PF_SRC:
            self.emit(ir.mov_reg(1, abi.PF_SRC, result))

    def logic_flags(self, size: int, result: int) -> None:
        """SF, ZF, PF of ``result``, CF = OF = 0 (and/or/xor/test, AF undefined)."""
        if self.need & NZCV_FLAGS:
            # 0 + (result << (32 - bits)): N and Z of the sized result, and no carry or overflow.
            sf = 1 if size == 8 else 0
            self.emit(ir.adds_reg(sf, ZR, ZR, result, Shift.LSL, 0 if size >= 4 else 32 - size * 8))
            self.cf_inverted = False
        self.write_pf(result)

    def add_sub_flags(self, size: int, a: int, c: int, subtract: bool, need: int) -> None:
        """Flags of ``a + c`` / ``a - c`` at ``size`` bytes that ``need`` asks for (the plain add/sub's, cmp's).

        Subtraction leaves C = NOT CF (``cf_inverted``).  Used where the result itself is computed
        elsewhere (an atomic's old value, a string compare).
        """
        sf = 1 if size == 8 else 0
        if need & AF:
            self.emit(ir.eor_reg(1, abi.AF_SRC, a, c))
        result = None
        if need & NZCV_FLAGS:
            if size >= 4:
                result = abi.PF_SRC if need & PF else self.temp()
                self.emit((ir.subs_reg if subtract else ir.adds_reg)(sf, result, a, c))
            else:
                shift = 32 - size * 8
                t = self.temp()
                self.emit(ir.lsl_imm(0, t, a, shift))
                self.emit((ir.subs_reg if subtract else ir.adds_reg)(0, t, t, c, Shift.LSL, shift))
                if need & (PF | AF):
                    result = abi.PF_SRC if need & PF else self.temp()
                    self.emit(ir.lsr_imm(0, result, t, shift))
            self.cf_inverted = subtract
        elif need & (PF | AF):
            result = abi.PF_SRC if need & PF else self.temp()
            self.emit((ir.sub_reg if subtract else ir.add_reg)(sf, result, a, c))
        if need & PF and result != abi.PF_SRC:
            self.emit(ir.mov_reg(1, abi.PF_SRC, result))
        if need & AF:
            self.emit(ir.eor_reg(1, abi.AF_SRC, abi.AF_SRC, result))

    def insert_flag(self, src: int, bit: int, flag_mask: int) -> None:
        """Set one NZCV flag (C_BIT or V_BIT) from bit ``bit`` of ``src``, leaving the others alone."""
        position = {C_BIT: 1, V_BIT: 0}[flag_mask]
        self.emit(ir.rmif(src, (bit - position) % 64, flag_mask))
        if flag_mask == C_BIT:
            self.cf_inverted = False

    def parity_odd(self) -> int:
        """A temp whose bit 0 is the XOR of PF_SRC's low 8 bits (so PF = NOT bit 0)."""
        t = self.temp()
        self.emit(ir.eor_reg(1, t, abi.PF_SRC, abi.PF_SRC, Shift.LSR, 4))
        self.emit(ir.eor_reg(1, t, t, t, Shift.LSR, 2))
        self.emit(ir.eor_reg(1, t, t, t, Shift.LSR, 1))
        return t

    def condition(self, cc: int) -> Cond:
        """The AArch64 condition equal to x86 condition ``cc`` (not P/NP); may emit a cfinv."""
        if cc in (CC_BE, CC_A):
            self.set_carry_inverted(True)  # LS/HI test C clear / set together with Z
        if cc in (CC_B, CC_AE):
            taken_if_c = (cc == CC_B) != self.cf_inverted
            return Cond.HS if taken_if_c else Cond.LO
        return _CONDITIONS[cc]

    # -- exits --------------------------------------------------------------------------

    def exit_to(self, guest_rip: int | None) -> None:
        """Leave to the dispatcher with x0 = guest_rip (None: x0 already holds it)."""
        self.normalise_carry()
        if guest_rip is not None:
            self.load_guest_address(abi.NEXT_RIP, guest_rip)
        self.emit(ir.ldr_uimm(3, 1, abi.STATE, abi.DISPATCH_OFFSET))
        self.emit(ir.br(1))

    def exit_to_runtime(self, reason: int, guest_rip: int, info: int = 0) -> None:
        self.normalise_carry()
        self.emit(ir.movz(0, 1, reason))
        self.emit(ir.str_uimm(2, 1, abi.STATE, abi.EXIT_REASON_OFFSET))
        if info:
            self.emit(ir.movz(0, 1, info))
            self.emit(ir.str_uimm(3, 1, abi.STATE, abi.EXIT_INFO_OFFSET))
        else:
            self.emit(ir.str_uimm(3, ZR, abi.STATE, abi.EXIT_INFO_OFFSET))
        self.load_guest_address(abi.NEXT_RIP, guest_rip)
        self.emit(ir.ldr_uimm(3, 1, abi.STATE, abi.EXIT_TO_RUNTIME_OFFSET))
        self.emit(ir.br(1))


# x86 condition codes as iced-x86 numbers them (ConditionCode).
CC_O, CC_NO, CC_B, CC_AE, CC_E, CC_NE, CC_BE, CC_A = 1, 2, 3, 4, 5, 6, 7, 8
CC_S, CC_NS, CC_P, CC_NP, CC_L, CC_GE, CC_LE, CC_G = 9, 10, 11, 12, 13, 14, 15, 16
# With C = NOT CF (Builder.condition arranges it for BE/A): CF=1 or ZF=1 is LS, CF=0 and ZF=0 is HI.
_CONDITIONS = {
    CC_O: Cond.VS, CC_NO: Cond.VC, CC_E: Cond.EQ, CC_NE: Cond.NE, CC_BE: Cond.LS, CC_A: Cond.HI,
    CC_S: Cond.MI, CC_NS: Cond.PL, CC_L: Cond.LT, CC_GE: Cond.GE, CC_LE: Cond.LE, CC_G: Cond.GT,
}

# Untranslatable reasons (the UNTRANSLATABLE section's ``reason``; 0 is invalid).
REASON_UNSUPPORTED = 1  # an integer instruction the lowering table has no row for
REASON_VECTOR = 2  # an SSE form not covered, or MMX
REASON_X87 = 3
REASON_STRING = 4  # movs/stos/cmps/scas/lods (rep or not)
REASON_ATOMIC = 5  # lock prefix, xchg with memory, cmpxchg, xadd
REASON_OPERAND = 6  # an operand form not covered (32-bit addressing, 8/16-bit adc/sbb, ...)
REASON_UNDECODABLE = 7  # bytes that do not decode or leave the file image
REASON_SYSTEM = 8  # privileged, I/O, segment and far control transfers
REASON_EXTENSION = 9  # needs a CPUID feature the guest is not told about (AVX, SSE3+, BMI, CX16...): features.py

REASON_NAMES = {
    REASON_UNSUPPORTED: "unsupported-instruction", REASON_VECTOR: "vector", REASON_X87: "x87",
    REASON_STRING: "string-op", REASON_ATOMIC: "atomic", REASON_OPERAND: "operand-form",
    REASON_UNDECODABLE: "undecodable", REASON_SYSTEM: "system", REASON_EXTENSION: "extension-not-advertised",
}
