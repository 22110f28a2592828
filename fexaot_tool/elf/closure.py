"""A program's dependency closure, found the way glibc 2.36's dynamic loader finds it.

The closure is every object the x86-64 loader of Debian 12 maps before the
program's first instruction: the program, its PT_INTERP, and the DT_NEEDED
libraries in the breadth-first order of ``_dl_map_object_deps`` (elf/dl-deps.c).
Each DT_NEEDED name is resolved as ``_dl_map_object`` (elf/dl-load.c) resolves it:

1. A loaded object satisfies the name if it is the object's SONAME, a name the
   object was loaded under, or the path it was opened as.
2. A name containing ``/`` is opened as a path (after $ORIGIN, $LIB, $PLATFORM).
3. Otherwise, only if the requesting object has no DT_RUNPATH: the DT_RPATH of
   the requesting object, of the object that loaded it, and so on up the chain,
   then the program's DT_RPATH.
4. The DT_RUNPATH of the requesting object (never of its loaders).
5. ld.so.cache, emulated from the rootfs's /etc/ld.so.conf the way ldconfig
   builds it.  With DF_1_NODEFLIB on the requester, an entry under a system
   directory is ignored.
6. The system directories, unless the requester has DF_1_NODEFLIB.

Every directory of steps 3, 4 and 6 is tried with its hardware-capability
subdirectories first (``glibc-hwcaps/x86-64-v3/``, ``tls/``, ...), as
:class:`LoaderConfig` lists them.  A file found under a new name that is the
same file (st_dev, st_ino) as a loaded library is that library.  A candidate
that is an ELF file of the other class or for another machine is skipped, as
glibc skips it; a candidate that is not a loadable ELF file at all makes the
real loader stop ("invalid ELF header"): that is reported as a missing library
whose ``fatal`` is set.  A library that is not found is reported, not raised:
the caller decides whether that is an error.

The program is taken as the kernel starts it: its $ORIGIN is the directory of
its symlink-resolved path (what /proc/self/exe gives glibc).  A library's
$ORIGIN is the directory of the path it was opened as, with symlinks left in.
Relative paths (in DT_RPATH, DT_NEEDED, ld.so.conf) are taken from ``/``, the
working directory this emulation assumes.
"""

from __future__ import annotations

import enum
import os
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from fexaot_tool.elf.reader import (
    DF_1_NODEFLIB,
    ELFCLASS64,
    ELFDATA2LSB,
    ELFMAG,
    EM_X86_64,
    ET_DYN,
    ET_EXEC,
    ElfError,
    ElfInfo,
    read_elf,
)
from fexaot_tool.elf.rootfs import PathNotFoundError, Resolved, Rootfs, SymlinkLoopError

DEFAULT_INTERPRETER = "/lib64/ld-linux-x86-64.so.2"
"""The x86-64 psABI's PT_INTERP: the loader of a library, which has no PT_INTERP of its own."""

LD_SO_CONF = "/etc/ld.so.conf"


class FoundBy(enum.StrEnum):
    """Which step of the loader's search found an object."""

    PROGRAM = "program"
    INTERPRETER = "PT_INTERP"
    PATH = "path"  # a DT_NEEDED name containing '/'
    RPATH = "DT_RPATH"
    RUNPATH = "DT_RUNPATH"
    LD_SO_CACHE = "ld.so.cache"
    SYSTEM_DIRS = "system dirs"


