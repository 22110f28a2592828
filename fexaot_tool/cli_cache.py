"""``fexaot`` subcommands of the cache layer: compile, bundle, inspect, key.

``add_config_arguments`` / ``config_from_args`` are the one way a subcommand
takes a :class:`TranslatorConfig` from the command line, so every command that
needs a ConfigId computes the same one.
"""

from __future__ import annotations

import argparse
import json
import os

from fexaot_tool.cache.key import (
    DEFAULT_CPU_FEATURES, KNOWN_CPU_FEATURES, MEMORY_ORDERS, TranslatorConfig, config_id, lookup_name,
    module_identity,
)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Options for every field of TranslatorConfig a user may choose."""
    parser.add_argument("--memory-order", choices=MEMORY_ORDERS, default="tso",
                        help="guest memory ordering of the generated code (default: tso)")
    parser.add_argument("--cpu-features", default=",".join(DEFAULT_CPU_FEATURES), metavar="LIST",
                        help=f"comma-separated target AArch64 features (default: {','.join(DEFAULT_CPU_FEATURES)}; "
                             f"known: {','.join(sorted(KNOWN_CPU_FEATURES))})")


def config_from_args(args: argparse.Namespace) -> TranslatorConfig:
    features = tuple(f.strip() for f in args.cpu_features.split(",") if f.strip())
    return TranslatorConfig(cpu_features=features, memory_order=args.memory_order)


def _cmd_compile(args: argparse.Namespace) -> int:
    from fexaot_tool.cache.compile import compile_file
    from fexaot_tool.cache.format import Filter
    from fexaot_tool.errors import FexaotError

    config = config_from_args(args)
    if args.config_id is not None and int(args.config_id, 16) != config_id(config):
        # The build graph computed the ConfigId with other code than this process
        # runs (a half-updated install): refuse rather than mislabel a cache.
        raise FexaotError(args.output, f"ConfigId mismatch: the build expects {args.config_id}, "
                                       f"this fexaot computes {config_id(config):016x}")
    filter = Filter.from_label(args.filter)
    profile = None
    if filter == Filter.SPEED_PROFILE:
        from fexaot_tool.profile import read_profile

        if not args.profile:
            raise FexaotError(args.file, "--filter speed-profile needs --profile FILE (a fexaot profile)")
        profile = read_profile(args.profile)  # a damaged file is one line naming it
    elif args.profile:
        raise FexaotError(args.profile, f"--profile is read only by --filter speed-profile, not {args.filter}")
    compile_file(args.file, args.output, config, filter, display_name=args.name, profile=profile,
                 hot_threshold=args.hot_threshold)
    return 0


def _cmd_bundle(args: argparse.Namespace) -> int:
    from fexaot_tool.cache.writer import write_bundle

    write_bundle(args.output, args.sources)
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from rich.console import Console

    from fexaot_tool.cache.inspect import as_json, render, summarize
    from fexaot_tool.cache.reader import CacheFile

    if args.block is not None:
        return _inspect_block(args)
    with CacheFile.open(args.file) as cache:
        if args.verify:
            cache.verify_all()
        summary = summarize(cache, verified=args.verify)
    if args.json:
        print(json.dumps(as_json(summary), indent=2))
    else:
        render(summary, Console())
    return 0


def _inspect_block(args: argparse.Namespace) -> int:
    from rich.console import Console

    from fexaot_tool.cache.format import SectionKind
    from fexaot_tool.cache.inspect import block_listing, render_block
    from fexaot_tool.cache.reader import CacheFile
    from fexaot_tool.errors import FexaotError

    address = int(args.block, 0)
    with CacheFile.open(args.file) as cache:
        modules = [cache.module(e.file_id) for e in cache.modules]
        if args.module:
            modules = [m for m in modules if m.name == args.module]
            if not modules:
                raise FexaotError(args.file, f"no module named {args.module!r}")
        elif len(modules) > 1:
            names = ", ".join(m.name for m in modules)
            raise FexaotError(args.file, f"a bundle of {len(modules)} modules: choose one with --module ({names})")
        module = modules[0]
        offset = address - module.facts.image_base
        guest_bytes = None
        if args.elf:
            from fexaot_tool.cache.reader import check_module_matches
            from fexaot_tool.discover.elfimage import ElfImage

            check_module_matches(module, args.elf)  # decode the bytes the code was made from, not others
            entry = module.find_block(offset)
            size = max((c.length for c in module.records(SectionKind.CODEMAP) if c.start == offset), default=0)
            size = size or (entry.guest_size if entry else 0)
            guest_bytes = ElfImage(args.elf).read(address, size) if size else None
        listing = block_listing(module, offset, guest_bytes)
    if listing.entry is None and listing.untranslatable is None:
        raise FexaotError(args.file, f"{module.name} has no translated or untranslatable block at {address:#x}")
    render_block(listing, Console(width=160))
    return 0


def _cmd_key(args: argparse.Namespace) -> int:
    from fexaot_tool.elf import read_elf

    read_elf(args.file)  # only an x86-64 ELF file has a cache; say so clearly otherwise
    config = config_from_args(args)
    identity = module_identity(args.file)
    cid = config_id(config)
    print(f"FileId       {identity.file_id:016x}")
    print(f"ConfigId     {cid:016x}")
    print(f"lookup name  {lookup_name(os.path.basename(args.file), identity.file_id, cid)}")
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def register(sub) -> None:
    from fexaot_tool.cache.format import Filter
    from fexaot_tool.profile.hotset import DEFAULT_HOT_THRESHOLD

    p = sub.add_parser("compile", help="build the per-object cache of one ELF file")
    p.add_argument("file", help="the ELF file (a host path)")
    p.add_argument("-o", "--output", required=True, help="the cache file to write")
    p.add_argument("--filter", choices=[f.label for f in Filter], default="speed",
                   help="which blocks the cache holds (default: speed)")
    p.add_argument("--profile", metavar="FILE",
                   help="speed-profile: the profile whose hot blocks to translate (fexaot run --profile-out, "
                        "fexaot profile merge)")
    p.add_argument("--hot-threshold", type=_positive, default=DEFAULT_HOT_THRESHOLD, metavar="N",
                   help=f"speed-profile: a block is hot if the profile saw it run at least N times "
                        f"(default: {DEFAULT_HOT_THRESHOLD})")
    p.add_argument("--name", help="how to name the file in messages (e.g. its path inside the rootfs)")
    p.add_argument("--config-id", help="fail unless the options give this ConfigId (hex); the build graph passes it")
    add_config_arguments(p)
    p.set_defaults(func=_cmd_compile)

    p = sub.add_parser("bundle", help="combine per-object caches into one bundle file")
    p.add_argument("sources", nargs="+", help="per-object cache files")
    p.add_argument("-o", "--output", required=True, help="the bundle file to write")
    p.set_defaults(func=_cmd_bundle)

    p = sub.add_parser("inspect", help="summarize a cache file (header and modules)")
    p.add_argument("file")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--verify", action="store_true", help="also check every section entry of every module")
    p.add_argument("--block", metavar="ADDR", help="show one block: guest instructions beside its AArch64 code")
    p.add_argument("--module", help="with --block: the module of a bundle (its file name)")
    p.add_argument("--elf", help="with --block: the module's ELF file, to decode the guest instructions")
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser("key", help="print an ELF file's FileId, the ConfigId and the runtime cache name")
    p.add_argument("file")
    add_config_arguments(p)
    p.set_defaults(func=_cmd_key)
