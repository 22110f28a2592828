"""The harness's own machine code: how state gets into and out of the two engines.

Registers cross into unicorn through memory, not one ``reg_write`` per register
(docs/validation.md has the measurements): a loader stub reads a register image
from memory and jumps to the block, and a spill stub writes the registers back.

x86-64 side (image layout: 16 GPRs in x86 order, then RFLAGS; XMM registers in a
separate 256-byte image, MXCSR in a 4-byte slot):
  loader: ``movdqu xmmN, [rip+XMM+16n]...; ldmxcsr [rip+MXCSR]; mov rsp, IMG+0x80; popfq;
  mov REG, [rsp-0x88+8n]...; mov rsp, [..]; jmp [target]``
  spill:  ``movdqu [rip+XMM+16n], xmmN...; mov [rip+IMG+8n], REG...; lea rsp, [rip+IMG+0x88]; pushfq``

AArch64 side: the state block of docs/abi.md.
  loader: ``ldr x28, =state; ldr xN, [x28, #gpr]...; ldr qN, [x28, #xmm]...; msr fpcr, xzr;
  msr nzcv; ldr x1, [x28, #entry]; br x1``
  dispatch / exit_to_runtime: note which entry was taken, spill x0, GPRs, XMM registers, x21,
  x22, NZCV, then branch to the halt address the harness passes as emu_start's ``until``.
"""

from __future__ import annotations

import struct

from fexaot_tool.translate import a64
from fexaot_tool.validate.guest_abi import (
    AF_SRC_REG, GPR_HOST, OFF_AF_SRC, OFF_GPR, OFF_NZCV, OFF_PF_SRC, OFF_PRIVATE, OFF_RIP, OFF_XMM, PF_SRC_REG,
    STATE_REG, XMM_HOST,
)

# Runtime-private slots of the state block that the harness's stubs use.
OFF_EXIT_PATH = OFF_PRIVATE  # 1: the block left through dispatch, 2: through exit_to_runtime
OFF_ENTRY = OFF_PRIVATE + 8  # address of the block's AArch64 code, read by the loader
EXIT_VIA_DISPATCH = 1
EXIT_VIA_RUNTIME = 2

# --- AArch64: the translator's encoders (translate/a64.py), 64-bit and Q forms -------

def ldr_x_imm(rt: int, rn: int, offset: int) -> int:
    return a64.ldr_uimm(3, rt, rn, offset)


def str_x_imm(rt: int, rn: int, offset: int) -> int:
    return a64.str_uimm(3, rt, rn, offset)


def ldr_q_imm(rt: int, rn: int, offset: int) -> int:
    return a64.ldr_fp_uimm(4, rt, rn, offset)


def str_q_imm(rt: int, rn: int, offset: int) -> int:
    return a64.str_fp_uimm(4, rt, rn, offset)


MSR_FPCR_XZR = a64.msr_fpcr(31)  # FPCR = 0: round to nearest, no flush-to-zero, no default NaN (MXCSR 0x1F80's)
NOP = a64.nop()


def _words(words: list[int]) -> bytes:
    return struct.pack(f"<{len(words)}I", *words)


def a64_loader(state_address: int) -> bytes:
    """Load guest state from the state block at ``state_address`` and branch to its OFF_ENTRY slot."""
    words = [a64.ldr_literal(1, STATE_REG, 0)]  # patched below: the literal sits after the code
    words += [ldr_x_imm(host, STATE_REG, OFF_GPR + 8 * n) for n, host in enumerate(GPR_HOST)]
    words += [ldr_q_imm(v, STATE_REG, OFF_XMM + 16 * n) for n, v in enumerate(XMM_HOST)]
    words += [
        MSR_FPCR_XZR,
        ldr_x_imm(PF_SRC_REG, STATE_REG, OFF_PF_SRC),
        ldr_x_imm(AF_SRC_REG, STATE_REG, OFF_AF_SRC),
        ldr_x_imm(1, STATE_REG, OFF_NZCV),
        a64.msr_nzcv(1),
        ldr_x_imm(1, STATE_REG, OFF_ENTRY),
        a64.br(1),
    ]
    literal_at = 4 * len(words)
    words[0] = a64.ldr_literal(1, STATE_REG, literal_at)
    return _words(words) + struct.pack("<Q", state_address)


