"""Paths inside a root filesystem, resolved the way the kernel resolves them after chroot.

A rootfs is a host directory holding an x86-64 system: ``/`` on an x86-64 host,
an unpacked image anywhere else.  Paths inside it are absolute *guest* paths such
as ``/usr/lib/x86_64-linux-gnu/libc.so.6``.  :class:`Rootfs` resolves them one
component at a time with ``os.lstat`` and ``os.readlink`` on host paths it builds
itself from components it has already resolved, so the operating system never
follows a symlink on its behalf:

- an absolute link target starts again at the rootfs root, not the host's;
- ``..`` at the rootfs root stays at the root;
- more than 40 links followed while resolving one name is a
  :class:`SymlinkLoopError`, as ``ELOOP`` is for the kernel.

Nothing outside the rootfs directory is ever opened or stat'ed.  Resolutions are
memoised, so a :class:`Rootfs` assumes its tree does not change while it is in
use; make a new one after changing the tree.
"""

from __future__ import annotations

import fnmatch
import os
import platform
import stat
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from fexaot_tool.elf.reader import ELFCLASS64, ELFDATA2LSB, ELFMAG, EM_X86_64
from fexaot_tool.errors import FexaotError

MAXSYMLINKS = 40
"""Symlinks the kernel follows while resolving one path before it fails with ELOOP."""

ROOTFS_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
"""The ``PATH`` used to find a program given by bare name (Debian's default for root)."""

_X86_64_ELF_IDENT = ELFMAG + bytes([ELFCLASS64, ELFDATA2LSB])
_EM_X86_64_LE = EM_X86_64.to_bytes(2, "little")


class RootfsError(FexaotError):
    """A rootfs, or a path inside one, cannot be used."""


class RootfsRequiredError(RootfsError):
    """No rootfs was given and this host's own root is not an x86-64 Linux system."""


class PathNotFoundError(RootfsError):
    """A component of a guest path does not exist, or is not a directory."""


class SymlinkLoopError(RootfsError):
    """Resolving a guest path followed more than :data:`MAXSYMLINKS` symlinks."""


@dataclass(frozen=True)
class Resolved:
    """A guest path with every symlink resolved, and what ``lstat`` says about its target."""

    path: str
    stat: os.stat_result

    @property
    def is_file(self) -> bool:
        return stat.S_ISREG(self.stat.st_mode)

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.stat.st_mode)

    @property
    def file_id(self) -> tuple[int, int]:
        """(st_dev, st_ino): what the dynamic loader compares to spot one file under two names."""
        return self.stat.st_dev, self.stat.st_ino


def default_rootfs() -> str:
    """The rootfs to use when none is given: ``/`` on an x86-64 Linux host."""
    system, machine = platform.system(), platform.machine()
    if system == "Linux" and machine == "x86_64":
        return "/"
    raise RootfsRequiredError(None, f"ROOTFS must be given: this host is {system} {machine}, not x86-64 Linux")


