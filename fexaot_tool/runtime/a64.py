"""The AArch64 engine: guest code runs as translated AArch64 code on unicorn's ARM64 CPU.

Translated code comes from prebuilt caches (found, validated and installed
when the guest maps an executable ELF file, :mod:`a64_cache`) or from the same
translator at run time (the JIT, on a dispatcher miss).  Instructions the
translator cannot express run on the x86 reference engine over the same
memory (the fallback).  docs/a64-engine.md has the design and its numbers.

What crosses into Python is kept rare, because each crossing costs
microseconds where a block costs nanoseconds:

- Blocks reach each other through an AArch64 dispatcher (a two-level table
  indexed by the guest RIP, :mod:`a64_code`) or a direct branch patched into
  the exit (linking); neither leaves unicorn.
- A dispatcher miss and every ``exit_to_runtime`` spill the guest state to the
  state block and execute ``svc``: unicorn calls the interrupt hook, the
  runtime handles it (system call, JIT, fallback) by reading and writing the
  state block in memory, and emulation goes on after the ``svc`` with no new
  ``emu_start`` (~0.5 µs against ~10 µs; docs/a64-engine.md).
- The fallback moves state to the x86 engine and back through memory (a
  loader and a spill stub on the x86 side): a ``reg_write_batch`` of the 18
  registers costs ~25 µs on this machine, an ``emu_start`` of a stub ~4 µs.
  It stays on the x86 engine through blocks that need it too, so a loop of
  untranslatable code costs one round trip, not one per iteration.

Self-modifying code: a guest page that holds translated code and is writable
is write-protected in both engines; the first store to it invalidates the
translations there, unprotects the page, and performs the store.  Code pages
that change through mprotect/munmap/mmap are invalidated by the runtime core
(:meth:`invalidate_code`).
"""

from __future__ import annotations

import bisect
import ctypes
import signal
import struct
import sys
import time
from array import array
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import iced_x86
import unicorn
from unicorn import unicorn_const as uc_const
from unicorn.arm64_const import UC_ARM64_REG_FPCR, UC_ARM64_REG_PC, UC_CPU_ARM64_MAX
from unicorn.x86_const import (UC_X86_REG_FP0, UC_X86_REG_FPCW, UC_X86_REG_FPSW, UC_X86_REG_FPTAG, UC_X86_REG_FS_BASE,
                               UC_X86_REG_GS_BASE, UC_X86_REG_MXCSR, UC_X86_REG_RIP)

from fexaot_tool.cache.format import SectionKind
from fexaot_tool.cache.key import TranslatorConfig, config_id
from fexaot_tool.cache.reader import CachedModule
from fexaot_tool.runtime import a64_code as rt
from fexaot_tool.runtime.a64_cache import CacheEvent, CacheFinder
from fexaot_tool.runtime.cpuid import CpuidModel
from fexaot_tool.runtime.engine import BlockCount, Engine, EngineFault, SystemCallHandler
from fexaot_tool.runtime.modules import ExecRegion
from fexaot_tool.runtime.x86 import X86Engine
from fexaot_tool.translate import GuestCode, abi, translate_block
from fexaot_tool.translate.block import is_x87

_UNTIL_NEVER = (1 << 64) - 1
_MASK64 = (1 << 64) - 1
PAGE = 0x1000
MAX_JIT_INSTRUCTIONS = 64  # a JIT block ends at the first control flow or after this many instructions
_GPR = struct.Struct("<16Q")
_RAX, _RCX, _RDX, _RBX, _RSP, _RBP, _RSI, _RDI = range(8)
_R8, _R9, _R10, _R11 = 8, 9, 10, 11
_NAMES = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13", "r14",
          "r15")
_GPR_INDEX = {name: n for n, name in enumerate(_NAMES)}
_FIELD_OFFSETS = {"rip": abi.RIP_OFFSET, "fs_base": abi.FS_BASE_OFFSET, "gs_base": abi.GS_BASE_OFFSET}
# x86 RFLAGS bits and NZCV bits (docs/abi.md "Flags").
CF, PF, AF, ZF, SF, DF, OF = 0x1, 0x4, 0x10, 0x40, 0x80, 0x400, 0x800
_N, _Z, _C, _V = 1 << 31, 1 << 30, 1 << 29, 1 << 28
_RFLAGS_FIXED = 0x202
_EXCP_SWI = 2  # unicorn's ARM64 interrupt number for svc

SOURCE_CACHE = 1
SOURCE_JIT = 2
_SOURCE_NAMES = {SOURCE_CACHE: "cache", SOURCE_JIT: "jit"}
_STOPS_FALLBACK = {iced_x86.Mnemonic.SYSCALL, iced_x86.Mnemonic.CPUID, iced_x86.Mnemonic.RDTSC}
_REASON_NAMES = {r.value: r.name.lower() for r in abi.ExitReason}
_FAULTS = {
    abi.ExitReason.INT3: (signal.SIGTRAP, "breakpoint (int3)"),
    abi.ExitReason.HLT: (signal.SIGSEGV, "general protection fault (#GP)"),
    abi.ExitReason.UD2: (signal.SIGILL, "invalid opcode (#UD)"),
    abi.ExitReason.DIVIDE_ERROR: (signal.SIGFPE, "divide error (#DE)"),
}


@dataclass(frozen=True)
class A64Options:
    """Where caches come from and what to say about them."""

    bundles: tuple[str, ...] = ()
    cache_dir: str | None = None
    use_cache: bool = True
    diagnostics: bool = False
    memory_order: str = "tso"


def rflags_of(nzcv: int, pf_src: int, af_src: int, df: int) -> int:
    """The x86 RFLAGS image of the AArch64 flag state (docs/abi.md: at block boundaries C is CF)."""
    flags = _RFLAGS_FIXED
    if nzcv & _C:
        flags |= CF
    if nzcv & _Z:
        flags |= ZF
    if nzcv & _N:
        flags |= SF
    if nzcv & _V:
        flags |= OF
    if not bin(pf_src & 0xFF).count("1") & 1:
        flags |= PF
    if af_src & 0x10:
        flags |= AF
    if df:
        flags |= DF
    return flags


