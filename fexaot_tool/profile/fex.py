"""FEX-Emu code maps as profiles: read FEX's code-map files and attribute its FileIds to rootfs files.

FEX-Emu records, while it runs a program, which guest blocks it compiled, in
"code map" files (FEXCore's ``CodeMap`` in ``FEXCore/include/FEXCore/Core/CodeCache.h``,
written by ``CodeMapWriter``).  A file is a sequence of packed little-endian
records; the base record is 12 bytes:

    Entry        { u64 file_id; u32 block_offset }      a block FEX compiled

with ``file_id`` = ~0 reserved for markers, each followed by more data:

    block_offset 0xffffffff   library load: u64 file_id, the file's path as FEX saw
                              it (NUL-terminated), zero padding so the record
                              (12 + 8 + path + NUL) ends on a 4-byte boundary
    block_offset 0xffffffef   main executable, 64-bit: u64 file_id
    block_offset 0xffffffee   main executable, 32-bit: u64 file_id
    block_offset 0xfffffffe   main executable (the earlier variant, bitness not
                              recorded): u64 file_id

FEX's FileId is a *path* hash, ``XXH3_64(path)`` of the file name it opened,
not a content hash like fexaot's; ``block_offset`` is the block's address
minus the address the file's first mapping starts at.  A FEX writer emits a
library-load record the first time it meets a FileId, so every id normally
has its path; ids that do not (a truncated file, a writer that lost it) are
attributed by hashing the guest paths of the rootfs's files.

This module only parses and attributes; it does not know the rootfs or the
ELF format: :func:`import_code_maps` gets them as functions, so the profile
layer keeps importing nothing but ``errors`` and xxhash (docs/profiles.md).
FEX records no counts: a block's count in the imported profile is the number
of code-map files (runs) that name it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import xxhash

from fexaot_tool.errors import FexaotError
from fexaot_tool.profile.format import ModuleProfile, Profile, make_module, make_profile

MARKER_ID = 0xFFFF_FFFF_FFFF_FFFF
LOAD_LIBRARY = 0xFFFF_FFFF
EXECUTABLE_64 = 0xFFFF_FFEF
EXECUTABLE_32 = 0xFFFF_FFEE
EXECUTABLE_UNSPECIFIED = 0xFFFF_FFFE  # before FEX recorded the executable's bitness
_ENTRY = struct.Struct("<QI")
_ID = struct.Struct("<Q")


class CodeMapError(FexaotError):
    """A code-map file that cannot be read (a marker that is cut off or unknown)."""


@dataclass
class CodeMap:
    """What one code-map file says: paths and blocks per FEX FileId, and the main executable."""

    source: str
    paths: dict[int, str] = field(default_factory=dict)
    blocks: dict[int, set[int]] = field(default_factory=dict)
    executable: int | None = None
    executable_bits: int | None = None  # 64, 32, or None when the file does not say
    truncated: bool = False  # the file ended inside a record (a writer killed mid-write)


def fex_file_id(path: str) -> int:
    """FEX's FileId of a file it opened as ``path`` (FEXCore ``CodeCache::ComputeCodeMapId``)."""
    return xxhash.xxh3_64_intdigest(path.encode())


