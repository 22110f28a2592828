"""A cache directory: per-module caches under runtime lookup names, and an index of them.

``D/<basename>-<FileId:016x>-<ConfigId:016x>.fexcache`` (``cache.key.lookup_name``)
is what a runtime opens for a module: the name alone finds the file, so two
versions of a library (two FileIds) and two configurations (two ConfigIds)
coexist.  ``D/index`` lists the valid caches of the directory for tools and
runtimes that want one read instead of many ``stat`` calls::

    fexaot-cache-index 1
    <lookup name>\\t<FileId>\\t<ConfigId>\\t<content hash>\\t<ELF size>\\t<filter>\\t<cache size>

one line per cache, sorted by lookup name; FileId and ConfigId are 16 hex
digits, the content hash 32 (xxh3-128 of the ELF file, as in the cache's module
table), sizes decimal bytes, the filter ``verify``/``speed-profile``/``speed``.
The index is derived from the directory (every ``*.fexcache`` whose header,
table and name agree) and rewritten atomically under the directory lock; the
name stays the key, so a runtime that finds a file not in the index may still
use it after validating it as any cache.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from fexaot_tool.cache.atomic import atomic_write
from fexaot_tool.cache.key import lookup_name, parse_lookup_name
from fexaot_tool.cache.lock import directory_lock
from fexaot_tool.cache.reader import CacheFile, CacheRejected
from fexaot_tool.errors import FexaotError

INDEX_NAME = "index"
INDEX_MAGIC = "fexaot-cache-index 1"
CACHE_SUFFIX = ".fexcache"
_COPY_CHUNK = 1 << 20


class LayoutError(FexaotError):
    """A cache that cannot be installed, or a cache directory that cannot be used."""


@dataclass(frozen=True)
class IndexEntry:
    name: str
    file_id: int
    config_id: int
    content_hash: bytes
    elf_size: int
    filter: str
    cache_size: int

    def line(self) -> str:
        return (f"{self.name}\t{self.file_id:016x}\t{self.config_id:016x}\t{self.content_hash.hex()}\t"
                f"{self.elf_size}\t{self.filter}\t{self.cache_size}\n")


def cache_lookup_name(cache_path: str) -> str:
    """The lookup name of a per-object cache, from its own header and module (never from its path)."""
    with CacheFile.open(cache_path) as cache:
        if len(cache.modules) != 1:
            raise LayoutError(cache_path, f"a bundle of {len(cache.modules)} modules; only per-object caches "
                                          "are installed under lookup names")
        module = cache.module(cache.modules[0].file_id)
        return lookup_name(module.name, module.identity.file_id, cache.config_id)


def install_cache(cache_path: str, cache_dir: str, expect_name: str | None = None) -> str:
    """Copy a per-object cache into ``cache_dir`` under its lookup name, atomically; return the new path.

    ``expect_name`` (from the build graph) must equal the name the file's
    content gives: a graph and a cache that disagree are refused.  An identical
    file already in place is left alone.
    """
    name = cache_lookup_name(cache_path)
    if expect_name is not None and name != expect_name:
        raise LayoutError(cache_path, f"holds {name}, but the build expected {expect_name}")
    if not os.path.isdir(cache_dir):
        raise LayoutError(cache_dir, "cache directory does not exist")
    dest = os.path.join(cache_dir, name)
    with directory_lock(cache_dir, exclusive=False):
        if _same_bytes(cache_path, dest):
            return dest
        try:
            with open(cache_path, "rb") as f:
                atomic_write(dest, iter(lambda: f.read(_COPY_CHUNK), b""))
        except OSError as e:
            raise LayoutError(cache_path, f"cannot read: {e.strerror or e}") from None
    return dest


def scan(cache_dir: str) -> tuple[list[IndexEntry], list[tuple[str, str]]]:
    """Valid caches of ``cache_dir`` sorted by name, and (name, why) for lookup-named files that are not."""
    entries: list[IndexEntry] = []
    invalid: list[tuple[str, str]] = []
    try:
        names = sorted(os.listdir(cache_dir))
    except OSError as e:
        raise LayoutError(cache_dir, f"cannot list cache directory: {e.strerror or e}") from None
    for name in names:
        parsed = parse_lookup_name(name)
        if parsed is None:
            continue
        path = os.path.join(cache_dir, name)
        try:
            with CacheFile.open(path) as cache:
                entry = cache.find(parsed.file_id)
                if len(cache.modules) != 1 or entry is None or cache.config_id != parsed.config_id:
                    invalid.append((name, "its content does not match its name"))
                    continue
                module = cache.module(parsed.file_id)
                if module.name != parsed.basename:
                    invalid.append((name, f"its module is named {module.name!r}"))
                    continue
                entries.append(IndexEntry(name, parsed.file_id, parsed.config_id, entry.content_hash,
                                          entry.file_size, cache.filter.label, cache.file_size))
        except CacheRejected as e:
            invalid.append((name, f"cache rejected ({e.reason})"))
    return entries, invalid


def render_index(entries: list[IndexEntry]) -> str:
    return INDEX_MAGIC + "\n" + "".join(e.line() for e in sorted(entries, key=lambda e: e.name))


def read_index(cache_dir: str) -> list[IndexEntry]:
    """Parse ``D/index``."""
    path = os.path.join(cache_dir, INDEX_NAME)
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise LayoutError(path, f"cannot read index: {e.strerror or e}") from None
    if not lines or lines[0] != INDEX_MAGIC:
        raise LayoutError(path, f"not a fexaot cache index (first line must be {INDEX_MAGIC!r})")
    entries = []
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        try:
            name, file_id, cid, content_hash, elf_size, filter_label, cache_size = fields
            entries.append(IndexEntry(name, int(file_id, 16), int(cid, 16), bytes.fromhex(content_hash),
                                      int(elf_size), filter_label, int(cache_size)))
        except ValueError:
            raise LayoutError(path, f"line {number}: expected 7 tab-separated fields") from None
    return entries


def write_index(cache_dir: str) -> list[IndexEntry]:
    """Rewrite ``D/index`` from the directory's content, atomically, under the exclusive directory lock."""
    if not os.path.isdir(cache_dir):
        raise LayoutError(cache_dir, "cache directory does not exist")
    with directory_lock(cache_dir, exclusive=True):
        return write_index_locked(cache_dir)


def write_index_locked(cache_dir: str) -> list[IndexEntry]:
    """:func:`write_index` for a caller that already holds the exclusive directory lock."""
    entries, _ = scan(cache_dir)
    atomic_write(os.path.join(cache_dir, INDEX_NAME), [render_index(entries).encode("utf-8")])
    return entries


def _same_bytes(a: str, b: str) -> bool:
    try:
        if os.path.getsize(a) != os.path.getsize(b):
            return False
        with open(a, "rb") as fa, open(b, "rb") as fb:
            while True:
                x, y = fa.read(_COPY_CHUNK), fb.read(_COPY_CHUNK)
                if x != y:
                    return False
                if not x:
                    return True
    except OSError:
        return False
