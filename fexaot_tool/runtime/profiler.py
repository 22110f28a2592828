"""The block profiler: engine block counts, attributed to modules.

The engine's hot path only counts (start, size) pairs.  The profiler takes
those counts whenever executable memory is about to change (munmap,
mprotect, execve, exit) and attributes them with the module map as it is at
that moment, so every block is named by the file it ran from, even if that
file is unmapped later.  Instructions per block are counted once per distinct
block by decoding its bytes (iced-x86) while they are still mapped.
"""

from __future__ import annotations

import iced_x86

from fexaot_tool.runtime import host
from fexaot_tool.runtime.engine import Engine
from fexaot_tool.runtime.modules import ModuleMap
from fexaot_tool.runtime.stats import ModuleRecord, RunRecord


class BlockProfiler:
    def __init__(self, module_map: ModuleMap, record: RunRecord):
        self.module_map = module_map
        self.record = record
        self._instructions: dict[tuple[int, int], int] = {}  # (address, size) -> instructions

    def collect(self, engine: Engine) -> None:
        """Attribute the engine's counts since the last call, with the module map as it is now."""
        pending: dict[object, ModuleRecord] = {}
        for block in engine.take_block_counts():
            found = self.module_map.lookup(block.address)
            if found is None:
                self.record.unattributed += block.count
                continue
            region, vaddr = found
            record = pending.get(region.module)
            if record is None:
                module = region.module
                if module.anonymous:
                    record = ModuleRecord(module.name, module.guest_path, None, None, None, 0)
                else:
                    identity = self.module_map.identity(module)
                    record = ModuleRecord(module.name, module.guest_path, module.host_path, identity.file_id,
                                          identity.content_hash, region.load_base)
                pending[module] = record
            record.blocks[vaddr] += block.count
            record.instructions += block.count * self._instruction_count(block.address, block.size)
        for record in pending.values():
            self.record.add_module(record)

    def forget_code(self, start: int, end: int) -> None:
        """The bytes in [start, end) are about to change: their decoded counts no longer hold."""
        stale = [key for key in self._instructions if start <= key[0] < end]
        for key in stale:
            del self._instructions[key]

    def _instruction_count(self, address: int, size: int) -> int:
        n = self._instructions.get((address, size))
        if n is None:
            n = sum(1 for _ in iced_x86.Decoder(64, host.read_memory(address, size), ip=address))
            self._instructions[(address, size)] = n
        return n