def parse_code_map(data: bytes, source: str = "code map") -> CodeMap:
    """Parse one code-map file.  A record cut off at the end is dropped (``truncated``); a marker
    FEX does not write is a :class:`CodeMapError` naming ``source`` and the offset."""
    out = CodeMap(source)
    at = 0
    end = len(data)
    while at < end:
        if at + _ENTRY.size > end:
            out.truncated = True
            break
        file_id, offset = _ENTRY.unpack_from(data, at)
        at += _ENTRY.size
        if file_id != MARKER_ID:
            out.blocks.setdefault(file_id, set()).add(offset)
            continue
        if offset == LOAD_LIBRARY:
            nul = data.find(b"\0", at + _ID.size)
            if at + _ID.size > end or nul < 0:
                out.truncated = True
                break
            (library,) = _ID.unpack_from(data, at)
            path = data[at + _ID.size:nul].decode("utf-8", "surrogateescape")
            record_end = at - _ENTRY.size + -(-(_ENTRY.size + _ID.size + len(path.encode("utf-8", "surrogateescape"))
                                                + 1) // 4) * 4
            if record_end > end:
                out.truncated = True
                break
            out.paths[library] = path
            at = record_end
        elif offset in (EXECUTABLE_64, EXECUTABLE_32, EXECUTABLE_UNSPECIFIED):
            if at + _ID.size > end:
                out.truncated = True
                break
            (out.executable,) = _ID.unpack_from(data, at)
            out.executable_bits = {EXECUTABLE_64: 64, EXECUTABLE_32: 32}.get(offset)
            at += _ID.size
        else:
            raise CodeMapError(source, f"unknown code-map marker {offset:#010x} at offset {at - _ENTRY.size}")
    return out


@dataclass(frozen=True)
class ResolvedFile:
    """A FEX-named file found in the rootfs: fexaot's identity and where its first mapping starts."""

    guest_path: str
    file_id: int  # fexaot's (content) FileId
    content_hash: bytes
    name: str  # basename, as in caches and profiles
    first_vaddr: int  # the page-aligned p_vaddr of the first PT_LOAD: FEX's offsets are from there


@dataclass(frozen=True)
class Attribution:
    """How one FEX FileId was matched to a rootfs file (or why not)."""

    fex_id: int
    path: str | None  # the guest path, from a library-load record or the rootfs search
    how: str  # "recorded path", "path hash", or the reason it was not imported
    blocks: int
    file: ResolvedFile | None = None


@dataclass(frozen=True)
class ImportResult:
    profile: Profile
    attributions: tuple[Attribution, ...]
    files_read: int
    truncated: tuple[str, ...]  # code maps that ended inside a record


def import_code_maps(maps: Iterable[CodeMap], resolve: Callable[[str], ResolvedFile | None],
                     candidate_paths: Callable[[], Iterable[str]]) -> ImportResult:
    """Merge code maps into one fexaot profile.

    ``resolve(guest_path)`` gives the rootfs file behind a path FEX saw (None if
    there is none or it is no x86-64 ELF file); ``candidate_paths()`` lists
    guest paths to hash for FileIds with no recorded path (called at most once).
    """
    maps = list(maps)
    paths: dict[int, str] = {}
    runs: dict[int, dict[int, int]] = {}  # fex id -> block offset -> code maps naming it
    bits: dict[int, int | None] = {}
    for m in maps:
        paths.update(m.paths)
        if m.executable is not None:
            bits[m.executable] = m.executable_bits
        for fex_id, offsets in m.blocks.items():
            counts = runs.setdefault(fex_id, {})
            for offset in offsets:
                counts[offset] = counts.get(offset, 0) + 1
    by_hash: dict[int, str] | None = None
    attributions: list[Attribution] = []
    modules: dict[int, ModuleProfile] = {}
    for fex_id in sorted(runs):
        counts = runs[fex_id]
        if bits.get(fex_id) == 32:
            attributions.append(Attribution(fex_id, paths.get(fex_id), "32-bit executable (not x86-64)", len(counts)))
            continue
        path, how = paths.get(fex_id), "recorded path"
        if path is None:
            if by_hash is None:
                by_hash = {}
                for candidate in candidate_paths():
                    by_hash.setdefault(fex_file_id(candidate), candidate)
            path, how = by_hash.get(fex_id), "path hash"
            if path is None:
                attributions.append(Attribution(fex_id, None, "no recorded path and no rootfs path hashes to it",
                                                len(counts)))
                continue
        resolved = resolve(path)
        if resolved is None:
            attributions.append(Attribution(fex_id, path, "not an x86-64 ELF file in the rootfs", len(counts)))
            continue
        blocks = {resolved.first_vaddr + offset: n for offset, n in counts.items()}
        module = modules.get(resolved.file_id)
        if module is not None:  # two FEX names (a link and its target) for one file
            for vaddr, n in module.blocks:
                blocks[vaddr] = blocks.get(vaddr, 0) + n
        modules[resolved.file_id] = make_module(resolved.file_id, resolved.content_hash, resolved.name, blocks)
        attributions.append(Attribution(fex_id, path, how, len(counts), resolved))
    return ImportResult(make_profile(modules.values()), tuple(attributions), len(maps),
                        tuple(m.source for m in maps if m.truncated))


__all__ = ["Attribution", "CodeMap", "CodeMapError", "ImportResult", "ResolvedFile", "fex_file_id",
           "import_code_maps", "parse_code_map"]