@dataclass(frozen=True)
class LoaderConfig:
    """What the emulated loader knows about the machine and the glibc build it runs on.

    The defaults are Debian 12's glibc on the target runtime's CPU model, baseline
    x86-64: no ``glibc-hwcaps`` subdirectory is searched, because a library built
    for x86-64-v2 or later would not run there.  The legacy subdirectories
    (``tls``, ``x86_64``) are still searched, as glibc 2.36 searches them on every
    x86-64 CPU.
    """

    platform: str = "x86_64"
    """$PLATFORM and the AT_PLATFORM legacy subdirectory (the kernel's AT_PLATFORM on x86-64)."""
    lib: str = "lib/x86_64-linux-gnu"
    """$LIB.  Debian's loader expands it to the multiarch directory, not upstream's "lib64"."""
    hwcaps: tuple[str, ...] = ()
    """glibc-hwcaps subdirectories searched, best first, e.g. ("x86-64-v3", "x86-64-v2")."""
    legacy_hwcaps: tuple[str, ...] = ("x86_64",)
    """Legacy HWCAP names the CPU has, in bit order (HWCAP_X86_64 is always set on x86-64)."""
    system_dirs: tuple[str, ...] = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib", "/usr/lib")
    """The default search path, as ``ld.so --help`` lists it.  Debian's ldconfig also
    scans all of them after ld.so.conf's directories (upstream's scans only the first two)."""

    @property
    def search_subdirs(self) -> tuple[str, ...]:
        """Subdirectories tried in each search directory, in order, ending with "" (the directory itself).

        The legacy part is glibc's power set of (HWCAP names..., platform, "tls"),
        largest first, each spelled from the last name to the first:
        ``tls/x86_64/x86_64/``, ``tls/x86_64/``, ``tls/``, ``x86_64/x86_64/``, ...
        """
        names = [*self.legacy_hwcaps, self.platform, "tls"]
        subdirs = [f"glibc-hwcaps/{name}/" for name in self.hwcaps]
        for mask in range((1 << len(names)) - 1, -1, -1):
            parts = [names[i] for i in reversed(range(len(names))) if mask >> i & 1]
            subdir = "".join(f"{part}/" for part in parts)
            if subdir not in subdirs:
                subdirs.append(subdir)
        return tuple(subdirs)


@dataclass(frozen=True)
class LoadedObject:
    """One object of a closure."""

    name: str
    """What asked for it: the DT_NEEDED string, the PT_INTERP string, or the program's path."""
    path: str
    """Canonical guest path of the file (all symlinks resolved inside the rootfs)."""
    opened_as: str
    """The path the loader opened (its ``l_name``, symlinks left in); $ORIGIN is its directory."""
    found_by: FoundBy
    needed_by: str | None
    """Canonical path of the object whose DT_NEEDED (or PT_INTERP) first named it; None for the program."""


@dataclass(frozen=True)
class MissingLibrary:
    """A DT_NEEDED name (or PT_INTERP) the loader would not find."""

    name: str
    needed_by: str
    reason: str
    """"not found", or the error with which the real loader would stop."""
    fatal: bool = False
    """True when the real loader stops at this name instead of going on without it."""
    named_in: Literal["DT_NEEDED", "PT_INTERP"] = "DT_NEEDED"
    """"DT_NEEDED", or "PT_INTERP" when the program's interpreter is missing (the kernel refuses to start it)."""


@dataclass(frozen=True)
class Closure:
    """Everything the loader maps for a program, in load order, and what it cannot find."""

    objects: tuple[LoadedObject, ...]
    """The program, its interpreter (if found), then the libraries breadth-first."""
    missing: tuple[MissingLibrary, ...]

    @property
    def program(self) -> LoadedObject:
        return self.objects[0]

    @property
    def interpreter(self) -> LoadedObject | None:
        return next((o for o in self.objects if o.found_by is FoundBy.INTERPRETER), None)

    @property
    def libraries(self) -> tuple[LoadedObject, ...]:
        """The DT_NEEDED objects, breadth-first: what ``ld.so --list`` prints (minus ld.so and the vDSO)."""
        return tuple(o for o in self.objects if o.found_by not in (FoundBy.PROGRAM, FoundBy.INTERPRETER))

    @property
    def paths(self) -> tuple[str, ...]:
        """Canonical paths of every file in the closure, each once, in load order."""
        return tuple(dict.fromkeys(o.path for o in self.objects))

    @property
    def complete(self) -> bool:
        return not self.missing


# Dynamic string tokens, as is_dst() in elf/dl-load.c recognises them: $NAME not
# followed by an identifier character, or ${NAME}.
_DST = re.compile(r"\$(?:\{(ORIGIN|PLATFORM|LIB)\}|(ORIGIN|PLATFORM|LIB)(?![A-Za-z0-9_]))")


def substitute_dst(text: str, origin: str | None, config: LoaderConfig) -> str | None:
    """``text`` with $ORIGIN, $PLATFORM and $LIB (or ${...}) replaced, as _dl_dst_substitute does.

    Returns None when ``text`` uses $ORIGIN and the origin is unknown: glibc then
    drops that path element.  Any other ``$`` is kept literally.
    """
    unknown = False

    def replace(match: re.Match[str]) -> str:
        nonlocal unknown
        token = match.group(1) or match.group(2)
        if token == "ORIGIN":
            if origin is None:
                unknown = True
                return ""
            return origin
        return config.platform if token == "PLATFORM" else config.lib

    result = _DST.sub(replace, text) if "$" in text else text
    return None if unknown else result


