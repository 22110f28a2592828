"""Compile one ELF file into a per-object cache: the builder action's whole job.

``fexaot compile`` and the SCons builder both call :func:`compile_file`, so the
two produce byte-identical files.  The steps: read and check the ELF file,
compute its identity (:mod:`fexaot_tool.cache.key`), find its blocks
(:mod:`fexaot_tool.discover`), translate the blocks the filter selects
(:mod:`fexaot_tool.translate`) and write the module.  Every filter keeps the
codemap; ``speed`` translates every codemap block into BLOCK_INDEX,
RELOCATIONS, UNTRANSLATABLE, STRINGS and CODE.  ``speed-profile`` has no
profile input yet and ``verify`` never has code, so both write the codemap only.
"""

from __future__ import annotations

import os

from fexaot_tool.cache.format import (
    BlockIndexEntry, CodemapEntry, ElfFacts, Filter, Relocation, SectionKind, Untranslatable, pack_section,
)
from fexaot_tool.cache.key import TranslatorConfig, config_id, identity_of_bytes
from fexaot_tool.cache.writer import ModuleImage, write_cache
from fexaot_tool.discover import Codemap, ElfImage, codemap_of_image
from fexaot_tool.translate import BlockRequest, GuestCode, ModuleTranslation, translate_module


def codemap_section(codemap: Codemap, image_base: int) -> bytes:
    """The CODEMAP section: the codemap's blocks with starts relative to the image base."""
    return pack_section(SectionKind.CODEMAP, (
        CodemapEntry(b.start - image_base, b.length, b.instructions, b.reasons, b.flags)
        for b in codemap.blocks
    ))


def guest_code(image: ElfImage, image_base: int) -> GuestCode:
    """The executable bytes of an ELF file, addressed by virtual address, for the translator."""
    ranges = tuple((r.start, image.data[r.file_offset:r.file_offset + r.end - r.start]) for r in image.code_ranges)
    return GuestCode(image_base, ranges)


def translation_sections(translation: ModuleTranslation, image_base: int) -> dict[SectionKind, bytes]:
    """BLOCK_INDEX, RELOCATIONS, UNTRANSLATABLE, STRINGS and CODE of one module's translation."""
    strings = bytearray()
    string_at: dict[str, tuple[int, int]] = {}  # each detail text is stored once

    def string(text: str) -> tuple[int, int]:
        if text not in string_at:
            data = text.encode("utf-8")
            string_at[text] = (len(strings), len(data))
            strings.extend(data)
        return string_at[text]

    untranslatable = []
    for u in translation.untranslated:
        offset, size = string(u.detail)
        untranslatable.append(Untranslatable(u.start - image_base, u.length, u.reason, offset, size))
    return {
        SectionKind.BLOCK_INDEX: pack_section(SectionKind.BLOCK_INDEX, (
            BlockIndexEntry(b.start - image_base, b.code_offset, b.code_size, b.guest_hash, b.guest_size)
            for b in translation.blocks)),
        SectionKind.RELOCATIONS: pack_section(SectionKind.RELOCATIONS, (
            Relocation(offset, kind, addend) for offset, kind, addend in translation.relocations)),
        SectionKind.UNTRANSLATABLE: pack_section(SectionKind.UNTRANSLATABLE, untranslatable),
        SectionKind.STRINGS: bytes(strings),
        SectionKind.CODE: translation.code,
    }


def compile_module(host_path: str, display_name: str | None = None, config: TranslatorConfig | None = None,
                   filter: Filter = Filter.VERIFY) -> ModuleImage:
    """The module image of one ELF file (``display_name`` names it in errors)."""
    # One read of the file: identity, codemap and guest code all come from the
    # same bytes, even if the file is replaced while it is compiled.
    image = ElfImage(host_path, display_name or host_path)
    identity = identity_of_bytes(image.data)
    facts = ElfFacts.from_elf(image.info)
    codemap = codemap_of_image(image)
    sections = {SectionKind.CODEMAP: codemap_section(codemap, facts.image_base)}
    if filter == Filter.SPEED:
        config = config or TranslatorConfig()
        translation = translate_module(guest_code(image, facts.image_base),
                                       (BlockRequest(b.start, b.length) for b in codemap.blocks),
                                       memory_order=config.memory_order)
        sections.update(translation_sections(translation, facts.image_base))
    return ModuleImage(identity=identity, name=os.path.basename(host_path), facts=facts, sections=sections)


def compile_file(host_path: str, output: str, config: TranslatorConfig, filter: Filter,
                 display_name: str | None = None) -> None:
    """Write the per-object cache of ``host_path`` to ``output`` (atomically)."""
    image = compile_module(host_path, display_name, config, filter)
    write_cache(output, config_id(config), filter, [image])
