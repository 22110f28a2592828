"""Identities: the ONE place that computes a module's FileId and a configuration's ConfigId.

- FileId comes from the ELF file's full content (xxh3_128), never its path: the
  same libc in two rootfs shares one cache, and an updated library can never
  load a stale cache.
- ConfigId hashes everything that changes generated code (xxh3_64 over a
  canonical, versioned text encoding of :class:`TranslatorConfig`).  The
  compiler filter is not in it.

The SCons tool, the runtime and the packaging step all call this module;
nothing else recomputes a key.  :class:`FileIdCache` lets a null build skip
re-hashing files whose inode, size, mtime and ctime are all unchanged.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import xxhash

from fexaot_tool.cache.atomic import atomic_write
from fexaot_tool.cache.format import FORMAT_VERSION
from fexaot_tool.errors import FexaotError
# TRANSLATOR_VERSION is owned by the translator (bumped whenever the code it
# generates for the same input changes); it is hashed here, the one place
# ConfigId is computed.
from fexaot_tool.translate import TRANSLATOR_VERSION

# Target AArch64 features, named after the Arm ARM's FEAT_* (FEAT_LSE -> "lse").
KNOWN_CPU_FEATURES = frozenset({
    "afp", "flagm", "flagm2", "lrcpc", "lrcpc2", "lrcpc3", "lse", "lse2", "rpres", "sve", "sve2",
})
# What the unicorn AArch64 "max" CPU and any Armv8.4+ core provide, and what x86
# atomics (LSE), TSO loads (LRCPC) and flag handling (FlagM) want most.
DEFAULT_CPU_FEATURES = ("flagm", "lrcpc", "lse")
MEMORY_ORDERS = ("tso", "relaxed")

_CHUNK = 1 << 20  # read() into one reused buffer beat mmap by ~30% (docs/cache-format.md)


class IdentityError(FexaotError):
    """A file whose identity cannot be computed (missing, unreadable)."""


class ConfigError(FexaotError):
    """A translator configuration that names an unknown option value."""


@dataclass(frozen=True)
class ModuleIdentity:
    """Who a module is, from its content alone."""

    file_id: int  # the high 64 bits of content_hash
    content_hash: bytes  # xxh3_128 of the full file, 16 bytes, canonical (big-endian) form
    size: int  # bytes hashed

    @classmethod
    def from_hash(cls, content_hash: bytes, size: int) -> ModuleIdentity:
        return cls(int.from_bytes(content_hash[:8], "big"), content_hash, size)


def module_identity(path: str | os.PathLike) -> ModuleIdentity:
    """Hash the full content of ``path`` in one pass."""
    name = os.fspath(path)
    try:
        with open(name, "rb", buffering=0) as f:
            return _identity_of_open_file(f)
    except OSError as e:
        raise IdentityError(name, f"cannot read: {e.strerror or e}") from None


def identity_of_bytes(data: bytes | memoryview) -> ModuleIdentity:
    """The identity of a file whose whole content is already in memory."""
    return ModuleIdentity.from_hash(xxhash.xxh3_128_digest(data), len(data))


def _identity_of_open_file(f) -> ModuleIdentity:
    h = xxhash.xxh3_128()
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    size = 0
    while n := f.readinto(buf):
        h.update(view[:n])
        size += n
    return ModuleIdentity.from_hash(h.digest(), size)


# --- FileIdCache ------------------------------------------------------------------

# Two seconds covers coarse file timestamps (FAT's 2 s, the kernel's jiffy-grained
# clock) and small clock skew on network filesystems.
RACY_WINDOW_NS = 2_000_000_000
_MEMO_FORMAT = "fexaot-fileid-cache"
_MEMO_VERSION = 1

StatSignature = tuple[int, int, int, int, int]  # st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns


def _signature(st: os.stat_result) -> StatSignature:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class FileIdCache:
    """A stat-keyed memo of :func:`module_identity`, persisted in a small JSON file.

    An entry is reused only while the file's (st_dev, st_ino, st_size,
    st_mtime_ns, st_ctime_ns) are all unchanged.  ctime cannot be set from user
    space, so a file rewritten or replaced with its old mtime restored is hashed
    again: mtime alone is never trusted.

    Racy entries (as in git's "racy git"): a file written moments before it was
    hashed could be written again within the same timestamp tick, leaving its
    stat unchanged.  So an entry is stored only when the file's mtime and ctime
    are older than the hashing time minus :data:`RACY_WINDOW_NS`; otherwise the
    file is hashed again next time.

    Safe to share between threads (SCons ``-j``); two processes saving one memo
    file lose only the other's new entries, never correctness.
    """

    def __init__(self, path: str | os.PathLike, *, clock: Callable[[], int] = time.time_ns):
        self.path = os.fspath(path)
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[StatSignature, ModuleIdentity]] = {}
        self._dirty = False
        self.hits = 0
        self.misses = 0
        self.racy = 0  # misses whose result was too fresh to store
        self.load_problem: str | None = None  # why the memo file was ignored, if it was
        self._load()

    def identity(self, path: str | os.PathLike) -> ModuleIdentity:
        key = os.path.abspath(os.fspath(path))
        try:
            st = os.stat(key)
        except OSError as e:
            raise IdentityError(os.fspath(path), f"cannot read: {e.strerror or e}") from None
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] == _signature(st):
                self.hits += 1
                return entry[1]
        # Hash the inode we opened and key the entry with that inode's stat: if
        # the path is replaced meanwhile, the next stat will not match.
        hashed_at = self._clock()
        try:
            with open(key, "rb", buffering=0) as f:
                signature = _signature(os.fstat(f.fileno()))
                identity = _identity_of_open_file(f)
        except OSError as e:
            raise IdentityError(os.fspath(path), f"cannot read: {e.strerror or e}") from None
        trusted = max(signature[3], signature[4]) < hashed_at - RACY_WINDOW_NS
        with self._lock:
            self.misses += 1
            if trusted:
                self._entries[key] = (signature, identity)
                self._dirty = True
            else:
                self.racy += 1
                if self._entries.pop(key, None) is not None:
                    self._dirty = True
        return identity

    def save(self) -> None:
        """Write the memo atomically; a no-op when nothing changed."""
        # Held while writing: atomic_write's partial file is per process, not per thread.
        with self._lock:
            if not self._dirty:
                return
            entries = {
                path: {"stat": list(sig), "xxh3_128": ident.content_hash.hex()}
                for path, (sig, ident) in self._entries.items()
            }
            document = {"format": _MEMO_FORMAT, "version": _MEMO_VERSION, "entries": entries}
            text = json.dumps(document, sort_keys=True, separators=(",", ":"))
            atomic_write(self.path, [text.encode("ascii") + b"\n"])
            self._dirty = False

    def _load(self) -> None:
        """Read the memo file; any problem just means starting empty (it is only a memo)."""
        try:
            with open(self.path, "rb") as f:
                document = json.loads(f.read())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as e:
            self.load_problem = f"unreadable: {e}"
            return
        try:
            if document["format"] != _MEMO_FORMAT or document["version"] != _MEMO_VERSION:
                self.load_problem = "another format or version"
                return
            entries = {}
            for path, value in document["entries"].items():
                sig = tuple(value["stat"])
                content_hash = bytes.fromhex(value["xxh3_128"])
                if len(sig) != 5 or not all(type(v) is int for v in sig) or len(content_hash) != 16:
                    raise ValueError(f"malformed entry for {path}")
                entries[path] = (sig, ModuleIdentity.from_hash(content_hash, sig[2]))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            self.load_problem = f"malformed: {e}"
            return
        self._entries = entries


# --- ConfigId ---------------------------------------------------------------------

_CONFIG_ENCODING = b"fexaot-config 1\n"  # bumped if the encoding itself changes


@dataclass(frozen=True)
class TranslatorConfig:
    """Everything that changes the generated code.  Every field is part of ConfigId.

    Add a codegen option as a new field with a default; the canonical encoding
    picks it up by name (and changes every ConfigId, as it should).
    """

    format_version: int = FORMAT_VERSION
    translator_version: int = TRANSLATOR_VERSION
    cpu_features: tuple[str, ...] = DEFAULT_CPU_FEATURES  # kept sorted and unique
    memory_order: str = "tso"  # "tso": x86 ordering with acquire/release; "relaxed": plain accesses

    def __post_init__(self) -> None:
        features = tuple(sorted(set(self.cpu_features)))
        unknown = [f for f in features if f not in KNOWN_CPU_FEATURES]
        if unknown:
            raise ConfigError(None, f"unknown AArch64 CPU feature {', '.join(unknown)} "
                                    f"(known: {', '.join(sorted(KNOWN_CPU_FEATURES))})")
        if self.memory_order not in MEMORY_ORDERS:
            raise ConfigError(None, f"unknown memory order {self.memory_order!r} (choose {' or '.join(MEMORY_ORDERS)})")
        object.__setattr__(self, "cpu_features", features)


def canonical_encoding(config: TranslatorConfig) -> bytes:
    """The exact bytes ConfigId hashes: a version line, then ``name=value`` lines sorted by name.

    Values are decimal integers, ``true``/``false``, plain strings, or
    comma-joined sorted strings; none may contain ``=`` or a newline, so the
    encoding is unambiguous.
    """
    lines = []
    for f in sorted(dataclasses.fields(config), key=lambda f: f.name):
        value = getattr(config, f.name)
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (int, str)):
            text = str(value)
        elif isinstance(value, tuple) and all(isinstance(v, str) for v in value):
            text = ",".join(value)
        else:
            raise TypeError(f"TranslatorConfig.{f.name}: no canonical encoding for {type(value).__name__}")
        if "\n" in text or "=" in text:
            raise ValueError(f"TranslatorConfig.{f.name}: {text!r} cannot be encoded")
        lines.append(f"{f.name}={text}\n")
    return _CONFIG_ENCODING + "".join(lines).encode("ascii")


def config_id(config: TranslatorConfig) -> int:
    return xxhash.xxh3_64_intdigest(canonical_encoding(config))


def lookup_name(basename: str, file_id: int, config_id: int) -> str:
    """The runtime's per-module cache file name: ``<basename>-<FileId>-<ConfigId>.fexcache``."""
    if not basename or "/" in basename or basename in (".", ".."):
        raise ValueError(f"not a basename: {basename!r}")
    return f"{basename}-{file_id:016x}-{config_id:016x}.fexcache"


_LOOKUP_NAME = re.compile(r"^(?P<basename>.+)-(?P<file_id>[0-9a-f]{16})-(?P<config_id>[0-9a-f]{16})\.fexcache$")


@dataclass(frozen=True)
class LookupName:
    basename: str
    file_id: int
    config_id: int

    @property
    def name(self) -> str:
        return lookup_name(self.basename, self.file_id, self.config_id)


def parse_lookup_name(name: str) -> LookupName | None:
    """The parts of a lookup name (:func:`lookup_name`), or None for any other file name."""
    m = _LOOKUP_NAME.match(name)
    if m is None:
        return None
    parsed = LookupName(m["basename"], int(m["file_id"], 16), int(m["config_id"], 16))
    return parsed if parsed.name == name else None