def origin_of(opened_as: str) -> str:
    """$ORIGIN of an object opened as ``opened_as``: its directory, not symlink-resolved (_dl_new_object)."""
    path = opened_as if opened_as.startswith("/") else "/" + opened_as
    return path[: path.rindex("/")] or "/"


def is_dso_name(name: str) -> bool:
    """ldconfig's _dl_is_dso(): only names like lib*.so*, ld-*.so*, ld.so.* get ld.so.cache entries."""
    return (
        (name.startswith(("lib", "ld-")) and ".so" in name)
        or name.startswith("ld.so.")
        or name.startswith("ld64.so.")
    )


def ld_so_conf_dirs(rootfs: Rootfs, config: LoaderConfig | None = None, conf: str = LD_SO_CONF) -> tuple[str, ...]:
    """The directories ldconfig scans for ld.so.cache, in its order, as it spells them.

    Follows ldconfig's parse_conf (elf/ldconfig.c): ``#`` starts a comment
    anywhere, ``include`` takes glob patterns (sorted matches; a relative pattern
    is relative to the including file's directory), ``hwcap`` lines are ignored, a
    ``=TYPE`` suffix and trailing whitespace and slashes are dropped.  Then come the
    system directories of ``config``.  A directory that does not exist is left out, and a
    directory seen before (same st_dev and st_ino, e.g. /lib/x86_64-linux-gnu and
    /usr/lib/x86_64-linux-gnu on merged-/usr) keeps its first spelling.  A missing
    ld.so.conf gives just the system directories; an include cycle is cut.
    """
    config = config or LoaderConfig()
    dirs: dict[tuple[int, int], str] = {}

    def add_dir(line: str) -> None:
        path = line.split("=", 1)[0].rstrip(" \t\n\r\f\v").rstrip("/")
        if not path:
            return
        try:
            entry = rootfs.lookup(path)
        except SymlinkLoopError:
            return
        if entry is not None:
            dirs.setdefault(entry.file_id, path)

    def parse(conf_path: str, parsing: tuple[str, ...]) -> None:
        try:
            entry = rootfs.lookup(conf_path)
        except SymlinkLoopError:
            return
        if entry is None or not entry.is_file or entry.path in parsing:
            return
        for raw in rootfs.read_text(conf_path).splitlines():
            line = raw.split("#", 1)[0].lstrip(" \t\n\r\f\v")
            if not line:
                continue
            if line.startswith("include") and line[7:8] in (" ", "\t"):
                for pattern in re.split(r"[ \t]", line[8:]):
                    if not pattern:
                        continue
                    if not pattern.startswith("/"):
                        pattern = f"{os.path.dirname(conf_path)}/{pattern}"
                    for included in rootfs.glob(pattern):
                        parse(included, (*parsing, entry.path))
            elif line[:5].lower() == "hwcap" and line[5:6] in (" ", "\t"):
                continue
            else:
                add_dir(line)

    parse(conf, ())
    for directory in config.system_dirs:
        add_dir(directory)
    return tuple(dirs.values())


# -- candidate files ---------------------------------------------------------------

class _Outcome(enum.Enum):
    FOUND = "found"
    ABSENT = "absent"  # ENOENT: try the next candidate
    SKIPPED = "skipped"  # an ELF file of another class or machine: glibc skips it
    LOOP = "loop"  # ELOOP: glibc gives up on the rest of this search list
    FATAL = "fatal"  # the real loader stops with an error


@dataclass(frozen=True)
class _Candidate:
    path: str  # the path string as the loader builds it
    outcome: _Outcome
    resolved: Resolved | None = None
    error: str | None = None


_EHDR_PREFIX = struct.Struct("<16sHHI")  # e_ident, e_type, e_machine, e_version
_ELFOSABI_SYSV, _ELFOSABI_GNU = 0, 3
_LIBC_ABI_MAX = 4  # glibc 2.36 x86-64: DEFAULT, UNIQUE, IFUNC, ABSOLUTE
_ELF64_PHDR_SIZE = 56