class Rootfs:
    """A host directory seen as the root of an x86-64 system."""

    def __init__(self, root: str | os.PathLike):
        host = os.path.realpath(os.fspath(root))
        if not os.path.isdir(host):
            problem = "does not exist" if not os.path.exists(host) else "is not a directory"
            raise RootfsError(os.fspath(root), f"rootfs {problem}")
        self.root = host
        # Memo of every guest path string looked up: its resolution, or None when missing.
        self._entries: dict[str, Resolved | None] = {}
        self._root_entry = Resolved("/", os.lstat(host))

    def __repr__(self) -> str:
        return f"Rootfs({self.root!r})"

    # -- resolution --------------------------------------------------------------

    def lookup(self, path: str) -> Resolved | None:
        """Resolve ``path`` (relative paths start at the root, as after chroot + chdir /).

        Returns None when a component does not exist or a non-final component is
        not a directory (ENOENT, ENOTDIR); raises :class:`SymlinkLoopError` for a loop.
        """
        try:
            return self._entries[path]
        except KeyError:
            pass
        head, _, tail = path.rpartition("/")
        if tail in ("", ".", "..") or not head:
            entry = self._walk(self._root_entry, path.split("/"), path)
        else:
            # Resolve the directory through the memo, so that the thousands of
            # lookups in one library directory share a single walk of it.
            parent = self.lookup(head)
            entry = None if parent is None or not parent.is_dir else self._walk(parent, [tail], path)
        self._entries[path] = entry
        return entry

    def resolve(self, path: str) -> str:
        """The canonical guest path of ``path``: absolute, no symlinks, no ``.`` or ``..``.

        Raises :class:`PathNotFoundError` when it does not exist (or a directory in
        it is not one) and :class:`SymlinkLoopError` for a loop.
        """
        return self._require(path).path

    def host_path(self, path: str) -> str:
        """The host path of the file that guest ``path`` resolves to (it must exist)."""
        return self.host(self._require(path).path)

    def host(self, canonical: str) -> str:
        """The host path of a guest path that is already canonical (from :meth:`resolve`)."""
        return self.root + canonical if self.root != "/" else canonical

    def stat(self, path: str) -> os.stat_result:
        """``stat`` of the file ``path`` resolves to, with symlinks resolved inside the rootfs."""
        return self._require(path).stat

    def exists(self, path: str) -> bool:
        """True when ``path`` resolves (a symlink loop does not exist, as for ``os.path.exists``)."""
        return self._lookup_quietly(path) is not None

    def is_file(self, path: str) -> bool:
        entry = self._lookup_quietly(path)
        return entry is not None and entry.is_file

    def is_dir(self, path: str) -> bool:
        entry = self._lookup_quietly(path)
        return entry is not None and entry.is_dir

    def is_symlink(self, path: str) -> bool:
        """True when the last component of ``path`` is itself a symlink (``lstat``, not ``stat``)."""
        head, _, tail = path.rstrip("/").rpartition("/")
        if tail in ("", ".", ".."):
            return False
        parent = self._lookup_quietly(head or "/")
        if parent is None or not parent.is_dir:
            return False
        try:
            return stat.S_ISLNK(os.lstat(self.host(_join(parent.path, tail))).st_mode)
        except OSError:
            return False

    # -- reading -------------------------------------------------------------------

    def read_bytes(self, path: str) -> bytes:
        """The content of the regular file ``path`` resolves to."""
        entry = self._require(path)
        if not entry.is_file:
            raise RootfsError(path, "not a regular file")
        try:
            # O_NOFOLLOW: the last component was checked not to be a link; if it was
            # swapped for one since, fail instead of leaving the rootfs.
            fd = os.open(self.host(entry.path), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as e:
            raise RootfsError(path, f"cannot open: {e.strerror}") from None
        try:
            chunks = []
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
            return b"".join(chunks)
        except OSError as e:
            raise RootfsError(path, f"cannot read: {e.strerror}") from None
        finally:
            os.close(fd)

    def read_text(self, path: str) -> str:
        """A text file's content; bytes that are not UTF-8 are kept as surrogate escapes."""
        return self.read_bytes(path).decode("utf-8", "surrogateescape")

    def listdir(self, path: str) -> list[str]:
        """Names in the directory ``path`` resolves to, sorted."""
        entry = self._require(path)
        if not entry.is_dir:
            raise PathNotFoundError(path, "not a directory")
        try:
            return sorted(os.listdir(self.host(entry.path)))
        except OSError as e:
            raise RootfsError(path, f"cannot list directory: {e.strerror}") from None

    def glob(self, pattern: str) -> list[str]:
        """Guest paths matching a shell pattern, sorted, like glibc's ``glob()``.

        Wildcards match inside each resolved directory; names starting with ``.``
        match only a pattern that starts with ``.``.  The returned paths are the
        expanded names (their symlinks are not resolved) and all exist.
        """
        matches = ["/"]
        for component in pattern.split("/"):
            if component in ("", "."):
                continue
            expanded = []
            for base in matches:
                if not _has_magic(component):
                    expanded.append(_join(base, component))
                    continue
                entry = self._lookup_quietly(base)
                if entry is None or not entry.is_dir:
                    continue
                try:
                    names = os.listdir(self.host(entry.path))
                except OSError:
                    continue
                hidden_ok = component.startswith(".")
                expanded.extend(
                    _join(base, name)
                    for name in names
                    if fnmatch.fnmatchcase(name, component) and (hidden_ok or not name.startswith("."))
                )
            matches = expanded
        return sorted(path for path in matches if self.exists(path))

    def which(self, name: str, search_path: Iterable[str] = ROOTFS_PATH) -> str | None:
        """The guest path a shell would run for ``name``: the first executable regular file on the PATH.

        A name containing ``/`` is returned as given when it is an executable file.
        The result is the path as found (``/usr/bin/python3``), not resolved.
        """
        candidates = [name] if "/" in name else [_join(d, name) for d in search_path]
        for candidate in candidates:
            entry = self._lookup_quietly(candidate)
            if entry is not None and entry.is_file and entry.stat.st_mode & 0o111:
                return candidate
        return None

    def walk_elf_files(self, dirs: Iterable[str]) -> list[str]:
        """Canonical guest paths of every x86-64 ELF executable and shared object under ``dirs``.

        Sorted, each file once; object files (ET_REL) and core dumps are left out.

        Directories are walked recursively without following symlinked
        directories (so a link cannot make the walk loop or leave ``dirs``).  A
        symlink to a regular file counts as that file, by its canonical path, so a
        program reached through ``/usr/bin/python3 -> python3.11`` is listed once.
        Only the first 20 bytes of a file are read to recognise an ELF64
        little-endian x86-64 ET_EXEC or ET_DYN header.  Files that cannot be opened are left out.
        """
        found: set[str] = set()
        checked: set[str] = set()
        walked: set[str] = set()
        for top in dirs:
            entry = self._require(top)
            if not entry.is_dir:
                raise PathNotFoundError(top, "not a directory")
            pending = [entry.path]
            while pending:
                directory = pending.pop()
                if directory in walked:
                    continue
                walked.add(directory)
                try:
                    scan = list(os.scandir(self.host(directory)))
                except OSError:
                    continue
                for item in scan:
                    path = _join(directory, item.name)
                    if item.is_dir(follow_symlinks=False):
                        pending.append(path)
                        continue
                    if item.is_symlink():
                        target = self._lookup_quietly(path)
                        if target is None or not target.is_file:
                            continue
                        path = target.path
                    elif not item.is_file(follow_symlinks=False):
                        continue
                    if path in checked:
                        continue
                    checked.add(path)
                    if is_loadable_x86_64_elf(self.host(path)):
                        found.add(path)
        return sorted(found)

    # -- internals -----------------------------------------------------------------

    def _require(self, path: str) -> Resolved:
        entry = self.lookup(path)
        if entry is None:
            raise PathNotFoundError(path, f"no such file or directory in rootfs {self.root}")
        return entry

    def _lookup_quietly(self, path: str) -> Resolved | None:
        try:
            return self.lookup(path)
        except SymlinkLoopError:
            return None

    def _walk(self, start: Resolved, components: list[str], original: str) -> Resolved | None:
        """Resolve ``components`` from the directory ``start`` (chroot semantics, see module doc)."""
        resolved = [] if start.path == "/" else start.path[1:].split("/")
        current = start
        pending = deque(components)
        links = 0
        while pending:
            component = pending.popleft()
            if not current.is_dir:
                return None  # ENOTDIR: only a directory can have a component after it
            if component in ("", "."):
                continue
            if component == "..":
                if resolved:
                    resolved.pop()
                current = self._root_entry if not resolved else self._directory("/" + "/".join(resolved))
                continue
            host = os.path.join(self.root, *resolved, component)
            try:
                st = os.lstat(host)
            except (FileNotFoundError, NotADirectoryError):
                return None
            except OSError as e:
                raise RootfsError(original, f"cannot resolve {component!r}: {e.strerror}") from None
            if stat.S_ISLNK(st.st_mode):
                links += 1
                if links > MAXSYMLINKS:
                    raise SymlinkLoopError(original, f"too many levels of symbolic links (more than {MAXSYMLINKS}) in rootfs {self.root}")
                target = os.readlink(host)
                if target.startswith("/"):
                    # An absolute target is relative to the rootfs root, as after chroot.
                    resolved.clear()
                    current = self._root_entry
                pending.extendleft(reversed(target.split("/")))
                continue
            resolved.append(component)
            current = Resolved("/" + "/".join(resolved), st)
        return current

    def _directory(self, canonical: str) -> Resolved:
        """The entry of a canonical directory path we have just walked through."""
        entry = self._entries.get(canonical)
        if entry is None:
            entry = Resolved(canonical, os.lstat(self.host(canonical)))
            self._entries[canonical] = entry
        return entry


def _join(directory: str, name: str) -> str:
    return directory + name if directory.endswith("/") else f"{directory}/{name}"


def _has_magic(component: str) -> bool:
    return any(c in component for c in "*?[")


_LOADABLE_E_TYPES = (b"\x02\x00", b"\x03\x00")  # ET_EXEC, ET_DYN, little-endian


def is_loadable_x86_64_elf(host_path: str) -> bool:
    """An ELF64 little-endian x86-64 executable or shared object (20 bytes read, no symlink followed)."""
    try:
        fd = os.open(host_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        head = os.read(fd, 20)
    except OSError:
        return False
    finally:
        os.close(fd)
    # e_type (bytes 16-17): only executables and shared objects get caches, not
    # object files (crt*.o, kernel modules) or core dumps.
    return (len(head) == 20 and head[:6] == _X86_64_ELF_IDENT and head[18:20] == _EM_X86_64_LE
            and head[16:18] in _LOADABLE_E_TYPES)
