"""Linear sweep of FDE ranges, recursive descent from seeds, and the blocks they make.

Per executable range, two byte arrays record what decoding found: the length of
the instruction starting at each byte (0 = no instruction starts there) and its
:class:`Transfer` class.  A decoded instruction is never decoded again, so every
byte is decoded about once whether the sweep or the descent reaches it first.

- The sweep decodes each FDE range from its pc_begin to its end: gcc and clang
  put no data in x86-64 ``.text``, so the sweep's boundaries are the compiler's.
- The descent decodes from every seed and every branch/call/fall-through target
  that is not yet an instruction start, until an instruction that cannot fall
  through or until it reaches a decoded instruction.  A target inside an FDE range
  that is not a sweep boundary is decoded all the same (overlapping code); the
  blocks that share bytes are flagged OVERLAPPING.
- Between descent rounds, new indirect jmps are resolved (jumptable.py) and
  ``lea reg, [rip+disp]`` instructions naming code add CODE_POINTER seeds.

A *scoped* explorer (``within``: addresses, e.g. the blocks a profile saw run)
does all of this for the functions holding those addresses only: their FDE
ranges (merged as the sweep merges them), the FDE ranges those jump into
(a function's ``.cold`` part) and, if an address lies outside every FDE range,
the code outside FDE ranges.  Seeds, targets and sweeps elsewhere are
not decoded, so what only other functions say about a scoped one (a jump from a
function out of scope into its middle) is not known (docs/codemap.md, "Scoped
codemaps").

The hot loops read two attributes per instruction (``len``, ``flow_control``);
everything else is looked up only for the ~25% of instructions that transfer
control or are one byte long (see flow.py).
"""

from __future__ import annotations

import bisect
import re
from collections import Counter, defaultdict
from collections.abc import Iterable

from iced_x86 import Decoder, FlowControl, Instruction

from fexaot_tool.discover.codemap import SEED_REASONS, Block, Flag, Reason
from fexaot_tool.discover.elfimage import CodeRange
from fexaot_tool.discover.flow import TRANSFER_FACTS, Transfer, transfer_of
from fexaot_tool.discover.jumptable import Resolution, resolve
from fexaot_tool.discover.seeds import SeedSet
from fexaot_tool.elf.reader import PF_W, PT_GNU_RELRO

# Per Transfer value (the byte stored per instruction): does it end a block / fall through / name a target.
_ENDS = bytes(TRANSFER_FACTS[t].ends_block for t in Transfer)
_FALLS = bytes(TRANSFER_FACTS[t].falls_through for t in Transfer)
_HAS_TARGET = bytes(TRANSFER_FACTS[t].has_target for t in Transfer)
# Instructions the backward window for jump tables does not look past: those that never
# fall through to the next one (calls do; jumptable.py knows which registers they clobber).
_WINDOW_BARRIER = bytes(not TRANSFER_FACTS[t].falls_through for t in Transfer)
# bytes.translate tables for the block walk: "ends a block" per Transfer, "nothing decoded" per length.
_ENDS_TABLE = bytes(_ENDS[t] if t < len(_ENDS) else 0 for t in range(256))
_NOT_DECODED_TABLE = bytes([1] + [0] * 255)
# Transfers that come back to the next instruction only by a return (call) or from the runtime.
_RETURNS_HERE = bytes(t in (Transfer.CALL, Transfer.INDIRECT_CALL, Transfer.SYSTEM) for t in Transfer)

_CALL, _BRANCH, _INDIRECT_JUMP = Transfer.CALL, Transfer.BRANCH, Transfer.INDIRECT_JUMP
_FALL_THROUGH, _SWEEP = int(Reason.FALL_THROUGH), int(Reason.SWEEP)
_CALL_TARGET, _JUMP_TARGET = int(Reason.CALL_TARGET), int(Reason.JUMP_TARGET)
_STRING_REPEAT, _REPEAT = int(Reason.STRING_REPEAT), int(Transfer.REPEAT)
# Flag bits as plain ints: IntFlag arithmetic costs microseconds, and the block walk does it per block.
_UNDECODABLE_END, _UNRESOLVED = int(Flag.UNDECODABLE_END), int(Flag.UNRESOLVED_INDIRECT_JUMP)
_NO_RETURN_CALL, _OUTSIDE_FDE = int(Flag.NO_RETURN_CALL), int(Flag.OUTSIDE_FDE)
_OVERLAPPING, _UNREACHED = int(Flag.OVERLAPPING), int(Flag.UNREACHED)

