"""Read cache files (format v1, docs/cache-format.md) without trusting them.

:meth:`CacheFile.open` reads and checks the header, then maps the file
read-only and checks the module table (a few hundred bytes in all).  A module's region is checksummed and
its header checked the first time the module is used, so a runtime that needs
one module of a bundle reads only that module.  :meth:`CacheFile.verify_all`
checks everything, down to every section entry.

Every rejection is a :class:`CacheRejected` with one of :data:`REJECT_REASONS`;
a damaged file never causes any other exception.
"""

from __future__ import annotations

import mmap
import os
import stat
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, NamedTuple, get_args

from fexaot_tool.cache.format import (
    FORMAT_VERSION, HEADER, HEADER_CHECKSUMMED, MAGIC, MAX_BUILD_ID, MODULE_ENTRY, MODULE_HEADER,
    MODULE_MAGIC, PAGE_SIZE, RECORDS, REGION_FIXED_SIZE, SECTION_ALIGN, SECTION_COUNT, SECTION_ENTRY,
    BlockIndexEntry, ElfFacts, Filter, Record, SectionKind, align_up, checksum, entry_size,
    section_problem, unpack_section,
)
from fexaot_tool.cache.key import ModuleIdentity, module_identity
from fexaot_tool.errors import FexaotError

RejectReason = Literal[
    "missing",  # no readable regular file at the path
    "bad-magic",  # not a fexaot cache file
    "version",  # a cache of another format version
    "config-mismatch",  # built for another ConfigId than the caller expects
    "content-mismatch",  # the ELF file on the host is not the one the module was built from
    "truncated",  # shorter than its header says
    "checksum",  # a header, table or region checksum does not match: damaged bytes
    "corrupt",  # checksums match but the structure is invalid (offsets, order, reserved fields)
    "not-in-bundle",  # the file does not hold the requested FileId
]
REJECT_REASONS: tuple[str, ...] = get_args(RejectReason)


class CacheRejected(FexaotError):
    """A cache file (or one module of it) that must not be used; the runtime falls back to the JIT."""

    def __init__(self, path: str, reason: RejectReason, detail: str):
        if reason not in REJECT_REASONS:
            raise ValueError(f"unknown rejection reason {reason!r}")
        self.reason = reason
        self.detail = detail
        super().__init__(path, f"cache rejected ({reason}): {detail}")


class _Header(NamedTuple):
    """The file header's fields, in HEADER's order."""

    magic: bytes
    version: int
    filter: int
    reserved: int
    module_count: int
    config_id: int
    table_offset: int
    data_offset: int
    file_size: int
    table_checksum: int
    header_checksum: int


@dataclass(frozen=True)
class ModuleEntry:
    """One row of the module table."""

    file_id: int
    content_hash: bytes
    file_size: int
    region_offset: int
    region_size: int
    region_checksum: int

    @property
    def identity(self) -> ModuleIdentity:
        return ModuleIdentity(self.file_id, self.content_hash, self.file_size)


@dataclass(frozen=True)
class SectionInfo:
    """One section directory entry; ``offset`` is relative to the module region."""

    kind: SectionKind
    offset: int
    size: int
    entry_size: int  # 0 for STRINGS and CODE

    @property
    def count(self) -> int | None:
        """Number of entries, or None for a byte section."""
        return self.size // self.entry_size if self.entry_size else None


