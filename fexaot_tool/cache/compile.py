"""Compile one ELF file into a per-object cache: the builder action's whole job.

``fexaot compile`` and the SCons builder both call :func:`compile_file`, so the
two produce byte-identical files.  The steps: read and check the ELF file,
compute its identity (:mod:`fexaot_tool.cache.key`), find its blocks
(:mod:`fexaot_tool.discover`) and write the module.  Every filter keeps the
codemap; the translator will fill BLOCK_INDEX, RELOCATIONS, UNTRANSLATABLE and
CODE with the blocks the filter selects.
"""

from __future__ import annotations

import os

from fexaot_tool.cache.format import CodemapEntry, ElfFacts, Filter, SectionKind, pack_section
from fexaot_tool.cache.key import TranslatorConfig, config_id, module_identity
from fexaot_tool.cache.writer import ModuleImage, write_cache
from fexaot_tool.discover import Codemap, build_codemap
from fexaot_tool.elf import read_elf


def codemap_section(codemap: Codemap, image_base: int) -> bytes:
    """The CODEMAP section: the codemap's blocks with starts relative to the image base."""
    return pack_section(SectionKind.CODEMAP, (
        CodemapEntry(b.start - image_base, b.length, b.instructions, b.reasons, b.flags)
        for b in codemap.blocks
    ))


def compile_module(host_path: str, display_name: str | None = None) -> ModuleImage:
    """The module image of one ELF file (``display_name`` names it in errors)."""
    name = display_name or host_path
    info = read_elf(host_path, display_name=name)
    identity = module_identity(host_path)
    facts = ElfFacts.from_elf(info)
    codemap = build_codemap(host_path, display_name=name)
    sections = {SectionKind.CODEMAP: codemap_section(codemap, facts.image_base)}
    return ModuleImage(identity=identity, name=os.path.basename(host_path), facts=facts, sections=sections)


def compile_file(host_path: str, output: str, config: TranslatorConfig, filter: Filter,
                 display_name: str | None = None) -> None:
    """Write the per-object cache of ``host_path`` to ``output`` (atomically)."""
    image = compile_module(host_path, display_name)
    write_cache(output, config_id(config), filter, [image])