def _verify_header(head: bytes) -> tuple[_Outcome, str | None]:
    """What open_verify() (elf/dl-load.c) decides from a candidate's first 64 bytes, in its order."""
    if len(head) < 64:
        return _Outcome.FATAL, "file too short"
    ident, e_type, e_machine, e_version = _EHDR_PREFIX.unpack_from(head)
    ei_class, ei_data, ei_version, ei_osabi, ei_abiversion = ident[4:9]
    if ident[:4] != ELFMAG:
        return _Outcome.FATAL, "invalid ELF header"
    if ei_class != ELFCLASS64:
        return _Outcome.SKIPPED, "wrong ELF class"
    if ei_data != ELFDATA2LSB:
        return _Outcome.FATAL, "ELF file data encoding not little-endian"
    if ei_version != 1:
        return _Outcome.FATAL, "ELF file version ident does not match current one"
    if ei_osabi not in (_ELFOSABI_SYSV, _ELFOSABI_GNU):
        return _Outcome.FATAL, "ELF file OS ABI invalid"
    if ei_abiversion != 0 and not (ei_osabi == _ELFOSABI_GNU and ei_abiversion < _LIBC_ABI_MAX):
        return _Outcome.FATAL, "ELF file ABI version invalid"
    if any(ident[9:16]):
        return _Outcome.FATAL, "nonzero padding in e_ident"
    if e_version != 1:
        return _Outcome.FATAL, "ELF file version does not match current one"
    if e_machine != EM_X86_64:
        return _Outcome.SKIPPED, "wrong machine"
    if e_type not in (ET_DYN, ET_EXEC):
        return _Outcome.FATAL, "only ET_DYN and ET_EXEC can be loaded"
    if int.from_bytes(head[54:56], "little") != _ELF64_PHDR_SIZE:
        return _Outcome.FATAL, "ELF file's phentsize not the expected size"
    return _Outcome.FOUND, None


# -- the loader's state for one program ------------------------------------------------

@dataclass(eq=False)
class _Map:
    """The parts of glibc's struct link_map that decide where a name is found."""

    record: LoadedObject
    info: ElfInfo
    l_name: str
    origin: str | None
    l_loader: _Map | None
    rpath_dirs: tuple[str, ...] | None = None  # DT_RPATH split and substituted, once
    runpath_dirs: tuple[str, ...] | None = None


class _Namespace:
    """The loaded objects and the names and file identities that find them again."""

    def __init__(self) -> None:
        self._by_name: dict[str, _Map] = {}
        self._by_file_id: dict[tuple[int, int], _Map] = {}

    def add(self, m: _Map, names: tuple[str, ...], file_id: tuple[int, int] | None) -> None:
        # setdefault: a name already answered by an earlier object stays with it,
        # as glibc's walk of the list in load order finds the earlier one first.
        for name in (m.l_name, *names, m.info.soname):
            if name:
                self._by_name.setdefault(name, m)
        # The program and ld.so have no file identity in glibc (the kernel mapped
        # them), so another name for their file loads it again.
        if file_id is not None:
            self._by_file_id.setdefault(file_id, m)

    def by_name(self, name: str) -> _Map | None:
        return self._by_name.get(name)

    def by_file_id(self, file_id: tuple[int, int], name: str) -> _Map | None:
        m = self._by_file_id.get(file_id)
        if m is not None:
            self._by_name.setdefault(name, m)
        return m


# -- the resolver ----------------------------------------------------------------------

