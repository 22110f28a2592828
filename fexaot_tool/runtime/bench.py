"""The runtime benchmark: wall time of programs run natively and on the runtime.

Each case runs as a user runs it: a fresh process each time, natively, then
``fexaot run`` (interpreter start-up included), then ``fexaot run
--profile-out`` (block counting on).  The median of ``repeat`` runs is
reported; outputs of the three modes must agree, or the case fails.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from fexaot_tool.runtime.errors import GuestError

COMPUTE_SCRIPT = """\
import hashlib, json, re
def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)
words = re.findall(r"[a-z]+", "the quick brown fox jumps over the lazy dog " * 2000)
counts = {}
for w in words:
    counts[w] = counts.get(w, 0) + 1
digest = hashlib.sha256(json.dumps(counts, sort_keys=True).encode()).hexdigest()
print(fib(22), len(words), digest[:16], sum(i * i % 7 for i in range(200000)))
"""


@dataclass(frozen=True)
class Case:
    name: str
    argv: tuple[str, ...]


CASES = (
    Case("python3 -c pass", ("/usr/bin/python3.11", "-c", "pass")),
    Case("python3 import json, re", ("/usr/bin/python3.11", "-c", "import json, re")),
    Case("python3 compute", ("/usr/bin/python3.11", "-c", COMPUTE_SCRIPT)),
    Case("ls -l /usr/bin", ("ls", "-l", "/usr/bin")),
    Case("sha256sum python3.11", ("sha256sum", "/usr/bin/python3.11")),
)


@dataclass(frozen=True)
class CaseResult:
    case: Case
    native: float  # median seconds
    runtime: float
    profiled: float
    block_executions: int
    distinct_blocks: int
    instructions: int

    def as_dict(self) -> dict:
        return {"case": self.case.name, "argv": list(self.case.argv), "native_s": self.native,
                "runtime_s": self.runtime, "profiled_s": self.profiled,
                "slowdown": self.runtime / self.native, "profiled_slowdown": self.profiled / self.native,
                "block_executions": self.block_executions, "distinct_blocks": self.distinct_blocks,
                "instructions": self.instructions}


def _timed(argv: list[str]) -> tuple[float, bytes]:
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        last = (proc.stderr.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
        raise GuestError(argv[-1] if len(argv) < 4 else " ".join(argv[:6]), f"exited {proc.returncode}: {last}")
    return elapsed, proc.stdout


def run_benchmark(cases: tuple[Case, ...], rootfs: str = "/", repeat: int = 3) -> list[CaseResult]:
    fexaot = [sys.executable, "-m", "fexaot_tool", "run", "--rootfs", rootfs]
    results = []
    with tempfile.TemporaryDirectory(prefix="fexaot-bench-run-") as scratch:
        stats_path = os.path.join(scratch, "stats.json")
        for case in cases:
            native, runtime, profiled = [], [], []
            for _ in range(repeat):
                t, native_out = _timed(list(case.argv))
                native.append(t)
                t, out = _timed([*fexaot, "--", *case.argv])
                runtime.append(t)
                t, profiled_out = _timed([*fexaot, "--profile-out", os.path.join(scratch, "run.fexprof"),
                                          "--stats", stats_path, "--", *case.argv])
                profiled.append(t)
                if not out == profiled_out == native_out:
                    raise GuestError(case.name, "output on the runtime differs from native output")
            with open(stats_path) as f:
                totals = json.load(f)["totals"]
            results.append(CaseResult(case, statistics.median(native), statistics.median(runtime),
                                      statistics.median(profiled), totals["block_executions"],
                                      totals["distinct_blocks"], totals["instructions"]))
    return results
