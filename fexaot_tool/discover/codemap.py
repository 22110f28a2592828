"""The codemap: every guest block discovery found in one module, and its binary layout.

A block is a maximal straight-line run of instructions that starts at a block
start and ends at a control-flow instruction (calls included) or just before the
next block start; docs/codemap.md gives the definitions and the byte layout that
:meth:`Codemap.encode` writes (the CODEMAP section of a cache file).
"""

from __future__ import annotations

import bisect
import struct
from collections import Counter
from dataclasses import dataclass
from enum import IntFlag

from fexaot_tool.errors import FexaotError


class Reason(IntFlag):
    """Why a block start is known.  Bits 0-15 are seeds (named by the ELF file), 16-31 edges."""

    ENTRY = 1 << 0  # e_entry
    INIT_FINI = 1 << 1  # DT_INIT, DT_FINI, .init, .fini
    INIT_ARRAY = 1 << 2  # entries of DT_PREINIT_ARRAY, DT_INIT_ARRAY, DT_FINI_ARRAY
    DYNSYM = 1 << 3  # defined STT_FUNC / STT_GNU_IFUNC in .dynsym
    SYMTAB = 1 << 4  # defined STT_FUNC / STT_GNU_IFUNC in .symtab
    IFUNC = 1 << 5  # the symbol is STT_GNU_IFUNC: this is its resolver
    FDE = 1 << 6  # pc_begin of an FDE in .eh_frame
    LANDING_PAD = 1 << 7  # landing pad of an LSDA call-site entry
    PLT = 1 << 8  # a PLT stub, or the lazy-binding address a JUMP_SLOT holds
    RELOCATION = 1 << 9  # target of R_X86_64_RELATIVE, RELR, R_X86_64_64/GLOB_DAT to a local symbol
    IRELATIVE = 1 << 10  # resolver named by R_X86_64_IRELATIVE
    CODE_POINTER = 1 << 11  # `lea reg, [rip+disp]` naming a known instruction start
    CALL_TARGET = 1 << 16  # target of a direct call
    JUMP_TARGET = 1 << 17  # target of a direct jmp/jcc/loop/xbegin, or of a jmp through a known pointer
    FALL_THROUGH = 1 << 18  # after a jcc, call, syscall; or where two decoded paths meet
    JUMP_TABLE = 1 << 19  # an entry of a resolved jump table
    SWEEP = 1 << 20  # the linear sweep of an FDE range resumes here after a jmp/ret/ud2
    STRING_REPEAT = 1 << 21  # a rep string instruction, a block of its own (engines loop on it)


SEED_REASONS = 0xFFFF  # the Reason bits that are seeds; the others are edges found by decoding


class Flag(IntFlag):
    """Facts about a block that a translator or a reader of the summary wants to know."""

    JUMP_TABLE = 1 << 0  # ends in an indirect jmp resolved as a jump table bounded by a cmp/ja (or movzx/and)
    JUMP_TABLE_GUESSED = 1 << 1  # ... as a jump table bounded only by the function's FDE ranges and boundaries
    UNRESOLVED_INDIRECT_JUMP = 1 << 2  # ends in an indirect jmp whose targets are unknown
    GOT_JUMP = 1 << 3  # ends in `jmp [slot]` for a slot the dynamic loader fills (PLT, tail call to an import)
    KNOWN_JUMP = 1 << 4  # ends in an indirect jmp to one known address (a constant, a read-only pointer)
    NO_RETURN_CALL = 1 << 5  # ends in a call that ends its FDE range, so the call does not return
    UNDECODABLE_END = 1 << 6  # falls into bytes that do not decode or leave the executable range
    OVERLAPPING = 1 << 7  # shares bytes with another block at different instruction boundaries
    OUTSIDE_FDE = 1 << 8  # starts outside every FDE range (in a file that has FDEs)
    UNREACHED = 1 << 9  # no path from a seed reaches it (padding, dead code, unresolved jump targets)


@dataclass(frozen=True, slots=True)
class Block:
    start: int  # virtual address (ELF p_vaddr space; image base 0 for ET_DYN)
    length: int  # bytes
    instructions: int
    reasons: int  # Reason bits
    flags: int  # Flag bits

    @property
    def end(self) -> int:
        return self.start + self.length


class CorruptCodemapError(FexaotError):
    """Bytes that are not a codemap this version can read."""


MAGIC = b"FXCM"
VERSION = 1
_HEADER = struct.Struct("<4sHHHHIIIII")  # 32 bytes, see docs/codemap.md
_ENTRY = struct.Struct("<QIIII")  # 24 bytes per block