class ClosureResolver:
    """Computes closures in one rootfs; reuse it for many programs, it caches what it reads.

    Like :class:`Rootfs`, it assumes the rootfs does not change while in use.  It
    is not thread-safe: give each thread its own.
    """

    def __init__(self, rootfs: Rootfs, config: LoaderConfig | None = None):
        self.rootfs = rootfs
        self.config = config or LoaderConfig()
        self._subdirs = self.config.search_subdirs
        self._system_search_dirs = tuple(d.rstrip("/") + "/" for d in self.config.system_dirs)
        self._cache_dirs: tuple[str, ...] | None = None
        self._cache_hits: dict[str, str | None] = {}
        self._candidates: dict[str, _Candidate] = {}
        self._elf: dict[str, ElfInfo | ElfError] = {}

    def closure(self, program: str) -> Closure:
        """The closure of the guest file ``program`` (an executable or a shared library).

        Raises :class:`~fexaot_tool.elf.rootfs.RootfsError` when ``program`` does not
        exist and :class:`~fexaot_tool.elf.reader.ElfError` when it is not an x86-64 ELF file.
        """
        entry = self.rootfs.lookup(program)
        if entry is None:
            raise PathNotFoundError(program, f"no such file in rootfs {self.rootfs.root}")
        info = self._read_elf(entry, program)
        if isinstance(info, ElfError):
            raise info.with_traceback(None)  # a cached error: drop the traceback of its last raise
        return _ClosureWalk(self, program, entry, info).run()

    # -- steps of the search -----------------------------------------------------------

    def ld_so_cache_lookup(self, name: str) -> str | None:
        """The path ld.so.cache would hold for ``name``, emulated from ld.so.conf (None: no entry).

        ldconfig keys a library by its SONAME and records ``<dir>/<SONAME>``; a
        symlink named like its target's SONAME, or a ``.so`` link to it (libfoo.so ->
        libfoo.so.1), is keyed by its own name.  Only 64-bit x86-64 ET_DYN files
        whose names pass :func:`is_dso_name` get entries, and the first directory
        that has the name wins.  glibc-hwcaps entries come first, then legacy hwcap
        subdirectories, most specific first.
        """
        if name in self._cache_hits:
            return self._cache_hits[name]
        hit = None
        if is_dso_name(name) and "/" not in name:
            if self._cache_dirs is None:
                self._cache_dirs = ld_so_conf_dirs(self.rootfs, self.config)
            named = [s for s in self._subdirs if s.startswith("glibc-hwcaps/")]
            legacy = sorted((s for s in self._subdirs if s and s not in named), key=lambda s: -s.count("/"))
            hit = next(
                (
                    f"{directory}/{subdir}{name}"
                    for subdir in (*named, *legacy, "")
                    for directory in self._cache_dirs
                    if self._is_cache_entry(f"{directory}/{subdir}{name}", name)
                ),
                None,
            )
        self._cache_hits[name] = hit
        return hit

    def _is_cache_entry(self, path: str, name: str) -> bool:
        candidate = self._candidate(path)
        if candidate.outcome is not _Outcome.FOUND or candidate.resolved is None:
            return False
        info = self._read_elf(candidate.resolved, path)
        if isinstance(info, ElfError) or info.e_type != ET_DYN:
            return False
        soname = info.soname
        if soname is None or soname == name:
            return True
        # ldconfig keeps a developer link (libfoo.so -> libfoo.so.1.2) under its own name.
        return name.endswith(".so") and soname.startswith(name) and self.rootfs.is_symlink(path)

    def _open_path(self, name: str, dirs: tuple[str, ...]) -> _Candidate | None:
        """Try ``name`` in each directory, hwcaps subdirectories first, like glibc's open_path().

        Returns the first loadable or fatal candidate, or None when the list is
        exhausted.  A symlink loop at ``name`` in an existing directory ends the
        list early (glibc gives up on a list at any error but ENOENT and EACCES):
        that candidate is returned, with outcome LOOP.
        """
        for directory in dirs:
            last = None
            for subdir in self._subdirs:
                where = directory + subdir
                try:
                    entry = self.rootfs.lookup(where or "/")
                except SymlinkLoopError:
                    entry = None
                if entry is None or not entry.is_dir:
                    continue
                last = self._candidate(where + name)
                if last.outcome in (_Outcome.FOUND, _Outcome.FATAL):
                    return last
            # What counts is errno after the last open, the one in the directory itself.
            if last is not None and last.outcome is _Outcome.LOOP:
                return last
        return None

    def _search_dirs(self, value: str, origin: str | None) -> tuple[str, ...]:
        """A DT_RPATH/DT_RUNPATH value split into directories as fillin_rpath() does.

        Tokens are substituted; an element whose $ORIGIN is unknown or that becomes
        empty is dropped; trailing slashes become one; an empty element (``a::b``)
        is the working directory, spelled ""; duplicates are dropped.
        """
        if not value:
            return ()
        dirs: list[str] = []
        for element in value.split(":"):
            if element:
                expanded = substitute_dst(element, origin, self.config)
                if not expanded:
                    continue
                element = expanded.rstrip("/") or "/"
                if not element.endswith("/"):
                    element += "/"
            if element not in dirs:
                dirs.append(element)
        return tuple(dirs)

    def _candidate(self, path: str) -> _Candidate:
        """Open ``path`` as the loader would: is it there, and would it load?"""
        known = self._candidates.get(path)
        if known is not None:
            return known
        try:
            entry = self.rootfs.lookup(path or "/")
        except SymlinkLoopError:
            entry = None
            candidate = _Candidate(path, _Outcome.LOOP, error="too many levels of symbolic links")
        else:
            candidate = self._verify(path, entry)
        self._candidates[path] = candidate
        return candidate

    def _verify(self, path: str, entry: Resolved | None) -> _Candidate:
        if entry is None:
            return _Candidate(path, _Outcome.ABSENT)
        if entry.is_dir:
            return _Candidate(path, _Outcome.FATAL, entry, "cannot read file data: Is a directory")
        if not entry.is_file:
            return _Candidate(path, _Outcome.FATAL, entry, "not a regular file")
        try:
            with open(self.rootfs.host(entry.path), "rb") as f:
                head = f.read(64)
        except OSError as e:
            return _Candidate(path, _Outcome.FATAL, entry, f"cannot read file data: {e.strerror}")
        outcome, error = _verify_header(head)
        return _Candidate(path, outcome, entry, error)

    def _read_elf(self, entry: Resolved, display_name: str) -> ElfInfo | ElfError:
        info = self._elf.get(entry.path)
        if info is None:
            try:
                info = read_elf(self.rootfs.host(entry.path), display_name)
            except ElfError as e:
                info = e
            self._elf[entry.path] = info
        return info

    def _is_system_path(self, path: str) -> bool:
        """True for a path under a system directory (how DF_1_NODEFLIB filters ld.so.cache entries)."""
        return path.startswith(self._system_search_dirs)


