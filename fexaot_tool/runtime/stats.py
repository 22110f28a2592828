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

from fexaot_tool.cache.reader import REJECT_REASONS as _REJECT_REASONS
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
    engine: Counter[str] = field(default_factory=Counter)  # engine-specific counters (the a64 engine's)

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
        self.engine.update(other.engine)

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
            **({"a64": a64_section(self.engine)} if engine == "a64" else {}),
        }

    # -- hand-over from a forked child to its parent -----------------------------------------

    def to_part(self) -> bytes:
        return json.dumps({
            "format": _PART_FORMAT,
            "syscalls": dict(self.syscalls),
            "processes": self.processes,
            "execs": self.execs,
            "unattributed": self.unattributed,
            "engine": dict(self.engine),
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
        record = cls(Counter(doc["syscalls"]), {}, doc["processes"], doc["execs"], doc["unattributed"],
                     Counter(doc.get("engine", {})))
        for m in doc["modules"]:
            record.add_module(ModuleRecord(
                m["name"], m["guest_path"], m["host_path"], m["file_id"],
                bytes.fromhex(m["content_hash"]) if m["content_hash"] else None, m["load_base"],
                Counter({v: c for v, c in m["blocks"]}), m["instructions"]))
        return record


def a64_section(counters: Counter[str]) -> dict:
    """The ``a64`` part of the statistics: where guest instructions ran, translation and cache costs, misses.

    Instructions from cache and JIT are counted by the block stubs (one counter
    per installed block, times the block's instruction count); fallback
    instructions by the runtime as it runs them on the x86 engine.
    """
    sources = {s: {"blocks": int(counters.get(f"{s}_blocks", 0)),
                   "instructions": int(counters.get(f"{s}_instructions", 0))} for s in ("cache", "jit", "fallback")}
    total = sum(s["instructions"] for s in sources.values())
    for s in sources.values():
        s["share"] = round(s["instructions"] / total, 6) if total else 0.0
    exits = int(counters.get("exits_to_runtime", 0))
    return {
        "executed": sources,
        "guest_instructions": total,
        "exits_to_runtime": exits,
        "exits_per_million_instructions": round(exits * 1e6 / total, 1) if total else None,
        "exits_by_reason": {k[5:]: int(v) for k, v in sorted(counters.items()) if k.startswith("exit.")},
        "misses_by_reason": {k[5:]: int(v) for k, v in sorted(counters.items()) if k.startswith("miss.")},
        "jit": {"translations": int(counters.get("jit_translations", 0)),
                "seconds": round(counters.get("jit_seconds", 0.0), 6)},
        "cache": {"load_seconds": round(counters.get("cache_load_seconds", 0.0), 6),
                  "modules_loaded": int(counters.get("cache_modules_loaded", 0)),
                  "blocks_installed": int(counters.get("cache_blocks_installed", 0)),
                  "rejected": {k[6:]: int(v) for k, v in sorted(counters.items())
                               if k.startswith("cache_") and k[6:] in _REJECT_REASONS}},
        "exits_linked": int(counters.get("exits_linked", 0)),
        "self_modifying_code": {"pages_write_protected": int(counters.get("pages_write_protected", 0)),
                                "code_page_writes": int(counters.get("code_page_writes", 0)),
                                "jit_blocks_invalidated": int(counters.get("jit_blocks_invalidated", 0))},
    }


def part_path(target: str, pid: int) -> str:
    """Where process ``pid`` of a run leaves its record for its parent (next to the run's output)."""
    directory, name = os.path.split(os.path.abspath(target))
    return os.path.join(directory, f".{name}.{pid}.fexaot-part")
