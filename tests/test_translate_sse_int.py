"""SSE2 integer instructions, translated and run against unicorn x86-64 from random and edge-value XMM states.

Every form runs with a register and a memory source from the harness's 20
states (random bits, float edge lanes, byte patterns with 0x00/0x7F/0x80/0xFF,
64-bit edge lanes); the saturating, multiplying and shifting forms also run on
built edge vectors (mov + movq + punpcklqdq) and on shift counts at every
boundary, including counts above 2**32 and 2**63 held in an XMM register.
"""

from __future__ import annotations

import shutil

import pytest

pytestmark = pytest.mark.skipif(shutil.which("as") is None, reason="needs GNU as for x86-64")

from translate_harness import GUEST, Differ, assemble  # noqa: E402

from fexaot_tool.translate import GuestCode, translate_block  # noqa: E402
from fexaot_tool.translate.builder import REASON_VECTOR  # noqa: E402


def vector(xmm: str, value: int) -> str:
    """Instructions that set ``xmm`` to the 128-bit ``value`` (clobbers rax and xmm15)."""
    return (f"mov rax, {value & (1 << 64) - 1:#x}\n movq {xmm}, rax\n mov rax, {value >> 64:#x}\n"
            f" movq xmm15, rax\n punpcklqdq {xmm}, xmm15")


def lanes(values: list[int], bits: int) -> int:
    """A 128-bit value from lanes of ``bits`` bits (lane 0 first), repeating ``values``."""
    count = 128 // bits
    return sum((values[i % len(values)] & (1 << bits) - 1) << (bits * i) for i in range(count))


ELEMENTWISE = ("paddb paddw paddd paddq psubb psubw psubd psubq paddusb paddusw paddsb paddsw psubusb psubusw "
               "psubsb psubsw pcmpeqb pcmpeqw pcmpeqd pcmpgtb pcmpgtw pcmpgtd pminub pmaxub pminsw pmaxsw "
               "pavgb pavgw pmullw pmulhw pmulhuw pmuludq pmaddwd psadbw punpcklbw punpcklwd punpckldq "
               "punpcklqdq punpckhbw punpckhwd punpckhdq punpckhqdq packsswb packuswb packssdw").split()

# Register, memory (unaligned base, displacement, stack, RIP-relative), same register, high registers.
TWO_OPERAND = [f"{m} {operands}" for m in ELEMENTWISE for operands in
               ("xmm1, xmm2", "xmm3, [rbx+16]", "xmm4, xmm4", "xmm14, xmm9")]
TWO_OPERAND += [f"{m} {operands}" for m in ("paddb", "pcmpeqb", "pminub", "packuswb", "punpcklbw", "pmaddwd")
                for operands in ("xmm0, [rsp+32]", "xmm5, [rip+0x40]", "xmm6, [rbx+rsi*2-8]")]

