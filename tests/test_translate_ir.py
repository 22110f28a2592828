"""The IR and its passes: the constant folder agrees with an AArch64 CPU, passes keep behaviour, and they pay.

- Every form the folder evaluates is run, encoded, in unicorn ARM64 on random
  and edge-value operands; its value must be the folder's.
- Blocks the passes change (known shift counts, constants, copies, dead
  temporaries) are run through the differential harness against unicorn x86-64.
- Unit checks of dead-code removal, branch resolution and register allocation
  on hand-built IR.
"""

from __future__ import annotations

import random
import shutil

import pytest
from unicorn import UC_ARCH_ARM64, UC_MODE_ARM, Uc
from unicorn import arm64_const as A

from fexaot_tool.translate import GuestCode, a64, ir, translate_block
from fexaot_tool.translate.a64 import ZR, Shift
from fexaot_tool.translate.backend import ALLOCATABLE, RegisterPressure, allocate, assemble, materialise
from fexaot_tool.translate.passes import PassStats, _evaluate, fold_constants, optimise, remove_dead_code

V = ir.VREG_BASE


def T(i: int) -> int:
    """General-purpose virtual register i (even IR numbers)."""
    return V + 2 * i


EDGE = [0, 1, 2, 31, 32, 63, 64, 0x7F, 0x80, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0x100000000,
        0x7FFFFFFFFFFFFFFF, 0x8000000000000000, 0xFFFFFFFFFFFFFFFF, 0xFFFFFFFF80000000]

# (form, arguments with X/Y/Z standing for source registers x1, x2, x3 and D for the destination x0)
FORMS = [
    ("add_imm", (1, "D", "X", 0xFFF)), ("add_imm", (0, "D", "X", 5)), ("sub_imm", (1, "D", "X", 7)),
    ("sub_imm", (0, "D", "X", 0x800)), ("add_imm", (1, "D", "X", 3), {"lsl12": True}),
    ("and_imm", (1, "D", "X", 0xFF00)), ("orr_imm", (0, "D", "X", 0x80000001)), ("eor_imm", (1, "D", "X", 0x5555555555555555)),
    ("add_reg", (1, "D", "X", "Y")), ("add_reg", (0, "D", "X", "Y", Shift.LSL, 3)), ("sub_reg", (1, "D", "X", "Y", Shift.ASR, 63)),
    ("sub_reg", (0, "D", "X", "Y", Shift.LSR, 31)), ("and_reg", (1, "D", "X", "Y", Shift.ROR, 7)),
    ("bic_reg", (1, "D", "X", "Y")), ("orr_reg", (0, "D", "X", "Y", Shift.LSL, 8)), ("orn_reg", (1, "D", "X", "Y")),
    ("eor_reg", (0, "D", "X", "Y", Shift.ROR, 31)),
    ("lslv", (1, "D", "X", "Y")), ("lslv", (0, "D", "X", "Y")), ("lsrv", (1, "D", "X", "Y")), ("lsrv", (0, "D", "X", "Y")),
    ("asrv", (1, "D", "X", "Y")), ("asrv", (0, "D", "X", "Y")), ("rorv", (1, "D", "X", "Y")), ("rorv", (0, "D", "X", "Y")),
    ("lsl_imm", (1, "D", "X", 13)), ("lsl_imm", (0, "D", "X", 31)), ("lsr_imm", (1, "D", "X", 63)), ("lsr_imm", (0, "D", "X", 1)),
    ("asr_imm", (1, "D", "X", 17)), ("asr_imm", (0, "D", "X", 31)), ("ror_imm", (1, "D", "X", 9)), ("ror_imm", (0, "D", "X", 3)),
    ("mov_reg", (1, "D", "X")), ("mov_reg", (0, "D", "X")),
    ("ubfx", (1, "D", "X", 8, 8)), ("ubfx", (0, "D", "X", 4, 28)), ("sbfx", (1, "D", "X", 0, 16)), ("sbfx", (0, "D", "X", 7, 9)),
    ("sbfx", (1, "D", "X", 63, 1)), ("bfi", (1, "D", "X", 8, 8)), ("bfi", (0, "D", "X", 16, 16)), ("bfi", (1, "D", "X", 0, 64)),
    ("madd", (1, "D", "X", "Y", "Z")), ("madd", (0, "D", "X", "Y", "Z")), ("msub", (1, "D", "X", "Y", "Z")),
    ("msub", (0, "D", "X", "Y", ZR)), ("udiv", (1, "D", "X", "Y")), ("udiv", (0, "D", "X", "Y")),
    ("sdiv", (1, "D", "X", "Y")), ("sdiv", (0, "D", "X", "Y")), ("smulh", ("D", "X", "Y")), ("umulh", ("D", "X", "Y")),
    ("clz", (1, "D", "X")), ("clz", (0, "D", "X")), ("rbit", (1, "D", "X")), ("rbit", (0, "D", "X")),
    ("rev", (1, "D", "X")), ("rev", (0, "D", "X")), ("extr", (1, "D", "X", "Y", 17)), ("extr", (0, "D", "X", "Y", 5)),
    ("movz", (1, "D", 0xBEEF, 2)), ("movn", (0, "D", 0x1234, 1)), ("movk", (1, "D", 0xCAFE, 3)), ("movk", (0, "D", 0xCAFE, 1)),
]
REG = {"D": 0, "X": 1, "Y": 2, "Z": 3}


