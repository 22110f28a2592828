"""The translator's intermediate representation: a machine IR over AArch64 forms, with virtual registers.

Semantic functions (:mod:`lower`) build a block as a list of :class:`Op`; the
passes (:mod:`passes`) fold constants and remove dead code on it; the backend
(:mod:`backend`) gives the virtual registers host registers and encodes it.

The IR sits where LLVM's MachineIR sits before register allocation: an
operation is one AArch64 form (the encoder function of :mod:`a64` that will
encode it, e.g. ``adds_reg``) and its arguments, but its register operands may
be *virtual registers* (numbers from :data:`VREG_BASE` up, one per
``Builder.temp()``: SSA-style, mostly defined once; the passes and the
allocator do not rely on it) or *physical registers* (0-30: the guest's
registers of docs/abi.md, x0/x1 of the exit sequence).  NZCV is a register too
(:data:`NZCV`), so the flags take part in the same dataflow.  Every form has a
row in :data:`_FORMS`: which arguments are registers it defines, uses or
modifies, and its effects (reads/writes NZCV, loads, stores, branches, exits).
Branches name a :class:`Label` instead of an offset; three pseudo-operations
complete the set: ``const`` (a constant, expanded to movz/movn/movk/orr by the
backend), ``literal`` (a guest address from the relocated literal pool) and
``label``.

Why not a target-neutral IR: x86's flags map onto NZCV with carry inversion
and FlagM's ``rmif``/``setf``/``cfinv`` (docs/translator.md); choosing those
forms is the lowering's job, and a neutral IR would need a selector that
rediscovers them.  At this level the passes still see every value and every
flag definition, which is what constant folding and dead-code removal need.
"""

from __future__ import annotations

from collections.abc import Callable

from fexaot_tool.translate import a64
from fexaot_tool.translate.a64 import ZR

NZCV = 32  # the flags as a register of the dataflow (never a register operand of a form)
NZCV_BIT = 1 << NZCV
VECTOR_BASE = 64  # the SIMD&FP register Vn is VECTOR_BASE + n in the IR (roles D/U/M)
VREG_BASE = 128  # virtual registers: even ones are general-purpose, odd ones SIMD&FP


def V(n: int) -> int:
    """The IR number of SIMD&FP register Vn."""
    return VECTOR_BASE + n

# Effects.
READS_NZCV = 1
WRITES_NZCV = 2
LOADS = 4  # guest memory (may fault, so never removed) or the state block
STORES = 8
BRANCHES = 16  # to its Label (conditionally unless JUMPS)
JUMPS = 32  # no fall-through (unconditional branch, or an exit)
EXITS = 64  # leaves the block: every piece of guest state is live here
SIDE_EFFECTS = LOADS | STORES | BRANCHES | JUMPS | EXITS


class Label:
    """A position in a block's operation list that branches name."""

    __slots__ = ("name",)
    _count = 0

    def __init__(self) -> None:
        Label._count += 1
        self.name = f"L{Label._count}"

    def __repr__(self) -> str:
        return self.name


