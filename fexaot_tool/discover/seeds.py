"""Seeds: code addresses the ELF file itself names, each with why it was found.

Every source is read on its own; a source that cannot be read (a corrupt
``.eh_frame``, a truncated symbol table) is dropped, its reason bit is set in
``degraded`` and a note says what was wrong.  Seed addresses outside the
executable ranges are counted in ``rejected`` (per reason), never decoded.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from fexaot_tool.discover.codemap import Reason
from fexaot_tool.discover.ehframe import CorruptEhFrameError, CorruptLsdaError, Fde, landing_pads, read_fdes
from fexaot_tool.discover.elfimage import (
    DT_FINI, DT_FINI_ARRAY, DT_FINI_ARRAYSZ, DT_INIT, DT_INIT_ARRAY, DT_INIT_ARRAYSZ, DT_PREINIT_ARRAY,
    DT_PREINIT_ARRAYSZ, R_X86_64_64, R_X86_64_GLOB_DAT, R_X86_64_IRELATIVE, R_X86_64_JUMP_SLOT,
    R_X86_64_RELATIVE, SHT_DYNSYM, SHT_FINI_ARRAY, SHT_INIT_ARRAY, SHT_PREINIT_ARRAY, SHT_SYMTAB, ElfImage,
)

# PLT sections and the size of one stub when sh_entsize does not say (binutils' x86-64 layouts).
_PLT_SECTIONS = {".plt": 16, ".plt.sec": 16, ".plt.got": 8, ".plt.bnd": 16}

# (address tag, size tag) of the pointer arrays the dynamic loader calls, and their sections.
_INIT_ARRAY_TAGS = ((DT_PREINIT_ARRAY, DT_PREINIT_ARRAYSZ), (DT_INIT_ARRAY, DT_INIT_ARRAYSZ),
                    (DT_FINI_ARRAY, DT_FINI_ARRAYSZ))
_INIT_ARRAY_SECTIONS = (SHT_PREINIT_ARRAY, SHT_INIT_ARRAY, SHT_FINI_ARRAY)
_MAX_ARRAY_ENTRIES = 1 << 16


@dataclass
class SeedSet:
    """Seeds of one file plus the facts about pointer slots that jump-table reading needs."""

    image: ElfImage
    fdes: tuple[Fde, ...] = ()
    addresses: dict[int, int] = field(default_factory=dict)  # address -> Reason bits
    rejected: Counter = field(default_factory=Counter)  # Reason -> seeds outside executable ranges
    degraded: int = 0  # Reason bits of sources that could not be read
    notes: list[str] = field(default_factory=list)
    # Pointer slots whose run-time value is known: r_offset -> value (RELATIVE, RELR, 64 to a local symbol).
    slot_values: dict[int, int] = field(default_factory=dict)
    # Pointer slots the dynamic loader fills with another module's (or a resolver's) address.
    loader_slots: set[int] = field(default_factory=set)

    def add(self, address: int, reason: Reason) -> None:
        if self.image.is_code(address):
            # int(): IntFlag's own `|` costs a microsecond, and large files have ~10^6 seeds.
            self.addresses[address] = self.addresses.get(address, 0) | int(reason)
        else:
            self.rejected[int(reason)] += 1

    def degrade(self, reason: Reason, problem: str) -> None:
        self.degraded |= int(reason)
        self.notes.append(problem)

    def pointer(self, slot: int) -> int | None:
        """Run-time value of the pointer at ``slot`` when it is this module's address."""
        value = self.slot_values.get(slot)
        if value is None and slot not in self.loader_slots:
            value = self.image.read_pointer(slot)
        return value


def collect_seeds(image: ElfImage) -> SeedSet:
    seeds = SeedSet(image)
    seeds.notes.extend(image.problems)
    _relocations(seeds)  # first: init arrays and jump tables read pointers through slot_values
    _entry_and_init(seeds)
    _symbols(seeds)
    _plt(seeds)
    _fdes(seeds)
    return seeds


def _entry_and_init(seeds: SeedSet) -> None:
    image = seeds.image
    if image.info.e_entry:
        seeds.add(image.info.e_entry, Reason.ENTRY)
    for tag in (DT_INIT, DT_FINI):
        if tag in image.dynamic:
            seeds.add(image.dynamic[tag], Reason.INIT_FINI)
    for name in (".init", ".fini"):
        section = image.section(name)
        if section is not None and section.sh_size:
            seeds.add(section.sh_addr, Reason.INIT_FINI)
    arrays = {(image.dynamic[a], image.dynamic[s]) for a, s in _INIT_ARRAY_TAGS
              if a in image.dynamic and s in image.dynamic}
    arrays |= {(s.sh_addr, s.sh_size) for s in image.sections if s.sh_type in _INIT_ARRAY_SECTIONS}
    for address, size in sorted(arrays):
        if size % 8 or size // 8 > _MAX_ARRAY_ENTRIES or image.offset_of(address, max(size, 1)) is None:
            seeds.degrade(Reason.INIT_ARRAY, f"init/fini array at {address:#x} ({size} bytes) is not in the file; skipped")
            continue
        for slot in range(address, address + size, 8):
            value = seeds.pointer(slot)
            # 0 and -1 are the terminators/placeholders crtstuff used in .ctors-style arrays.
            if value not in (None, 0, (1 << 64) - 1):
                seeds.add(value, Reason.INIT_ARRAY)


