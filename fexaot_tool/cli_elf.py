"""``fexaot`` subcommands of the ELF layer: closure, check-loader."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from fexaot_tool.errors import FexaotError


def register(sub) -> None:
    p = sub.add_parser("closure", help="list a program's dependency closure, as ld.so would load it")
    p.add_argument("program", metavar="PROGRAM", help="a path in the rootfs, or a name on its PATH")
    p.add_argument("--rootfs", metavar="DIR", help="root filesystem (default: / on an x86-64 Linux host)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_closure)

    p = sub.add_parser("check-loader", help="compare closures with the host's real ld.so over many files")
    p.add_argument("dirs", nargs="*", metavar="DIR",
                   help="host directories to scan (default: /usr/bin /usr/sbin /usr/lib/x86_64-linux-gnu)")
    p.add_argument("--rootfs", metavar="DIR", default="/", help="must be / : the host's own loader is run")
    p.add_argument("--sample", type=int, metavar="N", help="check N files spread evenly over the sorted list")
    p.add_argument("--jobs", "-j", type=int, metavar="N", help="loader processes at once (default: two per core)")
    p.add_argument("--verbose", "-v", action="store_true", help="also list skipped files")
    p.set_defaults(func=_cmd_check_loader)


def _cmd_closure(args: argparse.Namespace) -> int:
    from fexaot_tool.elf.closure import resolve_closure
    from fexaot_tool.elf.rootfs import ROOTFS_PATH, Rootfs, default_rootfs

    rootfs = Rootfs(args.rootfs or default_rootfs())
    program = rootfs.which(args.program)
    if program is None:
        where = "" if "/" in args.program else f" on the PATH {':'.join(ROOTFS_PATH)}"
        raise FexaotError(args.program, f"no executable file{where} in rootfs {rootfs.root}")
    closure = resolve_closure(rootfs, program)

    if args.json:
        print(json.dumps({
            "rootfs": rootfs.root,
            "program": program,
            "objects": [dataclasses.asdict(o) for o in closure.objects],
            "missing": [dataclasses.asdict(m) for m in closure.missing],
        }, indent=2))
    else:
        _print_closure_table(rootfs.root, program, closure)
    if closure.missing:
        names = ", ".join(m.name for m in closure.missing)
        print(f"fexaot closure: {program}: not found in rootfs {rootfs.root}: {names}", file=sys.stderr)
        return 1
    return 0


def _print_closure_table(root: str, program: str, closure) -> None:
    from rich.console import Console
    from rich.table import Table

    index: dict[str, int] = {}
    for i, o in enumerate(closure.objects):
        index.setdefault(o.path, i)
    table = Table(title=f"{program} in rootfs {root}: {len(closure.paths)} files", title_justify="left")
    for column in ("#", "name", "found by", "needed by", "path"):
        table.add_column(column, overflow="fold")
    for i, o in enumerate(closure.objects):
        path = o.path if o.path == o.opened_as else f"{o.path}\n[dim]opened as {o.opened_as}[/dim]"
        needer = f"#{index[o.needed_by]}" if o.needed_by is not None else ""
        table.add_row(str(i), o.name, str(o.found_by), needer, path)
    for m in closure.missing:
        style = "bold red" if m.fatal else "red"
        table.add_row("-", m.name, m.named_in, f"#{index[m.needed_by]}", f"[{style}]{m.reason}[/{style}]")
    Console().print(table)


def _cmd_check_loader(args: argparse.Namespace) -> int:
    from fexaot_tool.validate.loader import DEFAULT_DIRS, Outcome, check_loader

    report = check_loader(args.rootfs, args.dirs or DEFAULT_DIRS, sample=args.sample, jobs=args.jobs)
    for check in report.checks:
        if check.outcome is Outcome.DISAGREE or (args.verbose and check.outcome is Outcome.SKIPPED):
            print(f"{check.outcome}: {check.path}: {check.detail}")
    not_checked = ", ".join(f"{reason}: {n}" for reason, n in sorted(report.not_checked.items()))
    print(f"{report.elf_files} x86-64 ELF files; not checked: {not_checked or 'none'}")
    if report.ld_so_cache is not None:
        for difference in report.ld_so_cache.differences:
            print(f"ld.so.cache: {difference}")
        print(report.ld_so_cache.summary())
    print(f"{report.summary()} in {report.seconds:.1f} s")
    return 0 if report.ok else 1