# Byte and word lanes at the saturation edges, each operation on (a, b) and (b, a).
BYTE_EDGES = [0x7F, 0x80, 0xFF, 0x01, 0x00, 0xFE, 0x81, 0x7E, 0x80, 0x7F, 0x01, 0xFF, 0x40, 0xC0, 0x3F, 0xC1]
BYTE_OTHERS = [0x01, 0xFF, 0x01, 0xFF, 0x80, 0x7F, 0x80, 0x7F, 0x80, 0x7F, 0x00, 0x00, 0x40, 0xC0, 0xC1, 0x3F]
WORD_EDGES = [0x7FFF, 0x8000, 0xFFFF, 0x0001, 0x0000, 0x7FFE, 0x8001, 0x00FF]
WORD_OTHERS = [0x0001, 0xFFFF, 0x0001, 0x8000, 0x8000, 0x7FFF, 0x8000, 0xFF01]
DWORD_EDGES = [0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0x00008000]
DWORD_OTHERS = [0x00000001, 0x80000000, 0x7FFFFFFF, 0xFFFF8000]
SATURATING = [
    (m, lanes(a, bits), lanes(c, bits))
    for m, a, c, bits in
    [(m, BYTE_EDGES, BYTE_OTHERS, 8) for m in ("paddusb", "paddsb", "psubusb", "psubsb", "pavgb", "pminub",
                                               "pmaxub", "pcmpgtb", "pcmpeqb", "psadbw")]
    + [(m, WORD_EDGES, WORD_OTHERS, 16) for m in ("paddusw", "paddsw", "psubusw", "psubsw", "pavgw", "pminsw",
                                                 "pmaxsw", "pcmpgtw", "pmullw", "pmulhw", "pmulhuw", "pmaddwd",
                                                 "packsswb", "packuswb")]
    + [(m, DWORD_EDGES, DWORD_OTHERS, 32) for m in ("packssdw", "pcmpgtd", "pmuludq", "paddd", "psubd")]
    + [("pmaddwd", [0x8000], [0x8000], 16)]  # -32768 * -32768 * 2 wraps to 0x80000000
]
EDGE_CASES = [f"{vector('xmm1', a)}\n {vector('xmm2', c)}\n {m} xmm1, xmm2\n {vector('xmm3', c)}\n"
              f" {vector('xmm4', a)}\n {m} xmm3, xmm4" for m, a, c in SATURATING]

