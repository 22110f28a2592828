"""``fexaot bench compare``: what a prebuilt cache saves, against native, the x86 engine and the JIT alone.

For each case, N fresh processes of each variant: native; ``fexaot run``
(x86 engine); ``--engine a64 --no-cache`` (JIT only); ``--engine a64 --cache
BUNDLE`` (prebuilt).  Every variant must print what native printed, and the
prebuilt variant must really have loaded its caches (a benchmark that does
not check this measures the JIT twice): every timed prebuilt run reports its
loaded caches (``--cache-diagnostics``).  Timed runs count nothing (block
counting costs ~30%: exits then link through counting stubs); one more run of
each a64 variant with ``--stats`` gives the shares and translation times.  Writes report.json, report.md and
plot.svg (drawn here: one bar group per case, no plotting dependency).
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
from xml.sax.saxutils import escape

from fexaot_tool.runtime.bench import CASES, Case
from fexaot_tool.runtime.errors import GuestError

VARIANTS = ("native", "x86", "a64-jit", "a64-cache")
DEFAULT_CASES = ("python3 -c pass", "python3 import json, re")
_COLOURS = {"native": "#4c72b0", "x86": "#8c8c8c", "a64-jit": "#dd8452", "a64-cache": "#55a868"}


@dataclass(frozen=True)
class VariantResult:
    times: tuple[float, ...]
    a64: dict | None  # the a64 section of the last run's --stats

    def as_dict(self) -> dict:
        return {"median_s": statistics.median(self.times), "min_s": min(self.times), "max_s": max(self.times),
                "runs_s": list(self.times), **({"a64": self.a64} if self.a64 else {})}


def _command(variant: str, argv: tuple[str, ...], bundle: str, stats: str | None) -> list[str]:
    fexaot = [sys.executable, "-m", "fexaot_tool", "run"]
    counting = ["--stats", stats] if stats else []
    if variant == "native":
        return list(argv)
    if variant == "x86":
        return [*fexaot, "--", *argv]
    if variant == "a64-jit":
        return [*fexaot, "--engine", "a64", "--no-cache", *counting, "--", *argv]
    return [*fexaot, "--engine", "a64", "--cache", bundle, "--cache-diagnostics", *counting, "--", *argv]


def _loaded(stderr: bytes) -> list[str]:
    """The modules a run says it loaded from a cache (``--cache-diagnostics`` lines)."""
    return [line.split(": loaded ", 1)[1].split(":")[0] for line in stderr.decode(errors="replace").splitlines()
            if line.startswith("fexaot run: cache: ") and ": loaded " in line]


def compare(cases: tuple[Case, ...], bundle: str, repeat: int) -> dict:
    report = {"format": "fexaot-bench-compare", "version": 2, "bundle": bundle, "repeat": repeat, "cases": []}
    with tempfile.TemporaryDirectory(prefix="fexaot-bench-compare-") as scratch:
        stats = os.path.join(scratch, "stats.json")
        for case in cases:
            results: dict[str, VariantResult] = {}
            native_out = None
            for variant in VARIANTS:
                times, a64 = [], None
                runs = [None] * repeat + ([stats] if variant.startswith("a64") else [])
                for stats_path in runs:
                    start = time.perf_counter()
                    proc = subprocess.run(_command(variant, case.argv, bundle, stats_path), capture_output=True)
                    elapsed = time.perf_counter() - start
                    if variant == "native":
                        native_out = (proc.stdout, proc.returncode)
                    elif (proc.stdout, proc.returncode) != native_out:
                        raise GuestError(case.name, f"the {variant} variant printed other output than native "
                                                    f"(exit {proc.returncode}): {proc.stderr.decode()[-300:]}")
                    if variant == "a64-cache" and not _loaded(proc.stderr):
                        raise GuestError(bundle, f"{case.name}: the prebuilt variant loaded no cache: "
                                                 f"{proc.stderr.decode(errors='replace')[-300:]}")
                    if stats_path is None:
                        times.append(elapsed)
                    else:
                        with open(stats_path) as f:
                            a64 = json.load(f)["a64"]
                if variant == "a64-cache" and not a64["executed"]["cache"]["instructions"]:
                    raise GuestError(bundle, f"{case.name}: the prebuilt variant ran nothing from its caches")
                results[variant] = VariantResult(tuple(times), a64)
            report["cases"].append(_case_entry(case, results))
    return report


def _case_entry(case: Case, results: dict[str, VariantResult]) -> dict:
    median = {v: statistics.median(r.times) for v, r in results.items()}
    jit, cached = results["a64-jit"].a64, results["a64-cache"].a64
    jit_seconds, cached_seconds = jit["jit"]["seconds"], cached["jit"]["seconds"]
    return {
        "case": case.name, "argv": list(case.argv),
        "variants": {v: r.as_dict() for v, r in results.items()},
        "ratios": {"prebuilt/jit_only": median["a64-cache"] / median["a64-jit"],
                   "prebuilt/x86": median["a64-cache"] / median["x86"],
                   "prebuilt/native": median["a64-cache"] / median["native"]},
        "prebuilt_shares": {s: cached["executed"][s]["share"] for s in ("cache", "jit", "fallback")},
        "prebuilt_share_of_translated_from_cache": cached["executed"]["cache"]["instructions"] / max(
            1, cached["executed"]["cache"]["instructions"] + cached["executed"]["jit"]["instructions"]),
        "translation_seconds": {"jit_only": jit_seconds, "prebuilt": cached_seconds,
                                "avoided": jit_seconds - cached_seconds,
                                "reduction": 1 - cached_seconds / jit_seconds if jit_seconds else None},
        "cache_load_seconds": cached["cache"]["load_seconds"],
        "exits_per_million_instructions": {"jit_only": jit["exits_per_million_instructions"],
                                           "prebuilt": cached["exits_per_million_instructions"]},
    }


def markdown(report: dict) -> str:
    lines = [f"# fexaot bench compare ({report['repeat']} runs per variant)", "",
             f"Bundle: `{report['bundle']}`", "",
             "| case | native s | x86 s | a64 JIT s | a64 prebuilt s | prebuilt/JIT | prebuilt/x86 |"
             " from cache | JIT | fallback | translation s JIT → prebuilt | cache load s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in report["cases"]:
        v = c["variants"]
        cell = {k: f"{v[k]['median_s']:.2f} ({v[k]['min_s']:.2f}–{v[k]['max_s']:.2f})" for k in VARIANTS}
        s, t = c["prebuilt_shares"], c["translation_seconds"]
        lines.append(f"| `{c['case']}` | {cell['native']} | {cell['x86']} | {cell['a64-jit']} | {cell['a64-cache']} "
                     f"| {c['ratios']['prebuilt/jit_only']:.2f} | {c['ratios']['prebuilt/x86']:.2f} "
                     f"| {100 * s['cache']:.3f}% | {100 * s['jit']:.3f}% | {100 * s['fallback']:.3f}% "
                     f"| {t['jit_only']:.2f} → {t['prebuilt']:.3f} ({100 * (t['reduction'] or 0):.1f}% less) "
                     f"| {c['cache_load_seconds']:.2f} |")
    lines += ["", "Times: median (min–max) wall seconds of a fresh process, without block counting.  Shares, "
                  "translation and cache load seconds: one more run of each a64 variant with `--stats`; shares "
                  "are of the prebuilt run's guest instructions (cached code, JIT code, x86 fallback).", ""]
    return "\n".join(lines)


def svg(report: dict) -> str:
    """Median wall time per variant, one group of bars per case, on a log-free linear axis."""
    cases = report["cases"]
    width, height, left, bottom, top = 160 + 260 * len(cases), 360, 60, 60, 30
    peak = max(c["variants"][v]["median_s"] for c in cases for v in VARIANTS) * 1.1
    plot_h = height - bottom - top
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
           f'font-size="12">', f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="black"/>',
           f'<line x1="{left}" y1="{height - bottom}" x2="{width - 20}" y2="{height - bottom}" stroke="black"/>',
           f'<text x="12" y="{top - 10}">seconds (median)</text>']
    for i in range(5):
        value = peak * i / 4
        y = height - bottom - plot_h * i / 4
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{value:.1f}</text>')
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - 20}" y2="{y:.1f}" stroke="#ddd"/>')
    for n, c in enumerate(cases):
        x0 = left + 20 + 260 * n
        for k, v in enumerate(VARIANTS):
            value = c["variants"][v]["median_s"]
            h = plot_h * value / peak
            x = x0 + 55 * k
            out.append(f'<rect x="{x}" y="{height - bottom - h:.1f}" width="45" height="{h:.1f}" '
                       f'fill="{_COLOURS[v]}"><title>{escape(v)}: {value:.3f} s</title></rect>')
            out.append(f'<text x="{x + 22}" y="{height - bottom - h - 4:.1f}" text-anchor="middle">{value:.2f}</text>')
        out.append(f'<text x="{x0 + 110}" y="{height - bottom + 20}" text-anchor="middle">{escape(c["case"])}</text>')
    for k, v in enumerate(VARIANTS):
        out.append(f'<rect x="{left + 120 * k}" y="{height - 22}" width="12" height="12" fill="{_COLOURS[v]}"/>')
        out.append(f'<text x="{left + 120 * k + 16}" y="{height - 12}">{v}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def run_compare(case_names: list[str] | None, bundle: str, repeat: int, out_dir: str) -> dict:
    names = case_names or list(DEFAULT_CASES)
    known = {c.name: c for c in CASES}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise GuestError(None, f"unknown case {unknown[0]!r} (choose from {', '.join(known)})")
    if not os.path.isfile(bundle):
        raise GuestError(bundle, "no such cache file (build it with `scons cache/python3.fexcache`)")
    os.makedirs(out_dir, exist_ok=True)
    report = compare(tuple(known[n] for n in names), os.path.abspath(bundle), repeat)
    with open(os.path.join(out_dir, "report.json"), "w") as f:
        json.dump(report, f, indent=2)
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write(markdown(report))
    with open(os.path.join(out_dir, "plot.svg"), "w") as f:
        f.write(svg(report))
    return report