class _ClosureWalk:
    """One run of _dl_map_object_deps over a program's DT_NEEDED graph."""

    def __init__(self, resolver: ClosureResolver, program: str, entry: Resolved, info: ElfInfo):
        self.resolver = resolver
        self.config = resolver.config
        self.namespace = _Namespace()
        self.missing: list[MissingLibrary] = []
        record = LoadedObject(program, entry.path, program, FoundBy.PROGRAM, None)
        # l_name "" and $ORIGIN from the resolved path: the kernel started it (see module doc).
        self.program = _Map(record, info, "", origin_of(entry.path), None)
        self.namespace.add(self.program, (), None)
        self.interpreter = self._map_interpreter(info)

    def run(self) -> Closure:
        queue = [self.program]
        queued = {id(self.program)}
        for m in queue:  # the list grows while we walk it: breadth-first
            for needed in m.info.needed:
                name = substitute_dst(needed, m.origin, self.config)
                if name is None:
                    continue  # glibc skips a DT_NEEDED whose $ORIGIN is unknown
                dep = self._map_object(m, name)
                if dep is not None and id(dep) not in queued:
                    queued.add(id(dep))
                    queue.append(dep)
        head = [self.program.record] + ([self.interpreter.record] if self.interpreter else [])
        libraries = [m.record for m in queue[1:] if m is not self.interpreter]
        return Closure(tuple(head + libraries), tuple(self.missing))

    def _map_interpreter(self, program: ElfInfo) -> _Map | None:
        """Map PT_INTERP as the kernel does; a library is loaded by the default interpreter."""
        name = program.interp or (DEFAULT_INTERPRETER if program.needed else None)
        if name is None:
            return None  # a static executable: nothing else is loaded
        candidate = self.resolver._candidate(name)
        info = None if candidate.resolved is None else self.resolver._read_elf(candidate.resolved, name)
        if candidate.resolved is None or not isinstance(info, ElfInfo) or candidate.outcome is not _Outcome.FOUND:
            problem = info.problem if isinstance(info, ElfError) else candidate.error or "not found"
            self.missing.append(MissingLibrary(name, self.program.record.path, problem, fatal=True, named_in="PT_INTERP"))
            return None
        record = LoadedObject(name, candidate.resolved.path, name, FoundBy.INTERPRETER, self.program.record.path)
        m = _Map(record, info, name, origin_of(name), None)
        self.namespace.add(m, (name,), None)
        return m

    def _map_object(self, loader: _Map, name: str) -> _Map | None:
        """glibc's _dl_map_object for a DT_NEEDED ``name`` of ``loader``; None when it is missing."""
        loaded = self.namespace.by_name(name)
        if loaded is not None:
            return loaded
        found: _Candidate | None
        if "/" in name:
            found, found_by = self.resolver._candidate(name), FoundBy.PATH
        else:
            found, found_by = self._search(loader, name)
        if found is None or found.outcome is not _Outcome.FOUND or found.resolved is None:
            self._report_missing(loader, name, found)
            return None
        same_file = self.namespace.by_file_id(found.resolved.file_id, name)
        if same_file is not None:
            return same_file
        info = self.resolver._read_elf(found.resolved, found.path)
        if isinstance(info, ElfError):
            self._report_missing(loader, name, _Candidate(found.path, _Outcome.FATAL, error=info.problem))
            return None
        record = LoadedObject(name, found.resolved.path, found.path, found_by, loader.record.path)
        m = _Map(record, info, found.path, origin_of(found.path), loader)
        self.namespace.add(m, (name,), found.resolved.file_id)
        return m

    def _search(self, loader: _Map, name: str) -> tuple[_Candidate | None, FoundBy]:
        """Steps 3 to 6 of the module doc; the first loadable or fatal candidate ends the search.

        When nothing is found, returns the symlink loop that cut a list short, if any.
        """
        resolver = self.resolver
        loop = None
        for found_by, dirs in self._path_lists(loader):
            found = resolver._open_path(name, dirs)
            if found is not None and found.outcome is not _Outcome.LOOP:
                return found, found_by
            loop = loop or found
        nodeflib = bool(loader.info.dt_flags_1 & DF_1_NODEFLIB)
        cached = resolver.ld_so_cache_lookup(name)
        if cached is not None and not (nodeflib and resolver._is_system_path(cached)):
            found = resolver._candidate(cached)
            if found.outcome is _Outcome.FOUND:
                return found, FoundBy.LD_SO_CACHE
        if not nodeflib:
            found = resolver._open_path(name, resolver._system_search_dirs)
            if found is not None and found.outcome is not _Outcome.LOOP:
                return found, FoundBy.SYSTEM_DIRS
            loop = loop or found
        return loop, FoundBy.SYSTEM_DIRS

    def _path_lists(self, loader: _Map) -> Iterator[tuple[FoundBy, tuple[str, ...]]]:
        """The DT_RPATH lists (requester, its loaders up the chain, the program), then the DT_RUNPATH list.

        No DT_RPATH at all is used when the requester has DT_RUNPATH.
        """
        if loader.info.runpath is None:
            did_program = False
            chain: _Map | None = loader
            while chain is not None:
                if dirs := self._rpath(chain):
                    yield FoundBy.RPATH, dirs
                    did_program |= chain is self.program
                chain = chain.l_loader
            if not did_program and (dirs := self._rpath(self.program)):
                yield FoundBy.RPATH, dirs
        if dirs := self._runpath(loader):
            yield FoundBy.RUNPATH, dirs

    def _rpath(self, m: _Map) -> tuple[str, ...]:
        if m.rpath_dirs is None:
            # glibc ignores DT_RPATH in an object that also has DT_RUNPATH.
            value = m.info.rpath if m.info.runpath is None else None
            m.rpath_dirs = self.resolver._search_dirs(value, m.origin) if value is not None else ()
        return m.rpath_dirs

    def _runpath(self, m: _Map) -> tuple[str, ...]:
        if m.runpath_dirs is None:
            value = m.info.runpath
            m.runpath_dirs = self.resolver._search_dirs(value, m.origin) if value is not None else ()
        return m.runpath_dirs

    def _report_missing(self, loader: _Map, name: str, candidate: _Candidate | None) -> None:
        if candidate is not None and candidate.outcome is _Outcome.FATAL:
            reason, fatal = f"{candidate.path}: {candidate.error}", True
        elif candidate is not None and candidate.outcome is _Outcome.LOOP:
            reason, fatal = f"not found (search stopped at {candidate.path}: {candidate.error})", False
        else:
            reason, fatal = "not found", False
        self.missing.append(MissingLibrary(name, loader.record.path, reason, fatal))


def resolve_closure(rootfs: Rootfs, program: str, config: LoaderConfig | None = None) -> Closure:
    """The closure of one program; use a :class:`ClosureResolver` for many."""
    return ClosureResolver(rootfs, config).closure(program)
