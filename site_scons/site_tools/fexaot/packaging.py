"""Packaging targets: caches of a Debian package's files, the install layout, .deb and .tar.zst.

What it builds, from what, how:

- ``PACKAGE=libc6,libexpat1``: the per-object caches of every x86-64 ELF file
  the rootfs's dpkg database lists for each package (alias ``package-<name>``).
- ``install``: every per-object cache of the graph copied to
  ``$INSTALL_DIR/<lookup name>`` (``cache.key.lookup_name``), then
  ``$INSTALL_DIR/index`` rewritten from the directory.
- ``deb`` / ``tarball``: ``$FEXAOT_OUT/packages/fexaot-cache-<pkg>_<version>_all.deb``
  (or ``.tar.zst``) of each PACKAGE's caches.

The actions are Python functions (copying and archiving are I/O, not worth a
process each), with a signature that is a fixed text plus the variables that
change the output, not the function's bytecode, so a new Python rebuilds
nothing.  Installed files and the index are never taken from a CacheDir: the
index describes a directory, not its sources.
"""

from __future__ import annotations

import os
import sys

import SCons.Action
import SCons.Builder
import SCons.Errors

from fexaot_tool.cache.key import lookup_name
from fexaot_tool.errors import FexaotError
from fexaot_tool.package.debian import archive_stem, build_deb, build_tarball
from fexaot_tool.package.dpkg import DpkgDatabase, parse_package_list
from fexaot_tool.package.layout import INDEX_NAME, install_cache, write_index

ALIASES = ("install", "deb", "tarball")


class StableAction(SCons.Action.FunctionAction):
    """A Python action whose signature is ``signature`` plus ``varlist``, not the function's bytecode."""

    def __init__(self, function, signature: str, cmdstr: str, varlist: tuple[str, ...] = ()):
        super().__init__(function, {"cmdstr": cmdstr, "varlist": varlist})
        self._signature = signature.encode("ascii")

    def get_presig(self, target, source, env, executor=None):
        return self._signature


def _reported(verb: str, work) -> int:
    """Run ``work``; a user's error becomes one line, as ``fexaot compile`` prints them."""
    try:
        work()
    except FexaotError as e:
        print(f"fexaot {verb}: {e}", file=sys.stderr)
        return 1
    return 0


def _install(target, source, env) -> int:
    dest = target[0].abspath
    return _reported("install", lambda: install_cache(source[0].abspath, os.path.dirname(dest),
                                                      expect_name=os.path.basename(dest)))


def _index(target, source, env) -> int:
    return _reported("index", lambda: write_index(os.path.dirname(target[0].abspath)))


def _deb(target, source, env) -> int:
    package, version, copyright_file = target[0].attributes.fexaot_package
    return _reported("deb", lambda: build_deb(target[0].abspath, package, version, [s.abspath for s in source],
                                              int(env.subst("$SOURCE_DATE_EPOCH")), env.subst("$DEB_MAINTAINER"),
                                              copyright_file))


def _tarball(target, source, env) -> int:
    return _reported("tarball", lambda: build_tarball(target[0].abspath, [s.abspath for s in source],
                                                      int(env.subst("$SOURCE_DATE_EPOCH"))))


install_builder = SCons.Builder.Builder(
    action=StableAction(_install, "fexaot-install 1", "${FEXAOT_PROGRESS.line('install', TARGET, TARGET)}"),
    single_source=True)
index_builder = SCons.Builder.Builder(
    action=StableAction(_index, "fexaot-index 1", "${FEXAOT_PROGRESS.line('index', TARGET, TARGET)}"))
deb_builder = SCons.Builder.Builder(
    action=StableAction(_deb, "fexaot-deb 1", "${FEXAOT_PROGRESS.line('deb', TARGET, TARGET)}",
                        varlist=("SOURCE_DATE_EPOCH", "DEB_MAINTAINER")))
tarball_builder = SCons.Builder.Builder(
    action=StableAction(_tarball, "fexaot-tarball 1", "${FEXAOT_PROGRESS.line('tarball', TARGET, TARGET)}",
                        varlist=("SOURCE_DATE_EPOCH",)))


def declare(env, graph, requested_aliases: list[str]) -> list:
    """Package sets of ``$PACKAGE`` and the requested install/deb/tarball aliases; return the package aliases."""
    packages = parse_package_list(env.subst("$PACKAGE"))
    if not packages and ({"deb", "tarball"} & set(requested_aliases)):
        raise SCons.Errors.UserError("deb and tarball need the packages to archive: PACKAGE=name[,name...]")
    if {"deb", "tarball"} & set(requested_aliases) and not env.subst("$SOURCE_DATE_EPOCH").isdigit():
        raise SCons.Errors.UserError(f"SOURCE_DATE_EPOCH must be seconds since 1970, not {env.subst('$SOURCE_DATE_EPOCH')!r}")
    sets = {}
    if packages:
        try:
            database = DpkgDatabase(graph.rootfs)
            installed = [database.package(p) for p in packages]
        except FexaotError as e:
            raise SCons.Errors.UserError(str(e)) from None
        for package in installed:
            nodes = [graph.object_target(path, None, f"package {package.name}") for path in package.elf_files]
            sets[package] = nodes
            env.Alias(f"package-{package.name}", nodes)
    if "install" in requested_aliases:
        _declare_install(env, graph)
    for alias, builder, suffix in (("deb", "FexaotDeb", "_all.deb"), ("tarball", "FexaotTarball", ".tar.zst")):
        if alias not in requested_aliases:
            continue
        for package, nodes in sets.items():
            if package.version is None and not env.get("PACKAGE_VERSION"):
                raise SCons.Errors.UserError(f"{package.name}: no installed version in the rootfs's "
                                             f"/var/lib/dpkg/status; give PACKAGE_VERSION=...")
            version = env.get("PACKAGE_VERSION") or package.version
            try:
                stem = archive_stem(package.name, version)
            except FexaotError as e:
                raise SCons.Errors.UserError(str(e)) from None
            path = os.path.join(env.Dir("$FEXAOT_OUT").abspath, "packages", stem + suffix)
            archive = getattr(env, builder)(target=env.fs.File(path), source=nodes)[0]
            # The package's own copyright file is shipped as the caches' (they
            # are translations of its code): a dependency, not a source.
            doc = f"/usr/share/doc/{package.name}/copyright"
            copyright_file = graph.rootfs.host_path(doc) if graph.rootfs.is_file(doc) else None
            if copyright_file:
                env.Depends(archive, env.fs.File(copyright_file))
            archive.attributes.fexaot_package = (package.name, version, copyright_file)
            graph.progress.add(archive)
            env.Alias(alias, archive)
    return [env.Alias(f"package-{p.name}")[0] for p in sets]


def _declare_install(env, graph) -> None:
    install_dir = env.Dir("$INSTALL_DIR").abspath
    cid = int(env["FEXAOT_CONFIG_ID"], 16)
    installed = []
    for guest_path, node in graph.objects():
        identity = graph.identity(guest_path)
        name = lookup_name(os.path.basename(guest_path), identity.file_id, cid)
        copy = env.FexaotInstall(target=env.fs.File(os.path.join(install_dir, name)), source=node)[0]
        installed.append(copy)
    index = env.FexaotIndex(target=env.fs.File(os.path.join(install_dir, INDEX_NAME)), source=installed)
    # An installed cache is replaced by rename, never deleted first: a runtime
    # may be opening it.  Neither comes from a CacheDir (see the module doc).
    env.Precious(installed)
    env.NoCache(installed + index)
    for node in installed + index:
        graph.progress.add(node)
    env.Alias("install", installed + index)
