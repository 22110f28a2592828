"""Targets of an indirect ``jmp``: jump tables, jumps through a pointer, or unknown.

The instructions before the ``jmp`` are evaluated backwards (a small backward
slice over at most ``_WINDOW`` instructions along the decoded fall-through chain),
with a value domain just rich enough for the forms compilers emit:

- PIC (gcc/clang ``-fPIC``/PIE)::

      lea    T(%rip), %rdx             ; table base
      movslq (%rdx,%rax,4), %rax       ; signed 32-bit entry
      add    %rdx, %rax                ; target = T + entry
      jmp    *%rax

- absolute (``-fno-pic``; also computed-goto tables of ``void *``)::

      jmp    *T(,%rax,8)               ; or mov T(,%rax,8), %rax; jmp *%rax

A register not set inside the window (a table base loaded before a loop, or in
the computed-goto handler that jumped here) takes the constant that the jumps
entering the window agree on.

The number of entries comes from the dominating bound check on the index
(``cmp $N, %eax; ja default`` gives N+1; ``jbe table`` from a predecessor too),
or from a ``movzbl`` (256) or ``and $mask`` (mask+1) that defines the index.
Without a compare, and only inside an FDE range, entries are read while they
land on known instruction starts of the jmp's function: its FDE range and the
ranges it jumps to or from, i.e. its ``.cold`` part (flagged as guessed).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from iced_x86 import (
    ConditionCode, FlowControl, Instruction, InstructionInfoFactory, MemorySizeExt, Mnemonic, OpAccess, OpKind,
    Register, RegisterExt,
)

from fexaot_tool.discover.codemap import Flag

if TYPE_CHECKING:
    from fexaot_tool.discover.explore import Explorer

_WINDOW = 32  # instructions evaluated before a jmp (gcc's table sequence plus its bound check fit in ~8)
_PREDECESSOR_DEPTH = 2  # how many jump-to-here hops a value or bound search may take
_MAX_GUESSED_ENTRIES = 1024
_MAX_BOUNDED_ENTRIES = 1 << 16
_MASK64 = (1 << 64) - 1
_I32 = struct.Struct("<i")

_WRITE_ACCESS = frozenset({OpAccess.WRITE, OpAccess.READ_WRITE, OpAccess.COND_WRITE, OpAccess.READ_COND_WRITE})
_IMMEDIATE_KINDS = frozenset({
    OpKind.IMMEDIATE8, OpKind.IMMEDIATE16, OpKind.IMMEDIATE32, OpKind.IMMEDIATE64, OpKind.IMMEDIATE8TO16,
    OpKind.IMMEDIATE8TO32, OpKind.IMMEDIATE8TO64, OpKind.IMMEDIATE32TO64,
})

# Entries a bound check admits: (condition of the jcc, does the jcc jump towards the table)
# -> added to the compared constant N.  `cmp $N,%eax; ja default` falls through for idx <= N.
_ENTRIES_FOR_CONDITION: dict[tuple[int, bool], int] = {
    (ConditionCode.A, False): 1,
    (ConditionCode.AE, False): 0,
    (ConditionCode.BE, True): 1,
    (ConditionCode.B, True): 0,
}

_INFO = InstructionInfoFactory()

# Registers a call may change (System V x86-64 psABI: caller-saved), and syscall's (rax, rcx, r11).
_CALL_CLOBBERS = frozenset({Register.RAX, Register.RCX, Register.RDX, Register.RSI, Register.RDI, Register.R8,
                            Register.R9, Register.R10, Register.R11})
_CLOBBERS_OF_FLOW = {FlowControl.CALL: _CALL_CLOBBERS, FlowControl.INDIRECT_CALL: _CALL_CLOBBERS,
                     FlowControl.INTERRUPT: _CALL_CLOBBERS}


@dataclass(frozen=True)
class Resolution:
    """What an indirect jmp was found to be."""

    flag: Flag
    targets: tuple[int, ...] = ()
    table: int | None = None  # address of the first entry
    entries: int = 0


@dataclass(frozen=True)
class _Const:
    value: int


@dataclass(frozen=True)
class _Load:
    """A memory read of ``size`` bytes at address + index*scale, the index read at window position ``at``."""

    address: int
    index: int  # full register, Register.NONE when there is none
    scale: int
    at: int
    size: int


@dataclass(frozen=True)
class _Offset:
    """A load plus a constant: how a PIC table entry becomes a target."""

    constant: int
    load: _Load


def _plus(a, b):
    """a + b in the value domain; None (unknown) unless it is a constant or a load plus a constant."""
    if isinstance(b, _Const):
        a, b = b, a
    if not isinstance(a, _Const):
        return None
    if isinstance(b, _Const):
        return _Const((a.value + b.value) & _MASK64)
    if isinstance(b, _Load):
        return _Offset(a.value, b)
    if isinstance(b, _Offset):
        return _Offset((a.value + b.constant) & _MASK64, b.load)
    return None


def _full(register: int) -> int:
    return RegisterExt.full_register(register)


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >> 63 else value


class _Slice:
    """The fall-through window before one indirect jmp, evaluated backwards.

    When a register's value is not set inside the window and the window's first
    instruction is entered only by jumps, the value is looked up at those jumps
    (``depth`` levels deep): a constant they agree on is taken.  Jumps whose value
    is unknown are skipped, so that a loop's back edge or a computed-goto handler
    that jumps to itself does not hide the value set before the loop.
    """

    def __init__(self, explorer: Explorer, window: tuple[list[Instruction], bool], depth: int = _PREDECESSOR_DEPTH):
        self.ex = explorer
        self.w, self.entered_by_jumps = window
        self.depth = depth
        self._writes: dict[int, frozenset[int]] = {}

    def writes(self, j: int) -> frozenset[int]:
        cached = self._writes.get(j)
        if cached is None:
            ins = self.w[j]
            used = _INFO.info(ins).used_registers()
            cached = frozenset(_full(u.register) for u in used if u.access in _WRITE_ACCESS)
            cached |= _CLOBBERS_OF_FLOW.get(ins.flow_control, frozenset())
            self._writes[j] = cached
        return cached

    def value(self, register: int, before: int):
        for j in range(before - 1, -1, -1):
            if register in self.writes(j):
                ins = self.w[j]
                if ins.op_count == 0 or ins.op0_kind != OpKind.REGISTER or _full(ins.op0_register) != register:
                    return None  # written implicitly (cpuid, div, ...): unknown
                handler = _VALUE_OF.get(ins.mnemonic)
                return handler(self, ins, j) if handler else None
        return self._value_at_jumps(register, before)

    def _value_at_jumps(self, register: int, before: int) -> _Const | None:
        """The register's value where jumps enter the window before position ``before`` (none writes it)."""
        if not self.entered_by_jumps or self.depth == 0 or not self.w:
            return None
        found = set()
        for k in range(min(before, len(self.w) - 1) + 1):
            for source in self.ex.jump_sources(self.w[k].ip):
                window = self.ex.window_before(source, _WINDOW)
                value = _Slice(self.ex, window, self.depth - 1).value(register, len(window[0]) - 1)
                if isinstance(value, _Const):
                    found.add(value.value)
        return _Const(found.pop()) if len(found) == 1 else None

    def address(self, ins: Instruction, j: int) -> tuple[int, int, int] | None:
        """(constant part, index register, scale) of ``ins``'s memory operand."""
        base = ins.memory_base
        if base == Register.RIP:
            constant = ins.memory_displacement  # iced resolves RIP-relative operands to the address
        else:
            constant = _signed64(ins.memory_displacement)
            if base != Register.NONE:
                base_value = self.value(_full(base), j)
                if not isinstance(base_value, _Const):
                    return None
                constant += base_value.value
        index = ins.memory_index
        return constant & _MASK64, _full(index) if index != Register.NONE else Register.NONE, ins.memory_index_scale

    def load(self, ins: Instruction, j: int, size: int) -> _Load | None:
        operand = self.address(ins, j)
        return None if operand is None else _Load(operand[0], operand[1], operand[2], j, size)

    # -- handlers: the value an instruction leaves in its first (register) operand

    def _lea(self, ins: Instruction, j: int):
        base, index = ins.memory_base, ins.memory_index
        if index != Register.NONE and ins.memory_index_scale == 1 and base not in (Register.NONE, Register.RIP):
            # `lea (%r11,%rcx), %rcx`: an add that leaves the flags alone.
            total = _plus(self.value(_full(base), j), self.value(_full(index), j))
            return _plus(total, _Const(ins.memory_displacement))
        operand = self.address(ins, j)
        return _Const(operand[0]) if operand and operand[1] == Register.NONE else None

    def _mov(self, ins: Instruction, j: int):
        kind = ins.op1_kind
        if kind == OpKind.REGISTER:
            return self.value(_full(ins.op1_register), j)
        if kind in _IMMEDIATE_KINDS:
            return _Const(ins.immediate(1) & _MASK64)
        if kind == OpKind.MEMORY and RegisterExt.size(ins.op0_register) == 8:
            return self.load(ins, j, 8)
        return None

    def _movsxd(self, ins: Instruction, j: int):
        return self.load(ins, j, 4) if ins.op1_kind == OpKind.MEMORY else None

    def _add(self, ins: Instruction, j: int):
        left = self.value(_full(ins.op0_register), j)
        if ins.op1_kind == OpKind.REGISTER:
            return _plus(left, self.value(_full(ins.op1_register), j))
        if ins.op1_kind in _IMMEDIATE_KINDS:
            return _plus(left, _Const(ins.immediate(1) & _MASK64))
        return None


