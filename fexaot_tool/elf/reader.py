"""A small, fast reader for x86-64 ELF files: headers, segments, dynamic section.

Only the program-header view is read (what the dynamic loader itself reads), so
scanning a rootfs costs a few ``pread`` calls per file.  Names follow the ELF
specification (``e_entry``, ``PT_INTERP``, ``DT_NEEDED``) and the System V
x86-64 psABI.  Anything that is not a well-formed little-endian ELF64 x86-64
file raises an :class:`ElfError` subclass naming the file and the problem.
"""

from __future__ import annotations

import os
import stat
import struct
from dataclasses import dataclass

from fexaot_tool.errors import FexaotError

# e_ident and header constants (ELF spec, "ELF Header").
ELFMAG = b"\x7fELF"
ELFCLASS32, ELFCLASS64 = 1, 2
ELFDATA2LSB = 1
ET_EXEC, ET_DYN = 2, 3
EM_386, EM_ARM, EM_X86_64, EM_AARCH64, EM_RISCV = 3, 40, 62, 183, 243

# Program header types and flags.
PT_LOAD, PT_DYNAMIC, PT_INTERP, PT_NOTE = 1, 2, 3, 4
PT_GNU_EH_FRAME, PT_GNU_STACK, PT_GNU_RELRO = 0x6474E550, 0x6474E551, 0x6474E552
PF_X, PF_W, PF_R = 1, 2, 4

# Dynamic section tags.
DT_NULL, DT_NEEDED, DT_STRTAB, DT_STRSZ = 0, 1, 5, 10
DT_SONAME, DT_RPATH, DT_FLAGS, DT_RUNPATH = 14, 15, 30, 29
DT_FLAGS_1 = 0x6FFFFFFB
DF_ORIGIN = 0x1
DF_1_NODEFLIB, DF_1_PIE = 0x800, 0x08000000

NT_GNU_BUILD_ID = 3

_MACHINE_NAMES = {
    EM_386: "i386",
    EM_ARM: "ARM",
    EM_X86_64: "x86-64",
    EM_AARCH64: "AArch64",
    EM_RISCV: "RISC-V",
    8: "MIPS",
    20: "PowerPC",
    21: "PowerPC64",
    22: "s390",
}
_TYPE_NAMES = {0: "ET_NONE", 1: "ET_REL (object file)", 2: "ET_EXEC", 3: "ET_DYN", 4: "ET_CORE (core dump)"}

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")  # Elf64_Ehdr, 64 bytes
_PHDR = struct.Struct("<IIQQQQQQ")  # Elf64_Phdr, 56 bytes
_DYN = struct.Struct("<qQ")  # Elf64_Dyn, 16 bytes
_MAX_PHNUM = 4096
_MAX_DYNAMIC = 1 << 20


class ElfError(FexaotError):
    """The file is not an ELF file this tool can read."""


class NotElfError(ElfError):
    """The file does not start with the ELF magic (a script, data, empty file)."""


class UnsupportedElfError(ElfError):
    """A well-formed ELF file for another class, byte order, machine or type."""


class CorruptElfError(ElfError):
    """An ELF file whose headers are truncated or point outside the file."""


@dataclass(frozen=True)
class Segment:
    """One Elf64_Phdr."""

    p_type: int
    p_flags: int
    p_offset: int
    p_vaddr: int
    p_paddr: int
    p_filesz: int
    p_memsz: int
    p_align: int

    @property
    def executable(self) -> bool:
        return bool(self.p_flags & PF_X)


@dataclass(frozen=True)
class ElfInfo:
    """What the loader and the build graph need to know about one ELF file."""

    path: str
    file_size: int
    e_type: int
    e_entry: int
    segments: tuple[Segment, ...]
    interp: str | None = None
    needed: tuple[str, ...] = ()
    soname: str | None = None
    rpath: str | None = None
    runpath: str | None = None
    dt_flags: int = 0
    dt_flags_1: int = 0
    build_id: bytes | None = None

    @property
    def is_dynamic(self) -> bool:
        """True when the file has a PT_DYNAMIC segment (needs or is a shared object)."""
        return any(s.p_type == PT_DYNAMIC for s in self.segments)

    @property
    def kind(self) -> str:
        """'executable', 'static-executable', 'pie', 'static-pie' or 'shared-library'."""
        if self.e_type == ET_EXEC:
            return "executable" if self.interp else "static-executable"
        if self.interp and not self.soname:
            return "pie"
        if self.dt_flags_1 & DF_1_PIE and not self.soname:
            return "static-pie"
        return "shared-library"

    @property
    def load_segments(self) -> tuple[Segment, ...]:
        return tuple(s for s in self.segments if s.p_type == PT_LOAD)

    def vaddr_to_offset(self, vaddr: int) -> int | None:
        """File offset of a virtual address inside a PT_LOAD's file image, or None."""
        for s in self.segments:
            if s.p_type == PT_LOAD and s.p_vaddr <= vaddr < s.p_vaddr + s.p_filesz:
                return vaddr - s.p_vaddr + s.p_offset
        return None


