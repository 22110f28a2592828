"""The ``fexaot`` command.

Each subcommand is a small function that parses nothing itself: argparse does
that, the function calls the layer that does the work, and prints.  Errors a
user can cause (:class:`FexaotError`) become one line on stderr and exit code 1.
"""

from __future__ import annotations

import argparse
import sys

from fexaot_tool import __version__
from fexaot_tool.errors import FexaotError


def _cmd_elf(args) -> int:
    import json

    from fexaot_tool.elf import read_elf

    info = read_elf(args.file)
    data = {
        "path": info.path,
        "kind": info.kind,
        "entry": f"{info.e_entry:#x}",
        "interp": info.interp,
        "needed": list(info.needed),
        "soname": info.soname,
        "rpath": info.rpath,
        "runpath": info.runpath,
        "build_id": info.build_id.hex() if info.build_id else None,
        "segments": [
            {"type": f"{s.p_type:#x}", "flags": s.p_flags, "vaddr": f"{s.p_vaddr:#x}", "memsz": s.p_memsz}
            for s in info.segments
        ],
    }
    print(json.dumps(data, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fexaot", description="Ahead-of-time AArch64 translation caches for x86-64 ELF files.")
    parser.add_argument("--version", action="version", version=f"fexaot {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("elf", help="print what the ELF layer reads from a file (JSON)")
    p.add_argument("file")
    p.set_defaults(func=_cmd_elf)

    # Each area registers its own subcommands; the order here is the help order.
    from fexaot_tool import cli_bench, cli_cache, cli_discover, cli_elf, cli_package, cli_runtime, cli_validate

    cli_elf.register(sub)
    cli_cache.register(sub)
    cli_discover.register(sub)
    cli_runtime.register(sub)
    cli_bench.register(sub)
    cli_validate.register(sub)
    cli_package.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except FexaotError as e:
        print(f"fexaot {args.command}: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 141
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
