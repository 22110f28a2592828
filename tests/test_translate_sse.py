"""SSE/SSE2 instructions, translated and run against unicorn x86-64 from random and edge-value XMM states.

The harness (translate_harness.Differ) gives every case 16 random XMM values
(random bits, float/double edge lanes such as ±0, ±inf, NaNs and denormals, and
byte patterns) and compares all XMM registers, GPRs, defined flags and memory.
"""

from __future__ import annotations

import shutil

import pytest

pytestmark = pytest.mark.skipif(shutil.which("as") is None, reason="needs GNU as for x86-64")

from translate_harness import Differ, assemble  # noqa: E402

MOVES = [
    "movdqa xmm1, xmm2", "movdqu xmm3, [rbx+16]", "movdqu [rbx+8], xmm4", "movdqa xmm15, [rsp+32]",
    "movaps xmm0, xmm8", "movups xmm9, [rbx+rsi]", "movups [rbx+0x1000], xmm2", "movapd xmm3, xmm3",
    "movupd [rsp-16], xmm5", "movdqu xmm6, [rip+0x40]",
    "movd xmm1, eax", "movq xmm2, rdx", "movd ecx, xmm3", "movq r8, xmm4", "movq xmm5, xmm6", "movq xmm5, [rbx]",
    "movq [rbx+3], xmm7", "movd [rbx], xmm1", "movd xmm9, dword ptr [rbx+4]", "movq xmm10, qword ptr fs:[8]",
]
LOGIC = [
    "pxor xmm1, xmm1", "pxor xmm1, xmm2", "por xmm3, [rbx]", "pand xmm4, xmm5", "pandn xmm6, xmm7", "pandn xmm6, xmm6",
    "xorps xmm0, xmm0", "xorps xmm0, xmm1", "orps xmm2, xmm3", "andps xmm4, [rbx+16]", "andnps xmm8, [rbx+32]",
    "xorpd xmm11, xmm12", "orpd xmm9, xmm10", "andpd xmm13, xmm14", "andnpd xmm15, xmm0",
    "mov rax, [rbx]\n movq xmm0, rax\n pxor xmm0, xmm1\n movq rdx, xmm0",
]


@pytest.fixture(scope="module")
def differ() -> Differ:
    return Differ()


@pytest.mark.parametrize("source", MOVES + LOGIC)
def test_sse_matches_x86(differ: Differ, source: str) -> None:
    differ.check(assemble(source))


def test_relaxed_vector_accesses_match_x86() -> None:
    relaxed = Differ("relaxed")
    for source in ("movdqu xmm3, [rbx+16]", "movups [rbx+8], xmm4", "movq [rbx+3], xmm7"):
        relaxed.check(assemble(source))
