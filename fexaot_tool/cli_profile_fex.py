"""``fexaot profile import-fex DIR --rootfs R -o OUT``: FEX-Emu code maps -> a fexaot profile.

The parsing and attribution are :mod:`fexaot_tool.profile.fex`; this module
gives them the rootfs (guest paths -> files, fexaot identities, where each
file's first mapping starts) and prints what was matched how.
"""

from __future__ import annotations

import argparse
import os

# Directories whose files FEX code maps usually name, searched (recursively, under each alias a merged-/usr
# rootfs gives them) to attribute FileIds that have no recorded path.
SEARCH_DIRS = ("/bin", "/sbin", "/lib", "/lib64", "/usr/bin", "/usr/sbin", "/usr/lib", "/usr/lib64",
               "/usr/libexec", "/usr/local/bin", "/usr/local/lib", "/opt")


def register(profile_sub) -> None:
    p = profile_sub.add_parser("import-fex", help="turn FEX-Emu code-map files into a fexaot profile")
    p.add_argument("directory", metavar="DIR", help="a directory of FEX code-map files (or one file)")
    p.add_argument("--rootfs", metavar="R", help="the x86-64 root filesystem FEX ran the programs from (default: /)")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="the profile to write")
    p.add_argument("--json", action="store_true", help="print the attribution of every FEX FileId as JSON")
    p.set_defaults(func=_cmd_import_fex)


def _code_map_files(directory: str) -> list[str]:
    if os.path.isfile(directory):
        return [directory]
    if not os.path.isdir(directory):
        raise FileNotFoundError(directory)
    return sorted(os.path.join(directory, n) for n in os.listdir(directory)
                  if os.path.isfile(os.path.join(directory, n)))


def _cmd_import_fex(args: argparse.Namespace) -> int:
    import json

    from fexaot_tool.cache.atomic import atomic_write
    from fexaot_tool.cache.key import module_identity
    from fexaot_tool.elf import read_elf
    from fexaot_tool.elf.reader import PT_LOAD, ElfError
    from fexaot_tool.elf.rootfs import Rootfs, RootfsError, default_rootfs
    from fexaot_tool.profile import encode
    from fexaot_tool.profile.fex import CodeMapError, ResolvedFile, import_code_maps, parse_code_map

    rootfs = Rootfs(args.rootfs or default_rootfs())
    try:
        files = _code_map_files(args.directory)
    except FileNotFoundError:
        raise CodeMapError(args.directory, "no such file or directory") from None
    maps = []
    for path in files:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise CodeMapError(path, f"cannot read the code map: {e.strerror or e}") from None
        maps.append(parse_code_map(data, path))

    def guest_path(path: str) -> str:
        # FEX records the paths it saw: guest paths, or host paths into its rootfs.
        if rootfs.root != "/" and path.startswith(rootfs.root + "/"):
            return path[len(rootfs.root):]
        return path

    def resolve(path: str) -> ResolvedFile | None:
        try:
            canonical = rootfs.resolve(guest_path(path))
            host = rootfs.host(canonical)
            info = read_elf(host)
        except (RootfsError, ElfError, OSError):
            return None
        loads = [s.p_vaddr for s in info.segments if s.p_type == PT_LOAD]
        if not loads:
            return None
        identity = module_identity(host)
        return ResolvedFile(canonical, identity.file_id, identity.content_hash, os.path.basename(canonical),
                            min(loads) & ~0xFFF)

    def candidates():
        for top in SEARCH_DIRS:
            if not rootfs.is_dir(top):
                continue
            host_top = rootfs.host(rootfs.resolve(top))
            for dirpath, dirnames, filenames in os.walk(host_top):
                dirnames.sort()
                relative = os.path.relpath(dirpath, host_top)
                prefix = top if relative == "." else f"{top}/{relative}"
                for name in sorted(filenames):
                    yield f"{prefix}/{name}"

    result = import_code_maps(maps, resolve, candidates)
    atomic_write(args.output, [encode(result.profile)])
    if args.json:
        print(json.dumps({
            "output": args.output, "code_maps": result.files_read, "truncated": list(result.truncated),
            "modules": len(result.profile.modules),
            "fex_file_ids": [{
                "fex_file_id": f"{a.fex_id:016x}", "path": a.path, "how": a.how, "blocks": a.blocks,
                "file_id": f"{a.file.file_id:016x}" if a.file else None,
            } for a in result.attributions],
        }, indent=2))
    else:
        for a in result.attributions:
            target = f"-> {a.file.guest_path} ({a.file.file_id:016x})" if a.file else "not imported"
            print(f"{a.fex_id:016x} {a.path or '?'}: {a.blocks} blocks, {a.how} {target}")
        for source in result.truncated:
            print(f"{source}: ends inside a record (a writer stopped mid-write); the complete records were read")
        blocks = sum(len(m.blocks) for m in result.profile.modules)
        print(f"{args.output}: {len(result.profile.modules)} modules, {blocks} blocks from {result.files_read} "
              f"code maps")
    return 0
