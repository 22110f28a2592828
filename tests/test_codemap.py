"""Static codemap on gcc-built fixtures (tests/codemap_fixtures/).

Every fixture is compiled here, then stripped: the codemap is built from the
stripped copy, and the expected block starts come from the unstripped build,
read with pyelftools (assembler labels placed in the source, function symbols,
relocations) or from gcc's own assembly output, never from the codemap.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection
from iced_x86 import Decoder

from fexaot_tool.cli import main
from fexaot_tool.discover import Block, Codemap, CorruptCodemapError, Flag, Reason, build_codemap
from fexaot_tool.discover.check import _precision, _recall, check_codemap
from fexaot_tool.discover.ehframe import read_fdes
from fexaot_tool.discover.elfimage import ElfImage
from fexaot_tool.discover.flow import Transfer, transfer_of
from fexaot_tool.elf import CorruptElfError, NotElfError
from fexaot_tool.errors import FexaotError

SOURCES = Path(__file__).parent / "codemap_fixtures"

# name -> (compiler, source, flags).  -O2 as distributions build.
BUILDS = {
    "switch_pie": ("gcc", "switch.c", ["-O2", "-fPIE", "-pie"]),
    "switch_nopic": ("gcc", "switch.c", ["-O2", "-fno-pic", "-no-pie"]),
    "goto_pie": ("gcc", "computed_goto.c", ["-O2", "-fPIE", "-pie"]),
    "goto_nopic": ("gcc", "computed_goto.c", ["-O2", "-fno-pic", "-no-pie"]),
    "no_eh_frame": ("gcc", "no_eh_frame.c", ["-O2", "-static", "-nostdlib", "-fno-pic", "-no-pie",
                                             "-fno-asynchronous-unwind-tables", "-fno-unwind-tables"]),
    "data_pointer": ("gcc", "data_pointer.c", ["-O2", "-fPIE", "-pie", "-fno-asynchronous-unwind-tables"]),
    "static_pie": ("gcc", "static_pie.c", ["-O2", "-static-pie"]),
    "library.so": ("gcc", "library.c", ["-O2", "-fPIC", "-shared"]),
}


class Fixture:
    def __init__(self, full: Path, stripped: Path, asm: Path | None = None):
        self.full, self.stripped, self.asm = full, stripped, asm
        self._codemap: Codemap | None = None

    @property
    def codemap(self) -> Codemap:
        if self._codemap is None:
            self._codemap = build_codemap(str(self.stripped))
        return self._codemap

    def symbols(self, prefix: str = "", types: tuple[str, ...] | None = None) -> dict[str, int]:
        """name -> address of the unstripped build's .symtab entries starting with ``prefix``."""
        with open(self.full, "rb") as f:
            symtab = ELFFile(f).get_section_by_name(".symtab")
            return {s.name: s["st_value"] for s in symtab.iter_symbols()
                    if s.name.startswith(prefix) and s["st_shndx"] != "SHN_UNDEF"
                    and (types is None or s["st_info"]["type"] in types)}

    def function_range(self, name: str) -> tuple[int, int]:
        with open(self.full, "rb") as f:
            (sym,) = [s for s in ELFFile(f).get_section_by_name(".symtab").iter_symbols() if s.name == name]
            return sym["st_value"], sym["st_value"] + sym["st_size"]


def _strip(full: Path) -> Path:
    stripped = full.with_name(full.name + ".stripped")
    subprocess.run(["strip", "-o", str(stripped), str(full)], check=True)
    return stripped


