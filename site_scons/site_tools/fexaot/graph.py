"""From rootfs files to SCons nodes: one per-object target per ELF file, one bundle per app.

Every rootfs file becomes a source node exactly once, under its canonical path
inside the rootfs (symlinks resolved inside the rootfs), so ``python3`` and
``python3.11`` share one object, and a library is compiled once however many
bundles contain it.
"""

from __future__ import annotations

import os
import sys

import SCons.Errors
import SCons.Subst

from fexaot_tool.cache.key import FileIdCache, ModuleIdentity
from fexaot_tool.elf.closure import resolve_closure
from fexaot_tool.elf.rootfs import Rootfs
from fexaot_tool.errors import FexaotError

from .profiles import ProfileInputs, hot_set_target

FILTERS = ("verify", "speed-profile", "speed")


class FexaotGraph:
    def __init__(self, env, rootfs_dir: str, out_dir, fileids: FileIdCache, progress,
                 profiles: ProfileInputs | None = None) -> None:
        self.env = env
        try:
            self.rootfs = Rootfs(rootfs_dir)
        except FexaotError as e:
            raise SCons.Errors.UserError(str(e)) from None
        self.out_dir = out_dir
        self.fileids = fileids
        self.progress = progress
        self.profiles = profiles or ProfileInputs()
        self._objects: dict[str, object] = {}
        self._identities: dict[str, ModuleIdentity] = {}
        self._filters: dict[str, tuple[str, str]] = {}  # guest path -> (filter, the target that chose it)
        self._warned_no_profiles = False

    def add_profile_dir(self, path: str, named_by: str) -> None:
        if any(f == "speed-profile" for f, _ in self._filters.values()):
            # Snapshots already declared would miss this directory's files.
            raise SCons.Errors.UserError(f"{path}: profile directories must be named before any target is declared")
        self.profiles.add_dir(path, named_by)

    def object_target(self, guest_path: str, filter: str | None = None, who: str = "the command line"):
        """The per-object cache node for a canonical guest path (created once).

        ``filter`` (default ``$FILTER``) is the target's compiler filter; one
        object cannot be asked for with two filters in one build.
        """
        filter = filter or self.env.subst("$FILTER")
        if filter not in FILTERS:
            raise SCons.Errors.UserError(f"{who}: unknown filter {filter!r} (choose {', '.join(FILTERS)})")
        target = self._objects.get(guest_path)
        if target is not None:
            chosen, chooser = self._filters[guest_path]
            if chosen != filter:
                raise SCons.Errors.UserError(
                    f"{guest_path} is needed by {chooser} with filter {chosen} and by {who} with filter {filter}: "
                    f"one cache has one filter (give FILTER=... or make the targets agree)")
            return target
        host_path = self.rootfs.host_path(guest_path)
        # env.fs.File, not env.File: a '$' in a file name must not be substituted.
        source = self.env.fs.File(host_path)
        # A Literal is neither substituted ('$' in a file name) nor split (spaces)
        # when SCons puts it on a command line or a progress line.
        source.attributes.guest_path = SCons.Subst.Literal(guest_path)
        try:
            identity = self.fileids.identity(host_path)
        except OSError as e:
            raise SCons.Errors.UserError(f"{guest_path}: cannot read: {e.strerror}") from None
        # The content signature SCons stores and compares for this source: its
        # identity, never its mtime (see the module docstring of the tool).
        source.get_ninfo().csig = identity.content_hash.hex()
        self._identities[guest_path] = identity
        target_path = os.path.join(self.out_dir.abspath, "objects", guest_path.lstrip("/") + ".fexcache")
        if filter == "speed-profile":
            if not self.profiles.dirs and not self._warned_no_profiles:
                self._warned_no_profiles = True
                print("fexaot: FILTER=speed-profile without a profile directory (PROFILE_DIR, or profiles in a "
                      "target file): the caches get no code", file=sys.stderr)
            # The second source: the module's hot-set snapshot, which changes only
            # when the profiles gain enough (profiles.py).
            snapshot = hot_set_target(self.env, self.profiles, self.out_dir.abspath, guest_path, identity,
                                      os.path.basename(host_path))
            target = self.env.FexaotProfiledObject(target=self.env.fs.File(target_path), source=[source, snapshot],
                                                   FILTER=filter)[0]
        else:
            target = self.env.FexaotObject(target=self.env.fs.File(target_path), source=source, FILTER=filter)[0]
        self._objects[guest_path] = target
        self._filters[guest_path] = (filter, who)
        self.progress.add(target)
        return target

    def objects(self) -> list[tuple[str, object]]:
        """(canonical guest path, per-object target) of every object in the graph, by path."""
        return sorted(self._objects.items(), key=lambda item: item[0])

    def identity(self, guest_path: str) -> ModuleIdentity:
        """The identity the node of ``guest_path`` was given (its content signature)."""
        return self._identities[guest_path]

    def requested_object(self, guest_path: str, filter: str | None = None):
        """An object target asked for by name: the name must be the canonical path."""
        try:
            canonical = self.rootfs.resolve(guest_path)
        except FexaotError as e:
            raise SCons.Errors.UserError(str(e)) from None
        if canonical != guest_path:
            wanted = os.path.relpath(os.path.join(self.out_dir.abspath, "objects", canonical.lstrip("/") + ".fexcache"))
            raise SCons.Errors.UserError(f"{guest_path} is a link to {canonical} in ROOTFS; ask for {wanted}")
        return self.object_target(canonical, filter, f"cache/objects{canonical}.fexcache")

    def app(self, name: str, program: str, filter: str | None = None):
        """Bundle of ``program`` and its whole dependency closure."""
        bundle_path = os.path.join(self.out_dir.abspath, f"{name}.fexcache")
        try:
            guest = self.rootfs.which(program) if "/" not in program else self.rootfs.resolve(program)
            if guest is None:
                raise FexaotError(f"{bundle_path}", f"program {program!r} not found on the PATH of ROOTFS {self.rootfs.root}")
            closure = resolve_closure(self.rootfs, guest)
        except FexaotError as e:
            raise SCons.Errors.UserError(str(e)) from None
        if closure.missing:
            missing = ", ".join(f"{m.name} (needed by {m.needed_by})" for m in closure.missing)
            raise SCons.Errors.UserError(f"{guest}: libraries not found in ROOTFS {self.rootfs.root}: {missing}")
        objects = [self.object_target(path, filter, f"app {name}") for path in closure.paths]
        bundle = self.env.FexaotBundle(target=self.env.fs.File(bundle_path), source=objects)
        self.progress.add(bundle[0])
        return bundle

    def file_set(self, name: str, dirs: list[str], filter: str | None = None):
        """Per-object caches for every x86-64 ELF executable or library under ``dirs``."""
        try:
            paths = list(self.rootfs.walk_elf_files(dirs))
        except FexaotError as e:
            raise SCons.Errors.UserError(str(e)) from None
        nodes = [self.object_target(p, filter, f"set {name}") for p in paths]
        return self.env.Alias(name, nodes)

    def save(self) -> None:
        os.makedirs(self.out_dir.abspath, exist_ok=True)
        try:
            self.fileids.save()
        except FexaotError as e:
            raise SCons.Errors.UserError(str(e)) from None
