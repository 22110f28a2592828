"""x87 conversions and comparisons (x87_convert) against the reference engine's x87, bit for bit.

Each routine's IR is compiled once and run on unicorn ARM64 for every input;
the reference runs the real instruction on unicorn x86-64 (fld/fst/fild/fist,
fucomip, fxam) from the same value and control word.  Inputs: every special
encoding of each format, values at rounding, overflow and underflow edges and
at integer-range edges, and random ones.  ``X87_SWEEP=N`` adds N random inputs
per routine (the suite uses a few hundred).
"""

from __future__ import annotations

import os
import random
import struct

import pytest
from unicorn import x86_const as X

from fexaot_tool.translate import ir, x87_convert
from fexaot_tool.translate.abi import X87Image
from x87_oracle import DATA, compile_ir, run_code, run_x87

SWEEP = int(os.environ.get("X87_SWEEP", "300"))
IN = (4, 5, 6)  # host registers holding the inputs (guest RAX, RCX, RDX)
OUT = (12, 13)
CONTROL_WORDS = [0x037F | rc << 10 for rc in range(4)] + [0x027F, 0x007F]
EMPTY = X87Image(regs=[(0, 0)] * 8, top=0, empty=0xFF)
ADDR = struct.pack("<I", DATA)
ADDR16 = struct.pack("<I", DATA + 16)


def edge_x80() -> list[tuple[int, int]]:
    """(significand, sign_exponent) of every interesting 80-bit encoding, both signs."""
    values = []
    for m, e in [(0, 0), (1 << 63, 0x3FFF), (1 << 63, 0x7FFF), (0xC000000000000000, 0x7FFF),
                 (0xA000000000000000, 0x7FFF), (0x8000000000000001, 0x7FFF), (0x4000000000000000, 0x7FFF),
                 (0, 0x7FFF), (1, 0), (0x7FFFFFFFFFFFFFFF, 0), (1 << 63, 0), (0xFFFFFFFFFFFFFFFF, 0),
                 (0x4000000000000000, 0x3FFF), (0, 0x4000), (1 << 63, 1), (0xFFFFFFFFFFFFFFFF, 0x7FFE),
                 (0xFFFFFFFFFFFFF800, 0x43FE), (0xFFFFFFFFFFFFFC00, 0x43FE), (0xFFFFFF8000000000, 0x407E),
                 (0xFFFFFFFFFFFFFFFF, 0x43FE), (1 << 63, 0x3C01), (1 << 63, 0x3C00), (1 << 63, 0x3BCD),
                 (1 << 63, 0x3BCC), (0xC000000000000000, 0x3BCC), (0x8000000000000400, 0x3FFF),
                 (0x8000000000000C00, 0x3FFF), (0x8000000000000401, 0x3FFF), (0x8000008000000000, 0x3FFF),
                 (0x8000018000000000, 0x3FFF), (1 << 63, 0x3F81), (1 << 63, 0x3F6A), (1 << 63, 0x3F69),
                 (0xC000000000000000, 0x3FFE), (0xE000000000000000, 0x3FFF), (0xA000000000000000, 0x4000),
                 (1 << 63, 0x403E), (0xFFFFFFFFFFFFFFFF, 0x403D), (1 << 63, 0x401E), (0xFFFFFFFF00000000, 0x401D),
                 (0xFFFFFFFF80000000, 0x401D), (1 << 63, 0x400E), (0xFFFF000000000000, 0x400D),
                 (0xFFFF800000000000, 0x400D), (1 << 63, 0x403F), (1 << 63, 0x3FFD), (1 << 63, 0x3FFE)]:
        values += [(m, e), (m, e | 0x8000)]
    return values


def random_x80(rng: random.Random) -> tuple[int, int]:
    kind = rng.randrange(4)
    m = rng.getrandbits(64) | (1 << 63 if kind else 0)
    e = rng.choice([rng.getrandbits(15), 0x3FFF + rng.randrange(-80, 80), 0x3C00 + rng.randrange(-80, 40),
                    0x3F80 + rng.randrange(-40, 20), 0x43FE + rng.randrange(-3, 3), 0x407E + rng.randrange(-3, 3)])
    if kind == 3:  # a value exactly on a rounding boundary
        m &= ~((1 << rng.randrange(1, 45)) - 1)
    return m, e | rng.getrandbits(1) << 15


