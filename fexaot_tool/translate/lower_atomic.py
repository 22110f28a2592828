"""Lowering of x86 atomics: lock add/sub/and/or/xor/inc/dec/neg/not/bts/btr/btc, xadd, xchg, cmpxchg(8b/16b).

Two code shapes, chosen by the target's features (``Builder.lse``, from
TranslatorConfig.cpu_features):

- **LSE** (FEAT_LSE): one ``ldaddal``/``ldclral``/``ldeoral``/``ldsetal``/
  ``swpal``/``casal`` per instruction; ``neg`` (no LSE form) is a ``casal``
  loop.  The acquire+release ("al") forms order the access against every
  earlier and later guest access, as a locked instruction does on x86 (the
  Linux kernel's fully ordered LSE atomics are the same choice).
- **Exclusive pairs** (any Armv8 core): ``ldaxr``; compute; ``stlxr``; retry
  until the store succeeds; then ``dmb ish``: a store-release exclusive alone
  does not keep a later load from passing it, the barrier does (the kernel's
  LL/SC fully ordered atomics are the same shape).

Flags are those of the plain instruction, computed from the old value the
atomic returns (x86 defines them from the value read).  cmpxchg16b always uses
an ``ldaxp``/``stlxp`` loop: ``casp`` needs two even/odd register pairs and
the allocator has no pair constraints.

Where x86 and AArch64 differ (docs/translator.md "Atomics"): a locked access
that is not naturally aligned (a split lock on x86) faults on AArch64 unless
it stays in one 16-byte granule on a FEAT_LSE2 core.
"""

from __future__ import annotations

from collections.abc import Callable

from iced_x86 import Mnemonic as M
from iced_x86 import OpKind, Register

from fexaot_tool.translate import a64, abi, ir
from fexaot_tool.translate.a64 import C_BIT, N_BIT, V_BIT, ZR, Cond, Shift
from fexaot_tool.translate.builder import (
    CF, NZCV_FLAGS, PF, REASON_ATOMIC, REASON_OPERAND, REGISTERS, ZF, Builder, Unsupported,
)

GPR = abi.GPR_HOST
RAX, RCX, RDX, RBX = GPR[0], GPR[1], GPR[2], GPR[3]
_LOG2 = {1: 0, 2: 1, 4: 2, 8: 3}
_ACCUMULATOR = {1: Register.AL, 2: Register.AX, 4: Register.EAX, 8: Register.RAX}

# The instructions x86 lets a lock prefix stand on (with a memory destination); anything else is #UD.
LOCKABLE = frozenset({M.ADD, M.ADC, M.AND, M.BTC, M.BTR, M.BTS, M.CMPXCHG, M.CMPXCHG8B, M.CMPXCHG16B, M.DEC,
                      M.INC, M.NEG, M.NOT, M.OR, M.SBB, M.SUB, M.XOR, M.XADD, M.XCHG})


def _sf(size: int) -> int:
    return 1 if size == 8 else 0


def _address(b: Builder) -> int:
    """The memory operand's effective address in one register (atomic forms take no offset)."""
    base, disp = b.address(b.ins)
    if not disp:
        return base
    t = b.temp()
    b.add_const(t, base, disp)
    return t


# --- the two shapes ------------------------------------------------------------------

Compute = Callable[[int], int]  # old value -> register holding the new value (emits its ops)


def _exclusive(b: Builder, size: int, addr: int, compute: Compute) -> int:
    """[addr] := compute(old) atomically with an exclusive-pair loop and a trailing barrier; returns old."""
    log2 = _LOG2[size]
    loop = b.label()
    old = b.temp()
    b.emit(ir.ldaxr(log2, old, addr))
    new = compute(old)
    status = b.temp()
    b.emit(ir.stlxr(log2, status, new, addr))
    b.emit(ir.cbnz(0, status, loop))
    b.emit(ir.dmb(a64.DMB_ISH))
    return old


def _cas_loop(b: Builder, size: int, addr: int, compute: Compute) -> int:
    """[addr] := compute(old) with a casal retry loop (LSE, for an operation with no LSE form); returns old."""
    log2 = _LOG2[size]
    old = b.temp()
    b.emit(ir.ldr_uimm(log2, old, addr, 0))  # a guess: casal checks it
    loop = b.label()
    new = compute(old)
    seen = b.temp()
    b.emit(ir.mov_reg(1, seen, old))
    b.emit(ir.casal(log2, seen, new, addr))
    differs = b.temp()
    b.emit(ir.eor_reg(1, differs, seen, old))  # both zero-extended: equal exactly when the swap happened
    b.emit(ir.mov_reg(1, old, seen))
    b.emit(ir.cbnz(1, differs, loop))
    return old


