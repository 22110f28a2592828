"""What one run did: blocks and instructions per module, system calls by name, wall time.

A run may be a tree of processes (a shell forks, the child execs ``gzip``).
Each process keeps a :class:`RunRecord`; a forked child hands its record to
its parent through a small JSON part file when it exits, and the parent adds
it to its own, so the first process writes the statistics and the profile of
the whole tree.  Counts add, so the order children finish in does not matter.

``--stats FILE`` is :meth:`RunRecord.stats_document`, format
``fexaot-run-stats`` version 1 (docs/runtime.md lists its fields).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field

from fexaot_tool.profile import Profile, make_module, make_profile

STATS_FORMAT = "fexaot-run-stats"
STATS_VERSION = 1
_PART_FORMAT = "fexaot-run-part"


@dataclass
class ModuleRecord:
    name: str
    guest_path: str
    host_path: str | None
    file_id: int | None  # None for anonymous memory
    content_hash: bytes | None
    load_base: int
    blocks: Counter[int] = field(default_factory=Counter)
    instructions: int = 0

    @property
    def key(self) -> str:
        return f"{self.file_id:016x}" if self.file_id is not None else self.guest_path

    def add(self, other: ModuleRecord) -> None:
        self.blocks.update(other.blocks)
        self.instructions += other.instructions
        if other.guest_path < self.guest_path:
            self.guest_path, self.host_path, self.name = other.guest_path, other.host_path, other.name


@dataclass
class RunRecord:
    syscalls: Counter[str] = field(default_factory=Counter)
    modules: dict[str, ModuleRecord] = field(default_factory=dict)
    processes: int = 1
    execs: int = 0
    unattributed: int = 0

    def add_module(self, module: ModuleRecord) -> None:
        mine = self.modules.get(module.key)
        if mine is None:
            self.modules[module.key] = ModuleRecord(module.name, module.guest_path, module.host_path,
                                                    module.file_id, module.content_hash, module.load_base,
                                                    Counter(module.blocks), module.instructions)
        else:
            mine.add(module)

    def add(self, other: RunRecord) -> None:
        self.syscalls.update(other.syscalls)
        for module in other.modules.values():
            self.add_module(module)
        self.processes += other.processes
        self.execs += other.execs
        self.unattributed += other.unattributed

    def profile(self) -> Profile:
        return make_profile(make_module(m.file_id, m.content_hash, m.name, m.blocks)
                            for m in self.modules.values() if m.file_id is not None and m.content_hash)

    def stats_document(self, *, program: str, argv: list[str], rootfs: str, engine: str,
                       exit_status: int | None, fault: str | None, wall_seconds: float) -> dict:
        modules = sorted(self.modules.values(), key=lambda m: (-sum(m.blocks.values()), m.key))
        return {
            "format": STATS_FORMAT,
            "version": STATS_VERSION,
            "program": program,
            "argv": argv,
            "rootfs": rootfs,
            "engine": engine,
            "exit_status": exit_status,
            "fault": fault,
            "wall_seconds": round(wall_seconds, 6),
            "processes": self.processes,
            "execs": self.execs,
            "totals": {
                "block_executions": sum(sum(m.blocks.values()) for m in modules),
                "distinct_blocks": sum(len(m.blocks) for m in modules),
                "instructions": sum(m.instructions for m in modules),
                "system_calls": sum(self.syscalls.values()),
                "unattributed_block_executions": self.unattributed,
            },
            "modules": [{
                "name": m.name,
                "guest_path": m.guest_path,
                "host_path": m.host_path,
                "file_id": f"{m.file_id:016x}" if m.file_id is not None else None,
                "load_base": f"{m.load_base:#x}",
                "distinct_blocks": len(m.blocks),
                "block_executions": sum(m.blocks.values()),
                "instructions": m.instructions,
            } for m in modules],
            "system_calls": dict(sorted(self.syscalls.items(), key=lambda kv: (-kv[1], kv[0]))),
        }

    # -- hand-over from a forked child to its parent -----------------------------------------

    def to_part(self) -> bytes:
        return json.dumps({
            "format": _PART_FORMAT,
            "syscalls": dict(self.syscalls),
            "processes": self.processes,
            "execs": self.execs,
            "unattributed": self.unattributed,
            "modules": [{
                "name": m.name, "guest_path": m.guest_path, "host_path": m.host_path, "file_id": m.file_id,
                "content_hash": m.content_hash.hex() if m.content_hash else None, "load_base": m.load_base,
                "instructions": m.instructions, "blocks": sorted(m.blocks.items()),
            } for m in self.modules.values()],
        }).encode()

    @classmethod
    def from_part(cls, data: bytes) -> RunRecord:
        doc = json.loads(data)
        if doc.get("format") != _PART_FORMAT:
            raise ValueError("not a run part file")
        record = cls(Counter(doc["syscalls"]), {}, doc["processes"], doc["execs"], doc["unattributed"])
        for m in doc["modules"]:
            record.add_module(ModuleRecord(
                m["name"], m["guest_path"], m["host_path"], m["file_id"],
                bytes.fromhex(m["content_hash"]) if m["content_hash"] else None, m["load_base"],
                Counter({v: c for v, c in m["blocks"]}), m["instructions"]))
        return record


def part_path(target: str, pid: int) -> str:
    """Where process ``pid`` of a run leaves its record for its parent (next to the run's output)."""
    directory, name = os.path.split(os.path.abspath(target))
    return os.path.join(directory, f".{name}.{pid}.fexaot-part")
