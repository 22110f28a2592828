"""Cache file format v1: constants, fixed-size structs and per-section entry records.

docs/cache-format.md is the byte-by-byte specification; this module is its
executable form and follows it table for table.  Everything is little-endian
and fixed-size, so a reader can ``mmap`` a file and index into it without
parsing what it does not use.

A file is::

    file header (64 bytes) | module table (64 bytes per module) | zero padding to a page
    module region 0 (page-aligned, a multiple of PAGE_SIZE bytes)
    module region 1 ...

and a module region is::

    module header (352 bytes) | section directory (6 x 24 bytes)
    CODEMAP | BLOCK_INDEX | RELOCATIONS | UNTRANSLATABLE | STRINGS   (each 8-aligned)
    CODE (page-aligned) | zero padding to a page

All offsets inside a region are relative to the region's start, so a bundle is
made by copying regions byte for byte.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import xxhash

from fexaot_tool.elf.reader import PT_LOAD, ElfInfo

MAGIC = b"FEXAOTC\0"
FORMAT_VERSION = 1

# 4 KiB is the x86-64 page and the smallest AArch64 page.  A runtime on a
# 16 KiB or 64 KiB page kernel cannot map CODE straight from the file and
# copies it instead; a larger alignment would make every small cache 64 KiB.
PAGE_SIZE = 4096
# Entry sections hold u64 fields; 8-byte alignment lets a runtime read them in place.
SECTION_ALIGN = 8

# File header.  Magic and format version stay at these offsets in every
# version, so any reader can tell "not a cache" from "a cache of another version".
HEADER = struct.Struct("<8sHBBIQQQQQQ")
HEADER_CHECKSUMMED = 56  # header_checksum covers header bytes [0, 56)
assert HEADER.size == 64

# Module table entry.
MODULE_ENTRY = struct.Struct("<Q16sQQQQQ")
assert MODULE_ENTRY.size == 64

# Module region: module header, then the section directory.
MODULE_MAGIC = b"FXMD"
MODULE_HEADER = struct.Struct("<4sIQ16sQQQHBBI32s256s")
assert MODULE_HEADER.size == 352
MAX_BUILD_ID = 32
MAX_NAME = 255  # NAME_MAX on Linux; the 256-byte field always keeps a NUL

SECTION_ENTRY = struct.Struct("<IIQQ")
assert SECTION_ENTRY.size == 24


def align_up(value: int, alignment: int) -> int:
    return (value + alignment - 1) // alignment * alignment


def checksum(data: bytes | bytearray | memoryview) -> int:
    """The format's checksum: xxh3_64, seed 0 (header, module table, each region)."""
    return xxhash.xxh3_64_intdigest(data)


class Filter(enum.IntEnum):
    """Which blocks a cache holds (after Android ART's compiler filters).

    Recorded in the header; not part of ConfigId, because it changes which
    blocks are present, not whether present code is valid.
    """

    VERIFY = 1  # no translated code: the codemap only
    SPEED_PROFILE = 2  # the blocks a profile saw run
    SPEED = 3  # every block the codemap knows

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")

    @classmethod
    def from_label(cls, label: str) -> Filter:
        for f in cls:
            if f.label == label:
                return f
        raise ValueError(f"unknown filter {label!r} (choose {', '.join(f.label for f in cls)})")


class SectionKind(enum.IntEnum):
    """Sections of a module region, in directory (and layout) order."""

    CODEMAP = 1
    BLOCK_INDEX = 2
    RELOCATIONS = 3
    UNTRANSLATABLE = 4
    STRINGS = 5
    CODE = 6

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")


SECTION_COUNT = len(SectionKind)
REGION_FIXED_SIZE = MODULE_HEADER.size + SECTION_COUNT * SECTION_ENTRY.size  # where sections may start


