"""The AArch64 engine's own code and memory: dispatcher, entry and exit paths, block stubs, x86 hand-over stubs.

Everything here is host memory mapped into the engines at its own address
(as guest memory is), in separate areas because unicorn notices a store to a
page it has translated code from and throws that code away: code pages are
only ever written by the runtime (which unicorn does not notice, so a patch is
followed by ``ctl_remove_cache``), data pages only by guest code.

Areas (each one host mapping; the large ones ``MAP_NORESERVE``, so only the
pages that are touched cost memory):

- *state*: one page, the state block of docs/abi.md; its runtime-private half
  holds the bases the dispatcher reads.
- *infra*: the AArch64 entry/loader, dispatcher and exit path, and the x86-64
  loader/spill stubs of the fallback.
- *l1*, *l2*: the dispatcher's lookup table, a two-level array indexed by the
  guest RIP: ``l1[rip >> 21]`` points to a 2 MiB chunk's ``u32[2 MiB]`` of
  block stub numbers (0: no translation).  Filling it for a whole cached
  module is a loop of array stores, not hash inserts.
- *stubs*: one 64-byte stub per installed block: count the execution in its
  counter, branch to the block's code through its target slot.  Dispatcher
  lookups and linked block exits both enter blocks through their stub, so the
  counter sees every execution, and invalidating a block is one data store
  (its target becomes the dispatcher) that every link honours at once.
- *slots*: per stub, ``(counter, target)``: data, written by guest code.
- *code*: block code, copied from caches (then relocated) or made by the JIT.
"""

from __future__ import annotations

import ctypes
import struct
from dataclasses import dataclass

from fexaot_tool.runtime import host
from fexaot_tool.translate import a64, abi

PAGE = 0x1000
CHUNK_SHIFT = 21  # a level-2 table covers 2 MiB of guest addresses
CHUNK = 1 << CHUNK_SHIFT
GUEST_ADDRESS_BITS = 47  # user space of x86-64 with 4-level paging
L1_ENTRIES = 1 << (GUEST_ADDRESS_BITS - CHUNK_SHIFT)
L2_TABLE_BYTES = 4 * CHUNK
L2_TABLES = 256  # chunks with translations at once: 512 MiB of guest code address space
STUB_SIZE = 64
STUB_SHIFT = 6
MAX_STUBS = 1 << 20
SLOT_SIZE = 16  # counter, target
CODE_BYTES = 1 << 30

# Runtime-private fields of the state block (docs/abi.md: 0x200.. is the runtime's).
L1_BASE_OFFSET = abi.RUNTIME_PRIVATE_OFFSET + 0x00
STUB_BASE_OFFSET = abi.RUNTIME_PRIVATE_OFFSET + 0x08
SLOT_BASE_OFFSET = abi.RUNTIME_PRIVATE_OFFSET + 0x10
EXIT_KIND_OFFSET = abi.RUNTIME_PRIVATE_OFFSET + 0x18  # which path reached the runtime

EXIT_KIND_MISS = 1  # the dispatcher found no translation for x0
EXIT_KIND_RUNTIME = 2  # a block left through exit_to_runtime (exit_reason says why)

# infra area layout (offsets)
_A64_ENTRY = 0x000  # b loader: emu_start begins here, so unicorn re-translates one instruction
_A64_LOADER = 0x040
_A64_DISPATCH = 0x200
_A64_MISS = 0x300
_A64_EXIT_TO_RUNTIME = 0x340
_A64_SAVE = 0x380  # spill, svc, reload, dispatch
_X86_ENTRY = 0x800  # jmp [loader slot]
_X86_SPILL_ENTRY = 0x840  # jmp [spill slot]
_X86_LOADER = 0x880
_X86_SPILL = 0xA00
_X86_HALT = 0xE00  # the spill stub jumps here; emu_start's ``until``, so unicorn re-translates only this
_X86_SLOTS = 0xF00
INFRA_SIZE = PAGE

# Guest XMMn lives in v(XMM_HOST[n]) while translated code runs (docs/abi.md); XMM state crosses
# to the fallback engine through the state block too.
XMM_HOST: tuple[int, ...] = abi.XMM_HOST


def svc(imm16: int) -> int:
    """SVC #imm16 (a64.py has no exception-generating forms but brk/udf)."""
    return 0xD4000001 | imm16 << 5


def _words(words: list[int]) -> bytes:
    return struct.pack(f"<{len(words)}I", *words)


