"""Describe a cache file for people (rich) and for machines (JSON).

:func:`summarize` reads an open :class:`CacheFile` into a :class:`CacheSummary`
(with each module's translation coverage); :func:`as_json` and :func:`render`
only present it.  :func:`block_listing` puts one block's guest instructions
beside its AArch64 code (``fexaot inspect --block``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from fexaot_tool.cache.format import BlockIndexEntry, SectionKind, Untranslatable
from fexaot_tool.cache.reader import CachedModule, CacheFile
from fexaot_tool.elf.reader import ET_DYN, ET_EXEC

_E_TYPES = {ET_EXEC: "ET_EXEC", ET_DYN: "ET_DYN"}


@dataclass(frozen=True)
class SectionSummary:
    kind: SectionKind
    size: int  # bytes
    entries: int | None  # None for STRINGS and CODE


@dataclass(frozen=True)
class Coverage:
    """How much of a module's codemap the translator covered."""

    codemap_blocks: int
    translated: int  # blocks with code (in full or a prefix)
    in_full: int  # blocks with code and no UNTRANSLATABLE entry
    codemap_instructions: int
    instructions_in_full: int  # guest instructions of the blocks translated in full
    code_bytes: int
    reasons: tuple[tuple[str, int], ...]  # untranslatable reasons, most frequent first
    details: tuple[tuple[str, int], ...]  # the most frequent stopping instructions (mnemonic)
    # Blocks stopped by an instruction that needs a CPUID feature the guest is not told about
    # (extension-not-advertised): code the guest does not run, counted apart.
    extension_blocks: int = 0

    @property
    def percent_in_full(self) -> float:
        return 100.0 * self.in_full / self.codemap_blocks if self.codemap_blocks else 0.0

    @property
    def percent_in_full_advertised(self) -> float:
        """Blocks translated in full among those whose instructions the CPUID model advertises."""
        reachable = self.codemap_blocks - self.extension_blocks
        return 100.0 * self.in_full / reachable if reachable else 0.0


def coverage(module: CachedModule) -> Coverage:
    from fexaot_tool.translate import REASON_NAMES
    from fexaot_tool.translate.builder import REASON_EXTENSION

    codemap = {e.start: e.instruction_count for e in module.records(SectionKind.CODEMAP)}
    translated = {e.guest_offset for e in module.records(SectionKind.BLOCK_INDEX)}
    strings = bytes(module.section(SectionKind.STRINGS))
    partial: set[int] = set()
    reasons: Counter[str] = Counter()
    details: Counter[str] = Counter()
    extension = 0
    for u in module.records(SectionKind.UNTRANSLATABLE):
        partial.add(u.guest_offset)
        reasons[REASON_NAMES.get(u.reason, str(u.reason))] += 1
        extension += u.reason == REASON_EXTENSION
        text = strings[u.detail_offset:u.detail_offset + u.detail_size].decode("utf-8", "replace")
        details[text.split(" ")[0] if text else "?"] += 1
    in_full = translated - partial
    return Coverage(len(codemap), len(translated), len(in_full), sum(codemap.values()),
                    sum(codemap.get(s, 0) for s in in_full), module.section_info(SectionKind.CODE).size,
                    tuple(reasons.most_common()), tuple(details.most_common(15)), extension)


@dataclass(frozen=True)
class ModuleSummary:
    name: str
    file_id: int
    content_hash: bytes
    file_size: int  # of the ELF file
    e_type: int
    e_entry: int
    image_base: int
    build_id: bytes
    region_offset: int
    region_size: int
    sections: tuple[SectionSummary, ...]
    coverage: Coverage
    # speed-profile: codemap blocks the compiler chose because a profile saw them run
    # (PROFILE_HOT) and because they are reachable from those inside their function.
    from_profile: int = 0
    from_reachability: int = 0


@dataclass(frozen=True)
class CacheSummary:
    path: str
    format_version: int
    config_id: int
    filter: str
    file_size: int
    verified: bool  # True when every section entry was checked too (verify_all)
    modules: tuple[ModuleSummary, ...]


