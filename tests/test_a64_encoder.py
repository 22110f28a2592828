"""Every AArch64 encoder form round-trips through capstone, and through GNU as (golden)."""

from __future__ import annotations

import random
import shutil
import subprocess

import capstone
import pytest

from fexaot_tool.translate import a64
from fexaot_tool.translate.a64 import Cond, Shift

# (encoding, the assembler text capstone prints and GNU as accepts).  One row per
# form and alias the translator uses; several rows where a field has several cases.
FORMS: list[tuple[int, str]] = [
    (a64.add_imm(1, 0, 1, 4095), "add x0, x1, #0xfff"),
    (a64.add_imm(0, 3, 4, 1, lsl12=True), "add w3, w4, #1, lsl #12"),
    (a64.adds_imm(1, 5, 6, 7), "adds x5, x6, #7"),
    (a64.sub_imm(1, 8, 9, 16), "sub x8, x9, #0x10"),
    (a64.subs_imm(0, 31, 10, 1), "cmp w10, #1"),
    (a64.and_imm(1, 1, 2, 0xFF), "and x1, x2, #0xff"),
    (a64.orr_imm(0, 1, 2, 0x80000000), "orr w1, w2, #0x80000000"),
    (a64.eor_imm(1, 1, 2, 1), "eor x1, x2, #1"),
    (a64.ands_imm(1, 31, 2, 0x5555555555555555), "tst x2, #0x5555555555555555"),
    (a64.movz(1, 0, 0x1234, 1), "mov x0, #0x12340000"),
    (a64.movn(0, 0, 0), "mov w0, #-1"),
    (a64.movk(1, 7, 0xBEEF, 3), "movk x7, #0xbeef, lsl #48"),
    (a64.sbfm(1, 1, 2, 0, 7), "sxtb x1, w2"),
    (a64.ubfm(0, 1, 2, 0, 15), "uxth w1, w2"),
    (a64.bfm(1, 1, 2, 56, 7), "bfi x1, x2, #8, #8"),
    (a64.extr(1, 1, 2, 3, 5), "extr x1, x2, x3, #5"),
    (a64.adr(0, 16), "adr x0, #0x1010"),
    (a64.add_reg(1, 1, 2, 3, Shift.LSL, 3), "add x1, x2, x3, lsl #3"),
    (a64.adds_reg(0, 31, 31, 4, Shift.LSL, 24), "cmn wzr, w4, lsl #24"),
    (a64.sub_reg(1, 1, 2, 3, Shift.ASR, 63), "sub x1, x2, x3, asr #63"),
    (a64.subs_reg(1, 1, 2, 3), "subs x1, x2, x3"),
    (a64.adc(1, 1, 2, 3), "adc x1, x2, x3"),
    (a64.adcs(0, 1, 2, 3), "adcs w1, w2, w3"),
    (a64.sbc(1, 1, 2, 3), "sbc x1, x2, x3"),
    (a64.sbcs(1, 1, 2, 3), "sbcs x1, x2, x3"),
    (a64.and_reg(1, 1, 2, 3), "and x1, x2, x3"),
    (a64.bic_reg(1, 1, 2, 3), "bic x1, x2, x3"),
    (a64.orr_reg(1, 1, 2, 3, Shift.LSR, 4), "orr x1, x2, x3, lsr #4"),
    (a64.orn_reg(0, 1, 31, 3), "mvn w1, w3"),
    (a64.eor_reg(1, 1, 2, 3, Shift.ROR, 7), "eor x1, x2, x3, ror #7"),
    (a64.ands_reg(1, 31, 2, 3), "tst x2, x3"),
    (a64.lslv(1, 1, 2, 3), "lsl x1, x2, x3"),
    (a64.lsrv(0, 1, 2, 3), "lsr w1, w2, w3"),
    (a64.asrv(1, 1, 2, 3), "asr x1, x2, x3"),
    (a64.rorv(1, 1, 2, 3), "ror x1, x2, x3"),
    (a64.udiv(1, 1, 2, 3), "udiv x1, x2, x3"),
    (a64.sdiv(0, 1, 2, 3), "sdiv w1, w2, w3"),
    (a64.madd(1, 1, 2, 3, 4), "madd x1, x2, x3, x4"),
    (a64.madd(1, 1, 2, 3, 31), "mul x1, x2, x3"),
    (a64.msub(1, 1, 2, 3, 4), "msub x1, x2, x3, x4"),
    (a64.smaddl(1, 2, 3, 31), "smull x1, w2, w3"),
    (a64.umaddl(1, 2, 3, 31), "umull x1, w2, w3"),
    (a64.smulh(1, 2, 3), "smulh x1, x2, x3"),
    (a64.umulh(1, 2, 3), "umulh x1, x2, x3"),
    (a64.csel(1, 1, 2, 3, Cond.HS), "csel x1, x2, x3, hs"),
    (a64.csinc(0, 1, 2, 3, Cond.LT), "csinc w1, w2, w3, lt"),
    (a64.csinv(1, 1, 2, 3, Cond.GT), "csinv x1, x2, x3, gt"),
    (a64.csneg(1, 1, 2, 3, Cond.MI), "csneg x1, x2, x3, mi"),
    (a64.ccmp_imm(1, 2, 0, 4, Cond.EQ), "ccmp x2, #0, #4, eq"),
    (a64.clz(1, 1, 2), "clz x1, x2"),
    (a64.rbit(0, 1, 2), "rbit w1, w2"),
    (a64.rev16(0, 1, 2), "rev16 w1, w2"),
    (a64.rev32(1, 2), "rev32 x1, x2"),
    (a64.rev(1, 1, 2), "rev x1, x2"),
    (a64.rev(0, 1, 2), "rev w1, w2"),
    (a64.str_uimm(3, 4, 28, 0x80), "str x4, [x28, #0x80]"),
    (a64.str_uimm(0, 4, 5, 3), "strb w4, [x5, #3]"),
    (a64.ldr_uimm(2, 4, 28, 0xC0), "ldr w4, [x28, #0xc0]"),
    (a64.ldr_uimm(1, 4, 5, 2), "ldrh w4, [x5, #2]"),
    (a64.ldrs_uimm(2, 4, 5, 4), "ldrsw x4, [x5, #4]"),
    (a64.stur(3, 4, 5, -8), "stur x4, [x5, #-8]"),
    (a64.ldur(1, 4, 5, 255), "ldurh w4, [x5, #0xff]"),
    (a64.str_pre(3, 4, 8, -8), "str x4, [x8, #-8]!"),
    (a64.ldr_post(3, 4, 8, 8), "ldr x4, [x8], #8"),
    (a64.ldr_literal(1, 0, 64), "ldr x0, #0x1040"),
    (a64.ldr_literal(0, 0, -4), "ldr w0, #0xffc"),
    (a64.ldapr(3, 1, 2), "ldapr x1, [x2]"),
    (a64.ldapr(0, 1, 2), "ldaprb w1, [x2]"),
    (a64.ldapr(1, 1, 2), "ldaprh w1, [x2]"),
    (a64.ldar(2, 1, 2), "ldar w1, [x2]"),
    (a64.stlr(3, 1, 2), "stlr x1, [x2]"),
    (a64.stlr(0, 1, 2), "stlrb w1, [x2]"),
    (a64.b(-8), "b #0xff8"),
    (a64.bl(0x100), "bl #0x1100"),
    (a64.b_cond(Cond.NE, 16), "b.ne #0x1010"),
    (a64.cbz(1, 3, 8), "cbz x3, #0x1008"),
    (a64.cbnz(0, 3, -12), "cbnz w3, #0xff4"),
    (a64.tbz(3, 40, 8), "tbz x3, #0x28, #0x1008"),
    (a64.tbnz(3, 0, 12), "tbnz w3, #0, #0x100c"),
    (a64.br(1), "br x1"),
    (a64.blr(2), "blr x2"),
    (a64.ret(), "ret"),
    (a64.mrs_nzcv(3), "mrs x3, nzcv"),
    (a64.msr_nzcv(3), "msr nzcv, x3"),
    (a64.cfinv(), "cfinv"),
    (a64.rmif(3, 28, a64.C_BIT), "rmif x3, #0x1c, #2"),
    (a64.setf8(3), "setf8 w3"),
    (a64.setf16(3), "setf16 w3"),
    (a64.nop(), "nop"),
    (a64.brk(1), "brk #1"),
    (a64.mov_reg(1, 4, 5), "mov x4, x5"),
    (a64.lsl_imm(1, 1, 2, 3), "lsl x1, x2, #3"),
    (a64.lsr_imm(0, 1, 2, 24), "lsr w1, w2, #0x18"),
    (a64.asr_imm(1, 1, 2, 63), "asr x1, x2, #0x3f"),
    (a64.ror_imm(1, 1, 2, 8), "ror x1, x2, #8"),
    (a64.ubfx(1, 1, 2, 8, 8), "ubfx x1, x2, #8, #8"),
    (a64.sbfx(1, 1, 2, 0, 32), "sxtw x1, w2"),
    (a64.bfi(1, 1, 2, 0, 16), "bfxil x1, x2, #0, #0x10"),
    (a64.cset(0, 1, Cond.EQ), "cset w1, eq"),
    (a64.csetm(1, 1, Cond.HI), "csetm x1, hi"),
]


