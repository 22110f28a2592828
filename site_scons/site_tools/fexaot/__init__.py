"""SCons tool: every ELF file of an x86-64 rootfs is a source node whose target is a cache.

What it builds, from what, how:

- ``FexaotObject``: ``$FEXAOT_OUT/objects/<path in rootfs>.fexcache`` from one ELF
  file of the rootfs, by ``fexaot compile`` run as a subprocess (SCons runs
  command actions in parallel under ``-j``; Python-function actions would share
  the GIL).
- ``FexaotBundle``: ``$FEXAOT_OUT/<name>.fexcache`` from the per-object caches of a
  program and its whole dependency closure, by ``fexaot bundle``.  A library's
  cache is built once and shared by every bundle that needs it.
- ``FILTER=speed-profile``: the object's second source is its hot-set snapshot
  ``$FEXAOT_OUT/profiles/<path in rootfs>.fexprof`` (``FexaotHotSet``, made from
  the profile files of ``PROFILE_DIR`` and the targets' ``profiles``), and the
  compile reads it: see :mod:`.profiles`.
- ``PACKAGE=...`` sets, ``install`` (lookup-named caches and an index in
  ``$INSTALL_DIR``), ``deb`` and ``tarball``: see :mod:`.packaging`.

Rebuild decisions are by content.  The content signature of a rootfs file is its
identity from ``fexaot_tool.cache.key`` (xxh3-128 of the full content), set on the
node when it is created, so SCons never trusts an mtime and never md5-hashes the
rootfs.  The action signature holds the ConfigId and the filter but not the
interpreter or any host path, so a new Python does not rebuild anything while a
new translator version or codegen option rebuilds everything.

The tool holds no translation logic: it calls ``fexaot_tool``'s public API to
find files and keys and runs the ``fexaot`` CLI to build.
"""

from __future__ import annotations

import os
import sys

import SCons.Action
import SCons.Builder
import SCons.Errors
import SCons.Script

_TOOL_DIR = os.path.dirname(os.path.realpath(__file__))
PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(_TOOL_DIR)))
if PROJECT_ROOT not in sys.path:
    sys.path.insert(0, PROJECT_ROOT)

from fexaot_tool.cache.key import FileIdCache, TranslatorConfig, config_id  # noqa: E402
from fexaot_tool.errors import FexaotError  # noqa: E402
from fexaot_tool.profile.hotset import (  # noqa: E402
    DEFAULT_HOT_THRESHOLD, DEFAULT_MIN_NEW_BLOCKS, DEFAULT_MIN_NEW_PERCENT,
)
from fexaot_tool.package.debian import DEFAULT_MAINTAINER, DEFAULT_SOURCE_DATE_EPOCH  # noqa: E402

from . import packaging, profiles, targets  # noqa: E402
from .graph import FexaotGraph  # noqa: E402
from .progress import BuildProgress  # noqa: E402

# Parts of a command inside $( $) are left out of the action signature: the
# interpreter (upgrading Python must not rebuild) and host paths (a second
# checkout with the rootfs elsewhere must get the same signatures, so a shared
# CacheDir serves it).  What changes the output is outside: ConfigId, filter.
_COMPILE = (
    "$( $FEXAOT_PYTHON -m fexaot_tool compile $) "
    "--config-id $FEXAOT_CONFIG_ID --memory-order $MEMORY_ORDER --filter $FILTER "
    "$( --name ${SOURCE.attributes.guest_path} -o $TARGET $SOURCE $)"
)
# speed-profile: the snapshot (second source) is a host path; the threshold it was
# made with is in the signature (the snapshot's content says the rest).
_COMPILE_PROFILED = (
    "$( $FEXAOT_PYTHON -m fexaot_tool compile $) "
    "--config-id $FEXAOT_CONFIG_ID --memory-order $MEMORY_ORDER --filter speed-profile --hot-threshold $HOT_THRESHOLD "
    "$( --name ${SOURCE.attributes.guest_path} --profile ${SOURCES[1]} -o $TARGET $SOURCE $)"
)
# A bundle is a byte copy of its objects' regions: its sources' signatures say it all.
_BUNDLE = "$( $FEXAOT_PYTHON -m fexaot_tool bundle -o $TARGET $SOURCES $)"

# SCons would make a command's first word (the interpreter) an implicit
# dependency of every target: a Python upgrade would rebuild everything.
_NO_INTERPRETER_DEPENDENCY = {"IMPLICIT_COMMAND_DEPENDENCIES": 0}

object_builder = SCons.Builder.Builder(
    action=SCons.Action.Action(_COMPILE, cmdstr="$FEXAOT_COMPILE_COMSTR"),
    suffix=".fexcache",
    single_source=True,
    **_NO_INTERPRETER_DEPENDENCY,
)
profiled_object_builder = SCons.Builder.Builder(
    action=SCons.Action.Action(_COMPILE_PROFILED, cmdstr="$FEXAOT_COMPILE_COMSTR"),
    suffix=".fexcache",
    **_NO_INTERPRETER_DEPENDENCY,
)
bundle_builder = SCons.Builder.Builder(
    action=SCons.Action.Action(_BUNDLE, cmdstr="$FEXAOT_BUNDLE_COMSTR"),
    suffix=".fexcache",
    **_NO_INTERPRETER_DEPENDENCY,
)


def _config(env) -> TranslatorConfig:
    return TranslatorConfig(memory_order=env.subst("$MEMORY_ORDER"))