def _run_arm(word: int, inputs: dict[int, int]) -> int:
    uc = Uc(UC_ARCH_ARM64, UC_MODE_ARM)
    uc.mem_map(0x10000, 0x1000)
    uc.mem_write(0x10000, word.to_bytes(4, "little"))
    for reg, value in inputs.items():
        uc.reg_write(A.UC_ARM64_REG_X0 + reg, value)
    uc.emu_start(0x10000, 0x10004)
    return uc.reg_read(A.UC_ARM64_REG_X0)


@pytest.mark.parametrize("row", FORMS, ids=[f"{r[0]}-{i}" for i, r in enumerate(FORMS)])
def test_folder_agrees_with_the_cpu(row) -> None:
    form, template = row[0], row[1]
    kwargs = row[2] if len(row) > 2 else {}
    args = tuple(REG[a] if isinstance(a, str) else a for a in template)
    op = getattr(ir, form)(*args, **kwargs)
    word = ir.ENCODERS[form](*args, **kwargs)
    rnd = random.Random(form)
    samples = [(x, y, z) for x in EDGE[::3] for y in EDGE[::4] for z in (0, 5)]
    samples += [(rnd.getrandbits(64), rnd.getrandbits(64), rnd.getrandbits(64)) for _ in range(40)]
    for x, y, z in samples:
        d = 0x0123456789ABCDEF ^ x  # the old destination (bfi and movk keep part of it)
        inputs = {0: d, 1: x, 2: y, 3: z}
        folded = _evaluate(op, lambda r: 0 if r == ZR else inputs[r])
        assert folded is not None, f"{form} is not folded"
        assert folded == _run_arm(word, inputs), f"{op!r} with x0={d:#x} x1={x:#x} x2={y:#x} x3={z:#x}"


def test_materialise_is_shortest_and_right() -> None:
    rnd = random.Random(7)
    values = EDGE + [rnd.getrandbits(64) for _ in range(100)] + [rnd.getrandbits(16) << 16 * rnd.randrange(4)
                                                                 for _ in range(50)]
    for value in values:
        words = materialise(1, 0, value)
        uc = Uc(UC_ARCH_ARM64, UC_MODE_ARM)
        uc.mem_map(0x10000, 0x1000)
        uc.mem_write(0x10000, b"".join(w.to_bytes(4, "little") for w in words))
        uc.reg_write(A.UC_ARM64_REG_X0, 0xDEADBEEFDEADBEEF)
        uc.emu_start(0x10000, 0x10000 + 4 * len(words))
        assert uc.reg_read(A.UC_ARM64_REG_X0) == value
        assert len(words) <= 4
        if value < 1 << 16 or (~value & (1 << 64) - 1) < 1 << 16:
            assert len(words) == 1


