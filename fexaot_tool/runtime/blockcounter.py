"""A native block-count hook: the profiler's hot path without a Python call per block.

Unicorn calls a block hook before every guest block it executes: ~12 M times
for ``python3 -c 'import json, re'``.  A Python callback costs ~0.3 µs a call
(docs/runtime.md); this hook is twelve x86-64 instructions that append
``size << 48 | address`` to a buffer and, when the buffer is nearly full, stop
the engine (a tail call to ``uc_emu_stop``) so the engine can drain it with
one C-speed ``Counter.update`` and resume.  The host is x86-64 (the runtime
maps x86-64 guest memory at the same addresses), so the hook is x86-64 code,
placed in its own read+execute page of the host process.

The hook's data block, four u64 at ``control``:

    0  pos        where the next entry goes
    8  hard_end   never write at or past this (the engine stops before it)
   16  soft_end   after writing here or beyond, call uc_emu_stop
   24  emu_stop   the address of uc_emu_stop(uc_engine *)

A stop requested from a block hook takes effect before that block's
instructions run: unicorn checks for it after the hook, at the block's start.
So the entry that filled the buffer is for a block that has not run yet and
will be hooked (and counted) again when the engine resumes there; draining
after such a stop drops it (:meth:`NativeBlockCounter.drain_after_stop`).
tests/test_runtime_parts.py checks the counts against an engine that never stops.
The hard end is a guard only: no entry is written past it.
"""

from __future__ import annotations

import ctypes
from array import array
from collections import Counter

from fexaot_tool.runtime import host

# uc_cb_hookcode_t(uc_engine *uc /* rdi */, uint64_t address /* rsi */, uint32_t size /* edx */,
#                  void *user_data /* rcx */), System V x86-64 calling convention.
HOOK_CODE = bytes.fromhex(
    "488b01"        # mov  rax, [rcx]            ; pos
    "483b4108"      # cmp  rax, [rcx+8]          ; hard_end
    "7318"          # jae  stop                  ; no room: never write out of bounds
    "48c1e230"      # shl  rdx, 48               ; size in bits 48..63 (upper garbage of edx shifts out)
    "4809f2"        # or   rdx, rsi              ; | address (user addresses fit in 47 bits)
    "488910"        # mov  [rax], rdx
    "4883c008"      # add  rax, 8
    "488901"        # mov  [rcx], rax
    "483b4110"      # cmp  rax, [rcx+16]         ; soft_end
    "7301"          # jae  stop
    "c3"            # ret
    "ff6118"        # stop: jmp [rcx+24]         ; tail call uc_emu_stop(uc), rdi is still uc
)
ENTRIES = 1 << 20  # 8 MiB of entries between drains; at least 2, or the block that fills it would never run
SLACK = 1 << 12  # entries past soft_end that blocks still running after a stop request may use
_MASK48 = (1 << 48) - 1


class NativeBlockCounter:
    """The buffer, the control block and the executable hook for one engine."""

    def __init__(self, emu_stop_address: int):
        self.buffer = (ctypes.c_uint64 * (ENTRIES + SLACK))()
        self.control = (ctypes.c_uint64 * 4)()
        base = ctypes.addressof(self.buffer)
        self.control[0] = base
        self.control[1] = base + 8 * (ENTRIES + SLACK)
        self.control[2] = base + 8 * ENTRIES
        self.control[3] = emu_stop_address
        page = host.page_up(len(HOOK_CODE))
        address = host.mmap(0, page, host.PROT_READ | host.PROT_WRITE, host.MAP_PRIVATE | host.MAP_ANONYMOUS)
        if address < 0:
            raise OSError(-address, "cannot map the block-count hook")
        host.write_memory(address, HOOK_CODE)
        if host.mprotect(address, page, host.PROT_READ | host.PROT_EXEC) < 0:
            raise OSError("cannot make the block-count hook executable")
        self.hook_address = address
        self._page = page
        self.counts: Counter[int] = Counter()

    @property
    def user_data(self) -> int:
        return ctypes.addressof(self.control)

    @property
    def pending(self) -> int:
        return (self.control[0] - ctypes.addressof(self.buffer)) // 8

    @property
    def full(self) -> bool:
        return self.control[0] >= self.control[2]

    def drain(self) -> None:
        """Move the buffered entries into :attr:`counts` (keys ``size << 48 | address``)."""
        n = self.pending
        if n:
            entries = array("Q")
            entries.frombytes(ctypes.string_at(ctypes.addressof(self.buffer), 8 * n))
            self.counts.update(entries)
            self.control[0] = ctypes.addressof(self.buffer)

    def drain_after_stop(self) -> None:
        """Drain after the hook stopped the engine: the last entry's block has not run yet."""
        if self.control[0] == self.control[2]:
            self.control[0] -= 8
        self.drain()

    def take(self) -> list[tuple[int, int, int]]:
        """(address, size, count) for every block counted since the last call."""
        self.drain()
        out = [(key & _MASK48, key >> 48, n) for key, n in self.counts.items()]
        self.counts.clear()
        return out

    def close(self) -> None:
        host.munmap(self.hook_address, self._page)
