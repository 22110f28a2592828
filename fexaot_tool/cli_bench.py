"""``fexaot bench`` subcommands: measurements that print numbers."""

from __future__ import annotations

import json
import shlex
import tempfile
from pathlib import Path

from fexaot_tool.translate.bench import register_translate


def _cmd_bench_build(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from fexaot_tool.bench.build import run_build_benchmark
    from fexaot_tool.elf.rootfs import default_rootfs

    rootfs = args.rootfs or default_rootfs()
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.gettempdir()) / "fexaot-bench-build"
    bench = run_build_benchmark(rootfs, workdir, args.targets, args.jobs, args.repeat)
    if args.json:
        print(json.dumps(bench.as_dict(), indent=2))
        return 0
    table = Table(title=f"fexaot build benchmark (ROOTFS={rootfs}, scratch project {workdir})")
    for column in ("what", "-j", "actions", "median s", "min s", "max s", "runs"):
        table.add_column(column, justify="left" if column == "what" else "right")
    for t in bench.timings:
        table.add_row(t.what, str(t.jobs), str(t.actions), f"{t.median:.2f}", f"{min(t.runs):.2f}",
                      f"{max(t.runs):.2f}", str(len(t.runs)))
    Console().print(table)
    return 0


def _cmd_bench_filters(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from fexaot_tool.bench.filters import DEFAULT_COMMAND, run_filters_benchmark
    from fexaot_tool.elf.rootfs import default_rootfs

    rootfs = args.rootfs or default_rootfs()
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.gettempdir()) / "fexaot-bench-filters"
    command = tuple(args.command) or DEFAULT_COMMAND
    result = run_filters_benchmark(rootfs, workdir, args.app, command, args.hot_threshold, args.repeat,
                                   args.profile_dir, args.program)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    targets = result["targets"]
    table = Table(title=f"speed-profile against speed: cache/{args.app}.fexcache, -j1, {args.repeat} build(s) each; "
                        f"run: {shlex.join(command)}")
    for column in ("variant", "bundle bytes", "size %", "build CPU s", "CPU %", "build wall s",
                   "from cache %", "JIT insns", "fallback insns", "targets met"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for v in result["variants"]:
        executed = v["executed"]
        table.add_row(v["name"], f"{v['bundle_bytes']:,}", f"{100 * v['size_share']:.1f}",
                      f"{v['cpu_median_s']:.2f} ({min(v['cpu_s']):.2f}-{max(v['cpu_s']):.2f})",
                      f"{100 * v['cpu_share']:.1f}", f"{v['wall_median_s']:.2f}",
                      f"{100 * executed['cache']['share']:.4f}", f"{executed['jit']['instructions']:,}",
                      f"{executed['fallback']['instructions']:,}",
                      "" if v["name"] == "speed" else ("yes" if v["meets_targets"] else "no"))
    console = Console()
    console.width = max(console.width, 150)  # ten columns: do not squeeze them into a pipe's 80
    console.print(table)
    print(f"targets: size <= {100 * targets['size_share']:.0f}% and build CPU <= {100 * targets['cpu_share']:.0f}% "
          f"of speed's, >= {100 * targets['from_cache_share']:.0f}% of guest instructions from the cache")
    return 0


def register(sub) -> None:
    bench = sub.add_parser("bench", help="benchmarks that print numbers")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True, metavar="BENCHMARK")
    p = bench_sub.add_parser("build", help="time first and null scons builds of real targets")
    p.add_argument("targets", nargs="*", default=["cache/python3.fexcache", "usr"],
                   help="scons targets to time (default: cache/python3.fexcache usr)")
    p.add_argument("--rootfs", help="x86-64 rootfs (default: / on an x86-64 Linux host)")
    p.add_argument("--workdir", help="scratch project directory (default: $TMPDIR/fexaot-bench-build, emptied first)")
    p.add_argument("-j", "--jobs", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3, help="null builds per target (default 3)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_bench_build)

    p = bench_sub.add_parser("filters", help="speed-profile against speed: bundle size, build time, share run from the cache")
    p.add_argument("command", nargs="*", help="the program to profile and run (default: /usr/bin/python3.11 -c "
                                              "'import json, re'); put it after --")
    p.add_argument("--app", default="python3", help="the app target whose bundle is built (default python3)")
    p.add_argument("--program", help="the app's program, as targets/*.toml names it (default: the app's name)")
    p.add_argument("--hot-threshold", type=int, nargs="+", default=[1], metavar="N",
                   help="speed-profile HOT_THRESHOLD values to build with (default 1)")
    p.add_argument("--profile-dir", help="profiles to build from (default: record one run of the command)")
    p.add_argument("--rootfs", help="x86-64 rootfs (default: / on an x86-64 Linux host)")
    p.add_argument("--workdir", help="scratch directory (default: $TMPDIR/fexaot-bench-filters)")
    p.add_argument("--repeat", type=int, default=3, help="clean builds per variant, in rotation (default 3)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_bench_filters)

    from fexaot_tool import cli_runtime
    cli_runtime.register_run(bench_sub)
    register_translate(bench_sub)