# --- the passes on hand-built IR ----------------------------------------------------------------

def _exit() -> list[ir.Op]:
    return [ir.ldr_uimm(3, 1, 28, 0xD0), ir.br(1)]


def test_dead_temporaries_and_flags_go() -> None:
    ops = [ir.mov_imm(1, T(0), 5), ir.add_reg(1, T(1), 4, T(0)),  # v1 never read
           ir.adds_reg(1, ZR, 4, 5),  # flags overwritten below before anyone reads them
           ir.subs_reg(1, ZR, 6, 7), ir.add_imm(1, 4, 4, 1), *_exit()]
    stats = PassStats()
    out = remove_dead_code(ops, stats)
    assert [op.form for op in out] == ["subs_reg", "add_imm", "ldr_uimm", "br"]
    assert stats.dead == 3


def test_guest_state_is_live_at_every_exit() -> None:
    skip = ir.Label()
    ops = [ir.mov_imm(1, 4, 1), ir.cbz(1, 5, skip), ir.mov_imm(1, 6, 2), *_exit(), ir.label(skip),
           ir.mov_imm(1, 21, 3), *_exit()]
    assert len(remove_dead_code(ops, PassStats())) == len(ops)


def test_known_count_resolves_the_branch_and_the_shift() -> None:
    skip = ir.Label()
    ops = [ir.mov_imm(0, 5, 4), ir.and_imm(0, V, 5, 63), ir.cbz(0, V, skip), ir.lslv(1, 4, 4, V),
           ir.label(skip), *_exit()]
    out = optimise(ops)
    assert [op.form for op in out] == ["const", "lsl_imm", "ldr_uimm", "br"]
    assert out[1].args == (1, 4, 4, 4)
    never = [ir.mov_imm(0, 5, 64), ir.and_imm(0, V, 5, 63), ir.cbz(0, V, skip), ir.lslv(1, 4, 4, V),
             ir.label(skip), *_exit()]
    assert [op.form for op in optimise(never)] == ["const", "ldr_uimm", "br"]


def test_copies_are_propagated_until_their_source_changes() -> None:
    # xchg rax, rdx as the lowering writes it: four moves become three.
    ops = [ir.mov_reg(1, V, 4), ir.mov_reg(1, T(1), 6), ir.mov_reg(1, 4, T(1)), ir.mov_reg(1, 6, V), *_exit()]
    out = optimise(ops)
    assert [repr(op) for op in out[:3]] == ["mov_reg 1, %x0, x4", "mov_reg 1, x4, x6", "mov_reg 1, x6, %x0"]


def test_known_zero_is_stored_as_xzr() -> None:
    ops = [ir.eor_reg(1, V, 4, 4), ir.mov_imm(1, T(1), 0), ir.stlr(3, T(1), 7), *_exit()]
    out = optimise(ops)
    assert [op.form for op in out] == ["stlr", "ldr_uimm", "br"] and out[0].args[1] == ZR


def test_values_are_forgotten_at_join_points() -> None:
    join = ir.Label()
    ops = [ir.mov_imm(1, 4, 1), ir.cbz(1, 5, join), ir.mov_imm(1, 4, 2), ir.label(join),
           ir.add_reg(1, 6, 6, 4), *_exit()]
    out = fold_constants(ops, PassStats())
    assert out[-3].form == "add_reg"  # rax is 1 or 2 here: not a constant


