"""``fexaot`` subcommands of the runtime and profile layers: run, profile {merge,show,recall}, bench run."""

from __future__ import annotations

import argparse
import os
import sys

from fexaot_tool.errors import FexaotError


def register(sub) -> None:
    p = sub.add_parser("run", help="run an x86-64 Linux program from a rootfs on the reference runtime",
                       description="Run PROGRAM with ARGS under the fexaot runtime.  Its exit status, "
                                   "output and file effects are the program's.")
    p.add_argument("--rootfs", metavar="DIR", help="root filesystem (default: / on an x86-64 Linux host)")
    p.add_argument("--engine", default="x86", choices=("x86", "a64"),
                   help="CPU engine: x86 (default, the reference) or a64 (translated AArch64 code, docs/a64-engine.md)")
    p.add_argument("--cache", action="append", default=[], metavar="PATH",
                   help="a64: a cache file (a bundle such as cache/python3.fexcache); may be repeated")
    p.add_argument("--cache-dir", metavar="DIR",
                   help="a64: a directory of per-module caches named <basename>-<FileId>-<ConfigId>.fexcache")
    p.add_argument("--no-cache", action="store_true", help="a64: use no cache, translate everything at run time")
    p.add_argument("--cache-diagnostics", action="store_true",
                   help="a64: print one line on stderr per cache used or rejected, with the reason")
    p.add_argument("--profile-out", metavar="FILE", help="write which blocks ran, per module (docs/profiles.md)")
    p.add_argument("--stats", metavar="FILE", help="write run statistics as JSON (docs/runtime.md)")
    p.add_argument("program", nargs=argparse.REMAINDER, metavar="-- PROGRAM ARGS",
                   help="the program (a path in the rootfs or a name on its PATH) and its arguments")
    p.set_defaults(func=_cmd_run)

    profile = sub.add_parser("profile", help="combine and read run profiles")
    profile_sub = profile.add_subparsers(dest="profile_command", required=True, metavar="ACTION")
    p = profile_sub.add_parser("merge", help="add the counts of several profiles into one (order does not matter)")
    p.add_argument("inputs", nargs="+", metavar="PROFILE")
    p.add_argument("-o", "--output", required=True, metavar="FILE")
    p.set_defaults(func=_cmd_profile_merge)

    p = profile_sub.add_parser("show", help="print the hottest blocks of each module")
    p.add_argument("profile", metavar="PROFILE")
    p.add_argument("--top", type=int, default=10, metavar="N", help="blocks per module (default 10)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_profile_show)

    p = profile_sub.add_parser("recall", help="which executed block starts are block starts of the static codemap")
    p.add_argument("profile", metavar="PROFILE")
    p.add_argument("files", nargs="*", metavar="ELF",
                   help="guest paths of the modules' files (default: found in the rootfs by name and FileId)")
    p.add_argument("--rootfs", metavar="DIR", help="root filesystem the profile was recorded in (default: /)")
    p.add_argument("--missed", type=int, default=0, metavar="N", help="also list N missed starts per module")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_profile_recall)

    from fexaot_tool import cli_profile_fex

    cli_profile_fex.register(profile_sub)


