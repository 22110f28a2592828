"""The AArch64 engine end to end: real programs on translated code, JIT-only and from prebuilt caches.

Every run is compared with the same program run natively (stdout, stderr, exit
status).  Cache rejections are provoked with real caches made by ``fexaot
compile`` and damaged the way a user's would be: built for another version of
a library, cut short, a flipped byte, built for another ConfigId.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from fexaot_tool.cache.key import TranslatorConfig, config_id, lookup_name, module_identity
from fexaot_tool.runtime.a64 import flags_of, rflags_of
from test_runtime import ENV, FIXTURES, PYTHON, assert_same, fexaot, needs_debian_python, programs  # noqa: F401

A64 = ("--engine", "a64")
JIT_ONLY = (*A64, "--no-cache")
CONFIG_ID = config_id(TranslatorConfig())
PYTHON_SCRIPT = ("import json, re, hashlib\n"
                 "words = re.findall(r'[a-z]+', 'ahead of time translation for x86 on aarch64')\n"
                 "digest = hashlib.sha256(' '.join(words).encode()).hexdigest()\n"
                 "print(json.dumps({'words': words, 'sha256': digest, 'squares': sum(i * i for i in range(2000))},"
                 " sort_keys=True))\n")


def run_both(argv: list[str], options=(), cwd: str | None = None, input: bytes | None = None):
    native = subprocess.run(argv, capture_output=True, env=ENV, cwd=cwd, input=input)
    emulated = fexaot("run", *options, "--", *argv, cwd=cwd, input=input)
    return native, emulated


def a64_stats(path: Path) -> dict:
    return json.loads(path.read_text())["a64"]


def diagnostics(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.decode().splitlines() if line.startswith("fexaot run: cache: ")]


# -- the flag hand-over between the engines -------------------------------------------------------


def test_rflags_round_trip_through_the_aarch64_flag_state() -> None:
    for rflags in range(0, 0x1000):
        rflags &= 0x8D5 | 0x400  # CF PF AF ZF SF OF DF
        nzcv, pf_src, af_src, df = flags_of(rflags | 0x202)
        assert rflags_of(nzcv, pf_src, af_src, df) == rflags | 0x202


# -- programs, JIT only ------------------------------------------------------------------------


@needs_debian_python
def test_python_script_jit_only(tmp_path: Path) -> None:
    stats = tmp_path / "stats.json"
    native, emulated = run_both([PYTHON, "-c", PYTHON_SCRIPT], (*JIT_ONLY, "--stats", str(stats)))
    assert native.returncode == 0 and b"sha256" in native.stdout
    assert_same(native, emulated)
    executed = a64_stats(stats)["executed"]
    assert executed["cache"]["instructions"] == 0
    assert executed["jit"]["instructions"] > 10 * executed["fallback"]["instructions"] > 0


def test_c_programs_jit_only(programs: dict[str, Path]) -> None:  # noqa: F811
    # probe: auxv, TLS, malloc, IFUNC string routines, x87 (tgammal: the fallback's FPU state) and SSE maths.
    for name in ("probe", "probe-static-pie"):
        native, emulated = run_both([str(programs[name]), "3"], JIT_ONLY)
        assert native.returncode == 3 and b"e = 2.718281828459045" in native.stdout, name
        assert_same(native, emulated)
    native, emulated = run_both([str(programs["forkwait"])], JIT_ONLY)
    assert_same(native, emulated)


def test_x87_program_runs_on_translated_code(programs: dict[str, Path], tmp_path: Path) -> None:  # noqa: F811
    # long double arithmetic, conversions in every rounding mode and at reduced precision, compares and
    # printf's %La: the x87 instructions run as translated code, bit for bit with the CPU.
    stats = tmp_path / "stats.json"
    native, emulated = run_both([str(programs["x87"])], (*JIT_ONLY, "--stats", str(stats)))
    assert native.returncode == 0 and b"e = 2.71828182845904523543" in native.stdout
    assert_same(native, emulated)
    executed = a64_stats(stats)["executed"]
    assert executed["fallback"]["instructions"] < 0.005 * executed["jit"]["instructions"]


def test_coreutils_and_a_shell_pipeline_jit_only(tmp_path: Path) -> None:
    data = tmp_path / "data.txt"
    data.write_text("".join(f"{(i * 7919) % 1009} line {i}\n" for i in range(3000)))
    for argv in (["sort", str(data)], ["sha256sum", str(data)], ["ls", "-la", "--time-style=long-iso", str(tmp_path)],
                 ["sh", "-c", f"gzip -c {data} | gzip -dc | wc -l; exit 7"]):
        native, emulated = run_both(argv, JIT_ONLY)
        assert_same(native, emulated)


def test_fault_is_reported_as_on_the_x86_engine(programs: dict[str, Path]) -> None:  # noqa: F811
    reference = fexaot("run", "--", str(programs["jump"]))
    emulated = fexaot("run", *JIT_ONLY, "--", str(programs["jump"]))
    assert emulated.returncode == reference.returncode != 0
    assert emulated.stderr == reference.stderr


# -- generated code ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smc_program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    target = tmp_path_factory.mktemp("a64-smc") / "smc"
    subprocess.run(["gcc", "-O1", "-o", str(target), str(FIXTURES / "a64_smc.c")], check=True)
    return target


def test_code_rewritten_in_an_rwx_page_runs_anew(smc_program: Path, tmp_path: Path) -> None:
    stats = tmp_path / "stats.json"
    native, emulated = run_both([str(smc_program)], (*JIT_ONLY, "--stats", str(stats)))
    assert b"patched: 778" in native.stdout
    assert_same(native, emulated)
    smc = a64_stats(stats)["self_modifying_code"]
    assert smc["code_page_writes"] >= 40 and smc["jit_blocks_invalidated"] >= 40
    # Without counting, exits link straight to block code: invalidation patches the code itself.
    assert_same(native, fexaot("run", *JIT_ONLY, "--", str(smc_program)))


def test_code_rewritten_through_mprotect_and_rwx_runs_anew(programs: dict[str, Path]) -> None:  # noqa: F811
    native, emulated = run_both([str(programs["jit"])], JIT_ONLY)
    assert b"rwx: 7 then 8" in native.stdout
    assert_same(native, emulated)


# -- prebuilt caches ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def python_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """cache/python3.fexcache built by SCons, as a user builds it (FILTER=speed)."""
    if not os.path.exists(PYTHON):
        pytest.skip(f"{PYTHON} is not installed")
    out = tmp_path_factory.mktemp("a64-bundle")
    root = Path(__file__).resolve().parent.parent
    scons = Path(os.environ.get("VIRTUAL_ENV", root / ".venv")) / "bin" / "scons"
    result = subprocess.run([str(scons), "-Q", "-j2", f"FEXAOT_OUT={out}", str(out / "python3.fexcache")],
                            cwd=root, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return out


@needs_debian_python
def test_python_script_from_the_prebuilt_bundle(python_bundle: Path, tmp_path: Path) -> None:
    stats = tmp_path / "stats.json"
    bundle = python_bundle / "python3.fexcache"
    native, emulated = run_both([PYTHON, "-c", PYTHON_SCRIPT],
                                (*A64, "--cache", str(bundle), "--cache-diagnostics", "--stats", str(stats)))
    assert emulated.stdout == native.stdout and emulated.returncode == native.returncode == 0
    lines = diagnostics(emulated)
    loaded = {line.split(": loaded ")[1].split(":")[0] for line in lines if ": loaded " in line}
    assert {"python3.11", "libc.so.6", "ld-linux-x86-64.so.2"} <= loaded, lines
    doc = a64_stats(stats)
    executed = doc["executed"]
    # The bundle holds python3.11 and the libraries it is linked with; the JIT translates the
    # extension modules and libcrypto that hashlib loads, and blocks where the fallback hands back.
    assert executed["cache"]["instructions"] > 5 * executed["jit"]["instructions"]
    assert doc["cache"]["modules_loaded"] == len(loaded)
    # hashlib's extension module and libcrypto are loaded with dlopen: not in python3's bundle.
    not_in_bundle = [line for line in lines if "rejected (not-in-bundle)" in line]
    assert doc["cache"]["rejected"] == {"not-in-bundle": len(not_in_bundle)}
    assert all("python3.11:" not in line and "libc.so.6:" not in line for line in not_in_bundle)


def _per_module_dir(bundle_dir: Path, target: Path) -> Path:
    """A cache directory laid out by lookup names (as `scons install` does), from the per-object caches."""
    from fexaot_tool.cache.reader import CacheFile
    from fexaot_tool.package.layout import install_cache

    target.mkdir()
    for path in (bundle_dir / "objects").rglob("*.fexcache"):
        with CacheFile.open(path) as cache:
            (entry,) = cache.modules
            name = lookup_name(cache.module(entry.file_id).name, entry.file_id, cache.config_id)
        assert Path(install_cache(str(path), str(target))) == target / name
    return target


@needs_debian_python
def test_cache_directory_by_lookup_name(python_bundle: Path, tmp_path: Path) -> None:
    cache_dir = _per_module_dir(python_bundle, tmp_path / "caches")
    native, emulated = run_both([PYTHON, "-c", "print('from the cache directory')"],
                                (*A64, "--cache-dir", str(cache_dir), "--cache-diagnostics"))
    assert emulated.stdout == native.stdout
    lines = diagnostics(emulated)
    assert sum(": loaded " in line for line in lines) == len(list(cache_dir.glob("*.fexcache"))), lines


# -- rejections: each reported with its reason, the JIT takes over, the output is right ------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A program and two versions of its shared library, and a cache of each version."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    out = tmp_path_factory.mktemp("a64-demo")
    for version in (1, 2):
        (out / f"v{version}").mkdir()
        subprocess.run(["gcc", "-O1", "-shared", "-fPIC", f"-DDEMO_VERSION={version}", "-o",
                        str(out / f"v{version}" / "libdemo.so"), str(FIXTURES / "a64_libdemo.c")], check=True)
    subprocess.run(["gcc", "-O1", "-o", str(out / "main"), str(FIXTURES / "a64_libdemo_main.c"),
                    "-L", str(out / "v1"), "-ldemo"], check=True)
    paths = {"dir": out, "main": out / "main"}
    for version in (1, 2):
        library = out / f"v{version}" / "libdemo.so"
        cache = out / f"libdemo-v{version}.fexcache"
        result = fexaot("compile", str(library), "-o", str(cache))
        assert result.returncode == 0, result.stderr
        paths[f"lib{version}"], paths[f"cache{version}"] = library, cache
    relaxed = out / "libdemo-v2-relaxed.fexcache"
    assert fexaot("compile", str(paths["lib2"]), "-o", str(relaxed), "--memory-order", "relaxed").returncode == 0
    paths["relaxed"] = relaxed
    return paths


def _run_demo(demo: dict[str, Path], cache_dir: Path, tmp_path: Path) -> tuple[subprocess.CompletedProcess, dict]:
    """Run the demo against version 2 of the library, with ``cache_dir``."""
    env_native = dict(ENV, LD_LIBRARY_PATH=str(demo["lib2"].parent))
    native = subprocess.run([str(demo["main"])], capture_output=True, env=env_native)
    assert native.stdout == b"demo 9902\n"
    stats = tmp_path / "stats.json"
    emulated = fexaot("run", *A64, "--cache-dir", str(cache_dir), "--cache-diagnostics", "--stats", str(stats),
                      "--", str(demo["main"]), env=env_native)
    assert emulated.stdout == native.stdout and emulated.returncode == 0, emulated.stderr
    return emulated, json.loads(stats.read_text())["a64"]


def _lookup_path(cache_dir: Path, library: Path, config: int = CONFIG_ID) -> Path:
    return cache_dir / lookup_name("libdemo.so", module_identity(library).file_id, config)


def test_cache_used_for_the_right_library_version(demo: dict[str, Path], tmp_path: Path) -> None:
    cache_dir = tmp_path / "caches"
    cache_dir.mkdir()
    shutil.copy(demo["cache2"], _lookup_path(cache_dir, demo["lib2"]))
    result, stats = _run_demo(demo, cache_dir, tmp_path)
    assert any(": loaded libdemo.so:" in line for line in diagnostics(result))
    assert stats["cache"]["modules_loaded"] == 1 and stats["executed"]["cache"]["instructions"] > 300


@pytest.mark.parametrize("damage, reason", [
    ("other-version", "content-mismatch"),
    ("truncated", "truncated"),
    ("flipped-byte", "checksum"),
    ("other-config", "config-mismatch"),
])
def test_rejected_cache_is_reported_and_the_jit_runs_it(demo: dict[str, Path], tmp_path: Path, damage: str,
                                                        reason: str) -> None:
    cache_dir = tmp_path / "caches"
    cache_dir.mkdir()
    if damage == "other-version":
        # The cache of version 1, under its own (correct) lookup name; version 2 is installed.
        path = _lookup_path(cache_dir, demo["lib1"])
        shutil.copy(demo["cache1"], path)
    elif damage == "other-config":
        path = _lookup_path(cache_dir, demo["lib2"], config_id(TranslatorConfig(memory_order="relaxed")))
        shutil.copy(demo["relaxed"], path)
    else:
        path = _lookup_path(cache_dir, demo["lib2"])
        data = bytearray(demo["cache2"].read_bytes())
        if damage == "truncated":
            data = data[:len(data) - 4096]
        else:
            data[len(data) - 4096 - 100] ^= 0x40  # inside the module region's code
        path.write_bytes(bytes(data))
    result, stats = _run_demo(demo, cache_dir, tmp_path)
    (line,) = [line for line in diagnostics(result) if "libdemo.so" in line]
    assert f"{path}: rejected ({reason}) for libdemo.so: " in line, line
    # The program, libc and ld.so have no cache in the directory: "missing", each.
    assert stats["cache"]["rejected"] == {reason: 1, "missing": 3}
    assert stats["cache"]["modules_loaded"] == 0 and stats["executed"]["cache"]["instructions"] == 0
    assert stats["misses_by_reason"]["no-cache"] > 0


def test_library_code_rewritten_through_mprotect_is_not_run_from_its_cache(demo: dict[str, Path],
                                                                             tmp_path: Path) -> None:
    """mprotect RW, write, mprotect RX on a cached library's text: the cached block must not come back."""
    program = tmp_path / "patch"
    subprocess.run(["gcc", "-O1", "-o", str(program), str(FIXTURES / "a64_libdemo_patch.c"),
                    "-L", str(demo["lib2"].parent), "-ldemo"], check=True)
    cache_dir = tmp_path / "caches"
    cache_dir.mkdir()
    shutil.copy(demo["cache2"], _lookup_path(cache_dir, demo["lib2"]))
    env = dict(ENV, LD_LIBRARY_PATH=str(demo["lib2"].parent))
    native = subprocess.run([str(program)], capture_output=True, env=env)
    assert native.stdout == b"before 9902\nafter 4242\n", native.stderr
    stats = tmp_path / "stats.json"
    emulated = fexaot("run", *A64, "--cache-dir", str(cache_dir), "--cache-diagnostics", "--stats", str(stats),
                      "--", str(program), env=env)
    assert emulated.stdout == native.stdout and emulated.returncode == 0, emulated.stderr
    a64 = json.loads(stats.read_text())["a64"]
    assert a64["cache"]["modules_loaded"] >= 1 and a64["executed"]["cache"]["instructions"] > 300
    assert a64["executed"]["jit"]["instructions"] > 0  # the rewritten page's blocks