@pytest.fixture(scope="session")
def fixtures(tmp_path_factory) -> dict[str, Fixture]:
    if shutil.which("gcc") is None or shutil.which("g++") is None:
        pytest.skip("gcc/g++ not installed")
    out = tmp_path_factory.mktemp("codemap")
    built = {}
    for name, (compiler, source, flags) in BUILDS.items():
        full = out / name
        subprocess.run([compiler, *flags, str(SOURCES / source), "-o", str(full)], check=True)
        built[name] = Fixture(full, _strip(full))
    # C++ exceptions: through gcc's assembly, so that the landing-pad labels the
    # LSDA call-site tables name are visible (-S), and kept as symbols (as -L).
    asm = out / "exceptions.s"
    subprocess.run(["g++", "-O2", "-S", str(SOURCES / "exceptions.cc"), "-o", str(asm)], check=True)
    full = out / "exceptions"
    subprocess.run(["g++", str(asm), "-Wa,-L", "-o", str(full)], check=True)
    built["exceptions"] = Fixture(full, _strip(full), asm)
    return built


def starts_with(codemap: Codemap, reason: Reason) -> set[int]:
    return {b.start for b in codemap.blocks if b.reasons & reason}


def blocks_in(codemap: Codemap, low: int, high: int) -> list[Block]:
    return [b for b in codemap.blocks if low <= b.start < high]


# -- jump tables ----------------------------------------------------------------


@pytest.mark.parametrize("build", ["switch_pie", "switch_nopic"])
def test_switch_jump_table_targets_are_exactly_the_cases(fixtures, build):
    fx = fixtures[build]
    cases = set(fx.symbols("case_").values())
    assert len(cases) == 10
    assert starts_with(fx.codemap, Reason.JUMP_TABLE) == cases
    low, high = fx.function_range("dispatch")
    ends = [b for b in blocks_in(fx.codemap, low, high) if b.flags & (Flag.JUMP_TABLE | Flag.JUMP_TABLE_GUESSED
                                                                      | Flag.UNRESOLVED_INDIRECT_JUMP)]
    assert [b.flags & (Flag.JUMP_TABLE | Flag.JUMP_TABLE_GUESSED | Flag.UNRESOLVED_INDIRECT_JUMP)
            for b in ends] == [Flag.JUMP_TABLE]  # one dispatch, bounded by its `cmp $9; ja`


@pytest.mark.parametrize("build", ["goto_pie", "goto_nopic"])
def test_computed_goto_handlers_are_block_starts(fixtures, build):
    fx = fixtures[build]
    handlers = fx.symbols("op_")
    assert set(handlers) == {"op_add", "op_sub", "op_twice", "op_halt"}
    for address in handlers.values():
        block = fx.codemap.block_at(address)
        assert block is not None and block.reasons & Reason.JUMP_TABLE
        if build == "goto_pie":  # the label table is made of R_X86_64_RELATIVE relocations
            assert block.reasons & Reason.RELOCATION
    low, high = fx.function_range("run")
    dispatches = [b for b in blocks_in(fx.codemap, low, high)
                  if b.flags & (Flag.JUMP_TABLE | Flag.JUMP_TABLE_GUESSED | Flag.UNRESOLVED_INDIRECT_JUMP)]
    # `goto *handlers[*code++ & 3]` is compiled once at the top and once per handler (gcc duplicates it).
    assert len(dispatches) >= 2
    assert all(b.flags & Flag.JUMP_TABLE for b in dispatches)
    assert starts_with(fx.codemap, Reason.JUMP_TABLE) == set(handlers.values())


# -- landing pads ---------------------------------------------------------------


def _landing_pad_labels(asm: Path) -> set[str]:
    """Labels that gcc's call-site tables name as landing pads (the third of each 4-field entry)."""
    labels = set()
    in_table = False
    fields: list[str] = []
    for line in asm.read_text().splitlines():
        line = line.strip()
        if re.fullmatch(r"\.LLSDACSBC?\d+:", line):
            in_table, fields = True, []
        elif re.fullmatch(r"\.LLSDACSEC?\d+:", line):
            in_table = False
            for i in range(2, len(fields), 4):
                if fields[i] != "0":
                    labels.add(fields[i].split("-")[0])
        elif in_table and line.startswith(".uleb128"):
            fields.append(line.split(None, 1)[1])
    return labels