class CachedModule:
    """One module of a cache file, after its region checksum and header were checked."""

    def __init__(self, cache_path: str, entry: ModuleEntry, region: memoryview, name: str,
                 facts: ElfFacts, sections: tuple[SectionInfo, ...]):
        self.cache_path = cache_path
        self.entry = entry
        self.name = name
        self.facts = facts
        self.sections = sections  # in SectionKind order
        self._region = region
        self._by_kind = {s.kind: s for s in sections}

    @property
    def identity(self) -> ModuleIdentity:
        return self.entry.identity

    def section_info(self, kind: SectionKind) -> SectionInfo:
        return self._by_kind[kind]

    def section(self, kind: SectionKind) -> memoryview:
        info = self._by_kind[kind]
        return self._region[info.offset:info.offset + info.size]

    def records(self, kind: SectionKind) -> Iterator[Record]:
        """Decode an entry section (CODEMAP, BLOCK_INDEX, RELOCATIONS, UNTRANSLATABLE)."""
        return unpack_section(kind, self.section(kind))

    def find_block(self, guest_offset: int) -> BlockIndexEntry | None:
        """The translated block starting at ``guest_offset`` (from the image base), by binary search."""
        index = self.section(SectionKind.BLOCK_INDEX)
        size = BlockIndexEntry.STRUCT.size
        unpack = BlockIndexEntry.STRUCT.unpack_from
        n = len(index) // size
        i = bisect_left(range(n), guest_offset, key=lambda i: unpack(index, i * size)[0])
        if i < n:
            fields = unpack(index, i * size)
            if fields[0] == guest_offset:
                return BlockIndexEntry.from_fields(fields)
        return None

    def verify(self) -> None:
        """Check every entry of every section (order, reserved fields, references)."""
        code_size = self._by_kind[SectionKind.CODE].size
        strings_size = self._by_kind[SectionKind.STRINGS].size
        for kind in RECORDS:
            problem = section_problem(kind, self.section(kind), code_size, strings_size)
            if problem:
                raise CacheRejected(self.cache_path, "corrupt", f"module {self.name}: {problem}")

    def __repr__(self) -> str:
        return f"<CachedModule {self.name} {self.entry.file_id:016x} in {self.cache_path}>"


class CacheFile:
    """An open, header-validated cache file.  Use :meth:`open`."""

    def __init__(self, path: str, mapping: mmap.mmap, header: _Header, modules: tuple[ModuleEntry, ...]):
        self.path = path
        self._mapping = mapping
        self._data = memoryview(mapping)
        self.format_version = header.version
        self.config_id = header.config_id
        self.filter = Filter(header.filter)
        self.file_size = header.file_size
        self.modules = modules  # the module table, sorted by file_id; nothing of a region is checked yet
        self._loaded: dict[int, CachedModule] = {}

    @classmethod
    def open(cls, path: str | os.PathLike, expect_config_id: int | None = None) -> CacheFile:
        name = os.fspath(path)
        try:
            fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise CacheRejected(name, "missing", "no such file") from None
        except OSError as e:
            raise CacheRejected(name, "missing", f"cannot open: {e.strerror or e}") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise CacheRejected(name, "missing", "not a regular file")
            header = _check_header(name, os.pread(fd, HEADER.size, 0), st.st_size, expect_config_id)
            mapping = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        except OSError as e:
            raise CacheRejected(name, "missing", f"cannot read: {e.strerror or e}") from None
        finally:
            os.close(fd)
        try:
            if len(mapping) != header.file_size:  # cut or grown in place since the fstat
                raise CacheRejected(name, "truncated", f"{len(mapping)} bytes, header says {header.file_size}")
            with memoryview(mapping) as data:
                modules = _check_table(name, data, header)
        except BaseException:
            mapping.close()
            raise
        return cls(name, mapping, header, modules)

    def find(self, file_id: int) -> ModuleEntry | None:
        """The table entry of ``file_id``, by binary search."""
        i = bisect_left(self.modules, file_id, key=lambda e: e.file_id)
        if i < len(self.modules) and self.modules[i].file_id == file_id:
            return self.modules[i]
        return None

    def module(self, file_id: int) -> CachedModule:
        """The module for ``file_id``; its region checksum is verified on first use."""
        loaded = self._loaded.get(file_id)
        if loaded is not None:
            return loaded
        entry = self.find(file_id)
        if entry is None:
            raise CacheRejected(self.path, "not-in-bundle",
                                f"FileId {file_id:016x} is not among its {len(self.modules)} module(s)")
        region = self.region(entry)
        actual = checksum(region)
        if actual != entry.region_checksum:
            raise CacheRejected(self.path, "checksum", f"module {file_id:016x}: region checksum "
                                f"{actual:016x}, table records {entry.region_checksum:016x}")
        module = _parse_module(self.path, entry, region)
        self._loaded[file_id] = module
        return module

    def region(self, entry: ModuleEntry) -> memoryview:
        """The raw bytes of a module region (unchecked; :meth:`module` checks them)."""
        return self._data[entry.region_offset:entry.region_offset + entry.region_size]

    def verify_all(self) -> None:
        """Check every module's checksum, header and section entries."""
        for entry in self.modules:
            self.module(entry.file_id).verify()

    def close(self) -> None:
        self._loaded.clear()
        self._data.release()
        try:
            self._mapping.close()
        except BufferError:
            # A caller still holds a section view; the mapping goes away with the last view.
            pass

    def __enter__(self) -> CacheFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def check_module_matches(module: CachedModule, host_file_path: str | os.PathLike) -> None:
    """Reject ``module`` unless the host file has exactly the content it was built from."""
    actual = module_identity(host_file_path)
    if actual != module.identity:
        raise CacheRejected(
            module.cache_path, "content-mismatch",
            f"module {module.name} was built from FileId {module.identity.file_id:016x} "
            f"({module.identity.size} bytes), but {os.fspath(host_file_path)} is "
            f"FileId {actual.file_id:016x} ({actual.size} bytes)")