def _describe_non_elf(head: bytes) -> str:
    if not head:
        return "not an ELF file (empty file)"
    if head.startswith(b"#!"):
        return "not an ELF file (a script starting with '#!')"
    if head.startswith(b"!<arch>"):
        return "not an ELF file (an ar archive)"
    return "not an ELF file (no ELF magic number)"


def check_ident(path: str, head: bytes) -> None:
    """Raise unless ``head`` (the first 64 bytes) starts a little-endian ELF64 x86-64 file."""
    if head[:4] != ELFMAG:
        raise NotElfError(path, _describe_non_elf(head))
    if len(head) < 20:
        raise CorruptElfError(path, f"truncated ELF header ({len(head)} bytes, need 64)")
    ei_class, ei_data = head[4], head[5]
    machine = int.from_bytes(head[18:20], "little" if ei_data == ELFDATA2LSB else "big")
    if ei_class != ELFCLASS64:
        bits = "32-bit" if ei_class == ELFCLASS32 else f"unknown class {ei_class}"
        name = _MACHINE_NAMES.get(machine, f"machine {machine}")
        raise UnsupportedElfError(path, f"{bits} ELF file for {name}; only 64-bit x86-64 is supported")
    if ei_data != ELFDATA2LSB:
        raise UnsupportedElfError(path, "big-endian ELF file; only little-endian x86-64 is supported")
    if machine != EM_X86_64:
        name = _MACHINE_NAMES.get(machine, f"machine {machine}")
        raise UnsupportedElfError(path, f"ELF file for {name}, not x86-64")
    if len(head) < _EHDR.size:
        raise CorruptElfError(path, f"truncated ELF header ({len(head)} bytes, need 64)")


def is_x86_64_elf(path: str | os.PathLike) -> bool:
    """Cheap test used when searching directories: is this an ELF64 x86-64 file?"""
    try:
        with open(path, "rb") as f:
            head = f.read(20)
    except OSError:
        return False
    return (
        len(head) == 20
        and head[:4] == ELFMAG
        and head[4] == ELFCLASS64
        and head[5] == ELFDATA2LSB
        and head[18:20] == EM_X86_64.to_bytes(2, "little")
    )


