"""``fexaot`` subcommands of the packaging layer: gc, index, package-files, rebuild."""

from __future__ import annotations

import argparse
import os
import re

from fexaot_tool.errors import FexaotError

_SIZE = re.compile(r"^(\d+(?:\.\d+)?)([KMGT]?)i?B?$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """``500M``, ``2G``, ``1.5GiB``, ``123456``: bytes (binary units)."""
    m = _SIZE.match(text.strip())
    if m is None:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 500M, 2G, 123456)")
    return int(float(m[1]) * _UNITS[m[2].upper()])


def _cmd_gc(args: argparse.Namespace) -> int:
    from fexaot_tool.elf.rootfs import default_rootfs
    from fexaot_tool.package.gc import DEFAULT_DIRS, collect

    report = collect(args.rootfs or default_rootfs(), args.cache_dir, max_size=args.max_size,
                     dirs=args.dirs or DEFAULT_DIRS, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for r in report.removed:
        print(f"{verb} {r.name}  ({r.size} bytes, {r.why})")
    for name in report.in_use:
        print(f"in use, kept {name}")
    print(f"{args.cache_dir}: {verb} {len(report.removed)} caches ({report.removed_bytes} bytes); "
          f"kept {report.kept} ({report.kept_bytes} bytes); {len(report.in_use)} in use; "
          f"{report.elf_files} ELF files in the rootfs")
    return 0


def _cmd_index(args: argparse.Namespace) -> int:
    from fexaot_tool.package.layout import read_index, render_index, write_index

    entries = read_index(args.cache_dir) if args.show else write_index(args.cache_dir)
    if args.show:
        print(render_index(entries), end="")
    else:
        print(f"{os.path.join(args.cache_dir, 'index')}: {len(entries)} caches")
    return 0


def _cmd_package_files(args: argparse.Namespace) -> int:
    from fexaot_tool.elf.rootfs import Rootfs, default_rootfs
    from fexaot_tool.package.dpkg import DpkgDatabase, parse_package_list

    database = DpkgDatabase(Rootfs(args.rootfs or default_rootfs()))
    for name in parse_package_list(" ".join(args.packages)):
        package = database.package(name)
        for path in package.elf_files:
            print(f"{package.name}\t{package.version or '-'}\t{path}")
    return 0


def _cmd_rebuild(args: argparse.Namespace) -> int:
    from fexaot_tool.elf.rootfs import default_rootfs
    from fexaot_tool.package.dpkg import parse_package_list
    from fexaot_tool.package.rebuild import rebuild

    packages = parse_package_list(" ".join(args.package or []))
    if not packages and not args.target:
        raise FexaotError(None, "nothing to rebuild: give --package NAME or --target TARGET")
    result = rebuild(args.state_dir, args.rootfs or default_rootfs(), args.cache_dir, packages, args.target or [],
                     jobs=args.jobs, max_size=args.max_size)
    if result.gc is not None:
        print(f"{args.cache_dir}: gc removed {len(result.gc.removed)} caches ({result.gc.removed_bytes} bytes), "
              f"kept {result.gc.kept}")
    return result.returncode


def _cmd_integration_deb(args: argparse.Namespace) -> int:
    from fexaot_tool.package.debian import DEFAULT_MAINTAINER, DEFAULT_SOURCE_DATE_EPOCH
    from fexaot_tool.package.integration import build_integration_deb

    epoch = args.source_date_epoch or os.environ.get("SOURCE_DATE_EPOCH") or DEFAULT_SOURCE_DATE_EPOCH
    if not str(epoch).isdigit():
        raise FexaotError(None, f"SOURCE_DATE_EPOCH must be seconds since 1970, not {epoch!r}")
    build_integration_deb(args.output, int(epoch), args.maintainer or DEFAULT_MAINTAINER)
    print(args.output)
    return 0


def register(sub) -> None:
    p = sub.add_parser("gc", help="remove caches no file of the rootfs needs, then the least recently used",
                       description="Remove the caches of CACHE_DIR whose FileId is no x86-64 ELF file's in the "
                                   "rootfs, then the least recently used beyond --max-size.  A cache a runtime "
                                   "holds (shared flock) is kept.")
    p.add_argument("--rootfs", metavar="DIR", help="root filesystem (default: / on an x86-64 Linux host)")
    p.add_argument("--cache-dir", required=True, metavar="DIR", help="directory of lookup-named caches")
    p.add_argument("--max-size", type=parse_size, metavar="SIZE", help="keep at most this many bytes (500M, 2G)")
    p.add_argument("--dirs", nargs="+", metavar="DIR", help="rootfs directories holding ELF files "
                   "(default: /usr /opt /bin /sbin /lib /lib32 /lib64 /libx32)")
    p.add_argument("--dry-run", action="store_true", help="say what would be removed; remove nothing")
    p.set_defaults(func=_cmd_gc)

    p = sub.add_parser("index", help="rewrite (or --show) the index of a cache directory")
    p.add_argument("--cache-dir", required=True, metavar="DIR")
    p.add_argument("--show", action="store_true", help="print the index instead of rewriting it")
    p.set_defaults(func=_cmd_index)

    p = sub.add_parser("package-files", help="the x86-64 ELF files a Debian package installed in a rootfs")
    p.add_argument("packages", nargs="+", metavar="PACKAGE")
    p.add_argument("--rootfs", metavar="DIR", help="root filesystem (default: /)")
    p.set_defaults(func=_cmd_package_files)

    p = sub.add_parser("rebuild", help="incremental rebuild for a trigger or timer: scons install, then gc")
    p.add_argument("--rootfs", metavar="DIR", help="root filesystem (default: /)")
    p.add_argument("--cache-dir", default="/var/lib/fexaot/cache", metavar="DIR",
                   help="where the runtime finds caches (default: /var/lib/fexaot/cache)")
    p.add_argument("--state-dir", default="/var/lib/fexaot/build", metavar="DIR",
                   help="the build's own project: .sconsign and per-object caches (default: /var/lib/fexaot/build)")
    p.add_argument("--package", action="append", metavar="NAMES", help="Debian packages to keep cached")
    p.add_argument("--target", action="append", metavar="TARGET", help="scons targets to keep cached (e.g. python3)")
    p.add_argument("-j", "--jobs", type=int, default=1)
    p.add_argument("--max-size", type=parse_size, metavar="SIZE", help="gc budget for the cache directory")
    p.set_defaults(func=_cmd_rebuild)

    p = sub.add_parser("integration-deb", help="build the fexaot-integration package (dpkg trigger, systemd units)")
    p.add_argument("-o", "--output", required=True, metavar="FILE.deb")
    p.add_argument("--source-date-epoch", metavar="SECONDS", help="timestamps (default: $SOURCE_DATE_EPOCH, else 2024-01-01)")
    p.add_argument("--maintainer", help="the Maintainer field")
    p.set_defaults(func=_cmd_integration_deb)
