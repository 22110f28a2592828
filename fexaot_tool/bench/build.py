"""Build benchmark: first build and null build of real targets, timed as a user sees them.

Each measurement is one whole ``scons`` process (interpreter start-up, reading
the SConstruct, walking the graph, running actions) in a scratch project, so the
user's checkout and ``.sconsign`` are left alone.  Null builds are repeated and
reported as median/min/max.
"""

from __future__ import annotations

import shutil
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fexaot_tool.bench.project import SconsProject
from fexaot_tool.errors import FexaotError


@dataclass(frozen=True)
class Timing:
    what: str
    jobs: int
    runs: tuple[float, ...]
    actions: int  # compile + bundle actions the first run executed

    @property
    def median(self) -> float:
        return statistics.median(self.runs)


@dataclass
class BuildBenchmark:
    rootfs: str
    timings: list[Timing] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "rootfs": self.rootfs,
            "timings": [dict(asdict(t), median=t.median) for t in self.timings],
        }


def _timed(project: SconsProject, target: str, jobs: int) -> tuple[float, int]:
    start = time.perf_counter()
    result = project.scons(target, jobs=jobs, check=False)
    elapsed = time.perf_counter() - start
    result.raise_for_failure(f"scons {target}")
    return elapsed, len(result.compiled) + len(result.bundled)


def run_build_benchmark(rootfs: str, workdir: Path, targets: list[str], jobs: int, repeat: int) -> BuildBenchmark:
    """Time a clean build and ``repeat`` null builds of each target, in one scratch project."""
    if workdir.exists():
        shutil.rmtree(workdir)
    project = SconsProject(workdir, Path(rootfs))
    bench = BuildBenchmark(rootfs=rootfs)
    for target in targets:
        first, actions = _timed(project, target, jobs)
        bench.timings.append(Timing(f"first build: {target}", jobs, (first,), actions))
        nulls = []
        for _ in range(repeat):
            elapsed, actions = _timed(project, target, jobs)
            if actions:
                raise FexaotError(f"scons {target}", f"null build ran {actions} actions; the build is not stable")
            nulls.append(elapsed)
        bench.timings.append(Timing(f"null build: {target}", jobs, tuple(nulls), 0))
    return bench