def _rmw(b: Builder, size: int, addr: int, lse_form, lse_operand: int | None, compute: Compute) -> int:
    """Atomic read-modify-write; returns the old value (zero-extended).

    ``lse_form(size, rs, rt, rn)`` with ``lse_operand`` as Rs is the LSE
    instruction when there is one; ``compute`` builds the new value in loops.
    """
    if not b.lse:
        return _exclusive(b, size, addr, compute)
    if lse_form is None:
        return _cas_loop(b, size, addr, compute)
    old = b.temp()
    b.emit(lse_form(_LOG2[size], lse_operand, old, addr))
    return old


# --- flags ---------------------------------------------------------------------------------

def _incdec_flags(b: Builder, size: int, old: int, subtract: bool) -> None:
    """inc/dec: the add/sub flags but CF, which keeps its value (and its inversion)."""
    need = b.need
    saved = None
    if need & NZCV_FLAGS and b.live_after & CF:
        saved = b.temp()
        b.emit(ir.mrs_nzcv(saved))
    one = b.temp()
    b.mov_imm(0, one, 1)
    inverted = b.cf_inverted
    b.add_sub_flags(size, old, one, subtract, need & ~CF)
    if need & NZCV_FLAGS:
        b.cf_inverted = inverted
        if saved is not None:
            b.emit(ir.rmif(saved, 28, C_BIT))


# --- rows ----------------------------------------------------------------------------------

def _memory_destination(b: Builder) -> None:
    if b.ins.op_kind(0) != OpKind.MEMORY:
        raise Unsupported(REASON_ATOMIC, "lock prefix without a memory destination (#UD)")


def _source(b: Builder, size: int) -> int:
    """Operand 1 (a register or an immediate) in a register."""
    if b.is_imm(1):
        t = b.temp()
        b.mov_imm(_sf(size), t, b.imm(1, size))
        return t
    return b.read_reg(b.ins.op_register(1))


_ARITH = {M.ADD: "add", M.SUB: "sub", M.AND: "and", M.OR: "or", M.XOR: "xor"}


def lower_lock_arith(b: Builder) -> None:
    """lock add/sub/and/or/xor [m], r/imm."""
    _memory_destination(b)
    op = _ARITH[b.ins.mnemonic]
    size = b.op_size(0)
    sf = _sf(size)
    addr = _address(b)
    src = _source(b, size)
    lse_operand = src
    if b.lse and op == "sub":
        lse_operand = b.temp()
        b.emit(ir.sub_reg(1, lse_operand, ZR, src))  # [m] + (-src)
    elif b.lse and op == "and":
        lse_operand = b.temp()
        b.emit(ir.orn_reg(1, lse_operand, ZR, src))  # [m] & ~(~src)

    def compute(old: int) -> int:
        new = b.temp()
        form = {"add": ir.add_reg, "sub": ir.sub_reg, "and": ir.and_reg, "or": ir.orr_reg, "xor": ir.eor_reg}[op]
        b.emit(form(sf, new, old, src))
        return new
    lse_form = {"add": ir.ldaddal, "sub": ir.ldaddal, "and": ir.ldclral, "or": ir.ldsetal, "xor": ir.ldeoral}[op]
    old = _rmw(b, size, addr, lse_form, lse_operand, compute)
    need = b.need
    if op in ("add", "sub"):
        b.add_sub_flags(size, old, src, op == "sub", need)
    elif need & (NZCV_FLAGS | PF):
        result = b.temp()
        b.emit({"and": ir.and_reg, "or": ir.orr_reg, "xor": ir.eor_reg}[op](sf, result, old, src))
        b.logic_flags(size, result)


def lower_lock_incdec(b: Builder) -> None:
    _memory_destination(b)
    size = b.op_size(0)
    sf = _sf(size)
    subtract = b.ins.mnemonic == M.DEC
    addr = _address(b)
    delta = None
    if b.lse:
        delta = b.temp()
        b.mov_imm(1, delta, -1 if subtract else 1)

    def compute(old: int) -> int:
        new = b.temp()
        b.emit((ir.sub_imm if subtract else ir.add_imm)(sf, new, old, 1))
        return new
    old = _rmw(b, size, addr, ir.ldaddal, delta, compute)
    _incdec_flags(b, size, old, subtract)