class HostArea:
    """A host mapping at an address the kernel picks; never touched by the guest's own mappings."""

    def __init__(self, size: int, reserve: bool = False):
        flags = host.MAP_PRIVATE | host.MAP_ANONYMOUS | (_MAP_NORESERVE if reserve else 0)
        address = host.mmap(0, size, host.PROT_READ | host.PROT_WRITE, flags)
        if address < 0:
            raise MemoryError(f"cannot reserve {size:#x} bytes for the AArch64 engine ({host.strerror(-address)})")
        self.address = address
        self.size = size

    def view(self, offset: int = 0, size: int | None = None) -> memoryview:
        size = self.size - offset if size is None else size
        return memoryview((ctypes.c_char * size).from_address(self.address + offset)).cast("B")

    def close(self) -> None:
        if self.address:
            host.munmap(self.address, self.size)
            self.address = 0


_MAP_NORESERVE = 0x4000


@dataclass(frozen=True)
class Layout:
    """Where the areas are (host = engine addresses)."""

    state: int
    infra: int
    l1: int
    l2: int
    stubs: int
    slots: int
    code: int

    @property
    def a64_entry(self) -> int:
        return self.infra + _A64_ENTRY

    @property
    def dispatch(self) -> int:
        return self.infra + _A64_DISPATCH

    @property
    def exit_to_runtime(self) -> int:
        return self.infra + _A64_EXIT_TO_RUNTIME

    @property
    def x86_entry(self) -> int:
        return self.infra + _X86_ENTRY

    @property
    def x86_spill_entry(self) -> int:
        return self.infra + _X86_SPILL_ENTRY

    @property
    def x86_spill_end(self) -> int:
        return self.infra + _X86_HALT


def _load_guest_state() -> list[int]:
    """Guest registers, PF/AF sources and NZCV from the state block (x28), then x0 = rip."""
    words = [a64.ldr_uimm(3, host_reg, abi.STATE, abi.GPR_OFFSET + 8 * n) for n, host_reg in enumerate(abi.GPR_HOST)]
    words += [
        a64.ldr_uimm(3, abi.PF_SRC, abi.STATE, abi.PF_SRC_OFFSET),
        a64.ldr_uimm(3, abi.AF_SRC, abi.STATE, abi.AF_SRC_OFFSET),
        a64.ldr_uimm(3, 1, abi.STATE, abi.NZCV_OFFSET),
        a64.msr_nzcv(1),
        a64.ldr_uimm(3, abi.NEXT_RIP, abi.STATE, abi.RIP_OFFSET),
    ]
    words += [a64.ldr_fp_uimm(4, v, abi.STATE, abi.XMM_OFFSET + 16 * n) for n, v in enumerate(XMM_HOST)]
    return words


def _save_guest_state() -> list[int]:
    words = [a64.str_uimm(3, abi.NEXT_RIP, abi.STATE, abi.RIP_OFFSET)]
    words += [a64.str_uimm(3, host_reg, abi.STATE, abi.GPR_OFFSET + 8 * n) for n, host_reg in enumerate(abi.GPR_HOST)]
    words += [
        a64.str_uimm(3, abi.PF_SRC, abi.STATE, abi.PF_SRC_OFFSET),
        a64.str_uimm(3, abi.AF_SRC, abi.STATE, abi.AF_SRC_OFFSET),
        a64.mrs_nzcv(1),
        a64.str_uimm(3, 1, abi.STATE, abi.NZCV_OFFSET),
    ]
    words += [a64.str_fp_uimm(4, v, abi.STATE, abi.XMM_OFFSET + 16 * n) for n, v in enumerate(XMM_HOST)]
    return words


