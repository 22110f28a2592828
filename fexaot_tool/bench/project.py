"""A scratch SCons project around the real SConstruct, for benchmarks and tests.

The project directory links the repository's SConstruct and site_scons and has
its own ``targets/`` (by default a link to the repository's), so it runs exactly
what a user runs (``scons cache/NAME.fexcache``) with its own output and
``.sconsign`` database, leaving the user's checkout alone.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from fexaot_tool.errors import FexaotError

REPO = Path(__file__).resolve().parent.parent.parent
_ACTION = re.compile(r"^\[\s*\d+/\d+\] (compile|bundle) (.+)  \(\d+ remaining\)$")


@dataclass
class BuildResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def compiled(self) -> list[str]:
        """Guest paths of the objects this build compiled, in order."""
        return [m.group(2) for m in map(_ACTION.match, self.stdout.splitlines()) if m and m.group(1) == "compile"]

    def raise_for_failure(self, what: str) -> None:
        """A failed build is one FexaotError naming ``what``, with scons's last line of errors."""
        if self.returncode != 0:
            last = (self.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise FexaotError(what, f"build failed: {last}")

    @property
    def bundled(self) -> list[str]:
        return [os.path.basename(m.group(2)) for m in map(_ACTION.match, self.stdout.splitlines()) if m and m.group(1) == "bundle"]


class SconsProject:
    def __init__(self, path: Path, rootfs: Path, targets: dict[str, str] | None = None) -> None:
        """``targets``: name -> text of ``targets/<name>.toml``; None links the repository's."""
        if not (REPO / "SConstruct").is_file():
            raise FexaotError(str(REPO), "no SConstruct here: benchmarks need a source checkout of fexaot")
        self.path = path
        self.rootfs = rootfs
        path.mkdir(parents=True, exist_ok=True)
        names = ("SConstruct", "site_scons") + (("targets",) if targets is None else ())
        for name in names:
            link = path / name
            if not link.exists():
                link.symlink_to(REPO / name)
        if targets is not None:
            (path / "targets").mkdir(exist_ok=True)
            for name, text in targets.items():
                (path / "targets" / f"{name}.toml").write_text(text)

    @property
    def out(self) -> Path:
        return self.path / "cache"

    def command(self, *args: str, jobs: int = 1) -> list[str]:
        return [sys.executable, "-m", "SCons", "-Q", f"-j{jobs}", f"ROOTFS={self.rootfs}", *args]

    def scons(self, *args: str, jobs: int = 1, check: bool = True, env: dict | None = None) -> BuildResult:
        proc = subprocess.run(
            self.command(*args, jobs=jobs), cwd=self.path, capture_output=True, text=True,
            env={**os.environ, **(env or {})}, timeout=600,
        )
        result = BuildResult(proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise AssertionError(f"scons failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return result

    def start(self, *args: str, jobs: int = 1) -> subprocess.Popen:
        """Start a build in its own process group (so a test can kill all of it)."""
        return subprocess.Popen(
            self.command(*args, jobs=jobs), cwd=self.path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True,
        )

    @staticmethod
    def kill(proc: subprocess.Popen) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
