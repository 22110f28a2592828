"""``fexaot bench translate FILE``: translation throughput and code quality on a real ELF file.

Prints guest instructions translated per second on one core (decode, flag
liveness, lowering to IR, the passes, register allocation, encoding; the
codemap is built first and not timed), AArch64 instructions per guest
instruction (literal pools excluded) with and without the IR passes and what
each pass did, coverage, and whether a second translation gives the same bytes.
"""

from __future__ import annotations

import argparse
import json
import time


def run_translate_benchmark(path: str, memory_order: str, repeat: int, profile: bool) -> dict:
    from fexaot_tool.discover import build_codemap
    from fexaot_tool.discover.elfimage import ElfImage
    from fexaot_tool.translate import BlockRequest, GuestCode, translate_module
    from fexaot_tool.translate.passes import PassStats

    image = ElfImage(path)
    ranges = tuple((r.start, image.data[r.file_offset:r.file_offset + r.end - r.start]) for r in image.code_ranges)
    loads = [s.p_vaddr for s in image.loads]
    guest = GuestCode(min(loads) & ~0xFFF if loads else 0, ranges)
    codemap = build_codemap(path)
    blocks = [BlockRequest(b.start, b.length) for b in codemap.blocks]
    times = []
    results = []
    for _ in range(repeat):
        if profile:
            import cProfile
            import pstats

            profiler = cProfile.Profile()
            profiler.enable()
        start = time.perf_counter()
        results.append(translate_module(guest, blocks, memory_order))
        times.append(time.perf_counter() - start)
        if profile:
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(15)
    result = results[0]
    # What the IR passes do: the same blocks without them, and what each pass changed.
    stats = PassStats()
    translate_module(guest, blocks, memory_order, stats=stats)
    unoptimised = translate_module(guest, blocks, memory_order, optimise=False)
    guest_instructions = sum(b.guest_instructions for b in result.blocks)
    host_instructions = sum(b.host_instructions for b in result.blocks)
    partial = {u.start for u in result.untranslated}
    full = [b for b in result.blocks if b.start not in partial]
    full_guest = sum(b.guest_instructions for b in full)
    full_host = sum(b.host_instructions for b in full)
    best = min(times)
    return {
        "file": path,
        "memory_order": memory_order,
        "codemap_blocks": len(blocks),
        "codemap_instructions": sum(b.instructions for b in codemap.blocks),
        "blocks_with_code": len(result.blocks),
        "blocks_in_full": len(full),
        "percent_in_full": round(100.0 * len(full) / len(blocks), 2) if blocks else 0.0,
        "guest_instructions_translated": guest_instructions,
        "aarch64_instructions": host_instructions,
        "aarch64_per_guest_instruction": round(host_instructions / guest_instructions, 3) if guest_instructions else 0,
        "aarch64_per_guest_instruction_full_blocks": round(full_host / full_guest, 3) if full_guest else 0,
        "aarch64_instructions_without_passes": sum(b.host_instructions for b in unoptimised.blocks),
        "passes_saved_percent": round(100.0 * (1 - host_instructions / max(
            1, sum(b.host_instructions for b in unoptimised.blocks))), 2),
        "passes": {name: getattr(stats, name)
                   for name in ("folded", "immediates", "copies", "branches", "unreachable", "dead")},
        "code_bytes": len(result.code),
        "relocations": len(result.relocations),
        "seconds": [round(t, 3) for t in times],
        "guest_instructions_per_second": round(guest_instructions / best),
        "deterministic": all(r == result for r in results[1:]) if len(results) > 1 else None,
    }


def _cmd_bench_translate(args: argparse.Namespace) -> int:
    report = run_translate_benchmark(args.file, args.memory_order, args.repeat, args.profile)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        width = max(map(len, report))
        for key, value in report.items():
            print(f"{key:<{width}}  {value}")
    return 0


def register_translate(bench_sub) -> None:
    p = bench_sub.add_parser("translate", help="translation throughput and AArch64 instructions per guest instruction")
    p.add_argument("file", help="an x86-64 ELF file (a host path)")
    p.add_argument("--memory-order", choices=("tso", "relaxed"), default="tso")
    p.add_argument("--repeat", type=int, default=2, help="translations to time (the best counts; default 2)")
    p.add_argument("--profile", action="store_true", help="print the cProfile top functions of each run")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_bench_translate)