def a64_infra(layout: Layout) -> dict[int, bytes]:
    """The AArch64 side of the infra area, as {offset: code}."""
    out: dict[int, bytes] = {}
    out[_A64_ENTRY] = _words([a64.b(_A64_LOADER - _A64_ENTRY)])

    loader = [a64.ldr_literal(1, abi.STATE, 0)]  # patched: the literal follows the code
    loader += _load_guest_state()
    loader.append(a64.b(_A64_DISPATCH - (_A64_LOADER + 4 * len(loader))))
    if len(loader) % 2:
        loader.append(a64.udf())
    loader[0] = a64.ldr_literal(1, abi.STATE, 4 * len(loader))
    out[_A64_LOADER] = _words(loader) + struct.pack("<Q", layout.state)

    # The dispatcher: x0 = guest RIP.  Two loads find the stub number in the
    # level-2 table; a miss (no table, no entry, a RIP outside user space)
    # goes to the runtime.  x1-x3 are scratch at block boundaries (docs/abi.md).
    d: list[int] = []

    def to_miss() -> int:
        return _A64_MISS - (_A64_DISPATCH + 4 * len(d))

    d.append(a64.lsr_imm(1, 1, abi.NEXT_RIP, GUEST_ADDRESS_BITS))
    d.append(a64.cbnz(1, 1, to_miss()))
    d.append(a64.ldr_uimm(3, 2, abi.STATE, L1_BASE_OFFSET))
    d.append(a64.lsr_imm(1, 1, abi.NEXT_RIP, CHUNK_SHIFT))
    d.append(a64.add_reg(1, 2, 2, 1, a64.Shift.LSL, 3))
    d.append(a64.ldr_uimm(3, 2, 2, 0))
    d.append(a64.cbz(1, 2, to_miss()))
    d.append(a64.and_imm(1, 3, abi.NEXT_RIP, CHUNK - 1))
    d.append(a64.add_reg(1, 2, 2, 3, a64.Shift.LSL, 2))
    d.append(a64.ldr_uimm(2, 3, 2, 0))
    d.append(a64.cbz(0, 3, to_miss()))
    d.append(a64.ldr_uimm(3, 2, abi.STATE, STUB_BASE_OFFSET))
    d.append(a64.add_reg(1, 2, 2, 3, a64.Shift.LSL, STUB_SHIFT))
    d.append(a64.br(2))
    assert 4 * len(d) <= _A64_MISS - _A64_DISPATCH
    out[_A64_DISPATCH] = _words(d)

    def kind_then_save(at: int, kind: int) -> bytes:
        w = [a64.movz(1, 1, kind), a64.str_uimm(3, 1, abi.STATE, EXIT_KIND_OFFSET)]
        w.append(a64.b(_A64_SAVE - (at + 4 * len(w))))
        return _words(w)

    out[_A64_MISS] = kind_then_save(_A64_MISS, EXIT_KIND_MISS)
    out[_A64_EXIT_TO_RUNTIME] = kind_then_save(_A64_EXIT_TO_RUNTIME, EXIT_KIND_RUNTIME)

    # Spill, let the runtime handle it inside unicorn's interrupt hook (no emu_start
    # per exit), then reload whatever the runtime changed and dispatch x0 = rip.
    save = _save_guest_state() + [svc(0)] + _load_guest_state()
    save.append(a64.b(_A64_DISPATCH - (_A64_SAVE + 4 * len(save))))
    assert _A64_SAVE + 4 * len(save) <= _X86_ENTRY
    out[_A64_SAVE] = _words(save)
    return out


def x86_infra(layout: Layout) -> dict[int, bytes]:
    """The x86-64 side: loader and spill of the state block for the fallback engine."""
    base = layout.infra
    code = {
        _X86_ENTRY: _x86_jmp_slot(base + _X86_SLOTS, base + _X86_ENTRY),
        _X86_SPILL_ENTRY: _x86_jmp_slot(base + _X86_SLOTS + 8, base + _X86_SPILL_ENTRY),
        _X86_LOADER: x86_loader(layout.state, base + _X86_LOADER),
        _X86_SPILL: x86_spill(layout.state, base + _X86_SPILL)
        + _x86_jmp_slot(base + _X86_SLOTS + 16, base + _X86_SPILL + X86_SPILL_SIZE),
        _X86_HALT: b"\x90",
        _X86_SLOTS: struct.pack("<QQQ", base + _X86_LOADER, base + _X86_SPILL, base + _X86_HALT),
    }
    placed = sorted(code.items())
    assert all(a + len(c) <= b for (a, c), (b, _) in zip(placed, placed[1:])), "x86 stubs overlap"
    return code


def _rex_w(n: int) -> int:
    return 0x48 | (0x04 if n >= 8 else 0)


def _x86_jmp_slot(slot: int, here: int) -> bytes:
    """``jmp [rip + rel32]`` through an 8-byte slot."""
    return b"\xff\x25" + struct.pack("<i", slot - (here + 6))


def x86_loader(state: int, here: int) -> bytes:
    """Load RFLAGS and the 16 GPRs from the state block, then ``jmp [state.rip]``.

    popfq reads RFLAGS through rsp pointed at the state block, never the guest
    stack (whose red zone below rsp may hold live data).
    """
    code = bytearray()
    code += b"\x48\xbc" + struct.pack("<Q", state + abi.RFLAGS_OFFSET)  # mov rsp, &state.rflags
    code += b"\x9d"  # popfq: rsp = state + RFLAGS_OFFSET + 8
    base = abi.RFLAGS_OFFSET + 8
    for n in range(16):
        if n == abi.RSP:
            continue
        code += bytes([_rex_w(n), 0x8B, 0x84 | (n & 7) << 3, 0x24]) + struct.pack("<i", 8 * n - base)
    for n in range(len(XMM_HOST)):  # movdqu xmmN, [rsp + disp32]
        rex = bytes([0x44]) if n >= 8 else b""
        code += b"\xf3" + rex + bytes([0x0F, 0x6F, 0x84 | (n & 7) << 3, 0x24]) + struct.pack(
            "<i", abi.XMM_OFFSET + 16 * n - base)
    code += bytes([0x48, 0x8B, 0xA4, 0x24]) + struct.pack("<i", 8 * abi.RSP - base)  # mov rsp, [rsp + ...]
    code += _x86_jmp_slot(state + abi.RIP_OFFSET, here + len(code))
    return bytes(code)


