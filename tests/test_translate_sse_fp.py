"""SSE/SSE2 floating-point instructions, translated and run against unicorn x86-64, bit for bit.

Every case runs from 20 random states (translate_harness.Differ: XMM lanes of
random bits and float/double edges: ±0, ±inf, quiet and signalling NaNs of
both signs, denormals, the largest normals, integer-conversion edges) and
compares all XMM registers, GPRs, the defined flags and memory.  The x86 side
is the host CPU (native_x86.NativeDiffer): unicorn's x86 engine picks the NaN
with the larger significand when both operands are NaNs, which x86 SSE does
not (it returns the first operand's).  The targeted
cases build lanes with ``mov rax, imm; movq xmm, rax`` (or through memory) to
reach what random states rarely do: NaN order between the operands, invalid
operations, conversions just inside and outside the int32/int64 range, and
the rounding modes ldmxcsr selects.
"""

from __future__ import annotations

import shutil

import pytest

import native_x86

pytestmark = [pytest.mark.skipif(shutil.which("as") is None, reason="needs GNU as for x86-64"),
              pytest.mark.skipif(not native_x86.available(), reason="the host CPU is the x86 referee")]

from translate_harness import Differ, assemble  # noqa: E402

# Packed 16-byte memory operands must be aligned on the CPU (x86 raises #GP otherwise).
ALIGN = "and rbx, -16\n "
MOVES = [
    "movss xmm1, xmm2", "movss xmm3, [rbx+4]", "movss [rbx+8], xmm4", "movss xmm5, xmm5",
    "movsd xmm1, xmm2", "movsd xmm9, [rbx+rsi]", "movsd [rsp-8], xmm10",
    "movhps xmm1, [rbx]", "movhps [rbx+3], xmm2", "movhpd xmm3, [rbx+16]", "movhpd [rbx], xmm15",
    "movlps xmm1, [rbx]", "movlps [rbx+8], xmm2", "movlpd xmm3, [rsp]", "movlpd [rbx], xmm4",
    "movhlps xmm1, xmm2", "movhlps xmm3, xmm3", "movlhps xmm1, xmm2", "movlhps xmm4, xmm4",
    "unpcklps xmm1, xmm2", ALIGN + "unpckhps xmm3, [rbx]", "unpcklpd xmm4, xmm4", "unpckhpd xmm5, xmm6",
    ALIGN + "unpckhpd xmm8, [rbx+32]",
    "shufps xmm1, xmm2, 0", "shufps xmm1, xmm2, 0xe4", "shufps xmm3, xmm3, 0x1b", ALIGN + "shufps xmm4, [rbx], 0x4e",
    "shufps xmm5, xmm6, 0x44", "shufps xmm7, xmm7, 0xff",
    "shufpd xmm1, xmm2, 0", "shufpd xmm1, xmm2, 1", "shufpd xmm3, xmm3, 1", "shufpd xmm4, xmm5, 2",
    ALIGN + "shufpd xmm6, [rbx], 3",
]
ARITH = [f"{op}{suffix} {operands}" for op in ("add", "sub", "mul", "div", "min", "max")
         for suffix, operands in (("ss", "xmm1, xmm2"), ("sd", "xmm3, xmm4"), ("ps", "xmm5, xmm6"),
                                  ("pd", "xmm7, xmm8"))]
ARITH += [
    "addss xmm1, [rbx]", "subsd xmm2, [rbx+8]", ALIGN + "mulps xmm3, [rbx+16]", ALIGN + "divpd xmm4, [rbx+48]", "addsd xmm5, xmm5",
    "mulpd xmm6, xmm6", "minss xmm7, [rbx]", "maxsd xmm8, [rbx]", "minps xmm9, xmm9", ALIGN + "maxpd xmm10, [rbx]",
    "sqrtss xmm1, xmm2", "sqrtsd xmm3, xmm4", "sqrtps xmm5, xmm6", "sqrtpd xmm7, xmm8", "sqrtsd xmm9, [rbx]",
    "sqrtps xmm10, xmm10", "sqrtss xmm11, dword ptr [rbx]",
]
COMPARES = [f"cmp{p}{s} xmm{n}, xmm{n + 1}" for n, p in enumerate(
    ("eq", "lt", "le", "unord", "neq", "nlt", "nle", "ord")) for s in ("ps", "pd", "ss", "sd")]
