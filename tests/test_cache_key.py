"""FileId, ConfigId and the stat-keyed FileId memo, on the host's real ELF files."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time

import pytest
import xxhash

from fexaot_tool.cache.key import (
    RACY_WINDOW_NS, ConfigError, FileIdCache, IdentityError, ModuleIdentity, TranslatorConfig,
    canonical_encoding, config_id, identity_of_bytes, lookup_name, module_identity,
)

PYTHON = "/usr/bin/python3.11"
LIBC = "/lib/x86_64-linux-gnu/libc.so.6"
SECOND = 1_000_000_000


def future_clock() -> int:
    """A clock far enough ahead that every file counts as old (not racy)."""
    return time.time_ns() + 3600 * SECOND


# --- module_identity --------------------------------------------------------------


@pytest.mark.parametrize("path", [PYTHON, LIBC])
def test_identity_is_xxh3_128_of_the_full_content(path):
    with open(path, "rb") as f:
        content = f.read()
    digest = xxhash.xxh3_128(content).digest()
    identity = module_identity(path)
    assert identity.content_hash == digest
    assert identity.file_id == int.from_bytes(digest[:8], "big") == xxhash.xxh3_128_intdigest(content) >> 64
    assert identity.size == os.path.getsize(path)
    assert module_identity(path) == identity


def test_identity_depends_on_content_not_path(tmp_path):
    copy = tmp_path / "renamed.so"
    shutil.copyfile(LIBC, copy)
    assert module_identity(copy) == module_identity(LIBC)

    data = bytearray(copy.read_bytes())
    data[-1] ^= 1
    copy.write_bytes(data)
    changed = module_identity(copy)
    assert changed.file_id != module_identity(LIBC).file_id
    assert changed.size == os.path.getsize(LIBC)


def test_identity_of_an_empty_file(tmp_path):
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert module_identity(empty) == ModuleIdentity.from_hash(xxhash.xxh3_128(b"").digest(), 0)


def test_identity_of_a_missing_file_names_it(tmp_path):
    with pytest.raises(IdentityError, match="nope.so: cannot read"):
        module_identity(tmp_path / "nope.so")


# --- ConfigId ---------------------------------------------------------------------


def test_canonical_encoding_is_pinned():
    # If this changes, every ConfigId changes: do it on purpose, with the format or translator version.
    assert canonical_encoding(TranslatorConfig()) == (
        b"fexaot-config 1\n"
        b"cpu_features=flagm,lrcpc,lse\n"
        b"format_version=1\n"
        b"memory_order=tso\n"
        b"translator_version=5\n"
    )
    assert config_id(TranslatorConfig()) == xxhash.xxh3_64_intdigest(canonical_encoding(TranslatorConfig()))


def test_every_config_field_changes_config_id():
    # One alternative per field; a new field without an entry here fails the first assert.
    alternatives = {
        "format_version": 2,
        "translator_version": 6,
        "cpu_features": ("flagm", "lrcpc", "lse", "lse2"),
        "memory_order": "relaxed",
    }
    assert set(alternatives) == {f.name for f in dataclasses.fields(TranslatorConfig)}
    base = config_id(TranslatorConfig())
    ids = {base}
    for name, value in alternatives.items():
        changed = config_id(dataclasses.replace(TranslatorConfig(), **{name: value}))
        assert changed != base, name
        ids.add(changed)
    assert len(ids) == len(alternatives) + 1


def test_config_id_ignores_feature_order_and_duplicates():
    assert config_id(TranslatorConfig(cpu_features=("lse", "flagm", "lrcpc", "lse"))) == config_id(TranslatorConfig())
    assert TranslatorConfig(cpu_features=("lse", "flagm")).cpu_features == ("flagm", "lse")


def test_filter_is_not_part_of_the_config():
    assert not any("filter" in f.name for f in dataclasses.fields(TranslatorConfig))


def test_bad_config_values_are_user_errors():
    with pytest.raises(ConfigError, match="memory order 'seq'"):
        TranslatorConfig(memory_order="seq")
    with pytest.raises(ConfigError, match="CPU feature avx2"):
        TranslatorConfig(cpu_features=("lse", "avx2"))


def test_lookup_name():
    assert lookup_name("libc.so.6", 0xAFF81B5F1B6787F0, 0x1) == "libc.so.6-aff81b5f1b6787f0-0000000000000001.fexcache"
    with pytest.raises(ValueError):
        lookup_name("lib/libc.so.6", 1, 2)


# --- FileIdCache ------------------------------------------------------------------


def test_memo_hits_and_persists(tmp_path, monkeypatch):
    memo = tmp_path / "fileids.json"
    cache = FileIdCache(memo, clock=future_clock)
    first = cache.identity(LIBC)
    assert first == module_identity(LIBC)
    assert cache.identity(LIBC) == first
    assert (cache.hits, cache.misses) == (1, 1)
    cache.save()

    # A fresh memo answers from the file without reading the ELF file at all.
    def no_hashing(*args):
        raise AssertionError("hashed a file the memo knows")

    monkeypatch.setattr("fexaot_tool.cache.key._identity_of_open_file", no_hashing)
    reloaded = FileIdCache(memo, clock=future_clock)
    assert reloaded.identity(LIBC) == first
    assert (reloaded.hits, reloaded.misses, reloaded.load_problem) == (1, 0, None)


def test_memo_file_is_deterministic_json(tmp_path):
    memo = tmp_path / "fileids.json"
    cache = FileIdCache(memo, clock=future_clock)
    cache.identity(PYTHON)
    cache.identity(LIBC)
    cache.save()
    first = memo.read_bytes()
    document = json.loads(first)
    assert sorted(document["entries"]) == sorted(os.path.abspath(p) for p in (PYTHON, LIBC))

    other = FileIdCache(tmp_path / "other.json", clock=future_clock)
    other.identity(LIBC)
    other.identity(PYTHON)
    other.save()
    assert (tmp_path / "other.json").read_bytes() == first


def test_rewrite_with_mtime_restored_is_hashed_again(tmp_path):
    elf = tmp_path / "lib.so"
    elf.write_bytes(b"A" * 4096)
    cache = FileIdCache(tmp_path / "memo.json", clock=future_clock)
    old = cache.identity(elf)
    before = os.stat(elf)

    time.sleep(0.05)  # let the kernel's coarse file clock tick
    with open(elf, "r+b") as f:  # same inode, same size, other content
        f.write(b"B" * 4096)
    os.utime(elf, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(elf)
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)
    assert after.st_ctime_ns != before.st_ctime_ns, "precondition: ctime moved"

    new = cache.identity(elf)
    assert new != old
    assert new == module_identity(elf)
    assert (cache.hits, cache.misses) == (0, 2)


def test_file_replaced_by_rename_with_old_mtime_is_hashed_again(tmp_path):
    elf = tmp_path / "lib.so"
    elf.write_bytes(b"A" * 100)
    cache = FileIdCache(tmp_path / "memo.json", clock=future_clock)
    old = cache.identity(elf)
    before = os.stat(elf)
    replacement = tmp_path / "new.so"
    replacement.write_bytes(b"B" * 100)
    os.utime(replacement, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.replace(replacement, elf)
    assert cache.identity(elf) != old
    assert cache.misses == 2


def test_racy_entries_are_not_trusted(tmp_path):
    elf = tmp_path / "fresh.so"
    elf.write_bytes(b"x" * 10)
    st = os.stat(elf)
    newest = max(st.st_mtime_ns, st.st_ctime_ns)
    now = [newest + RACY_WINDOW_NS - 1]  # hashed within the window: could change unseen
    cache = FileIdCache(tmp_path / "memo.json", clock=lambda: now[0])

    cache.identity(elf)
    cache.identity(elf)
    assert (cache.hits, cache.misses, cache.racy) == (0, 2, 2)
    cache.save()
    assert not (tmp_path / "memo.json").exists()  # nothing trusted, nothing to save

    now[0] = newest + RACY_WINDOW_NS + 1
    cache.identity(elf)
    cache.identity(elf)
    assert (cache.hits, cache.misses, cache.racy) == (1, 3, 2)


def test_corrupt_memo_file_is_tolerated_and_replaced(tmp_path):
    memo = tmp_path / "memo.json"
    for garbage in (b"\x00\xff not json", b'{"format": "fexaot-fileid-cache", "version": 1, "entries": {"/x": {"stat": [1]}}}', b"[]"):
        memo.write_bytes(garbage)
        cache = FileIdCache(memo, clock=future_clock)
        assert cache.load_problem
        assert cache.identity(LIBC) == module_identity(LIBC)
        cache.save()
        assert FileIdCache(memo).load_problem is None


def test_memo_of_a_missing_file_is_a_user_error(tmp_path):
    cache = FileIdCache(tmp_path / "memo.json")
    with pytest.raises(IdentityError, match="gone.so"):
        cache.identity(tmp_path / "gone.so")


def test_identity_of_bytes_equals_identity_of_the_file():
    path = "/lib/x86_64-linux-gnu/libc.so.6"
    with open(path, "rb") as f:
        data = f.read()
    assert identity_of_bytes(data) == module_identity(path)
    assert identity_of_bytes(data[:-1]) != module_identity(path)