def test_landing_pads_come_from_the_lsda(fixtures):
    fx = fixtures["exceptions"]
    labels = _landing_pad_labels(fx.asm)
    assert len(labels) >= 2  # catch clauses and the destructor cleanup
    local = fx.symbols(".L")
    expected = {local[name] for name in labels}
    assert starts_with(fx.codemap, Reason.LANDING_PAD) == expected
    # Nothing else names them: no branch reaches a landing pad, only the unwinder.
    for address in expected:
        assert not fx.codemap.block_at(address).reasons & (Reason.JUMP_TARGET | Reason.CALL_TARGET)


# -- binaries without the usual seeds -------------------------------------------


def test_binary_without_eh_frame_is_found_by_descent(fixtures):
    fx = fixtures["no_eh_frame"]
    with open(fx.stripped, "rb") as f:
        elf = ELFFile(f)
        assert elf.get_section_by_name(".eh_frame") is None
        entry = elf["e_entry"]
    cm = fx.codemap
    assert cm.fde_count == 0 and not cm.degraded_sources
    assert cm.block_at(entry).reasons & Reason.ENTRY
    for name in ("weight", "classify", "sum", "main"):  # called, or tail-called with jmp
        address = fx.symbols(name)[name]
        assert cm.block_at(address).reasons & (Reason.CALL_TARGET | Reason.JUMP_TARGET), name
    assert starts_with(cm, Reason.JUMP_TABLE) == set(fx.symbols("case_").values())
    assert not any(b.flags & (Flag.UNREACHED | Flag.UNRESOLVED_INDIRECT_JUMP) for b in cm.blocks)
    report = check_codemap(str(fx.stripped), str(fx.full))
    assert report.recall == 1.0 and report.precision == 1.0


def test_scoped_codemap_of_code_outside_fde_ranges(fixtures):
    """Without FDEs all code is outside FDE ranges: an address there puts all of it in scope."""
    from fexaot_tool.discover import ElfImage, codemap_of_image

    fx = fixtures["no_eh_frame"]
    image = ElfImage(str(fx.stripped))
    assert codemap_of_image(image, within=[image.info.e_entry]).blocks == fx.codemap.blocks
    assert codemap_of_image(image, within=[]).blocks == ()


@pytest.mark.parametrize("build", ["goto_pie", "switch_pie"])
def test_scoped_codemap_resolves_the_jump_tables_of_its_functions(fixtures, build):
    """A scope of one function holding a jump table gives that function's whole-codemap blocks."""
    from fexaot_tool.discover import ElfImage, codemap_of_image

    fx = fixtures[build]
    image = ElfImage(str(fx.stripped))
    table = [b for b in fx.codemap.blocks if b.flags & Flag.JUMP_TABLE]
    assert table
    scoped = codemap_of_image(image, within=[table[0].start])
    shape = {(b.start, b.length, b.instructions, b.flags) for b in scoped.blocks}
    assert (table[0].start, table[0].length, table[0].instructions, table[0].flags) in shape
    whole = {(b.start, b.length, b.instructions, b.flags) for b in fx.codemap.blocks}
    assert shape <= whole and starts_with(scoped, Reason.JUMP_TABLE)
    assert len(scoped.blocks) < len(fx.codemap.blocks)


def test_function_reached_only_through_a_data_pointer(fixtures):
    fx = fixtures["data_pointer"]
    secret = fx.symbols("secret")["secret"]
    with open(fx.full, "rb") as f:
        relocated = {r["r_addend"] for s in ELFFile(f).iter_sections() if isinstance(s, RelocationSection)
                     for r in s.iter_relocations() if r["r_info_type"] == 8}  # R_X86_64_RELATIVE
    assert secret in relocated
    block = fx.codemap.block_at(secret)
    assert block is not None
    assert block.reasons & Reason.RELOCATION
    assert not block.reasons & (Reason.FDE | Reason.SYMTAB | Reason.DYNSYM | Reason.CODE_POINTER | Reason.CALL_TARGET)
    assert not block.flags & Flag.UNREACHED


