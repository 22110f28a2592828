"""``fexaot validate``: run cached AArch64 blocks against their x86-64 guest bytes (docs/validation.md)."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "validate", help="differential execution of a cache's blocks against their guest bytes (unicorn x86 vs ARM64)",
        description="Run each sampled block of CACHE on unicorn x86-64 (its guest bytes) and on unicorn ARM64 "
                    "(its cached code) from the same random and edge-case states, and report every "
                    "difference in registers, defined flags, memory writes, next RIP or exit reason. "
                    "Exit code 1 when any block disagrees.")
    p.add_argument("cache", help="a .fexcache file (per-object cache or bundle)")
    p.add_argument("--rootfs", default="/", help="where to look for the modules' ELF files (default: /)")
    p.add_argument("--elf", action="append", default=[], metavar="FILE",
                   help="an ELF file a module was built from (repeatable); checked by content hash")
    p.add_argument("--sample", type=int, default=None, metavar="N",
                   help="validate a random sample of N blocks (default: every block)")
    p.add_argument("--states", type=int, default=20, metavar="K", help="input states per block (default: 20)")
    p.add_argument("--seed", type=int, default=0, metavar="S",
                   help="seed of the sample and the states: the same seed reproduces a run (default: 0)")
    p.add_argument("--x87", action="store_true",
                   help="validate only blocks with an instruction that touches x87 state (before --sample)")
    p.add_argument("--block", action="append", default=[], metavar="ADDR",
                   help="validate only the block at this guest offset, or MODULE:OFFSET (repeatable)")
    p.add_argument("--show", type=int, default=10, metavar="M", help="mismatches printed in full (default: 10)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_cmd_validate)


def _cmd_validate(args: argparse.Namespace) -> int:
    from fexaot_tool.errors import FexaotError
    from fexaot_tool.validate.cache_check import validate_cache

    if args.states < 1 or (args.sample is not None and args.sample < 1):
        raise FexaotError(args.cache, "--states and --sample must be at least 1")
    report = validate_cache(args.cache, rootfs=args.rootfs, elves=args.elf, sample=args.sample,
                            states=args.states, seed=args.seed, blocks=args.block, x87_only=args.x87)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
        return 0 if report.ok else 1
    for m in report.mismatches[:args.show]:
        print(f"MISMATCH {m.module} +{m.guest_offset:#x} (at {m.guest_address:#x}, load base {m.load_base:#x}): "
              f"{m.failing_cases} of {m.cases} states")
        for line in m.instructions:
            print(f"  x86   {line}")
        print(f"  guest bytes   {m.guest_bytes}")
        print(f"  aarch64 code  {m.code}")
        if m.state is not None:
            print("  state  " + " ".join(f"{k}={v}" for k, v in m.state.items()))
        for d in m.differences:
            print(f"  {d.field}: x86 {d.expected}, aarch64 {d.actual}")
    if len(report.mismatches) > args.show:
        print(f"... and {len(report.mismatches) - args.show} more mismatching blocks (--show, --json)")
    reasons = _counter_text(s.reason for s in report.skipped_blocks)
    print(f"modules: {', '.join(report.modules) or 'none'}")
    print(f"blocks: {report.blocks_in_cache} translated in cache, {report.untranslatable_blocks} untranslatable; "
          f"{report.blocks_sampled} sampled, {report.blocks_validated} validated, "
          f"{len(report.skipped_blocks)} skipped{f' ({reasons})' if reasons else ''}")
    case_skips = ", ".join(f"{k}: {v}" for k, v in sorted(report.cases_skipped.items()))
    print(f"cases: {report.cases_run} run ({report.states_per_block} states per block, seed {report.seed})"
          f"{f', skipped {case_skips}' if case_skips else ''}; {report.microseconds_per_case:.0f} µs per case")
    if report.unicorn_deviations:
        print(f"{report.unicorn_deviations} cases where unicorn x86 disagreed with the translation and the host CPU, "
              f"running the same instructions natively (x87 blocks: or the SDM rule it confirmed, "
              f"docs/validation.md), agreed with the translation (not mismatches)")
    elif not report.native_referee:
        print("the host CPU could not be asked (not x86-64, or ptrace not permitted): unicorn x86 is the only referee")
    print(f"{len(report.mismatches)} mismatching blocks in {report.seconds:.1f} s")
    return 0 if report.ok else 1


def _counter_text(reasons) -> str:
    """Skip reasons grouped by their kind (the text before the first colon; --json has each in full)."""
    from collections import Counter

    return ", ".join(f"{reason}: {n}" for reason, n in Counter(r.split(":")[0] for r in reasons).most_common())
