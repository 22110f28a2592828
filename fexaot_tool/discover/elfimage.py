"""The parts of an x86-64 ELF file that code discovery reads beyond the program headers.

:func:`fexaot_tool.elf.read_elf` validates the ELF and program headers; this module
adds, with ``struct`` over the file's bytes, what the static codemap needs: section
headers, symbol tables, ``PT_DYNAMIC`` entries, relocations and the executable
byte ranges.  Names follow the ELF gABI and the System V x86-64 psABI.

Section headers, symbol tables and relocations are optional to a loader, so a
malformed one is not fatal here: it is dropped and described in
:attr:`ElfImage.problems`, and discovery continues with what is left.
"""

from __future__ import annotations

import bisect
import os
import struct
from dataclasses import dataclass

from fexaot_tool.elf.reader import PT_DYNAMIC, PT_GNU_EH_FRAME, CorruptElfError, ElfError, ElfInfo, read_elf

# Section header types and flags (gABI "Sections").
SHT_PROGBITS, SHT_SYMTAB, SHT_RELA, SHT_NOBITS, SHT_DYNSYM = 1, 2, 4, 8, 11
SHT_INIT_ARRAY, SHT_FINI_ARRAY, SHT_PREINIT_ARRAY, SHT_RELR = 14, 15, 16, 19
SHF_ALLOC, SHF_EXECINSTR = 0x2, 0x4
SHN_UNDEF, SHN_LORESERVE = 0, 0xFF00

# Symbol types (gABI "Symbol Table"); STT_GNU_IFUNC is what pyelftools prints as STT_LOOS.
STT_FUNC, STT_GNU_IFUNC = 2, 10

# Dynamic section tags (gABI "Dynamic Section", plus DT_RELR from the 2022 gABI update).
DT_PLTRELSZ, DT_SYMTAB, DT_RELA, DT_RELASZ = 2, 6, 7, 8
DT_INIT, DT_FINI, DT_JMPREL = 12, 13, 23
DT_INIT_ARRAY, DT_FINI_ARRAY, DT_INIT_ARRAYSZ, DT_FINI_ARRAYSZ = 25, 26, 27, 28
DT_PREINIT_ARRAY, DT_PREINIT_ARRAYSZ = 32, 33
DT_RELRSZ, DT_RELR = 35, 36

# x86-64 relocation types (psABI table "Relocation Types").
R_X86_64_64, R_X86_64_GLOB_DAT, R_X86_64_JUMP_SLOT = 1, 6, 7
R_X86_64_RELATIVE, R_X86_64_IRELATIVE = 8, 37

_SHDR = struct.Struct("<IIQQQQIIQQ")  # Elf64_Shdr, 64 bytes
_SYM = struct.Struct("<IBBHQQ")  # Elf64_Sym, 24 bytes
_RELA = struct.Struct("<QQq")  # Elf64_Rela, 24 bytes
_DYN = struct.Struct("<qQ")  # Elf64_Dyn, 16 bytes
_U64 = struct.Struct("<Q")
_MAX_SECTIONS = 1 << 16


@dataclass(frozen=True)
class Section:
    """One Elf64_Shdr, with its name resolved."""

    name: str
    sh_type: int
    sh_flags: int
    sh_addr: int
    sh_offset: int
    sh_size: int
    sh_link: int
    sh_entsize: int


@dataclass(frozen=True)
class Symbol:
    """A defined function symbol (STT_FUNC or STT_GNU_IFUNC)."""

    name: str
    st_value: int
    st_size: int
    is_ifunc: bool


@dataclass(frozen=True)
class Relocation:
    """One relocation of the loaded image; ``symbol_value`` is set for symbols defined here."""

    r_offset: int
    r_type: int
    r_addend: int
    symbol_value: int | None


@dataclass(frozen=True)
class CodeRange:
    """Executable bytes of the image: [start, end) in virtual addresses, backed by the file."""

    start: int
    end: int
    file_offset: int
    name: str


