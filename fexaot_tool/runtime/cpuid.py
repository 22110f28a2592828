"""The CPU the guest is told it runs on: an x86-64 baseline (x86-64-v1: SSE2, no SSE3).

What ``cpuid`` answers decides which code glibc's IFUNC resolvers (memcpy,
strlen, ...) and libraries such as OpenSSL pick.  The runtime answers from this
table, never from the host or the engine's CPU model, so a guest takes the same
paths whichever engine runs it, and only the instructions the translator
implements (``translate/features.py`` names the same set; a test checks they agree).

The model is an AMD family 0Fh (K8) processor, the first x86-64 CPU, whose
feature set *is* the x86-64 baseline.  An AMD vendor string matters: glibc
reads cache sizes (which size its memcpy thresholds) from the AMD leaves
8000_0005h/8000_0006h, and for an unknown vendor it would take them as -1.

Leaves and bits follow the AMD64 Architecture Programmer's Manual, Vol. 3,
Appendix E ("Obtaining Processor Information Via the CPUID Instruction").
A leaf or sub-leaf not in the table reads as zeros, as on AMD hardware.
"""

from __future__ import annotations

from dataclasses import dataclass

# CPUID Fn0000_0001_EDX: the baseline's user-visible features.
EDX1_FPU = 1 << 0
EDX1_TSC = 1 << 4
EDX1_CX8 = 1 << 8
EDX1_CMOV = 1 << 15
EDX1_CLFSH = 1 << 19
EDX1_MMX = 1 << 23
EDX1_FXSR = 1 << 24
EDX1_SSE = 1 << 25
EDX1_SSE2 = 1 << 26
BASELINE_EDX1 = (EDX1_FPU | EDX1_TSC | EDX1_CX8 | EDX1_CMOV | EDX1_CLFSH | EDX1_MMX | EDX1_FXSR
                 | EDX1_SSE | EDX1_SSE2)
# CPUID Fn0000_0001_ECX: SSE3, SSSE3, CX16, SSE4, POPCNT, XSAVE, AVX... are all
# beyond the baseline (x86-64-v2 and later), so none is set.
BASELINE_ECX1 = 0

# CPUID Fn8000_0001_EDX: SYSCALL, NX, long mode, and the Fn0000_0001 bits AMD repeats.
EDX81_SYSCALL = 1 << 11
EDX81_NX = 1 << 20
EDX81_LM = 1 << 29
BASELINE_EDX81 = (EDX1_FPU | EDX1_TSC | EDX1_CX8 | EDX1_CMOV | EDX1_MMX | EDX1_FXSR
                  | EDX81_SYSCALL | EDX81_NX | EDX81_LM)

VENDOR = "AuthenticAMD"
BRAND = "fexaot x86-64 baseline CPU (K8 class)"
FAMILY, MODEL, STEPPING = 0x0F, 0x05, 0x1  # Fn0000_0001_EAX: family 0Fh model 05h (Opteron)
CACHE_LINE = 64


def _vendor_registers(vendor: str) -> tuple[int, int, int]:
    """EBX, EDX, ECX of leaf 0 spell the vendor string in that order."""
    raw = vendor.encode("ascii")
    return (int.from_bytes(raw[0:4], "little"), int.from_bytes(raw[4:8], "little"),
            int.from_bytes(raw[8:12], "little"))


def _brand_leaves(brand: str) -> dict[int, tuple[int, int, int, int]]:
    raw = brand.encode("ascii").ljust(48, b"\0")
    words = [int.from_bytes(raw[i:i + 4], "little") for i in range(0, 48, 4)]
    return {0x80000002 + n: tuple(words[4 * n:4 * n + 4]) for n in range(3)}  # type: ignore[misc]


@dataclass(frozen=True)
class CpuidResult:
    eax: int
    ebx: int
    ecx: int
    edx: int


class CpuidModel:
    """``cpuid`` answers as a table: (EAX leaf) -> (EAX, EBX, ECX, EDX)."""

    def __init__(self, leaves: dict[int, tuple[int, int, int, int]]):
        self.leaves = dict(leaves)

    def query(self, leaf: int, subleaf: int = 0) -> CpuidResult:
        # No leaf in this model has sub-leaves, so ECX on input is ignored.
        return CpuidResult(*self.leaves.get(leaf & 0xFFFFFFFF, (0, 0, 0, 0)))

    @property
    def hwcap(self) -> int:
        """AT_HWCAP for x86-64: the kernel passes CPUID Fn0000_0001_EDX."""
        return self.query(1).edx


def baseline_model() -> CpuidModel:
    vendor_ebx, vendor_edx, vendor_ecx = _vendor_registers(VENDOR)
    signature = (STEPPING | MODEL << 4 | FAMILY << 8)
    # EBX: CLFLUSH line size in 8-byte units (bits 15:8), one logical processor (23:16), APIC ID 0.
    ebx1 = (CACHE_LINE // 8) << 8 | 1 << 16
    # L1: 64 KiB, 2-way, 1 line per tag, 64-byte lines (data in ECX, instruction in EDX).
    l1 = 64 << 24 | 2 << 16 | 1 << 8 | CACHE_LINE
    # L2: 1 MiB, 16-way (associativity code 8h), 1 line per tag, 64-byte lines; no L3 (EDX = 0).
    l2 = 1024 << 16 | 0x8 << 12 | 1 << 8 | CACHE_LINE
    leaves = {
        0x00000000: (0x00000001, vendor_ebx, vendor_ecx, vendor_edx),
        0x00000001: (signature, ebx1, BASELINE_ECX1, BASELINE_EDX1),
        0x80000000: (0x80000008, vendor_ebx, vendor_ecx, vendor_edx),
        0x80000001: (signature, 0, 0, BASELINE_EDX81),
        0x80000005: (0, 0, l1, l1),
        0x80000006: (0, 0, l2, 0),
        # 48-bit virtual, 40-bit physical addresses; one core (NC = 0).
        0x80000008: (48 << 8 | 40, 0, 0, 0),
    }
    leaves.update(_brand_leaves(BRAND))
    return CpuidModel(leaves)