class Op:
    """One operation: an AArch64 form (or pseudo-op) and its arguments.

    ``roles`` has one character per positional argument: ``d`` a register the
    operation defines, ``u`` one it uses, ``m`` one it uses and redefines
    (bfi's destination, movk's), ``L`` the branch target (a Label), ``-``
    anything else (sizes, immediates, conditions).  ``D``/``U``/``M`` are the
    same for SIMD&FP registers (IR numbers ``V(n)`` or odd virtual registers).  ``use_mask``/``def_mask``
    are the registers used/defined as bit masks (bit r = register r, NZCV
    included, XZR never), computed once: the passes test them many times.
    """

    __slots__ = ("form", "args", "kwargs", "roles", "effects", "use_mask", "def_mask")

    def __init__(self, form: str, args: tuple, roles: str, effects: int, kwargs: dict | None = None):
        self.form = form
        self.args = args
        self.kwargs = kwargs or {}
        self.roles = roles
        self.effects = effects
        use = def_ = 0
        for a, r in zip(args, roles):
            if r == "-" or r == "L" or (a == ZR and r in "udm"):
                continue
            if r == "u" or r == "U":
                use |= 1 << a
            elif r == "d" or r == "D":
                def_ |= 1 << a
            else:  # "m", "M"
                use |= 1 << a
                def_ |= 1 << a
        if effects & READS_NZCV:
            use |= NZCV_BIT
        if effects & WRITES_NZCV:
            def_ |= NZCV_BIT
        self.use_mask = use
        self.def_mask = def_

    def registers(self, kinds: str) -> list[int]:
        """The register arguments whose role is in ``kinds`` (XZR excluded), plus NZCV by the effects."""
        regs = [a for a, r in zip(self.args, self.roles) if r in kinds and (a != ZR or r in "DUM")]
        if ("u" in kinds and self.effects & READS_NZCV) or ("d" in kinds and self.effects & WRITES_NZCV):
            regs.append(NZCV)
        return regs

    def uses(self) -> list[int]:
        return self.registers("umUM")

    def defs(self) -> list[int]:
        return self.registers("dmDM")

    @property
    def target(self) -> Label | None:
        i = self.roles.find("L")
        return self.args[i] if i >= 0 else None

    def with_args(self, args: tuple) -> Op:
        return Op(self.form, args, self.roles, self.effects, self.kwargs)

    def __repr__(self) -> str:
        def show(a, r):
            if r in "dumDUM" and isinstance(a, int):
                return register_name(a)
            return repr(a) if not isinstance(a, int) or isinstance(a, bool) else str(a)
        parts = [show(a, r) for a, r in zip(self.args, self.roles)]
        parts += [f"{k}={v}" for k, v in self.kwargs.items()]
        return f"{self.form} {', '.join(parts)}"


def register_name(r: int) -> str:
    if r >= VREG_BASE:
        return f"%{'v' if r & 1 else 'x'}{(r - VREG_BASE) // 2}"
    if r >= VECTOR_BASE:
        return f"v{r - VECTOR_BASE}"
    if r == NZCV:
        return "nzcv"
    return "xzr" if r == ZR else f"x{r}"