def x86_spill(state: int, here: int) -> bytes:
    """Store the 16 GPRs and RFLAGS into the state block."""
    code = bytearray()
    for n in range(16):
        rel = state + abi.GPR_OFFSET + 8 * n - (here + len(code) + 7)
        code += bytes([_rex_w(n), 0x89, 0x05 | (n & 7) << 3]) + struct.pack("<i", rel)
    for n in range(len(XMM_HOST)):  # movdqu [rip + rel32], xmmN
        rex = bytes([0x44]) if n >= 8 else b""
        size = 1 + len(rex) + 2 + 1 + 4
        rel = state + abi.XMM_OFFSET + 16 * n - (here + len(code) + size)
        code += b"\xf3" + rex + bytes([0x0F, 0x7F, 0x05 | (n & 7) << 3]) + struct.pack("<i", rel)
    rel = state + abi.RFLAGS_OFFSET + 8 - (here + len(code) + 7)
    code += b"\x48\x8d\x25" + struct.pack("<i", rel)  # lea rsp, [&state.rflags + 8]
    code += b"\x9c"  # pushfq -> state.rflags
    return bytes(code)


def _stub_tail() -> bytes:
    return _words([
        a64.ldr_uimm(3, 2, abi.STATE, SLOT_BASE_OFFSET),
        a64.add_reg(1, 2, 2, 1, a64.Shift.LSL, 4),
        a64.ldr_uimm(3, 1, 2, 0),
        a64.add_imm(1, 1, 1, 1),
        a64.str_uimm(3, 1, 2, 0),
        a64.ldr_uimm(3, 1, 2, 8),
        a64.br(1),
    ])


_STUB_TAIL = _stub_tail()
_STUB_PAD = bytes(STUB_SIZE - 8 - len(_STUB_TAIL))
_MOVZ_X1 = a64.movz(1, 1, 0)
_MOVK_X1_16 = a64.movk(1, 1, 0, 1)


X86_LOADER_INSTRUCTIONS = 1 + 1 + 15 + len(XMM_HOST) + 1 + 1  # mov rsp; popfq; loads; mov rsp; jmp [rip]
X86_SPILL_SIZE = len(x86_spill(0, 0))


def block_stub(number: int) -> bytes:
    """Stub ``number``: count one execution, then branch to the block through its target slot.

    ``movz/movk x1, #number; ldr x2, [x28, #slots]; add x2, x2, x1, lsl #4; ldr x1, [x2];
    add x1, x1, #1; str x1, [x2]; ldr x1, [x2, #8]; br x1``.  x1 and x2 are scratch at a
    block's entry; x0 (the RIP) is kept, so an invalidated block's target (the dispatcher)
    finds the RIP where it expects it.
    """
    return struct.pack("<II", _MOVZ_X1 | (number & 0xFFFF) << 5, _MOVK_X1_16 | (number >> 16) << 5) \
        + _STUB_TAIL + _STUB_PAD


# A linkable exit (docs/abi.md "Entering and leaving a block"): ldr x0, <literal>;
# ldr x1, [x28, #dispatch]; br x1.  Linking replaces the middle word with ``b stub``
# and keeps the literal load, so x0 still holds the RIP when the stub is entered.
EXIT_TAIL = _words([a64.ldr_uimm(3, 1, abi.STATE, abi.DISPATCH_OFFSET), a64.br(1)])
LDR_X0_LITERAL_MASK = 0xFF00001F
LDR_X0_LITERAL = 0x58000000


def linkable_exits(code: bytes | memoryview) -> list[tuple[int, int]]:
    """(offset of the ``ldr x1, [x28, #dispatch]``, offset of the literal x0 is loaded from), per exit."""
    data = bytes(code)
    out = []
    at = data.find(EXIT_TAIL)
    while at >= 0:
        if at % 4 == 0 and at >= 4:
            (word,) = struct.unpack_from("<I", data, at - 4)
            if word & LDR_X0_LITERAL_MASK == LDR_X0_LITERAL:
                imm19 = (word >> 5) & 0x7FFFF
                if imm19 & 0x40000:
                    imm19 -= 0x80000
                literal = at - 4 + 4 * imm19
                if 0 <= literal <= len(data) - 8:
                    out.append((at, literal))
        at = data.find(EXIT_TAIL, at + 4)
    return out