def test_allocation_reuses_registers_and_reports_pressure() -> None:
    chain = []
    for i in range(40):  # each temporary dies at the next operation: two registers suffice
        chain.append(ir.add_imm(1, T(i + 1), T(i) if i else 4, 1))
    chain.append(ir.mov_reg(1, 4, T(40)))
    assignment = allocate(chain + _exit())
    assert len(set(assignment.values())) == 2 and set(assignment.values()) <= set(ALLOCATABLE)
    wide = [ir.mov_imm(1, T(i), i) for i in range(len(ALLOCATABLE) + 1)]
    wide += [ir.add_reg(1, 4, 4, T(i)) for i in range(len(ALLOCATABLE) + 1)]
    with pytest.raises(RegisterPressure):
        allocate(wide + _exit())


def test_assemble_resolves_labels_both_ways() -> None:
    back = ir.Label()
    fwd = ir.Label()
    ops = [ir.label(back), ir.subs_imm(0, 5, 5, 1), ir.b_cond(a64.Cond.NE, back), ir.cbz(1, 6, fwd),
           ir.mov_imm(1, 4, 0x123456789), ir.label(fwd), *_exit()]
    code, literals, count = assemble(ops)
    words = [int.from_bytes(code[i:i + 4], "little") for i in range(0, count * 4, 4)]
    assert words[1] == a64.b_cond(a64.Cond.NE, -4)
    assert words[2] == a64.cbz(1, 6, (2 + 1 + len(materialise(1, 4, 0x123456789))) * 4 - 2 * 4)
    assert literals == []


# --- blocks the passes change, against x86 ---------------------------------------------------------

PASS_CASES = [
    "mov ecx, 5\n shl rax, cl", "mov ecx, 0\n shl eax, cl", "mov ecx, 64\n shr edx, cl", "mov cl, 65\n rol rax, cl",
    "mov ecx, 3\n shrd rax, rdx, cl", "mov ecx, 32\n shld eax, edx, cl", "mov ecx, 0\n sar al, cl",
    "mov edx, 8\n imul rax, rdx", "imul rax, rdx, 8", "mov esi, 1\n bts rax, rsi", "xor ecx, ecx\n mov [rbx], rcx",
    "mov eax, 1\n add rax, rdx", "mov rcx, rdx\n add rcx, 5", "mov eax, 0x10\n and rdx, rax",
    "xor esi, esi\n sub rdx, rsi", "mov eax, 0xff00\n or rdx, rax\n mov [rbx+8], rax", "mov r8, rdx\n xchg r8, rax",
    "mov ecx, 0x1000\n sub rax, rcx", "mov ecx, -7\n cmp rdx, rcx", "mov eax, 3\n mov ecx, eax\n shl rdx, cl",
    "mov eax, 100\n xor edx, edx\n mov ecx, 7\n div rcx",
]


@pytest.mark.skipif(shutil.which("as") is None, reason="needs GNU as for x86-64")
@pytest.mark.parametrize("source", PASS_CASES)
def test_optimised_block_matches_x86(source: str) -> None:
    from translate_harness import Differ, assemble as x86_assemble
    Differ().check(x86_assemble(source))


@pytest.mark.skipif(shutil.which("as") is None, reason="needs GNU as for x86-64")
@pytest.mark.parametrize("source", PASS_CASES)
def test_unoptimised_block_matches_x86(source: str) -> None:
    """Without the passes (what speed-profile gives blocks no profile saw run) the code is right too."""
    from translate_harness import Differ, assemble as x86_assemble
    Differ(optimise=False).check(x86_assemble(source))


@pytest.mark.skipif(shutil.which("as") is None, reason="needs GNU as for x86-64")
def test_passes_shorten_the_code() -> None:
    from translate_harness import assemble as x86_assemble
    code = x86_assemble("mov edx, 16\n imul rsi, rdx\n xor edi, edi\n mov [rbx], rdi\n mov ecx, 4\n shl rax, cl")
    guest = GuestCode(0, ((0x1000, code),))
    plain = translate_block(guest, 0x1000, len(code), optimise=False)
    stats = PassStats()
    better = translate_block(guest, 0x1000, len(code), stats=stats)
    assert better.host_instructions < plain.host_instructions - 5
    assert stats.branches >= 1 and stats.immediates >= 2 and stats.dead >= 3