# form -> (roles, effects).  The names are a64's encoder functions.
_FORMS: dict[str, tuple[str, int]] = {
    # data processing, immediate
    "add_imm": ("-du--", 0), "sub_imm": ("-du--", 0),
    "adds_imm": ("-du--", WRITES_NZCV), "subs_imm": ("-du--", WRITES_NZCV),
    "and_imm": ("-du-", 0), "orr_imm": ("-du-", 0), "eor_imm": ("-du-", 0), "ands_imm": ("-du-", WRITES_NZCV),
    "movz": ("-d--", 0), "movn": ("-d--", 0), "movk": ("-m--", 0),
    "sbfm": ("-du--", 0), "ubfm": ("-du--", 0), "bfm": ("-mu--", 0),
    "extr": ("-duu-", 0),
    # data processing, register
    "add_reg": ("-duu--", 0), "sub_reg": ("-duu--", 0),
    "adds_reg": ("-duu--", WRITES_NZCV), "subs_reg": ("-duu--", WRITES_NZCV),
    "adc": ("-duu", READS_NZCV), "sbc": ("-duu", READS_NZCV),
    "adcs": ("-duu", READS_NZCV | WRITES_NZCV), "sbcs": ("-duu", READS_NZCV | WRITES_NZCV),
    "and_reg": ("-duu--", 0), "bic_reg": ("-duu--", 0), "orr_reg": ("-duu--", 0), "orn_reg": ("-duu--", 0),
    "eor_reg": ("-duu--", 0), "ands_reg": ("-duu--", WRITES_NZCV),
    "lslv": ("-duu", 0), "lsrv": ("-duu", 0), "asrv": ("-duu", 0), "rorv": ("-duu", 0),
    "udiv": ("-duu", 0), "sdiv": ("-duu", 0),
    "madd": ("-duuu", 0), "msub": ("-duuu", 0), "smaddl": ("duuu", 0), "umaddl": ("duuu", 0),
    "smulh": ("duu", 0), "umulh": ("duu", 0),
    "csel": ("-duu-", READS_NZCV), "csinc": ("-duu-", READS_NZCV), "csinv": ("-duu-", READS_NZCV),
    "csneg": ("-duu-", READS_NZCV), "ccmp_imm": ("-u---", READS_NZCV | WRITES_NZCV),
    "clz": ("-du", 0), "rbit": ("-du", 0), "rev16": ("-du", 0), "rev32": ("du", 0), "rev": ("-du", 0),
    # loads and stores (x28-relative ones touch the state block, the others guest memory)
    "str_uimm": ("-uu-", STORES), "ldr_uimm": ("-du-", LOADS), "ldrs_uimm": ("-du-", LOADS),
    "stur": ("-uu-", STORES), "ldur": ("-du-", LOADS),
    "str_pre": ("-um-", STORES), "ldr_post": ("-dm-", LOADS),
    "ldapr": ("-du", LOADS), "ldar": ("-du", LOADS), "stlr": ("-uu", STORES),
    # branches
    "b": ("L", BRANCHES | JUMPS), "b_cond": ("-L", BRANCHES | READS_NZCV),
    "cbz": ("-uL", BRANCHES), "cbnz": ("-uL", BRANCHES), "tbz": ("u-L", BRANCHES), "tbnz": ("u-L", BRANCHES),
    "br": ("u", JUMPS | EXITS),
    # flags
    "mrs_nzcv": ("d", READS_NZCV), "msr_nzcv": ("u", WRITES_NZCV), "cfinv": ("", READS_NZCV | WRITES_NZCV),
    "rmif": ("u--", READS_NZCV | WRITES_NZCV), "setf8": ("u", READS_NZCV | WRITES_NZCV),
    "setf16": ("u", READS_NZCV | WRITES_NZCV),
    "udf": ("-", JUMPS | EXITS), "nop": ("", 0),  # a trap: all guest state must be in place there
    # aliases, by their assembler names
    "mov_reg": ("-du", 0), "lsl_imm": ("-du-", 0), "lsr_imm": ("-du-", 0), "asr_imm": ("-du-", 0),
    "ror_imm": ("-du-", 0), "ubfx": ("-du--", 0), "sbfx": ("-du--", 0), "bfi": ("-mu--", 0),
    "cset": ("-d-", READS_NZCV), "csetm": ("-d-", READS_NZCV),
    # SIMD&FP (vector registers take D/U/M roles)
    "ldr_fp_uimm": ("-Du-", LOADS), "str_fp_uimm": ("-Uu-", STORES), "ldur_fp": ("-Du-", LOADS),
    "stur_fp": ("-Uu-", STORES),
    "and_v": ("-DUU", 0), "bic_v": ("-DUU", 0), "orr_v": ("-DUU", 0), "orn_v": ("-DUU", 0), "eor_v": ("-DUU", 0),
    "mov_v": ("-DU", 0), "movi_zero": ("D", 0), "fmov_to_gpr": ("-dU", 0), "fmov_from_gpr": ("-Du", 0),
    "ins_gpr": ("-M-u", 0), "umov": ("-dU-", 0), "ins_elem": ("-M-U-", 0),
    "dmb": ("-", LOADS | STORES),  # a barrier: never removed, never moved
    # SIMD integer: (size, q, rd, rn[, rm | shift | index]); narrowing "2" forms and usra keep part of rd ('M')
    "add_v": ("--DUU", 0), "sub_v": ("--DUU", 0), "uqadd": ("--DUU", 0), "sqadd": ("--DUU", 0),
    "uqsub": ("--DUU", 0), "sqsub": ("--DUU", 0), "cmeq_v": ("--DUU", 0), "cmgt_v": ("--DUU", 0),
    "umax_v": ("--DUU", 0), "umin_v": ("--DUU", 0), "smax_v": ("--DUU", 0), "smin_v": ("--DUU", 0),
    "urhadd": ("--DUU", 0), "uabd": ("--DUU", 0), "mul_v": ("--DUU", 0), "addp_v": ("--DUU", 0),
    "sshl_v": ("--DUU", 0), "ushl_v": ("--DUU", 0), "smull_v": ("--DUU", 0), "umull_v": ("--DUU", 0),
    "neg_v": ("--DU", 0), "uaddlp": ("--DU", 0),
    "xtn": ("-DU", 0), "sqxtn": ("-DU", 0), "sqxtn2": ("-MU", 0), "sqxtun": ("-DU", 0), "sqxtun2": ("-MU", 0),
    "uqxtn": ("-DU", 0),
    "shl_v": ("--DU-", 0), "ushr_v": ("--DU-", 0), "sshr_v": ("--DU-", 0), "usra": ("--MU-", 0),
    "uzp1": ("--DUU", 0), "uzp2": ("--DUU", 0), "zip1": ("--DUU", 0), "zip2": ("--DUU", 0),
    "ext_v": ("-DUU-", 0), "dup_elem": ("--DU-", 0), "movi_v": ("--D-", 0),
    # SIMD floating point: vector forms (size, q, rd, rn[, rm]).  FP arithmetic reads FPCR (rounding) and
    # writes FPSR's sticky flags (the conversions' invalid-operation test reads them); no pass moves
    # operations, and the FPCR/FPSR accesses carry LOADS | STORES, so they are never removed
    "fadd_v": ("--DUU", 0), "fsub_v": ("--DUU", 0), "fmul_v": ("--DUU", 0), "fdiv_v": ("--DUU", 0),
    "fmax_v": ("--DUU", 0), "fcmeq_v": ("--DUU", 0), "fcmge_v": ("--DUU", 0), "fcmgt_v": ("--DUU", 0),
    "fsqrt_v": ("--DU", 0), "fneg_v": ("--DU", 0), "frinti_v": ("--DU", 0), "scvtf_v": ("--DU", 0),
    "fcvtzs_v": ("--DU", 0), "fcvtl": ("DU", 0), "fcvtn": ("DU", 0), "not_v": ("-DU", 0), "sxtl": ("-DU", 0),
    "bsl_v": ("-MUU", 0), "bit_v": ("-MUU", 0), "bif_v": ("-MUU", 0), "movi_shifted": ("-D--", 0),
    "dup_gpr": ("--Du", 0), "fcmp": ("-UU", WRITES_NZCV), "fccmp": ("-UU--", READS_NZCV | WRITES_NZCV),
    "scvtf_gpr": ("--Du", 0), "fcvtzs_gpr": ("--dU", 0), "fcvt": ("--DU", 0),
    "msr_fpcr": ("u", LOADS | STORES), "mrs_fpcr": ("d", LOADS | STORES),
    "msr_fpsr": ("u", LOADS | STORES), "mrs_fpsr": ("d", LOADS | STORES),
    # pseudo-operations
    "const": ("-d-", 0),  # (sf, rd, value): the backend picks movz/movn/movk/orr
    "literal": ("d-", 0),  # (rd, guest address): ldr from the block's relocated literal pool
    "label": ("-", 0),  # (Label,)
    # atomics (x86 locked instructions): the register receiving the old value is 'd' (casal's
    # compare value, which it overwrites, 'm'); stlxr/stlxp define their status register
    "ldaddal": ("-udu", LOADS | STORES), "ldclral": ("-udu", LOADS | STORES),
    "ldeoral": ("-udu", LOADS | STORES), "ldsetal": ("-udu", LOADS | STORES),
    "swpal": ("-udu", LOADS | STORES), "casal": ("-muu", LOADS | STORES),
    "ldaxr": ("-du", LOADS | STORES), "stlxr": ("-duu", LOADS | STORES),
    "ldaxp": ("ddu", LOADS | STORES), "stlxp": ("duuu", LOADS | STORES),
}

