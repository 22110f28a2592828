"""A Debian binary package (or a ``.tar.zst``) of the caches of one package's ELF files.

``fexaot-cache-<package>_<version>+fexaot<format>.<translator>_all.deb`` installs
every per-object cache under its lookup name into ``/var/lib/fexaot/cache/``
(the directory the runtime searches), with the copyright and changelog files
Debian policy asks for.  It names the exact package version the caches were
built from (``Enhances: libc6 (= 2.36-9+deb12u7)``): a cache of another version
is never looked up, so the two may be installed side by side.  The version
suffix grows with the cache format and translator versions, so a rebuild with
a newer translator upgrades the cache package.
"""

from __future__ import annotations

import email.utils
import re
from datetime import datetime, timezone

from fexaot_tool.cache.key import TranslatorConfig
from fexaot_tool.package.archive import ArchiveError, DebControl, Member, gzip_bytes, write_deb, write_tar_zst
from fexaot_tool.package.layout import cache_lookup_name

CACHE_DIR = "var/lib/fexaot/cache"  # inside the package, relative to /
DEFAULT_MAINTAINER = "fexaot cache builder <fexaot-cache@example.org>"
# Archive timestamps when SOURCE_DATE_EPOCH is not given: a fixed instant
# (2024-01-01 00:00 UTC), so two builds anywhere agree byte for byte.
DEFAULT_SOURCE_DATE_EPOCH = "1704067200"
_PACKAGE_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")  # deb-control(5)


def cache_package_name(package: str) -> str:
    name = f"fexaot-cache-{package.partition(':')[0]}"
    if not _PACKAGE_NAME.match(name):
        raise ArchiveError(package, f"cannot make a Debian package name from it ({name!r})")
    return name


def cache_package_version(package_version: str) -> str:
    config = TranslatorConfig()
    return f"{package_version}+fexaot{config.format_version}.{config.translator_version}"


def archive_stem(package: str, package_version: str) -> str:
    """``fexaot-cache-libc6_2.36-9+deb12u7+fexaot1.2`` (a version's epoch is not part of a file name)."""
    version = cache_package_version(package_version)
    version = version.split(":", 1)[-1]
    return f"{cache_package_name(package)}_{version}"


def cache_members(cache_paths: list[str]) -> list[Member]:
    """The caches under their lookup names in the package's cache directory."""
    return [Member(f"{CACHE_DIR}/{cache_lookup_name(path)}", source=path) for path in cache_paths]


def build_deb(output: str, package: str, package_version: str, cache_paths: list[str], epoch: int,
              maintainer: str = DEFAULT_MAINTAINER, upstream_copyright: str | None = None) -> None:
    """Write the cache package; ``upstream_copyright`` is the host path of the package's own copyright file.

    The caches are translations of the package's code, so its copyright file
    is shipped as theirs when the rootfs has it.
    """
    name = package.partition(":")[0]
    binary = cache_package_name(package)
    version = cache_package_version(package_version)
    control = DebControl(
        package=binary,
        version=version,
        maintainer=maintainer,
        synopsis=f"AArch64 translation caches for {name} {package_version}",
        description=(f"Ahead-of-time AArch64 code for the x86-64 executables and libraries\n"
                     f"of {name} {package_version}, built by fexaot from the files' content.\n"
                     f"A runtime that translates x86-64 programs on AArch64 looks each\n"
                     f"module up by name in /{CACHE_DIR}/ and skips translating it."),
        enhances=f"{name} (= {package_version})",
    )
    doc = f"usr/share/doc/{binary}"
    stamp = email.utils.format_datetime(datetime.fromtimestamp(epoch, timezone.utc))
    changelog = (f"{binary} ({version}) unstable; urgency=medium\n\n"
                 f"  * Caches of {name} {package_version}, {len(cache_paths)} ELF file(s).\n\n"
                 f" -- {maintainer}  {stamp}\n")
    copyright_text = _read(upstream_copyright) if upstream_copyright else None
    copyright_text = copyright_text or (
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
        f"Comment: The caches hold machine code translated from the files of {name};\n"
        f" their copyright and license are those of {name}.\n\n"
        "Files: *\n"
        f"Copyright: the copyright holders of {name}, listed in /usr/share/doc/{name}/copyright\n"
        f"License: same-as-{name}\n"
        f" The license terms of {name}, in /usr/share/doc/{name}/copyright.\n")
    members = cache_members(cache_paths) + [
        Member(f"{doc}/changelog.Debian.gz", data=gzip_bytes(changelog.encode("utf-8"))),
        Member(f"{doc}/copyright", data=copyright_text if isinstance(copyright_text, bytes)
               else copyright_text.encode("utf-8")),
    ]
    write_deb(output, control, members, epoch)


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ArchiveError(path, f"cannot read: {e.strerror or e}") from None


def build_tarball(output: str, cache_paths: list[str], epoch: int) -> None:
    write_tar_zst(output, cache_members(cache_paths), epoch)
