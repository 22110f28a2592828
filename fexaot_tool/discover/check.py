"""Measure a codemap against ground truth: function-start recall, boundary precision, FDE coverage.

The truth is derived without the codemap's machinery, so that a shared mistake
cannot hide:

- true function starts: defined STT_FUNC/STT_GNU_IFUNC symbols of a symbol file
  (a detached debug file such as libc6-dbg's, or an unstripped build of the
  binary), read with pyelftools;
- true instruction boundaries: a capstone linear sweep from each true function
  start to the next one (or to the end of its section), i.e. what ``objdump -d``
  shows with those symbols;
- FDE ranges: pyelftools' own ``.eh_frame`` parser.

Recall = true function starts that are block starts / true function starts.
Precision = block starts on a true boundary / block starts inside the swept
ranges (block starts outside every symbol's range, e.g. in .plt, are counted
apart as unverifiable).  Coverage = bytes of FDE ranges inside a block / bytes
of FDE ranges; the rest is classified by what the bytes decode to.
"""

from __future__ import annotations

import bisect
import os
import time
from dataclasses import dataclass, field

import capstone
from elftools.common.exceptions import ELFError as PyElfError
from elftools.elf.elffile import ELFFile

from fexaot_tool.discover.build import build_codemap
from fexaot_tool.discover.codemap import Codemap, Flag
from fexaot_tool.errors import FexaotError

_FUNCTION_TYPES = ("STT_FUNC", "STT_LOOS", "STT_GNU_IFUNC")  # pyelftools names IFUNC STT_LOOS
_SHF_EXECINSTR = 0x4
_PADDING_MNEMONICS = frozenset({"nop", "int3", "xchg"})  # `xchg %ax,%ax` is gas's 2-byte nop


class SymbolFileError(FexaotError):
    """The symbol file cannot be read or does not match the binary."""


@dataclass(frozen=True)
class CheckReport:
    path: str
    symbols: str | None
    seconds: float  # build_codemap wall time
    blocks: int
    true_functions: int = 0
    found_functions: int = 0
    missed_functions: tuple[tuple[int, str], ...] = ()
    verifiable_starts: int = 0
    boundary_starts: int = 0
    false_starts: tuple[int, ...] = ()
    overlapping_false_starts: int = 0  # of false_starts, those in blocks flagged OVERLAPPING
    unverifiable_starts: int = 0
    fde_bytes: int = 0
    covered_fde_bytes: int = 0
    uncovered_by_cause: dict[str, int] = field(default_factory=dict)

    @property
    def recall(self) -> float | None:
        return self.found_functions / self.true_functions if self.true_functions else None

    @property
    def precision(self) -> float | None:
        return self.boundary_starts / self.verifiable_starts if self.verifiable_starts else None

    @property
    def coverage(self) -> float | None:
        return self.covered_fde_bytes / self.fde_bytes if self.fde_bytes else None

    def as_dict(self) -> dict:
        return {
            "path": self.path,
            "symbols": self.symbols,
            "build_seconds": round(self.seconds, 3),
            "blocks": self.blocks,
            "recall": self.recall,
            "true_functions": self.true_functions,
            "found_functions": self.found_functions,
            "missed_functions": [{"address": f"{a:#x}", "name": n} for a, n in self.missed_functions],
            "precision": self.precision,
            "verifiable_block_starts": self.verifiable_starts,
            "boundary_block_starts": self.boundary_starts,
            "false_block_starts": [f"{a:#x}" for a in self.false_starts],
            "false_block_starts_overlapping": self.overlapping_false_starts,
            "unverifiable_block_starts": self.unverifiable_starts,
            "coverage": self.coverage,
            "fde_bytes": self.fde_bytes,
            "covered_fde_bytes": self.covered_fde_bytes,
            "uncovered_fde_bytes_by_cause": dict(self.uncovered_by_cause),
        }


def default_symbol_file(elf: ELFFile) -> str | None:
    """The detached debug file the ELF's build-id names under /usr/lib/debug, if installed."""
    for section in elf.iter_sections():
        if section.name == ".note.gnu.build-id":
            for note in section.iter_notes():
                if note["n_type"] == "NT_GNU_BUILD_ID":
                    build_id = note["n_desc"]
                    candidate = f"/usr/lib/debug/.build-id/{build_id[:2]}/{build_id[2:]}.debug"
                    return candidate if os.path.exists(candidate) else None
    return None


def check_codemap(path: str, symbols: str | None = None, *, find_debug_file: bool = True) -> CheckReport:
    """Build the codemap of ``path`` and measure it (see the module docstring)."""
    started = time.perf_counter()
    codemap = build_codemap(path)
    seconds = time.perf_counter() - started
    try:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            code = _code_sections(elf)
            fde_ranges = _fde_ranges(elf)
            if symbols is None and find_debug_file:
                symbols = default_symbol_file(elf)
    except (PyElfError, OSError) as e:
        raise SymbolFileError(path, f"cannot read with pyelftools: {e}") from None
    report = dict(path=path, symbols=symbols, seconds=seconds, blocks=len(codemap.blocks))
    report.update(_coverage(codemap, fde_ranges, code))
    if symbols is not None:
        functions = _true_functions(symbols, code)
        report.update(_recall(codemap, functions))
        report.update(_precision(codemap, functions, code))
    return CheckReport(**report)


# -- truth -------------------------------------------------------------------


def _code_sections(elf: ELFFile) -> list[tuple[int, bytes]]:
    """(address, bytes) of the binary's executable sections."""
    return sorted((s["sh_addr"], s.data()) for s in elf.iter_sections()
                  if s["sh_flags"] & _SHF_EXECINSTR and s["sh_type"] == "SHT_PROGBITS" and s["sh_size"])


