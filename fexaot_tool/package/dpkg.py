"""A rootfs's own dpkg database: which files a package installed, and at which version.

dpkg keeps, for every installed package, the list of paths it unpacked in
``/var/lib/dpkg/info/<package>.list`` (``<package>:<arch>.list`` for a
``Multi-Arch: same`` package such as ``libc6:amd64``) and its state and
version in the stanzas of ``/var/lib/dpkg/status`` (deb-status(5)).  Both are
read through :class:`Rootfs`, so every path stays inside the rootfs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from fexaot_tool.elf.rootfs import Rootfs, is_loadable_x86_64_elf
from fexaot_tool.errors import FexaotError

INFO_DIR = "/var/lib/dpkg/info"
STATUS_FILE = "/var/lib/dpkg/status"
# The architecture an x86-64 rootfs's libraries are installed for; tried after
# the bare name, as dpkg-query does for a name without ":arch".
NATIVE_ARCH = "amd64"


class DpkgError(FexaotError):
    """A dpkg database, or a package in it, that cannot be used."""


@dataclass(frozen=True)
class InstalledPackage:
    """A package as the rootfs's dpkg database records it."""

    name: str  # as given on the command line, without ":arch"
    list_file: str  # guest path of its .list file
    version: str | None  # from the status file; None when the status file does not say
    elf_files: tuple[str, ...]  # canonical guest paths of its x86-64 executables and libraries, sorted


def parse_package_list(text: str) -> list[str]:
    """Package names from ``PACKAGE=a,b c``: split on commas and spaces, order kept, duplicates dropped."""
    names: list[str] = []
    for word in text.replace(",", " ").split():
        if word not in names:
            names.append(word)
    return names


class DpkgDatabase:
    def __init__(self, rootfs: Rootfs):
        self.rootfs = rootfs
        if not rootfs.is_dir(INFO_DIR):
            raise DpkgError(os.path.join(rootfs.root, INFO_DIR.lstrip("/")), "no dpkg database in this rootfs")
        self._status: dict[str, list[dict[str, str]]] | None = None

    def list_file(self, package: str) -> str:
        """The guest path of ``package``'s .list file."""
        name, _, arch = package.partition(":")
        candidates = [f"{INFO_DIR}/{package}.list"] if arch else \
            [f"{INFO_DIR}/{name}.list", f"{INFO_DIR}/{name}:{NATIVE_ARCH}.list"]
        for candidate in candidates:
            if self.rootfs.is_file(candidate):
                return candidate
        tried = " or ".join(os.path.basename(c) for c in candidates)
        raise DpkgError(package, f"package not installed in rootfs {self.rootfs.root} (no {INFO_DIR}/{tried})")

    def package(self, package: str) -> InstalledPackage:
        list_file = self.list_file(package)
        name = package.partition(":")[0]
        return InstalledPackage(name, list_file, self.version(package), tuple(self._elf_files(list_file)))

    def version(self, package: str) -> str | None:
        """The installed version of ``package`` from the status file, or None."""
        name, _, arch = package.partition(":")
        for fields in self._stanzas().get(name, ()):
            if arch and fields.get("architecture") != arch:
                continue
            if fields.get("status", "").split()[-1:] == ["installed"]:
                return fields.get("version")
        return None

    def _elf_files(self, list_file: str) -> list[str]:
        found: set[str] = set()
        for line in self.rootfs.read_text(list_file).splitlines():
            path = line.strip()
            # The links a package ships (libz.so.1 -> libz.so.1.2.13) are listed
            # beside their targets; a link is never a file of its own here.
            if not path.startswith("/") or self.rootfs.is_symlink(path) or not self.rootfs.is_file(path):
                continue
            canonical = self.rootfs.resolve(path)
            if canonical not in found and is_loadable_x86_64_elf(self.rootfs.host(canonical)):
                found.add(canonical)
        return sorted(found)

    def _stanzas(self) -> dict[str, list[dict[str, str]]]:
        """Status stanzas by package name (a Multi-Arch package may have one per architecture)."""
        if self._status is not None:
            return self._status
        self._status = {}
        if not self.rootfs.is_file(STATUS_FILE):
            return self._status
        for block in self.rootfs.read_text(STATUS_FILE).split("\n\n"):
            fields: dict[str, str] = {}
            for line in block.splitlines():
                if line[:1] in (" ", "\t") or ":" not in line:
                    continue  # continuation lines of multi-line fields
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.strip()
            if "package" in fields:
                self._status.setdefault(fields["package"], []).append(fields)
        return self._status


# -- writing a database (for a rootfs made with ``dpkg -x``, which records nothing) --------


def record_package(rootfs_dir: str, package: str, version: str, paths: list[str], arch: str = NATIVE_ARCH,
                   multi_arch_same: bool = False) -> None:
    """Record ``package`` as installed in a rootfs's dpkg database, as dpkg would.

    ``paths`` are the guest paths the package unpacked (files, links and
    directories); the .list gets them with every parent directory, sorted, after
    ``/.``.  The status stanza is added or replaced; stanzas stay sorted by
    name, so the same packages give the same bytes.
    """
    from fexaot_tool.cache.atomic import atomic_write

    info = os.path.join(rootfs_dir, INFO_DIR.lstrip("/"))
    os.makedirs(info, exist_ok=True)
    listed = {"/."}
    for path in paths:
        parts = path.strip("/").split("/")
        listed.update("/" + "/".join(parts[:i]) for i in range(1, len(parts) + 1))
    list_name = f"{package}:{arch}.list" if multi_arch_same else f"{package}.list"
    atomic_write(os.path.join(info, list_name), ["".join(f"{p}\n" for p in sorted(listed)).encode("utf-8")])
    status_path = os.path.join(rootfs_dir, STATUS_FILE.lstrip("/"))
    stanzas: dict[tuple[str, str], str] = {}
    if os.path.exists(status_path):
        with open(status_path, encoding="utf-8") as f:
            for block in f.read().split("\n\n"):
                fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and line[0] != " ")
                if "Package" in fields:
                    stanzas[(fields["Package"], fields.get("Architecture", ""))] = block.strip("\n")
    lines = [f"Package: {package}", "Status: install ok installed", "Priority: optional", f"Architecture: {arch}"]
    if multi_arch_same:
        lines.append("Multi-Arch: same")
    lines += [f"Version: {version}", "Description: recorded by fexaot (unpacked with dpkg -x)"]
    stanzas[(package, arch)] = "\n".join(lines)
    text = "".join(stanzas[k] + "\n\n" for k in sorted(stanzas))
    atomic_write(status_path, [text.encode("utf-8")])
