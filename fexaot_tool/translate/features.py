"""Which x86 instruction-set extensions the guest is told about, in iced-x86's terms.

The runtime's CPUID model (``fexaot_tool/runtime/cpuid.py``: the x86-64
baseline, an AMD K8) advertises exactly these; glibc's IFUNC resolvers and
other CPU dispatchers then pick code that needs nothing else.  An instruction
that needs a feature outside this set (AVX, SSE3, SSSE3, SSE4, BMI, CX16,
...) is on a path the guest does not take on this CPU: the translator records
it with its own reason, ``extension-not-advertised``, so coverage can be
counted over the code the guest can actually reach (docs/translator.md).
``tests/test_runtime_parts.py`` checks that the CPUID model's bits agree.
"""

from __future__ import annotations

import iced_x86

_F = iced_x86.CpuidFeature

ADVERTISED: frozenset[int] = frozenset({
    _F.INTEL8086, _F.INTEL186, _F.INTEL286, _F.INTEL386, _F.INTEL486, _F.X64, _F.CPUID, _F.MULTIBYTENOP,
    _F.FPU, _F.FPU287, _F.FPU387, _F.CMOV, _F.CX8, _F.TSC, _F.CLFSH, _F.MMX, _F.FXSR, _F.SSE, _F.SSE2, _F.PAUSE,
    _F.SYSCALL,
    _F.PREFETCHW,  # the AMD K8's 3DNow! prefetches (prefetch/prefetchw): hints the translator drops
})

_NAMES = {v: k for k, v in vars(_F).items() if k.isupper() and isinstance(v, int)}


def unadvertised(ins: iced_x86.Instruction) -> str | None:
    """The first CPUID feature ``ins`` needs that the model does not advertise (its iced-x86 name), or None."""
    for feature in ins.cpuid_features():
        if feature not in ADVERTISED:
            return _NAMES.get(feature, str(feature))
    return None


__all__ = ["ADVERTISED", "unadvertised"]
