"""Compile one ELF file into a per-object cache: the builder action's whole job.

``fexaot compile`` and the SCons builder both call :func:`compile_file`, so the
two produce byte-identical files.  The steps: read and check the ELF file,
compute its identity (:mod:`fexaot_tool.cache.key`), and write the module with
the sections the chosen filter asks for.  The codemap and the translator fill
the CODEMAP, BLOCK_INDEX, RELOCATIONS, UNTRANSLATABLE and CODE sections as
those layers land; until then a module holds its identity and ELF facts.
"""

from __future__ import annotations

import os

from fexaot_tool.cache.format import ElfFacts, Filter
from fexaot_tool.cache.key import TranslatorConfig, config_id, module_identity
from fexaot_tool.cache.writer import ModuleImage, write_cache
from fexaot_tool.elf import read_elf


def compile_module(host_path: str, display_name: str | None = None) -> ModuleImage:
    """The module image of one ELF file (``display_name`` names it in errors)."""
    name = display_name or host_path
    info = read_elf(host_path, display_name=name)
    identity = module_identity(host_path)
    return ModuleImage(identity=identity, name=os.path.basename(host_path), facts=ElfFacts.from_elf(info))


def compile_file(host_path: str, output: str, config: TranslatorConfig, filter: Filter,
                 display_name: str | None = None) -> None:
    """Write the per-object cache of ``host_path`` to ``output`` (atomically)."""
    image = compile_module(host_path, display_name)
    write_cache(output, config_id(config), filter, [image])
