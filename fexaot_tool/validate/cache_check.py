"""``fexaot validate``: differential execution of the blocks of a cache file.

A cache records each module by basename and content hash only.  This module
finds each module's ELF file (``--elf`` files, then the rootfs's PATH and
library directories), checks its identity with :func:`cache.key.module_identity`,
maps its PT_LOAD segments at a load base unlike the translator's (to prove the
code relocatable), installs the module's CODE with its RELOCATIONS applied, and
runs a seeded sample of blocks through :class:`DifferentialHarness`.
"""

from __future__ import annotations

import os
import random
import struct
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace

import iced_x86
import xxhash

from fexaot_tool.cache.format import BlockIndexEntry, SectionKind
from fexaot_tool.cache.key import ModuleIdentity, module_identity
from fexaot_tool.cache.reader import CachedModule, CacheFile, CacheRejected
from fexaot_tool.elf import read_elf
from fexaot_tool.elf.closure import ld_so_conf_dirs
from fexaot_tool.elf.reader import PT_LOAD, ElfInfo
from fexaot_tool.elf.rootfs import Rootfs
from fexaot_tool.errors import FexaotError
from fexaot_tool.translate.block import is_x87
from fexaot_tool.validate.differential import (
    GUEST_LIMIT, PAGE, BlockUnderTest, CaseResult, DifferentialHarness, Difference, block_rng,
    decode_block, instruction_length, make_states, register_roles,
)
from fexaot_tool.validate.guest_abi import RelocationKind

ET_EXEC = 2
# ET_DYN modules are mapped from here, one 4 GiB slot each: not 0 and not the
# 0x5555_5555_4000 / 0x7fxx_xxxx_xxxx bases a translator or loader might assume.
LOAD_BASE = 0x2345_0000_0000
LOAD_SLOT = 0x1_0000_0000


class ModuleElfNotFound(FexaotError):
    """No file in the rootfs (or given with --elf) is the ELF file a cache module was built from."""


class BlockSpecError(FexaotError):
    """A --block argument that names no block of the cache."""


# --- report ----------------------------------------------------------------------


@dataclass(frozen=True)
class Mismatch:
    """A block whose translation disagrees with its guest bytes, with a reproducer."""

    module: str
    guest_offset: int
    guest_address: int
    load_base: int
    guest_bytes: str  # hex
    code: str  # hex, relocated as installed
    instructions: tuple[str, ...]
    state: dict[str, str] | None  # None when no case ran (a guest_hash mismatch)
    differences: tuple[Difference, ...]
    failing_cases: int
    cases: int

    def as_dict(self) -> dict:
        return {
            "module": self.module, "guest_offset": f"{self.guest_offset:#x}",
            "guest_address": f"{self.guest_address:#x}", "load_base": f"{self.load_base:#x}",
            "guest_bytes": self.guest_bytes, "aarch64_code": self.code, "instructions": list(self.instructions),
            "state": self.state, "failing_cases": self.failing_cases, "cases": self.cases,
            "differences": [{"field": d.field, "expected": d.expected, "actual": d.actual} for d in self.differences],
        }


@dataclass(frozen=True)
class SkippedBlock:
    module: str
    guest_offset: int
    reason: str


@dataclass(frozen=True)
class ValidationReport:
    cache: str
    seed: int
    states_per_block: int
    modules: tuple[str, ...]  # name (ELF path)
    blocks_in_cache: int
    untranslatable_blocks: int
    blocks_sampled: int
    blocks_validated: int
    cases_run: int
    cases_skipped: dict[str, int]
    mismatches: tuple[Mismatch, ...]
    skipped_blocks: tuple[SkippedBlock, ...]
    seconds: float
    case_seconds: float
    # Cases where unicorn's x86 engine and the translation disagreed and the host CPU, run natively
    # from the same state, agreed with the translation (native.py): unicorn deviations, not mismatches.
    unicorn_deviations: int = 0
    native_referee: bool = False  # whether the host CPU could be asked

    @property
    def ok(self) -> bool:
        return not self.mismatches

    @property
    def microseconds_per_case(self) -> float:
        return self.case_seconds / self.cases_run * 1e6 if self.cases_run else 0.0

    def as_dict(self) -> dict:
        return {
            "cache": self.cache, "seed": self.seed, "states_per_block": self.states_per_block,
            "modules": list(self.modules), "blocks_in_cache": self.blocks_in_cache,
            "untranslatable_blocks": self.untranslatable_blocks, "blocks_sampled": self.blocks_sampled,
            "blocks_validated": self.blocks_validated, "cases_run": self.cases_run,
            "cases_skipped": dict(sorted(self.cases_skipped.items())),
            "mismatches": [m.as_dict() for m in self.mismatches],
            "skipped_blocks": [{"module": s.module, "guest_offset": f"{s.guest_offset:#x}", "reason": s.reason}
                               for s in self.skipped_blocks],
            "unicorn_deviations_adjudicated_by_host_cpu": self.unicorn_deviations,
            "native_referee": self.native_referee,
            "seconds": round(self.seconds, 3), "microseconds_per_case": round(self.microseconds_per_case, 1),
            "ok": self.ok,
        }