def _capstone() -> capstone.Cs:
    return capstone.Cs(capstone.CS_ARCH_ARM64, capstone.CS_MODE_ARM)


# Rows are disassembled at BASE, so pc-relative rows show BASE + offset (capstone
# prints targets as absolute addresses).
BASE = 0x1000


def _disasm(cs: capstone.Cs, word: int) -> str:
    insns = list(cs.disasm_lite(word.to_bytes(4, "little"), BASE))
    assert len(insns) == 1, f"capstone cannot decode {word:#010x}"
    _, _, mnemonic, operands = insns[0]
    return f"{mnemonic} {operands}".strip()


@pytest.mark.parametrize("word,text", FORMS, ids=[t for _, t in FORMS])
def test_form_round_trips_through_capstone(word: int, text: str) -> None:
    assert _disasm(_capstone(), word) == text


@pytest.mark.skipif(shutil.which("aarch64-linux-gnu-as") is None, reason="binutils-aarch64-linux-gnu not installed")
def test_forms_match_gnu_as(tmp_path) -> None:
    """GNU as assembles each row's text to the same word our encoder produced."""
    source = tmp_path / "forms.s"
    # Branch and literal offsets are relative to each instruction's own address.
    lines = []
    for i, (_, text) in enumerate(FORMS):
        lines.append(f".org {i * 4}")
        lines.append(_pc_relative_to_label(text, i * 4))
    source.write_text("\n".join(lines) + "\n")
    obj = tmp_path / "forms.o"
    subprocess.run(["aarch64-linux-gnu-as", "-march=armv8.4-a", "-o", str(obj), str(source)], check=True)
    binary = tmp_path / "forms.bin"
    subprocess.run(["aarch64-linux-gnu-objcopy", "-O", "binary", "-j", ".text", str(obj), str(binary)], check=True)
    data = binary.read_bytes()
    for i, (word, text) in enumerate(FORMS):
        got = int.from_bytes(data[i * 4:i * 4 + 4], "little")
        assert got == word, f"{text}: GNU as {got:#010x}, encoder {word:#010x}"


