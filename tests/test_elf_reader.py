"""The fast ELF reader on real files, against pyelftools, and on every kind of malformed input."""

from __future__ import annotations

import os
import random
import struct
from pathlib import Path

import pytest
from elftools.elf.dynamic import DynamicSegment
from elftools.elf.elffile import ELFFile
from elftools.elf.enums import ENUM_P_TYPE_BASE

from fexaot_tool.elf.reader import (
    DF_1_NODEFLIB,
    PT_DYNAMIC,
    PT_LOAD,
    CorruptElfError,
    ElfError,
    NotElfError,
    UnsupportedElfError,
    is_x86_64_elf,
    read_elf,
)

HOST_FILES = [
    "/usr/bin/python3.11",
    "/lib/x86_64-linux-gnu/libc.so.6",
    "/lib64/ld-linux-x86-64.so.2",
    "/lib/x86_64-linux-gnu/libz.so.1",
    "/usr/bin/ls",
]
host_file = pytest.mark.parametrize(
    "path", [pytest.param(p, marks=pytest.mark.skipif(not os.path.exists(p), reason=f"{p} not on this host")) for p in HOST_FILES]
)


def test_host_python():
    path = "/usr/bin/python3.11"
    if not os.path.exists(path):
        pytest.skip("no python3.11 on this host")
    info = read_elf(path)
    assert info.kind == "executable" and info.is_dynamic  # Debian builds python3.11 as non-PIE ET_EXEC
    assert info.interp == "/lib64/ld-linux-x86-64.so.2"
    assert "libc.so.6" in info.needed and info.soname is None
    assert info.build_id is not None and len(info.build_id) == 20
    assert info.vaddr_to_offset(info.e_entry) is not None


def test_host_libc():
    info = read_elf("/lib/x86_64-linux-gnu/libc.so.6")
    assert info.kind == "shared-library"
    assert info.soname == "libc.so.6" and info.needed == ("ld-linux-x86-64.so.2",)


def test_fixture_files(fixture_rootfs):
    def elf(guest: str):
        return read_elf(fixture_rootfs.host(guest), guest)

    app = elf("/usr/bin/app")
    assert (app.needed, app.runpath, app.rpath) == (("libA.so.1", "libB.so.1", "libc.so.6"), "$ORIGIN/../lib/fx/lib", None)
    rpath_app = elf("/usr/bin/rpathapp")
    assert (rpath_app.rpath, rpath_app.runpath) == ("/opt/rp/first:/opt/rp/second", None)
    assert elf("/usr/bin/nodeflibapp").dt_flags_1 & DF_1_NODEFLIB
    lib_a = elf("/usr/lib/fx/lib/libA.so.1.2.3")
    assert (lib_a.soname, lib_a.needed, lib_a.kind) == ("libA.so.1", ("libC.so.1", "libc.so.6"), "shared-library")
    assert elf("/usr/lib/fx/noso/libnoso.so").soname is None
    assert elf("/usr/bin/pathapp").needed[0] == "usr/lib/fx/noso/libnoso.so"
    static = elf("/usr/bin/static")
    assert static.kind == "static-executable" and not static.is_dynamic and static.interp is None


def pyelftools_view(path: str) -> dict:
    with open(path, "rb") as f:
        elf = ELFFile(f)
        # pyelftools gives known p_type values as names: turn them back into numbers.
        segments = [(ENUM_P_TYPE_BASE.get(s["p_type"], s["p_type"]), s["p_flags"], s["p_offset"], s["p_vaddr"],
                     s["p_filesz"], s["p_memsz"], s["p_align"]) for s in elf.iter_segments()]
        tags: dict[str, list] = {}
        interp = None
        for segment in elf.iter_segments():
            if segment["p_type"] == "PT_INTERP":
                interp = segment.get_interp_name()
            if isinstance(segment, DynamicSegment):
                for tag in segment.iter_tags():
                    tags.setdefault(tag.entry.d_tag, []).append(tag)
    return {
        "segments": segments,
        "interp": interp,
        "needed": tuple(t.needed for t in tags.get("DT_NEEDED", [])),
        "soname": next((t.soname for t in tags.get("DT_SONAME", [])), None),
        "rpath": next((t.rpath for t in tags.get("DT_RPATH", [])), None),
        "runpath": next((t.runpath for t in tags.get("DT_RUNPATH", [])), None),
        "flags_1": next((t.entry.d_val for t in tags.get("DT_FLAGS_1", [])), 0),
    }


@pytest.mark.parametrize("guest", ["/usr/bin/app", "/usr/bin/rpathapp", "/usr/bin/nodeflibapp", "/usr/lib/fx/lib/libA.so.1.2.3"])
def test_agrees_with_pyelftools_on_fixture_files(fixture_rootfs, guest):
    assert_agrees_with_pyelftools(str(fixture_rootfs.host(guest)))


@host_file
def test_agrees_with_pyelftools_on_host_files(path):
    assert_agrees_with_pyelftools(os.path.realpath(path))


def assert_agrees_with_pyelftools(path: str) -> None:
    info = read_elf(path)
    theirs = pyelftools_view(path)
    assert [(s.p_type, s.p_flags, s.p_offset, s.p_vaddr, s.p_filesz, s.p_memsz, s.p_align) for s in info.segments] \
        == theirs["segments"]
    assert any(s.p_type == PT_LOAD for s in info.segments)
    assert info.interp == theirs["interp"]
    assert info.needed == theirs["needed"]
    assert (info.soname, info.rpath, info.runpath) == (theirs["soname"], theirs["rpath"], theirs["runpath"])
    assert info.dt_flags_1 == theirs["flags_1"]