def x80_inputs() -> list[tuple[int, int]]:
    rng = random.Random(87)
    return edge_x80() + [random_x80(rng) for _ in range(SWEEP)]


def tbyte(m: int, se: int) -> bytes:
    return struct.pack("<QH", m, se)


def reference(code: bytes, memory: bytes, cw: int = 0x37F) -> tuple[bytes, dict, int]:
    state = X87Image(regs=EMPTY.regs, top=0, cw=cw, empty=0xFF)
    after, gprs, mem, rflags = run_x87(code, state, memory=memory)
    return mem[16:26], gprs, rflags


# --- to 80 bits ----------------------------------------------------------------------------------

def _from(routine, load: bytes, width: int):
    def emit(b):
        se, m = routine(b, IN[0])
        b.emit(ir.mov_reg(1, OUT[0], se))
        b.emit(ir.mov_reg(1, OUT[1], m))
    compiled = compile_ir(emit)
    return compiled, load + ADDR + b"\xdb\x3c\x25" + ADDR16  # fld/fild [DATA]; fstp tbyte [DATA+16]


def _check_from(compiled, code, values, width):
    bad = []
    for v in values:
        mem = v.to_bytes(width // 8, "little")
        expected, _, _ = reference(code, mem)
        (se, m), _ = run_code(compiled, {IN[0]: v}, OUT)
        if tbyte(m, se) != expected:
            bad.append(f"{v:#x}: {expected.hex()} != {tbyte(m, se).hex()}")
    assert not bad, bad[:10]


def test_from_f64_and_f32_are_exact() -> None:
    rng = random.Random(1)
    doubles = [0, 1, 0x000FFFFFFFFFFFFF, 0x0010000000000000, 0x3FF0000000000000, 0x7FEFFFFFFFFFFFFF,
               0x7FF0000000000000, 0x7FF8000000000000, 0x7FF0000000000001, 0x7FF4000000000000,
               0x7FFFFFFFFFFFFFFF, 0x0000000000000800, 0x0008000000000000]
    doubles += [d | 1 << 63 for d in doubles] + [rng.getrandbits(64) for _ in range(SWEEP)]
    compiled, code = _from(x87_convert.from_f64, b"\xdd\x04\x25", 64)
    _check_from(compiled, code, doubles, 64)
    singles = [0, 1, 0x7FFFFF, 0x800000, 0x3F800000, 0x7F7FFFFF, 0x7F800000, 0x7FC00000, 0x7F800001, 0x7FA00000,
               0x7FFFFFFF, 0x400000]
    singles += [s | 1 << 31 for s in singles] + [rng.getrandbits(32) for _ in range(SWEEP)]
    compiled, code = _from(x87_convert.from_f32, b"\xd9\x04\x25", 32)
    _check_from(compiled, code, singles, 32)


def test_from_int_is_exact() -> None:
    rng = random.Random(2)
    values = [0, 1, 2, 3, (1 << 63) - 1, 1 << 63, (1 << 64) - 1, 1 << 62, (1 << 64) - 2, 0x8000000000000001]
    values += [rng.getrandbits(rng.randrange(1, 65)) for _ in range(SWEEP)]
    compiled, code = _from(x87_convert.from_int, b"\xdf\x2c\x25", 64)  # fild qword
    _check_from(compiled, code, values, 64)


# --- from 80 bits --------------------------------------------------------------------------------

@pytest.mark.parametrize("name,routine,store,size", [
    ("f64", x87_convert.to_f64, b"\xdd\x1c\x25", 8), ("f32", x87_convert.to_f32, b"\xd9\x1c\x25", 4)])
def test_to_float_rounds_once_by_rc(name, routine, store, size) -> None:
    def emit(b):
        b.emit(ir.mov_reg(1, OUT[0], routine(b, IN[0], IN[1], IN[2])))
    compiled = compile_ir(emit)
    code = b"\xdb\x2c\x25" + ADDR + store + ADDR16  # fld tbyte [DATA]; fstp m32/m64 [DATA+16]
    bad = []
    for m, se in x80_inputs():
        for cw in CONTROL_WORDS:
            expected, _, _ = reference(code, tbyte(m, se), cw)
            (got,), _ = run_code(compiled, {IN[0]: se, IN[1]: m, IN[2]: cw}, OUT[:1])
            if got.to_bytes(8, "little")[:size] != expected[:size]:
                bad.append(f"{m:#x}/{se:#x} cw {cw:#x}: {expected[:size][::-1].hex()} != {got:#x}")
    assert not bad, (len(bad), bad[:10])


@pytest.mark.parametrize("bits,store", [(16, b"\xdf\x1c\x25"), (32, b"\xdb\x1c\x25"), (64, b"\xdf\x3c\x25")])
def test_to_int_rounds_by_rc_and_gives_the_indefinite(bits, store) -> None:
    def emit(b):
        b.emit(ir.mov_reg(1, OUT[0], x87_convert.to_int(b, IN[0], IN[1], IN[2], bits)))
    compiled = compile_ir(emit)
    code = b"\xdb\x2c\x25" + ADDR + store + ADDR16  # fld tbyte; fistp m16/m32/m64
    size = bits // 8
    bad = []
    for m, se in x80_inputs():
        for cw in CONTROL_WORDS[:4]:
            expected, _, _ = reference(code, tbyte(m, se), cw)
            (got,), _ = run_code(compiled, {IN[0]: se, IN[1]: m, IN[2]: cw}, OUT[:1])
            if got.to_bytes(8, "little")[:size] != expected[:size]:
                bad.append(f"{m:#x}/{se:#x} cw {cw:#x}: {expected[:size][::-1].hex()} != {got:#x}")
    assert not bad, (len(bad), bad[:10])


# --- compare and classify ------------------------------------------------------------------------

def test_compare_matches_fucomi() -> None:
    def emit(b):
        b.emit(ir.mov_reg(1, OUT[0], x87_convert.compare(b, IN[0], IN[1], IN[2], 7)))
    compiled = compile_ir(emit)
    # fld tbyte [DATA+16] (c); fld tbyte [DATA] (a); fucomip st, st(1)
    code = b"\xdb\x2c\x25" + ADDR16 + b"\xdb\x2c\x25" + ADDR + b"\xdf\xe9"
    rng = random.Random(3)
    values = edge_x80()
    pairs = [(a, c) for a in values[::3] for c in values[::3]]
    pairs += [(a, a) for a in values] + [(random_x80(rng), random_x80(rng)) for _ in range(SWEEP)]
    pairs += [((m, se), (m + rng.choice([-1, 1]) & (1 << 64) - 1, se)) for m, se in values]
    bad = []
    for (am, ase), (cm, cse) in pairs:
        _, _, rflags = reference(code, tbyte(am, ase) + bytes(6) + tbyte(cm, cse))
        expected = (rflags & 1) | (rflags >> 2 & 1) << 1 | (rflags >> 6 & 1) << 2
        (got,), _ = run_code(compiled, {IN[0]: ase, IN[1]: am, IN[2]: cse, 7: cm}, OUT[:1])
        if got != expected:
            bad.append(f"{am:#x}/{ase:#x} vs {cm:#x}/{cse:#x}: {expected} != {got}")
    assert not bad, (len(bad), bad[:10])


def test_classify_matches_fxam() -> None:
    def emit(b):
        b.emit(ir.mov_reg(1, OUT[0], x87_convert.classify(b, IN[0], IN[1])))
    compiled = compile_ir(emit)
    code = b"\xdb\x2c\x25" + ADDR + b"\xd9\xe5\xdf\xe0"  # fld tbyte; fxam; fnstsw ax
    bad = []
    for m, se in x80_inputs():
        _, gprs, _ = reference(code, tbyte(m, se))
        ax = gprs[X.UC_X86_REG_RAX]
        expected = (ax >> 8 & 1) | (ax >> 10 & 1) << 1 | (ax >> 14 & 1) << 2
        (got,), _ = run_code(compiled, {IN[0]: se, IN[1]: m}, OUT[:1])
        if got != expected:
            bad.append(f"{m:#x}/{se:#x}: {expected} != {got}")
    assert not bad, (len(bad), bad[:10])