def test_static_pie(fixtures):
    fx = fixtures["static_pie"]
    with open(fx.full, "rb") as f:
        elf = ELFFile(f)
        assert elf["e_type"] == "ET_DYN" and not any(s["p_type"] == "PT_INTERP" for s in elf.iter_segments())
        entry = elf["e_entry"]
        resolvers = {r["r_addend"] for s in elf.iter_sections() if isinstance(s, RelocationSection)
                     for r in s.iter_relocations() if r["r_info_type"] == 37}  # R_X86_64_IRELATIVE
    assert resolvers, "static glibc resolves its IFUNCs with IRELATIVE relocations"
    cm = fx.codemap
    assert cm.block_at(entry).reasons & Reason.ENTRY
    assert starts_with(cm, Reason.IRELATIVE) == resolvers
    report = check_codemap(str(fx.stripped), str(fx.full))
    assert report.recall == 1.0, report.missed_functions
    # The only starts off the linear disassembly are glibc's `je 1f; lock; 1: cmpxchg`:
    # jumping over the lock prefix when single-threaded.  They are flagged, and each
    # really follows a lock prefix (0xF0).
    assert report.overlapping_false_starts == len(report.false_starts)
    image = ElfImage(fx.stripped)
    assert all(image.read(start - 1, 1) == b"\xf0" for start in report.false_starts)
    assert report.coverage >= 0.995


def test_unstripped_library_check(fixtures):
    fx = fixtures["library.so"]
    report = check_codemap(str(fx.stripped), str(fx.full))
    assert report.true_functions == len(set(fx.symbols("", ("STT_FUNC",)).values()))
    assert report.missed_functions == ()
    assert report.recall == 1.0 and report.precision == 1.0 and report.coverage == 1.0
    # The static helpers exist only in .symtab: the stripped codemap found them by FDE and calls.
    for name in ("square", "negate", "halve", "setup"):
        assert fx.codemap.block_at(fx.symbols(name)[name]) is not None, name


def test_check_measures_misses_and_false_starts():
    """The measures themselves, on a hand-made codemap (the check must be able to fail)."""
    codemap = Codemap((Block(0x1000, 4, 1, int(Reason.FDE), 0), Block(0x1005, 3, 1, int(Reason.SWEEP), 0)))
    functions = {0x1000: "found", 0x1010: "missed"}
    recall = _recall(codemap, functions)
    assert (recall["found_functions"], recall["missed_functions"]) == (1, ((0x1010, "missed"),))
    code = [(0x1000, bytes.fromhex("0f1f4000" "90" "c3" "cc" "cc") + b"\x90" * 8 + bytes.fromhex("c3"))]
    precision = _precision(codemap, functions, code)  # true boundaries: 0x1000, 0x1004, 0x1005, ...
    assert precision["false_starts"] == () and precision["boundary_starts"] == 2
    off = Codemap((Block(0x1001, 3, 1, 0, 0),))
    assert _precision(off, functions, code)["false_starts"] == (0x1001,)


# -- the control-flow table -------------------------------------------------------


@pytest.mark.parametrize("code, transfer", [
    ("90", Transfer.NEXT),  # nop
    ("e9 00 00 00 00", Transfer.JUMP),
    ("74 00", Transfer.BRANCH),  # je
    ("e2 fe", Transfer.BRANCH),  # loop
    ("ff e0", Transfer.INDIRECT_JUMP),  # jmp *%rax
    ("c3", Transfer.RETURN),
    ("e8 00 00 00 00", Transfer.CALL),
    ("ff d0", Transfer.INDIRECT_CALL),
    ("0f 05", Transfer.SYSTEM),  # syscall: a CALL without target to iced
    ("cc", Transfer.SYSTEM),  # int3
    ("c7 f8 00 00 00 00", Transfer.XBEGIN),
    ("0f 01 d5", Transfer.NEXT),  # xend
    ("0f 0b", Transfer.STOP),  # ud2
    ("f4", Transfer.STOP),  # hlt: a plain instruction to iced
    ("ff ff", Transfer.INVALID),
])
def test_transfer_of(code, transfer):
    instruction = Decoder(64, bytes.fromhex(code), ip=0x1000).decode()
    assert transfer_of(instruction) == transfer


