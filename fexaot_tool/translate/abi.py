"""The guest-state ABI of translated code: docs/abi.md as constants.

Offsets, host register numbers, exit reasons and relocation kinds.  The
translator, the validator and the runtime's AArch64 engine read them from here;
nothing else hard-codes them.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

# Guest register n (x86 numbering RAX=0, RCX=1, ... R15=15) lives in GPR_HOST[n].
GPR_HOST: tuple[int, ...] = (4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 19, 20)
RSP = 4  # x86 register number of RSP
PF_SRC = 21  # low byte of the last PF-defining result
AF_SRC = 22  # src1 ^ src2 ^ result of the last AF-defining op (AF = bit 4)
STATE = 28  # pointer to the state block; never changes inside translated code
NEXT_RIP = 0  # x0 carries the next guest RIP at an exit
# Registers a block may clobber (x0 and x1 are also used by the exit sequence).
SCRATCH: tuple[int, ...] = (0, 1, 2, 3, 23, 24, 25, 26, 27, 29, 30)
# Guest XMMn lives in the SIMD&FP register v(XMM_HOST[n]); v16-v31 are scratch.
XMM_HOST: tuple[int, ...] = tuple(range(16))
VECTOR_SCRATCH: tuple[int, ...] = tuple(range(16, 32))

# State block layout (docs/abi.md "State block").
GPR_OFFSET = 0x000
RIP_OFFSET = 0x080
RFLAGS_OFFSET = 0x088
FS_BASE_OFFSET = 0x090
GS_BASE_OFFSET = 0x098
DF_OFFSET = 0x0A0
PF_SRC_OFFSET = 0x0A8
AF_SRC_OFFSET = 0x0B0
NZCV_OFFSET = 0x0B8
EXIT_REASON_OFFSET = 0x0C0
MXCSR_OFFSET = 0x0C4
EXIT_INFO_OFFSET = 0x0C8
DISPATCH_OFFSET = 0x0D0
EXIT_TO_RUNTIME_OFFSET = 0x0D8
XMM_OFFSET = 0x100
RUNTIME_PRIVATE_OFFSET = 0x200
# x87 (docs/abi.md "x87 state"): physical registers R0-R7, 16 bytes each (significand, then sign and
# exponent), the control word, the status word without TOP, TOP, and a mask of empty registers.
X87_REGS_OFFSET = 0x400
X87_CW_OFFSET = 0x480
X87_SW_OFFSET = 0x484
X87_TOP_OFFSET = 0x488
X87_EMPTY_OFFSET = 0x48C
X87_SIZE = 0x90
# Scratch space of the x87 arithmetic routines (operands, intermediate values): no guest state.
X87_SCRATCH_OFFSET = 0x490
X87_SCRATCH_SIZE = 0x48
X87_CW_DEFAULT = 0x37F  # a Linux process's control word: all exceptions masked, 64-bit precision, nearest
STATE_SIZE = 0x500

_X87_REGISTER = struct.Struct("<QH6x")  # significand, sign and exponent, padding to 16 bytes
_X87_WORDS = struct.Struct("<IIII")  # control word, status word without TOP, TOP, empty mask
_X87_WORDS_AT = X87_CW_OFFSET - X87_REGS_OFFSET


@dataclass(frozen=True)
class X87Image:
    """The x87 part of the state block (X87_SIZE bytes from X87_REGS_OFFSET) as values.

    ``regs`` are the physical registers R0-R7 as (significand, sign_exponent), so ST(i) is
    ``regs[(top + i) & 7]``; ``sw`` is the status word without TOP; bit i of ``empty`` marks R_i empty.
    """

    regs: tuple[tuple[int, int], ...] = ((0, 0),) * 8
    top: int = 0
    cw: int = X87_CW_DEFAULT
    sw: int = 0
    empty: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "regs", tuple((int(m), int(se)) for m, se in self.regs))

    @classmethod
    def stack(cls, *values: tuple[int, int], top: int = 0, cw: int = X87_CW_DEFAULT, sw: int = 0) -> X87Image:
        """ST(0), ST(1), ... = ``values`` with TOP = ``top``; the other registers empty (and zero)."""
        regs, empty = [(0, 0)] * 8, 0xFF
        for i, value in enumerate(values):
            regs[(top + i) & 7] = value
            empty &= ~(1 << ((top + i) & 7))
        return cls(tuple(regs), top, cw, sw, empty)

    def st(self, i: int) -> tuple[int, int]:
        return self.regs[(self.top + i) & 7]

    def pack(self) -> bytes:
        return (b"".join(_X87_REGISTER.pack(m, se) for m, se in self.regs)
                + _X87_WORDS.pack(self.cw & 0xFFFF, self.sw & 0xC7FF, self.top & 7, self.empty & 0xFF))

    @classmethod
    def unpack(cls, image: bytes) -> X87Image:
        regs = tuple(_X87_REGISTER.unpack_from(image, 16 * i) for i in range(8))
        cw, sw, top, empty = _X87_WORDS.unpack_from(image, _X87_WORDS_AT)
        return cls(regs, top, cw, sw, empty)


class ExitReason(enum.IntEnum):
    """``exit_reason`` values of an exit to the runtime (docs/abi.md)."""

    SYSCALL = 1  # x0: after the syscall
    CPUID = 2  # x0: after
    RDTSC = 3  # x0: after
    INT3 = 4  # x0: after (as the kernel reports SIGTRAP)
    HLT = 5  # x0: of the instruction
    UD2 = 6  # x0: of the instruction
    DIVIDE_ERROR = 7  # x0: of the div/idiv
    UNTRANSLATABLE = 8  # x0: of the instruction; exit_info: its length


# Reasons whose x0 is the RIP after the instruction; the others report the instruction itself.
EXIT_AFTER: frozenset[ExitReason] = frozenset({ExitReason.SYSCALL, ExitReason.CPUID, ExitReason.RDTSC,
                                                ExitReason.INT3})


class RelocationKind(enum.IntEnum):
    """RELOCATIONS ``kind`` values (docs/abi.md "Relocations")."""

    GUEST_ABS64 = 1  # 8 bytes := load_base + image_base + addend
