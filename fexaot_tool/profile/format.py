"""The profile file, format v1: which guest blocks ran, and how many times, per module (FileId).

Written by ``fexaot run --profile-out``, combined by ``fexaot profile merge``,
read by ``fexaot profile show`` and by the compiler's speed-profile filter.
docs/profiles.md is this page as prose; the layout, all little-endian:

    header (48 bytes)
      0  8  magic          b"FXPROF\\r\\n" (the CR LF catches text-mode mangling)
      8  2  version        1
     10  2  header_size    48
     12  4  module_count
     16  8  file_size      the whole file, in bytes
     24  8  string_size    bytes of the string table
     32  8  checksum       xxh3_64 of every byte after the header
     40  8  reserved       0
    module table: module_count entries of 48 bytes, sorted by file_id, unique
      0  8  file_id        FileId (cache.key): the high 64 bits of content_hash
      8 16  content_hash   xxh3_128 of the ELF file's content, canonical form
     24  4  name_offset    into the string table
     28  4  name_size
     32  8  block_count
     40  8  blocks_offset  from the start of the file, 8-byte aligned
    string table: module names (basenames, UTF-8), then zero padding to 8 bytes
    block arrays: per module, block_count entries of 16 bytes, sorted by vaddr, unique
      0  8  vaddr          block start in the ELF file's own p_vaddr space (load base removed)
      8  8  count          executions, at least 1

A block start is where the engine that recorded the profile began a block:
for the x86 reference engine, a unicorn translation block (which also splits
after ``rep`` string instructions and at page ends).  Counts are unsigned
64-bit; a merge that would overflow one is an error.

Writing is deterministic (same profile, same bytes).  Reading checks the
magic, version, sizes, order and checksum, and any problem is a
:class:`CorruptProfileError` naming the file.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass

import xxhash

from fexaot_tool.errors import FexaotError

MAGIC = b"FXPROF\r\n"
VERSION = 1
_HEADER = struct.Struct("<8sHHIQQQQ")  # 48 bytes
_MODULE = struct.Struct("<Q16sIIQQ")  # 48 bytes
_BLOCK = struct.Struct("<QQ")  # 16 bytes
MAX_COUNT = (1 << 64) - 1


class CorruptProfileError(FexaotError):
    """Bytes that are not a profile this version can read."""


class ProfileMergeError(FexaotError):
    """Profiles that cannot be combined (the same FileId with two contents, a counter overflow)."""


@dataclass(frozen=True)
class ModuleProfile:
    """The blocks of one module that ran: ``blocks`` is ((vaddr, count), ...) sorted by vaddr."""

    file_id: int
    content_hash: bytes
    name: str
    blocks: tuple[tuple[int, int], ...]

    @property
    def executions(self) -> int:
        return sum(count for _, count in self.blocks)

    def counts(self) -> dict[int, int]:
        return dict(self.blocks)


@dataclass(frozen=True)
class Profile:
    """Modules sorted by FileId."""

    modules: tuple[ModuleProfile, ...]

    def module(self, file_id: int) -> ModuleProfile | None:
        return next((m for m in self.modules if m.file_id == file_id), None)


def make_module(file_id: int, content_hash: bytes, name: str, counts: Mapping[int, int]) -> ModuleProfile:
    """A :class:`ModuleProfile` from a {vaddr: count} mapping (zero counts left out)."""
    if len(content_hash) != 16:
        raise ValueError("content_hash must be 16 bytes")
    if any(c < 0 or c > MAX_COUNT for c in counts.values()):
        raise ProfileMergeError(name, "a block count does not fit in 64 bits")
    return ModuleProfile(file_id, content_hash, name, tuple(sorted((v, c) for v, c in counts.items() if c)))


def make_profile(modules) -> Profile:
    ordered = sorted(modules, key=lambda m: m.file_id)
    for a, b in zip(ordered, ordered[1:]):
        if a.file_id == b.file_id:
            raise ValueError(f"FileId {a.file_id:016x} appears twice")
    return Profile(tuple(ordered))


def encode(profile: Profile) -> bytes:
    names = bytearray()
    name_spans = []
    for m in profile.modules:
        raw = m.name.encode("utf-8", "surrogateescape")
        name_spans.append((len(names), len(raw)))
        names += raw
    names += bytes(-len(names) % 8)
    offset = _HEADER.size + _MODULE.size * len(profile.modules) + len(names)
    table = bytearray()
    arrays = bytearray()
    for m, (name_offset, name_size) in zip(profile.modules, name_spans):
        table += _MODULE.pack(m.file_id, m.content_hash, name_offset, name_size, len(m.blocks), offset)
        for vaddr, count in m.blocks:
            arrays += _BLOCK.pack(vaddr, count)
        offset += _BLOCK.size * len(m.blocks)
    body = bytes(table + names + arrays)
    header = _HEADER.pack(MAGIC, VERSION, _HEADER.size, len(profile.modules), _HEADER.size + len(body),
                          len(names), xxhash.xxh3_64_intdigest(body), 0)
    return header + body


def decode(data: bytes, name: str = "profile") -> Profile:
    def corrupt(problem: str) -> CorruptProfileError:
        return CorruptProfileError(name, f"not a valid fexaot profile: {problem}")

    if len(data) < _HEADER.size:
        raise corrupt(f"{len(data)} bytes, shorter than the {_HEADER.size}-byte header")
    magic, version, header_size, module_count, file_size, string_size, checksum, _ = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise corrupt("bad magic")
    if version != VERSION:
        raise CorruptProfileError(name, f"profile format version {version}; this fexaot reads version {VERSION}")
    if header_size != _HEADER.size or file_size != len(data):
        raise corrupt(f"header says {file_size} bytes, file has {len(data)} (truncated or padded)")
    if xxhash.xxh3_64_intdigest(memoryview(data)[_HEADER.size:]) != checksum:
        raise corrupt("checksum mismatch")
    strings_at = _HEADER.size + _MODULE.size * module_count
    arrays_at = strings_at + string_size
    if arrays_at > len(data) or string_size % 8:
        raise corrupt("module table or string table runs past the end")
    modules = []
    expected_offset = arrays_at
    previous_id = -1
    for i in range(module_count):
        file_id, content_hash, name_offset, name_size, block_count, blocks_offset = _MODULE.unpack_from(
            data, _HEADER.size + i * _MODULE.size)
        if file_id <= previous_id:
            raise corrupt("modules not sorted by FileId")
        if file_id != int.from_bytes(content_hash[:8], "big"):
            raise corrupt(f"FileId {file_id:016x} is not the high half of its content hash")
        if name_offset + name_size > string_size:
            raise corrupt(f"module {file_id:016x}: name outside the string table")
        if blocks_offset != expected_offset or blocks_offset + block_count * _BLOCK.size > len(data):
            raise corrupt(f"module {file_id:016x}: block array misplaced")
        module_name = bytes(data[strings_at + name_offset:strings_at + name_offset + name_size]).decode(
            "utf-8", "surrogateescape")
        blocks = tuple(_BLOCK.iter_unpack(data[blocks_offset:blocks_offset + block_count * _BLOCK.size]))
        if any(count == 0 for _, count in blocks) or any(a[0] >= b[0] for a, b in zip(blocks, blocks[1:])):
            raise corrupt(f"module {file_id:016x}: blocks not sorted and unique, or a zero count")
        modules.append(ModuleProfile(file_id, content_hash, module_name, blocks))
        expected_offset = blocks_offset + block_count * _BLOCK.size
        previous_id = file_id
    if expected_offset != len(data):
        raise corrupt("bytes after the last block array")
    return Profile(tuple(modules))


def read_profile(path: str) -> Profile:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise CorruptProfileError(path, f"cannot read: {e.strerror}") from None
    return decode(data, path)