def flags_of(rflags: int) -> tuple[int, int, int, int]:
    """(nzcv, pf_src, af_src, df) holding the flags of an x86 RFLAGS image."""
    nzcv = ((_C if rflags & CF else 0) | (_Z if rflags & ZF else 0) | (_N if rflags & SF else 0)
            | (_V if rflags & OF else 0))
    return nzcv, 0 if rflags & PF else 1, 0x10 if rflags & AF else 0, 1 if rflags & DF else 0


@dataclass
class _CachedInstall:
    """A cached module's code, copied and relocated for one load base; its blocks get stubs per region."""

    module: CachedModule
    name: str
    load_base: int
    code_address: int
    starts: list[int]  # guest addresses of the module's blocks, sorted (BLOCK_INDEX order)
    entries: list[tuple]  # BLOCK_INDEX fields, same order
    stubs: list[int]  # stub number per block, 0 until installed for a mapped region
    partial: set[int]  # starts of blocks translated only up to an untranslatable instruction
    untranslated: set[int]  # starts of blocks with no translated code
    stub_ranges: list[tuple[int, int]] = field(default_factory=list)  # (first stub, count) per installation


class A64Engine(Engine):
    name = "a64"

    def __init__(self, cpuid: CpuidModel, on_syscall: SystemCallHandler, options: A64Options | None = None,
                 module_map=None) -> None:
        self.options = options or A64Options()
        self.cpuid = cpuid
        self.on_syscall = on_syscall
        self.module_map = module_map
        self.tso = self.options.memory_order == "tso"
        self.config_id = config_id(TranslatorConfig(memory_order=self.options.memory_order))
        self.finder = CacheFinder(self.options.bundles, self.options.cache_dir, self.config_id) \
            if self.options.use_cache and (self.options.bundles or self.options.cache_dir) else None
        self.stats: Counter[str] = Counter()
        self.fallback = X86Engine(cpuid, on_syscall)
        self.uc = unicorn.Uc(uc_const.UC_ARCH_ARM64, uc_const.UC_MODE_ARM)
        self.uc.ctl_set_cpu_model(UC_CPU_ARM64_MAX)
        self._areas: list[rt.HostArea] = []
        self._setup_memory()
        self._mappings: list[list[int]] = []  # [start, end, perms], sorted, non-overlapping
        self._guarded: set[int] = set()  # writable guest pages write-protected because they hold translations
        self._page_stubs: dict[int, set[int]] = defaultdict(set)  # JIT blocks by guest page
        self._installs: dict[tuple[int, int], _CachedInstall] = {}
        self._fallback_only: set[int] = set()  # block starts whose first instruction is untranslatable
        self._invalidated: set[int] = set()
        self._fallback_counts: Counter[tuple[int, int]] = Counter()
        self._counting = False
        self._pending_counts: list[BlockCount] = []  # harvested early (before an invalidation), not yet taken
        self._dirty_pages: set[int] = set()  # pages whose cached translations were invalidated
        self._fault: EngineFault | None = None
        self._stop_requested = False
        self._bad_access: tuple[int, int] | None = None
        self._fs_dirty = True
        self._fallback_mxcsr = 0x1F80  # the x86 engine starts with a Linux process's MXCSR
        self.uc.hook_add(uc_const.UC_HOOK_INTR, self._on_interrupt)
        self.uc.hook_add(uc_const.UC_HOOK_MEM_WRITE_PROT, self._on_write_protected)
        self.fallback.uc.hook_add(uc_const.UC_HOOK_MEM_WRITE_PROT, self._on_write_protected)
        self.fallback.uc.hook_add(uc_const.UC_HOOK_BLOCK, self._on_x86_block)
        self._in_fallback = False
        self._fallback_first = False
        self._fallback_stop_at: int | None = None
        # x86 block -> (instructions, whether one touches x87 state), decoded once
        self._x86_blocks: dict[tuple[int, int], tuple[int, bool]] = {}
        # x87 state crosses to the x86 engine when it changed since the last crossing, and back
        # when the fallback ran an x87 instruction (a register access costs microseconds).
        self._fallback_x87 = _X87_RESET
        self._fallback_touched_x87 = False
        self.uc.hook_add(uc_const.UC_HOOK_MEM_UNMAPPED | uc_const.UC_HOOK_MEM_READ_PROT
                         | uc_const.UC_HOOK_MEM_FETCH_PROT, self._on_bad_access)

    # -- the engine's own memory ---------------------------------------------------------

    def _area(self, size: int, reserve: bool = False) -> rt.HostArea:
        area = rt.HostArea(size, reserve)
        self._areas.append(area)
        return area

    def _setup_memory(self) -> None:
        state = self._area(PAGE)
        infra = self._area(rt.INFRA_SIZE)
        l1 = self._area(rt.L1_ENTRIES * 8, reserve=True)
        l2 = self._area(rt.L2_TABLES * rt.L2_TABLE_BYTES, reserve=True)
        # Stubs and code in one reservation of 128 MiB, so a block exit can branch to any stub (b: +-128 MiB).
        stubs_and_code = self._area(128 << 20, reserve=True)
        slots = self._area(rt.MAX_STUBS * rt.SLOT_SIZE, reserve=True)
        self.max_stubs = (32 << 20) // rt.STUB_SIZE
        self.layout = rt.Layout(state.address, infra.address, l1.address, l2.address, stubs_and_code.address,
                                slots.address, stubs_and_code.address + (32 << 20))
        self._code_end = stubs_and_code.address + stubs_and_code.size
        self.state = state.view()
        self.l1 = l1.view().cast("Q")
        self.slots = slots.view().cast("Q")
        self._l2_area = l2
        self._l2: dict[int, memoryview] = {}
        self._stubs_area = stubs_and_code
        read, write, exe = uc_const.UC_PROT_READ, uc_const.UC_PROT_WRITE, uc_const.UC_PROT_EXEC
        for area, perms in ((state, read | write), (infra, read | exe), (l1, read), (l2, read),
                            (stubs_and_code, read | exe), (slots, read | write)):
            self.uc.mem_map_ptr(area.address, area.size, perms, area.address)
        self.fallback.uc.mem_map_ptr(state.address, state.size, read | write, state.address)
        self.fallback.uc.mem_map_ptr(infra.address, infra.size, read | exe, infra.address)
        infra_view = infra.view()
        for code in (rt.a64_infra(self.layout), rt.x86_infra(self.layout)):
            for offset, data in code.items():
                infra_view[offset:offset + len(data)] = data
        struct.pack_into("<QQ", self.state, abi.DISPATCH_OFFSET, self.layout.dispatch, self.layout.exit_to_runtime)
        struct.pack_into("<QQQ", self.state, rt.L1_BASE_OFFSET, self.layout.l1, self.layout.stubs, self.layout.slots)
        struct.pack_into("<I", self.state, abi.MXCSR_OFFSET, 0x1F80)
        self.state[abi.X87_REGS_OFFSET:abi.X87_REGS_OFFSET + abi.X87_SIZE] = _X87_RESET
        # Stub 0 is never used: 0 in the lookup table means "no translation".
        self.stub_count = 1
        self.stub_rip = array("Q", [0])
        self.stub_size = array("I", [0])
        self.stub_source = bytearray(1)
        self.stub_instructions = array("i", [0])
        self.stub_partial = bytearray(1)  # 1: the translation stops before an untranslatable instruction
        self._seen_counts = array("Q", [0])
        # Entered by a retired block's first instruction, patched to ``b`` here when exits link
        # straight to code: back to the dispatcher with x0 = the RIP (docs/a64-engine.md).
        self._to_dispatcher = self.layout.code
        ctypes.memmove(self._to_dispatcher, rt.EXIT_TAIL, len(rt.EXIT_TAIL))
        self._code_next = self.layout.code + 16
        self._direct_links = True  # until block counting is asked for: then every entry goes through a stub

    def _alloc_code(self, size: int) -> int:
        address = self._code_next
        if address + size > self._code_end:
            raise MemoryError("the AArch64 engine's code area is full")
        self._code_next = (address + size + 15) & ~15
        return address

    def _new_stubs(self, targets: list[int], rips: list[int], sizes: list[int], source: int,
                   instructions: list[int], partial: bytes) -> int:
        """Make stubs for blocks; returns the first stub number (they are consecutive)."""
        first, n = self.stub_count, len(targets)
        if first + n > self.max_stubs:
            raise MemoryError("the AArch64 engine's stub area is full")
        stub_bytes = b"".join(rt.block_stub(first + i) for i in range(n))
        ctypes.memmove(self.layout.stubs + rt.STUB_SIZE * first, stub_bytes, len(stub_bytes))
        self.slots[2 * first + 1:2 * (first + n):2] = array("Q", targets)
        self.stub_count += n
        self.stub_rip.extend(rips)
        self.stub_size.extend(sizes)
        self.stub_source.extend(bytes([source]) * n)
        self.stub_instructions.extend(instructions)
        self.stub_partial.extend(partial)
        self._seen_counts.extend(array("Q", bytes(8 * n)))
        return first

    def _stub_address(self, number: int) -> int:
        return self.layout.stubs + rt.STUB_SIZE * number

    # -- the lookup table ----------------------------------------------------------------

    def _table(self, chunk: int, create: bool) -> memoryview | None:
        table = self._l2.get(chunk)
        if table is None and create:
            k = len(self._l2)  # tables are never freed while the engine lives (one engine per image)
            if k >= rt.L2_TABLES:
                raise MemoryError("the AArch64 engine's lookup table is full")
            address = self._l2_area.address + k * rt.L2_TABLE_BYTES
            table = self._l2[chunk] = self._l2_area.view(k * rt.L2_TABLE_BYTES, rt.L2_TABLE_BYTES).cast("I")
            self.l1[chunk] = address
        return table

    def lookup(self, rip: int) -> int:
        """The stub number installed for ``rip`` (0: none)."""
        table = self._l2.get(rip >> rt.CHUNK_SHIFT)
        return table[rip & (rt.CHUNK - 1)] if table is not None else 0

    def _set(self, rip: int, stub: int) -> None:
        self._table(rip >> rt.CHUNK_SHIFT, True)[rip & (rt.CHUNK - 1)] = stub

    def _retire(self, stub: int) -> None:
        """The block behind ``stub`` must not run again: out of the table, and its links go to the dispatcher."""
        rip = self.stub_rip[stub]
        if self.lookup(rip) == stub:
            self._table(rip >> rt.CHUNK_SHIFT, False)[rip & (rt.CHUNK - 1)] = 0
        code = self.slots[2 * stub + 1]
        if self._direct_links and code != self.layout.dispatch:
            # Exits linked straight to the code: its first instruction now leaves for the dispatcher.
            ctypes.memmove(code, (0x14000000 | ((self._to_dispatcher - code) >> 2) & 0x3FFFFFF).to_bytes(4, "little"), 4)
            self.uc.ctl_remove_cache(code, code + 4)
        self.slots[2 * stub + 1] = self.layout.dispatch
        self._invalidated.add(rip)

    # -- memory: the guest's mappings, in both engines --------------------------------------

    def map(self, start: int, size: int, perms: int) -> None:
        self.uc.mem_map_ptr(start, size, perms, start)
        self.fallback.map(start, size, perms)
        self._set_perms(start, start + size, perms)

    def unmap(self, start: int, size: int) -> None:
        self.uc.mem_unmap(start, size)
        self.fallback.unmap(start, size)
        self._set_perms(start, start + size, None)
        for page in range(start, start + size, PAGE):
            self._guarded.discard(page)

    def protect(self, start: int, size: int, perms: int) -> None:
        self._set_perms(start, start + size, perms)
        for page in range(start, start + size, PAGE):
            self._guarded.discard(page)
        self.uc.mem_protect(start, size, perms)
        self.fallback.protect(start, size, perms)

    def _set_perms(self, start: int, end: int, perms: int | None) -> None:
        kept = []
        for m in self._mappings:
            if m[1] <= start or m[0] >= end:
                kept.append(m)
                continue
            if m[0] < start:
                kept.append([m[0], start, m[2]])
            if m[1] > end:
                kept.append([end, m[1], m[2]])
        if perms is not None:
            kept.append([start, end, perms])
        kept.sort()
        self._mappings = kept

    def _mapping(self, address: int) -> list[int] | None:
        i = bisect.bisect_right(self._mappings, [address, _MASK64, 0]) - 1
        if i >= 0 and self._mappings[i][0] <= address < self._mappings[i][1]:
            return self._mappings[i]
        return None

    def _guard(self, start: int, end: int) -> None:
        """Write-protect the writable pages of [start, end) that now hold translated code."""
        for page in range(start & ~(PAGE - 1), end, PAGE):
            if page in self._guarded:
                continue
            m = self._mapping(page)
            if m is None or not m[2] & uc_const.UC_PROT_WRITE:
                continue
            self._guarded.add(page)
            self.uc.mem_protect(page, PAGE, m[2] & ~uc_const.UC_PROT_WRITE)
            self.fallback.protect(page, PAGE, m[2] & ~uc_const.UC_PROT_WRITE)
            self.stats["pages_write_protected"] += 1

    def _on_write_protected(self, uc, access, address, size, value, _user_data) -> bool:
        pages = {address & ~(PAGE - 1), (address + size - 1) & ~(PAGE - 1)}
        if not pages & self._guarded:
            return False  # a real write to read-only memory: the guest's fault
        for page in pages - self._guarded:
            m = self._mapping(page)
            if m is None or not m[2] & uc_const.UC_PROT_WRITE:
                return False  # the store also reaches a page the guest may not write: its fault
        for page in pages & self._guarded:
            self._guarded.discard(page)
            m = self._mapping(page)
            self.invalidate_code(page, page + PAGE)
            self.uc.mem_protect(page, PAGE, m[2])
            self.fallback.protect(page, PAGE, m[2])
            self.stats["code_page_writes"] += 1
        # unicorn drops a store whose write-protection hook handled it: do the store here.
        ctypes.memmove(address, (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little"), size)
        return True

    def invalidate_code(self, start: int, end: int) -> None:
        if self._counting and self._has_code(start, end):
            # While the guest bytes are there to count the blocks' instructions; the counts are
            # handed out with the next take_block_counts (the profiler reads the module map then).
            self._pending_counts += self._harvest()
        for install in list(self._installs.values()):
            lo = bisect.bisect_left(install.starts, start - PAGE)
            hi = bisect.bisect_left(install.starts, end)
            if lo == 0 and hi == len(install.starts) and hi:
                self._retire_install(install)
                continue
            for i in range(lo, hi):
                stub = install.stubs[i]
                if stub and install.starts[i] + self.stub_size[stub] > start:
                    self._retire(stub)
                    install.stubs[i] = 0
        for page in range(start & ~(PAGE - 1), end, PAGE):
            stubs = self._page_stubs.pop(page, None)
            if stubs:
                for stub in stubs:
                    self._retire(stub)
                self.stats["jit_blocks_invalidated"] += len(stubs)
        self._fallback_only = {rip for rip in self._fallback_only if not start <= rip < end}
        # The bytes there may no longer be the file's: a cached block on these pages must not be
        # installed again (an mprotect back to executable after a write), the JIT translates them.
        if self.finder is not None:
            self._dirty_pages.update(range(start & ~(PAGE - 1), end, PAGE))
        self.uc.ctl_remove_cache(start, end)
        self.fallback.invalidate_code(start, end)

    def _has_code(self, start: int, end: int) -> bool:
        for install in self._installs.values():
            if bisect.bisect_left(install.starts, start - PAGE) != bisect.bisect_left(install.starts, end):
                return True
        return any(page in self._page_stubs for page in range(start & ~(PAGE - 1), end, PAGE)) \
            if end - start <= 1 << 24 else bool(self._page_stubs)

    def _retire_install(self, install: _CachedInstall) -> None:
        """A whole cached module's code changed or went (an invalidation covering all its blocks): its stubs go
        to the dispatcher, its table range is cleared.

        A library's blocks lie in its own text, which no other module shares, so the table
        entries from its first to its last block can be cleared as one range per chunk.
        """
        for first, n in install.stub_ranges:
            self.slots[2 * first + 1:2 * (first + n):2] = array("Q", [self.layout.dispatch]) * n
        address, end = install.starts[0], install.starts[-1] + 1
        while address < end:
            chunk_end = min(end, (address | (rt.CHUNK - 1)) + 1)
            if address >> rt.CHUNK_SHIFT in self._l2:
                table_address = self.l1[address >> rt.CHUNK_SHIFT]
                ctypes.memset(table_address + 4 * (address & (rt.CHUNK - 1)), 0, 4 * (chunk_end - address))
            address = chunk_end
        self._invalidated.update(install.starts)
        del self._installs[(install.module.entry.file_id, install.load_base)]

    # -- caches ----------------------------------------------------------------------------

    def executable_mapped(self, region: ExecRegion) -> None:
        """The guest mapped executable code of a file: install its cached blocks, if it has a cache."""
        if self.finder is None or region.module.anonymous or not region.module.is_elf:
            return
        started = time.perf_counter()
        identity = self.module_map.identity(region.module)
        key = (identity.file_id, region.load_base)
        install = self._installs.get(key)
        if install is None:
            events = len(self.finder.events)
            module = self.finder.find(region.module.name, region.module.host_path, identity)
            self._report(self.finder.events[events:])
            if module is None:
                self.stats["cache_load_seconds"] += time.perf_counter() - started
                return
            install = self._install_module(module, region.module.name, region.load_base)
            if install is None:
                self.stats["cache_load_seconds"] += time.perf_counter() - started
                return
            self._installs[key] = install
        self._install_blocks(install, region.start, region.end)
        self.stats["cache_load_seconds"] += time.perf_counter() - started

    def _report(self, events: list[CacheEvent]) -> None:
        for e in events:
            self.stats[f"cache_{e.reason}"] += 1
            if self.options.diagnostics:
                print(e.line(), file=sys.stderr, flush=True)

    def _install_module(self, module: CachedModule, name: str, load_base: int) -> _CachedInstall | None:
        """Copy the module's code, apply its relocations for ``load_base``."""
        base = load_base + module.facts.image_base
        code = module.section(SectionKind.CODE)
        relocations = module.section(SectionKind.RELOCATIONS)
        n = len(relocations) // 16
        problem = None
        if bytes(relocations[4::16]) != b"\x01" * n or any(relocations[5::16]) or any(relocations[6::16]) \
                or any(relocations[7::16]):
            problem = "a relocation of an unknown kind"
        entries = list(struct.iter_unpack("<QIIQII", module.section(SectionKind.BLOCK_INDEX)))
        if problem is None and any(e[1] + e[2] > len(code) or e[1] % 8 for e in entries):
            problem = "a block outside its CODE section"
        copy = bytearray(code)
        if problem is None and len(copy) % 8:
            problem = "a CODE section that is not whole 8-byte words"
        if problem is None:
            words = memoryview(copy).cast("Q")
            limit = len(words)
            try:
                for offset, _kind, _reserved, addend in struct.iter_unpack("<IHHq", relocations):
                    if offset & 7 or offset >> 3 >= limit:
                        problem = f"relocation at {offset:#x} outside its CODE section or unaligned"
                        break
                    words[offset >> 3] = (base + addend) & _MASK64
            finally:
                words.release()
        if problem is not None:
            self._report([CacheEvent(name, module.cache_path, "corrupt", f"module {name}: {problem}")])
            return None
        address = self._alloc_code(len(copy))
        ctypes.memmove(address, bytes(copy), len(copy))
        starts = [base + e[0] for e in entries]
        not_in_full = {base + e[0] for e in struct.iter_unpack("<QIHHII", module.section(SectionKind.UNTRANSLATABLE))}
        partial = not_in_full.intersection(starts)
        self._report([CacheEvent(name, module.cache_path, "loaded",
                                 f"{len(entries)} blocks at load base {load_base:#x}")])
        self.stats["cache_modules_loaded"] += 1
        return _CachedInstall(module, name, load_base, address, starts, entries, [0] * len(entries), partial,
                              not_in_full - partial)

    def _install_blocks(self, install: _CachedInstall, start: int, end: int) -> None:
        lo = bisect.bisect_left(install.starts, start)
        hi = bisect.bisect_left(install.starts, end)
        todo = [i for i in range(lo, hi) if not install.stubs[i]]
        if self._dirty_pages:
            dirty, entries, starts = self._dirty_pages, install.entries, install.starts
            todo = [i for i in todo if not any(page in dirty for page in range(
                starts[i] & ~(PAGE - 1), starts[i] + entries[i][4], PAGE))]
        if not todo:
            return
        entries = install.entries
        first = self._new_stubs([install.code_address + entries[i][1] for i in todo],
                                [install.starts[i] for i in todo], [entries[i][4] for i in todo], SOURCE_CACHE,
                                [-1] * len(todo), bytes(install.starts[i] in install.partial for i in todo))
        # Blocks with no code at all (their first instruction is untranslatable) go straight to the fallback.
        self._fallback_only.update(a for a in install.untranslated if start <= a < end)
        install.stub_ranges.append((first, len(todo)))
        starts, stubs, mask, table, chunk = install.starts, install.stubs, rt.CHUNK - 1, None, -1
        for k, i in enumerate(todo):
            stubs[i] = first + k
            address = starts[i]
            if address >> rt.CHUNK_SHIFT != chunk:
                chunk = address >> rt.CHUNK_SHIFT
                table = self._table(chunk, True)
            table[address & mask] = first + k
        self.stats["cache_blocks_installed"] += len(todo)
        # Link the exits of the installed blocks whose targets are installed too.
        lo_code = install.code_address + entries[todo[0]][1]
        last = entries[todo[-1]]
        hi_code = install.code_address + last[1] + last[2]
        code = bytearray(ctypes.string_at(lo_code, hi_code - lo_code))
        if self._link(lo_code, code, (install.starts[0], install.starts[-1] + 1)):
            ctypes.memmove(lo_code, bytes(code), len(code))
        self._guard(start, end)

    def _link(self, address: int, code: bytearray, direct: tuple[int, int] | None) -> int:
        """Patch each exit of ``code`` (to be placed at ``address``) whose target has a stub into a ``b``.

        The branch goes to the target's stub (which counts), or, without block counting,
        straight to the target's code when the target is in ``direct`` (the same cached
        module, which is only ever retired whole) or is a JIT block (whose retirement
        patches its first instruction).
        """
        linked = 0
        tables, stub_base, mask = self._l2, self.layout.stubs, rt.CHUNK - 1
        slots, sources, dispatch = self.slots, self.stub_source, self.layout.dispatch
        lo, hi = direct or (0, 0)
        for tail, literal in rt.linkable_exits(code):
            target = int.from_bytes(code[literal:literal + 8], "little")
            table = tables.get(target >> rt.CHUNK_SHIFT)
            stub = table[target & mask] if table is not None else 0
            if not stub:
                continue
            destination = stub_base + rt.STUB_SIZE * stub
            if self._direct_links and (lo <= target < hi or sources[stub] == SOURCE_JIT):
                destination = slots[2 * stub + 1]
                if destination == dispatch:
                    continue
            distance = destination - (address + tail)
            if -(1 << 27) <= distance < (1 << 27):
                code[tail:tail + 4] = (0x14000000 | (distance >> 2) & 0x3FFFFFF).to_bytes(4, "little")
                linked += 1
        self.stats["exits_linked"] += linked
        return linked

    # -- state -------------------------------------------------------------------------

    def reset_thread(self, pc: int, sp: int) -> None:
        # The x86 engine holds the x87/SSE state the fallback uses: a Linux process's, not unicorn's.
        self.fallback.reset_thread(pc, sp)
        struct.pack_into("<16Q", self.state, abi.GPR_OFFSET, *[sp if n == _RSP else 0 for n in range(16)])
        struct.pack_into("<QQQQQQQQ", self.state, abi.RIP_OFFSET, pc, _RFLAGS_FIXED, 0, 0, 0, 1, 0, 0)
        # A new image starts with MXCSR 0x1F80 (FPCR 0: round to nearest) and zeroed XMM registers.
        struct.pack_into("<I", self.state, abi.MXCSR_OFFSET, 0x1F80)
        self.state[abi.XMM_OFFSET:abi.XMM_OFFSET + 256] = bytes(256)
        self.uc.reg_write(UC_ARM64_REG_FPCR, 0)
        self._fallback_mxcsr = 0x1F80
        # and a Linux process's x87 state: control word 0x37F, every register empty (as the x86 engine's).
        self.state[abi.X87_REGS_OFFSET:abi.X87_REGS_OFFSET + abi.X87_SIZE] = _X87_RESET
        self._fallback_x87 = _X87_RESET
        self._fs_dirty = True

    def read_register(self, name: str) -> int:
        if name in _GPR_INDEX:
            return struct.unpack_from("<Q", self.state, abi.GPR_OFFSET + 8 * _GPR_INDEX[name])[0]
        if name == "rflags":
            pf, af, nzcv = struct.unpack_from("<QQQ", self.state, abi.PF_SRC_OFFSET)
            (df,) = struct.unpack_from("<Q", self.state, abi.DF_OFFSET)
            return rflags_of(nzcv, pf, af, df)
        return struct.unpack_from("<Q", self.state, _FIELD_OFFSETS[name])[0]

    def write_register(self, name: str, value: int) -> None:
        value &= _MASK64
        if name in _GPR_INDEX:
            struct.pack_into("<Q", self.state, abi.GPR_OFFSET + 8 * _GPR_INDEX[name], value)
        elif name == "rflags":
            nzcv, pf, af, df = flags_of(value)
            struct.pack_into("<QQQQ", self.state, abi.DF_OFFSET, df, pf, af, nzcv)
        else:
            struct.pack_into("<Q", self.state, _FIELD_OFFSETS[name], value)
            self._fs_dirty = True

    # -- running -----------------------------------------------------------------------

    def run(self) -> None:
        self._stop_requested = False
        self._fault = None
        self._bad_access = None
        try:
            self.uc.emu_start(self.layout.a64_entry, _UNTIL_NEVER)
        except unicorn.UcError as e:
            raise self._a64_fault(e.errno) from None
        if self._fault is not None:
            raise self._fault
        if not self._stop_requested:
            raise EngineFault(signal.SIGSEGV, "execution stopped unexpectedly", self.read_register("rip"))

    def stop(self) -> None:
        self._stop_requested = True
        self.uc.emu_stop()
        if self._in_fallback:
            self.fallback.uc.emu_stop()

    def _raise_in_hook(self, fault: EngineFault) -> None:
        self._fault = fault
        self._stop_requested = True
        self.uc.emu_stop()

    def _on_interrupt(self, uc, intno, _user_data) -> None:
        (kind,) = struct.unpack_from("<Q", self.state, rt.EXIT_KIND_OFFSET)
        struct.pack_into("<Q", self.state, rt.EXIT_KIND_OFFSET, 0)
        if intno != _EXCP_SWI or kind == 0:
            pc = self._guest_pc(uc.reg_read(UC_ARM64_REG_PC))
            self._raise_in_hook(EngineFault(signal.SIGILL, f"unexpected AArch64 exception {intno}", pc))
            return
        self.stats["exits_to_runtime"] += 1
        (rip,) = struct.unpack_from("<Q", self.state, abi.RIP_OFFSET)
        if kind == rt.EXIT_KIND_MISS:
            self._miss(rip)
            return
        (reason,) = struct.unpack_from("<I", self.state, abi.EXIT_REASON_OFFSET)
        self.stats[f"exit.{_REASON_NAMES.get(reason, reason)}"] += 1
        if reason == abi.ExitReason.SYSCALL:
            self._syscall(rip)
        elif reason == abi.ExitReason.UNTRANSLATABLE:
            self._fallback(rip)
        elif reason == abi.ExitReason.CPUID:
            gpr = list(_GPR.unpack_from(self.state, abi.GPR_OFFSET))
            r = self.cpuid.query(gpr[_RAX] & 0xFFFFFFFF, gpr[_RCX] & 0xFFFFFFFF)
            gpr[_RAX], gpr[_RBX], gpr[_RCX], gpr[_RDX] = r.eax, r.ebx, r.ecx, r.edx
            _GPR.pack_into(self.state, abi.GPR_OFFSET, *gpr)
        elif reason == abi.ExitReason.RDTSC:
            tsc = time.perf_counter_ns() * 3
            struct.pack_into("<Q", self.state, abi.GPR_OFFSET + 8 * _RAX, tsc & 0xFFFFFFFF)
            struct.pack_into("<Q", self.state, abi.GPR_OFFSET + 8 * _RDX, (tsc >> 32) & 0xFFFFFFFF)
        elif reason in _FAULTS:
            signo, what = _FAULTS[abi.ExitReason(reason)]
            self._raise_in_hook(EngineFault(signo, what, rip))
        else:
            self._raise_in_hook(EngineFault(signal.SIGILL, f"unknown exit reason {reason}", rip))

    def _syscall(self, rip: int) -> None:
        gpr = _GPR.unpack_from(self.state, abi.GPR_OFFSET)
        result = self.on_syscall(gpr[_RAX], (gpr[_RDI], gpr[_RSI], gpr[_RDX], gpr[_R10], gpr[_R8], gpr[_R9]))
        # The syscall instruction leaves the return address in rcx and RFLAGS in r11.
        struct.pack_into("<Q", self.state, abi.GPR_OFFSET + 8 * _RCX, rip)
        struct.pack_into("<Q", self.state, abi.GPR_OFFSET + 8 * _R11, self.read_register("rflags"))
        if result is not None:
            struct.pack_into("<Q", self.state, abi.GPR_OFFSET + 8 * _RAX, result & _MASK64)

    # -- misses: the JIT ----------------------------------------------------------------

    def _miss(self, rip: int) -> None:
        if rip in self._fallback_only:
            self.stats["miss.untranslatable"] += 1
            self._fallback(rip)
            return
        m = self._mapping(rip)
        if m is None or not m[2] & uc_const.UC_PROT_EXEC:
            what = "jump to unmapped address" if m is None else "jump to non-executable address"
            self._raise_in_hook(EngineFault(signal.SIGSEGV, f"{what} {rip:#x}", rip))
            return
        self.stats[f"miss.{self._miss_reason(rip)}"] += 1
        started = time.perf_counter()
        data = ctypes.string_at(rip, min(MAX_JIT_INSTRUCTIONS * 15, m[1] - rip))
        length = _block_length(data, rip, MAX_JIT_INSTRUCTIONS)
        result = translate_block(GuestCode(0, ((rip, data),)), rip, length, self.tso) if length else None
        self.stats["jit_seconds"] += time.perf_counter() - started
        self.stats["jit_translations"] += 1
        if result is None or not result.code:
            self._fallback_only.add(rip)
            self._fallback(rip)
            return
        self._install_jit(rip, result)

    def _miss_reason(self, rip: int) -> str:
        if rip in self._invalidated:
            return "invalidated"
        found = self.module_map.lookup(rip) if self.module_map is not None else None
        if found is None or found[0].module.anonymous:
            return "anonymous-memory"
        region = found[0]
        if self.finder is None:
            return "no-cache"
        for (_, load_base), install in self._installs.items():
            if load_base == region.load_base and install.name == region.module.name:
                return "not-in-cache"
        return "no-cache"

    def _install_jit(self, rip: int, result) -> None:
        code = bytearray(result.code)
        for offset, address in result.literals:
            struct.pack_into("<Q", code, offset, address & _MASK64)
        address = self._alloc_code(len(code))
        self._link(address, code, None)
        ctypes.memmove(address, bytes(code), len(code))
        stub = self._new_stubs([address], [rip], [result.guest_size], SOURCE_JIT, [result.guest_instructions],
                               bytes([result.stop is not None]))
        self._set(rip, stub)
        for page in range(rip & ~(PAGE - 1), rip + result.guest_size, PAGE):
            self._page_stubs[page].add(stub)
        self._guard(rip, rip + result.guest_size)

    # -- the fallback: the x86 reference engine ---------------------------------------

    def _fallback(self, rip: int) -> None:
        """Run guest code from ``rip`` on the x86 engine until it reaches a block that has (or can get) a
        translation of its own, then come back.

        Code that needs the fallback often loops (SSE2 string routines): staying on the x86
        engine through blocks known to be untranslatable saves a round trip per iteration.
        """
        m = self._mapping(rip)
        if m is None or not m[2] & uc_const.UC_PROT_EXEC:
            what = "jump to unmapped address" if m is None else "jump to non-executable address"
            self._raise_in_hook(EngineFault(signal.SIGSEGV, f"{what} {rip:#x}", rip))
            return
        x86 = self.fallback.uc
        pf, af, nzcv = struct.unpack_from("<QQQ", self.state, abi.PF_SRC_OFFSET)
        (df,) = struct.unpack_from("<Q", self.state, abi.DF_OFFSET)
        struct.pack_into("<Q", self.state, abi.RFLAGS_OFFSET, rflags_of(nzcv, pf, af, df))
        if self._fs_dirty:
            fs_base, gs_base = struct.unpack_from("<QQ", self.state, abi.FS_BASE_OFFSET)
            x86.reg_write(UC_X86_REG_FS_BASE, fs_base)
            x86.reg_write(UC_X86_REG_GS_BASE, gs_base)
            self._fs_dirty = False
        # Translated code keeps the guest's MXCSR in the state block (ldmxcsr, docs/abi.md): the x86
        # engine must round as the guest asked.  Written only when it changed (a register write costs µs).
        (mxcsr,) = struct.unpack_from("<I", self.state, abi.MXCSR_OFFSET)
        if mxcsr != self._fallback_mxcsr:
            x86.reg_write(UC_X86_REG_MXCSR, mxcsr)
            self._fallback_mxcsr = mxcsr
        x87 = bytes(self.state[abi.X87_REGS_OFFSET:abi.X87_REGS_OFFSET + abi.X87_SIZE])
        if x87 != self._fallback_x87:
            x86.reg_write_batch(x87_to_registers(x87))
            self._fallback_x87 = x87
        self._fallback_touched_x87 = False
        self.fallback._bad_access = None
        self.fallback._interrupt = None
        self.fallback._stop_requested = False
        self._fallback_first = True
        self._fallback_stop_at = None
        self._in_fallback = True
        self.stats["fallback_runs"] += 1
        try:
            x86.emu_start(self.layout.x86_entry, _UNTIL_NEVER)
            if self._stop_requested:
                return  # the guest exited or exec'd during a system call on the x86 engine
            if self.fallback._interrupt is not None:
                from fexaot_tool.runtime.x86 import _SIGNAL_OF_VECTOR
                signo, what = _SIGNAL_OF_VECTOR.get(self.fallback._interrupt, (signal.SIGSEGV, "interrupt"))
                self._raise_in_hook(EngineFault(signo, what, x86.reg_read(UC_X86_REG_RIP)))
                return
            if self._fallback_stop_at is None:
                self._raise_in_hook(EngineFault(signal.SIGSEGV, "the x86 engine stopped unexpectedly",
                                                x86.reg_read(UC_X86_REG_RIP)))
                return
            x86.emu_start(self.layout.x86_spill_entry, self.layout.x86_spill_end)
        except unicorn.UcError as e:
            self._raise_in_hook(self.fallback._fault(e.errno))
            return
        finally:
            self._in_fallback = False
        if self._fallback_touched_x87:
            x87 = x87_from_engine(x86)
            self.state[abi.X87_REGS_OFFSET:abi.X87_REGS_OFFSET + abi.X87_SIZE] = x87
            self._fallback_x87 = x87
        (rflags,) = struct.unpack_from("<Q", self.state, abi.RFLAGS_OFFSET)
        nzcv, pf, af, df = flags_of(rflags)
        struct.pack_into("<QQQQ", self.state, abi.DF_OFFSET, df, pf, af, nzcv)
        struct.pack_into("<Q", self.state, abi.RIP_OFFSET, self._fallback_stop_at)

    def _on_x86_block(self, uc, address, size, _user_data) -> None:
        """Each x86 block of a fallback run: go on if it needs the fallback too, else stop before it."""
        if not self._in_fallback or self.layout.infra <= address < self.layout.infra + rt.INFRA_SIZE:
            return
        if not self._fallback_first:
            stub = self.lookup(address) if address not in self._fallback_only else 0
            if address not in self._fallback_only and not (stub and self.stub_partial[stub]):
                self._fallback_stop_at = address
                uc.emu_stop()
                return
        self._fallback_first = False
        key = (address, size)
        facts = self._x86_blocks.get(key)
        if facts is None:
            decoded = list(iced_x86.Decoder(64, ctypes.string_at(address, size), ip=address))
            facts = self._x86_blocks[key] = (len(decoded), any(is_x87(ins) for ins in decoded))
        instructions, touches_x87 = facts
        if touches_x87:
            self._fallback_touched_x87 = True
        self.stats["fallback_blocks"] += 1
        self.stats["fallback_instructions"] += instructions
        if self._counting:
            self._fallback_counts[key] += 1

    # -- faults ------------------------------------------------------------------------

    def _on_bad_access(self, uc, access, address, size, value, _user_data) -> bool:
        self._bad_access = (access, address)
        return False

    def _a64_fault(self, error: int) -> EngineFault:
        from fexaot_tool.runtime.x86 import _ACCESS_NAMES

        pc = self._guest_pc(self.uc.reg_read(UC_ARM64_REG_PC))
        if self._bad_access is not None:
            access, address = self._bad_access
            return EngineFault(signal.SIGSEGV, f"{_ACCESS_NAMES.get(access, 'bad access to')} {address:#x}", pc)
        return EngineFault(signal.SIGSEGV, str(unicorn.UcError(error)), pc)

    def _guest_pc(self, host_pc: int) -> int:
        """The guest RIP of the block whose code holds ``host_pc`` (its start), or ``host_pc`` itself."""
        best, best_code = host_pc, -1
        for stub in range(1, self.stub_count):
            code = self.slots[2 * stub + 1]
            if best_code < code <= host_pc:
                best, best_code = self.stub_rip[stub], code
        return best

    # -- counting ----------------------------------------------------------------------

    def _harvest(self) -> list[BlockCount]:
        """Block executions since the last harvest, from the stubs' counters; also adds them to the statistics."""
        n = self.stub_count
        current = self.slots[0:2 * n:2].tolist()
        seen = self._seen_counts
        out = []
        for stub, (now, before) in enumerate(zip(current, seen)):
            if now == before:
                continue
            delta = now - before
            seen[stub] = now
            rip, size = self.stub_rip[stub], self.stub_size[stub]
            instructions = self.stub_instructions[stub]
            if instructions < 0:
                instructions = _count_instructions(rip, size) if self._mapping(rip) is not None else 0
                self.stub_instructions[stub] = instructions
            source = _SOURCE_NAMES[self.stub_source[stub]]
            self.stats[f"{source}_blocks"] += delta
            self.stats[f"{source}_instructions"] += delta * instructions
            out.append(BlockCount(rip, size, delta))
        for (rip, size), count in self._fallback_counts.items():
            out.append(BlockCount(rip, size, count))
        self._fallback_counts.clear()
        return out

    def enable_block_counting(self) -> None:
        # Counts need every block entry to pass a stub, linked exits too (~30% slower, measured).
        self._counting = True
        self._direct_links = False

    def take_block_counts(self) -> list[BlockCount]:
        if not self._counting:
            return []
        out, self._pending_counts = self._pending_counts + self._harvest(), []
        return out

    def statistics(self) -> Counter[str]:
        """What this engine did since the last call (then reset), for --stats."""
        if self._counting:
            self._pending_counts += self._harvest()
        out, self.stats = self.stats, Counter()
        return out

    def close(self) -> None:
        if self.finder is not None:
            self.finder.close()
        self.fallback.close()
        self.uc = None  # type: ignore[assignment]
        self.state.release()
        self.l1.release()
        self.slots.release()
        for table in self._l2.values():
            table.release()
        for area in self._areas:
            area.close()


def _block_length(data: bytes, rip: int, limit: int) -> int:
    """Bytes from ``rip`` to the end of the first control-flow instruction (or ``limit`` instructions)."""
    length = 0
    for n, ins in enumerate(iced_x86.Decoder(64, data, ip=rip)):
        if ins.is_invalid:
            return length or len(data)  # the translator reports the undecodable bytes
        length = ins.next_ip - rip
        if ins.flow_control != iced_x86.FlowControl.NEXT or ins.mnemonic in _STOPS_FALLBACK or n + 1 >= limit:
            break
    return length


def _count_instructions(rip: int, size: int) -> int:
    data = ctypes.string_at(rip, size)
    return sum(1 for _ in iced_x86.Decoder(64, data, ip=rip))



# The x86 engine's registers holding the x87 state (physical registers, like the state block's).
_X87_UC_REGS = [UC_X86_REG_FP0 + i for i in range(8)]
_X87_RESET = abi.X87Image(empty=0xFF).pack()  # a Linux process's: control word 0x37F, every register empty


def x87_to_registers(image: bytes) -> list[tuple[int, object]]:
    """(unicorn register, value) pairs that give the x86 engine the x87 state of a state-block image."""
    x87 = abi.X87Image.unpack(image)
    tags = sum(3 << 2 * i for i in range(8) if x87.empty >> i & 1)
    return [*zip(_X87_UC_REGS, x87.regs), (UC_X86_REG_FPCW, x87.cw), (UC_X86_REG_FPSW, x87.sw | x87.top << 11),
            (UC_X86_REG_FPTAG, tags)]


def x87_from_engine(uc) -> bytes:
    """The state-block image of the x86 engine's x87 state."""
    sw, tags, cw = (uc.reg_read(r) for r in (UC_X86_REG_FPSW, UC_X86_REG_FPTAG, UC_X86_REG_FPCW))
    empty = sum(1 << i for i in range(8) if tags >> 2 * i & 3 == 3)
    return abi.X87Image(tuple(uc.reg_read(reg) for reg in _X87_UC_REGS), sw >> 11 & 7, cw, sw & 0xC7FF,
                        empty).pack()
