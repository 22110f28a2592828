"""Write cache files (format v1, docs/cache-format.md): deterministic and atomic.

Deterministic: the bytes depend only on the arguments (modules sorted by
FileId, no timestamps, no host paths; a module's name is a basename).
Atomic: see :mod:`fexaot_tool.cache.atomic`; a reader never sees a torn file.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from fexaot_tool.cache.atomic import Buffer, atomic_write
from fexaot_tool.cache.format import (
    FORMAT_VERSION, HEADER, HEADER_CHECKSUMMED, MAGIC, MAX_BUILD_ID, MAX_NAME, MODULE_ENTRY,
    MODULE_HEADER, MODULE_MAGIC, PAGE_SIZE, REGION_FIXED_SIZE, SECTION_ALIGN, SECTION_COUNT,
    SECTION_ENTRY, ElfFacts, Filter, SectionKind, align_up, checksum, entry_size, section_problem,
)
from fexaot_tool.cache.key import ModuleIdentity
from fexaot_tool.cache.reader import CacheFile
from fexaot_tool.errors import FexaotError


class BundleError(FexaotError):
    """Per-object caches that cannot go into one bundle."""


@dataclass(frozen=True)
class ModuleImage:
    """Everything the writer needs for one module.  Missing sections are empty."""

    identity: ModuleIdentity
    name: str  # basename of the ELF file; never a path
    facts: ElfFacts
    sections: Mapping[SectionKind, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        raw = os.fsencode(self.name)
        if not raw or b"/" in raw or b"\0" in raw or len(raw) > MAX_NAME or raw in (b".", b".."):
            raise ValueError(f"module name must be a file's basename, not {self.name!r}")
        if len(self.facts.build_id) > MAX_BUILD_ID:
            raise ValueError(f"{self.name}: build-id of {len(self.facts.build_id)} bytes (at most {MAX_BUILD_ID})")
        sections = {SectionKind(k): bytes(v) for k, v in self.sections.items()}
        code_size = len(sections.get(SectionKind.CODE, b""))
        strings_size = len(sections.get(SectionKind.STRINGS, b""))
        for kind, data in sections.items():
            problem = section_problem(kind, data, code_size, strings_size)
            if problem:
                raise ValueError(f"{self.name}: {problem}")
        object.__setattr__(self, "sections", MappingProxyType(sections))


def build_region(image: ModuleImage) -> bytes:
    """Lay out one module region: header, section directory, sections, padding to a page."""
    layout: list[tuple[SectionKind, int, bytes]] = []
    offset = REGION_FIXED_SIZE
    for kind in SectionKind:
        data = image.sections.get(kind, b"")
        # CODE is page-aligned so a runtime can map it executable straight from the file.
        offset = align_up(offset, PAGE_SIZE if kind is SectionKind.CODE else SECTION_ALIGN)
        layout.append((kind, offset, data))
        offset += len(data)
    region = bytearray(align_up(offset, PAGE_SIZE))

    identity, facts = image.identity, image.facts
    MODULE_HEADER.pack_into(
        region, 0, MODULE_MAGIC, SECTION_COUNT, identity.file_id, identity.content_hash, identity.size,
        facts.e_entry, facts.image_base, facts.e_type, len(facts.build_id), 0, 0,
        facts.build_id, os.fsencode(image.name),  # struct pads both with NULs
    )
    for i, (kind, offset, data) in enumerate(layout):
        SECTION_ENTRY.pack_into(region, MODULE_HEADER.size + i * SECTION_ENTRY.size,
                                kind, entry_size(kind), offset, len(data))
        region[offset:offset + len(data)] = data
    return bytes(region)


def write_cache(path: str | os.PathLike, config_id: int, filter: Filter,
                modules: Sequence[ModuleImage]) -> None:
    """Write a cache file holding ``modules`` (one for a per-object cache, several for a bundle)."""
    if not modules:
        raise ValueError("a cache file holds at least one module")
    by_id = sorted(modules, key=lambda m: m.identity.file_id)
    for a, b in zip(by_id, by_id[1:]):
        if a.identity.file_id == b.identity.file_id:
            raise ValueError(f"two modules with FileId {a.identity.file_id:016x}: {a.name}, {b.name}")
    _write(path, config_id, filter, [(m.identity, build_region(m)) for m in by_id])


def write_bundle(path: str | os.PathLike, sources: Sequence[str | os.PathLike]) -> None:
    """Combine cache files into one bundle by copying their module regions byte for byte.

    Every source is fully verified first.  All must share one ConfigId and
    filter.  When several sources hold the same FileId, the first source's
    module is kept, so the result depends only on the sources and their order.
    """
    if not sources:
        raise BundleError(os.fspath(path), "a bundle needs at least one source cache")
    with contextlib.ExitStack() as stack:
        caches = [stack.enter_context(CacheFile.open(source)) for source in sources]
        first = caches[0]
        for cache in caches:
            cache.verify_all()
            if (cache.config_id, cache.filter) != (first.config_id, first.filter):
                raise BundleError(
                    cache.path,
                    f"ConfigId {cache.config_id:016x} filter {cache.filter.label} differs from "
                    f"{first.path}'s ConfigId {first.config_id:016x} filter {first.filter.label}; "
                    f"a bundle holds one configuration")
        regions: dict[int, tuple[ModuleIdentity, memoryview]] = {}
        for cache in caches:
            for entry in cache.modules:
                regions.setdefault(entry.file_id, (entry.identity, cache.region(entry)))
        _write(path, first.config_id, first.filter, [regions[file_id] for file_id in sorted(regions)])


def _write(path: str | os.PathLike, config_id: int, filter: Filter,
           rows: Sequence[tuple[ModuleIdentity, Buffer]]) -> None:
    """Assemble header, module table and regions (rows sorted by FileId) and write them."""
    table_offset = HEADER.size
    data_offset = align_up(table_offset + len(rows) * MODULE_ENTRY.size, PAGE_SIZE)
    table = bytearray(data_offset - table_offset)
    offset = data_offset
    for i, (identity, region) in enumerate(rows):
        MODULE_ENTRY.pack_into(table, i * MODULE_ENTRY.size, identity.file_id, identity.content_hash,
                               identity.size, offset, len(region), checksum(region), 0)
        offset += len(region)
    header = bytearray(HEADER.size)
    HEADER.pack_into(header, 0, MAGIC, FORMAT_VERSION, filter, 0, len(rows), config_id,
                     table_offset, data_offset, offset, checksum(table), 0)
    # The header checksum is the header's last field and covers the bytes before it.
    struct.pack_into("<Q", header, HEADER_CHECKSUMMED, checksum(header[:HEADER_CHECKSUMMED]))
    atomic_write(path, [header, table, *(region for _, region in rows)])
