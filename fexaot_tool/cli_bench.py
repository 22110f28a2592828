"""``fexaot bench`` subcommands: measurements that print numbers."""

from __future__ import annotations

import json
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

    from fexaot_tool import cli_runtime
    cli_runtime.register_run(bench_sub)
    register_translate(bench_sub)