def test_cache_options_need_the_a64_engine() -> None:
    result = fexaot("run", "--cache", "x.fexcache", "--", "/bin/true")
    assert result.returncode == 1 and b"need --engine a64" in result.stderr


# -- the benchmark's report -------------------------------------------------------------------


def test_compare_report_renders_every_variant_as_table_row_and_bar() -> None:
    from xml.dom.minidom import parseString

    from fexaot_tool.runtime.bench_compare import VARIANTS, markdown, svg

    def variant(seconds: float) -> dict:
        return {"median_s": seconds, "min_s": seconds * 0.9, "max_s": seconds * 1.2, "runs_s": [seconds]}

    case = {"case": "python3 -c pass", "argv": [PYTHON, "-c", "pass"],
            "variants": {v: variant(t) for v, t in zip(VARIANTS, (0.05, 0.6, 10.5, 5.2))},
            "ratios": {"prebuilt/jit_only": 5.2 / 10.5, "prebuilt/x86": 5.2 / 0.6, "prebuilt/native": 104.0},
            "prebuilt_shares": {"cache": 0.99995, "jit": 0.0, "fallback": 0.00005},
            "translation_seconds": {"jit_only": 3.5, "prebuilt": 0.0, "avoided": 3.5, "reduction": 1.0},
            "cache_load_seconds": 2.0}
    report = {"repeat": 3, "bundle": "/c/python3.fexcache", "cases": [case]}
    table = markdown(report)
    assert "| `python3 -c pass` | 0.05 (0.05–0.06) | 0.60 (0.54–0.72) | 10.50 (9.45–12.60) | 5.20" in table
    assert "| 0.50 | 8.67 | 99.995% | 0.000% | 0.005% | 3.50 → 0.000 (100.0% less) | 2.00 |" in table
    drawing = parseString(svg(report))
    bars = [r for r in drawing.getElementsByTagName("rect") if r.getElementsByTagName("title")]
    assert [b.getElementsByTagName("title")[0].firstChild.data.split(":")[0] for b in bars] == list(VARIANTS)
    heights = [float(b.getAttribute("height")) for b in bars]
    assert heights[2] == max(heights) and heights[0] < heights[1] < heights[3] < heights[2]
