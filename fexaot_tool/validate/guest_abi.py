"""What the validator reads of the guest-state ABI (docs/abi.md).

Every offset, register number, exit reason and relocation kind comes from
``fexaot_tool.translate.abi``, the page's executable form, under the names the
validator uses; this module adds only what the ABI leaves to the reader: the
x86 RFLAGS and AArch64 NZCV bit positions the comparison needs.
"""

from __future__ import annotations

from fexaot_tool.translate import abi
from fexaot_tool.translate.abi import EXIT_AFTER, ExitReason, RelocationKind

GPR_HOST: tuple[int, ...] = abi.GPR_HOST
XMM_HOST: tuple[int, ...] = abi.XMM_HOST  # XMMn in v(XMM_HOST[n])
PF_SRC_REG = abi.PF_SRC
AF_SRC_REG = abi.AF_SRC
STATE_REG = abi.STATE
RIP_REG = abi.NEXT_RIP

GPR_NAMES = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
             "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")

OFF_GPR = abi.GPR_OFFSET
OFF_RIP = abi.RIP_OFFSET
OFF_RFLAGS = abi.RFLAGS_OFFSET
OFF_FS_BASE = abi.FS_BASE_OFFSET
OFF_GS_BASE = abi.GS_BASE_OFFSET
OFF_DF = abi.DF_OFFSET
OFF_PF_SRC = abi.PF_SRC_OFFSET
OFF_AF_SRC = abi.AF_SRC_OFFSET
OFF_NZCV = abi.NZCV_OFFSET
OFF_EXIT_REASON = abi.EXIT_REASON_OFFSET
OFF_MXCSR = abi.MXCSR_OFFSET
OFF_EXIT_INFO = abi.EXIT_INFO_OFFSET
OFF_DISPATCH = abi.DISPATCH_OFFSET
OFF_EXIT_TO_RUNTIME = abi.EXIT_TO_RUNTIME_OFFSET
OFF_XMM = abi.XMM_OFFSET
OFF_PRIVATE = abi.RUNTIME_PRIVATE_OFFSET
STATE_SIZE = abi.STATE_SIZE


def rip_after(reason: ExitReason) -> bool:
    """True when x0 is the RIP after the instruction, False when it is the instruction's own."""
    return reason in EXIT_AFTER


# NZCV bits as `mrs x, nzcv` gives them.
NZCV_N = 1 << 31
NZCV_Z = 1 << 30
NZCV_C = 1 << 29
NZCV_V = 1 << 28

# x86 RFLAGS bits.
CF, PF, AF, ZF, SF, DF, OF = 1 << 0, 1 << 2, 1 << 4, 1 << 6, 1 << 7, 1 << 10, 1 << 11
STATUS_FLAGS = CF | PF | AF | ZF | SF | OF
FLAG_NAMES = {CF: "CF", PF: "PF", AF: "AF", ZF: "ZF", SF: "SF", DF: "DF", OF: "OF"}

__all__ = [name for name in dir() if name.isupper() or name in ("ExitReason", "RelocationKind", "rip_after")]