_VALUE_OF: dict[int, Callable] = {
    Mnemonic.LEA: _Slice._lea,
    Mnemonic.MOV: _Slice._mov,
    Mnemonic.MOVSXD: _Slice._movsxd,
    Mnemonic.ADD: _Slice._add,
}


def resolve(ex: Explorer, jump: int) -> Resolution:
    """Classify the indirect jmp at ``jump`` (already decoded by ``ex``)."""
    s = _Slice(ex, ex.window_before(jump, _WINDOW))
    jmp = s.w[-1]
    last = len(s.w) - 1
    if jmp.op0_kind == OpKind.REGISTER:
        target = s.value(_full(jmp.op0_register), last)
    elif jmp.op0_kind == OpKind.MEMORY:
        target = s.load(jmp, last, 8)
    else:
        target = None

    if isinstance(target, _Const):
        # `lea label(%rip), %rax; ...; jmp *%rax`: a computed goto to one label.
        if ex.is_instruction_start(target.value) or (ex.is_code(target.value) and not ex.fde_range_of(target.value)):
            return Resolution(Flag.KNOWN_JUMP, (target.value,))
        return Resolution(Flag.UNRESOLVED_INDIRECT_JUMP)
    if isinstance(target, _Load) and target.size == 8 and target.index == Register.NONE:
        return _pointer_jump(ex, target.address)
    if isinstance(target, _Load) and target.size == 8 and target.scale == 8:
        table, base = target, None
    elif (isinstance(target, _Offset) and target.load.size == 4
          and (target.load.scale == 4 or target.load.index == Register.NONE)):
        table, base = target.load, target.constant
    else:
        return Resolution(Flag.UNRESOLVED_INDIRECT_JUMP)
    if table.index == Register.NONE:
        entries, compared = 1, True  # `movslq T(%rip), %rax`: one entry at a constant address
    else:
        entries, compared = _bound(ex, s, table.index, table.at)
    resolution = _read_table(ex, jump, table, base, entries)
    if resolution.flag == Flag.UNRESOLVED_INDIRECT_JUMP and entries is not None and not compared:
        resolution = _read_table(ex, jump, table, base, None)  # the index's range was wider than the table
    return resolution