def _check_header(path: str, head: bytes, actual_size: int, expect_config_id: int | None) -> _Header:
    """Validate the file header, in an order that names the right reason for any damage.

    Magic and version first (readable in any version), then the header checksum
    before any other field is believed, so a flipped bit reads as "checksum"
    rather than as whatever the flipped field would suggest.
    """
    known = min(len(head), len(MAGIC))
    if head[:known] != MAGIC[:known]:
        raise CacheRejected(path, "bad-magic", f"not a fexaot cache file (starts with {head[:8].hex(' ')})")
    if len(head) < len(MAGIC) + 2:
        raise CacheRejected(path, "truncated", f"{actual_size} bytes, shorter than the {HEADER.size}-byte header")
    version = int.from_bytes(head[8:10], "little")
    if version != FORMAT_VERSION:
        raise CacheRejected(path, "version", f"format version {version}, this reader reads version {FORMAT_VERSION}")
    if len(head) < HEADER.size:
        raise CacheRejected(path, "truncated", f"{actual_size} bytes, shorter than the {HEADER.size}-byte header")
    h = _Header._make(HEADER.unpack(head))
    actual = checksum(head[:HEADER_CHECKSUMMED])
    if actual != h.header_checksum:
        raise CacheRejected(path, "checksum", f"header checksum {actual:016x}, header records {h.header_checksum:016x}")
    if h.reserved:
        raise CacheRejected(path, "corrupt", "nonzero reserved header field")
    if h.filter not in {f.value for f in Filter}:
        raise CacheRejected(path, "corrupt", f"unknown filter {h.filter}")
    if h.module_count == 0:
        raise CacheRejected(path, "corrupt", "no modules")
    if h.table_offset != HEADER.size:
        raise CacheRejected(path, "corrupt", f"module table at {h.table_offset:#x}, expected {HEADER.size:#x}")
    if h.data_offset != align_up(h.table_offset + h.module_count * MODULE_ENTRY.size, PAGE_SIZE):
        raise CacheRejected(path, "corrupt",
                            f"first region at {h.data_offset:#x} does not follow a {h.module_count}-entry table")
    if actual_size < h.file_size:
        raise CacheRejected(path, "truncated", f"{actual_size} bytes, header says {h.file_size}")
    if actual_size > h.file_size:
        raise CacheRejected(path, "corrupt",
                            f"{actual_size - h.file_size} bytes after the end the header records ({h.file_size})")
    if h.data_offset >= h.file_size:
        raise CacheRejected(path, "corrupt", f"first region at {h.data_offset:#x} is at or past the end of the file")
    if expect_config_id is not None and h.config_id != expect_config_id:
        raise CacheRejected(path, "config-mismatch",
                            f"built for ConfigId {h.config_id:016x}, expected {expect_config_id:016x}")
    return h