def read_elf(path: str | os.PathLike, display_name: str | None = None) -> ElfInfo:
    """Read the ELF header, program headers, PT_INTERP, PT_NOTE build-id and PT_DYNAMIC.

    ``display_name`` is the name used in error messages (e.g. the path inside a
    rootfs rather than on the host).
    """
    name = display_name or os.fspath(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except IsADirectoryError:
        raise NotElfError(name, "not an ELF file (a directory)") from None
    except OSError as e:
        raise ElfError(name, f"cannot open: {e.strerror}") from None
    try:
        return _read_fd(fd, name)
    except OSError as e:
        raise ElfError(name, f"cannot read: {e.strerror}") from None
    finally:
        os.close(fd)


def _read_fd(fd: int, name: str) -> ElfInfo:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise NotElfError(name, "not an ELF file (not a regular file)")
    size = st.st_size
    head = os.pread(fd, 64, 0)
    check_ident(name, head)
    (_ident, e_type, _machine, _version, e_entry, e_phoff, _shoff, _flags,
     _ehsize, e_phentsize, e_phnum, _shentsize, _shnum, _shstrndx) = _EHDR.unpack(head)
    if e_type not in (ET_EXEC, ET_DYN):
        raise UnsupportedElfError(name, f"ELF type {_TYPE_NAMES.get(e_type, e_type)} is neither an executable nor a shared library")
    if e_phnum == 0:
        raise CorruptElfError(name, "no program headers")
    if e_phentsize != _PHDR.size or e_phnum > _MAX_PHNUM:
        raise CorruptElfError(name, f"bad program header table (e_phentsize={e_phentsize}, e_phnum={e_phnum})")
    ph_size = e_phnum * _PHDR.size
    if e_phoff + ph_size > size:
        raise CorruptElfError(name, f"truncated: program headers end at byte {e_phoff + ph_size}, file has {size}")
    raw = os.pread(fd, ph_size, e_phoff)
    segments = tuple(Segment(*_PHDR.unpack_from(raw, i * _PHDR.size)) for i in range(e_phnum))

    def read_range(what: str, offset: int, length: int) -> bytes:
        if offset + length > size:
            raise CorruptElfError(name, f"truncated: {what} ends at byte {offset + length}, file has {size}")
        return os.pread(fd, length, offset)

    for s in segments:
        if s.p_type == PT_LOAD and s.p_filesz > s.p_memsz:
            raise CorruptElfError(name, f"PT_LOAD at {s.p_vaddr:#x} has p_filesz > p_memsz")
    if not any(s.p_type == PT_LOAD for s in segments):
        raise CorruptElfError(name, "no PT_LOAD segment")

    interp = None
    build_id = None
    dynamic = None
    for s in segments:
        if s.p_type == PT_INTERP:
            data = read_range("PT_INTERP", s.p_offset, s.p_filesz)
            interp = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        elif s.p_type == PT_NOTE and build_id is None:
            build_id = _find_build_id(read_range("PT_NOTE", s.p_offset, min(s.p_filesz, 1 << 16)))
        elif s.p_type == PT_DYNAMIC:
            if s.p_filesz > _MAX_DYNAMIC:
                raise CorruptElfError(name, f"PT_DYNAMIC of {s.p_filesz} bytes is implausibly large")
            dynamic = read_range("PT_DYNAMIC", s.p_offset, s.p_filesz)

    info = dict(path=name, file_size=size, e_type=e_type, e_entry=e_entry,
                segments=segments, interp=interp, build_id=build_id)
    if dynamic is not None:
        info.update(_parse_dynamic(name, dynamic, segments, size, read_range))
    return ElfInfo(**info)


def _find_build_id(notes: bytes) -> bytes | None:
    pos = 0
    while pos + 12 <= len(notes):
        namesz, descsz, ntype = struct.unpack_from("<III", notes, pos)
        name_end = pos + 12 + namesz
        desc_off = pos + 12 + ((namesz + 3) & ~3)
        desc_end = desc_off + descsz
        if desc_end > len(notes):
            return None
        if ntype == NT_GNU_BUILD_ID and notes[pos + 12:name_end] == b"GNU\0":
            return notes[desc_off:desc_end]
        pos = desc_off + ((descsz + 3) & ~3)
    return None


def _parse_dynamic(name, dynamic, segments, size, read_range) -> dict:
    entries = []
    strtab = strsz = None
    for tag, val in _DYN.iter_unpack(dynamic[: len(dynamic) - len(dynamic) % _DYN.size]):
        if tag == DT_NULL:
            break
        if tag == DT_STRTAB:
            strtab = val
        elif tag == DT_STRSZ:
            strsz = val
        entries.append((tag, val))
    string_tags = (DT_NEEDED, DT_SONAME, DT_RPATH, DT_RUNPATH)
    strings = b""
    if any(tag in string_tags for tag, _ in entries):
        if strtab is None or strsz is None:
            raise CorruptElfError(name, "PT_DYNAMIC has string entries but no DT_STRTAB/DT_STRSZ")
        for s in segments:
            if s.p_type == PT_LOAD and s.p_vaddr <= strtab < s.p_vaddr + s.p_filesz:
                off = strtab - s.p_vaddr + s.p_offset
                strings = read_range("dynamic string table", off, min(strsz, s.p_vaddr + s.p_filesz - strtab))
                break
        else:
            raise CorruptElfError(name, f"DT_STRTAB {strtab:#x} is outside every PT_LOAD segment")

    def string(val: int) -> str:
        end = strings.find(b"\0", val)
        if val >= len(strings) or end < 0:
            raise CorruptElfError(name, f"dynamic string offset {val:#x} is outside DT_STRTAB")
        return strings[val:end].decode("utf-8", "surrogateescape")

    needed = []
    out: dict = {}
    for tag, val in entries:
        if tag == DT_NEEDED:
            needed.append(string(val))
        elif tag == DT_SONAME:
            out["soname"] = string(val)
        elif tag == DT_RPATH:
            out["rpath"] = string(val)
        elif tag == DT_RUNPATH:
            out["runpath"] = string(val)
        elif tag == DT_FLAGS:
            out["dt_flags"] = val
        elif tag == DT_FLAGS_1:
            out["dt_flags_1"] = val
    out["needed"] = tuple(needed)
    return out