# --- finding the ELF files -------------------------------------------------------


def find_module_elf(cache_path: str, module: CachedModule, rootfs: Rootfs, explicit: Sequence[str],
                    identities: dict[str, ModuleIdentity]) -> str:
    """The host path of the ELF file ``module`` was built from, its identity checked.

    ``identities`` memoizes hashes across modules (a file given with --elf is hashed once).
    """
    want = module.identity
    candidates = list(explicit)
    found = rootfs.which(module.name)
    if found is not None:
        candidates.append(rootfs.host_path(found))
    for directory in ld_so_conf_dirs(rootfs):
        guest = f"{directory.rstrip('/')}/{module.name}"
        if rootfs.is_file(guest):
            candidates.append(rootfs.host_path(guest))
    wrong = []
    for path in dict.fromkeys(candidates):
        if path not in identities:
            identities[path] = module_identity(path)
        identity = identities[path]
        if identity.content_hash == want.content_hash:
            return path
        if os.path.basename(path) == module.name:
            wrong.append(f"{path} has FileId {identity.file_id:016x}")
    if wrong:
        raise CacheRejected(cache_path, "content-mismatch",
                            f"module {module.name} was built from FileId {want.file_id:016x}, but {'; '.join(wrong)}")
    raise ModuleElfNotFound(cache_path, f"module {module.name} (FileId {want.file_id:016x}) not found in rootfs "
                                        f"{rootfs.root} (PATH and library directories); give it with --elf FILE")


# --- installing a module ---------------------------------------------------------


@dataclass(frozen=True)
class LoadedModule:
    name: str
    elf_path: str
    load_base: int
    image_base: int
    image_start: int  # run-time address of image[0]
    image: bytes  # the PT_LOAD segments as mapped
    code_address: int  # where CODE was installed
    code: bytes  # CODE after relocation
    problem: str | None  # why no block of the module can run


def load_module(harness: DifferentialHarness, module: CachedModule, elf_path: str, slot: int) -> LoadedModule:
    info = read_elf(elf_path)
    facts = module.facts
    load_base = 0 if info.e_type == ET_EXEC else LOAD_BASE + slot * LOAD_SLOT
    image_start, image = _segment_image(info, elf_path, load_base)
    harness.map_guest(image_start, image)
    code = bytearray(module.section(SectionKind.CODE))
    problem = None
    for reloc in module.records(SectionKind.RELOCATIONS):
        if reloc.kind != RelocationKind.GUEST_ABS64:
            problem = f"unknown relocation kind {reloc.kind} at code offset {reloc.code_offset:#x}"
            continue
        if reloc.code_offset + 8 > len(code):
            problem = f"relocation at code offset {reloc.code_offset:#x} runs past CODE"
            continue
        struct.pack_into("<Q", code, reloc.code_offset, (load_base + facts.image_base + reloc.addend) & (2**64 - 1))
    code_address = harness.install_code(bytes(code))
    return LoadedModule(module.name, elf_path, load_base, facts.image_base, image_start, bytes(image),
                        code_address, bytes(code), problem)