# -- malformed input --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_elf(fixture_rootfs) -> bytes:
    return fixture_rootfs.host("/usr/bin/app").read_bytes()


def write(tmp_path: Path, data: bytes) -> str:
    path = tmp_path / "input"
    path.write_bytes(data)
    return str(path)


def patched(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


def elf32_header() -> bytes:
    # Elf32_Ehdr of an i386 executable: ident, e_type, e_machine, e_version, ...
    ident = b"\x7fELF" + bytes([1, 1, 1]) + bytes(9)
    return ident + struct.pack("<HHIIIIIHHHHHH", 2, 3, 1, 0x8049000, 52, 0, 0, 52, 32, 1, 40, 0, 0) + bytes(64)


MALFORMED = {
    # name: (make bytes from a real ELF, exception type, words the message has)
    "empty": (lambda elf: b"", NotElfError, "empty file"),
    "script": (lambda elf: b"#!/bin/sh\necho hello\n", NotElfError, "script"),
    "text": (lambda elf: b"just some text, longer than an ELF header would be, really quite long\n", NotElfError, "no ELF magic"),
    "ar archive": (lambda elf: b"!<arch>\n" + bytes(60), NotElfError, "ar archive"),
    "32-bit i386": (lambda elf: elf32_header(), UnsupportedElfError, "32-bit ELF file for i386"),
    "AArch64": (lambda elf: patched(elf, 18, "<H", 183), UnsupportedElfError, "AArch64"),
    "big-endian": (lambda elf: patched(elf, 5, "<B", 2), UnsupportedElfError, "big-endian"),
    "object file": (lambda elf: patched(elf, 16, "<H", 1), UnsupportedElfError, "ET_REL"),
    "e_phoff past the end": (lambda elf: patched(elf, 32, "<Q", 1 << 40), CorruptElfError, "program headers end at byte"),
    "e_phentsize": (lambda elf: patched(elf, 54, "<H", 32), CorruptElfError, "bad program header table"),
    "no program headers": (lambda elf: patched(elf, 56, "<H", 0), CorruptElfError, "no program headers"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_input_gets_a_typed_error_naming_the_file(tmp_path, real_elf, case):
    make, error_type, words = MALFORMED[case]
    path = write(tmp_path, make(real_elf))
    with pytest.raises(ElfError) as error:
        read_elf(path, "/guest/input")
    assert type(error.value) is error_type
    assert str(error.value).startswith("/guest/input: ") and words in str(error.value)


def truncation_points(elf: bytes) -> dict[int, type]:
    """Offsets to cut a real ELF at, and the error each cut must give."""
    e_phoff, = struct.unpack_from("<Q", elf, 32)
    e_phnum, = struct.unpack_from("<H", elf, 56)
    info_dynamic = None
    for i in range(e_phnum):
        p_type, _, p_offset = struct.unpack_from("<IIQ", elf, e_phoff + 56 * i)
        if p_type == PT_DYNAMIC:
            info_dynamic = p_offset
    points = {1: NotElfError, 3: NotElfError, 4: CorruptElfError, 19: CorruptElfError, 20: CorruptElfError, 63: CorruptElfError,
              64: CorruptElfError, e_phoff + 56 * e_phnum - 1: CorruptElfError, info_dynamic + 8: CorruptElfError,
              len(elf) // 2: CorruptElfError}
    return points


def test_truncated_elf_at_many_offsets(tmp_path, real_elf):
    for cut, error_type in sorted(truncation_points(real_elf).items()):
        path = write(tmp_path, real_elf[:cut])
        with pytest.raises(ElfError) as error:
            read_elf(path)
        assert type(error.value) is error_type, cut
        assert str(error.value).startswith(f"{path}: "), cut


def test_directory_and_missing_file(tmp_path):
    with pytest.raises(NotElfError, match="not a regular file"):
        read_elf(tmp_path)
    with pytest.raises(ElfError, match="cannot open") as error:
        read_elf(tmp_path / "missing")
    assert str(tmp_path / "missing") in str(error.value)


def test_random_corruption_gives_only_elf_errors(tmp_path, real_elf):
    """Byte flips in the headers, program headers and dynamic section: a result or an ElfError, nothing else."""
    e_phoff, = struct.unpack_from("<Q", real_elf, 32)
    e_phnum, = struct.unpack_from("<H", real_elf, 56)
    regions = [(0, e_phoff + 56 * e_phnum)]
    for i in range(e_phnum):
        p_type, _, p_offset, _, _, p_filesz = struct.unpack_from("<IIQQQQ", real_elf, e_phoff + 56 * i)
        if p_type == PT_DYNAMIC:
            regions.append((p_offset, p_offset + p_filesz))
    rng = random.Random(20240601)
    outcomes = {"read": 0, "error": 0}
    for _ in range(600):
        data = bytearray(real_elf)
        start, end = rng.choice(regions)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(start, end)] = rng.randrange(256)
        path = write(tmp_path, bytes(data))
        try:
            read_elf(path)
            outcomes["read"] += 1
        except ElfError as e:
            assert path in str(e)
            outcomes["error"] += 1
    assert outcomes["read"] and outcomes["error"]


def test_is_x86_64_elf(tmp_path, real_elf, fixture_rootfs):
    assert is_x86_64_elf(write(tmp_path, real_elf))
    assert not is_x86_64_elf(write(tmp_path, patched(real_elf, 18, "<H", 183)))
    assert not is_x86_64_elf(write(tmp_path, elf32_header()))
    assert not is_x86_64_elf(fixture_rootfs.host("/etc/passwd"))
    assert not is_x86_64_elf(tmp_path / "missing")
