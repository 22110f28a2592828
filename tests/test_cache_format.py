"""Cache file format v1: writer, reader, bundles, rejections, and the inspect/key commands.

Modules are made from the host's real libc and python3.11 (identity, ELF facts,
guest bytes); their sections hold a few hand-made records.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import xxhash
from rich.console import Console

from fexaot_tool.cache import atomic
from fexaot_tool.cache.format import (
    HEADER, HEADER_CHECKSUMMED, MODULE_ENTRY, MODULE_HEADER, PAGE_SIZE, SECTION_ENTRY,
    BlockIndexEntry, CodemapEntry, ElfFacts, Filter, Relocation, SectionKind, Untranslatable,
    checksum, pack_section,
)
from fexaot_tool.cache.inspect import as_json, render, summarize
from fexaot_tool.cache.key import TranslatorConfig, config_id, lookup_name, module_identity
from fexaot_tool.cache.reader import REJECT_REASONS, CacheFile, CacheRejected, check_module_matches
from fexaot_tool.cache.writer import BundleError, ModuleImage, write_bundle, write_cache
from fexaot_tool.cli import main
from fexaot_tool.elf import read_elf

PYTHON = "/usr/bin/python3.11"
LIBC = "/lib/x86_64-linux-gnu/libc.so.6"
CONFIG = config_id(TranslatorConfig())
RELAXED = config_id(TranslatorConfig(memory_order="relaxed"))


def make_image(path: str, name: str | None = None) -> ModuleImage:
    """A module of a real ELF file: two blocks at its entry point, their (fake) code and relocations."""
    info = read_elf(path)
    facts = ElfFacts.from_elf(info)
    entry = facts.e_entry - facts.image_base
    with open(path, "rb") as f:
        f.seek(info.vaddr_to_offset(facts.e_entry))
        guest = f.read(24)
    sections = {
        SectionKind.CODEMAP: pack_section(SectionKind.CODEMAP, [
            CodemapEntry(entry, 16, 4, 0b1, 0), CodemapEntry(entry + 16, 8, 2, 0b100, 0b10)]),
        SectionKind.BLOCK_INDEX: pack_section(SectionKind.BLOCK_INDEX, [
            BlockIndexEntry(entry, 0, 32, xxhash.xxh3_64_intdigest(guest[:16]), 16),
            BlockIndexEntry(entry + 16, 32, 16, xxhash.xxh3_64_intdigest(guest[16:]), 8)]),
        SectionKind.RELOCATIONS: pack_section(SectionKind.RELOCATIONS, [
            Relocation(8, 1, -16), Relocation(40, 2, 0x1234)]),
        SectionKind.UNTRANSLATABLE: pack_section(SectionKind.UNTRANSLATABLE, [
            Untranslatable(entry + 0x40, 2, 1, 0, 5)]),
        SectionKind.STRINGS: b"cpuid",
        SectionKind.CODE: bytes(range(48)),
    }
    return ModuleImage(module_identity(path), name or os.path.basename(path), facts, sections)


@pytest.fixture(scope="module")
def images() -> dict[str, ModuleImage]:
    return {"libc": make_image(LIBC), "python": make_image(PYTHON)}


@pytest.fixture
def libc_cache(tmp_path, images) -> Path:
    path = tmp_path / "libc.so.6.fexcache"
    write_cache(path, CONFIG, Filter.SPEED, [images["libc"]])
    return path


def reseal(data: bytearray) -> bytearray:
    """Recompute every checksum, so a test can build a file whose only fault is structural."""
    h = HEADER.unpack_from(data)
    count, table_offset, data_offset = h[4], h[6], h[7]
    for i in range(count):
        at = table_offset + i * MODULE_ENTRY.size
        fields = list(MODULE_ENTRY.unpack_from(data, at))
        fields[5] = checksum(data[fields[3]:fields[3] + fields[4]])
        MODULE_ENTRY.pack_into(data, at, *fields)
    struct.pack_into("<Q", data, 48, checksum(data[table_offset:data_offset]))
    struct.pack_into("<Q", data, HEADER_CHECKSUMMED, checksum(data[:HEADER_CHECKSUMMED]))
    return data


def rejection(path, expect_config_id=None) -> CacheRejected:
    """Open and fully verify ``path``; return the rejection it must raise."""
    with pytest.raises(CacheRejected) as info:
        with CacheFile.open(path, expect_config_id) as cache:
            cache.verify_all()
    return info.value


# --- writer -----------------------------------------------------------------------


def test_round_trip(libc_cache, images):
    image = images["libc"]
    with CacheFile.open(libc_cache, expect_config_id=CONFIG) as cache:
        assert (cache.format_version, cache.config_id, cache.filter) == (1, CONFIG, Filter.SPEED)
        assert cache.file_size == os.path.getsize(libc_cache)
        module = cache.module(image.identity.file_id)
        cache.verify_all()
        assert module.name == "libc.so.6"
        assert module.identity == image.identity
        assert module.facts == image.facts and module.facts.build_id == read_elf(LIBC).build_id
        for kind in SectionKind:
            assert bytes(module.section(kind)) == image.sections[kind], kind
        blocks = list(module.records(SectionKind.BLOCK_INDEX))
        assert [b.code_offset for b in blocks] == [0, 32]
        assert module.find_block(blocks[1].guest_offset) == blocks[1]
        assert module.find_block(blocks[1].guest_offset + 1) is None
        assert module.find_block(0) is None
        check_module_matches(module, LIBC)


def test_module_without_sections(tmp_path):
    # What a build makes before the codemap and the translator exist: every section empty.
    image = ModuleImage(module_identity(PYTHON), "python3.11", ElfFacts.from_elf(read_elf(PYTHON)))
    path = tmp_path / "python3.11.fexcache"
    write_cache(path, CONFIG, Filter.VERIFY, [image])
    assert os.path.getsize(path) == 2 * PAGE_SIZE
    with CacheFile.open(path, CONFIG) as cache:
        cache.verify_all()
        module = cache.module(image.identity.file_id)
        assert module.facts.e_type == 2 and module.facts.image_base == 0x400000  # Debian's python3.11 is not PIE
        assert all(s.size == 0 for s in module.sections)
        assert module.find_block(module.facts.e_entry - module.facts.image_base) is None


def test_layout_is_page_aligned(tmp_path, images):
    path = tmp_path / "bundle.fexcache"
    write_cache(path, CONFIG, Filter.SPEED, list(images.values()))
    with CacheFile.open(path) as cache:
        assert [e.file_id for e in cache.modules] == sorted(e.file_id for e in cache.modules)
        for module in (cache.module(e.file_id) for e in cache.modules):
            assert module.entry.region_offset % PAGE_SIZE == 0
            assert module.entry.region_size % PAGE_SIZE == 0
            assert module.section_info(SectionKind.CODE).offset % PAGE_SIZE == 0
            assert all(s.offset % 8 == 0 for s in module.sections)


def test_writes_are_deterministic_and_hold_no_host_paths(tmp_path, images):
    a, b = tmp_path / "a.fexcache", tmp_path / "b.fexcache"
    write_cache(a, CONFIG, Filter.SPEED, [images["libc"], images["python"]])
    write_cache(b, CONFIG, Filter.SPEED, [images["python"], images["libc"]])
    data = a.read_bytes()
    assert data == b.read_bytes()
    for host_path in (str(tmp_path), LIBC, PYTHON, "/usr/", "/lib/"):
        assert host_path.encode() not in data


def test_writer_refuses_bad_modules(images):
    libc = images["libc"]
    with pytest.raises(ValueError, match="basename"):
        ModuleImage(libc.identity, "/lib/libc.so.6", libc.facts)
    backwards = pack_section(SectionKind.BLOCK_INDEX, [BlockIndexEntry(0x20, 0, 0, 0, 1), BlockIndexEntry(0x10, 0, 0, 0, 1)])
    with pytest.raises(ValueError, match="out of order"):
        ModuleImage(libc.identity, "libc.so.6", libc.facts, {SectionKind.BLOCK_INDEX: backwards})
    outside = pack_section(SectionKind.BLOCK_INDEX, [BlockIndexEntry(0x10, 0, 64, 0, 1)])
    with pytest.raises(ValueError, match="outside CODE"):
        ModuleImage(libc.identity, "libc.so.6", libc.facts, {SectionKind.BLOCK_INDEX: outside})
    with pytest.raises(ValueError, match="two modules"):
        write_cache("/nonexistent/x", CONFIG, Filter.SPEED, [libc, make_image(LIBC, "copy.so")])


def test_failed_rename_keeps_the_old_file_and_no_partial(tmp_path, images, monkeypatch):
    target = tmp_path / "libc.fexcache"
    write_cache(target, CONFIG, Filter.SPEED, [images["libc"]])
    before = target.read_bytes()

    def crash(src, dst):
        raise RuntimeError("killed between fsync and rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(RuntimeError, match="killed"):
        write_cache(target, CONFIG, Filter.SPEED_PROFILE, [images["libc"]])
    assert target.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["libc.fexcache"]


def test_write_errors_are_one_line_user_errors(tmp_path, images):
    with pytest.raises(atomic.WriteError, match=r"missing/x\.fexcache: cannot write: No such file or directory"):
        write_cache(tmp_path / "missing" / "x.fexcache", CONFIG, Filter.SPEED, [images["libc"]])


def test_stale_partials_of_dead_writers_are_removed(tmp_path, images):
    target = tmp_path / "libc.fexcache"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    stale = atomic.partial_path(target, dead_pid)
    alive = atomic.partial_path(target, os.getppid())  # a running writer's file is not touched
    other = atomic.partial_path(tmp_path / "libc", dead_pid)  # another target's partial either
    for p in (stale, alive, other):
        with open(p, "wb") as f:
            f.write(b"half a cache")
    write_cache(target, CONFIG, Filter.SPEED, [images["libc"]])
    assert not os.path.exists(stale)
    assert os.path.exists(alive) and os.path.exists(other)
    CacheFile.open(target).verify_all()


# --- bundles ----------------------------------------------------------------------


def test_bundle_copies_regions_byte_for_byte(tmp_path, images):
    sources = []
    for key, image in images.items():
        path = str(tmp_path / f"{key}.fexcache")
        write_cache(path, CONFIG, Filter.SPEED, [image])
        sources.append(path)
    bundle = tmp_path / "python3.fexcache"
    write_bundle(bundle, sources + [sources[0]])  # a duplicate FileId is kept once

    reordered = tmp_path / "reordered.fexcache"
    write_bundle(reordered, list(reversed(sources)))
    assert reordered.read_bytes() == bundle.read_bytes()

    direct = tmp_path / "direct.fexcache"
    write_cache(direct, CONFIG, Filter.SPEED, list(images.values()))
    assert direct.read_bytes() == bundle.read_bytes()

    with CacheFile.open(bundle, CONFIG) as cache:
        cache.verify_all()
        assert len(cache.modules) == 2
        for source in sources:
            with CacheFile.open(source) as single:
                (entry,) = single.modules
                assert bytes(cache.region(cache.find(entry.file_id))) == bytes(single.region(entry))
        assert {cache.module(e.file_id).name for e in cache.modules} == {"libc.so.6", "python3.11"}


def test_bundle_needs_one_configuration(tmp_path, images):
    libc, python, python_relaxed, python_verify = (str(tmp_path / n) for n in ("l", "p", "pr", "pv"))
    write_cache(libc, CONFIG, Filter.SPEED, [images["libc"]])
    write_cache(python, CONFIG, Filter.SPEED, [images["python"]])
    write_cache(python_relaxed, RELAXED, Filter.SPEED, [images["python"]])
    write_cache(python_verify, CONFIG, Filter.VERIFY, [images["python"]])
    with pytest.raises(BundleError, match=f"^{python_relaxed}: ConfigId {RELAXED:016x}"):
        write_bundle(tmp_path / "b", [libc, python_relaxed])
    with pytest.raises(BundleError, match="filter verify differs"):
        write_bundle(tmp_path / "b", [libc, python_verify])
    with pytest.raises(BundleError, match="at least one"):
        write_bundle(tmp_path / "b", [])
    with open(python, "r+b") as f:  # damage one source: the bundle is refused, nothing written
        f.seek(PAGE_SIZE + 100)
        f.write(b"\xff")
    with pytest.raises(CacheRejected, match=f"^{python}: cache rejected \\(checksum\\)"):
        write_bundle(tmp_path / "b", [libc, python])
    assert not (tmp_path / "b").exists()


def test_a_damaged_module_does_not_spoil_the_rest_of_a_bundle(tmp_path, images):
    path = tmp_path / "bundle.fexcache"
    write_cache(path, CONFIG, Filter.SPEED, list(images.values()))
    with CacheFile.open(path) as cache:
        first, second = cache.modules
    data = bytearray(path.read_bytes())
    data[second.region_offset + 200] ^= 0x40
    path.write_bytes(data)
    with CacheFile.open(path, CONFIG) as cache:  # open checks only header and table
        assert cache.module(first.file_id).identity == first.identity
        with pytest.raises(CacheRejected) as info:
            cache.module(second.file_id)
        assert info.value.reason == "checksum"


# --- rejections -------------------------------------------------------------------


def test_reject_missing(tmp_path):
    r = rejection(tmp_path / "nothing.fexcache")
    assert r.reason == "missing" and "nothing.fexcache" in str(r)
    assert rejection(tmp_path).reason == "missing"  # a directory


def test_reject_bad_magic():
    r = rejection(LIBC)
    assert (r.reason, r.path) == ("bad-magic", LIBC)
    assert "7f 45 4c 46" in r.detail


def test_reject_other_version(libc_cache):
    data = bytearray(libc_cache.read_bytes())
    struct.pack_into("<H", data, 8, 2)
    libc_cache.write_bytes(data)
    assert rejection(libc_cache).detail == "format version 2, this reader reads version 1"


def test_reject_config_mismatch(libc_cache):
    r = rejection(libc_cache, expect_config_id=RELAXED)
    assert r.reason == "config-mismatch"
    assert f"{CONFIG:016x}" in r.detail and f"{RELAXED:016x}" in r.detail
    CacheFile.open(libc_cache, expect_config_id=CONFIG).verify_all()  # same file, right ConfigId


def test_reject_content_mismatch(libc_cache, images):
    with CacheFile.open(libc_cache) as cache:
        module = cache.module(images["libc"].identity.file_id)
        with pytest.raises(CacheRejected) as info:
            check_module_matches(module, PYTHON)
    assert info.value.reason == "content-mismatch"
    assert PYTHON in info.value.detail


def test_reject_not_in_bundle(libc_cache, images):
    with CacheFile.open(libc_cache) as cache:
        with pytest.raises(CacheRejected) as info:
            cache.module(images["python"].identity.file_id)
    assert info.value.reason == "not-in-bundle"


def test_reject_truncated_and_trailing_bytes(libc_cache):
    data = libc_cache.read_bytes()
    libc_cache.write_bytes(data[:-1])
    assert rejection(libc_cache).reason == "truncated"
    libc_cache.write_bytes(data + b"\0")
    assert rejection(libc_cache).reason == "corrupt"


# Structural faults under valid checksums: (what, byte offset in the file, new
# value, words the rejection must say).  The one region starts at PAGE_SIZE.
REGION = PAGE_SIZE
DIRECTORY = REGION + MODULE_HEADER.size
CORRUPTIONS = [
    ("header reserved byte", 11, 1, "nonzero reserved header field"),
    ("unknown filter", 10, 9, "unknown filter 9"),
    ("table reserved field", HEADER.size + 56, 1, "entry 0 has a nonzero reserved field"),
    ("FileId not from content hash", HEADER.size + 0, 0x55, "not the high half of its content hash"),
    ("region offset", HEADER.size + 33, 0x20, "region at 0x2000, expected 0x1000"),
    ("module header magic", REGION + 0, ord("X"), "module header magic"),
    ("module header reserved byte", REGION + 59, 1, "nonzero reserved module header field"),
    ("module name padding", REGION + 96 + 255, ord("x"), "not a NUL-terminated basename"),
    ("section directory kind", DIRECTORY, 9, "entry 0 is (kind 9"),
    ("CODE not page-aligned", DIRECTORY + 5 * SECTION_ENTRY.size + 8, 8, "code section [0x1008"),
    ("relocation reserved field", None, 1, "relocations entry 0 has a nonzero reserved field"),
]


@pytest.mark.parametrize("what,offset,value,words", CORRUPTIONS, ids=[c[0] for c in CORRUPTIONS])
def test_reject_corrupt(libc_cache, what, offset, value, words):
    data = bytearray(libc_cache.read_bytes())
    if offset is None:  # inside RELOCATIONS: the 16-bit reserved field of its first entry
        with CacheFile.open(libc_cache) as cache:
            offset = REGION + cache.module(cache.modules[0].file_id).section_info(SectionKind.RELOCATIONS).offset + 6
    data[offset] = value
    libc_cache.write_bytes(reseal(data))
    r = rejection(libc_cache)
    assert r.reason == "corrupt"
    assert words in r.detail


def test_reject_unsorted_table(tmp_path, images):
    path = tmp_path / "bundle.fexcache"
    write_cache(path, CONFIG, Filter.SPEED, list(images.values()))
    data = bytearray(path.read_bytes())
    # Swap the identities (FileId, content hash, size) of the two rows, keeping their regions in place.
    first, second = HEADER.size, HEADER.size + MODULE_ENTRY.size
    data[first:first + 32], data[second:second + 32] = data[second:second + 32], data[first:first + 32]
    path.write_bytes(reseal(data))
    r = rejection(path)
    assert r.reason == "corrupt" and "not sorted" in r.detail


def test_every_flipped_byte_is_rejected_with_its_reason(tmp_path, images):
    path = tmp_path / "small.fexcache"
    write_cache(path, CONFIG, Filter.SPEED, [images["libc"]])
    data = path.read_bytes()
    file_id = images["libc"].identity.file_id
    with open(path, "r+b", buffering=0) as f:
        for offset, byte in enumerate(data):
            f.seek(offset)
            f.write(bytes([byte ^ 0xFF]))
            try:
                with CacheFile.open(path) as cache:
                    cache.module(file_id)
                    cache.verify_all()
            except CacheRejected as e:
                expected = "bad-magic" if offset < 8 else "version" if offset < 10 else "checksum"
                assert e.reason == expected, (offset, e)
            else:
                pytest.fail(f"flipping byte {offset} went unnoticed")
            f.seek(offset)
            f.write(bytes([byte]))


def test_every_truncation_is_rejected_as_truncated(tmp_path, images):
    path = tmp_path / "small.fexcache"
    write_cache(path, CONFIG, Filter.SPEED, [images["libc"]])
    size = os.path.getsize(path)
    for length in range(size - 1, -1, -1):
        os.truncate(path, length)
        r = rejection(path)
        assert r.reason == "truncated", (length, r)


def test_rejection_reasons_are_the_documented_ones():
    assert REJECT_REASONS == ("missing", "bad-magic", "version", "config-mismatch", "content-mismatch",
                              "truncated", "checksum", "corrupt", "not-in-bundle")
    doc = (Path(__file__).parent.parent / "docs" / "cache-format.md").read_text()
    for reason in REJECT_REASONS:
        assert f"`{reason}`" in doc, reason


# --- inspect and key --------------------------------------------------------------


def test_inspect_lists_the_modules(tmp_path, images):
    path = tmp_path / "bundle.fexcache"
    write_cache(path, CONFIG, Filter.SPEED_PROFILE, list(images.values()))
    with CacheFile.open(path) as cache:
        summary = summarize(cache)
    out = io.StringIO()
    render(summary, Console(file=out, width=200))
    text = out.getvalue()
    for image in images.values():
        assert image.name in text and f"{image.identity.file_id:016x}" in text
    assert f"{CONFIG:016x}" in text and "speed-profile" in text
    assert "block-index 2" in text and "code 48 B" in text

    document = as_json(summary)
    assert [m["name"] for m in document["modules"]] == [
        m.name for m in sorted(images.values(), key=lambda m: m.identity.file_id)]
    assert document["modules"][0]["sections"]["relocations"] == {"bytes": 32, "entries": 2}


def test_cli_inspect(tmp_path, images, capsys):
    path = str(tmp_path / "libc.fexcache")
    write_cache(path, CONFIG, Filter.SPEED, [images["libc"]])
    assert main(["inspect", "--json", "--verify", path]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["verified"] is True
    assert document["modules"][0]["name"] == "libc.so.6"
    assert main(["inspect", path]) == 0
    assert "libc.so.6" in capsys.readouterr().out


@pytest.mark.parametrize("content", [b"", b"FEXAOTC\0\x02\x00", b"#!/bin/sh\n" * 10])
def test_cli_inspect_bad_file_is_one_line_and_exit_1(tmp_path, capsys, content):
    bad = tmp_path / "bad.fexcache"
    bad.write_bytes(content)
    assert main(["inspect", str(bad)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith(f"fexaot inspect: {bad}: cache rejected (")


def test_cli_key(tmp_path, capsys):
    assert main(["key", PYTHON, "--memory-order", "relaxed"]) == 0
    out = capsys.readouterr().out
    identity = module_identity(PYTHON)
    assert f"FileId       {identity.file_id:016x}" in out
    assert f"ConfigId     {RELAXED:016x}" in out
    assert lookup_name("python3.11", identity.file_id, RELAXED) in out

    script = tmp_path / "run.sh"
    script.write_text("#!/bin/sh\n")
    assert main(["key", str(script)]) == 1
    assert capsys.readouterr().err == f"fexaot key: {script}: not an ELF file (a script starting with '#!')\n"
    assert main(["key", PYTHON, "--cpu-features", "lse,avx2"]) == 1
    assert "unknown AArch64 CPU feature avx2" in capsys.readouterr().err