def lower_lock_neg(b: Builder) -> None:
    _memory_destination(b)
    size = b.op_size(0)
    addr = _address(b)

    def compute(old: int) -> int:
        new = b.temp()
        b.emit(ir.sub_reg(_sf(size), new, ZR, old))
        return new
    old = _rmw(b, size, addr, None, None, compute)
    b.add_sub_flags(size, ZR, old, True, b.need)


def lower_lock_not(b: Builder) -> None:
    _memory_destination(b)
    size = b.op_size(0)
    addr = _address(b)
    ones = None
    if b.lse:
        ones = b.temp()
        b.mov_imm(1, ones, -1)

    def compute(old: int) -> int:
        new = b.temp()
        b.emit(ir.orn_reg(_sf(size), new, ZR, old))
        return new
    _rmw(b, size, addr, ir.ldeoral, ones, compute)


def lower_lock_bt(b: Builder) -> None:
    """lock bts/btr/btc [m]: one byte of the bit string (as the plain form addresses it), CF = the old bit."""
    _memory_destination(b)
    ins = b.ins
    size = b.op_size(0)
    addr = _address(b)
    if b.is_imm(1):
        offset = ins.immediate(1) & (size * 8 - 1)
        if offset >> 3:
            t = b.temp()
            b.add_const(t, addr, offset >> 3)
            addr = t
        mask = b.temp()
        b.mov_imm(0, mask, 1 << (offset & 7))
        bit = None
    else:
        off = b.read_reg_sext(ins.op_register(1))
        t = b.temp()
        b.emit(ir.add_reg(1, t, addr, off, Shift.ASR, 3))
        addr = t
        bit = b.temp()
        b.emit(ir.and_imm(0, bit, off, 7))
        mask = b.temp()
        b.emit(ir.movz(0, mask, 1))
        b.emit(ir.lslv(0, mask, mask, bit))
    mnemonic = ins.mnemonic

    def compute(old: int) -> int:
        new = b.temp()
        b.emit({M.BTS: ir.orr_reg, M.BTR: ir.bic_reg, M.BTC: ir.eor_reg}[mnemonic](0, new, old, mask))
        return new
    lse_form = {M.BTS: ir.ldsetal, M.BTR: ir.ldclral, M.BTC: ir.ldeoral}[mnemonic]
    old = _rmw(b, 1, addr, lse_form, mask, compute)
    if b.need & CF:  # only C changes (rmif): ZF is unaffected, the others undefined
        if bit is None:
            b.insert_flag(old, offset & 7, C_BIT)
        else:
            t = b.temp()
            b.emit(ir.lsrv(0, t, old, bit))
            b.insert_flag(t, 0, C_BIT)


def lower_xchg(b: Builder, plain) -> None:
    ins = b.ins
    if ins.op_kind(0) != OpKind.MEMORY and ins.op_kind(1) != OpKind.MEMORY:
        plain(b)
        return
    reg = ins.op_register(1 if ins.op_kind(0) == OpKind.MEMORY else 0)
    size = REGISTERS[reg][1]
    addr = _address(b)
    src = b.read_reg(reg)
    old = _rmw(b, size, addr, ir.swpal, src, lambda old: src)
    b.write_reg(reg, old)


def lower_xadd(b: Builder) -> None:
    """xadd dest, src: dest := dest + src, src := the old dest; flags of the add."""
    ins = b.ins
    size = b.op_size(0)
    sf = _sf(size)
    src_reg = ins.op_register(1)
    src = b.read_reg(src_reg)
    if ins.op_kind(0) == OpKind.MEMORY:
        addr = _address(b)

        def compute(old: int) -> int:
            new = b.temp()
            b.emit(ir.add_reg(sf, new, old, src))
            return new
        old = _rmw(b, size, addr, ir.ldaddal, src, compute)
        b.add_sub_flags(size, old, src, False, b.need)
        b.write_reg(src_reg, old)
        return
    if ins.has_lock_prefix:
        raise Unsupported(REASON_ATOMIC, "lock prefix without a memory destination (#UD)")
    dest_reg = ins.op_register(0)
    old, addend, total = b.temp(), b.temp(), b.temp()
    b.emit(ir.mov_reg(1, old, b.read_reg(dest_reg)))
    b.emit(ir.mov_reg(1, addend, src))
    b.emit(ir.add_reg(1, total, old, addend))
    b.add_sub_flags(size, old, addend, False, b.need)
    b.write_reg(src_reg, old)
    b.write_reg(dest_reg, total)  # last: xadd r, r leaves the sum