ENCODERS: dict[str, Callable[..., int]] = {
    name: getattr(a64, name) for name in _FORMS if name not in ("const", "literal", "label")
}


def _constructor(form: str) -> Callable[..., Op]:
    roles, effects = _FORMS[form]

    def make(*args, **kwargs) -> Op:
        # Trailing defaulted arguments (shift amounts, lsl12) are not registers: pad the roles.
        return Op(form, args, roles[:len(args)] + "-" * (len(args) - len(roles)), effects, kwargs)
    make.__name__ = form
    make.__doc__ = f"The IR operation for a64.{form}" if form in ENCODERS else f"The {form} pseudo-operation"
    return make


# One constructor per form, named like the encoder: ``ir.adds_reg(sf, rd, rn, rm)``.
for _form in _FORMS:
    globals()[_form] = _constructor(_form)


def label(target: Label) -> Op:
    return Op("label", (target,), "-", 0)


def mov_imm(sf: int, rd: int, value: int) -> Op:
    return Op("const", (sf, rd, value & ((1 << (64 if sf else 32)) - 1)), "-d-", 0)


def literal(rd: int, address: int) -> Op:
    return Op("literal", (rd, address), "d-", 0)


__all__ = ["BRANCHES", "ENCODERS", "EXITS", "JUMPS", "LOADS", "Label", "NZCV", "Op", "READS_NZCV", "SIDE_EFFECTS",
           "STORES", "VREG_BASE", "WRITES_NZCV", "label", "literal", "mov_imm", "register_name"]
