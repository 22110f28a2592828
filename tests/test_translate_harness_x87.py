"""The translator tests' differential runner (translate_harness) sets and compares x87 state."""

from __future__ import annotations

import dataclasses
import random
import shutil

import pytest

pytestmark = pytest.mark.skipif(shutil.which("as") is None, reason="needs GNU as for x86-64")

import translate_harness  # noqa: E402
from fexaot_tool.translate.abi import X87Image  # noqa: E402
from translate_harness import Differ, ModuleDiffer, assemble  # noqa: E402

from fexaot_tool.translate import GuestCode, a64  # noqa: E402

ONE, TWO, THREE = (1 << 63, 0x3FFF), (1 << 63, 0x4000), (0xC000000000000000, 0x4000)
SIGN_FLIP = a64.eor_imm(0, 2, 2, 0x8000)  # how the lowering flips a sign (fchs), whatever the registers


def _corrupt_sign_flip(monkeypatch) -> None:
    """Translate as usual, then make every eor wN, wM, #0x8000 flip an exponent bit (#0x4000) instead."""
    real = translate_harness.translate_block

    def translate(*args, **kwargs):
        block = real(*args, **kwargs)
        code = bytearray(block.code)
        found = 0
        for at in range(0, len(code), 4):
            word = int.from_bytes(code[at:at + 4], "little")
            if word & ~0x3FF == SIGN_FLIP & ~0x3FF:
                code[at:at + 4] = a64.eor_imm(0, word & 31, word >> 5 & 31, 0x4000).to_bytes(4, "little")
                found += 1
        assert found
        return dataclasses.replace(block, code=bytes(code))

    monkeypatch.setattr(translate_harness, "translate_block", translate)


BLOCKS = ["fchs\n fxch st(1)\n faddp st(1), st", "fld st(1)\n fmul st, st(2)\n fstp qword ptr [rbx]",
          "fcomi st, st(1)\n fstp st(0)", "fld qword ptr [rbx]\n fsubr st, st(1)\n fistp dword ptr [rbx+8]",
          "fldz\n fucomip st, st(1)\n fxam\n fnstsw ax"]


@pytest.mark.parametrize("source", BLOCKS)
def test_x87_blocks_agree_from_random_x87_states(source: str) -> None:
    Differ().check(assemble(source), states=24)


def test_random_x87_states_reach_both_engines(monkeypatch) -> None:
    """A harness that did not give the x86 engine the x87 state would be caught: with unicorn's x87 left
    in its reset state, fchs of ST(0) differs from the translation's."""
    monkeypatch.setattr(translate_harness, "x87_to_registers", lambda image: [])
    with pytest.raises(AssertionError, match="x87"):
        Differ().check(assemble("fchs"), states=4)


def test_a_wrong_x87_result_is_caught(monkeypatch) -> None:
    code = assemble("fchs\n fxch st(1)\n faddp st(1), st")
    Differ().check(code, states=4)
    _corrupt_sign_flip(monkeypatch)
    with pytest.raises(AssertionError, match=r"x87: x87_r\d"):
        Differ().check(code, states=4)


def test_explicit_x87_states() -> None:
    """X87Image: physical registers, TOP, control and status words, empty mask; ``stack`` builds one from
    ST(0), ST(1), ...; the x87 oracle's states and raw state-block images work too."""
    state = X87Image.stack(ONE, TWO, top=6)
    assert state.regs[6] == ONE and state.regs[7] == TWO and state.empty == 0x3F
    assert X87Image.unpack(state.pack()) == state
    code = assemble("fld st(1)\n faddp st(1), st\n fstp qword ptr [rbx]")
    rounding = [X87Image.stack(ONE, (0xFFFFFFFFFFFFFFFF, 0x3FFF), cw=0x37F | rc << 10) for rc in range(4)]
    Differ().check(code, states=0, x87=[state, *rounding, state.pack()])
    with pytest.raises(AssertionError, match="without x87"):
        Differ().check(assemble("add rax, rdx"), states=1, x87=[state])


def test_explicit_x87_state_is_what_runs(monkeypatch) -> None:
    """The explicit state is the input: the translation's result for it is known (ST(0) = 1 + 2 = 3 at TOP 6,
    R7 empty after the pop), and a corrupted translation is caught on it."""
    captured = []
    real = translate_harness.Differ._run_arm

    def run_arm(self, state, memory):
        outcome = real(self, state, memory)
        captured.append(outcome.x87)
        return outcome

    monkeypatch.setattr(translate_harness.Differ, "_run_arm", run_arm)
    Differ().check(assemble("faddp st(1), st"), states=0, x87=[X87Image.stack(ONE, TWO, top=6)])
    after = X87Image.unpack(captured[0])
    assert after.top == 7 and after.regs[7] == THREE and after.empty == 0xFF & ~(1 << 7)
    _corrupt_sign_flip(monkeypatch)
    with pytest.raises(AssertionError, match="x87_r7"):
        Differ().check(assemble("fchs"), states=0, x87=[X87Image.stack(ONE, top=7)])


def test_fcomi_flags_and_compare_c1_follow_the_sdm() -> None:
    """fcomi clears OF/SF/AF and C1 (the translation, as the SDM says) where unicorn keeps them: accepted."""
    c1 = dataclasses.replace(X87Image.stack(ONE, TWO), sw=0x200)
    Differ().check(assemble("fcomi st, st(1)"), states=8, x87=[c1])


def test_module_differ_sets_and_compares_x87_state(monkeypatch) -> None:
    code = assemble("fld st(1)\n fchs\n faddp st(2), st\n fstp st(0)\n ret")
    guest = GuestCode(0, ((0x10000, code),))
    differ = ModuleDiffer(guest)
    assert differ.check(0x10000, len(code), states=16, seed=3,
                        x87=[X87Image.stack(ONE, TWO, THREE, top=2)]) == 17
    _corrupt_sign_flip(monkeypatch)
    import fexaot_tool.translate as translate
    monkeypatch.setattr(translate, "translate_block", translate_harness.translate_block)
    with pytest.raises(AssertionError, match=r"x87: x87_r\d"):
        differ.check(0x10000, len(code), states=4, seed=3)


def test_blocks_without_x87_carry_no_x87_state(monkeypatch) -> None:
    """Non-x87 blocks draw the same random states as before and never touch the x87 registers."""
    monkeypatch.setattr(translate_harness, "x87_to_registers", lambda image: pytest.fail("x87 state set"))
    Differ().check(assemble("add rax, rdx"), states=8)
    assert "x87" not in Differ()._random_state(random.Random(1), False)