@dataclass(frozen=True)
class ElfFacts:
    """What a module header records about its ELF file besides its identity."""

    e_type: int
    e_entry: int
    image_base: int  # lowest PT_LOAD p_vaddr, page-aligned; guest offsets are relative to it
    build_id: bytes = b""

    @classmethod
    def from_elf(cls, info: ElfInfo) -> ElfFacts:
        base = min(s.p_vaddr for s in info.segments if s.p_type == PT_LOAD) & ~(PAGE_SIZE - 1)
        return cls(info.e_type, info.e_entry, base, info.build_id or b"")


# --- Section entry records -------------------------------------------------------
#
# Each entry section is an array of one fixed-size record, sorted by its first
# field with no duplicates, so a runtime binary-searches it in place.  Kind,
# reason and seed values are assigned by the layer that produces them
# (discover, translate); the format only reserves 0 as invalid where noted.
# ``STRUCT`` includes the reserved fields (written as zero); ``from_fields``
# takes one ``STRUCT.unpack`` tuple and drops them.


@dataclass(frozen=True)
class CodemapEntry:
    """One guest basic block found by static discovery (fexaot_tool.discover.Block)."""

    start: int  # guest offset from the image base
    length: int  # bytes of guest code
    instruction_count: int
    reasons: int  # why the block was found: fexaot_tool.discover.Reason bits
    flags: int  # facts about the block: fexaot_tool.discover.Flag bits

    STRUCT = struct.Struct("<QIIII")  # start, length, instruction_count, reasons, flags

    def pack(self) -> bytes:
        return self.STRUCT.pack(self.start, self.length, self.instruction_count, self.reasons, self.flags)

    @classmethod
    def from_fields(cls, fields: tuple) -> CodemapEntry:
        return cls(*fields)


@dataclass(frozen=True)
class BlockIndexEntry:
    """One translated block: where its guest code is and where its AArch64 code is."""

    guest_offset: int  # from the image base
    code_offset: int  # into CODE
    code_size: int
    guest_hash: int  # xxh3_64 of the guest bytes the code was made from
    guest_size: int

    STRUCT = struct.Struct("<QIIQII")  # guest_offset, code_offset, code_size, guest_hash, guest_size, reserved

    def pack(self) -> bytes:
        return self.STRUCT.pack(self.guest_offset, self.code_offset, self.code_size,
                                self.guest_hash, self.guest_size, 0)

    @classmethod
    def from_fields(cls, fields: tuple) -> BlockIndexEntry:
        return cls(*fields[:5])


@dataclass(frozen=True)
class Relocation:
    """A place in CODE the runtime patches when it installs the code."""

    code_offset: int  # into CODE
    kind: int  # assigned by the translator; 0 is invalid
    addend: int  # signed

    STRUCT = struct.Struct("<IHHq")  # code_offset, kind, reserved, addend

    def pack(self) -> bytes:
        return self.STRUCT.pack(self.code_offset, self.kind, 0, self.addend)

    @classmethod
    def from_fields(cls, fields: tuple) -> Relocation:
        return cls(fields[0], fields[1], fields[3])


@dataclass(frozen=True)
class Untranslatable:
    """A block the translator could not translate, and why."""

    guest_offset: int  # from the image base
    guest_size: int
    reason: int  # assigned by the translator; 0 is invalid
    detail_offset: int  # UTF-8 text in STRINGS (e.g. the instruction)
    detail_size: int

    STRUCT = struct.Struct("<QIHHII")  # guest_offset, guest_size, reason, reserved, detail_offset, detail_size

    def pack(self) -> bytes:
        return self.STRUCT.pack(self.guest_offset, self.guest_size, self.reason, 0,
                                self.detail_offset, self.detail_size)

    @classmethod
    def from_fields(cls, fields: tuple) -> Untranslatable:
        return cls(fields[0], fields[1], fields[2], fields[4], fields[5])


Record = CodemapEntry | BlockIndexEntry | Relocation | Untranslatable

# Entry record of each entry section; STRINGS and CODE are plain bytes.
RECORDS: dict[SectionKind, type[Record]] = {
    SectionKind.CODEMAP: CodemapEntry,
    SectionKind.BLOCK_INDEX: BlockIndexEntry,
    SectionKind.RELOCATIONS: Relocation,
    SectionKind.UNTRANSLATABLE: Untranslatable,
}
assert [r.STRUCT.size for r in RECORDS.values()] == [24, 32, 16, 24]


