"""Named targets: ``targets/<name>.toml`` files describe apps and sets.

An app is a program whose cache bundle ``$FEXAOT_OUT/<name>.fexcache`` holds it
and its whole dependency closure::

    [app]
    program = "python3"     # a path in the rootfs, or a name on its PATH
    default = true          # built by a bare ``scons``

A set is every x86-64 ELF executable and library under some rootfs directories,
one per-object cache each, built by ``scons <name>``::

    [set]
    dirs = ["/usr"]

Either table may also say::

    filter = "speed-profile"   # this target's compiler filter (FILTER= on the command line wins)
    profiles = "profiles/app"  # a directory of *.fexprof files (relative to the project's top)

Every target file's ``profiles`` directory is read whatever is requested:
profiles are per module (FileId), so a library shared by two apps gets one
hot set from both, and its cache does not depend on what a command line names.

Only what the command line asks for is put into the graph, so a null build of
one app does not scan the rootfs.  ``cache/<name>.fexcache`` for a name with no
target file resolves ``name`` on the rootfs's PATH.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass

import SCons.Errors
import SCons.Script


@dataclass(frozen=True)
class TargetSpec:
    name: str
    kind: str  # "app" or "set"
    program: str | None = None
    dirs: tuple[str, ...] = ()
    default: bool = False
    filter: str | None = None  # None: $FILTER
    profiles: str | None = None  # a directory of profiles, relative to the project's top


_FILTERS = ("verify", "speed-profile", "speed")


def load_specs(targets_dir: str) -> dict[str, TargetSpec]:
    specs: dict[str, TargetSpec] = {}
    if not os.path.isdir(targets_dir):
        return specs
    for entry in sorted(os.listdir(targets_dir)):
        if not entry.endswith(".toml"):
            continue
        path = os.path.join(targets_dir, entry)
        name = entry[: -len(".toml")]
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise SCons.Errors.UserError(f"{path}: {e}") from None
        specs[name] = _spec(path, name, data)
    return specs


def _spec(path: str, name: str, data: dict) -> TargetSpec:
    kinds = [k for k in ("app", "set") if k in data]
    if len(kinds) != 1:
        raise SCons.Errors.UserError(f"{path}: needs exactly one of an [app] or a [set] table")
    table = data[kinds[0]]
    default = bool(table.get("default", False))
    filter = table.get("filter")
    if filter is not None and filter not in _FILTERS:
        raise SCons.Errors.UserError(f"{path}: filter must be one of {', '.join(_FILTERS)}, not {filter!r}")
    profiles = table.get("profiles")
    if profiles is not None and (not isinstance(profiles, str) or not profiles):
        raise SCons.Errors.UserError(f"{path}: profiles must be a directory name")
    if kinds[0] == "app":
        program = table.get("program", name)
        if not isinstance(program, str) or not program:
            raise SCons.Errors.UserError(f"{path}: [app] program must be a non-empty string")
        return TargetSpec(name, "app", program=program, default=default, filter=filter, profiles=profiles)
    dirs = table.get("dirs")
    if not isinstance(dirs, list) or not dirs or not all(isinstance(d, str) and d.startswith("/") for d in dirs):
        raise SCons.Errors.UserError(f"{path}: [set] dirs must be a list of absolute paths in the rootfs")
    return TargetSpec(name, "set", dirs=tuple(dirs), default=default, filter=filter, profiles=profiles)


def declare(env, targets_dir: str, requested: list[str], use_defaults: bool = True) -> list:
    """Put the requested targets (or, if ``use_defaults``, the defaults) into the graph; return the default nodes."""
    specs = load_specs(targets_dir)
    out_dir = env.Dir("$FEXAOT_OUT")
    top = env.Dir("#").abspath
    objects_dir = os.path.join(out_dir.abspath, "objects")
    for spec in specs.values():
        if spec.profiles:
            env.FexaotProfileDir(os.path.join(top, spec.profiles), os.path.join(targets_dir, f"{spec.name}.toml"))
    # FILTER= given on the command line is for everything; otherwise a target's own.
    command_line_filter = "FILTER" in SCons.Script.ARGUMENTS

    def build(spec: TargetSpec):
        filter = None if command_line_filter else spec.filter
        if spec.kind == "app":
            bundle = env.FexaotApp(spec.name, spec.program, filter)
            env.Alias(spec.name, bundle)
            return bundle
        return env.FexaotSet(spec.name, list(spec.dirs), filter)

    for request in requested:
        path = os.path.normpath(os.path.join(top, request))
        if path.startswith(objects_dir + os.sep) and path.endswith(".fexcache"):
            guest = "/" + os.path.relpath(path, objects_dir)[: -len(".fexcache")]
            env.FexaotObjectFor(guest)
        elif os.path.dirname(path) == out_dir.abspath and path.endswith(".fexcache"):
            name = os.path.basename(path)[: -len(".fexcache")]
            spec = specs.get(name) or TargetSpec(name, "app", program=name)
            build(spec)
        elif request in specs:
            build(specs[request])
    if requested or not use_defaults:
        return []
    return [build(spec) for spec in specs.values() if spec.default]