def _check_table(path: str, data: memoryview, h: _Header) -> tuple[ModuleEntry, ...]:
    """Checksum the module table and check that its regions tile the rest of the file in FileId order."""
    actual = checksum(data[h.table_offset:h.data_offset])
    if actual != h.table_checksum:
        raise CacheRejected(path, "checksum",
                            f"module table checksum {actual:016x}, header records {h.table_checksum:016x}")
    entries: list[ModuleEntry] = []
    expected_offset = h.data_offset
    for i in range(h.module_count):
        (file_id, content_hash, size, region_offset, region_size, region_checksum,
         reserved) = MODULE_ENTRY.unpack_from(data, h.table_offset + i * MODULE_ENTRY.size)
        where = f"module table entry {i}"
        if reserved:
            raise CacheRejected(path, "corrupt", f"{where} has a nonzero reserved field")
        if entries and file_id <= entries[-1].file_id:
            raise CacheRejected(path, "corrupt", f"{where} is not sorted by FileId ({file_id:016x} after {entries[-1].file_id:016x})")
        if file_id != int.from_bytes(content_hash[:8], "big"):
            raise CacheRejected(path, "corrupt", f"{where}: FileId {file_id:016x} is not the high half of its content hash")
        if region_offset != expected_offset:
            raise CacheRejected(path, "corrupt", f"{where}: region at {region_offset:#x}, expected {expected_offset:#x}")
        if region_size < REGION_FIXED_SIZE or region_size % PAGE_SIZE or region_offset + region_size > h.file_size:
            raise CacheRejected(path, "corrupt", f"{where}: region of {region_size:#x} bytes at {region_offset:#x} "
                                                 f"is not whole pages inside the file")
        entries.append(ModuleEntry(file_id, content_hash, size, region_offset, region_size, region_checksum))
        expected_offset = region_offset + region_size
    if expected_offset != h.file_size:
        raise CacheRejected(path, "corrupt", f"regions end at {expected_offset:#x}, the file at {h.file_size:#x}")
    return tuple(entries)


def _parse_module(path: str, entry: ModuleEntry, region: memoryview) -> CachedModule:
    """Check a module header and section directory (the region checksum already matched)."""
    (magic, section_count, file_id, content_hash, file_size, e_entry, image_base, e_type,
     build_id_size, reserved8, reserved32, build_id_field, name_field) = MODULE_HEADER.unpack_from(region)

    def corrupt(problem: str) -> CacheRejected:
        return CacheRejected(path, "corrupt", f"module {entry.file_id:016x}: {problem}")

    if magic != MODULE_MAGIC:
        raise corrupt(f"module header magic {magic.hex()}, expected {MODULE_MAGIC.hex()}")
    if section_count != SECTION_COUNT:
        raise corrupt(f"{section_count} sections, format version {FORMAT_VERSION} has {SECTION_COUNT}")
    if (file_id, content_hash, file_size) != (entry.file_id, entry.content_hash, entry.file_size):
        raise corrupt("module header identity differs from its module table entry")
    if reserved8 or reserved32:
        raise corrupt("nonzero reserved module header field")
    if build_id_size > MAX_BUILD_ID or any(build_id_field[build_id_size:]):
        raise corrupt(f"bad build-id field (size {build_id_size})")
    raw_name, _, name_padding = name_field.partition(b"\0")
    if not raw_name or b"/" in raw_name or any(name_padding):
        raise corrupt("module name is not a NUL-terminated basename")

    sections = []
    previous_end = REGION_FIXED_SIZE
    for i, kind in enumerate(SectionKind):
        k, size_of_entry, offset, size = SECTION_ENTRY.unpack_from(region, MODULE_HEADER.size + i * SECTION_ENTRY.size)
        alignment = PAGE_SIZE if kind is SectionKind.CODE else SECTION_ALIGN
        if k != kind or size_of_entry != entry_size(kind):
            raise corrupt(f"section directory entry {i} is (kind {k}, entry size {size_of_entry}), "
                          f"expected ({kind.value}, {entry_size(kind)}) for {kind.label}")
        if offset % alignment or offset < previous_end or offset + size > len(region):
            raise corrupt(f"{kind.label} section [{offset:#x}, +{size:#x}) is misplaced in a {len(region):#x}-byte region")
        if size_of_entry and size % size_of_entry:
            raise corrupt(f"{kind.label} section of {size} bytes is not whole {size_of_entry}-byte entries")
        sections.append(SectionInfo(kind, offset, size, size_of_entry))
        previous_end = offset + size
    facts = ElfFacts(e_type, e_entry, image_base, bytes(build_id_field[:build_id_size]))
    return CachedModule(path, entry, region, os.fsdecode(raw_name), facts, tuple(sections))
