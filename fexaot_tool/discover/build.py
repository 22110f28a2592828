"""build_codemap: seeds -> sweep + descent -> blocks, for one ELF file."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from fexaot_tool.discover.codemap import Codemap, Reason
from fexaot_tool.discover.elfimage import ElfImage
from fexaot_tool.discover.explore import Explorer
from fexaot_tool.discover.seeds import collect_seeds


def build_codemap(path: str | os.PathLike, display_name: str | None = None) -> Codemap:
    """The codemap of the x86-64 ELF file at ``path``.

    ``display_name`` names the file in errors and notes (e.g. its path inside a
    rootfs).  Raises an :class:`~fexaot_tool.elf.ElfError` subclass for a file the
    ELF layer rejects; anything wrong beyond the program headers degrades the
    codemap and is described in :attr:`Codemap.notes` instead.
    """
    return codemap_of_image(ElfImage(path, display_name))


@dataclass(frozen=True)
class Exploration:
    """A codemap and what discovery knew on the way that a block selection needs."""

    codemap: Codemap
    fde_ranges: tuple[tuple[int, int], ...]  # the FDE ranges, overlapping ones merged
    successors: dict[int, tuple[int, ...]]  # block start -> Explorer.local_successors


def explore_image(image: ElfImage, within: Iterable[int] | None = None) -> Exploration:
    """:func:`codemap_of_image` and the block edges it found, so no caller decodes the blocks again."""
    codemap, explorer = _explore(image, within)
    return Exploration(codemap, tuple(explorer.fde_ranges), explorer.local_successors())


def codemap_of_image(image: ElfImage, within: Iterable[int] | None = None) -> Codemap:
    """The codemap of an ELF file already read (so a caller reads the file once).

    With ``within``, a *scoped* codemap: the blocks of the functions (FDE ranges)
    holding those addresses and of the FDE ranges they jump into only, and of
    the code outside FDE ranges if one of them is there; no address in code
    gives an empty codemap.  Discovery does
    the work of those functions only (docs/codemap.md, "Scoped codemaps").
    """
    return _explore(image, within)[0]


def _explore(image: ElfImage, within: Iterable[int] | None) -> tuple[Codemap, Explorer]:
    seeds = collect_seeds(image)
    explorer = Explorer(seeds, within)
    explorer.run()
    blocks, dropped = explorer.blocks()
    notes = list(seeds.notes)
    if seeds.rejected:
        notes.append("seeds outside the executable ranges: " + _count_by_reason(seeds.rejected))
    if explorer.stray_targets:
        notes.append("branch targets outside the executable ranges: " + _count_by_reason(explorer.stray_targets))
    if explorer.sweep_stops:
        first = ", ".join(f"{a:#x}" for a in explorer.sweep_stops[:3])
        notes.append(f"linear sweep stopped at undecodable bytes in {len(explorer.sweep_stops)} FDE range(s) "
                     f"(at {first})")
    if explorer.unfinished:
        notes.append("descent stopped after its round limit; some jump tables may be unexplored")
    if dropped:
        notes.append(f"{dropped} block start(s) dropped: the bytes there do not decode")
    return Codemap(tuple(blocks), len(seeds.fdes), sum(seeds.rejected.values()), seeds.degraded,
                   tuple(notes)), explorer


def _count_by_reason(counts) -> str:
    parts = []
    for bits, n in sorted(counts.items()):
        names = "|".join(r.name.lower() for r in Reason if bits & r)
        parts.append(f"{n} {names}")
    return ", ".join(parts)
