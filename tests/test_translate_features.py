"""The extensions the translator treats as advertised are the ones the runtime's CPUID model advertises."""

from __future__ import annotations

import iced_x86
import pytest

from fexaot_tool.runtime import cpuid
from fexaot_tool.translate import GuestCode, translate_block
from fexaot_tool.translate.builder import REASON_EXTENSION, REASON_NAMES
from fexaot_tool.translate.features import ADVERTISED

F = iced_x86.CpuidFeature

# CPUID bit (leaf, register, bit) -> the iced-x86 feature it stands for.
BITS = {
    (1, "edx", 0): F.FPU, (1, "edx", 4): F.TSC, (1, "edx", 8): F.CX8, (1, "edx", 15): F.CMOV,
    (1, "edx", 19): F.CLFSH, (1, "edx", 23): F.MMX, (1, "edx", 24): F.FXSR, (1, "edx", 25): F.SSE,
    (1, "edx", 26): F.SSE2,
    (1, "ecx", 0): F.SSE3, (1, "ecx", 9): F.SSSE3, (1, "ecx", 12): F.FMA, (1, "ecx", 13): F.CMPXCHG16B,
    (1, "ecx", 19): F.SSE4_1, (1, "ecx", 20): F.SSE4_2, (1, "ecx", 22): F.MOVBE, (1, "ecx", 23): F.POPCNT,
    (1, "ecx", 25): F.AES, (1, "ecx", 26): F.XSAVE, (1, "ecx", 28): F.AVX, (1, "ecx", 29): F.F16C,
    (7, "ebx", 3): F.BMI1, (7, "ebx", 5): F.AVX2, (7, "ebx", 8): F.BMI2, (7, "ebx", 16): F.AVX512F,
    (0x80000001, "ecx", 5): F.LZCNT, (0x80000001, "ecx", 6): F.SSE4A, (0x80000001, "edx", 11): F.SYSCALL,
}


@pytest.mark.parametrize("where,feature", BITS.items(), ids=[f"{k[0]:#x}.{k[1]}.{k[2]}" for k in BITS])
def test_cpuid_model_and_translator_agree(where, feature) -> None:
    leaf, register, bit = where
    model = cpuid.baseline_model()
    advertised_by_model = bool(getattr(model.query(leaf), register) >> bit & 1)
    assert advertised_by_model == (feature in ADVERTISED)


@pytest.mark.parametrize("code,feature", [
    ("c5fe6f00", "AVX"),  # vmovdqu ymm0, [rax]
    ("660f3800c1", "SSSE3"),  # pshufb xmm0, xmm1
    ("0f38f003", "MOVBE"),  # movbe eax, [rbx]
    ("f20f38f1c1", "SSE4_2"),  # crc32 eax, ecx
    ("f20f7cc1", "SSE3"),  # haddps xmm0, xmm1
])
def test_unadvertised_instructions_get_their_own_reason(code, feature) -> None:
    data = bytes.fromhex(code) + b"\xc3"
    block = translate_block(GuestCode(0, ((0x1000, data),)), 0x1000, len(data))
    reason, detail, at = block.stop
    assert (reason, at) == (REASON_EXTENSION, 0x1000), (REASON_NAMES.get(reason), detail)
    assert REASON_NAMES[REASON_EXTENSION] == "extension-not-advertised"
    assert feature in {n for n, v in vars(F).items() if v in iced_x86.Decoder(64, data).decode().cpuid_features()}