def lower_cmpxchg(b: Builder) -> None:
    """cmpxchg dest, src: compare the accumulator with dest (flags of cmp acc, dest); equal: dest := src,
    else acc := dest.  As silicon does (and QEMU since 8.1): a register not written keeps all 64 bits,
    so a successful 32-bit cmpxchg leaves RAX's upper half and a failed one leaves dest's."""
    ins = b.ins
    size = b.op_size(0)
    sf = _sf(size)
    log2 = _LOG2[size]
    src = b.read_reg(ins.op_register(1))
    need = b.need | ZF
    if ins.op_kind(0) == OpKind.MEMORY:
        addr = _address(b)
        if b.lse:
            old = b.temp()
            b.emit(ir.mov_reg(1, old, RAX))
            b.emit(ir.casal(log2, old, src, addr))
            b.add_sub_flags(size, RAX, old, True, need)
        else:
            loop = b.label()
            old = b.temp()
            b.emit(ir.ldaxr(log2, old, addr))
            b.add_sub_flags(size, RAX, old, True, need)
            chosen, status = b.temp(), b.temp()
            b.emit(ir.csel(sf, chosen, src, old, Cond.EQ))
            b.emit(ir.stlxr(log2, status, chosen, addr))
            b.emit(ir.cbnz(0, status, loop))
            b.emit(ir.dmb(a64.DMB_ISH))
        _write_accumulator_if_failed(b, size, old)
        return
    if ins.has_lock_prefix:
        raise Unsupported(REASON_ATOMIC, "lock prefix without a memory destination (#UD)")
    dest_reg = ins.op_register(0)
    old = b.temp()
    b.emit(ir.mov_reg(1, old, b.read_reg(dest_reg, zero_extend=True)))
    value = b.temp()
    b.emit(ir.mov_reg(1, value, src))
    b.add_sub_flags(size, RAX, old, True, need)
    _write_accumulator_if_failed(b, size, old)
    # Then dest (it may be the accumulator itself, whose compare always succeeds).
    host = b.read_reg(dest_reg)
    if size == 8:
        b.emit(ir.csel(1, host, value, host, Cond.EQ))
    elif size == 4:
        t = b.temp()
        b.emit(ir.mov_reg(0, t, value))
        b.emit(ir.csel(1, host, t, host, Cond.EQ))
    else:
        t = b.temp()
        b.emit(ir.csel(0, t, value, old, Cond.EQ))
        b.write_reg(dest_reg, t)


def _write_accumulator_if_failed(b: Builder, size: int, old: int) -> None:
    """acc := old when Z is clear (old is zero-extended, so a 32-bit write zero-extends RAX)."""
    if size == 8:
        b.emit(ir.csel(1, RAX, RAX, old, Cond.EQ))
    elif size == 4:
        b.emit(ir.csel(1, RAX, RAX, old, Cond.EQ))
    else:
        # Equal: the old value's low bits are the accumulator's, so merging them always is right.
        b.write_reg(_ACCUMULATOR[size], old)


