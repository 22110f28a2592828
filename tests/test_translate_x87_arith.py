"""x87 arithmetic (x87_arith) against the reference engine's x87, bit for bit.

Each operation's IR is compiled once and run on unicorn ARM64 per input pair;
the reference runs the real instruction (fadd/fsub/fmul/fdiv st0, st1) on
unicorn x86-64 from the same registers and control word.  Inputs: the special
encodings (zeros, denormals, pseudo-denormals, unnormals, infinities, NaNs),
values near each other (cancellation), exponents across the whole range
(overflow, underflow to denormals) and random ones, under every rounding mode
and precision control.  ``X87_SWEEP=N`` sets the random pairs per case.
"""

from __future__ import annotations

import os
import random
import struct

import pytest

from fexaot_tool.translate import abi, backend, ir, x87_arith
from fexaot_tool.translate.abi import X87Image
from fexaot_tool.translate.builder import Builder
from test_translate_x87_convert import edge_x80, random_x80
from x87_oracle import DATA, compile_ir, run_code, run_x87

SWEEP = int(os.environ.get("X87_SWEEP", "150"))
CONTROL_WORDS = [pc << 8 | rc << 10 | 0x7F for pc in (3, 2, 0) for rc in range(4)]
A_SE, A_M, C_SE, C_M = 4, 5, 6, 7  # the control word is read from the state block
OUT = (12, 13)
# fld tbyte [DATA+16] (c); fld tbyte [DATA] (a); OP st0, st1; fstp tbyte [DATA+32]
_LOAD = b"\xdb\x2c\x25" + struct.pack("<I", DATA + 16) + b"\xdb\x2c\x25" + struct.pack("<I", DATA)
_STORE = b"\xdb\x3c\x25" + struct.pack("<I", DATA + 32)
OPERATIONS = {
    "add": (x87_arith.add, b"\xd8\xc1"),
    "sub": (lambda b, *a: x87_arith.add(b, *a, subtract=True), b"\xd8\xe1"),
    "mul": (x87_arith.mul, b"\xd8\xc9"),
    "div": (x87_arith.div, b"\xd8\xf1"),
}


def pairs(rng: random.Random) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    edges = edge_x80()
    out = [(a, c) for a in edges[::5] for c in edges[2::5]]
    # Pseudo-denormals, denormals and the smallest normals against each other, both signs.
    small = [(m, e | s) for m, e in ((1 << 63, 0), (1 << 63, 1), (0xC000000000000000, 0), (1, 0), (0, 0),
                                     (0x7FFFFFFFFFFFFFFF, 0)) for s in (0, 0x8000)]
    out += [(a, c) for a in small for c in small]
    for _ in range(SWEEP):
        a = random_x80(rng)
        kind = rng.randrange(4)
        if kind == 0:  # nearly equal: cancellation
            c = ((a[0] + rng.randrange(-3, 4)) & (1 << 64) - 1 | 1 << 63, a[1] ^ rng.choice([0, 0x8000]))
        elif kind == 1:  # exponents a few apart: alignment and sticky bits
            c = (rng.getrandbits(64) | 1 << 63, (a[1] & 0x8000 ^ rng.choice([0, 0x8000]))
                 | max(0, min(0x7FFE, (a[1] & 0x7FFF) + rng.randrange(-70, 70))))
        else:
            c = random_x80(rng)
        out.append((a, c))
    return out


def reference(opcode: bytes, a: tuple[int, int], c: tuple[int, int], cw: int) -> bytes:
    state = X87Image(regs=[(0, 0)] * 8, top=0, cw=cw, empty=0xFF)
    memory = struct.pack("<QH6xQH6x", *a, *c)
    _, _, mem, _ = run_x87(_LOAD + opcode + _STORE, state, memory=memory)
    return mem[32:42]


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_operation_matches_the_reference(name: str) -> None:
    routine, opcode = OPERATIONS[name]

    def emit(b: Builder) -> None:
        se, m = routine(b, A_SE, A_M, C_SE, C_M)
        b.emit(ir.orr_reg(1, OUT[0], 31, se))
        b.emit(ir.orr_reg(1, OUT[1], 31, m))
    compiled = compile_ir(emit)
    rng = random.Random(name)
    bad = []
    for (am, ase), (cm, cse) in pairs(rng):
        for cw in rng.sample(CONTROL_WORDS, 4):
            expected = reference(opcode, (am, ase), (cm, cse), cw)
            (se, m), _ = run_code(compiled, {A_SE: ase, A_M: am, C_SE: cse, C_M: cm}, OUT,
                                  memory=bytes(abi.X87_CW_OFFSET) + struct.pack("<I", cw))
            got = struct.pack("<QH", m, se)
            if got != expected:
                bad.append(f"{am:#x}/{ase:#x} {name} {cm:#x}/{cse:#x} cw {cw:#x}: "
                           f"{expected[::-1].hex()} != {got[::-1].hex()}")
    assert not bad, (len(bad), bad[:8])


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_operation_fits_the_registers_with_a_caller_value_live(name: str) -> None:
    routine, _ = OPERATIONS[name]
    b = Builder(tso=False, image_base=0)
    # The operands, and one caller value live across the call (the guest's NZCV that lower_x87 saves).
    values = [b.temp() for _ in range(5)]
    for v in values:
        b.mov_imm(1, v, 1)
    se, m = routine(b, *values[:4])
    b.emit(ir.orr_reg(1, 12, se, values[4]))
    b.emit(ir.orr_reg(1, 13, m, values[4]))
    b.emit(ir.udf(0))
    backend.assemble(b.ops)  # raises RegisterPressure if it does not fit
