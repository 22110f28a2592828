"""How each x86-64 instruction transfers control, as one table over iced-x86's facts.

iced-x86 classifies every instruction by ``FlowControl``; discovery needs three
facts per class (does it end a block, can it fall through, does it name a target)
and overrides a few instructions whose class does not say what a runtime sees:
``syscall`` is a CALL to iced but returns to the next instruction through the
runtime, ``hlt`` is NEXT to iced but faults in user mode, and translated
``cpuid``/``rdtsc`` exit to the runtime (docs/abi.md), which resumes after them.
"""

from __future__ import annotations

from enum import IntEnum
from typing import NamedTuple

from iced_x86 import Code, FlowControl, Instruction


class Transfer(IntEnum):
    """Control-flow class of one instruction (stored per instruction, so it fits a byte)."""

    NEXT = 0  # no control flow: the block continues
    JUMP = 1  # jmp rel: one target, no fall-through
    BRANCH = 2  # jcc, loop, jrcxz: a target and the fall-through
    INDIRECT_JUMP = 3  # jmp r/m: jump table, GOT slot or unknown
    RETURN = 4  # ret, iret
    CALL = 5  # call rel: a target and the return address
    INDIRECT_CALL = 6  # call r/m: the return address
    SYSTEM = 7  # syscall, int n, int3, cpuid, rdtsc: leaves to the runtime/kernel, resumes after
    XBEGIN = 8  # xbegin: the abort handler and the fall-through
    STOP = 9  # ud2, hlt: never falls through
    INVALID = 10  # bytes that do not decode
    REPEAT = 11  # rep/repe/repne string instruction: engines loop on it as a block of its own


class TransferFacts(NamedTuple):
    ends_block: bool
    falls_through: bool
    has_target: bool  # a direct target in ``near_branch_target``


TRANSFER_FACTS: dict[Transfer, TransferFacts] = {
    Transfer.NEXT: TransferFacts(False, True, False),
    Transfer.JUMP: TransferFacts(True, False, True),
    Transfer.BRANCH: TransferFacts(True, True, True),
    Transfer.INDIRECT_JUMP: TransferFacts(True, False, False),
    Transfer.RETURN: TransferFacts(True, False, False),
    Transfer.CALL: TransferFacts(True, True, True),
    Transfer.INDIRECT_CALL: TransferFacts(True, True, False),
    Transfer.SYSTEM: TransferFacts(True, True, False),
    Transfer.XBEGIN: TransferFacts(True, True, True),
    Transfer.STOP: TransferFacts(True, False, False),
    Transfer.INVALID: TransferFacts(True, False, False),
    Transfer.REPEAT: TransferFacts(True, True, False),
}

_TRANSFER_OF_FLOW: dict[int, Transfer] = {
    FlowControl.NEXT: Transfer.NEXT,
    FlowControl.UNCONDITIONAL_BRANCH: Transfer.JUMP,
    FlowControl.INDIRECT_BRANCH: Transfer.INDIRECT_JUMP,
    FlowControl.CONDITIONAL_BRANCH: Transfer.BRANCH,
    FlowControl.RETURN: Transfer.RETURN,
    FlowControl.CALL: Transfer.CALL,
    FlowControl.INDIRECT_CALL: Transfer.INDIRECT_CALL,
    FlowControl.INTERRUPT: Transfer.SYSTEM,
    FlowControl.XBEGIN_XABORT_XEND: Transfer.NEXT,  # xabort/xend continue; xbegin is overridden
    FlowControl.EXCEPTION: Transfer.STOP,
}

# Instructions whose iced class is not what the runtime sees.
_TRANSFER_OF_CODE: dict[int, Transfer] = {
    Code.INVALID: Transfer.INVALID,
    Code.SYSCALL: Transfer.SYSTEM,  # iced: CALL with no target
    Code.SYSENTER: Transfer.SYSTEM,
    # Translated code exits to the runtime at these (docs/abi.md) and resumes at
    # the next instruction: that must be a block start, or the runtime misses.
    Code.CPUID: Transfer.SYSTEM,
    Code.RDTSC: Transfer.SYSTEM,
    Code.HLT: Transfer.STOP,  # iced: NEXT; privileged, so it faults in user mode
    Code.XBEGIN_REL16: Transfer.XBEGIN,
    Code.XBEGIN_REL32: Transfer.XBEGIN,
    Code.JMPE_RM16: Transfer.STOP,  # IA-64 mode switch: #UD on x86-64
    Code.JMPE_RM32: Transfer.STOP,
    Code.JMPE_DISP16: Transfer.STOP,
    Code.JMPE_DISP32: Transfer.STOP,
}


def transfer_of(instr: Instruction) -> Transfer:
    """The Transfer of a decoded instruction.

    The hot loops call this only for instructions that have a flow-control class
    or are at most four bytes long: ``hlt`` (one byte), ``cpuid``/``rdtsc`` (two)
    and rep-prefixed string instructions (two to four).
    """
    override = _TRANSFER_OF_CODE.get(instr.code)
    if override is not None:
        return override
    if instr.is_string_instruction and (instr.has_rep_prefix or instr.has_repne_prefix):
        # Each iteration re-enters the instruction (an interrupt may stop it part
        # way, and emulators end a block there): it starts and ends a block.
        return Transfer.REPEAT
    return _TRANSFER_OF_FLOW[instr.flow_control]