def lower_cmpxchg8b16b(b: Builder) -> None:
    """cmpxchg8b/16b [m]: compare EDX:EAX (RDX:RAX) with [m]; equal: [m] := ECX:EBX (RCX:RBX), ZF = 1;
    else EDX:EAX := [m], ZF = 0.  Only ZF changes."""
    ins = b.ins
    if ins.op_kind(0) != OpKind.MEMORY:
        raise Unsupported(REASON_OPERAND, "cmpxchg8b/16b with a register operand (#UD)")
    wide = ins.mnemonic == M.CMPXCHG16B
    keep = b.live_after & NZCV_FLAGS & ~ZF
    saved = None
    if keep:
        saved = b.temp()  # the compare below sets N, C, V too: put them back after
        b.emit(ir.mrs_nzcv(saved))
    addr = _address(b)
    if wide:
        loop = b.label()
        lo, hi = b.temp(), b.temp()
        b.emit(ir.ldaxp(lo, hi, addr))
        t, u = b.temp(), b.temp()
        b.emit(ir.eor_reg(1, t, lo, RAX))
        b.emit(ir.eor_reg(1, u, hi, RDX))
        b.emit(ir.orr_reg(1, t, t, u))
        b.emit(ir.subs_imm(1, ZR, t, 0))
        new_lo, new_hi, status = b.temp(), b.temp(), b.temp()
        b.emit(ir.csel(1, new_lo, RBX, lo, Cond.EQ))
        b.emit(ir.csel(1, new_hi, RCX, hi, Cond.EQ))
        b.emit(ir.stlxp(status, new_lo, new_hi, addr))
        b.emit(ir.cbnz(0, status, loop))
        b.emit(ir.dmb(a64.DMB_ISH))
        b.emit(ir.csel(1, RAX, RAX, lo, Cond.EQ))
        b.emit(ir.csel(1, RDX, RDX, hi, Cond.EQ))
    else:
        expected, new = b.temp(), b.temp()
        b.emit(ir.mov_reg(0, expected, RAX))
        b.emit(ir.bfi(1, expected, RDX, 32, 32))
        b.emit(ir.mov_reg(0, new, RBX))
        b.emit(ir.bfi(1, new, RCX, 32, 32))
        if b.lse:
            old = b.temp()
            b.emit(ir.mov_reg(1, old, expected))
            b.emit(ir.casal(3, old, new, addr))
            b.emit(ir.subs_reg(1, ZR, old, expected))
        else:
            loop = b.label()
            old = b.temp()
            b.emit(ir.ldaxr(3, old, addr))
            b.emit(ir.subs_reg(1, ZR, old, expected))
            chosen, status = b.temp(), b.temp()
            b.emit(ir.csel(1, chosen, new, old, Cond.EQ))
            b.emit(ir.stlxr(3, status, chosen, addr))
            b.emit(ir.cbnz(0, status, loop))
            b.emit(ir.dmb(a64.DMB_ISH))
        lo, hi = b.temp(), b.temp()
        b.emit(ir.mov_reg(0, lo, old))
        b.emit(ir.lsr_imm(1, hi, old, 32))
        b.emit(ir.csel(1, RAX, RAX, lo, Cond.EQ))
        b.emit(ir.csel(1, RDX, RDX, hi, Cond.EQ))
    if saved is not None:
        b.emit(ir.rmif(saved, 28, N_BIT | C_BIT | V_BIT))
    else:
        b.cf_inverted = False  # C is dead after: any meaning will do, this one needs no cfinv at the exit


Lowering = tuple[Callable[[Builder], None], bool]


def _locked_or(locked: Callable[[Builder], None], plain: Lowering) -> Lowering:
    def lower(b: Builder) -> None:
        if b.ins.has_lock_prefix:
            locked(b)
        else:
            plain[0](b)
    lower.__name__ = f"{locked.__name__}_or_plain"
    return lower, plain[1]


def merge_into(lowerings: dict[int, Lowering]) -> None:
    """Add the atomic rows to ``lowerings``: lock-prefixed forms of existing rows, and the new mnemonics."""
    for mnemonic in _ARITH:
        lowerings[mnemonic] = _locked_or(lower_lock_arith, lowerings[mnemonic])
    for mnemonic in (M.INC, M.DEC):
        lowerings[mnemonic] = _locked_or(lower_lock_incdec, lowerings[mnemonic])
    lowerings[M.NEG] = _locked_or(lower_lock_neg, lowerings[M.NEG])
    lowerings[M.NOT] = _locked_or(lower_lock_not, lowerings[M.NOT])
    for mnemonic in (M.BTS, M.BTR, M.BTC):
        lowerings[mnemonic] = _locked_or(lower_lock_bt, lowerings[mnemonic])
    plain_xchg = lowerings[M.XCHG][0]
    lowerings[M.XCHG] = (lambda b: lower_xchg(b, plain_xchg), False)
    lowerings[M.XADD] = (lower_xadd, False)
    lowerings[M.CMPXCHG] = (lower_cmpxchg, False)
    lowerings[M.CMPXCHG8B] = (lower_cmpxchg8b16b, False)
    lowerings[M.CMPXCHG16B] = (lower_cmpxchg8b16b, False)


__all__ = ["LOCKABLE", "merge_into"]