def _pointer_jump(ex: Explorer, slot: int) -> Resolution:
    """``jmp *slot``: a loader-filled GOT slot, a read-only pointer to this module, or unknown."""
    seeds = ex.seeds
    if slot in seeds.loader_slots:
        return Resolution(Flag.GOT_JUMP)
    value = seeds.pointer(slot)
    if value is not None and ex.image_is_read_only(slot) and ex.is_code(value):
        return Resolution(Flag.KNOWN_JUMP, (value,))
    return Resolution(Flag.UNRESOLVED_INDIRECT_JUMP)


def _bound(ex: Explorer, s: _Slice, index: int, at: int) -> tuple[int | None, bool]:
    """(entries the code before position ``at`` admits for ``index``, whether a compare says so).

    Without a compare the count may still come from how the index was made (a
    movzbl admits 256, an `and $15` 16): a true upper bound, but a table indexed
    by a byte loaded from memory is often shorter than 256.
    """
    path = {s.w[k].ip for k in range(at, len(s.w))}
    return _bound_in(ex, s, at, frozenset({index}), path, None, _PREDECESSOR_DEPTH)


def _bound_in(ex: Explorer, s: _Slice, at: int, aliases: frozenset, path: set[int], cap: int | None,
              depth: int) -> tuple[int | None, bool]:
    """Search backwards from ``at`` for the bound check of the index.

    ``aliases`` holds what the index equals at the current point: full registers,
    and memory operands (see :func:`_memory_key`) when the index was loaded from
    memory that a `cmpl $20, 8(%rdx)` may have checked.  ``cap`` is a bound already
    implied by how the index was computed; a compare further back can only tighten it.
    """
    w = s.w
    for j in range(at - 1, -1, -1):
        ins = w[j]
        if ins.flow_control == FlowControl.CONDITIONAL_BRANCH:
            entries = _bound_check(s, j, aliases, ins.near_branch_target in path)
            if entries is not None:
                return (entries if cap is None else min(entries, cap)), True
        writes = s.writes(j)
        # A memory alias is only good while the registers forming its address keep their values.
        stale = {a for a in aliases if isinstance(a, tuple) and writes.intersection(a[1:3])}
        written = writes & aliases
        aliases = aliases - stale
        if written:
            if len(written) > 1:
                return cap, False
            mnemonic, source = ins.mnemonic, ins.op1_kind
            if mnemonic == Mnemonic.MOVZX and _operand_size(ins, 1) == 1:
                cap = 256 if cap is None else min(cap, 256)
            if mnemonic in (Mnemonic.MOV, Mnemonic.MOVZX) and source == OpKind.REGISTER:
                aliases = (aliases - written) | {_full(ins.op1_register)}
            elif mnemonic in (Mnemonic.MOV, Mnemonic.MOVZX) and source == OpKind.MEMORY:
                aliases = (aliases - written) | {_memory_key(ins)}
            elif mnemonic == Mnemonic.AND and source in _IMMEDIATE_KINDS and ins.immediate(1) < 0x10000:
                mask = ins.immediate(1) + 1
                cap = mask if cap is None else min(cap, mask)
            else:
                return cap, False
        if not aliases:
            return cap, False
        path = path | {ins.ip}
    # Reached the top of the window: follow conditional branches that jump to its first instruction.
    if depth == 0 or not w:
        return cap, False
    head = w[0].ip
    for source in ex.branch_sources(head):
        predecessor = _Slice(ex, ex.window_before(source, _WINDOW), depth - 1)
        found = _bound_in(ex, predecessor, len(predecessor.w), aliases, path | {head}, cap, depth - 1)
        if found[1]:
            return found
    return cap, False