COMPARES += [
    ALIGN + "cmpps xmm1, [rbx], 1", "cmpsd xmm2, [rbx], 5", "cmpltss xmm3, dword ptr [rbx]", ALIGN + "cmpunordpd xmm4, [rbx]",
    "cmpeqps xmm5, xmm5", "cmpps xmm6, xmm7, 0x0f",
]
FLAGS = [f"{op} {operands}\n {reader}" for op in ("comiss", "ucomiss", "comisd", "ucomisd")
         for operands in ("xmm1, xmm2", "xmm3, xmm3") for reader in ("", "setp al", "seta cl\n setb dl\n sete r8b")]
FLAGS += ["comisd xmm1, [rbx]", "ucomiss xmm2, dword ptr [rbx]", "ucomisd xmm0, xmm1\n cmovp rax, rdx\n cmovnp rcx, rdx",
          "ucomisd xmm0, xmm1\n cmova rax, rdx\n cmovbe rcx, rdx\n cmovs r9, rdx\n cmovo r10, rdx"]
CONVERSIONS = [
    "cvtsi2sd xmm1, eax", "cvtsi2sd xmm2, rdx", "cvtsi2ss xmm3, ecx", "cvtsi2ss xmm4, r9",
    "cvtsi2sd xmm5, dword ptr [rbx]", "cvtsi2sd xmm6, qword ptr [rbx]", "cvtsi2ss xmm7, qword ptr [rbx]",
    "cvttsd2si eax, xmm1", "cvttsd2si rax, xmm2", "cvttss2si ecx, xmm3", "cvttss2si r8, xmm4",
    "cvtsd2si edx, xmm5", "cvtsd2si r9, xmm6", "cvtss2si eax, xmm7", "cvtss2si rcx, xmm8",
    "cvttsd2si eax, qword ptr [rbx]", "cvtss2si rdx, dword ptr [rbx]",
    "cvtss2sd xmm1, xmm2", "cvtsd2ss xmm3, xmm4", "cvtss2sd xmm5, [rbx]", "cvtsd2ss xmm6, [rbx]",
    "cvtdq2ps xmm1, xmm2", "cvtps2dq xmm3, xmm4", "cvttps2dq xmm5, xmm6", "cvttps2dq xmm7, xmm7",
    "cvtdq2pd xmm1, xmm2", "cvtdq2pd xmm3, [rbx]", "cvtpd2dq xmm4, xmm5", "cvttpd2dq xmm6, xmm7",
    "cvttpd2dq xmm8, xmm8", "cvtps2pd xmm9, xmm10", "cvtps2pd xmm11, [rbx]", "cvtpd2ps xmm12, xmm13",
    ALIGN + "cvtpd2ps xmm14, [rbx]", ALIGN + "cvtps2dq xmm15, [rbx]",
]
MXCSR = ["stmxcsr [rbx]", "ldmxcsr [rsp]\n stmxcsr [rbx]"]


@pytest.fixture(scope="module")
def differ() -> Differ:
    return native_x86.NativeDiffer()


def test_rip_relative_and_fs_operands_match_unicorn() -> None:
    """Operand forms the native runner cannot place (RIP-relative, FS), on moves where unicorn is exact."""
    unicorn = Differ()
    for source in ("movsd xmm6, qword ptr [rip+0x40]", "movss xmm1, dword ptr fs:[8]", "movhps xmm2, [rip+0x10]"):
        unicorn.check(assemble(source))


@pytest.mark.parametrize("source", MOVES + ARITH + COMPARES + FLAGS + CONVERSIONS)
def test_sse_fp_matches_x86(differ: Differ, source: str) -> None:
    differ.check(assemble(source))


def _lanes(pairs: list[tuple[str, int]]) -> str:
    """Code that sets each (xmm register, 64-bit value) low half through rax; the high half keeps its random bits."""
    lines = []
    for reg, value in pairs:
        lines.append(f"mov rax, {value:#x}\n movq xmm15, rax\n movsd {reg}, xmm15")
    return "\n ".join(lines)


SNAN_D, QNAN_D, NQNAN_D = 0x7FF0000000000001, 0x7FF8000000000123, 0xFFF8000000000456
INF_D, NINF_D, ZERO_D, NZERO_D = 0x7FF0000000000000, 0xFFF0000000000000, 0, 0x8000000000000000
ONE_D, NONE_D, DENORMAL_D = 0x3FF0000000000000, 0xBFF0000000000000, 0x0000000000000001
SNAN_S, QNAN_S, INF_S = 0x7F800001, 0x7FC00123, 0x7F800000