def register_run(bench_sub) -> None:
    """``fexaot bench run``: slowdown of the runtime against native execution."""
    p = bench_sub.add_parser("run", help="time programs natively and on the runtime (slowdown)")
    p.add_argument("--rootfs", metavar="DIR", help="root filesystem (default: /)")
    p.add_argument("--repeat", type=_positive, default=3, help="runs per case and mode (default 3; the median is shown)")
    p.add_argument("--case", action="append", metavar="NAME", help="only these cases (default: all)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_bench_run)

    p = bench_sub.add_parser("compare", help="native, x86 engine, a64 JIT only and a64 with a prebuilt cache")
    p.add_argument("--cache", required=True, metavar="BUNDLE",
                   help="the prebuilt cache (built first with `scons cache/python3.fexcache`)")
    p.add_argument("--repeat", type=_positive, default=3, help="runs per case and variant (default 3)")
    p.add_argument("--case", action="append", metavar="NAME",
                   help="cases of `bench run` (default: 'python3 -c pass' and 'python3 import json, re')")
    p.add_argument("--out", default="bench-compare", metavar="DIR",
                   help="where report.json, report.md and plot.svg go (default: bench-compare)")
    p.set_defaults(func=_cmd_bench_compare)


def _cmd_bench_compare(args: argparse.Namespace) -> int:
    from fexaot_tool.runtime.bench_compare import markdown, run_compare

    report = run_compare(args.case, args.cache, args.repeat, args.out)
    print(markdown(report))
    print(f"written: {os.path.join(args.out, 'report.json')}, report.md, plot.svg")
    return 0


# -- run -------------------------------------------------------------------------------------


def _cmd_run(args: argparse.Namespace) -> int:
    from fexaot_tool.elf.rootfs import default_rootfs
    from fexaot_tool.runtime import GuestFault, RunOptions, run_program

    argv = list(args.program)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise FexaotError(None, "no program given (usage: fexaot run [OPTIONS] -- PROGRAM ARGS...)")
    from fexaot_tool.runtime.a64 import A64Options

    if (args.cache or args.cache_dir or args.no_cache or args.cache_diagnostics) and args.engine != "a64":
        raise FexaotError(None, "--cache, --cache-dir, --no-cache and --cache-diagnostics need --engine a64")
    if args.cache_dir and not os.path.isdir(args.cache_dir):
        raise FexaotError(args.cache_dir, "cache directory does not exist")
    a64 = A64Options(bundles=tuple(os.path.abspath(p) for p in args.cache),
                     cache_dir=os.path.abspath(args.cache_dir) if args.cache_dir else None,
                     use_cache=not args.no_cache, diagnostics=args.cache_diagnostics)
    options = RunOptions(rootfs=args.rootfs or default_rootfs(), engine=args.engine,
                         profile_out=args.profile_out, stats_out=args.stats, a64=a64)
    try:
        return run_program(options, argv).exit_status
    except GuestFault as e:
        # Killed by a signal: the shell's convention, 128 + the signal number.
        print(f"fexaot run: {e}", file=sys.stderr)
        return e.exit_status


# -- profile ---------------------------------------------------------------------------------


def _cmd_profile_merge(args: argparse.Namespace) -> int:
    from fexaot_tool.cache.atomic import atomic_write
    from fexaot_tool.profile import encode, merge_profiles, read_profile

    merged = merge_profiles(read_profile(path) for path in args.inputs)
    atomic_write(args.output, [encode(merged)])
    blocks = sum(len(m.blocks) for m in merged.modules)
    print(f"{args.output}: {len(merged.modules)} modules, {blocks} blocks, "
          f"{sum(m.executions for m in merged.modules)} executions from {len(args.inputs)} profiles")
    return 0


def _cmd_profile_show(args: argparse.Namespace) -> int:
    import json

    from fexaot_tool.profile import read_profile, summarize

    summaries = summarize(read_profile(args.profile), args.top)
    if args.json:
        print(json.dumps([{
            "name": s.module.name, "file_id": f"{s.module.file_id:016x}", "executions": s.executions,
            "distinct_blocks": len(s.module.blocks), "share": round(s.share, 6),
            "hottest": [{"vaddr": f"{b.vaddr:#x}", "count": b.count, "share": round(b.share, 6)}
                        for b in s.hottest],
        } for s in summaries], indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for s in summaries:
        table = Table(title=f"{s.module.name} ({s.module.file_id:016x}): {s.executions:,} block executions "
                            f"({s.share:.1%}), {len(s.module.blocks):,} distinct blocks", title_justify="left")
        for column in ("vaddr", "executions", "share"):
            table.add_column(column, justify="right")
        for b in s.hottest:
            table.add_row(f"{b.vaddr:#x}", f"{b.count:,}", f"{b.share:.2%}")
        console.print(table)
    return 0


_RECALL_SEARCH_DIRS = ("/usr/bin", "/usr/sbin", "/usr/lib", "/usr/libexec", "/usr/local/bin", "/usr/local/lib")


def _cmd_profile_recall(args: argparse.Namespace) -> int:
    import json

    from fexaot_tool.cache.key import module_identity
    from fexaot_tool.discover import build_codemap
    from fexaot_tool.elf.rootfs import Rootfs
    from fexaot_tool.profile import read_profile, recall

    profile = read_profile(args.profile)
    rootfs = Rootfs(args.rootfs or "/")
    by_id: dict[int, str] = {}
    for guest in args.files:
        by_id[module_identity(rootfs.host_path(guest)).file_id] = guest
    wanted = {m.name for m in profile.modules if m.file_id not in by_id}
    if wanted and not args.files:
        dirs = [d for d in _RECALL_SEARCH_DIRS if rootfs.is_dir(d)]
        for guest in rootfs.walk_elf_files(dirs):
            if os.path.basename(guest) in wanted:
                by_id.setdefault(module_identity(rootfs.host(guest)).file_id, guest)
    results = []
    for m in profile.modules:
        guest = by_id.get(m.file_id)
        if guest is None:
            print(f"fexaot profile recall: {m.name} ({m.file_id:016x}): no file with this content in rootfs "
                  f"{rootfs.root}; skipped", file=sys.stderr)
            continue
        codemap = build_codemap(rootfs.host_path(guest), guest)
        starts = [b.start for b in codemap.blocks]
        ends = [b.end for b in codemap.blocks]
        results.append((guest, recall(m, starts, ends), len(codemap.blocks)))
    if args.json:
        print(json.dumps([{
            "module": r.module, "path": guest, "codemap_blocks": n, "executed_starts": r.executed,
            "codemap_starts": r.found, "inside_codemap_blocks": r.inside, "recall": round(r.ratio, 6),
            "execution_recall": round(r.execution_ratio, 6),
            "missed": [f"{v:#x}" for v in r.missed[:args.missed]],
        } for guest, r, n in results], indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"executed block starts found in the static codemap ({args.profile})", title_justify="left")
    for column in ("module", "executed starts", "codemap starts", "recall", "inside a block", "not found",
                   "by executions"):
        table.add_column(column, justify="left" if column == "module" else "right")
    total_executed = total_found = 0
    for guest, r, _n in results:
        table.add_row(os.path.basename(guest), f"{r.executed:,}", f"{r.found:,}", f"{r.ratio:.2%}", f"{r.inside:,}",
                      f"{r.executed - r.found - r.inside:,}", f"{r.execution_ratio:.2%}")
        total_executed += r.executed
        total_found += r.found
    if results:
        table.add_row("all", f"{total_executed:,}", f"{total_found:,}",
                      f"{total_found / max(total_executed, 1):.2%}", "", "", "")
    Console(width=120).print(table)
    if args.missed:
        for guest, r, _n in results:
            if r.missed:
                print(f"{guest}: missed {', '.join(f'{v:#x}' for v in r.missed[:args.missed])}")
    return 0


# -- bench run -------------------------------------------------------------------------------


def _cmd_bench_run(args: argparse.Namespace) -> int:
    import json

    from fexaot_tool.runtime.bench import CASES, run_benchmark

    cases = CASES
    if args.case:
        unknown = set(args.case) - {c.name for c in CASES}
        if unknown:
            raise FexaotError(None, f"unknown case {', '.join(sorted(unknown))} (known: "
                                    f"{', '.join(c.name for c in CASES)})")
        cases = tuple(c for c in CASES if c.name in args.case)
    results = run_benchmark(cases, rootfs=args.rootfs or "/", repeat=args.repeat)
    if args.json:
        print(json.dumps([r.as_dict() for r in results], indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"fexaot run vs native (median of {args.repeat}; rootfs {args.rootfs or '/'})",
                  title_justify="left")
    for column in ("case", "native s", "runtime s", "slowdown", "profiling s", "slowdown", "blocks run",
                   "instructions"):
        table.add_column(column, justify="left" if column == "case" else "right")
    for r in results:
        table.add_row(r.case.name, f"{r.native:.3f}", f"{r.runtime:.2f}", f"{r.runtime / r.native:.0f}x",
                      f"{r.profiled:.2f}", f"{r.profiled / r.native:.0f}x", f"{r.block_executions / 1e6:.1f} M",
                      f"{r.instructions / 1e6:.1f} M")
    Console(width=120).print(table)
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value