def _segment_image(info: ElfInfo, path: str, load_base: int) -> tuple[int, bytearray]:
    loads = [s for s in info.segments if s.p_type == PT_LOAD]
    start = min(s.p_vaddr for s in loads) & ~(PAGE - 1)
    end = max(s.p_vaddr + s.p_memsz for s in loads)
    end = -(-end // PAGE) * PAGE
    if load_base + end > GUEST_LIMIT:
        raise FexaotError(path, f"PT_LOAD segments reach {load_base + end:#x}, above the validator's guest limit")
    image = bytearray(end - start)
    with open(path, "rb") as f:
        for s in loads:
            f.seek(s.p_offset)
            data = f.read(s.p_filesz)
            image[s.p_vaddr - start:s.p_vaddr - start + len(data)] = data
    return load_base + start, image


def _guest_bytes(loaded: LoadedModule, entry: BlockIndexEntry) -> bytes | None:
    """A block's guest bytes in the loaded image (None: the range lies outside the PT_LOAD segments)."""
    at = loaded.load_base + loaded.image_base + entry.guest_offset - loaded.image_start
    if at < 0 or at + entry.guest_size > len(loaded.image):
        return None
    return loaded.image[at:at + entry.guest_size]


def prepare_block(loaded: LoadedModule, entry: BlockIndexEntry) -> BlockUnderTest | str | Mismatch:
    """The block ready to run, or a skip reason, or a Mismatch when its guest bytes are not what was translated."""
    guest_address = loaded.load_base + loaded.image_base + entry.guest_offset
    guest = _guest_bytes(loaded, entry)
    if guest is None:
        return f"guest range [{entry.guest_offset:#x}, +{entry.guest_size:#x}) lies outside the PT_LOAD segments"
    code = loaded.code[entry.code_offset:entry.code_offset + entry.code_size]
    if xxhash.xxh3_64_intdigest(guest) != entry.guest_hash:
        return Mismatch(loaded.name, entry.guest_offset, guest_address, loaded.load_base, guest.hex(), code.hex(),
                        (), None, (Difference("guest_hash", f"{xxhash.xxh3_64_intdigest(guest):016x}",
                                              f"{entry.guest_hash:016x}"),), 1, 0)
    instructions = decode_block(guest, guest_address)
    if isinstance(instructions, str):
        return instructions
    pointers, indexes, counts, reads_df = register_roles(guest, guest_address)
    end = guest_address + entry.guest_size - loaded.image_start
    return BlockUnderTest(loaded.name, entry.guest_offset, guest_address, guest,
                          loaded.code_address + entry.code_offset, code, instructions,
                          pointers, indexes, counts, reads_df,
                          instruction_length(loaded.image[end:end + 15], guest_address + entry.guest_size))


# --- running ---------------------------------------------------------------------


def parse_block_spec(text: str) -> tuple[str | None, int]:
    """``0x1234`` or ``libz.so.1:0x1234`` -> (module name or None, guest offset)."""
    name, sep, offset = text.rpartition(":")
    try:
        return (name if sep else None), int(offset, 0)
    except ValueError:
        raise BlockSpecError(None, f"--block {text!r}: expected OFFSET or MODULE:OFFSET (hex with 0x)") from None


def validate_cache(cache_path: str | os.PathLike, *, rootfs: str = "/", elves: Sequence[str] = (),
                   sample: int | None = None, states: int = 20, seed: int = 0,
                   blocks: Sequence[str] = (), x87_only: bool = False) -> ValidationReport:
    started = time.perf_counter()
    path = os.fspath(cache_path)
    root = Rootfs(rootfs)
    for elf in elves:
        if not os.path.isfile(elf):
            raise ModuleElfNotFound(elf, "--elf: no such file")
    with CacheFile.open(path) as cache:
        # With x87_only the sample is drawn after the filter, which needs every module's guest bytes.
        modules, chosen, total, untranslatable = _choose_blocks(cache, blocks, None if x87_only else sample, seed)
        needed = {file_id for file_id, _ in chosen}
        harness = DifferentialHarness(seed)
        identities: dict[str, ModuleIdentity] = {}
        loaded: dict[int, LoadedModule] = {}
        # Everything a case needs is copied out of the mapping here (code, image).
        for module in modules:
            if module.identity.file_id in needed:
                elf_path = find_module_elf(path, module, root, elves, identities)
                loaded[module.identity.file_id] = load_module(harness, module, elf_path, len(loaded))
        if x87_only:
            chosen = [(file_id, e) for file_id, e in chosen if _touches_x87(loaded[file_id], e)]
            if sample is not None and sample < len(chosen):
                chosen = [chosen[i] for i in sorted(random.Random(seed).sample(range(len(chosen)), sample))]

    mismatches: list[Mismatch] = []
    skipped: list[SkippedBlock] = []
    case_skips: Counter[str] = Counter()
    cases = validated = 0
    case_time = 0.0
    deviations = 0  # cases where unicorn x86 disagreed but the host CPU agrees with the translation
    for file_id, entry in chosen:
        lm = loaded[file_id]
        if lm.problem:
            skipped.append(SkippedBlock(lm.name, entry.guest_offset, lm.problem))
            continue
        block = prepare_block(lm, entry)
        if isinstance(block, str):
            skipped.append(SkippedBlock(lm.name, entry.guest_offset, block))
            continue
        if isinstance(block, Mismatch):
            mismatches.append(block)
            continue
        t0 = time.perf_counter()  # a case's time includes making its state
        results = [harness.run_case(block, s)
                   for s in make_states(block, block_rng(seed, lm.name, entry.guest_offset), states,
                                        unicorn_only=harness.native is None or not harness.native.available)]
        case_time += time.perf_counter() - t0
        cases += len(results)
        ran = [r for r in results if r.skipped is None]
        for r in results:
            if r.skipped is not None:
                case_skips[r.skipped.split(":")[0]] += 1
            if r.unicorn_deviations:
                deviations += 1
        if not ran:
            skipped.append(SkippedBlock(lm.name, entry.guest_offset,
                                        f"no state ran: {results[0].skipped if results else 'no states'}"))
            continue
        validated += 1
        failing = [r for r in ran if r.differences]
        if failing:
            first = shrink(harness, block, failing[0])
            mismatches.append(Mismatch(
                lm.name, entry.guest_offset, block.guest_address, lm.load_base, block.guest_bytes.hex(),
                block.code.hex(), tuple(f"{i.ip:#x}: {i.text}" for i in block.instructions),
                first.state.describe(), first.differences, len(failing), len(results)))
    return ValidationReport(
        path, seed, states, tuple(f"{m.name} ({m.elf_path})" for m in loaded.values()), total, untranslatable,
        len(chosen), validated, cases, dict(case_skips), tuple(mismatches), tuple(skipped),
        time.perf_counter() - started, case_time, deviations, harness.native is not None and harness.native.available)


def _touches_x87(loaded: LoadedModule, entry: BlockIndexEntry) -> bool:
    """Whether a block's guest bytes have an instruction that reads or writes x87 state."""
    guest = None if loaded.problem else _guest_bytes(loaded, entry)
    return guest is not None and any(is_x87(ins) for ins in iced_x86.Decoder(64, guest, ip=entry.guest_offset))


def _choose_blocks(cache: CacheFile, blocks: Sequence[str], sample: int | None, seed: int
                   ) -> tuple[list[CachedModule], list[tuple[int, BlockIndexEntry]], int, int]:
    """(modules, the (FileId, block) pairs to validate, translated blocks, untranslatable blocks)."""
    wanted = [parse_block_spec(b) for b in blocks]
    chosen: list[tuple[int, BlockIndexEntry]] = []
    total = untranslatable = 0
    modules: list[CachedModule] = []
    for entry in cache.modules:
        module = cache.module(entry.file_id)
        modules.append(module)
        index = list(module.records(SectionKind.BLOCK_INDEX))
        total += len(index)
        untranslatable += module.section_info(SectionKind.UNTRANSLATABLE).count or 0
        chosen += [(entry.file_id, e) for e in index
                   if not wanted or any(name in (None, module.name) and e.guest_offset == offset
                                        for name, offset in wanted)]
    if wanted and not chosen:
        raise BlockSpecError(cache.path, f"no translated block at {', '.join(blocks)}")
    if sample is not None and sample < len(chosen):
        picked = sorted(random.Random(seed).sample(range(len(chosen)), sample))
        chosen = [chosen[i] for i in picked]
    return modules, chosen, total, untranslatable


def shrink(harness: DifferentialHarness, block: BlockUnderTest, failing: CaseResult) -> CaseResult:
    """A simpler failing state: registers set to 0 one at a time while the case still fails.

    Fewer nonzero inputs make a reproducer one can read; the fields that differ
    may change (a smaller state can expose a different symptom of the same bug).
    """
    best = failing
    for n in range(16):
        if best.state.gpr[n] == 0 or n in block.pointer_registers:
            continue
        gpr = list(best.state.gpr)
        gpr[n] = 0
        trial = harness.run_case(block, replace(best.state, gpr=tuple(gpr)))
        if trial.skipped is None and trial.differences:
            best = trial
    return best