# `lea r64, [rip+disp32]`: REX.W (0x48-0x4F), 0x8D, ModRM with mod=00 r/m=101.
_LEA_RIP = re.compile(rb"[\x48-\x4f]\x8d[\x05\x0d\x15\x1d\x25\x2d\x35\x3d]", re.DOTALL)
_LEA_RIP_LENGTH = 7
_MAX_ROUNDS = 64


class _Region:
    """Decoding state of one executable range."""

    __slots__ = ("start", "end", "data", "decoder", "ilen", "kind")

    def __init__(self, code: CodeRange, file_data: bytes):
        self.start, self.end = code.start, code.end
        self.data = file_data[code.file_offset:code.file_offset + (code.end - code.start)]
        self.decoder = Decoder(64, self.data, ip=code.start)
        self.ilen = bytearray(len(self.data))  # length of the instruction starting here, 0 if none
        self.kind = bytearray(len(self.data))  # its Transfer


class Explorer:
    """Runs sweep + descent to a fixpoint over one file and turns the result into blocks."""

    def __init__(self, seeds: SeedSet, within: Iterable[int] | None = None):
        self.seeds = seeds
        self.image = seeds.image
        self.regions = [_Region(c, self.image.data) for c in self.image.code_ranges]
        self._region_starts = [r.start for r in self.regions]
        self.fde_ranges = _merge_ranges((f.pc_begin, f.pc_end) for f in seeds.fdes)
        self._fde_starts = [b for b, _ in self.fde_ranges]
        self.starts: dict[int, int] = {}  # block start -> Reason bits
        self.work: list[tuple[int, int]] = []  # (address to decode from, Reason bits; 0 = not a block start)
        self.targets: dict[int, int] = {}  # address of a direct jmp/jcc/loop/xbegin -> its target
        self.calls: dict[int, int] = {}  # address of a direct call -> its target
        self.indirect_jumps: list[int] = []
        self.resolutions: dict[int, Resolution] = {}
        self.stray_targets: Counter = Counter()  # Reason -> targets outside the executable ranges
        self.sweep_stops: list[int] = []  # addresses where a sweep met bytes that do not decode
        self.unfinished = False  # True if the descent rounds hit _MAX_ROUNDS
        self._jump_sources: dict[int, list[int]] | None = None  # rebuilt after each descent
        self._table_sources: dict[int, list[int]] = defaultdict(list)  # target -> resolved indirect jmps
        self._links: dict[tuple[int, int], set[tuple[int, int]]] | None = None
        self._raw: list[list[int]] = []  # blocks() entries: start, length, count, reasons, flags, last, Transfer
        self._relro = [(s.p_vaddr, s.p_vaddr + s.p_memsz) for s in self.image.info.segments
                       if s.p_type == PT_GNU_RELRO]
        # Scope: None explores the whole file; otherwise the FDE ranges in scope and
        # whether code outside every FDE range is.
        self.scope: set[tuple[int, int]] | None = None
        self.scope_outside = False
        if within is not None:
            self.scope = set()
            for address in within:
                fde = self.fde_range_of(address)
                if fde is not None:
                    self.scope.add(fde)
                elif self.is_code(address):
                    self.scope_outside = True

    # -- queries (used by jumptable.py) ----------------------------------------

    def region_of(self, address: int) -> _Region | None:
        i = bisect.bisect_right(self._region_starts, address) - 1
        if i >= 0 and address < self.regions[i].end:
            return self.regions[i]
        return None

    def is_code(self, address: int) -> bool:
        return self.region_of(address) is not None

    def is_instruction_start(self, address: int) -> bool:
        region = self.region_of(address)
        return region is not None and region.ilen[address - region.start] != 0

    def fde_range_of(self, address: int) -> tuple[int, int] | None:
        i = bisect.bisect_right(self._fde_starts, address) - 1
        if i >= 0 and address < self.fde_ranges[i][1]:
            return self.fde_ranges[i]
        return None

    def in_scope(self, address: int) -> bool:
        """True when a scoped explorer may decode at ``address`` (always, unscoped)."""
        if self.scope is None:
            return True
        fde = self.fde_range_of(address)
        return fde in self.scope if fde is not None else self.scope_outside

    def read(self, address: int, size: int) -> bytes | None:
        return self.image.read(address, size)

    def image_is_read_only(self, address: int) -> bool:
        """True when the dynamic loader leaves ``address`` read-only once relocations are applied."""
        if any(low <= address < high for low, high in self._relro):
            return True
        for s in self.image.loads:
            if s.p_vaddr <= address < s.p_vaddr + s.p_memsz:
                return not s.p_flags & PF_W
        return False

    def decode_at(self, address: int) -> Instruction:
        region = self.region_of(address)
        assert region is not None
        decoder = region.decoder
        decoder.position = address - region.start
        decoder.ip = address
        return decoder.decode()

    def window_before(self, address: int, count: int) -> tuple[list[Instruction], bool]:
        """Up to ``count`` decoded instructions that fall through to (and end with) the one at ``address``.

        The flag says whether the window reaches back to where fall-through stops
        (an instruction that cannot fall through, the FDE or range start), so that
        the first instruction is entered only by jumps.
        """
        region = self.region_of(address)
        assert region is not None
        ilen, kind, base = region.ilen, region.kind, region.start
        fde = self.fde_range_of(address)
        low = max(base, fde[0]) if fde else base
        chain = [address]
        here = address
        complete = False
        while len(chain) < count:
            previous = None
            for p in range(here - 1, max(low, here - 15) - 1, -1):
                n = ilen[p - base]
                if n and p + n == here:
                    previous = p
                    break
            if previous is None or _WINDOW_BARRIER[kind[previous - base]]:
                complete = True
                break
            chain.append(previous)
            here = previous
        return [self.decode_at(a) for a in reversed(chain)], complete

    def jump_sources(self, address: int) -> list[int]:
        """Addresses of the jumps known to reach ``address``: jmp, jcc, resolved indirect jmps."""
        if self._jump_sources is None:
            sources: dict[int, list[int]] = defaultdict(list)
            for source, target in self.targets.items():
                sources[target].append(source)
            self._jump_sources = sources
        return self._jump_sources.get(address, []) + self._table_sources.get(address, [])

    def function_ranges(self, address: int) -> set[tuple[int, int]]:
        """The FDE range holding ``address`` and those linked to it by direct jmp/jcc (not calls).

        gcc splits a function into a hot and a ``.cold`` part with an FDE each;
        they jump into each other, and a switch's table can point into both.
        """
        own = self.fde_range_of(address)
        if own is None:
            return set()
        if self._links is None:
            links: dict[tuple[int, int], set[tuple[int, int]]] = defaultdict(set)
            for source, target in self.targets.items():
                a, b = self.fde_range_of(source), self.fde_range_of(target)
                if a is not None and b is not None and a != b:
                    links[a].add(b)
                    links[b].add(a)
            self._links = links
        return {own} | self._links.get(own, set())

    def branch_sources(self, address: int) -> list[int]:
        """Addresses of the conditional branches that jump to ``address``."""
        return [source for source in self.jump_sources(address)
                if self.decode_at(source).flow_control == FlowControl.CONDITIONAL_BRANCH]

    # -- exploration -----------------------------------------------------------

    def run(self) -> None:
        if self.scope is not None and not self.scope and not self.scope_outside:
            return  # nothing in scope: an empty codemap
        for begin, end in self.fde_ranges:
            if self.scope is None or (begin, end) in self.scope:
                self._sweep(begin, end)
        if self.scope is not None:
            # The parts of a function gcc splits off (``.cold``) have FDEs of their
            # own, and its jump tables may point into them: a range a function in
            # scope jumps into (jmp/jcc, not call) is in scope too, one level deep.
            linked = {self.fde_range_of(target) for target in self.targets.values()} - self.scope - {None}
            self.scope |= linked
            for begin, end in sorted(linked):
                self._sweep(begin, end)
        self.work.extend(self.seeds.addresses.items())
        pointers = self._lea_candidates()
        # Each round ends with work only if a jump was newly resolved or a new lea
        # target appeared, and both happen a bounded number of times; the cap is a
        # guard, not a tuning knob.
        for _round in range(_MAX_ROUNDS):
            self._descend()
            self._resolve_indirect_jumps()
            self._code_pointers(pointers)
            if not self.work:
                break
        else:
            self.unfinished = True

    def _sweep(self, begin: int, end: int) -> None:
        region = self.region_of(begin)
        if region is None:
            return
        end = min(end, region.end)
        base, ilen, kind = region.start, region.ilen, region.kind
        starts, work, targets, indirect = self.starts, self.work, self.targets, self.indirect_jumps
        calls = self.calls
        decoder = region.decoder
        decoder.position = begin - base
        decoder.ip = begin
        resume = False  # the previous instruction cannot fall through
        last = Transfer.NEXT
        next_ip = begin
        for ins in decoder:
            ip = ins.ip
            if ip >= end:
                break
            n = ins.len
            fc = ins.flow_control
            t = transfer_of(ins) if (fc or n <= 4) else 0
            if t == Transfer.INVALID:
                self.sweep_stops.append(ip)
                return
            off = ip - base
            ilen[off] = n
            if resume:
                starts[ip] = starts.get(ip, 0) | _SWEEP
                resume = False
            next_ip = ip + n
            last = t
            if t:
                kind[off] = t
                if t == _REPEAT:
                    starts[ip] = starts.get(ip, 0) | _STRING_REPEAT
                if _HAS_TARGET[t]:
                    target = ins.near_branch_target
                    if t == _CALL:
                        calls[ip] = target
                        work.append((target, _CALL_TARGET))
                    else:
                        targets[ip] = target
                        work.append((target, _JUMP_TARGET))
                if _FALLS[t]:
                    if next_ip < end:
                        starts[next_ip] = starts.get(next_ip, 0) | _FALL_THROUGH
                    elif not _RETURNS_HERE[t]:
                        work.append((next_ip, _FALL_THROUGH))
                    # A call that ends its FDE range is a call that does not return
                    # (abort, __stack_chk_fail): the compiler put nothing after it.
                else:
                    resume = True
                if t == _INDIRECT_JUMP:
                    indirect.append(ip)
        # Code running off the end of its FDE range (a misplaced FDE end) continues
        # into whatever follows: decode it, without a block start.
        if _FALLS[last] and not _ENDS[last]:
            work.append((next_ip, 0))

    def _descend(self) -> None:
        starts, work, targets, indirect = self.starts, self.work, self.targets, self.indirect_jumps
        calls = self.calls
        scoped = self.scope is not None
        in_scope = self.in_scope
        region = None
        while work:
            address, why = work.pop()
            if scoped and not in_scope(address):
                continue
            if region is None or not region.start <= address < region.end:
                region = self.region_of(address)
                if region is None:
                    if why:
                        self.stray_targets[why] += 1
                    continue
            if why:
                starts[address] = starts.get(address, 0) | why
            base, ilen, kind = region.start, region.ilen, region.kind
            if ilen[address - base]:
                continue
            decoder = region.decoder
            decoder.position = address - base
            decoder.ip = address
            # A scoped descent stops where its function's FDE range ends and an FDE
            # range out of scope begins (an unscoped one meets that range's sweep there).
            limit = self._scope_limit(address) if scoped else region.end
            for ins in decoder:
                ip = ins.ip
                off = ip - base
                if ip >= limit:
                    break
                if ilen[off]:
                    # Reached decoded code: the two paths meet here, so a block starts here.
                    starts[ip] = starts.get(ip, 0) | _FALL_THROUGH
                    break
                n = ins.len
                fc = ins.flow_control
                t = transfer_of(ins) if (fc or n <= 4) else 0
                if t == Transfer.INVALID:
                    break
                ilen[off] = n
                if t:
                    kind[off] = t
                    if t == _REPEAT:
                        starts[ip] = starts.get(ip, 0) | _STRING_REPEAT
                    if _HAS_TARGET[t]:
                        target = ins.near_branch_target
                        if t == _CALL:
                            calls[ip] = target
                            work.append((target, _CALL_TARGET))
                        else:
                            targets[ip] = target
                            work.append((target, _JUMP_TARGET))
                    if t == _INDIRECT_JUMP:
                        indirect.append(ip)
                    if not _FALLS[t]:
                        break
                    starts[ip + n] = starts.get(ip + n, 0) | _FALL_THROUGH
        self._jump_sources = None
        self._links = None

    def _out_of_scope_fde(self, address: int) -> bool:
        """True when ``address`` is in an FDE range a scoped explorer did not sweep.

        An unscoped explorer sweeps every FDE range, so the bytes there would be decoded.
        """
        if self.scope is None:
            return False
        fde = self.fde_range_of(address)
        return fde is not None and fde not in self.scope

    def _scope_limit(self, address: int) -> int:
        """Where a scoped descent from ``address`` must stop: the next FDE range out of scope."""
        i = bisect.bisect_right(self._fde_starts, address)
        while i < len(self.fde_ranges) and self.fde_ranges[i] in self.scope:
            i += 1
        return self.fde_ranges[i][0] if i < len(self.fde_ranges) else 1 << 64

    def _resolve_indirect_jumps(self) -> None:
        # Unresolved jumps are retried each round: code decoded since may hold their bound check.
        for jump in self.indirect_jumps:
            previous = self.resolutions.get(jump)
            if previous is not None and previous.flag != Flag.UNRESOLVED_INDIRECT_JUMP:
                continue
            resolution = resolve(self, jump)
            self.resolutions[jump] = resolution
            if resolution.flag == Flag.UNRESOLVED_INDIRECT_JUMP:
                continue
            for target in resolution.targets:
                self._table_sources[target].append(jump)
            why = int(Reason.JUMP_TARGET if resolution.flag == Flag.KNOWN_JUMP else Reason.JUMP_TABLE)
            self.work.extend((target, why) for target in resolution.targets)

    def _lea_candidates(self) -> list[tuple[_Region, int]]:
        found = [(region, m.start()) for region in self.regions for m in _LEA_RIP.finditer(region.data)]
        if self.scope is not None:
            found = [(region, off) for region, off in found if self.in_scope(region.start + off)]
        return found

    def _code_pointers(self, pending: list[tuple[_Region, int]]) -> None:
        """Seed the targets of decoded `lea r64, [rip+disp32]` that name a known instruction start.

        Inside an FDE range a target must already be a sweep boundary, so an
        address computed for some other purpose never invents a boundary.
        """
        waiting = []
        for region, off in pending:
            n = region.ilen[off]
            if n == 0:
                waiting.append((region, off))  # not decoded (yet)
                continue
            if n != _LEA_RIP_LENGTH:
                continue
            disp = int.from_bytes(region.data[off + 3:off + 7], "little", signed=True)
            target = region.start + off + _LEA_RIP_LENGTH + disp
            if self.is_instruction_start(target) or (self.is_code(target) and self.fde_range_of(target) is None):
                self.work.append((target, int(Reason.CODE_POINTER)))
        pending[:] = waiting

    # -- blocks ----------------------------------------------------------------

    def blocks(self) -> tuple[list[Block], int]:
        """(blocks sorted by start, number of block starts dropped because nothing decodes there)."""
        starts = self.starts
        # Per region: `stop_after[i]` is 1 where the instruction at i ends its block,
        # `stop_before[i]` is 1 where no block may continue into i (a block start, or
        # no decoded instruction); both built with bytes.translate, in C.
        stop_after = {r.start: r.kind.translate(_ENDS_TABLE) for r in self.regions}
        stop_before = {r.start: bytearray(r.ilen.translate(_NOT_DECODED_TABLE)) + b"\x01" for r in self.regions}
        located: list[tuple[int, _Region]] = []
        dropped = 0
        regions = iter(self.regions)
        region = next(regions, None)
        for address in sorted(starts):  # one pass: regions and starts are both sorted
            while region is not None and address >= region.end:
                region = next(regions, None)
            if region is None or address < region.start or not region.ilen[address - region.start]:
                dropped += 1
                continue
            stop_before[region.start][address - region.start] = 1
            located.append((address, region))

        fdes = self.fde_ranges
        fde_index = 0
        resolutions = self.resolutions
        raw: list[list[int]] = []  # [start, length, instructions, reasons, flags, last instruction, its Transfer]
        for address, region in located:
            base, ilen, kind = region.start, region.ilen, region.kind
            ends, blocked = stop_after[base], stop_before[base]
            p = address - base
            count = 0
            while True:
                last = p
                p += ilen[p]
                count += 1
                if ends[last] or blocked[p]:
                    break
            t = kind[last]
            flags = 0
            falls_nowhere = _FALLS[t] and (p == len(ilen) or not ilen[p])  # p == len(ilen): the sentinel
            if t == _INDIRECT_JUMP:
                resolution = resolutions.get(base + last)
                flags |= int(resolution.flag) if resolution else _UNRESOLVED
            elif falls_nowhere and not self._out_of_scope_fde(base + p):
                fde = self.fde_range_of(base + last)
                ends_fde = _RETURNS_HERE[t] and fde is not None and fde[1] == base + p
                flags |= _NO_RETURN_CALL if ends_fde else _UNDECODABLE_END
            if fdes:
                while fde_index < len(fdes) and fdes[fde_index][1] <= address:
                    fde_index += 1
                if fde_index == len(fdes) or address < fdes[fde_index][0]:
                    flags |= _OUTSIDE_FDE
            raw.append([address, p + base - address, count, starts[address], flags, base + last, t])

        _flag_overlaps(raw)
        self._flag_unreached(raw)
        self._raw = raw
        blocks = [Block(entry[0], entry[1], entry[2], entry[3], entry[4]) for entry in raw]
        return blocks, dropped

    def local_successors(self) -> dict[int, tuple[int, ...]]:
        """Per block start (after :meth:`blocks`), where control goes next inside the code, calls left out.

        The target of a direct jmp, jcc, loop or xbegin, and the fall-through
        (also to a call's return address) unless the block is flagged
        NO_RETURN_CALL or UNDECODABLE_END; never a call target nor an indirect
        jump's targets.  What speed-profile's static reachability follows.
        """
        targets = self.targets
        out = {}
        for start, length, _count, _reasons, flags, last, t in self._raw:
            edges = []
            if _HAS_TARGET[t] and t != _CALL:
                edges.append(targets[last])
            if _FALLS[t] and not flags & (_NO_RETURN_CALL | _UNDECODABLE_END):
                edges.append(start + length)
            out[start] = tuple(edges)
        return out

    def _flag_unreached(self, raw: list[list[int]]) -> None:
        """Set UNREACHED on blocks no path from a seed reaches (following the same edges the descent does)."""
        index = {entry[0]: i for i, entry in enumerate(raw)}
        stack = [i for i, entry in enumerate(raw) if entry[3] & SEED_REASONS]
        reached = bytearray(len(raw))
        for i in stack:
            reached[i] = 1
        targets, calls, resolutions = self.targets, self.calls, self.resolutions
        while stack:
            start, length, _count, _reasons, _flags, last, t = raw[stack.pop()]
            successors = [start + length] if not _ENDS[t] or _FALLS[t] else []
            if _HAS_TARGET[t]:
                successors.append(calls[last] if t == _CALL else targets[last])
            elif t == _INDIRECT_JUMP and last in resolutions:
                successors.extend(resolutions[last].targets)
            for successor in successors:
                j = index.get(successor)
                if j is not None and not reached[j]:
                    reached[j] = 1
                    stack.append(j)
        for i, entry in enumerate(raw):
            if not reached[i]:
                entry[4] |= _UNREACHED


def _flag_overlaps(raw: list[list[int]]) -> None:
    """Blocks at consistent boundaries never share bytes, so any intersection is overlapping code."""
    reach, owner = -1, -1
    for i, entry in enumerate(raw):
        start, end = entry[0], entry[0] + entry[1]
        if start < reach:
            entry[4] |= _OVERLAPPING
            raw[owner][4] |= _OVERLAPPING
        if end > reach:
            reach, owner = end, i


def _merge_ranges(ranges) -> list[tuple[int, int]]:
    """Sort [begin, end) ranges and merge the ones that overlap (not the ones that only touch)."""
    merged: list[list[int]] = []
    for begin, end in sorted(ranges):
        if merged and begin < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([begin, end])
    return [(b, e) for b, e in merged]