EDGE_PAIRS = [
    (QNAN_D, SNAN_D), (SNAN_D, QNAN_D), (SNAN_D, SNAN_D | 0x8000000000000000), (ONE_D, SNAN_D), (NQNAN_D, ONE_D),
    (INF_D, INF_D), (INF_D, NINF_D), (ZERO_D, INF_D), (ZERO_D, ZERO_D), (NZERO_D, ZERO_D), (ZERO_D, NZERO_D),
    (NONE_D, ZERO_D), (DENORMAL_D, ONE_D), (0x7FF8000000000000, ONE_D), (ONE_D, 0xFFF8000000000000),
]


@pytest.mark.parametrize("a,c", EDGE_PAIRS, ids=[f"{a:#x}-{c:#x}" for a, c in EDGE_PAIRS])
def test_scalar_double_edges(differ: Differ, a: int, c: int) -> None:
    """NaN order, invalid operations (x86's negative default NaN), min/max of zeros and NaNs, comisd unordered."""
    setup = _lanes([("xmm1", a), ("xmm2", c)])
    body = []
    for n, op in enumerate(("addsd", "subsd", "mulsd", "divsd", "minsd", "maxsd", "cmpltsd", "cmpunordsd",
                            "cmpnlesd", "sqrtsd")):
        body.append(f"movapd xmm{n + 3}, xmm1\n {op} xmm{n + 3}, xmm2")
    body.append("ucomisd xmm1, xmm2\n setp al\n setz cl\n setb dl\n seta r8b")
    differ.check(assemble(setup + "\n " + "\n ".join(body)), states=3)


def test_packed_single_edges(differ: Differ) -> None:
    """Four single lanes at once: NaN pairs in both orders, inf - inf, 0 * inf, sqrt(-1), signed zeros."""
    a = [QNAN_S, SNAN_S, INF_S, 0x80000000]
    c = [SNAN_S, QNAN_S, INF_S, 0x00000000]
    d = [0xBF800000, 0x00000000, 0x7F800000, 0xFFC00001]
    source = (f"mov dword ptr [rbx], {a[0]:#x}\n mov dword ptr [rbx+4], {a[1]:#x}\n"
              f" mov dword ptr [rbx+8], {a[2]:#x}\n mov dword ptr [rbx+12], {a[3]:#x}\n"
              f" mov dword ptr [rbx+16], {c[0]:#x}\n mov dword ptr [rbx+20], {c[1]:#x}\n"
              f" mov dword ptr [rbx+24], {c[2]:#x}\n mov dword ptr [rbx+28], {c[3]:#x}\n"
              f" mov dword ptr [rbx+32], {d[0]:#x}\n mov dword ptr [rbx+36], {d[1]:#x}\n"
              f" mov dword ptr [rbx+40], {d[2]:#x}\n mov dword ptr [rbx+44], {d[3]:#x}\n"
              " movups xmm1, [rbx]\n movups xmm2, [rbx+16]\n movups xmm9, [rbx+32]\n")
    for n, op in enumerate(("addps", "subps", "mulps", "divps", "minps", "maxps", "cmpleps", "cmpordps")):
        source += f" movaps xmm{n + 3}, xmm1\n {op} xmm{n + 3}, xmm2\n"
    source += " sqrtps xmm11, xmm9\n mulps xmm9, xmm2\n"
    differ.check(assemble(source), states=2)


# Conversions at the int32/int64 edges, as doubles: inside, just outside, NaN, infinities.
CONVERT_DOUBLES = [
    0x41DFFFFFFFC00000,  # 2^31 - 1
    0x41DFFFFFFFE00000,  # 2^31 - 0.5: nearest-even rounds up (overflow), truncation does not
    0x41E0000000000000,  # 2^31
    0xC1E0000000000000,  # -2^31
    0xC1E0000000100000,  # -2^31 - 0.5
    0xC1E0000000200000,  # -2^31 - 1
    0x43E0000000000000,  # 2^63
    0xC3E0000000000000,  # -2^63
    0x43DFFFFFFFFFFFFF,  # just below 2^63
    0x3FE0000000000000,  # 0.5 (ties to even: 0)
    0x3FF8000000000000,  # 1.5
    0xC004000000000000,  # -2.5
    SNAN_D, NQNAN_D, INF_D, NINF_D, NZERO_D, DENORMAL_D,
]