# -- the FDE walker -------------------------------------------------------------


@pytest.mark.parametrize("build", ["switch_pie", "exceptions", "static_pie", "library.so"])
def test_fde_walker_agrees_with_pyelftools(fixtures, build):
    path = fixtures[build].stripped
    with open(path, "rb") as f:
        dwarf = ELFFile(f).get_dwarf_info()
        expected = {(e.header["initial_location"], e.header["initial_location"] + e.header["address_range"])
                    for e in dwarf.EH_CFI_entries() if hasattr(e, "header") and "initial_location" in e.header}
    fdes, how = read_fdes(ElfImage(path))
    assert how == ".eh_frame_hdr"
    assert {(f.pc_begin, f.pc_end) for f in fdes} == expected


# -- damaged input ----------------------------------------------------------------


def _section_bytes(path: Path, name: str) -> tuple[int, int]:
    with open(path, "rb") as f:
        s = ELFFile(f).get_section_by_name(name)
        return s["sh_offset"], s["sh_size"]


def _damaged(fx: Fixture, tmp_path: Path, section: str, fill: bytes) -> Path:
    data = bytearray(fx.stripped.read_bytes())
    offset, size = _section_bytes(fx.stripped, section)
    data[offset:offset + size] = (fill * size)[:size]
    out = tmp_path / f"{fx.stripped.name}-bad{section}"
    out.write_bytes(bytes(data))
    return out


def test_corrupt_eh_frame_degrades_to_descent(fixtures, tmp_path):
    fx = fixtures["switch_pie"]
    cm = build_codemap(str(_damaged(fx, tmp_path, ".eh_frame", b"\xff\x13\x00\x00")))
    assert cm.degraded_sources & Reason.FDE
    assert any(".eh_frame" in note for note in cm.notes)
    assert cm.fde_count == 0
    # Descent from the entry still finds main (its address is taken with lea for
    # __libc_start_main), dispatch, and the cases through the jump table.
    dispatch = fx.symbols("dispatch")["dispatch"]
    assert cm.block_at(dispatch) is not None
    assert starts_with(cm, Reason.JUMP_TABLE) == set(fx.symbols("case_").values())


def test_corrupt_eh_frame_hdr_falls_back_to_walking(fixtures, tmp_path):
    fx = fixtures["switch_pie"]
    cm = build_codemap(str(_damaged(fx, tmp_path, ".eh_frame_hdr", b"\x07")))
    assert not cm.degraded_sources
    assert any("walked instead" in note for note in cm.notes)
    assert cm.fde_count == fx.codemap.fde_count


def test_corrupt_lsda_loses_only_landing_pads(fixtures, tmp_path):
    fx = fixtures["exceptions"]
    cm = build_codemap(str(_damaged(fx, tmp_path, ".gcc_except_table", b"\x00\xff\xff\x7f")))
    assert cm.degraded_sources == Reason.LANDING_PAD
    assert cm.fde_count == fx.codemap.fde_count


def test_garbage_section_headers_are_ignored(fixtures, tmp_path):
    fx = fixtures["switch_pie"]
    data = bytearray(fx.stripped.read_bytes())
    struct.pack_into("<Q", data, 0x28, len(data) + 4096)  # e_shoff past the end of the file
    bad = tmp_path / "bad-shoff"
    bad.write_bytes(bytes(data))
    cm = build_codemap(str(bad))
    assert any("section header table" in note for note in cm.notes)
    assert cm.fde_count == fx.codemap.fde_count  # .eh_frame_hdr is found through PT_GNU_EH_FRAME