def summarize(cache: CacheFile, *, verified: bool = False) -> CacheSummary:
    """Summarize every module (each module's region checksum is checked on the way)."""
    from fexaot_tool.cache.compile import PROFILE_HOT, PROFILE_REACHED

    modules = []
    for m in (cache.module(e.file_id) for e in cache.modules):
        sections = tuple(SectionSummary(s.kind, s.size, s.count) for s in m.sections)
        e = m.entry
        flags = [c.flags for c in m.records(SectionKind.CODEMAP)]
        modules.append(ModuleSummary(m.name, e.file_id, e.content_hash, e.file_size, m.facts.e_type,
                                     m.facts.e_entry, m.facts.image_base, m.facts.build_id,
                                     e.region_offset, e.region_size, sections, coverage(m),
                                     sum(1 for f in flags if f & PROFILE_HOT),
                                     sum(1 for f in flags if f & PROFILE_REACHED)))
    return CacheSummary(cache.path, cache.format_version, cache.config_id, cache.filter.label,
                        cache.file_size, verified, tuple(modules))


def as_json(summary: CacheSummary) -> dict:
    """A JSON-ready dict; 64-bit ids and hashes are lower-case hex strings."""
    return {
        "path": summary.path,
        "format_version": summary.format_version,
        "config_id": f"{summary.config_id:016x}",
        "filter": summary.filter,
        "file_size": summary.file_size,
        "verified": summary.verified,
        "modules": [
            {
                "name": m.name,
                "file_id": f"{m.file_id:016x}",
                "content_hash": m.content_hash.hex(),
                "file_size": m.file_size,
                "e_type": _E_TYPES.get(m.e_type, m.e_type),
                "e_entry": f"{m.e_entry:#x}",
                "image_base": f"{m.image_base:#x}",
                "build_id": m.build_id.hex() or None,
                "region_offset": m.region_offset,
                "region_size": m.region_size,
                "sections": {s.kind.label: {"bytes": s.size, "entries": s.entries} for s in m.sections},
                "selected_blocks": {"from_profile": m.from_profile, "from_reachability": m.from_reachability},
                "coverage": {
                    "codemap_blocks": m.coverage.codemap_blocks,
                    "translated": m.coverage.translated,
                    "in_full": m.coverage.in_full,
                    "percent_in_full": round(m.coverage.percent_in_full, 2),
                    "extension_not_advertised_blocks": m.coverage.extension_blocks,
                    "percent_in_full_advertised": round(m.coverage.percent_in_full_advertised, 2),
                    "codemap_instructions": m.coverage.codemap_instructions,
                    "instructions_in_full": m.coverage.instructions_in_full,
                    "code_bytes": m.coverage.code_bytes,
                    "untranslatable_reasons": dict(m.coverage.reasons),
                    "top_untranslatable_instructions": dict(m.coverage.details),
                },
            }
            for m in summary.modules
        ],
    }