class ElfImage:
    """An ELF file's bytes plus the tables discovery needs, addressed by virtual address."""

    def __init__(self, path: str | os.PathLike, display_name: str | None = None):
        self.name = display_name or os.fspath(path)
        self.info: ElfInfo = read_elf(path, self.name)
        try:
            with open(path, "rb") as f:
                self.data = f.read()
        except OSError as e:
            raise ElfError(self.name, f"cannot read: {e.strerror}") from None
        self.problems: list[str] = []
        self._raw_sections: list[tuple] = []
        self.loads = sorted((s for s in self.info.load_segments), key=lambda s: s.p_vaddr)
        for s in self.loads:
            # The loader would map these bytes; reading past the end is a truncated file, not a quirk.
            if s.p_offset + s.p_filesz > len(self.data):
                raise CorruptElfError(self.name, f"truncated: PT_LOAD at {s.p_vaddr:#x} ends at byte "
                                                 f"{s.p_offset + s.p_filesz}, file has {len(self.data)}")
        self._load_starts = [s.p_vaddr for s in self.loads]
        self.sections = self._read_sections()
        self.dynamic = self._read_dynamic()
        self.code_ranges = self._code_ranges()
        self._code_starts = [r.start for r in self.code_ranges]

    # -- address translation -------------------------------------------------

    def offset_of(self, vaddr: int, size: int = 1) -> int | None:
        """File offset of ``size`` bytes at ``vaddr`` if they lie in one PT_LOAD's file image."""
        i = bisect.bisect_right(self._load_starts, vaddr) - 1
        if i < 0:
            return None
        s = self.loads[i]
        if vaddr + size > s.p_vaddr + s.p_filesz:
            return None
        return vaddr - s.p_vaddr + s.p_offset

    def read(self, vaddr: int, size: int) -> bytes | None:
        off = self.offset_of(vaddr, size)
        return None if off is None else self.data[off:off + size]

    def loaded_bytes(self, vaddr: int) -> tuple[bytes, int, int] | None:
        """(file bytes, offset of ``vaddr`` in them, offset where the PT_LOAD's file image ends)."""
        off = self.offset_of(vaddr)
        if off is None:
            return None
        s = self.loads[bisect.bisect_right(self._load_starts, vaddr) - 1]
        return self.data, off, s.p_offset + s.p_filesz

    def code_range_of(self, vaddr: int) -> CodeRange | None:
        i = bisect.bisect_right(self._code_starts, vaddr) - 1
        if i >= 0 and vaddr < self.code_ranges[i].end:
            return self.code_ranges[i]
        return None

    def is_code(self, vaddr: int) -> bool:
        return self.code_range_of(vaddr) is not None

    def section(self, name: str) -> Section | None:
        for s in self.sections:
            if s.name == name:
                return s
        return None

    @property
    def eh_frame_hdr_vaddr(self) -> int | None:
        for s in self.info.segments:
            if s.p_type == PT_GNU_EH_FRAME:
                return s.p_vaddr
        sec = self.section(".eh_frame_hdr")
        return sec.sh_addr if sec else None

    # -- section headers -----------------------------------------------------

    def _read_sections(self) -> tuple[Section, ...]:
        data = self.data
        e_shoff, = struct.unpack_from("<Q", data, 0x28)
        e_shentsize, e_shnum, e_shstrndx = struct.unpack_from("<HHH", data, 0x3A)
        if e_shoff == 0:
            return ()
        if e_shnum == 0 and e_shoff + _SHDR.size <= len(data):
            # More than SHN_LORESERVE sections: the count lives in section 0's sh_size.
            e_shnum = _SHDR.unpack_from(data, e_shoff)[5]
        if e_shentsize != _SHDR.size or e_shnum > _MAX_SECTIONS or e_shoff + e_shnum * _SHDR.size > len(data):
            self.problems.append(f"section header table unreadable (e_shoff={e_shoff:#x}, e_shnum={e_shnum}); "
                                 "symbols, PLT and .init/.fini sections ignored")
            return ()
        raw = [_SHDR.unpack_from(data, e_shoff + i * _SHDR.size) for i in range(e_shnum)]
        names = b""
        if e_shstrndx < len(raw):
            _n, _t, _f, _a, off, size, *_ = raw[e_shstrndx]
            if off + size <= len(data):
                names = data[off:off + size]

        def name_of(index: int) -> str:
            end = names.find(b"\0", index)
            return names[index:end].decode("utf-8", "replace") if 0 <= index < len(names) and end >= 0 else ""

        out = []
        for sh_name, sh_type, sh_flags, sh_addr, sh_offset, sh_size, sh_link, _info, _align, sh_entsize in raw:
            if sh_type != SHT_NOBITS and sh_offset + sh_size > len(data):
                self.problems.append(f"section {name_of(sh_name) or '?'} extends past the end of the file; ignored")
                continue
            out.append(Section(name_of(sh_name), sh_type, sh_flags, sh_addr, sh_offset, sh_size, sh_link, sh_entsize))
        self._raw_sections = raw
        return tuple(out)

    def _section_by_index(self, index: int) -> Section | None:
        raw = self._raw_sections
        if not 0 < index < len(raw):
            return None
        _n, sh_type, sh_flags, sh_addr, sh_offset, sh_size, sh_link, _i, _a, sh_entsize = raw[index]
        if sh_type != SHT_NOBITS and sh_offset + sh_size > len(self.data):
            return None
        return Section("", sh_type, sh_flags, sh_addr, sh_offset, sh_size, sh_link, sh_entsize)

    # -- executable ranges ---------------------------------------------------

    def _code_ranges(self) -> tuple[CodeRange, ...]:
        """Executable sections inside executable PT_LOADs; the segments themselves when there are none.

        Sections are preferred because an R+X segment can also hold .rodata or
        .eh_frame (older ``-z noseparate-code`` layouts), which must not be decoded.
        """
        exec_loads = [s for s in self.loads if s.executable and s.p_filesz]
        ranges = []
        for sec in self.sections:
            if sec.sh_type != SHT_PROGBITS or sec.sh_flags & (SHF_ALLOC | SHF_EXECINSTR) != (SHF_ALLOC | SHF_EXECINSTR):
                continue
            if sec.sh_size == 0:
                continue
            for seg in exec_loads:
                if seg.p_vaddr <= sec.sh_addr and sec.sh_addr + sec.sh_size <= seg.p_vaddr + seg.p_filesz:
                    ranges.append(CodeRange(sec.sh_addr, sec.sh_addr + sec.sh_size,
                                            sec.sh_addr - seg.p_vaddr + seg.p_offset, sec.name))
                    break
        if not ranges:
            ranges = [CodeRange(s.p_vaddr, s.p_vaddr + s.p_filesz, s.p_offset, f"PT_LOAD@{s.p_vaddr:#x}")
                      for s in exec_loads]
        ranges.sort(key=lambda r: r.start)
        merged: list[CodeRange] = []
        for r in ranges:
            if merged and r.start < merged[-1].end:
                continue  # overlapping sections (a malformed table): keep the first
            merged.append(r)
        return tuple(merged)

    # -- dynamic section -----------------------------------------------------

    def _read_dynamic(self) -> dict[int, int]:
        """First value of each DT_* tag (the tags read here appear once)."""
        for seg in self.info.segments:
            if seg.p_type == PT_DYNAMIC:
                raw = self.data[seg.p_offset:seg.p_offset + seg.p_filesz]
                out: dict[int, int] = {}
                for tag, val in _DYN.iter_unpack(raw[: len(raw) - len(raw) % _DYN.size]):
                    if tag == 0:
                        break
                    out.setdefault(tag, val)
                return out
        return {}

    # -- symbols -------------------------------------------------------------

    def function_symbols(self, sh_type: int) -> tuple[Symbol, ...]:
        """Defined STT_FUNC/STT_GNU_IFUNC symbols of the SHT_SYMTAB or SHT_DYNSYM section."""
        out: list[Symbol] = []
        for sec in self.sections:
            if sec.sh_type != sh_type:
                continue
            strtab = self._section_by_index(sec.sh_link)
            strings = self.data[strtab.sh_offset:strtab.sh_offset + strtab.sh_size] if strtab else b""
            raw = self.data[sec.sh_offset:sec.sh_offset + sec.sh_size - sec.sh_size % _SYM.size]
            for st_name, st_info, _other, st_shndx, st_value, st_size in _SYM.iter_unpack(raw):
                st_type = st_info & 0xF
                if st_type not in (STT_FUNC, STT_GNU_IFUNC) or st_shndx == SHN_UNDEF:
                    continue
                end = strings.find(b"\0", st_name)
                name = strings[st_name:end].decode("utf-8", "replace") if end >= 0 else ""
                out.append(Symbol(name, st_value, st_size, st_type == STT_GNU_IFUNC))
        return tuple(out)

    def _dynsym_value(self, index: int) -> int | None:
        """st_value of .dynsym entry ``index`` when the symbol is defined in this file."""
        symtab = self.dynamic.get(DT_SYMTAB)
        if symtab is None or index == 0:
            return None
        raw = self.read(symtab + index * _SYM.size, _SYM.size)
        if raw is None:
            return None
        _name, st_info, _other, st_shndx, st_value, _size = _SYM.unpack(raw)
        if st_shndx == SHN_UNDEF or st_info & 0xF == 6:  # STT_TLS values are TLS offsets, not addresses
            return None
        return st_value

    # -- relocations ---------------------------------------------------------

    def _relocation_tables(self) -> tuple[list[tuple[int, int, int]], list[tuple[int, int]]]:
        """(RELA tables as (file offset, size, how found), RELR tables as (file offset, size)).

        Both ``PT_DYNAMIC`` tags and allocated relocation sections are read: a
        static executable has only the latter (.rela.iplt), a section-stripped
        file only the former.  The same table found twice is read once.
        """
        rela: dict[tuple[int, int], int] = {}
        relr: set[tuple[int, int]] = set()
        for addr_tag, size_tag in ((DT_RELA, DT_RELASZ), (DT_JMPREL, DT_PLTRELSZ)):
            if addr_tag in self.dynamic and size_tag in self.dynamic:
                off = self.offset_of(self.dynamic[addr_tag], max(1, self.dynamic[size_tag]))
                if off is None:
                    self.problems.append(f"dynamic tag {addr_tag} points outside the file; relocations skipped")
                else:
                    rela[(off, self.dynamic[size_tag])] = addr_tag
        if DT_RELR in self.dynamic and DT_RELRSZ in self.dynamic:
            off = self.offset_of(self.dynamic[DT_RELR], max(1, self.dynamic[DT_RELRSZ]))
            if off is None:
                self.problems.append("DT_RELR points outside the file; RELR relocations skipped")
            else:
                relr.add((off, self.dynamic[DT_RELRSZ]))
        covered = [(off, off + size) for off, size in list(rela) + list(relr)]
        for sec in self.sections:
            if not sec.sh_flags & SHF_ALLOC or sec.sh_type not in (SHT_RELA, SHT_RELR):
                continue
            if any(a <= sec.sh_offset and sec.sh_offset + sec.sh_size <= b for a, b in covered):
                continue
            if sec.sh_type == SHT_RELA:
                rela[(sec.sh_offset, sec.sh_size)] = 0
            else:
                relr.add((sec.sh_offset, sec.sh_size))
        return [(o, s, t) for (o, s), t in sorted(rela.items())], sorted(relr)

    def relocations(self) -> tuple[tuple[Relocation, ...], tuple[int, ...]]:
        """(RELA relocations, RELR-relocated slot addresses), in file order."""
        rela_tables, relr_tables = self._relocation_tables()
        relas: list[Relocation] = []
        for off, size, _how in rela_tables:
            raw = self.data[off:off + size - size % _RELA.size]
            for r_offset, r_info, r_addend in _RELA.iter_unpack(raw):
                r_type, r_sym = r_info & 0xFFFFFFFF, r_info >> 32
                value = self._dynsym_value(r_sym) if r_sym and r_type in _SYMBOL_RELOCATIONS else None
                relas.append(Relocation(r_offset, r_type, r_addend, value))
        slots: list[int] = []
        for off, size in relr_tables:
            slots.extend(decode_relr(self.data[off:off + size - size % 8]))
        return tuple(relas), tuple(slots)

    def read_pointer(self, vaddr: int) -> int | None:
        raw = self.read(vaddr, 8)
        return None if raw is None else _U64.unpack(raw)[0]


# Relocation types whose value involves a symbol that may be defined in this file.
_SYMBOL_RELOCATIONS = frozenset({R_X86_64_64, R_X86_64_GLOB_DAT, R_X86_64_JUMP_SLOT})


def decode_relr(raw: bytes) -> list[int]:
    """Slot addresses of a SHT_RELR table (gABI: an address entry, then 63-slot bitmaps)."""
    slots: list[int] = []
    where = 0
    for (entry,) in _U64.iter_unpack(raw):
        if entry & 1 == 0:
            slots.append(entry)
            where = entry + 8
        else:
            bits = entry >> 1
            i = 0
            while bits:
                if bits & 1:
                    slots.append(where + i * 8)
                bits >>= 1
                i += 1
            where += 63 * 8
    return slots
