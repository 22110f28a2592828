"""``fexaot`` subcommands of the discover layer: codemap, codemap-check."""

from __future__ import annotations

import json

# The bar a codemap must meet (docs/codemap.md): `codemap-check --require` fails below it.
REQUIRED_RECALL = 0.999
REQUIRED_PRECISION = 0.9999
REQUIRED_COVERAGE = 0.995


def _cmd_codemap(args) -> int:
    from fexaot_tool.discover import Flag, Reason, build_codemap

    codemap = build_codemap(args.file)
    if args.output:
        with open(args.output, "wb") as f:
            f.write(codemap.encode())
    summary = codemap.summary()
    if args.blocks:
        for b in codemap.blocks:
            reasons = "|".join(r.name.lower() for r in Reason if b.reasons & r)
            flags = "|".join(f.name.lower() for f in Flag if b.flags & f)
            print(f"{b.start:#x} {b.length} {b.instructions} {reasons} {flags}".rstrip())
        return 0
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    _print_summary(args.file, summary)
    return 0


def _print_summary(path: str, summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]{path}[/bold]: {summary['blocks']:,} blocks, {summary['instructions']:,} instructions, "
                  f"{summary['bytes_covered']:,} bytes covered, {summary['fdes']:,} FDE ranges swept")
    console.print(f"unresolved indirect jumps: {summary['unresolved_indirect_jumps']:,}; "
                  f"jump tables: {summary['jump_tables']:,}; rejected seeds: {summary['rejected_seeds']:,}")
    table = Table(title="block starts by reason (a start may have several)")
    table.add_column("seed", justify="left")
    table.add_column("blocks", justify="right")
    table.add_column("edge", justify="left")
    table.add_column("blocks", justify="right")
    seeds, edges = list(summary["seeds"].items()), list(summary["edges"].items())
    for i in range(max(len(seeds), len(edges))):
        seed = seeds[i] if i < len(seeds) else ("", "")
        edge = edges[i] if i < len(edges) else ("", "")
        table.add_row(seed[0], f"{seed[1]:,}" if seed[1] != "" else "", edge[0], f"{edge[1]:,}" if edge[1] != "" else "")
    console.print(table)
    flags = Table(title="blocks by flag")
    flags.add_column("flag")
    flags.add_column("blocks", justify="right")
    for name, n in summary["flags"].items():
        flags.add_row(name, f"{n:,}")
    console.print(flags)
    if summary["degraded_sources"]:
        console.print("degraded seed sources: " + ", ".join(summary["degraded_sources"]))
    for note in summary["notes"]:
        console.print(f"note: {note}", markup=False)


def _cmd_codemap_check(args) -> int:
    from fexaot_tool.discover.check import check_codemap

    report = check_codemap(args.file, args.symbols, find_debug_file=not args.no_debug_file)
    data = report.as_dict()
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        _print_check(data)
    if args.require:
        failed = _failed_bar(report)
        for line in failed:
            print(f"fexaot codemap-check: {args.file}: {line}")
        return 1 if failed else 0
    return 0


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.4f}%"


def _print_check(data: dict) -> None:
    print(f"{data['path']}: codemap built in {data['build_seconds']:.2f} s, {data['blocks']:,} blocks")
    print(f"symbols: {data['symbols'] or 'none (recall and precision not measured)'}")
    if data["symbols"]:
        print(f"function-start recall: {_percent(data['recall'])} "
              f"({data['found_functions']:,} of {data['true_functions']:,} function starts are block starts)")
        for missed in data["missed_functions"][:20]:
            print(f"  missed {missed['address']} {missed['name']}")
        print(f"boundary precision:    {_percent(data['precision'])} "
              f"({data['boundary_block_starts']:,} of {data['verifiable_block_starts']:,} block starts are "
              f"instruction boundaries of the symbol-driven disassembly; "
              f"{data['unverifiable_block_starts']:,} lie outside every symbol's range)")
        false = data["false_block_starts"]
        if false:
            overlapping = data["false_block_starts_overlapping"]
            print(f"  {len(false)} off-boundary block start(s), {overlapping} of them in blocks flagged "
                  f"overlapping: {' '.join(false[:20])}")
    print(f"FDE byte coverage:     {_percent(data['coverage'])} "
          f"({data['covered_fde_bytes']:,} of {data['fde_bytes']:,} bytes inside FDE ranges are in a block)")
    for cause, n in data["uncovered_fde_bytes_by_cause"].items():
        print(f"  uncovered: {n:,} bytes of {cause}")


def _failed_bar(report) -> list[str]:
    failed = []
    if report.recall is not None and report.recall < REQUIRED_RECALL:
        failed.append(f"recall {_percent(report.recall)} below {_percent(REQUIRED_RECALL)}")
    if report.precision is not None and report.precision < REQUIRED_PRECISION:
        failed.append(f"precision {_percent(report.precision)} below {_percent(REQUIRED_PRECISION)}")
    if report.coverage is not None and report.coverage < REQUIRED_COVERAGE:
        failed.append(f"FDE coverage {_percent(report.coverage)} below {_percent(REQUIRED_COVERAGE)}")
    return failed


def register(sub) -> None:
    p = sub.add_parser("codemap", help="static codemap of an ELF file: blocks, seeds, unresolved jumps")
    p.add_argument("file", help="x86-64 ELF executable or shared library")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--blocks", action="store_true", help="print every block: start length instructions reasons flags")
    p.add_argument("--output", metavar="FILE", help="also write the encoded codemap (the cache's CODEMAP section)")
    p.set_defaults(func=_cmd_codemap)

    p = sub.add_parser("codemap-check", help="measure a codemap against symbols: recall, precision, FDE coverage")
    p.add_argument("file", help="x86-64 ELF executable or shared library (stripped or not)")
    p.add_argument("--symbols", metavar="FILE",
                   help="file with the true function symbols: a detached debug file or an unstripped build "
                        "(default: /usr/lib/debug/.build-id/<build-id>.debug when installed)")
    p.add_argument("--no-debug-file", action="store_true", help="do not look for a debug file by build-id")
    p.add_argument("--require", action="store_true",
                   help=(f"exit 1 unless recall >= {REQUIRED_RECALL:.1%}, precision >= {REQUIRED_PRECISION:.2%} "
                         f"and FDE coverage >= {REQUIRED_COVERAGE:.1%} (where measured)").replace("%", "%%"))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_codemap_check)
