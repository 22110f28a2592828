"""The backend: host registers for the IR's virtual registers, then AArch64 machine code with a literal pool.

Register allocation is a linear scan over live intervals.  A virtual
register's interval runs from its first to its last appearance in the
operation list, widened over a loop when it is live at the loop's head
(liveness from :mod:`passes`: a value carried around the 128-bit division's
loop covers the whole loop).  Without backward branches the textual span
covers every point where the value is live.  The registers it hands out
are the scratch registers of docs/abi.md except x0 and x1, which the exit
sequences use by name, and for SIMD&FP temporaries (odd virtual registers)
v16-v31.  Two intervals share a register only when one ends
strictly before the other starts; a block never needs more than the nine
registers there are (the widest lowering, a 128-bit ``idiv`` on a memory
operand, has eight values live at once), so nothing is ever spilled.

Encoding expands ``const`` into movz/movn/movk (or one ``orr`` of a bitmask
immediate), resolves labels to offsets and ``literal`` into ``ldr`` from the
pool of 8-byte guest addresses after the code (8-aligned: blocks start
8-aligned in the cache's CODE section).
"""

from __future__ import annotations

import struct

from fexaot_tool.translate import a64, abi
from fexaot_tool.translate.a64 import ZR
from fexaot_tool.translate.ir import ENCODERS, VECTOR_BASE, VREG_BASE, Op, V
from fexaot_tool.translate.ir import BRANCHES
from fexaot_tool.translate.passes import label_positions, liveness

# Hand-out order is fixed, so caches are deterministic.
ALLOCATABLE: tuple[int, ...] = tuple(r for r in abi.SCRATCH if r not in (abi.NEXT_RIP, 1))
ALLOCATABLE_VECTOR: tuple[int, ...] = tuple(V(n) for n in abi.VECTOR_SCRATCH)


class RegisterPressure(Exception):
    """More values live at once than there are scratch registers (a lowering bug, not a guest property)."""


def materialise(sf: int, rd: int, value: int) -> list[int]:
    """The fewest movz/movn/movk (or one orr of a bitmask) that put ``value`` in ``rd``.

    A value below 2^32 is built with w-form instructions (which zero-extend),
    whatever ``sf`` says, when that is no longer.
    """
    width = 64 if sf else 32
    value &= (1 << width) - 1
    if sf and value < 1 << 32:
        narrow = materialise(0, rd, value)
        wide = _materialise(1, rd, value)
        return narrow if len(narrow) <= len(wide) else wide
    return _materialise(sf, rd, value)


