"""Two engines for testing the x87 lowering piece by piece.

``run_ir`` assembles IR a test emits through a :class:`Builder` and runs it on
unicorn ARM64 with chosen values in host registers; ``run_x87`` runs x86 bytes
on unicorn x86-64 from a chosen x87 state (an ``abi.X87Image``: physical
registers, TOP, control word, tags) and returns the state after them.  unicorn's x87 is QEMU's
softfloat ``floatx80``: exact 80-bit arithmetic with precision and rounding
control, which is the reference the translated code must match bit for bit.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from unicorn import UC_ARCH_ARM64, UC_ARCH_X86, UC_MODE_64, UC_MODE_ARM, UC_PROT_ALL, Uc
from unicorn.arm64_const import UC_ARM64_REG_X28
from unicorn import x86_const as X

from fexaot_tool.runtime.a64 import x87_from_engine, x87_to_registers
from fexaot_tool.translate import backend, ir, passes
from fexaot_tool.translate.abi import X87Image
from fexaot_tool.translate.builder import Builder

CODE = 0x10_0000
DATA = 0x20_0000  # 64 KiB of scratch memory in both engines (x28 points here on ARM64)
DATA_SIZE = 0x1_0000

_A64 = Uc(UC_ARCH_ARM64, UC_MODE_ARM)
_A64.mem_map(CODE, 0x10_0000, UC_PROT_ALL)
_A64.mem_map(DATA, DATA_SIZE, UC_PROT_ALL)


def arm_reg(n: int) -> int:
    """unicorn's id of AArch64 register xN (x29, x30 are not contiguous with x28 in every binding)."""
    from unicorn import arm64_const as A
    return getattr(A, f"UC_ARM64_REG_X{n}")


def compile_ir(emit: Callable[[Builder], None], optimise: bool = True) -> tuple[bytes, int]:
    """(code, instruction count) of the IR ``emit`` builds, ending in a ``udf`` where runs stop."""
    b = Builder(tso=False, image_base=0)
    emit(b)
    b.emit(ir.udf(0))
    ops = passes.optimise(b.ops) if optimise else b.ops
    code, _, instructions = backend.assemble(ops)
    return code, instructions


def run_code(compiled: tuple[bytes, int], inputs: dict[int, int], outputs: tuple[int, ...],
             memory: bytes = b"") -> tuple[tuple[int, ...], bytes]:
    """Run ``compile_ir``'s code with host registers ``inputs`` set; (outputs' values, DATA bytes after)."""
    code, instructions = compiled
    if _A64.mem_read(CODE, len(code)) != code:
        _A64.mem_write(CODE, code)
        _A64.ctl_remove_cache(CODE, CODE + len(code))  # unicorn keeps translations of overwritten code otherwise
    if memory:
        _A64.mem_write(DATA, memory)
    for r in range(31):
        _A64.reg_write(arm_reg(r), 0)
    for r, value in inputs.items():
        _A64.reg_write(arm_reg(r), value & (1 << 64) - 1)
    _A64.reg_write(UC_ARM64_REG_X28, DATA)
    _A64.emu_start(CODE, CODE + 4 * (instructions - 1), count=10_000_000)
    return tuple(_A64.reg_read(arm_reg(r)) for r in outputs), bytes(_A64.mem_read(DATA, 256))


def run_ir(emit: Callable[[Builder], None], inputs: dict[int, int], outputs: tuple[int, ...],
           memory: bytes = b"", optimise: bool = True) -> tuple[tuple[int, ...], bytes]:
    """Run the IR ``emit`` builds with host registers ``inputs`` (register -> value) set on entry.

    ``emit`` reads its inputs from those physical registers (use guest registers,
    x4-x17, x19, x20) and leaves its results in the physical registers ``outputs``;
    x28 points at ``DATA``, which holds ``memory`` on entry.  Returns the outputs'
    values and the first 256 DATA bytes after the run.
    """
    return run_code(compile_ir(emit, optimise), inputs, outputs, memory.ljust(256, b"\0"))


_X86 = Uc(UC_ARCH_X86, UC_MODE_64)
_X86.mem_map(CODE, 0x10_0000, UC_PROT_ALL)
_X86.mem_map(DATA, DATA_SIZE, UC_PROT_ALL)


def run_x87(code: bytes, state: X87Image, gprs: dict[int, int] | None = None, memory: bytes = b"",
            ) -> tuple[X87Image, dict[int, int], bytes, int]:
    """Run x86 ``code`` from ``state``; returns (x87 state, RAX/RCX/RDX/RBX values, DATA bytes, RFLAGS).

    ``gprs`` are unicorn x86 register ids -> values; DATA holds ``memory`` on entry.
    """
    _X86.mem_write(CODE, code)
    _X86.ctl_remove_cache(CODE, CODE + len(code))
    _X86.mem_write(DATA, memory.ljust(DATA_SIZE, b"\0"))
    for reg in (X.UC_X86_REG_RAX, X.UC_X86_REG_RCX, X.UC_X86_REG_RDX, X.UC_X86_REG_RBX, X.UC_X86_REG_RSI,
                X.UC_X86_REG_RDI):
        _X86.reg_write(reg, 0)
    for reg, value in (gprs or {}).items():
        _X86.reg_write(reg, value)
    _X86.reg_write(X.UC_X86_REG_EFLAGS, 0x2)
    _X86.reg_write_batch(x87_to_registers(state.pack()))
    _X86.emu_start(CODE, CODE + len(code))
    after = X87Image.unpack(x87_from_engine(_X86))
    gprs_after = {reg: _X86.reg_read(reg) for reg in (X.UC_X86_REG_RAX, X.UC_X86_REG_RCX, X.UC_X86_REG_RDX,
                                                       X.UC_X86_REG_RBX)}
    return after, gprs_after, bytes(_X86.mem_read(DATA, DATA_SIZE)), _X86.reg_read(X.UC_X86_REG_EFLAGS)


def f80(value_bits: bytes) -> tuple[int, int]:
    """An 80-bit little-endian image -> (significand, sign_exponent)."""
    return struct.unpack("<QH", value_bits[:10])