_PC_RELATIVE = ("b ", "bl ", "b.", "cbz", "cbnz", "tbz", "tbnz", "adr ", "ldr x0, #", "ldr w0, #")


def _pc_relative_to_label(text: str, address: int) -> str:
    """Capstone prints pc-relative targets as absolute addresses from BASE; GNU as wants `.+off`."""
    if not text.startswith(_PC_RELATIVE):
        return text
    head, _, target = text.rpartition("#")
    offset = int(target, 0) - BASE
    return f"{head}.{offset:+d}".replace("#.", ".")


def test_bitmask_immediates_round_trip_random() -> None:
    """Random valid logical immediates encode and decode back; invalid ones are refused."""
    rnd = random.Random(7)
    cs = _capstone()
    for _ in range(3000):
        width = rnd.choice((32, 64))
        size = rnd.choice([s for s in (2, 4, 8, 16, 32, 64) if s <= width])
        ones = rnd.randrange(1, size)
        rotation = rnd.randrange(size)
        element = ((1 << ones) - 1)
        element = ((element >> rotation) | (element << (size - rotation))) & ((1 << size) - 1)
        value = 0
        for shift in range(0, width, size):
            value |= element << shift
        word = a64.and_imm(1 if width == 64 else 0, 1, 2, value)
        _, _, _, operands = next(cs.disasm_lite(word.to_bytes(4, "little"), 0))
        assert int(operands.rpartition("#")[2], 0) == value, (hex(value), operands)
    for bad in (0, (1 << 64) - 1, 0x1234, 0xFF00FF01):
        assert a64.encode_bitmask(bad, 64) is None
    with pytest.raises(ValueError):
        a64.orr_imm(1, 0, 0, 0x1234)