def _memory_key(ins: Instruction) -> tuple:
    """Identity of a memory operand: (segment, base, index, scale, displacement)."""
    base, index = ins.memory_base, ins.memory_index
    return (ins.memory_segment, _full(base) if base != Register.NONE else Register.NONE,
            _full(index) if index != Register.NONE else Register.NONE, ins.memory_index_scale,
            ins.memory_displacement)


def _bound_check(s: _Slice, j: int, aliases: frozenset, taken_towards_table: bool) -> int | None:
    """Entries admitted by the jcc at ``j`` if the flags it reads come from ``cmp alias, imm``."""
    delta = _ENTRIES_FOR_CONDITION.get((s.w[j].condition_code, taken_towards_table))
    if delta is None:
        return None
    for k in range(j - 1, -1, -1):
        setter = s.w[k]
        if not setter.rflags_modified:
            continue
        if setter.mnemonic != Mnemonic.CMP or setter.op1_kind not in _IMMEDIATE_KINDS:
            return None
        if setter.op0_kind == OpKind.REGISTER and _full(setter.op0_register) in aliases:
            bits = 8 * RegisterExt.size(setter.op0_register)
        elif setter.op0_kind == OpKind.MEMORY and _memory_key(setter) in aliases:
            bits = 8 * MemorySizeExt.size(setter.memory_size)
        else:
            return None
        return (setter.immediate(1) & ((1 << bits) - 1)) + delta
    return None


def _operand_size(ins: Instruction, operand: int) -> int:
    if ins.op_kind(operand) == OpKind.REGISTER:
        return RegisterExt.size(ins.op_register(operand))
    return MemorySizeExt.size(ins.memory_size)


def _read_table(ex: Explorer, jump: int, table: _Load, base: int | None, entries: int | None) -> Resolution:
    """Read a table's targets.

    A bounded table's targets may lie in another FDE (gcc moves rare cases to a
    ``.cold`` part) but must each be a known instruction start, or code outside
    every FDE range; otherwise the pattern was misread and nothing is added.  A
    guessed table stops at the first entry that is not an instruction start
    inside the jmp's function (its FDE range and those it jumps to or from).
    """
    function = ex.function_ranges(jump)
    if entries is None and not function:
        return Resolution(Flag.UNRESOLVED_INDIRECT_JUMP)  # no bound and nothing to bound it by
    limit = entries if entries is not None else _MAX_GUESSED_ENTRIES
    if limit <= 0 or limit > _MAX_BOUNDED_ENTRIES:
        return Resolution(Flag.UNRESOLVED_INDIRECT_JUMP)
    targets: list[int] = []
    for i in range(limit):
        slot = table.address + i * table.size
        if base is None:
            value = ex.seeds.pointer(slot)
        else:
            raw = ex.read(slot, 4)
            value = None if raw is None else (base + _I32.unpack(raw)[0]) & _MASK64
        if entries is not None:
            good = value is not None and (ex.is_instruction_start(value)
                                          or (ex.is_code(value) and ex.fde_range_of(value) is None))
            if not good:
                return Resolution(Flag.UNRESOLVED_INDIRECT_JUMP)
        elif value is None or ex.fde_range_of(value) not in function or not ex.is_instruction_start(value):
            break
        targets.append(value)
    if len(targets) < 2 and entries is None:
        return Resolution(Flag.UNRESOLVED_INDIRECT_JUMP)
    flag = Flag.JUMP_TABLE if entries is not None else Flag.JUMP_TABLE_GUESSED
    return Resolution(flag, tuple(targets), table.address, len(targets))