@pytest.mark.parametrize("value", CONVERT_DOUBLES, ids=[f"{v:#x}" for v in CONVERT_DOUBLES])
def test_conversions_at_integer_edges(differ: Differ, value: int) -> None:
    source = (_lanes([("xmm1", value), ("xmm2", value)]) + "\n unpcklpd xmm2, xmm1\n"
              " cvttsd2si eax, xmm1\n cvtsd2si ecx, xmm1\n cvttsd2si rdx, xmm1\n cvtsd2si r8, xmm1\n"
              " cvtsd2ss xmm3, xmm1\n cvttpd2dq xmm4, xmm2\n cvtpd2dq xmm5, xmm2\n cvtpd2ps xmm6, xmm2\n"
              " cvtsd2ss xmm7, xmm1\n cvttss2si r9d, xmm7\n cvtss2si r10, xmm7\n cvtss2sd xmm8, xmm7\n"
              " shufps xmm7, xmm7, 0\n cvttps2dq xmm9, xmm7\n cvtps2dq xmm10, xmm7\n cvtps2pd xmm11, xmm7")
    differ.check(assemble(source), states=2)


@pytest.mark.parametrize("mode", [0, 1, 2, 3])
def test_rounding_modes_from_ldmxcsr(differ: Differ, mode: int) -> None:
    """MXCSR.RC from memory: conversions, arithmetic and narrowing round the same way."""
    mxcsr = 0x1F80 | mode << 13
    source = (f"mov dword ptr [rbx], {mxcsr:#x}\n ldmxcsr [rbx]\n"
              " cvtsd2si eax, xmm1\n cvtsd2si rcx, xmm2\n cvtss2si edx, xmm3\n cvtps2dq xmm4, xmm5\n"
              " cvtpd2dq xmm6, xmm7\n addsd xmm8, xmm9\n divps xmm10, xmm11\n cvtsd2ss xmm12, xmm13\n"
              " cvtsi2ss xmm14, rdx\n cvtsi2sd xmm15, r9\n sqrtpd xmm0, xmm1\n cvttsd2si r8, xmm1")
    differ.check(assemble(source))


def test_rounding_of_exact_halves(differ: Differ) -> None:
    """-2.5, -1.5, 0.5, 1.5, 2.5 under each rounding mode (the cases where the modes disagree)."""
    for mode in range(4):
        mxcsr = 0x1F80 | mode << 13
        lines = [f"mov dword ptr [rbx], {mxcsr:#x}\n ldmxcsr [rbx]"]
        for n, value in enumerate((0xC004000000000000, 0xBFF8000000000000, 0x3FE0000000000000,
                                   0x3FF8000000000000, 0x4004000000000000)):
            lines.append(f"mov rax, {value:#x}\n movq xmm{n}, rax\n cvtsd2si {('rcx', 'rdx', 'r8', 'r9', 'r10')[n]}, xmm{n}")
        differ.check(assemble("\n ".join(lines)), states=1)


def test_flush_to_zero_with_daz_and_ftz(differ: Differ) -> None:
    """MXCSR with DAZ and FTZ (fast-math start-up code) maps onto FPCR.FZ."""
    source = ("mov dword ptr [rbx], 0x9fc0\n ldmxcsr [rbx]\n"
              "mov rax, 1\n movq xmm1, rax\n addsd xmm1, xmm1\n mulpd xmm2, xmm3\n addps xmm4, xmm5\n"
              " mov rax, 0x0010000000000000\n movq xmm6, rax\n mulsd xmm6, xmm6\n divps xmm7, xmm8\n"
              " cmpeqps xmm9, xmm10\n cmpltpd xmm11, xmm12\n ucomiss xmm13, xmm14\n setb al\n sete cl\n"
              " cvtss2sd xmm15, xmm0\n sqrtps xmm0, xmm3\n cvttsd2si edx, xmm4\n cvtpd2ps xmm5, xmm2")
    differ.check(assemble(source))


def test_stmxcsr_after_ldmxcsr(differ: Differ) -> None:
    for source in MXCSR:
        differ.check(assemble("mov dword ptr [rsp], 0x7f80\n " + source))