def _symbols(seeds: SeedSet) -> None:
    for sh_type, reason in ((SHT_DYNSYM, Reason.DYNSYM), (SHT_SYMTAB, Reason.SYMTAB)):
        for symbol in seeds.image.function_symbols(sh_type):
            seeds.add(symbol.st_value, reason | Reason.IFUNC if symbol.is_ifunc else reason)


def _plt(seeds: SeedSet) -> None:
    image = seeds.image
    for section in image.sections:
        default = _PLT_SECTIONS.get(section.name)
        if default is None or not image.is_code(section.sh_addr):
            continue
        stub = section.sh_entsize if section.sh_entsize in (8, 16) else default
        for address in range(section.sh_addr, section.sh_addr + section.sh_size - stub + 1, stub):
            seeds.add(address, Reason.PLT)


def _relocations(seeds: SeedSet) -> None:
    image = seeds.image
    relas, relr_slots = image.relocations()
    jump_slots = []
    for r in relas:
        if r.r_type == R_X86_64_RELATIVE:
            seeds.slot_values[r.r_offset] = r.r_addend
            if image.is_code(r.r_addend):  # most RELATIVE relocations point at data: not rejections
                seeds.add(r.r_addend, Reason.RELOCATION)
        elif r.r_type == R_X86_64_IRELATIVE:
            seeds.loader_slots.add(r.r_offset)
            seeds.add(r.r_addend, Reason.IRELATIVE)
        elif r.r_type in (R_X86_64_64, R_X86_64_GLOB_DAT, R_X86_64_JUMP_SLOT):
            seeds.loader_slots.add(r.r_offset)
            if r.r_type == R_X86_64_JUMP_SLOT:
                jump_slots.append(r.r_offset)
            if r.symbol_value is not None:
                target = r.symbol_value + (r.r_addend if r.r_type == R_X86_64_64 else 0)
                if image.is_code(target):
                    seeds.add(target, Reason.RELOCATION)
    for slot in relr_slots:
        value = image.read_pointer(slot)
        if value is not None:
            seeds.slot_values[slot] = value
            if image.is_code(value):
                seeds.add(value, Reason.RELOCATION)
    # A lazily bound GOT slot initially holds the address of its PLT stub's `push`:
    # the first call of every import runs that block.
    for slot in jump_slots:
        value = image.read_pointer(slot)
        if value and image.is_code(value):
            seeds.add(value, Reason.PLT)
    for name in (".got", ".got.plt"):
        section = image.section(name)
        if section is not None:
            seeds.loader_slots.update(range(section.sh_addr, section.sh_addr + section.sh_size, 8))


def _fdes(seeds: SeedSet) -> None:
    image = seeds.image
    try:
        fdes, how = read_fdes(image)
    except CorruptEhFrameError as e:
        seeds.degrade(Reason.FDE | Reason.LANDING_PAD, f"{e.problem}; FDE seeds, linear sweep and landing pads skipped")
        return
    if how not in ("none", ".eh_frame_hdr"):
        seeds.notes.append(f"FDEs read by {how}")
    kept = []
    for fde in fdes:
        if fde.signal_frame and fde.pc_end - fde.pc_begin > 1:
            # Unwinders look up the FDE of a return address minus one, but a signal
            # handler "returns" to the first instruction of the sigreturn trampoline;
            # so glibc and the kernel's vDSO start its FDE one byte early, on a `nop`
            # or on alignment padding.  The code starts one byte in.
            fde = Fde(fde.pc_begin + 1, fde.pc_end, fde.lsda, True)
        if image.is_code(fde.pc_begin):
            kept.append(fde)
            seeds.add(fde.pc_begin, Reason.FDE)
        else:
            seeds.rejected[Reason.FDE] += 1
    seeds.fdes = tuple(kept)
    bad_lsdas: list[str] = []
    for fde in kept:
        if fde.lsda is None:
            continue
        try:
            pads = landing_pads(image, fde)
        except CorruptLsdaError as e:
            bad_lsdas.append(e.problem)
            continue
        for pad in pads:
            seeds.add(pad, Reason.LANDING_PAD)
    if bad_lsdas:
        seeds.degrade(Reason.LANDING_PAD, f"{len(bad_lsdas)} LSDA(s) unreadable, their landing pads skipped "
                                          f"(first: {bad_lsdas[0]})")