def _graph(env) -> FexaotGraph:
    """The per-environment graph helper, created on first use (after ROOTFS is known)."""
    graph = env.get("_FEXAOT_GRAPH")
    if graph is None:
        rootfs = env.subst("$ROOTFS")
        out = env.Dir("$FEXAOT_OUT")
        fileids = FileIdCache(os.path.join(out.abspath, ".fexaot-fileids"))
        graph = FexaotGraph(env, rootfs, out, fileids, env["FEXAOT_PROGRESS"], env["FEXAOT_PROFILE_INPUTS"])
        env["_FEXAOT_GRAPH"] = graph
        if env.get("PROFILE_DIR"):
            graph.add_profile_dir(env.Dir("$PROFILE_DIR").abspath, "PROFILE_DIR")
    return graph


def FexaotApp(env, name: str, program: str | None = None, filter: str | None = None):
    """Bundle ``$FEXAOT_OUT/<name>.fexcache`` for ``program`` (default: ``name`` on PATH)."""
    return _graph(env).app(name, program or name, filter)


def FexaotObjectFor(env, guest_path: str):
    """The per-object cache of one file, named by its canonical path in the rootfs."""
    return _graph(env).requested_object(guest_path)


def FexaotTargets(env, targets_dir: str, requested: list[str]) -> list:
    """Declare what ``requested`` and ``$PACKAGE`` name (or the default targets); return the defaults.

    ``install``, ``deb`` and ``tarball`` act on the rest: ``scons install`` installs
    the default targets' caches, ``scons install PACKAGE=libc6`` libc6's.
    """
    aliases = [r for r in requested if r in packaging.ALIASES]
    rest = [r for r in requested if r not in packaging.ALIASES]
    has_packages = bool(env.subst("$PACKAGE").strip())
    defaults = targets.declare(env, targets_dir, rest, use_defaults=not has_packages)
    if has_packages or aliases:
        package_aliases = packaging.declare(env, _graph(env), aliases)
        if requested:
            # Named targets replace the defaults; PACKAGE adds to what is named.
            SCons.Script.BUILD_TARGETS.extend(package_aliases)
        else:
            defaults += package_aliases
    FexaotFinish(env)
    return defaults


def FexaotSet(env, name: str, dirs: list[str], filter: str | None = None):
    """Per-object caches for every x86-64 ELF file under ``dirs``; alias ``name``."""
    return _graph(env).file_set(name, dirs, filter)


def FexaotProfileDir(env, path: str, named_by: str):
    """Read the ``*.fexprof`` files of ``path`` too (before any target is declared)."""
    _graph(env).add_profile_dir(path, named_by)


def FexaotFinish(env) -> None:
    """Save the identity memo and start the progress display; call once, at the end."""
    graph = env.get("_FEXAOT_GRAPH")
    if graph is not None:
        graph.save()
    SCons.Script.Progress(env["FEXAOT_PROGRESS"].evaluated, interval=1)


def generate(env) -> None:
    env.SetDefault(
        FEXAOT_OUT="#cache",
        FILTER="speed",
        MEMORY_ORDER="tso",
        FEXAOT_PYTHON=sys.executable,
        FEXAOT_COMPILE_COMSTR="${FEXAOT_PROGRESS.line('compile', SOURCE.attributes.guest_path, TARGET)}",
        FEXAOT_BUNDLE_COMSTR="${FEXAOT_PROGRESS.line('bundle', TARGET, TARGET)}",
        PACKAGE="",
        INSTALL_DIR="$FEXAOT_OUT/installed",
        PROFILE_DIR="",
        HOT_THRESHOLD=DEFAULT_HOT_THRESHOLD,
        MIN_NEW_BLOCKS=DEFAULT_MIN_NEW_BLOCKS,
        MIN_NEW_PERCENT=DEFAULT_MIN_NEW_PERCENT,
        SOURCE_DATE_EPOCH=os.environ.get("SOURCE_DATE_EPOCH", DEFAULT_SOURCE_DATE_EPOCH),
        DEB_MAINTAINER=DEFAULT_MAINTAINER,
    )
    if "ROOTFS" not in env:
        from fexaot_tool.elf.rootfs import default_rootfs

        try:
            env["ROOTFS"] = default_rootfs()
        except FexaotError as e:
            raise SCons.Errors.UserError(str(e)) from None
    env["FEXAOT_PROGRESS"] = BuildProgress()
    env["FEXAOT_PROFILE_INPUTS"] = profiles.ProfileInputs()
    env["FEXAOT_CONFIG_ID"] = f"{config_id(_config(env)):016x}"
    # The subprocess must import the same fexaot_tool as this tool did.
    env["ENV"]["PYTHONPATH"] = os.pathsep.join(filter(None, [PROJECT_ROOT, env["ENV"].get("PYTHONPATH")]))
    env.Append(BUILDERS={"FexaotObject": object_builder, "FexaotProfiledObject": profiled_object_builder,
                         "FexaotHotSet": profiles.hot_set_builder, "FexaotBundle": bundle_builder,
                         "FexaotInstall": packaging.install_builder, "FexaotIndex": packaging.index_builder,
                         "FexaotDeb": packaging.deb_builder, "FexaotTarball": packaging.tarball_builder})
    env.AddMethod(FexaotApp)
    env.AddMethod(FexaotSet)
    env.AddMethod(FexaotProfileDir)
    env.AddMethod(FexaotObjectFor)
    env.AddMethod(FexaotTargets)


def exists(env) -> bool:
    return True