def render(summary: CacheSummary, console: Console) -> None:
    checks = "every entry checked" if summary.verified else "checksums checked"
    console.print(f"[bold]{summary.path}[/bold]", highlight=False)
    console.print(f"  format v{summary.format_version}, ConfigId {summary.config_id:016x}, filter {summary.filter}",
                  highlight=False)
    console.print(f"  {summary.file_size:,} bytes, {len(summary.modules)} module(s), {checks}", highlight=False)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("module", no_wrap=True)
    table.add_column("FileId", no_wrap=True)
    table.add_column("ELF bytes", justify="right", no_wrap=True)
    table.add_column("sections (entries or bytes)")
    for m in summary.modules:
        sections = ", ".join(
            f"{s.kind.label} {s.entries:,}" if s.entries is not None else f"{s.kind.label} {s.size:,} B"
            for s in m.sections
        )
        table.add_row(m.name, f"{m.file_id:016x}", f"{m.file_size:,}", sections)
    console.print(table)
    if summary.filter == "speed-profile":
        chosen = Table(title="speed-profile: blocks chosen (from profiles / statically reachable in their function) "
                             "of the codemap, which covers the functions profiles saw run",
                       box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
        for column in ("module", "codemap blocks", "from profile", "reachable", "chosen", "%"):
            chosen.add_column(column, justify="left" if column == "module" else "right")
        for m in summary.modules:
            total = m.from_profile + m.from_reachability
            share = 100.0 * total / m.coverage.codemap_blocks if m.coverage.codemap_blocks else 0.0
            chosen.add_row(m.name, f"{m.coverage.codemap_blocks:,}", f"{m.from_profile:,}",
                           f"{m.from_reachability:,}", f"{total:,}", f"{share:.1f}")
        console.print(chosen)
    if any(m.coverage.translated for m in summary.modules):
        cov = Table(title="translation coverage (blocks translated in full / codemap blocks)", box=box.SIMPLE_HEAD,
                    show_edge=False, pad_edge=False)
        for column in ("module", "blocks", "in full", "%", "% advertised", "partial", "none",
                       "untranslatable reasons (ranked)"):
            cov.add_column(column, justify="left" if column in ("module", "untranslatable reasons (ranked)")
                           else "right")
        for m in summary.modules:
            c = m.coverage
            cov.add_row(m.name, f"{c.codemap_blocks:,}", f"{c.in_full:,}", f"{c.percent_in_full:.1f}",
                        f"{c.percent_in_full_advertised:.1f}", f"{c.translated - c.in_full:,}", f"{c.codemap_blocks - c.translated:,}",
                        ", ".join(f"{name} {n:,}" for name, n in c.reasons))
        console.print(cov)


@dataclass(frozen=True)
class BlockListing:
    module: str
    guest_offset: int
    entry: BlockIndexEntry | None
    untranslatable: Untranslatable | None
    detail: str
    guest: tuple[str, ...]  # "address: instruction" lines, empty without the ELF file
    host: tuple[str, ...]  # "offset: instruction" lines, literals marked with their relocation


def block_listing(module: CachedModule, guest_offset: int, guest_bytes: bytes | None) -> BlockListing:
    """One block's guest instructions (decoded from ``guest_bytes`` if given) and AArch64 code."""
    import capstone
    import iced_x86

    entry = module.find_block(guest_offset)
    untranslatable = next((u for u in module.records(SectionKind.UNTRANSLATABLE) if u.guest_offset == guest_offset),
                          None)
    detail = ""
    if untranslatable is not None:
        strings = module.section(SectionKind.STRINGS)
        detail = bytes(strings[untranslatable.detail_offset:untranslatable.detail_offset
                               + untranslatable.detail_size]).decode("utf-8", "replace")
    base = module.facts.image_base
    guest: list[str] = []
    if guest_bytes is not None:
        formatter = iced_x86.Formatter(iced_x86.FormatterSyntax.INTEL)
        for ins in iced_x86.Decoder(64, guest_bytes, ip=base + guest_offset):
            guest.append(f"{ins.ip:#x}: {formatter.format(ins)}")
    host: list[str] = []
    if entry is not None:
        code = bytes(module.section(SectionKind.CODE)[entry.code_offset:entry.code_offset + entry.code_size])
        literals = {r.code_offset - entry.code_offset: r for r in module.records(SectionKind.RELOCATIONS)
                    if entry.code_offset <= r.code_offset < entry.code_offset + entry.code_size}
        cs = capstone.Cs(capstone.CS_ARCH_ARM64, capstone.CS_MODE_ARM)
        offset = 0
        while offset < len(code):
            if offset in literals:
                r = literals[offset]
                host.append(f"{offset:#06x}: .quad load_base + {base + r.addend:#x}  (relocation kind {r.kind})")
                offset += 8
                continue
            decoded = next(cs.disasm_lite(code[offset:offset + 4], offset), None)
            text = f"{decoded[2]} {decoded[3]}".strip() if decoded else f".word {code[offset:offset + 4].hex()}"
            host.append(f"{offset:#06x}: {text}")
            offset += 4
    return BlockListing(module.name, guest_offset, entry, untranslatable, detail, tuple(guest), tuple(host))


def render_block(listing: BlockListing, console: Console) -> None:
    e = listing.entry
    console.print(f"[bold]{listing.module}[/bold] block at guest offset {listing.guest_offset:#x}", highlight=False)
    if e is not None:
        console.print(f"  {e.guest_size} guest bytes translated, {e.code_size} bytes of AArch64 code at CODE+"
                      f"{e.code_offset:#x}, guest hash {e.guest_hash:016x}", highlight=False)
    if listing.untranslatable is not None:
        what = "prefix translated, then exits UNTRANSLATABLE at" if e is not None else "not translated:"
        console.print(f"  {what} {listing.detail}", highlight=False)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("x86-64 (guest)" if listing.guest else "x86-64 (guest; pass --elf to decode)", no_wrap=True)
    table.add_column("AArch64 (cached code)", no_wrap=True)
    for i in range(max(len(listing.guest), len(listing.host))):
        # Text, not markup: "[x1]" is an operand here, not a style.
        table.add_row(Text(listing.guest[i] if i < len(listing.guest) else ""),
                      Text(listing.host[i] if i < len(listing.host) else ""))
    console.print(table)