def a64_exit_entry(path: int, halt_offset: int) -> bytes:
    """A dispatch or exit_to_runtime entry: record ``path``, spill guest state, branch ``halt_offset`` bytes ahead."""
    words = [a64.movz(1, 1, path), str_x_imm(1, STATE_REG, OFF_EXIT_PATH), str_x_imm(0, STATE_REG, OFF_RIP)]
    words += [str_x_imm(host, STATE_REG, OFF_GPR + 8 * n) for n, host in enumerate(GPR_HOST)]
    words += [str_q_imm(v, STATE_REG, OFF_XMM + 16 * n) for n, v in enumerate(XMM_HOST)]
    words += [
        str_x_imm(PF_SRC_REG, STATE_REG, OFF_PF_SRC),
        str_x_imm(AF_SRC_REG, STATE_REG, OFF_AF_SRC),
        a64.mrs_nzcv(1),
        str_x_imm(1, STATE_REG, OFF_NZCV),
    ]
    words.append(a64.b(halt_offset - 4 * len(words)))
    return _words(words)


def a64_branch(byte_offset: int) -> bytes:
    return _words([a64.b(byte_offset)])


# --- x86-64 stubs ------------------------------------------------------------------

# ModRM reg field and REX.R for GPR n.
def _rex_w(n: int) -> int:
    return 0x48 | (0x04 if n >= 8 else 0)


def _movdqu_rip(store: bool, n: int, target: int, at: int) -> bytes:
    """``movdqu xmmN, [rip+rel32]`` (or the store) placed at ``at``."""
    rex = b"\x44" if n >= 8 else b""
    length = 1 + len(rex) + 2 + 1 + 4
    return (b"\xf3" + rex + (b"\x0f\x7f" if store else b"\x0f\x6f") + bytes([0x05 | (n & 7) << 3])
            + struct.pack("<i", target - (at + length)))


def x86_loader(image: int, target_slot: int, here: int, xmm_image: int, mxcsr_slot: int) -> bytes:
    """Load XMM0-15 from ``xmm_image``, MXCSR from ``mxcsr_slot``, GPRs and RFLAGS from ``image``
    (16 GPRs, then RFLAGS) and ``jmp [target_slot]``.

    ``here`` is the address the stub is placed at (for the RIP-relative accesses).
    """
    code = bytearray()
    for n in range(16):
        code += _movdqu_rip(False, n, xmm_image + 16 * n, here + len(code))
    code += b"\x0f\xae\x15" + struct.pack("<i", mxcsr_slot - (here + len(code) + 7))  # ldmxcsr [rip+rel32]
    code += b"\x48\xbc" + struct.pack("<Q", image + 0x80)  # mov rsp, image+0x80
    code += b"\x9d"  # popfq: rsp = image + 0x88
    for n in range(16):
        if n == 4:
            continue  # rsp last, it is the base of every load
        # mov REG, [rsp + disp32]   (SIB 0x24 = base rsp, no index)
        code += bytes([_rex_w(n), 0x8B, 0x84 | (n & 7) << 3, 0x24]) + struct.pack("<i", 8 * n - 0x88)
    code += bytes([0x48, 0x8B, 0xA4, 0x24]) + struct.pack("<i", 8 * 4 - 0x88)  # mov rsp, [rsp + ...]
    # jmp [rip + rel32] to the slot holding the block's address.
    rel = target_slot - (here + len(code) + 6)
    code += b"\xff\x25" + struct.pack("<i", rel)
    return bytes(code)


def x86_spill(image: int, here: int, xmm_image: int) -> bytes:
    """Store XMM0-15 into ``xmm_image``, GPRs and RFLAGS into ``image`` (the loader's layouts)."""
    code = bytearray()
    for n in range(16):
        code += _movdqu_rip(True, n, xmm_image + 16 * n, here + len(code))
    for n in range(16):
        # mov [rip + rel32], REG
        rel = image + 8 * n - (here + len(code) + 7)
        code += bytes([_rex_w(n), 0x89, 0x05 | (n & 7) << 3]) + struct.pack("<i", rel)
    rel = image + 0x88 - (here + len(code) + 7)
    code += b"\x48\x8d\x25" + struct.pack("<i", rel)  # lea rsp, [rip + image+0x88]
    code += b"\x9c"  # pushfq -> image + 0x80
    return bytes(code)


def x86_jmp_abs(target_slot: int, here: int) -> bytes:
    """``jmp [rip + rel32]`` through an 8-byte slot holding the target."""
    return b"\xff\x25" + struct.pack("<i", target_slot - (here + 6))


X86_LOADER_INSTRUCTIONS = 16 + 1 + 1 + 1 + 15 + 1 + 1  # 16 movdqu; ldmxcsr; mov rsp; popfq; 15 loads; mov rsp; jmp
X86_SPILL_INSTRUCTIONS = 16 + 16 + 1 + 1  # 16 movdqu; 16 stores; lea; pushfq
