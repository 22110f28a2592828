"""Discover layer: the static codemap of one ELF file, i.e. which guest blocks exist.

Seeds named by the file (entry, init/fini, symbols, FDEs, landing pads, PLT,
relocations), a linear sweep of FDE ranges and recursive descent with jump-table
resolution, all from the file alone.  Imports ``elf`` and ``errors``; knows
nothing of caches or AArch64.
"""

from fexaot_tool.discover.build import Exploration, build_codemap, codemap_of_image, explore_image
from fexaot_tool.discover.elfimage import ElfImage
from fexaot_tool.discover.codemap import Block, Codemap, CorruptCodemapError, Flag, Reason

__all__ = ["Block", "Codemap", "CorruptCodemapError", "ElfImage", "Exploration", "Flag", "Reason", "build_codemap",
           "codemap_of_image", "explore_image"]