def test_malformed_files_raise_typed_errors(fixtures, tmp_path):
    truncated = tmp_path / "truncated"
    truncated.write_bytes(fixtures["switch_pie"].stripped.read_bytes()[:100])
    with pytest.raises(CorruptElfError, match="truncated"):
        build_codemap(str(truncated))
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\n")
    with pytest.raises(NotElfError, match="script"):
        build_codemap(str(script))


def test_damaged_files_never_crash(fixtures, tmp_path):
    """Random byte damage, clobbered ranges and truncation: a codemap or a typed error, never a traceback."""
    rng = random.Random(11)
    sources = [fixtures[name].stripped.read_bytes() for name in ("exceptions", "switch_pie", "no_eh_frame")]
    outcomes = {"codemap": 0, "error": 0}
    for i in range(90):
        data = bytearray(sources[i % len(sources)])
        if i % 3 == 0:
            for _ in range(rng.randint(1, 40)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif i % 3 == 1:
            at = rng.randrange(len(data))
            data[at:at + 512] = rng.randbytes(len(data[at:at + 512]))
        else:
            del data[rng.randrange(64, len(data)):]
        path = tmp_path / f"damaged{i}"
        path.write_bytes(bytes(data))
        try:
            build_codemap(str(path))
            outcomes["codemap"] += 1
        except FexaotError as e:
            assert str(path) in str(e) and "\n" not in str(e)
            outcomes["error"] += 1
    assert outcomes["codemap"] and outcomes["error"]


def test_cli_reports_bad_input_in_one_line(tmp_path, capsys):
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\n")
    assert main(["codemap", str(script)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(script) in err


# -- the binary layout ----------------------------------------------------------


def test_encode_decode_round_trip_and_determinism(fixtures):
    fx = fixtures["exceptions"]
    data = fx.codemap.encode()
    assert build_codemap(str(fx.stripped)).encode() == data
    assert Codemap.decode(data) == fx.codemap


def test_encoding_follows_the_documented_layout(fixtures):
    cm = fixtures["switch_pie"].codemap
    data = cm.encode()
    magic, version, header_size, entry_size, reserved, count, fdes, rejected, degraded, notes = \
        struct.unpack_from("<4sHHHHIIIII", data)
    assert (magic, version, header_size, entry_size, reserved) == (b"FXCM", 1, 32, 24, 0)
    assert (count, fdes, rejected, degraded) == (len(cm.blocks), cm.fde_count, cm.rejected_seeds, 0)
    assert len(data) == 32 + 24 * count + notes
    for i in (0, count // 2, count - 1):
        assert struct.unpack_from("<QIIII", data, 32 + 24 * i) == (
            cm.blocks[i].start, cm.blocks[i].length, cm.blocks[i].instructions, cm.blocks[i].reasons,
            cm.blocks[i].flags)


@pytest.mark.parametrize("damage, problem", [
    (lambda d: d[:20], "truncated header"),
    (lambda d: b"XXXX" + d[4:], "bad magic"),
    (lambda d: d[:-1], "does not match"),
    (lambda d: d[:4] + b"\x09\x00" + d[6:], "version 9"),
])
def test_decode_rejects_damaged_bytes(fixtures, damage, problem):
    data = fixtures["switch_pie"].codemap.encode()
    with pytest.raises(CorruptCodemapError, match=problem):
        Codemap.decode(damage(data), "libx.fexcache")


def test_decode_rejects_unsorted_blocks():
    good = Codemap((Block(0x10, 1, 1, 0, 0), Block(0x20, 1, 1, 0, 0))).encode()
    swapped = good[:32] + good[32 + 24:32 + 48] + good[32:32 + 24]
    with pytest.raises(CorruptCodemapError, match="out of order"):
        Codemap.decode(swapped)


# -- blocks, end to end -----------------------------------------------------------


def test_blocks_are_consistent(fixtures):
    """Sorted, unique starts; calls end blocks; no two blocks share bytes without the OVERLAPPING flag."""
    cm = fixtures["static_pie"].codemap
    starts = [b.start for b in cm.blocks]
    assert starts == sorted(set(starts))
    for a, b in zip(cm.blocks, cm.blocks[1:]):
        if a.end > b.start:
            assert a.flags & Flag.OVERLAPPING and b.flags & Flag.OVERLAPPING
    summary = cm.summary()
    assert summary["blocks"] == len(cm.blocks)
    assert summary["instructions"] == sum(b.instructions for b in cm.blocks)


def test_cli_codemap_json_and_check(fixtures, capsys):
    fx = fixtures["library.so"]
    assert main(["codemap", str(fx.stripped), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary == json.loads(json.dumps(fx.codemap.summary()))
    assert main(["codemap-check", str(fx.stripped), "--symbols", str(fx.full), "--require"]) == 0
    out = capsys.readouterr().out
    assert "function-start recall: 100.0000%" in out


@pytest.mark.parametrize("command", ["codemap", "codemap-check"])
def test_cli_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert "usage: fexaot " + command in capsys.readouterr().out


def test_cli_blocks_listing(fixtures, capsys):
    fx = fixtures["switch_pie"]
    assert main(["codemap", str(fx.stripped), "--blocks"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(fx.codemap.blocks)
    start, length, count, reasons = lines[0].split()[:4]
    first = fx.codemap.blocks[0]
    assert (int(start, 16), int(length), int(count)) == (first.start, first.length, first.instructions)


def _fixture_from_source(tmp_path: Path, name: str, source: str) -> Fixture:
    """Compile ``source`` with gcc -O1 into a Fixture (unstripped for symbols, stripped for the codemap)."""
    c_file = tmp_path / f"{name}.c"
    c_file.write_text(source)
    full = tmp_path / name
    subprocess.run(["gcc", "-O1", "-o", str(full), str(c_file)], check=True)
    return Fixture(full, _strip(full))


def test_cpuid_and_rdtsc_end_blocks(tmp_path):
    """Translated cpuid/rdtsc exit to the runtime, which resumes after them: a block starts there."""
    fixture = _fixture_from_source(tmp_path, "sysinsn", r"""
unsigned probe(void) {
    unsigned a, b, c, d, lo, hi;
    __asm__ volatile("cpuid\n.globl after_cpuid\nafter_cpuid:" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(0));
    __asm__ volatile("rdtsc\n.globl after_rdtsc\nafter_rdtsc:" : "=a"(lo), "=d"(hi));
    return a + b + c + d + lo + hi;
}
int main(void) { return (int)(probe() & 1); }
""")
    symbols = fixture.symbols("after_")
    starts = {b.start for b in fixture.codemap.blocks}
    assert symbols["after_cpuid"] in starts
    assert symbols["after_rdtsc"] in starts


def test_rep_string_instruction_is_a_block_of_its_own(tmp_path):
    """Engines re-enter `rep movs` per iteration: it starts a block, and so does what follows it."""
    fixture = _fixture_from_source(tmp_path, "rep", r"""
void copy(void *dst, const void *src, unsigned long n) {
    __asm__ volatile("nop\n.globl at_rep\nat_rep: rep movsb\n.globl after_rep\nafter_rep:"
                     : "+D"(dst), "+S"(src), "+c"(n) : : "memory");
}
int main(void) { char a[8], b[8] = "abc"; copy(a, b, 4); return a[0] != 'a'; }
""")
    symbols = fixture.symbols()
    blocks = {b.start: b for b in fixture.codemap.blocks}
    rep = blocks[symbols["at_rep"]]
    assert rep.instructions == 1 and rep.reasons & Reason.STRING_REPEAT
    assert symbols["after_rep"] in blocks