# Shifts: every immediate boundary, and counts from a register or memory (the whole low 64 bits count).
SHIFTS = {"psllw": 16, "pslld": 32, "psllq": 64, "psrlw": 16, "psrld": 32, "psrlq": 64, "psraw": 16, "psrad": 32}
SHIFT_IMM = [f"{m} xmm{n}, {count}" for n, (m, lane) in enumerate(SHIFTS.items(), start=1)
             for count in sorted({0, 1, lane // 2, lane - 1, lane, lane + 1, 64, 127, 128, 255})]
REGISTER_COUNTS = [0, 1, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 255, 256, 0x100000000, 0x100000001,
                   0x8000000000000000, 0xFFFFFFFFFFFFFFFF, 0x7FFFFFFFFFFFFFFF, 0x10000000F]
SHIFT_REGISTER = [f"mov rax, {count:#x}\n movq xmm2, rax\n pinsrw xmm2, edx, 5\n {m} xmm1, xmm2"
                  for m in SHIFTS for count in REGISTER_COUNTS]
SHIFT_OTHER = [f"{m} {operands}" for m in SHIFTS
               for operands in ("xmm3, xmm4", "xmm5, xmm5", "xmm6, [rbx]", "xmm13, [rsp+16]")]
SHIFT_OTHER += [f"mov qword ptr [rbx], {count}\n {m} xmm7, [rbx]" for m in ("psllq", "psrlw", "psrad")
                for count in (3, 15, 16, 40)]
BYTE_SHIFTS = [f"{m} xmm{n}, {count}" for n, m in ((2, "pslldq"), (9, "psrldq"))
               for count in (0, 1, 4, 7, 8, 9, 15, 16, 17, 255)]

SHUFFLE_IMMEDIATES = (0x00, 0x1B, 0x4E, 0xB1, 0xE4, 0x55, 0xFF, 0x40, 0xE5, 0x93, 0x0E, 0xA4)
SHUFFLES = [f"{m} {operands}, {imm:#x}" for m in ("pshufd", "pshuflw", "pshufhw") for imm in SHUFFLE_IMMEDIATES
            for operands in ("xmm1, xmm2", "xmm3, xmm3")]
SHUFFLES += [f"{m} xmm10, [rbx+8], 0x1b" for m in ("pshufd", "pshuflw", "pshufhw")]

LANE_MOVES = [f"pinsrw xmm1, eax, {i}" for i in range(8)] + [
    "pinsrw xmm9, r8d, 2", "pinsrw xmm2, word ptr [rbx+1], 7", "pinsrw xmm3, word ptr [rsp+6], 0",
    "pinsrw xmm4, ecx, 0xfd",  # only imm8[2:0] selects the word
] + [f"pextrw edx, xmm3, {i}" for i in range(8)] + [
    "pextrw r11d, xmm12, 6", "pextrw rax, xmm3, 3", "pextrw ecx, xmm4, 0xfa",
]
MASKS = [
    "pmovmskb eax, xmm1", "pmovmskb rax, xmm1", "pmovmskb r9d, xmm5", "pmovmskb r15, xmm15", "pmovmskb edx, xmm0",
    "movmskps eax, xmm3", "movmskps r10, xmm8", "movmskpd ecx, xmm4", "movmskpd r12, xmm11",
    f"{vector('xmm1', lanes([0x80, 0x7F, 0xFF, 0x00], 8))}\n pmovmskb esi, xmm1",
    f"{vector('xmm1', lanes([0x7F], 8))}\n pmovmskb rsi, xmm1",
    f"{vector('xmm1', lanes([0xFF], 8))}\n pmovmskb rsi, xmm1",
    f"{vector('xmm1', lanes([0x80000000, 0x7FFFFFFF, 0xFFFFFFFF, 0], 32))}\n movmskps esi, xmm1",
    f"{vector('xmm1', lanes([0x8000000000000000, 0x7FFFFFFFFFFFFFFF], 64))}\n movmskpd esi, xmm1",
]
STORES = ["movnti [rbx+8], eax", "movnti [rbx+3], r9", "movnti [rsp-8], rdx", "movntdq [rbx], xmm3",
          "movntdq [rsp+16], xmm12", "movntps [rbx+32], xmm1", "movntpd [rbx+48], xmm7"]

# Code as glibc's sse2 string routines and compilers emit it.
SEQUENCES = [
    # strlen: find the first zero byte of 16.
    "pxor xmm0, xmm0\n movdqu xmm1, [rbx]\n pcmpeqb xmm1, xmm0\n pmovmskb eax, xmm1\n test eax, eax\n"
    " bsf eax, eax",
    # memchr: broadcast a byte, compare, mask.
    "movd xmm1, esi\n punpcklbw xmm1, xmm1\n punpcklwd xmm1, xmm1\n pshufd xmm1, xmm1, 0\n"
    " movdqu xmm0, [rbx+5]\n pcmpeqb xmm0, xmm1\n pmovmskb ecx, xmm0\n or ecx, 0x10000\n bsf ecx, ecx",
    # strcmp: equal bytes and no terminator.
    "movdqu xmm1, [rbx]\n movdqu xmm2, [rbx+3]\n pxor xmm0, xmm0\n pcmpeqb xmm2, xmm1\n pminub xmm2, xmm1\n"
    " pcmpeqb xmm2, xmm0\n pmovmskb edx, xmm2\n sub edx, 0xffff",
    # strchr with a byte range check (psubb/pcmpgtb).
    "movdqu xmm3, [rbx]\n movd xmm4, edi\n punpcklbw xmm4, xmm4\n pshuflw xmm4, xmm4, 0\n punpcklqdq xmm4, xmm4\n"
    " psubb xmm3, xmm4\n pcmpgtb xmm3, xmm0\n pmovmskb r8d, xmm3",
    # A vectorised sum: widen, add, horizontal reduce.
    "pxor xmm7, xmm7\n movdqa xmm5, xmm1\n punpcklbw xmm5, xmm7\n punpckhbw xmm1, xmm7\n paddw xmm1, xmm5\n"
    " pshufd xmm5, xmm1, 0x4e\n paddw xmm1, xmm5\n pshufd xmm5, xmm1, 0xb1\n paddw xmm1, xmm5\n"
    " pshuflw xmm5, xmm1, 0xb1\n paddw xmm1, xmm5\n pextrw eax, xmm1, 0",
    # psadbw reduction and movd out.
    "psadbw xmm2, xmm0\n pshufd xmm3, xmm2, 0xe\n paddq xmm2, xmm3\n movd eax, xmm2",
    # Byte-shift sliding window.
    "movdqa xmm6, xmm1\n psrldq xmm6, 3\n pslldq xmm1, 13\n por xmm1, xmm6",
]


@pytest.fixture(scope="module")
def differ() -> Differ:
    return Differ()


@pytest.mark.parametrize("source", TWO_OPERAND)
def test_two_operand_forms_match_x86(differ: Differ, source: str) -> None:
    differ.check(assemble(source))


@pytest.mark.parametrize("source", EDGE_CASES, ids=[f"{m}-edges-{i}" for i, (m, _, _) in enumerate(SATURATING)])
def test_saturation_and_product_edges_match_x86(differ: Differ, source: str) -> None:
    differ.check(assemble(source))


@pytest.mark.parametrize("source", SHIFT_IMM + BYTE_SHIFTS)
def test_immediate_shifts_match_x86(differ: Differ, source: str) -> None:
    differ.check(assemble(source))


@pytest.mark.parametrize("source", SHIFT_REGISTER + SHIFT_OTHER, ids=lambda s: s.replace("\n", ";"))
def test_shift_counts_from_registers_and_memory_match_x86(differ: Differ, source: str) -> None:
    differ.check(assemble(source))


@pytest.mark.parametrize("source", SHUFFLES + LANE_MOVES + MASKS + STORES, ids=lambda s: s.replace("\n", ";"))
def test_shuffles_lane_moves_masks_and_stores_match_x86(differ: Differ, source: str) -> None:
    differ.check(assemble(source))


@pytest.mark.parametrize("source", SEQUENCES, ids=lambda s: s.split("\n")[0])
def test_string_routine_sequences_match_x86(differ: Differ, source: str) -> None:
    differ.check(assemble(source))


def test_relaxed_memory_operands_match_x86() -> None:
    relaxed = Differ("relaxed")
    for source in ("paddb xmm3, [rbx+16]", "pinsrw xmm2, word ptr [rbx+1], 7", "psrlq xmm6, [rbx]",
                   "movnti [rbx+3], r9", "pshufd xmm10, [rbx+8], 0x1b"):
        relaxed.check(assemble(source))


@pytest.mark.parametrize("source", ["paddb mm0, mm1", "pcmpeqb mm2, [rbx]", "pmovmskb eax, mm3", "psllw mm1, 3",
                                    "pinsrw mm0, eax, 1", "pextrw eax, mm4, 2", "punpcklbw mm0, mm1",
                                    "pmuludq mm0, mm1", "psrlq mm5, mm6"])
def test_mmx_forms_stay_untranslated(source: str) -> None:
    code = assemble(source)
    block = translate_block(GuestCode(0, ((GUEST, code),)), GUEST, len(code), True)
    assert block.code == b"" and block.stop[0] == REASON_VECTOR, block.stop


def test_common_forms_are_short() -> None:
    """The forms string routines run in loops stay one or two AArch64 instructions (a tested cost bound)."""
    def host_instructions(source: str) -> int:
        code = assemble(source)
        block = translate_block(GuestCode(0, ((GUEST, code),)), GUEST, len(code), True)
        assert block.stop is None
        return block.host_instructions - host_instructions_of_exit
    exit_only = assemble("nop")
    host_instructions_of_exit = translate_block(GuestCode(0, ((GUEST, exit_only),)), GUEST, len(exit_only),
                                                True).host_instructions
    for source in ("pcmpeqb xmm1, xmm2", "pminub xmm1, xmm2", "psubb xmm1, xmm2", "punpcklbw xmm1, xmm2",
                   "psrlw xmm1, 3", "pshufd xmm1, xmm2, 0x4e", "pshufd xmm1, xmm1, 0"):
        assert host_instructions(source) == 1, source
    for source in ("pshuflw xmm1, xmm1, 0", "pshufhw xmm1, xmm2, 0xff", "packsswb xmm1, xmm2"):
        assert host_instructions(source) == 2, source
    assert host_instructions("pmovmskb eax, xmm1") == 6