def _materialise(sf: int, rd: int, value: int) -> list[int]:
    width = 64 if sf else 32
    chunks = [(value >> (16 * i)) & 0xFFFF for i in range(width // 16)]
    zeros = chunks.count(0)
    ones = chunks.count(0xFFFF)
    if zeros < len(chunks) - 1 and ones < len(chunks) - 1 and a64.encode_bitmask(value, width):
        return [a64.orr_imm(sf, rd, ZR, value)]
    words = []
    if ones > zeros:
        first = next(i for i, c in enumerate(chunks) if c != 0xFFFF) if ones < len(chunks) else 0
        words.append(a64.movn(sf, rd, ~chunks[first] & 0xFFFF, first))
        rest = [i for i, c in enumerate(chunks) if c != 0xFFFF and i != first]
    else:
        first = next((i for i, c in enumerate(chunks) if c), 0)
        words.append(a64.movz(sf, rd, chunks[first], first))
        rest = [i for i, c in enumerate(chunks) if c and i != first]
    for i in rest:
        words.append(a64.movk(sf, rd, chunks[i], i))
    return words


def _register_positions(roles: str) -> tuple[int, ...]:
    positions = _POSITIONS.get(roles)
    if positions is None:
        positions = _POSITIONS[roles] = tuple(i for i, r in enumerate(roles) if r in "dumDUM")
    return positions


_POSITIONS: dict[str, tuple[int, ...]] = {}


def allocate(ops: list[Op]) -> dict[int, int]:
    """virtual register -> host register."""
    start: dict[int, int] = {}
    end: dict[int, int] = {}
    for i, op in enumerate(ops):
        args = op.args
        for p in _register_positions(op.roles):
            r = args[p]
            if r >= VREG_BASE:
                if r not in start:
                    start[r] = i
                end[r] = i
    labels, backward = label_positions(ops)
    if backward:
        # A value live at a loop's head is live on every iteration: it keeps its register through the loop.
        live_out = liveness(ops)
        for j, op in enumerate(ops):
            if op.effects & BRANCHES and labels[op.target] < j:
                k = labels[op.target]
                live = live_out[k] >> VREG_BASE
                r = VREG_BASE
                while live:
                    if live & 1:
                        start[r] = min(start[r], k)
                        end[r] = max(end[r], j)
                    live >>= 1
                    r += 1
    assignment: dict[int, int] = {}
    free = (list(ALLOCATABLE[::-1]), list(ALLOCATABLE_VECTOR[::-1]))  # by register class: vreg & 1
    active: list[tuple[int, int]] = []  # (end, vreg)
    for vreg in sorted(start, key=lambda v: (start[v], v)):
        s = start[vreg]
        if active:
            still = []
            for e, v in active:
                if e < s:
                    free[v & 1].append(assignment[v])
                else:
                    still.append((e, v))
            active = still
        pool = free[vreg & 1]
        if not pool:
            raise RegisterPressure(f"more than {len((ALLOCATABLE, ALLOCATABLE_VECTOR)[vreg & 1])} values of one class "
                                   f"live at operation {s}: {ops[s]!r}")
        assignment[vreg] = pool.pop()
        active.append((end[vreg], vreg))
    return assignment


def assemble(ops: list[Op]) -> tuple[bytes, list[tuple[int, int]], int]:
    """(code with its literal pool, [(byte offset of a literal, guest address)], instructions before the pool)."""
    assignment = allocate(ops)
    get = assignment.get
    words: list[int] = []
    position: dict[object, int] = {}  # Label -> word index
    branches: list[tuple[int, Op, list]] = []  # encoded once every label has its position
    literal_loads: list[tuple[int, int, int]] = []  # (word index, slot, rd)
    slots: dict[int, int] = {}
    for op in ops:
        form = op.form
        if form == "label":
            position[op.args[0]] = len(words)
            continue
        args = op.args
        positions = _register_positions(op.roles)
        if positions:
            args = list(args)
            roles = op.roles
            for p in positions:
                r = get(args[p], args[p])
                args[p] = r - VECTOR_BASE if roles[p] in "DUM" else r
        if form == "const":
            words += materialise(*args)
        elif form == "literal":
            rd, address = args
            literal_loads.append((len(words), slots.setdefault(address, len(slots)), rd))
            words.append(0)
        elif op.effects & BRANCHES:
            branches.append((len(words), op, list(args)))
            words.append(0)
        else:
            words.append(ENCODERS[form](*args, **op.kwargs))
    for at, op, args in branches:
        i = op.roles.index("L")
        args[i] = (position[args[i]] - at) * 4
        words[at] = ENCODERS[op.form](*args, **op.kwargs)
    instructions = len(words)
    if len(words) % 2:
        words.append(a64.udf())  # 8-byte align the pool
    pool = len(words) * 4
    for index, slot, rd in literal_loads:
        words[index] = a64.ldr_literal(1, rd, pool + slot * 8 - index * 4)
    code = struct.pack(f"<{len(words)}I", *words) + bytes(8 * len(slots))
    literals = [(pool + slot * 8, address) for address, slot in slots.items()]
    return code, literals, instructions


__all__ = ["ALLOCATABLE", "RegisterPressure", "allocate", "assemble", "materialise"]
