"""Passes over a block's IR (:mod:`ir`): constant folding with copy propagation, branch cleanup, dead-code removal.

They run after lowering and before register allocation (:mod:`backend`),
on one block at a time.  None of them relies on a register being defined
once: the dataflow is over registers (virtual, guest, NZCV), so a temporary the
lowering redefines is handled like any guest register.

- :func:`fold_constants` walks forward with what it knows: registers holding
  known constants (from ``const``, from ``eor x, xzr, xzr``-style idioms, from
  arithmetic on known values) and temporaries that are copies of another
  register.  It replaces an operation whose inputs are all known by its value
  when that costs one instruction, turns register forms with one known operand
  into immediate forms (``add x, y, v`` with v = 16 becomes ``add x, y, #16``,
  a shift by a known count an immediate shift), resolves ``cbz``/``tbz`` on
  known values (a shift by CL after ``mov ecx, 4`` loses its count-0 branch),
  and stores XZR for a known zero.  What it knows is forgotten at labels (join
  points), so it needs no meet over paths.
- :func:`simplify_branches` removes code after an unconditional jump up to the
  next label some branch targets, branches to the next operation, and unused
  labels.
- :func:`remove_dead_code` deletes operations with no side effect whose
  definitions nobody reads (liveness over the block's control flow, with
  every piece of guest state live at each exit), until nothing changes.

Flag liveness over x86 instructions (:func:`block.flag_liveness`) runs before
lowering, so most dead flag work is never emitted; the NZCV dataflow here
removes what is left (e.g. a flag computation whose only reader folded away).
"""

from __future__ import annotations

from dataclasses import dataclass

from fexaot_tool.translate import a64, abi, ir
from fexaot_tool.translate.a64 import ZR, Shift
from fexaot_tool.translate.ir import BRANCHES, EXITS, JUMPS, NZCV, READS_NZCV, SIDE_EFFECTS, VREG_BASE, WRITES_NZCV, Op

# Live at every exit (docs/abi.md): the guest registers (XMM too), the PF/AF sources, NZCV and x0 (the next RIP).
EXIT_LIVE = 0
for _r in (*abi.GPR_HOST, abi.PF_SRC, abi.AF_SRC, NZCV, abi.NEXT_RIP, *(ir.V(n) for n in abi.XMM_HOST)):
    EXIT_LIVE |= 1 << _r

_M64 = (1 << 64) - 1


