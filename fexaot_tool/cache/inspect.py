"""Describe a cache file for people (rich) and for machines (JSON).

:func:`summarize` reads an open :class:`CacheFile` into a :class:`CacheSummary`;
:func:`as_json` and :func:`render` only present it.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich import box
from rich.console import Console
from rich.table import Table

from fexaot_tool.cache.format import SectionKind
from fexaot_tool.cache.reader import CacheFile
from fexaot_tool.elf.reader import ET_DYN, ET_EXEC

_E_TYPES = {ET_EXEC: "ET_EXEC", ET_DYN: "ET_DYN"}


@dataclass(frozen=True)
class SectionSummary:
    kind: SectionKind
    size: int  # bytes
    entries: int | None  # None for STRINGS and CODE


@dataclass(frozen=True)
class ModuleSummary:
    name: str
    file_id: int
    content_hash: bytes
    file_size: int  # of the ELF file
    e_type: int
    e_entry: int
    image_base: int
    build_id: bytes
    region_offset: int
    region_size: int
    sections: tuple[SectionSummary, ...]


@dataclass(frozen=True)
class CacheSummary:
    path: str
    format_version: int
    config_id: int
    filter: str
    file_size: int
    verified: bool  # True when every section entry was checked too (verify_all)
    modules: tuple[ModuleSummary, ...]


def summarize(cache: CacheFile, *, verified: bool = False) -> CacheSummary:
    """Summarize every module (each module's region checksum is checked on the way)."""
    modules = []
    for m in (cache.module(e.file_id) for e in cache.modules):
        sections = tuple(SectionSummary(s.kind, s.size, s.count) for s in m.sections)
        e = m.entry
        modules.append(ModuleSummary(m.name, e.file_id, e.content_hash, e.file_size, m.facts.e_type,
                                     m.facts.e_entry, m.facts.image_base, m.facts.build_id,
                                     e.region_offset, e.region_size, sections))
    return CacheSummary(cache.path, cache.format_version, cache.config_id, cache.filter.label,
                        cache.file_size, verified, tuple(modules))


def as_json(summary: CacheSummary) -> dict:
    """A JSON-ready dict; 64-bit ids and hashes are lower-case hex strings."""
    return {
        "path": summary.path,
        "format_version": summary.format_version,
        "config_id": f"{summary.config_id:016x}",
        "filter": summary.filter,
        "file_size": summary.file_size,
        "verified": summary.verified,
        "modules": [
            {
                "name": m.name,
                "file_id": f"{m.file_id:016x}",
                "content_hash": m.content_hash.hex(),
                "file_size": m.file_size,
                "e_type": _E_TYPES.get(m.e_type, m.e_type),
                "e_entry": f"{m.e_entry:#x}",
                "image_base": f"{m.image_base:#x}",
                "build_id": m.build_id.hex() or None,
                "region_offset": m.region_offset,
                "region_size": m.region_size,
                "sections": {s.kind.label: {"bytes": s.size, "entries": s.entries} for s in m.sections},
            }
            for m in summary.modules
        ],
    }


def render(summary: CacheSummary, console: Console) -> None:
    checks = "every entry checked" if summary.verified else "checksums checked"
    console.print(f"[bold]{summary.path}[/bold]", highlight=False)
    console.print(f"  format v{summary.format_version}, ConfigId {summary.config_id:016x}, filter {summary.filter}",
                  highlight=False)
    console.print(f"  {summary.file_size:,} bytes, {len(summary.modules)} module(s), {checks}", highlight=False)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("module", no_wrap=True)
    table.add_column("FileId", no_wrap=True)
    table.add_column("ELF bytes", justify="right", no_wrap=True)
    table.add_column("sections (entries or bytes)")
    for m in summary.modules:
        sections = ", ".join(
            f"{s.kind.label} {s.entries:,}" if s.entries is not None else f"{s.kind.label} {s.size:,} B"
            for s in m.sections
        )
        table.add_row(m.name, f"{m.file_id:016x}", f"{m.file_size:,}", sections)
    console.print(table)