def entry_size(kind: SectionKind) -> int:
    """Bytes per entry of a section, 0 for the byte sections (STRINGS, CODE)."""
    record = RECORDS.get(kind)
    return record.STRUCT.size if record else 0


def pack_section(kind: SectionKind, records: Iterable[Record]) -> bytes:
    """Encode records of one entry section (the caller sorts them)."""
    expected = RECORDS[kind]
    out = bytearray()
    for r in records:
        if type(r) is not expected:
            raise TypeError(f"{kind.label} section takes {expected.__name__}, not {type(r).__name__}")
        out += r.pack()
    return bytes(out)


def unpack_section(kind: SectionKind, data: bytes | memoryview) -> Iterator[Record]:
    """Decode an entry section (no checks; see section_problem)."""
    record = RECORDS[kind]
    for fields in record.STRUCT.iter_unpack(data):
        yield record.from_fields(fields)


# Per-entry checks on raw STRUCT tuples (a section of a big library has ~10^5
# entries; building a record object for each would triple the cost).
def _codemap_problem(f: tuple, code_size: int, strings_size: int) -> str | None:
    _start, length, _count, _reasons, _flags = f
    if length == 0:
        return "has length 0"
    return None


def _block_index_problem(f: tuple, code_size: int, strings_size: int) -> str | None:
    _guest_offset, code_offset, size, _hash, guest_size, reserved = f
    if reserved:
        return "has a nonzero reserved field"
    if code_offset + size > code_size:
        return f"code [{code_offset:#x}, +{size:#x}) is outside CODE ({code_size:#x} bytes)"
    if guest_size == 0:
        return "has an empty guest range"
    return None


def _relocation_problem(f: tuple, code_size: int, strings_size: int) -> str | None:
    code_offset, kind, reserved, _addend = f
    if reserved:
        return "has a nonzero reserved field"
    if kind == 0:
        return "has kind 0"
    if code_offset >= code_size:
        return f"offset {code_offset:#x} is outside CODE ({code_size:#x} bytes)"
    return None


def _untranslatable_problem(f: tuple, code_size: int, strings_size: int) -> str | None:
    _guest_offset, _guest_size, reason, reserved, detail_offset, detail_size = f
    if reserved:
        return "has a nonzero reserved field"
    if reason == 0:
        return "has reason 0"
    if detail_offset + detail_size > strings_size:
        return f"detail is outside STRINGS ({strings_size:#x} bytes)"
    return None


_ENTRY_PROBLEM = {
    SectionKind.CODEMAP: _codemap_problem,
    SectionKind.BLOCK_INDEX: _block_index_problem,
    SectionKind.RELOCATIONS: _relocation_problem,
    SectionKind.UNTRANSLATABLE: _untranslatable_problem,
}


def section_problem(kind: SectionKind, data: bytes | memoryview, code_size: int, strings_size: int) -> str | None:
    """What is wrong with one section's contents, or None.

    Shared by the writer (which refuses to write a bad section) and the reader's
    full verification: entries sorted by their first field without duplicates,
    reserved fields zero, and every reference inside CODE or STRINGS.
    """
    record = RECORDS.get(kind)
    if record is None:
        return None
    size = record.STRUCT.size
    if len(data) % size:
        return f"{kind.label} is {len(data)} bytes, not a multiple of its {size}-byte entries"
    entry_problem = _ENTRY_PROBLEM[kind]
    previous = -1
    for i, fields in enumerate(record.STRUCT.iter_unpack(data)):
        if fields[0] <= previous:
            return f"{kind.label} entry {i} is out of order ({fields[0]:#x} after {previous:#x})"
        previous = fields[0]
        problem = entry_problem(fields, code_size, strings_size)
        if problem:
            return f"{kind.label} entry {i} {problem}"
    return None
