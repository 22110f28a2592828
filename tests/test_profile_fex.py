"""FEX-Emu code maps (written here in FEX's format) imported as fexaot profiles, attributed to rootfs files."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess

import pytest

from fexaot_tool.cache.key import module_identity
from fexaot_tool.cli import main
from fexaot_tool.elf import read_elf
from fexaot_tool.profile import read_profile
from fexaot_tool.profile.fex import (
    EXECUTABLE_32, EXECUTABLE_64, EXECUTABLE_UNSPECIFIED, LOAD_LIBRARY, MARKER_ID, CodeMapError, fex_file_id,
    parse_code_map,
)

PYTHON = "/usr/bin/python3.11"
LIBC = "/lib/x86_64-linux-gnu/libc.so.6"  # the name the loader opens it by (merged /usr: /lib -> usr/lib)


def entry(file_id: int, offset: int) -> bytes:
    return struct.pack("<QI", file_id, offset)


def library(path: str) -> bytes:
    """A library-load record as FEX's CodeMapWriter::AppendLibraryLoad writes it."""
    raw = entry(MARKER_ID, LOAD_LIBRARY) + struct.pack("<Q", fex_file_id(path)) + path.encode() + b"\0"
    return raw + bytes(-len(raw) % 4)


def executable(path: str, marker: int = EXECUTABLE_64) -> bytes:
    return entry(MARKER_ID, marker) + struct.pack("<Q", fex_file_id(path))


def test_parser_reads_every_record_kind() -> None:
    data = (executable("/bin/x") + library("/bin/x") + entry(fex_file_id("/bin/x"), 0x1040)
            + library("/lib/libfoo.so.1") + entry(fex_file_id("/lib/libfoo.so.1"), 0x20)
            + entry(fex_file_id("/bin/x"), 0x1040) + executable("/bin/y", EXECUTABLE_UNSPECIFIED))
    m = parse_code_map(data + entry(1, 2)[:7], "t")
    assert m.paths == {fex_file_id("/bin/x"): "/bin/x", fex_file_id("/lib/libfoo.so.1"): "/lib/libfoo.so.1"}
    assert m.blocks == {fex_file_id("/bin/x"): {0x1040}, fex_file_id("/lib/libfoo.so.1"): {0x20}}
    assert m.executable == fex_file_id("/bin/y") and m.executable_bits is None and m.truncated
    assert parse_code_map(executable("/bin/z", EXECUTABLE_32)).executable_bits == 32
    # Library records are padded to 4 bytes: path lengths 1..8 all parse back.
    for n in range(1, 9):
        path = "/" + "a" * n
        assert parse_code_map(library(path) + entry(5, 6)).paths == {fex_file_id(path): path}
    with pytest.raises(CodeMapError, match=r"t: unknown code-map marker 0xfffffff0 at offset 12"):
        parse_code_map(entry(1, 2) + entry(MARKER_ID, 0xFFFFFFF0), "t")


@pytest.mark.skipif(not os.path.exists(PYTHON), reason="needs the host's python3.11")
def test_import_attributes_recorded_paths_and_path_hashes(tmp_path, capsys) -> None:
    maps = tmp_path / "maps"
    maps.mkdir()
    py, libc = fex_file_id(PYTHON), fex_file_id(LIBC)
    # Run 1 (current FEX: 64-bit executable marker) names python and libc with their paths.
    (maps / "python3.11-run1").write_bytes(
        executable(PYTHON) + library(PYTHON) + entry(py, 0x1000) + entry(py, 0x2000) + library(LIBC)
        + entry(libc, 0x28000))
    # Run 2 (the earlier marker) opened libc by its canonical name and lost its library records: that
    # FileId must be found by hashing rootfs paths, and lands in the same module as run 1's libc.
    libc_canonical = fex_file_id("/usr/lib/x86_64-linux-gnu/libc.so.6")
    (maps / "python3.11-run2").write_bytes(
        executable(PYTHON, EXECUTABLE_UNSPECIFIED) + entry(libc_canonical, 0x28000) + entry(libc_canonical, 0x29000)
        + entry(py, 0x1000) + library("/nonexistent/libgone.so") + entry(fex_file_id("/nonexistent/libgone.so"), 4))
    out = tmp_path / "imported.fexprof"
    assert main(["profile", "import-fex", str(maps), "--rootfs", "/", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "/nonexistent/libgone.so: 1 blocks, not an x86-64 ELF file in the rootfs" in text
    assert "/usr/lib/x86_64-linux-gnu/libc.so.6: 2 blocks, path hash" in text
    profile = read_profile(str(out))
    by_name = {m.name: m for m in profile.modules}
    assert set(by_name) == {"python3.11", "libc.so.6"}
    python_id = module_identity(os.path.realpath(PYTHON))
    libc_id = module_identity(os.path.realpath(LIBC))
    assert by_name["python3.11"].file_id == python_id.file_id
    assert by_name["python3.11"].content_hash == python_id.content_hash
    assert by_name["libc.so.6"].file_id == libc_id.file_id
    # FEX offsets count from the first mapping (Debian's python3.11 is ET_EXEC at 0x400000, libc an
    # ET_DYN at 0); counts are the runs that name a block.
    python_base = min(s.p_vaddr for s in read_elf(os.path.realpath(PYTHON)).segments if s.p_type == 1) & ~0xFFF
    assert by_name["python3.11"].blocks == ((python_base + 0x1000, 2), (python_base + 0x2000, 1))
    assert by_name["libc.so.6"].blocks == ((0x28000, 2), (0x29000, 1))


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_non_pie_offsets_and_host_paths_into_the_rootfs(tmp_path, capsys) -> None:
    rootfs = tmp_path / "rootfs"
    (rootfs / "usr/bin").mkdir(parents=True)
    src = tmp_path / "p.c"
    src.write_text("int main(void) { return 0; }\n")
    program = rootfs / "usr/bin/prog"
    subprocess.run(["gcc", "-no-pie", "-O1", "-o", str(program), str(src)], check=True)
    os.symlink("prog", rootfs / "usr/bin/prog-link")
    # FEX outside a chroot records host paths into its rootfs; this one opened the program by a link.
    host_name = os.path.realpath(rootfs) + "/usr/bin/prog-link"
    fid = fex_file_id(host_name)
    maps = tmp_path / "map"
    maps.write_bytes(executable(host_name) + library(host_name) + entry(fid, 0x1030) + entry(fid, 0x1030)
                     + executable("/usr/bin/prog32", EXECUTABLE_32) + entry(fex_file_id("/usr/bin/prog32"), 8))
    out = tmp_path / "p.fexprof"
    assert main(["profile", "import-fex", str(maps), "--rootfs", str(rootfs), "-o", str(out), "--json"]) == 0
    report = capsys.readouterr().out
    assert "32-bit executable" in report
    (module,) = read_profile(str(out)).modules
    assert module.name == "prog" and module.file_id == module_identity(program).file_id
    assert module.blocks == ((0x401030, 1),)  # ET_EXEC: offsets from the first PT_LOAD at 0x400000


def test_missing_directory_is_one_line(tmp_path, capsys) -> None:
    assert main(["profile", "import-fex", str(tmp_path / "none"), "-o", str(tmp_path / "o")]) == 1
    assert capsys.readouterr().err.strip() == f"fexaot profile: {tmp_path / 'none'}: no such file or directory"
    assert not (tmp_path / "o").exists()
