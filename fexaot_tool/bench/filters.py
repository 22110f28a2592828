"""``fexaot bench filters``: what speed-profile saves against speed, and what it still covers.

For one program (default ``python3.11 -c 'import json, re'``):

1. a profile of one run, recorded by the x86 reference engine
   (``fexaot run --profile-out``), unless profiles are given;
2. the app's bundle (``scons cache/APP.fexcache``, ``-j1``) built from scratch
   with ``FILTER=speed`` and with ``FILTER=speed-profile`` at each
   ``HOT_THRESHOLD`` asked for, ``repeat`` times each in rotation (so a slow
   spell of a shared machine hits every variant alike), each a whole scons
   process in a fresh scratch project; CPU time is user + system of scons and
   every process it ran (``RUSAGE_CHILDREN``), the number that does not depend
   on ``-j`` or on waiting;
3. one run of the program on the AArch64 engine with each bundle
   (``--stats``): the share of guest instructions run from the cache, JIT-translated
   and on the fallback engine; it must print what the x86 reference engine
   prints for the same command (the ground truth, also for a rootfs that is
   not the host's).

The report says, per variant, the bundle's size and build time as a share of
speed's, against the targets of profile-guided builds (docs/profiles.md).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from fexaot_tool.bench.project import SconsProject
from fexaot_tool.errors import FexaotError

DEFAULT_COMMAND = ("/usr/bin/python3.11", "-c", "import json, re")
SIZE_TARGET = 0.25  # speed-profile bundle bytes / speed bundle bytes
TIME_TARGET = 0.25  # speed-profile build CPU / speed build CPU
CACHE_SHARE_TARGET = 0.99  # guest instructions run from the cache


@dataclass
class Variant:
    name: str  # "speed" or "speed-profile/N"
    args: tuple[str, ...]  # scons variables
    cpu: list[float] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)
    size: int = 0
    compiled: int = 0
    executed: dict | None = None  # the a64 stats' "executed" section

    def as_dict(self) -> dict:
        return {"name": self.name, "scons_args": list(self.args), "bundle_bytes": self.size,
                "compile_actions": self.compiled, "cpu_s": self.cpu, "wall_s": self.wall,
                "cpu_median_s": statistics.median(self.cpu), "wall_median_s": statistics.median(self.wall),
                "executed": self.executed}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _fexaot(*args: str) -> list[str]:
    return [sys.executable, "-m", "fexaot_tool", *args]


def record_profile(rootfs: str, command: tuple[str, ...], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(_fexaot("run", "--rootfs", rootfs, "--profile-out", str(out), "--", *command),
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise FexaotError(" ".join(command), f"profiling run failed (exit {proc.returncode}): "
                                             f"{proc.stderr.strip()[-300:]}")


def _build(variant: Variant, workdir: Path, rootfs: str, app: str, program: str) -> Path:
    project_dir = workdir / "projects" / variant.name.replace("/", "-")
    if project_dir.exists():
        shutil.rmtree(project_dir)
    project = SconsProject(project_dir, Path(rootfs), targets={app: f'[app]\nprogram = "{program}"\n'})
    target = f"cache/{app}.fexcache"
    cpu, start = _children_cpu(), time.perf_counter()
    result = project.scons(*variant.args, target, jobs=1, check=False)
    variant.wall.append(time.perf_counter() - start)
    variant.cpu.append(_children_cpu() - cpu)
    result.raise_for_failure(f"scons {' '.join(variant.args)} {target}")
    variant.compiled = len(result.compiled)
    bundle = project_dir / target
    variant.size = bundle.stat().st_size
    return bundle


def _run_a64(variant: Variant, bundle: Path, rootfs: str, command: tuple[str, ...], expected: tuple,
             workdir: Path) -> None:
    stats = workdir / f"a64-{variant.name.replace('/', '-')}.json"
    proc = subprocess.run(_fexaot("run", "--rootfs", rootfs, "--engine", "a64", "--cache", str(bundle),
                                  "--stats", str(stats), "--", *command), capture_output=True)
    if (proc.stdout, proc.returncode) != expected:
        raise FexaotError(str(bundle), f"the a64 run printed other output than the x86 engine (exit {proc.returncode}): "
                                       f"{proc.stderr.decode(errors='replace').strip()[-300:]}")
    with open(stats) as f:
        variant.executed = json.load(f)["a64"]["executed"]


def run_filters_benchmark(rootfs: str, workdir: Path, app: str, command: tuple[str, ...],
                          thresholds: list[int], repeat: int, profile_dir: str | None = None,
                          program: str | None = None) -> dict:
    """Profile (unless ``profile_dir``), build every variant ``repeat`` times, run each bundle once.

    ``program`` is the app target's program (default: ``app``), as ``targets/`` names it.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    if profile_dir is None:
        profile_dir = str(workdir / "profiles")
        shutil.rmtree(profile_dir, ignore_errors=True)
        record_profile(rootfs, command, Path(profile_dir) / "run.fexprof")
    profile_dir = os.path.abspath(profile_dir)
    variants = [Variant("speed", ("FILTER=speed",))]
    variants += [Variant(f"speed-profile/{t}", ("FILTER=speed-profile", f"PROFILE_DIR={profile_dir}",
                                                f"HOT_THRESHOLD={t}")) for t in thresholds]
    bundles: dict[str, Path] = {}
    for _ in range(repeat):
        for variant in variants:
            bundles[variant.name] = _build(variant, workdir, rootfs, app, program or app)
    reference = subprocess.run(_fexaot("run", "--rootfs", rootfs, "--", *command), capture_output=True)
    for variant in variants:
        _run_a64(variant, bundles[variant.name], rootfs, command, (reference.stdout, reference.returncode), workdir)
    return report(rootfs, app, command, profile_dir, repeat, variants)


def report(rootfs: str, app: str, command: tuple[str, ...], profile_dir: str, repeat: int,
           variants: list[Variant]) -> dict:
    speed = variants[0]
    rows = []
    for v in variants:
        cpu_share = statistics.median(v.cpu) / statistics.median(speed.cpu)
        size_share = v.size / speed.size
        cache_share = v.executed["cache"]["share"] if v.executed else None
        rows.append({**v.as_dict(), "size_share": round(size_share, 4), "cpu_share": round(cpu_share, 4),
                     "wall_share": round(statistics.median(v.wall) / statistics.median(speed.wall), 4),
                     "from_cache_share": cache_share,
                     "meets_targets": (v is not speed and size_share <= SIZE_TARGET and cpu_share <= TIME_TARGET
                                       and cache_share is not None and cache_share >= CACHE_SHARE_TARGET)})
    return {"format": "fexaot-bench-filters", "version": 1, "rootfs": rootfs, "app": app, "command": list(command),
            "profile_dir": profile_dir, "repeat": repeat, "jobs": 1,
            "targets": {"size_share": SIZE_TARGET, "cpu_share": TIME_TARGET, "from_cache_share": CACHE_SHARE_TARGET},
            "variants": rows}