def _fde_ranges(elf: ELFFile) -> list[tuple[int, int]]:
    if not elf.has_dwarf_info():
        return []
    dwarf = elf.get_dwarf_info()
    if not dwarf.has_EH_CFI():
        return []
    out = []
    for entry in dwarf.EH_CFI_entries():
        header = getattr(entry, "header", None)  # ZERO terminators have none
        if header is not None and "initial_location" in header and header["address_range"]:
            out.append((header["initial_location"], header["initial_location"] + header["address_range"]))
    return _union(out)


def _true_functions(symbols: str, code: list[tuple[int, bytes]]) -> dict[int, str]:
    """Address -> name of every defined function symbol that lies in the binary's code."""
    starts = [a for a, _ in code]
    try:
        with open(symbols, "rb") as f:
            elf = ELFFile(f)
            out: dict[int, str] = {}
            for section in elf.iter_sections():
                if section["sh_type"] not in ("SHT_SYMTAB", "SHT_DYNSYM"):
                    continue
                for sym in section.iter_symbols():
                    if sym["st_info"]["type"] not in _FUNCTION_TYPES or sym["st_shndx"] == "SHN_UNDEF":
                        continue
                    address = sym["st_value"]
                    i = bisect.bisect_right(starts, address) - 1
                    if i >= 0 and address < code[i][0] + len(code[i][1]):
                        out.setdefault(address, sym.name)
    except (PyElfError, OSError) as e:
        raise SymbolFileError(symbols, f"cannot read symbols: {e}") from None
    if not out:
        raise SymbolFileError(symbols, "no function symbols inside the binary's executable sections "
                                       "(stripped, or the debug file of another build?)")
    return out


def _true_boundaries(functions: dict[int, str], code: list[tuple[int, bytes]]) -> tuple[set[int], list[tuple[int, int]]]:
    """Capstone linear sweep from each function start to the next: (instruction starts, swept ranges)."""
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    starts = sorted(functions)
    boundaries: set[int] = set()
    swept = []
    for base, data in code:
        end = base + len(data)
        inside = [a for a in starts if base <= a < end]
        for i, start in enumerate(inside):
            stop = inside[i + 1] if i + 1 < len(inside) else end
            swept.append((start, stop))
            at = start
            while at < stop:
                reached = at
                for address, size, _mnemonic, _ops in md.disasm_lite(data[at - base:stop - base], at):
                    boundaries.add(address)
                    reached = address + size
                if reached >= stop:
                    break
                at = reached + 1  # capstone stops at bytes it cannot decode: skip one, as objdump's (bad)
    return boundaries, _union(swept)


# -- measures ----------------------------------------------------------------


def _recall(codemap: Codemap, functions: dict[int, str]) -> dict:
    block_starts = {b.start for b in codemap.blocks}
    missed = tuple(sorted((a, n) for a, n in functions.items() if a not in block_starts))
    return dict(true_functions=len(functions), found_functions=len(functions) - len(missed), missed_functions=missed)


def _precision(codemap: Codemap, functions: dict[int, str], code: list[tuple[int, bytes]]) -> dict:
    boundaries, swept = _true_boundaries(functions, code)
    swept_starts = [a for a, _ in swept]
    verifiable = good = overlapping = 0
    false = []
    for b in codemap.blocks:
        i = bisect.bisect_right(swept_starts, b.start) - 1
        if i < 0 or b.start >= swept[i][1]:
            continue
        verifiable += 1
        if b.start in boundaries:
            good += 1
        else:
            false.append(b.start)
            overlapping += bool(b.flags & Flag.OVERLAPPING)
    return dict(verifiable_starts=verifiable, boundary_starts=good, false_starts=tuple(false),
                overlapping_false_starts=overlapping, unverifiable_starts=len(codemap.blocks) - verifiable)


def _coverage(codemap: Codemap, fde_ranges: list[tuple[int, int]], code: list[tuple[int, bytes]]) -> dict:
    blocks = _union((b.start, b.end) for b in codemap.blocks)
    total = sum(e - b for b, e in fde_ranges)
    uncovered = _subtract(fde_ranges, blocks)
    causes: dict[str, int] = {}
    for b, e in uncovered:
        cause = _classify(b, e, code)
        causes[cause] = causes.get(cause, 0) + (e - b)
    return dict(fde_bytes=total, covered_fde_bytes=total - sum(e - b for b, e in uncovered), uncovered_by_cause=causes)


def _classify(begin: int, end: int, code: list[tuple[int, bytes]]) -> str:
    """Why bytes of an FDE range are in no block, judged by what capstone makes of them."""
    for base, data in code:
        if base <= begin < base + len(data):
            chunk = data[begin - base:end - base]
            break
    else:
        return "outside executable sections"
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    decoded = list(md.disasm_lite(chunk, begin))
    if sum(size for _a, size, _m, _o in decoded) < len(chunk):
        return "bytes that do not decode"
    if all(m in _PADDING_MNEMONICS or m.startswith("nop") for _a, _s, m, _o in decoded):
        return "padding (nop/int3)"
    return "decodable code in no block"


def _union(ranges) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for b, e in sorted(ranges):
        if out and b <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([b, e])
    return [(b, e) for b, e in out]


def _subtract(ranges: list[tuple[int, int]], holes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Parts of sorted disjoint ``ranges`` not inside sorted disjoint ``holes``."""
    out = []
    j = 0
    for b, e in ranges:
        while j < len(holes) and holes[j][1] <= b:
            j += 1
        k, at = j, b
        while k < len(holes) and holes[k][0] < e:
            if holes[k][0] > at:
                out.append((at, holes[k][0]))
            at = max(at, holes[k][1])
            k += 1
        if at < e:
            out.append((at, e))
    return out