@dataclass(frozen=True)
class Codemap:
    blocks: tuple[Block, ...]  # sorted by start; starts are unique
    fde_count: int = 0  # FDEs whose range was swept (pc_begin in an executable range)
    rejected_seeds: int = 0  # seeds that pointed outside the executable ranges
    degraded_sources: int = 0  # Reason bits of seed sources that could not be read
    notes: tuple[str, ...] = ()  # what was odd about the file, one line each

    def block_at(self, address: int) -> Block | None:
        """The block starting at ``address`` (binary search)."""
        i = bisect.bisect_left(self.blocks, address, key=lambda b: b.start)
        if i < len(self.blocks) and self.blocks[i].start == address:
            return self.blocks[i]
        return None

    def encode(self) -> bytes:
        notes = "\n".join(self.notes).encode("utf-8")
        header = _HEADER.pack(MAGIC, VERSION, _HEADER.size, _ENTRY.size, 0, len(self.blocks), self.fde_count,
                              self.rejected_seeds, self.degraded_sources, len(notes))
        pack = _ENTRY.pack
        entries = b"".join(pack(b.start, b.length, b.instructions, b.reasons, b.flags) for b in self.blocks)
        return header + entries + notes

    @classmethod
    def decode(cls, data: bytes, name: str | None = None) -> Codemap:
        def corrupt(problem: str) -> CorruptCodemapError:
            return CorruptCodemapError(name, f"codemap: {problem}")

        if len(data) < _HEADER.size:
            raise corrupt(f"truncated header ({len(data)} bytes, need {_HEADER.size})")
        (magic, version, header_size, entry_size, _reserved, count, fde_count, rejected, degraded,
         notes_size) = _HEADER.unpack_from(data)
        if magic != MAGIC:
            raise corrupt(f"bad magic {magic!r}")
        if version != VERSION:
            raise corrupt(f"version {version}, this reader reads {VERSION}")
        if header_size < _HEADER.size or entry_size < _ENTRY.size:
            raise corrupt(f"header size {header_size} / entry size {entry_size} too small")
        end = header_size + count * entry_size
        if end + notes_size != len(data):
            raise corrupt(f"size {len(data)} does not match {count} blocks and {notes_size} bytes of notes")
        blocks = []
        previous = -1
        for i in range(count):
            start, length, instructions, reasons, flags = _ENTRY.unpack_from(data, header_size + i * entry_size)
            if start <= previous:
                raise corrupt(f"block {i} at {start:#x} is out of order")
            previous = start
            blocks.append(Block(start, length, instructions, reasons, flags))
        try:
            notes = data[end:].decode("utf-8")
        except UnicodeDecodeError:
            raise corrupt("notes are not UTF-8") from None
        return cls(tuple(blocks), fde_count, rejected, degraded, tuple(notes.split("\n")) if notes else ())

    def summary(self) -> dict:
        """Counts for the CLI: blocks, instructions, bytes covered, seeds by kind, flags."""
        instructions = covered = 0
        reach = -1
        reason_sets: Counter[int] = Counter()
        flag_sets: Counter[int] = Counter()
        for b in self.blocks:
            instructions += b.instructions
            # Bytes are counted once where overlapping blocks share them.
            if b.end > reach:
                covered += b.end - max(b.start, reach)
                reach = b.end
            reason_sets[b.reasons] += 1
            flag_sets[b.flags] += 1
        by_reason = {r: sum(n for bits, n in reason_sets.items() if bits & r) for r in Reason}
        by_flag = {f: sum(n for bits, n in flag_sets.items() if bits & f) for f in Flag}
        return {
            "blocks": len(self.blocks),
            "instructions": instructions,
            "bytes_covered": covered,
            "fdes": self.fde_count,
            "seeds": {r.name.lower(): n for r, n in by_reason.items() if r & SEED_REASONS},
            "edges": {r.name.lower(): n for r, n in by_reason.items() if not r & SEED_REASONS},
            "flags": {f.name.lower(): n for f, n in by_flag.items()},
            "unresolved_indirect_jumps": by_flag[Flag.UNRESOLVED_INDIRECT_JUMP],
            "jump_tables": by_flag[Flag.JUMP_TABLE] + by_flag[Flag.JUMP_TABLE_GUESSED],
            "rejected_seeds": self.rejected_seeds,
            "degraded_sources": [r.name.lower() for r in Reason if self.degraded_sources & r],
            "notes": list(self.notes),
        }
