"""The incremental rebuild a package-manager trigger or a timer runs: ``scons install``, then gc.

A state directory holds the build's own SCons project (links to this
checkout's SConstruct, site_scons and targets, and its ``.sconsign`` and
per-object caches), so each run translates only the ELF files whose content
changed since the last one, installs their caches under lookup names into the
cache directory, and collects what no file of the rootfs needs any more.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from fexaot_tool.errors import FexaotError
from fexaot_tool.package.gc import GcReport, collect

SOURCE_TREE = Path(__file__).resolve().parent.parent.parent


class RebuildError(FexaotError):
    """The build step of a rebuild failed."""


@dataclass(frozen=True)
class RebuildResult:
    returncode: int
    gc: GcReport | None


def prepare_state_dir(state_dir: str, source_tree: Path = SOURCE_TREE) -> None:
    if not (source_tree / "SConstruct").is_file():
        raise RebuildError(str(source_tree), "no SConstruct here: the rebuild needs fexaot's build files")
    try:
        os.makedirs(state_dir, exist_ok=True)
        for name in ("SConstruct", "site_scons", "targets"):
            link = os.path.join(state_dir, name)
            if os.path.islink(link) and os.readlink(link) != str(source_tree / name):
                os.unlink(link)
            if not os.path.lexists(link):
                os.symlink(source_tree / name, link)
    except OSError as e:
        raise RebuildError(state_dir, f"cannot prepare the state directory: {e.strerror or e}") from None


def scons_command(state_dir: str, rootfs: str, cache_dir: str, packages: list[str], targets: list[str],
                  jobs: int) -> list[str]:
    args = [sys.executable, "-m", "SCons", "-C", state_dir, "-Q", f"-j{jobs}", f"ROOTFS={os.path.abspath(rootfs)}",
            f"INSTALL_DIR={os.path.abspath(cache_dir)}"]
    if packages:
        args.append(f"PACKAGE={','.join(packages)}")
    return args + ["install", *targets]


def rebuild(state_dir: str, rootfs: str, cache_dir: str, packages: list[str], targets: list[str], jobs: int = 1,
            max_size: int | None = None) -> RebuildResult:
    prepare_state_dir(state_dir)
    os.makedirs(cache_dir, exist_ok=True)
    proc = subprocess.run(scons_command(state_dir, rootfs, cache_dir, packages, targets, jobs))
    if proc.returncode != 0:
        return RebuildResult(proc.returncode, None)
    return RebuildResult(0, collect(rootfs, cache_dir, max_size=max_size))
