"""Finding and validating the cache of a module the guest maps, with a named reason for every rejection.

Two sources, searched in this order for each executable ELF file the guest
maps (its FileId from ``cache.key``, the one place keys are computed):

1. bundle files given with ``--cache`` (e.g. ``cache/python3.fexcache``),
   looked up by FileId in their module tables;
2. a cache directory (``--cache-dir``) of per-module files named by
   ``cache.key.lookup_name(basename, FileId, ConfigId)``, laid out flat.

A module is used only when the file opens (magic, version, checksums, size),
was built for this runtime's ConfigId, and its module's identity (128-bit
content hash and size) is the mapped file's.  When no cache has the file's
FileId, a cache for another file of the same basename (another version of the
library) is reported as ``content-mismatch``, and one for the same file but
another ConfigId as ``config-mismatch``: those are the mistakes a user makes,
and "missing" would hide them.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field

from fexaot_tool.cache.key import ModuleIdentity, lookup_name
from fexaot_tool.cache.lock import open_cache_for_use
from fexaot_tool.cache.reader import CacheFile, CachedModule, CacheRejected, check_module_matches


@dataclass(frozen=True)
class CacheEvent:
    """One line of ``--cache-diagnostics``: a cache used, or rejected with its reason."""

    module: str  # basename of the guest's file
    path: str  # the cache file (or the name that was looked for)
    reason: str  # "loaded" or one of cache.reader.REJECT_REASONS
    detail: str

    def line(self) -> str:
        if self.reason == "loaded":
            return f"fexaot run: cache: {self.path}: loaded {self.module}: {self.detail}"
        return f"fexaot run: cache: {self.path}: rejected ({self.reason}) for {self.module}: {self.detail}"


@dataclass
class CacheFinder:
    bundles: tuple[str, ...]
    cache_dir: str | None
    config_id: int
    events: list[CacheEvent] = field(default_factory=list)
    _open: dict[str, CacheFile | None] = field(default_factory=dict)
    # Shared flocks on the cache-directory files in use, held until close(): `fexaot gc` never
    # removes a locked file (fexaot_tool/cache/lock.py, docs/packaging.md).
    _locks: dict[str, int] = field(default_factory=dict)

    def _file(self, path: str, module: str) -> CacheFile | None:
        """The open cache file, or None after reporting why it cannot be used (once per file)."""
        if path not in self._open:
            try:
                self._open[path] = CacheFile.open(path, expect_config_id=self.config_id)
            except CacheRejected as e:
                self._open[path] = None
                self.events.append(CacheEvent(module, path, e.reason, e.detail))
        return self._open[path]

    def find(self, basename: str, host_path: str, identity: ModuleIdentity) -> CachedModule | None:
        """The validated cached module for the file at ``host_path``, or None (the events say why)."""
        before = len(self.events)
        for path in self.bundles:
            cache = self._file(path, basename)
            if cache is not None and cache.find(identity.file_id) is not None:
                module = self._module(cache, identity.file_id, basename, host_path)
                if module is not None:
                    return module
        if self.cache_dir is not None:
            path = os.path.join(self.cache_dir, lookup_name(basename, identity.file_id, self.config_id))
            if path not in self._locks:
                fd = open_cache_for_use(path)  # None: missing, or removed by gc while we waited
                if fd is not None:
                    self._locks[path] = fd
            if path in self._locks or os.path.lexists(path):  # unlocked only if it cannot be opened: the reader says why
                cache = self._file(path, basename)
                if cache is not None:
                    module = self._module(cache, identity.file_id, basename, host_path)
                    if module is not None:
                        return module
        if len(self.events) == before:
            self._explain_missing(basename, host_path, identity)
        return None

    def _module(self, cache: CacheFile, file_id: int, basename: str, host_path: str) -> CachedModule | None:
        try:
            module = cache.module(file_id)
            check_module_matches(module, host_path)
        except CacheRejected as e:
            self.events.append(CacheEvent(basename, cache.path, e.reason, e.detail))
            return None
        return module

    def _explain_missing(self, basename: str, host_path: str, identity: ModuleIdentity) -> None:
        """No cache has this FileId: say which cache of the same name does not fit, or that none exists."""
        for path in self.bundles:
            cache = self._file(path, basename)
            if cache is None:
                continue
            for entry in cache.modules:
                try:
                    other = cache.module(entry.file_id)
                except CacheRejected as e:
                    self.events.append(CacheEvent(basename, path, e.reason, e.detail))
                    continue
                if other.name == basename:
                    self._content_mismatch(other, basename, host_path)
                    return
        if self.cache_dir is not None:
            pattern = os.path.join(glob.escape(self.cache_dir), glob.escape(basename) + "-*-*.fexcache")
            candidates = sorted(glob.glob(pattern))
            same_file = [p for p in candidates if os.path.basename(p)[len(basename) + 1:].startswith(
                f"{identity.file_id:016x}-")]
            for path in same_file or candidates:
                suffix = os.path.basename(path)[len(basename) + 1:-len(".fexcache")]
                if suffix.count("-") != 1:
                    continue  # another library whose name starts with this one's and a dash
                try:
                    cache = CacheFile.open(path, expect_config_id=self.config_id)
                except CacheRejected as e:
                    self.events.append(CacheEvent(basename, path, e.reason, e.detail))
                    return
                try:
                    if len(cache.modules) == 1:
                        self._content_mismatch(cache.module(cache.modules[0].file_id), basename, host_path)
                        return
                except CacheRejected as e:
                    self.events.append(CacheEvent(basename, path, e.reason, e.detail))
                    return
            expected = os.path.join(self.cache_dir, lookup_name(basename, identity.file_id, self.config_id))
            self.events.append(CacheEvent(basename, expected, "missing", "no such file"))
        elif self.bundles:
            self.events.append(CacheEvent(basename, ", ".join(self.bundles), "not-in-bundle",
                                          f"no module with FileId {identity.file_id:016x}"))

    def _content_mismatch(self, module: CachedModule, basename: str, host_path: str) -> None:
        try:
            check_module_matches(module, host_path)
        except CacheRejected as e:
            self.events.append(CacheEvent(basename, module.cache_path, e.reason, e.detail))

    def close(self) -> None:
        for cache in self._open.values():
            if cache is not None:
                cache.close()
        self._open.clear()
        for fd in self._locks.values():
            os.close(fd)
        self._locks.clear()
