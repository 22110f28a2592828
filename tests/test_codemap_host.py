"""The codemap of the host's own libc.so.6: a sampled check that needs no extra package,
and the full bar (docs/codemap.md) when libc6-dbg's debug file is installed."""

from __future__ import annotations

import bisect
import os
import random

import capstone
import pytest
from elftools.elf.elffile import ELFFile

from fexaot_tool.discover import Flag, build_codemap
from fexaot_tool.discover.check import check_codemap, default_symbol_file

LIBC = "/lib/x86_64-linux-gnu/libc.so.6"

pytestmark = pytest.mark.skipif(not os.path.exists(LIBC), reason="no x86-64 glibc on this host")


@pytest.fixture(scope="module")
def libc_codemap():
    return build_codemap(LIBC)


def _dynsym_functions() -> list[tuple[int, int, str]]:
    with open(LIBC, "rb") as f:
        dynsym = ELFFile(f).get_section_by_name(".dynsym")
        return sorted({(s["st_value"], s["st_size"], s.name) for s in dynsym.iter_symbols()
                       if s["st_info"]["type"] in ("STT_FUNC", "STT_LOOS") and s["st_shndx"] != "SHN_UNDEF"})


def test_every_exported_function_is_a_block_start(libc_codemap):
    functions = _dynsym_functions()
    assert len(functions) > 1000
    starts = {b.start for b in libc_codemap.blocks}
    assert [name for address, _size, name in functions if address not in starts] == []


def test_sampled_block_starts_are_instruction_boundaries(libc_codemap):
    """Inside 300 random exported functions, every block start is where capstone's
    linear disassembly of the function puts an instruction (or is flagged overlapping)."""
    with open(LIBC, "rb") as f:
        elf = ELFFile(f)
        text = elf.get_section_by_name(".text")
        base, data = text["sh_addr"], text.data()
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    sample = random.Random(7).sample([f for f in _dynsym_functions() if f[1] and base <= f[0] < base + len(data)], 300)
    starts = [b.start for b in libc_codemap.blocks]
    checked = 0
    for address, size, name in sample:
        boundaries = {a for a, _s, _m, _o in md.disasm_lite(data[address - base:address - base + size], address)}
        for block in libc_codemap.blocks[bisect.bisect_left(starts, address):bisect.bisect_left(starts, address + size)]:
            checked += 1
            assert block.start in boundaries or block.flags & Flag.OVERLAPPING, (name, hex(block.start))
    assert checked > 3000


def test_full_bar_with_libc6_dbg():
    with open(LIBC, "rb") as f:
        symbols = default_symbol_file(ELFFile(f))
    if symbols is None:
        pytest.skip("libc6-dbg is not installed (apt-get install libc6-dbg)")
    report = check_codemap(LIBC, symbols)
    assert report.recall >= 0.999, report.missed_functions
    assert report.precision >= 0.9999, report.false_starts
    assert report.coverage >= 0.995, report.uncovered_by_cause


def test_a_scoped_codemap_is_the_whole_codemap_of_its_functions(libc_codemap):
    """Scoped discovery (what speed-profile compiles from) decodes 300 random
    exported functions and the FDE ranges they jump into (their .cold parts);
    their blocks are the whole file's blocks, except where only a function out
    of scope names a start inside one of them (none in this sample), and a
    block's reasons are those found in scope."""
    from fexaot_tool.discover import ElfImage, codemap_of_image
    from fexaot_tool.discover.ehframe import read_fdes

    image = ElfImage(LIBC)
    fdes = sorted((f.pc_begin, f.pc_end) for f in read_fdes(image)[0])
    fde_starts = [b for b, _ in fdes]

    def fde_of(address):
        i = bisect.bisect_right(fde_starts, address) - 1
        return fdes[i] if i >= 0 and address < fdes[i][1] else None

    sample = random.Random(11).sample([a for a, _s, _n in _dynsym_functions() if fde_of(a)], 300)
    sampled = {fde_of(a) for a in sample}
    # The ranges they jump into, by capstone's linear disassembly of each sampled range.
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    md.detail = True
    linked = set()
    for begin, end in sampled:
        for insn in md.disasm(image.read(begin, end - begin), begin):
            if insn.group(capstone.x86.X86_GRP_JUMP) and insn.operands[0].type == capstone.x86.X86_OP_IMM:
                linked.add(fde_of(insn.operands[0].imm))
    scope = sampled | (linked - {None})
    assert len(scope) > len(sampled)  # some of them have .cold parts

    scoped = codemap_of_image(image, within=sample)
    whole = {b.start: b for b in libc_codemap.blocks if fde_of(b.start) in scope}
    shape = [(b.start, b.length, b.instructions, b.flags) for b in scoped.blocks]
    assert len(whole) > 3000 and shape == [(b.start, b.length, b.instructions, b.flags) for b in whole.values()]
    assert all(b.reasons & ~whole[b.start].reasons == 0 for b in scoped.blocks)
    assert sum(b.reasons != whole[b.start].reasons for b in scoped.blocks) > 0  # callers out of scope
    assert set(sample) <= {b.start for b in scoped.blocks}

    assert codemap_of_image(image, within=[]).blocks == ()
    assert codemap_of_image(image, within=[0x10]).blocks == ()  # not code: nothing in scope
