"""The module map: which file, at which load base, each executable guest mapping shows.

Any guest code address then maps to (module, vaddr), where vaddr is the
address in the ELF file's own p_vaddr space (the load base removed): the same
space as the codemap's block starts and a cache's block index, whatever
address ASLR or the dynamic loader chose.  Executable memory with no file
behind it (a guest's JIT) is attributed to the anonymous module, with vaddr the
absolute address.

Module identities (FileId) come from ``cache.key.module_identity``, the one
place they are computed, and only when asked for: a run without a profile or
statistics never hashes a file.
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass

from fexaot_tool.cache.key import ModuleIdentity, module_identity
from fexaot_tool.elf.reader import ElfError, ElfInfo, read_elf
from fexaot_tool.runtime.memory import Mapping
from fexaot_tool.runtime.paths import GuestPaths

ANONYMOUS = "[anonymous]"


@dataclass(frozen=True)
class Module:
    """A file (or anonymous memory) that guest code runs from."""

    guest_path: str  # ANONYMOUS for memory with no file
    host_path: str | None
    st_dev: int = 0
    st_ino: int = 0
    is_elf: bool = False

    @property
    def anonymous(self) -> bool:
        return self.host_path is None

    @property
    def name(self) -> str:
        """The basename, as module names are written in caches and profiles (never a path)."""
        return ANONYMOUS if self.anonymous else os.path.basename(self.guest_path)


ANONYMOUS_MODULE = Module(ANONYMOUS, None)


@dataclass(frozen=True)
class ExecRegion:
    """An executable run of guest pages showing ``module`` with ``load_base`` as its vaddr 0."""

    start: int
    end: int
    module: Module
    load_base: int


class ModuleMap:
    def __init__(self, paths: GuestPaths):
        self.paths = paths
        self._starts: list[int] = []
        self._regions: list[ExecRegion] = []
        self._elf: dict[tuple[int, int], ElfInfo | None] = {}
        self._identities: dict[tuple[int, int, str], ModuleIdentity] = {}
        self.seen: dict[Module, int] = {}  # every module that was ever mapped executable -> a load base

    @property
    def regions(self) -> tuple[ExecRegion, ...]:
        return tuple(self._regions)

    def add(self, mapping: Mapping) -> None:
        """An executable mapping appeared (mmap, mprotect to PROT_EXEC, the loader)."""
        self.remove(mapping.start, mapping.end)
        if mapping.backing is None:
            region = ExecRegion(mapping.start, mapping.end, ANONYMOUS_MODULE, 0)
        else:
            b = mapping.backing
            elf = self._elf_info(b.host_path, b.st_dev, b.st_ino)
            module = Module(self.paths.to_guest(b.host_path), b.host_path, b.st_dev, b.st_ino, elf is not None)
            region = ExecRegion(mapping.start, mapping.end, module, mapping.start - self._vaddr_at(elf, b.offset))
        i = bisect.bisect_left(self._starts, region.start)
        self._starts.insert(i, region.start)
        self._regions.insert(i, region)
        self.seen.setdefault(region.module, region.load_base)

    def remove(self, start: int, end: int) -> None:
        """[start, end) stopped being executable code (munmap, mprotect, replaced)."""
        kept = []
        for r in self._regions:
            if r.end <= start or r.start >= end:
                kept.append(r)
                continue
            if r.start < start:
                kept.append(ExecRegion(r.start, start, r.module, r.load_base))
            if r.end > end:
                kept.append(ExecRegion(end, r.end, r.module, r.load_base))
        self._regions = kept
        self._starts = [r.start for r in kept]

    def clear(self) -> None:
        self._regions, self._starts = [], []

    def lookup(self, address: int) -> tuple[ExecRegion, int] | None:
        """The region holding ``address`` and the address's vaddr in its module."""
        i = bisect.bisect_right(self._starts, address) - 1
        if i >= 0 and address < self._regions[i].end:
            region = self._regions[i]
            return region, address - region.load_base
        return None

    def identity(self, module: Module) -> ModuleIdentity:
        """FileId and content hash of a file module (hashed once per file)."""
        assert module.host_path is not None
        key = (module.st_dev, module.st_ino, module.host_path)
        identity = self._identities.get(key)
        if identity is None:
            identity = self._identities[key] = module_identity(module.host_path)
        return identity

    def _elf_info(self, host_path: str, st_dev: int, st_ino: int) -> ElfInfo | None:
        key = (st_dev, st_ino)
        if key not in self._elf:
            try:
                self._elf[key] = read_elf(host_path)
            except ElfError:
                self._elf[key] = None  # a file mapped executable that is not an ELF file: offsets stand in
        return self._elf[key]

    @staticmethod
    def _vaddr_at(elf: ElfInfo | None, file_offset: int) -> int:
        """The p_vaddr that file offset ``file_offset`` (a mapping's start) is loaded at."""
        if elf is not None:
            for s in elf.load_segments:
                if s.p_offset - (s.p_offset & 0xFFF) <= file_offset < s.p_offset + max(s.p_filesz, 1):
                    return s.p_vaddr - (s.p_offset - file_offset)
        return file_offset
