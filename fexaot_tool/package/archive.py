"""Reproducible archives of caches: a Debian binary package (``.deb``) and a ``.tar.zst``.

Both are written here in Python rather than by ``dpkg-deb`` or ``tar`` so the
bytes depend only on the inputs: members sorted by path, every parent directory
listed, owner and group 0/0 (``root``), modes 0755 for directories and 0644
for files, every timestamp ``SOURCE_DATE_EPOCH``.  A ``.deb`` (deb(5)) is an ar
archive of ``debian-binary`` (``2.0``), ``control.tar.xz`` (``control``,
``md5sums``) and ``data.tar.xz``; the tar members are GNU format with ``./``
names, as ``dpkg-deb`` writes them.  xz is liblzma at preset 6 (dpkg-deb's
default); ``.tar.zst`` is the same data tar compressed by the ``zstd`` program
(single-threaded, a fixed level), whose output depends only on its version.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import shutil
import subprocess
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass

from fexaot_tool.cache.atomic import atomic_write
from fexaot_tool.errors import FexaotError

ZSTD_LEVEL = 10


class ArchiveError(FexaotError):
    """An archive that cannot be made (unreadable member, bad package field, no zstd)."""


@dataclass(frozen=True)
class Member:
    """A regular file of an archive: its path inside (relative, no ``./``) and its bytes or host file."""

    path: str
    source: str | None = None  # host file to read
    data: bytes | None = None  # or the bytes themselves
    mode: int = 0o644  # 0o755 for programs and maintainer scripts

    def read(self) -> bytes:
        if self.data is not None:
            return self.data
        try:
            with open(self.source, "rb") as f:
                return f.read()
        except OSError as e:
            raise ArchiveError(self.source, f"cannot read: {e.strerror or e}") from None


@dataclass(frozen=True)
class DebControl:
    """The fields of ``DEBIAN/control`` a cache package has (deb-control(5))."""

    package: str
    version: str
    maintainer: str
    synopsis: str
    description: str  # the extended description: lines of text, wrapped by the caller
    section: str = "misc"
    priority: str = "optional"
    architecture: str = "all"
    depends: str | None = None
    enhances: str | None = None

    def render(self, installed_size_kib: int) -> bytes:
        for name in ("package", "version", "maintainer", "synopsis"):
            value = getattr(self, name)
            if not value or "\n" in value:
                raise ArchiveError(None, f"package field {name} must be one non-empty line, not {value!r}")
        fields = [("Package", self.package), ("Version", self.version), ("Architecture", self.architecture),
                  ("Maintainer", self.maintainer), ("Installed-Size", str(installed_size_kib))]
        fields += [(k, v) for k, v in (("Depends", self.depends), ("Enhances", self.enhances)) if v]
        fields += [("Section", self.section), ("Priority", self.priority)]
        body = "".join(f"{k}: {v}\n" for k, v in fields)
        extended = "".join(f" {line}\n" if line.strip() else " .\n" for line in self.description.splitlines())
        return (body + f"Description: {self.synopsis}\n" + extended).encode("utf-8")


def data_tar(members: Iterable[Member], epoch: int) -> tuple[bytes, int]:
    """An uncompressed GNU tar of ``members`` and their parent directories; and the Installed-Size in KiB."""
    files = sorted(members, key=lambda m: m.path)
    paths = [m.path for m in files]
    if len(set(paths)) != len(paths):
        raise ArchiveError(None, f"two archive members at one path: {sorted(p for p in paths if paths.count(p) > 1)[0]}")
    directories = {d for p in paths for d in _parents(p)}
    by_path = {m.path: m for m in files}
    out = io.BytesIO()
    kib = 0
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name in _merge_sorted(sorted(directories), paths):
            if name in directories:
                tar.addfile(_info("./" + name + "/" if name else "./", tarfile.DIRTYPE, 0o755, 0, epoch))
                kib += 1  # dpkg-gencontrol counts a directory as 1 KiB
                continue
            data = by_path[name].read()
            tar.addfile(_info("./" + name, tarfile.REGTYPE, by_path[name].mode, len(data), epoch), io.BytesIO(data))
            kib += (len(data) + 1023) // 1024
    return out.getvalue(), kib


def write_deb(output: str, control: DebControl, members: Iterable[Member], epoch: int,
              control_members: Iterable[Member] = ()) -> None:
    """Write a Debian binary package atomically; ``control_members``: maintainer scripts, triggers, conffiles."""
    members = list(members)
    data, kib = data_tar(members, epoch)
    md5sums = "".join(f"{hashlib.md5(m.read()).hexdigest()}  {m.path}\n" for m in sorted(members, key=lambda m: m.path))
    control_tar, _ = data_tar([Member("control", data=control.render(kib)),
                               Member("md5sums", data=md5sums.encode("utf-8")), *control_members], epoch)
    parts = [("debian-binary", b"2.0\n"), ("control.tar.xz", _xz(control_tar)), ("data.tar.xz", _xz(data))]
    atomic_write(output, [b"!<arch>\n", *(_ar_member(name, body, epoch) for name, body in parts)])


def write_tar_zst(output: str, members: Iterable[Member], epoch: int) -> None:
    """The same tree as a ``.deb``'s data, as a zstd-compressed tar, written atomically."""
    zstd = shutil.which("zstd")
    if zstd is None:
        raise ArchiveError(output, "the zstd program is needed for .tar.zst (Debian package zstd)")
    data, _ = data_tar(members, epoch)
    proc = subprocess.run([zstd, "-q", "-c", f"-{ZSTD_LEVEL}", "-T1", "--no-progress"], input=data,
                          capture_output=True)
    if proc.returncode != 0:
        raise ArchiveError(output, f"zstd failed: {proc.stderr.decode(errors='replace').strip()}")
    atomic_write(output, [proc.stdout])


def gzip_bytes(data: bytes) -> bytes:
    """gzip -9n: no name, no timestamp, so the bytes depend on the data only."""
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=out, mtime=0) as f:
        f.write(data)
    return out.getvalue()


def _xz(data: bytes) -> bytes:
    return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=6)


def _ar_member(name: str, body: bytes, epoch: int) -> bytes:
    header = f"{name:<16}{epoch:<12}{0:<6}{0:<6}{0o100644:<8o}{len(body):<10}`\n".encode("ascii")
    assert len(header) == 60
    return header + body + (b"\n" if len(body) % 2 else b"")


def _info(name: str, kind: bytes, mode: int, size: int, epoch: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = size
    info.mtime = epoch
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def _parents(path: str) -> list[str]:
    """"" (the root) and every directory above ``path``: a/b/c -> "", "a", "a/b"."""
    parts = path.split("/")[:-1]
    return [""] + ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _merge_sorted(directories: list[str], files: list[str]) -> list[str]:
    """Directories before what they contain, everything else by path (the order dpkg-deb lists)."""
    return sorted(directories + files, key=lambda p: p.split("/"))
