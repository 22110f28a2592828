"""Compile one ELF file into a per-object cache: the builder action's whole job.

``fexaot compile`` and the SCons builder both call :func:`compile_file`, so the
two produce byte-identical files.  The steps: read and check the ELF file,
compute its identity (:mod:`fexaot_tool.cache.key`), find its blocks
(:mod:`fexaot_tool.discover`), translate the blocks the filter selects
(:mod:`fexaot_tool.translate`) and write the module.  ``verify`` keeps the
whole codemap and translates nothing; ``speed`` translates every block of the
whole codemap; ``speed-profile`` discovers only the functions holding a block
a profile saw run at least ``hot_threshold`` times (a scoped codemap, which is
what its CODEMAP section holds), translates those blocks and the blocks
statically reachable from them inside their function
(:func:`select_profile_blocks`; the reached ones without the IR passes),
and marks both kinds in the CODEMAP section's ``flags`` (:data:`PROFILE_HOT`,
:data:`PROFILE_REACHED`).
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass

from fexaot_tool.cache.format import (
    BlockIndexEntry, CodemapEntry, ElfFacts, Filter, Relocation, SectionKind, Untranslatable, pack_section,
)
from fexaot_tool.cache.key import ModuleIdentity, TranslatorConfig, config_id, identity_of_bytes
from fexaot_tool.cache.writer import ModuleImage, write_cache
from fexaot_tool.discover import Codemap, ElfImage, Exploration, codemap_of_image, explore_image
from fexaot_tool.errors import FexaotError
from fexaot_tool.profile import ModuleProfile, Profile
from fexaot_tool.profile.hotset import DEFAULT_HOT_THRESHOLD
from fexaot_tool.translate import BlockRequest, GuestCode, ModuleTranslation, translate_module

# CODEMAP ``flags`` bits set by the compiler (never by discovery, whose Flag
# bits are 0-15): why a speed-profile cache holds a block.
PROFILE_HOT = 1 << 30  # a profile saw the block run at least hot_threshold times
PROFILE_REACHED = 1 << 29  # statically reachable from a PROFILE_HOT block inside the same function
COMPILER_FLAGS = PROFILE_HOT | PROFILE_REACHED



def codemap_section(codemap: Codemap, image_base: int, marks: dict[int, int] | None = None) -> bytes:
    """The CODEMAP section: the codemap's blocks with starts relative to the image base.

    ``marks`` adds compiler flag bits per block start (virtual address).
    """
    marks = marks or {}
    return pack_section(SectionKind.CODEMAP, (
        CodemapEntry(b.start - image_base, b.length, b.instructions, b.reasons, b.flags | marks.get(b.start, 0))
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


# --- speed-profile: which blocks ---------------------------------------------------


@dataclass(frozen=True)
class ProfileSelection:
    """The blocks speed-profile translates (codemap block starts, virtual addresses)."""

    hot: frozenset[int]  # a profile saw them run at least hot_threshold times
    reached: frozenset[int]  # statically reachable from hot blocks in their function, not hot themselves
    unmatched: int  # hot profile addresses inside no codemap block

    @property
    def blocks(self) -> frozenset[int]:
        return self.hot | self.reached

    def marks(self) -> dict[int, int]:
        marks = dict.fromkeys(self.reached, PROFILE_REACHED)
        marks.update(dict.fromkeys(self.hot, PROFILE_HOT))
        return marks


def function_ids(codemap: Codemap, fde_ranges: tuple[tuple[int, int], ...]) -> list[int]:
    """A function number per codemap block (same order): what static reachability may not leave.

    A function is one of ``fde_ranges`` (sorted, overlapping ranges merged, as
    discovery gives them: :attr:`Exploration.fde_ranges`).  Code outside every
    FDE range (PLT stubs, ``_start``, files without ``.eh_frame``) is split into
    regions: maximal runs of codemap blocks outside the FDE ranges where each
    block starts where the previous one ends.
    """
    starts = [begin for begin, _ in fde_ranges]
    ids: list[int] = []
    region = -1
    previous_end = None
    for block in codemap.blocks:
        i = bisect.bisect_right(starts, block.start) - 1
        if i >= 0 and block.start < fde_ranges[i][1]:
            ids.append(i)
            previous_end = None
            continue
        if block.start != previous_end:
            region -= 1  # negative numbers: regions outside FDEs
        ids.append(region)
        previous_end = block.end
    return ids


def select_profile_blocks(found: Exploration, counts: dict[int, int] | tuple[tuple[int, int], ...],
                          hot_threshold: int = DEFAULT_HOT_THRESHOLD) -> ProfileSelection:
    """The speed-profile blocks of one module, given its profile counts ({vaddr: executions}).

    Hot: the codemap block holding each profile address executed at least
    ``hot_threshold`` times (an engine may start a block inside a codemap block,
    e.g. after a page boundary; the codemap block then counts as executed).
    Reached: codemap blocks reachable from hot ones along the edges discovery
    found (:meth:`Explorer.local_successors`: direct jumps, conditional branches
    both ways and fall-through, also to a call's return address; never into a
    callee nor through an indirect jump), never out of the hot block's function
    (:func:`function_ids`).
    """
    blocks = found.codemap.blocks
    starts = [b.start for b in blocks]
    index_of = {s: i for i, s in enumerate(starts)}
    items = counts.items() if isinstance(counts, dict) else counts
    hot: set[int] = set()
    unmatched = 0
    for vaddr, count in items:
        if count < hot_threshold:
            continue
        i = bisect.bisect_right(starts, vaddr) - 1
        if i >= 0 and vaddr < blocks[i].end:
            hot.add(i)
        else:
            unmatched += 1
    if not hot:
        return ProfileSelection(frozenset(), frozenset(), unmatched)
    functions = function_ids(found.codemap, found.fde_ranges)
    successors = found.successors
    seen = set(hot)
    work = sorted(hot)
    while work:
        i = work.pop()
        for target in successors[starts[i]]:
            j = index_of.get(target)
            if j is not None and j not in seen and functions[j] == functions[i]:
                seen.add(j)
                work.append(j)
    return ProfileSelection(frozenset(starts[i] for i in hot), frozenset(starts[i] for i in seen - hot), unmatched)


def module_profile_for(profile: Profile | None, identity: ModuleIdentity, name: str) -> ModuleProfile | None:
    """The profile of the module with this identity, if the profile has one."""
    if profile is None:
        return None
    module = profile.module(identity.file_id)
    if module is not None and module.content_hash != identity.content_hash:
        raise FexaotError(name, f"the profile's module {module.name} has FileId {identity.file_id:016x} but "
                                f"another content hash ({module.content_hash.hex()})")
    return module


# --- compile ---------------------------------------------------------------------


def compile_module(host_path: str, display_name: str | None = None, config: TranslatorConfig | None = None,
                   filter: Filter = Filter.VERIFY, profile: Profile | None = None,
                   hot_threshold: int = DEFAULT_HOT_THRESHOLD) -> ModuleImage:
    """The module image of one ELF file (``display_name`` names it in errors).

    ``profile`` is read only by ``Filter.SPEED_PROFILE``, whose codemap is scoped
    to the functions holding hot blocks; a module with none (or no profile) gets
    an empty codemap and no code.
    """
    # One read of the file: identity, codemap and guest code all come from the
    # same bytes, even if the file is replaced while it is compiled.
    image = ElfImage(host_path, display_name or host_path)
    identity = identity_of_bytes(image.data)
    facts = ElfFacts.from_elf(image.info)
    requests = None
    marks = None
    if filter == Filter.SPEED_PROFILE:
        module = module_profile_for(profile, identity, display_name or host_path)
        counts = module.blocks if module is not None else ()
        # Discovery is the fixed cost of every compile (~5 s of python3.11's bundle):
        # speed-profile pays it for the functions it can translate only.
        found = explore_image(image, within=[vaddr for vaddr, n in counts if n >= hot_threshold])
        codemap = found.codemap
        if codemap.blocks:
            selection = select_profile_blocks(found, counts, hot_threshold)
            chosen = selection.blocks
            # Reached blocks ran in no profiled run: they get the translation without
            # the IR passes, which is ~17% quicker to build and ~2% larger.
            hot = selection.hot
            requests = [BlockRequest(b.start, b.length, b.start in hot) for b in codemap.blocks if b.start in chosen]
            marks = selection.marks()
    else:
        codemap = codemap_of_image(image)
        if filter == Filter.SPEED:
            requests = [BlockRequest(b.start, b.length) for b in codemap.blocks]
    sections = {SectionKind.CODEMAP: codemap_section(codemap, facts.image_base, marks)}
    if requests:
        config = config or TranslatorConfig()
        translation = translate_module(guest_code(image, facts.image_base), requests,
                                       memory_order=config.memory_order, features=config.cpu_features)
        sections.update(translation_sections(translation, facts.image_base))
    return ModuleImage(identity=identity, name=os.path.basename(host_path), facts=facts, sections=sections)


def compile_file(host_path: str, output: str, config: TranslatorConfig, filter: Filter,
                 display_name: str | None = None, profile: Profile | None = None,
                 hot_threshold: int = DEFAULT_HOT_THRESHOLD) -> None:
    """Write the per-object cache of ``host_path`` to ``output`` (atomically)."""
    image = compile_module(host_path, display_name, config, filter, profile, hot_threshold)
    write_cache(output, config_id(config), filter, [image])
