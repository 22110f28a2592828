"""What a profile says, for people: modules by executions, and each module's hottest blocks."""

from __future__ import annotations

from dataclasses import dataclass

from fexaot_tool.profile.format import ModuleProfile, Profile


@dataclass(frozen=True)
class HotBlock:
    vaddr: int
    count: int
    share: float  # of the module's executions


@dataclass(frozen=True)
class ModuleSummary:
    module: ModuleProfile
    executions: int
    share: float  # of the whole profile's executions
    hottest: tuple[HotBlock, ...]


def summarize(profile: Profile, top: int) -> tuple[ModuleSummary, ...]:
    """Modules sorted by executions (then FileId), each with its ``top`` hottest blocks (then by vaddr)."""
    total = sum(m.executions for m in profile.modules) or 1
    out = []
    for m in profile.modules:
        executions = m.executions
        ranked = sorted(m.blocks, key=lambda b: (-b[1], b[0]))[:top]
        hottest = tuple(HotBlock(v, c, c / (executions or 1)) for v, c in ranked)
        out.append(ModuleSummary(m, executions, executions / total, hottest))
    out.sort(key=lambda s: (-s.executions, s.module.file_id))
    return tuple(out)