@dataclass
class PassStats:
    """What the passes did, summed over the blocks they ran on (``fexaot bench translate`` prints it)."""

    folded: int = 0  # operations replaced by their constant value
    immediates: int = 0  # register forms turned into immediate forms
    copies: int = 0  # register uses replaced by the register they copied
    branches: int = 0  # conditional branches resolved, and jumps to the next operation removed
    unreachable: int = 0  # operations after an unconditional jump that no branch reaches
    dead: int = 0  # operations removed because nothing reads what they define

    def add(self, other: PassStats) -> None:
        for name in ("folded", "immediates", "copies", "branches", "unreachable", "dead"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


def optimise(ops: list[Op], stats: PassStats | None = None) -> list[Op]:
    stats = stats if stats is not None else PassStats()
    ops = fold_constants(ops, stats)
    ops = simplify_branches(ops, stats)
    return remove_dead_code(ops, stats)


# --- liveness ------------------------------------------------------------------------------

def label_positions(ops: list[Op]) -> tuple[dict[ir.Label, int], bool]:
    """Each label's index, and whether any branch goes backwards (to a label before it)."""
    labels: dict[ir.Label, int] = {}
    backward = False
    for i, op in enumerate(ops):
        if op.form == "label":
            labels[op.args[0]] = i
        elif op.effects & BRANCHES and op.target in labels:
            backward = True
    return labels, backward


def liveness(ops: list[Op]) -> list[int]:
    """Registers live after each operation, as bit masks (bit r = register r; NZCV is bit 32)."""
    n = len(ops)
    labels, backward = label_positions(ops)
    live_in = [0] * (n + 1)
    live_in[n] = EXIT_LIVE  # nothing falls off a block's end, but if it did, it would leave it
    live_out = [0] * n
    changed = True
    while changed:  # without a backward branch, one pass is exact
        changed = False
        for i in range(n - 1, -1, -1):
            op = ops[i]
            effects = op.effects
            if effects & EXITS:
                out = EXIT_LIVE
            else:
                out = 0 if effects & JUMPS else live_in[i + 1]
                if effects & BRANCHES:
                    out |= live_in[labels[op.target]]
            live_out[i] = out
            new = op.use_mask | (out & ~op.def_mask)
            if new != live_in[i]:
                live_in[i] = new
                changed = backward
    return live_out


def _is_dead(op: Op, live_out: int) -> bool:
    if op.effects & SIDE_EFFECTS or op.form == "label":
        return False
    if op.form == "mov_reg" and op.args[0] == 1 and op.args[1] == op.args[2]:
        return True  # mov x, x
    return not op.def_mask & live_out


def remove_dead_code(ops: list[Op], stats: PassStats) -> list[Op]:
    if label_positions(ops)[1]:
        while True:  # a loop: liveness to a fixed point, remove, again
            kept = [op for op, out in zip(ops, liveness(ops)) if not _is_dead(op, out)]
            stats.dead += len(ops) - len(kept)
            if len(kept) == len(ops):
                return kept
            ops = kept
    # Forward branches only: one backward sweep, removing as it goes, is exact.
    live = EXIT_LIVE
    at_label: dict[ir.Label, int] = {}
    kept = []
    for op in reversed(ops):
        effects = op.effects
        if op.form == "label":
            at_label[op.args[0]] = live
            kept.append(op)
            continue
        if effects & EXITS:
            out = EXIT_LIVE
        else:
            out = 0 if effects & JUMPS else live
            if effects & BRANCHES:
                out |= at_label[op.target]
        if _is_dead(op, out):
            stats.dead += 1
            live = out
            continue
        live = op.use_mask | (out & ~op.def_mask)
        kept.append(op)
    kept.reverse()
    return kept


# --- branches ----------------------------------------------------------------------------------

def simplify_branches(ops: list[Op], stats: PassStats) -> list[Op]:
    while True:
        targets = {op.target for op in ops if op.effects & BRANCHES}
        out: list[Op] = []
        reachable = True
        for i, op in enumerate(ops):
            if op.form == "label":
                if op.args[0] not in targets:
                    continue  # nothing branches here: not a join point any more
                reachable = True
            elif not reachable:
                stats.unreachable += 1
                continue
            if op.effects & BRANCHES and _next_label_is(ops, i, op.target):
                stats.branches += 1  # a branch to the next operation, taken or not
                continue
            out.append(op)
            if op.effects & JUMPS:
                reachable = False
        if len(out) == len(ops):
            return out
        ops = out


def _next_label_is(ops: list[Op], i: int, target: ir.Label) -> bool:
    for op in ops[i + 1:]:
        if op.form != "label":
            return False
        if op.args[0] is target:
            return True
    return False


# --- constant folding ----------------------------------------------------------------------

def _width(sf: int) -> int:
    return 64 if sf else 32


def _sext(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def _shifted(value: int, shift: int, amount: int, width: int) -> int:
    mask = (1 << width) - 1
    value &= mask
    if shift == Shift.LSL:
        return (value << amount) & mask
    if shift == Shift.LSR:
        return value >> amount
    if shift == Shift.ASR:
        return (_sext(value, width) >> amount) & mask
    return ((value >> amount) | (value << (width - amount))) & mask if amount else value


def _bitfield_move(sf: int, old: int, src: int, lsb: int, width: int) -> int:
    field_mask = ((1 << width) - 1) << lsb
    return (old & ~field_mask) | ((src << lsb) & field_mask)


def _reverse_bits(value: int, width: int) -> int:
    return int(format(value, f"0{width}b")[::-1], 2)


def _evaluate(op: Op, value) -> int | None:
    """The value ``op`` gives its destination, if ``value(reg)`` knows every input (else None)."""
    form, a = op.form, op.args
    if form == "const":
        return a[2]
    if form in ("literal", "label") or op.effects & (SIDE_EFFECTS | READS_NZCV | WRITES_NZCV):
        return None
    sf = a[0] if form not in ("smulh", "umulh", "rev32") else 1
    width = _width(sf)
    mask = (1 << width) - 1
    if form in ("movz", "movn"):
        v = a[2] << (16 * a[3] if len(a) > 3 else 0)
        return (v if form == "movz" else ~v) & mask
    if form == "movk":
        old = value(a[1])
        if old is None:
            return None
        hw = 16 * (a[3] if len(a) > 3 else 0)
        return ((old & ~(0xFFFF << hw)) | a[2] << hw) & mask
    if form in ("smulh", "umulh"):
        x, y = value(a[1]), value(a[2])
        if x is None or y is None:
            return None
        if form == "umulh":
            return (x * y) >> 64
        return ((_sext(x, 64) * _sext(y, 64)) >> 64) & _M64
    srcs = [value(r) for r, role in zip(a, op.roles) if role in "um"]
    if any(s is None for s in srcs):
        return None
    if form in ("add_imm", "sub_imm"):
        if a[2] == ZR:
            return None  # register 31 is SP in these forms
        imm = a[3] << 12 if op.kwargs.get("lsl12") or (len(a) > 4 and a[4]) else a[3]
        return (srcs[0] + imm if form == "add_imm" else srcs[0] - imm) & mask
    if form in ("and_imm", "orr_imm", "eor_imm"):
        x = srcs[0] & mask
        return {"and_imm": x & a[3], "orr_imm": x | a[3], "eor_imm": x ^ a[3]}[form] & mask
    if form in ("add_reg", "sub_reg", "and_reg", "bic_reg", "orr_reg", "orn_reg", "eor_reg"):
        shift = a[4] if len(a) > 4 else Shift.LSL
        amount = a[5] if len(a) > 5 else 0
        x, y = srcs[0] & mask, _shifted(srcs[1], shift, amount, width)
        result = {"add_reg": x + y, "sub_reg": x - y, "and_reg": x & y, "bic_reg": x & ~y, "orr_reg": x | y,
                  "orn_reg": x | ~y, "eor_reg": x ^ y}[form]
        return result & mask
    if form in ("lslv", "lsrv", "asrv", "rorv"):
        shift = {"lslv": Shift.LSL, "lsrv": Shift.LSR, "asrv": Shift.ASR, "rorv": Shift.ROR}[form]
        return _shifted(srcs[0], shift, srcs[1] % width, width)
    if form in ("lsl_imm", "lsr_imm", "asr_imm", "ror_imm"):
        shift = {"lsl_imm": Shift.LSL, "lsr_imm": Shift.LSR, "asr_imm": Shift.ASR, "ror_imm": Shift.ROR}[form]
        return _shifted(srcs[0], shift, a[3], width)
    if form == "mov_reg":
        return srcs[0] & mask
    if form == "ubfx":
        return (srcs[0] >> a[3]) & ((1 << a[4]) - 1)
    if form == "sbfx":
        return _sext(srcs[0] >> a[3], a[4]) & mask
    if form == "bfi":
        old, src = srcs
        return _bitfield_move(sf, old, src, a[3], a[4]) & mask
    if form in ("madd", "msub"):
        x, y, z = (s & mask for s in srcs)
        return (z + x * y if form == "madd" else z - x * y) & mask
    if form in ("udiv", "sdiv"):
        x, y = srcs[0] & mask, srcs[1] & mask
        if y == 0:
            return 0
        if form == "udiv":
            return x // y
        sx, sy = _sext(x, width), _sext(y, width)
        q = abs(sx) // abs(sy)
        return (q if (sx < 0) == (sy < 0) else -q) & mask
    if form == "clz":
        x = srcs[0] & mask
        return width - x.bit_length()
    if form == "rbit":
        return _reverse_bits(srcs[0] & mask, width)
    if form == "rev":
        return int.from_bytes((srcs[0] & mask).to_bytes(width // 8, "little"), "big")
    if form == "extr":
        hi, lo = srcs[0] & mask, srcs[1] & mask
        return (((hi << width) | lo) >> a[4]) & mask
    return None


def materialise_cost(sf: int, value: int) -> int:
    """Instructions :func:`backend.materialise` needs for a constant."""
    from fexaot_tool.translate.backend import materialise
    return len(materialise(sf, 0, value))


# Forms whose register operands (other than a load/store base) read register 31 as XZR.
_ZR_OPERANDS = frozenset({
    "add_reg", "sub_reg", "adds_reg", "subs_reg", "adc", "sbc", "adcs", "sbcs", "and_reg", "bic_reg", "orr_reg",
    "orn_reg", "eor_reg", "ands_reg", "lslv", "lsrv", "asrv", "rorv", "udiv", "sdiv", "madd", "msub", "smulh",
    "umulh", "csel", "csinc", "csinv", "csneg", "mov_reg", "lsl_imm", "lsr_imm", "asr_imm", "ror_imm", "ubfx",
    "sbfx", "bfi", "extr", "clz", "rbit", "rev", "rmif", "msr_nzcv",
})
_STORES_RT = frozenset({"str_uimm", "stur", "stlr"})
_WRITEBACK = frozenset({"str_pre", "ldr_post"})  # Rt == Rn is unpredictable: never substitute into them
_ADDSUB = {"add_reg": ("add_imm", "sub_imm"), "sub_reg": ("sub_imm", "add_imm"),
           "adds_reg": ("adds_imm", None), "subs_reg": ("subs_imm", None)}
_LOGICAL = {"and_reg": "and_imm", "orr_reg": "orr_imm", "eor_reg": "eor_imm", "ands_reg": "ands_imm"}
_VARIABLE_SHIFT = {"lslv": "lsl_imm", "lsrv": "lsr_imm", "asrv": "asr_imm", "rorv": "ror_imm"}
_COMMUTATIVE = frozenset({"add_reg", "adds_reg", "and_reg", "orr_reg", "eor_reg", "ands_reg"})


def _make(form: str, *args, **kwargs) -> Op:
    return getattr(ir, form)(*args, **kwargs)


def _simplify(op: Op, value, stats: PassStats) -> Op | None:
    """``op`` with what is known put to use; None when it does nothing (a branch never taken)."""
    form, a = op.form, op.args
    if form in ("cbz", "cbnz", "tbz", "tbnz"):
        v = value(a[1] if form in ("cbz", "cbnz") else a[0])
        if v is None:
            return op
        if form in ("cbz", "cbnz"):
            zero = (v & ((1 << _width(a[0])) - 1)) == 0
            taken = zero == (form == "cbz")
        else:
            taken = bool(v >> a[1] & 1) == (form == "tbnz")
        stats.branches += 1
        return ir.b(op.target) if taken else None
    if form in _STORES_RT and a[1] != ZR and value(a[1]) == 0:
        return op.with_args((a[0], ZR) + a[2:])
    if form not in _ZR_OPERANDS and form not in _ADDSUB and form not in _LOGICAL:
        return op
    if any(role == "u" and x != ZR and value(x) == 0 for x, role in zip(a, op.roles)):
        # A known zero is XZR in these forms: the constant's register may then be dead.
        a = tuple(ZR if role == "u" and value(x) == 0 else x for x, role in zip(a, op.roles))
        op = op.with_args(a)
    if form in _COMMUTATIVE and len(a) <= 4 and value(a[2]) is not None and value(a[3]) is None:
        a = (a[0], a[1], a[3], a[2])  # the known operand second, where the immediate forms take it
        op = op.with_args(a)
    shift = a[4] if len(a) > 4 else Shift.LSL
    amount = a[5] if len(a) > 5 else 0
    if form in _ADDSUB and a[2] != ZR and value(a[3]) is not None and shift != Shift.ROR:
        sf, width = a[0], _width(a[0])
        c = _shifted(value(a[3]), shift, amount, width)
        plain, negated = _ADDSUB[form]
        if form in ("add_reg", "sub_reg") and a[1] == ZR:
            return op  # rd 31 is SP in the immediate forms
        for imm_form, k in ((plain, c), (negated, ((1 << width) - c) & ((1 << width) - 1) if c else None)):
            if imm_form is None or k is None:
                continue
            if k < 4096:
                stats.immediates += 1
                return _make(imm_form, sf, a[1], a[2], k)
            if not k & 0xFFF and k < 1 << 24:
                stats.immediates += 1
                return _make(imm_form, sf, a[1], a[2], k >> 12, lsl12=True)
        return op
    if form in _LOGICAL and value(a[3]) is not None:
        sf, width = a[0], _width(a[0])
        c = _shifted(value(a[3]), shift, amount, width)
        if a64.encode_bitmask(c, width) and not (form != "ands_reg" and a[1] == ZR):
            stats.immediates += 1
            return _make(_LOGICAL[form], sf, a[1], a[2], c)
        return op
    if form in _VARIABLE_SHIFT and value(a[3]) is not None:
        sf = a[0]
        count = value(a[3]) % _width(sf)
        stats.immediates += 1
        if count == 0:
            return ir.mov_reg(sf, a[1], a[2])
        return _make(_VARIABLE_SHIFT[form], sf, a[1], a[2], count)
    if form == "madd" and a[4] == ZR and value(a[3]) is not None:
        c = value(a[3]) & ((1 << _width(a[0])) - 1)
        if c and not c & (c - 1):
            stats.immediates += 1
            return ir.lsl_imm(a[0], a[1], a[2], c.bit_length() - 1)
    return op


def fold_constants(ops: list[Op], stats: PassStats) -> list[Op]:
    known: dict[int, int] = {}  # register -> its 64-bit value
    copies: dict[int, int] = {}  # virtual register -> the register it is a 64-bit copy of
    # The same as bit masks, so that most operations (nothing known about their registers) cost two ANDs.
    known_mask = 0
    tracked_mask = 0  # registers in ``copies``, as keys or as sources

    def value(r: int) -> int | None:
        return 0 if r == ZR else known.get(r)

    out: list[Op] = []
    for op in ops:
        if op.form == "label":
            known.clear()  # a join point: the values on the other paths are not known here
            copies.clear()
            known_mask = tracked_mask = 0
            out.append(op)
            continue
        if op.use_mask & tracked_mask and op.form not in _WRITEBACK:
            args = tuple(copies.get(x, x) if role == "u" and isinstance(x, int) else x
                         for x, role in zip(op.args, op.roles))
            if args != op.args:
                stats.copies += sum(1 for x, y in zip(args, op.args) if x != y)
                op = op.with_args(args)
        if op.use_mask & known_mask or op.form in _BRANCH_ON_REGISTER:
            simplified = _simplify(op, value, stats)
            if simplified is None:
                continue
            op = simplified
        result = _evaluate(op, value) if not op.use_mask & ~known_mask else None
        def_mask = op.def_mask
        if def_mask & (known_mask | tracked_mask):
            for r in op.defs():
                if known.pop(r, None) is not None:
                    known_mask &= ~(1 << r)
            if def_mask & tracked_mask:
                for v, source in list(copies.items()):
                    if (1 << v | 1 << source) & def_mask:
                        del copies[v]
                tracked_mask = 0
                for v, source in copies.items():
                    tracked_mask |= 1 << v | 1 << source
        if result is not None and def_mask and not def_mask & (def_mask - 1) and def_mask != ir.NZCV_BIT:
            rd = def_mask.bit_length() - 1
            if (op.form not in ("const", "movz", "movn", "movk") and op.use_mask
                    and materialise_cost(1, result) == 1):
                op = ir.mov_imm(1, rd, result)
                stats.folded += 1
            known[rd] = result
            known_mask |= def_mask
        elif (op.form == "mov_reg" and op.args[0] == 1 and op.args[1] >= VREG_BASE
              and op.args[2] != ZR and op.args[2] != op.args[1]):
            copies[op.args[1]] = op.args[2]
            tracked_mask |= 1 << op.args[1] | 1 << op.args[2]
        out.append(op)
        if op.effects & JUMPS:
            known.clear()
            copies.clear()
            known_mask = tracked_mask = 0
    return out


_BRANCH_ON_REGISTER = frozenset({"cbz", "cbnz", "tbz", "tbnz"})


__all__ = ["EXIT_LIVE", "PassStats", "fold_constants", "liveness", "optimise", "remove_dead_code",
           "simplify_branches"]