"""End-to-end: real programs on the runtime against the same programs run natively.

Each comparison runs the program twice with the same environment and working
directory, natively and through ``fexaot run`` (a separate process, as a user
runs it), and requires identical stdout, stderr and exit status.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fexaot_tool.cache.key import module_identity
from fexaot_tool.elf import read_elf
from fexaot_tool.profile import read_profile
from fexaot_tool.runtime.cpuid import BASELINE_EDX1, BASELINE_EDX81, FAMILY, MODEL, STEPPING, VENDOR

FIXTURES = Path(__file__).parent / "runtime_fixtures"
PYTHON = "/usr/bin/python3.11"  # Debian's: a non-PIE executable at 0x400000
ENV = {"PATH": "/usr/bin:/bin", "LC_ALL": "C", "TZ": "UTC", "HOME": "/root", "FEXAOT_PROBE": "probe-value"}


# Every test here runs on both engines: the x86 reference engine and the AArch64 engine (translated
# code, JIT only: the tests' programs have no prebuilt caches; test_runtime_a64.py runs prebuilt ones).
ENGINE_OPTIONS: list[str] = []


@pytest.fixture(autouse=True, params=["x86", "a64"])
def engine(request: pytest.FixtureRequest) -> str:
    ENGINE_OPTIONS[:] = ["--engine", request.param]
    yield request.param
    ENGINE_OPTIONS[:] = []


def fexaot(*args: str, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    if args and args[0] == "run":
        args = ("run", *ENGINE_OPTIONS, *args[1:])
    return subprocess.run([sys.executable, "-m", "fexaot_tool", *args], capture_output=True,
                          env=env if env is not None else ENV, **kwargs)


def run_both(argv: list[str], cwd: str | None = None, input: bytes | None = None, runtime_options=()):
    native = subprocess.run(argv, capture_output=True, env=ENV, cwd=cwd, input=input)
    emulated = fexaot("run", *runtime_options, "--", *argv, cwd=cwd, input=input)
    return native, emulated


def assert_same(native: subprocess.CompletedProcess, emulated: subprocess.CompletedProcess) -> None:
    assert emulated.stderr == native.stderr
    assert emulated.stdout == native.stdout
    assert emulated.returncode == native.returncode


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """The runtime's complaint: one line on stderr, no Python traceback."""
    text = result.stderr.decode()
    assert "Traceback" not in text
    assert text.startswith("fexaot run: ") and text.count("\n") == 1, text
    return text.strip()


@pytest.fixture(scope="session")
def programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The C fixtures, built with the host's gcc: dynamic, static and static-PIE variants."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    out = tmp_path_factory.mktemp("runtime-programs")
    builds = {
        "probe": ("probe.c", ["-lm"]),
        "probe-static": ("probe.c", ["-static", "-lm"]),
        "probe-static-pie": ("probe.c", ["-static-pie", "-lm"]),
        "forkwait": ("forkwait.c", []),
        "cpuid": ("cpuid.c", []),
        "jump": ("jump.c", []),
        "thread": ("thread.c", ["-lpthread"]),
        "jit": ("jit.c", []),
        "x87": ("x87.c", ["-lm"]),
    }
    built = {}
    for name, (source, flags) in builds.items():
        target = out / name
        proc = subprocess.run(["gcc", "-O1", "-o", str(target), str(FIXTURES / source), *flags],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.fail(f"gcc {source} {' '.join(flags)}: {proc.stderr}")
        built[name] = target
    return built


# -- programs compared with native execution ---------------------------------------------------------


needs_debian_python = pytest.mark.skipif(not os.path.exists(PYTHON),
                                         reason=f"{PYTHON} (Debian's python3.11) is not installed")


@needs_debian_python
def test_python_script_with_json_re_hashlib() -> None:
    script = ("import json, re, hashlib\n"
              "words = re.findall(r'[a-z]+', 'ahead of time translation for x86 on aarch64')\n"
              "digest = hashlib.sha256(' '.join(words).encode()).hexdigest()\n"
              "print(json.dumps({'words': words, 'sha256': digest, 'squares': sum(i * i for i in range(10000))},"
              " sort_keys=True))\n")
    native, emulated = run_both([PYTHON, "-c", script])
    assert native.returncode == 0 and b"sha256" in native.stdout
    assert_same(native, emulated)


@needs_debian_python
def test_python_error_exit_and_stderr() -> None:
    native, emulated = run_both([PYTHON, "-c", "import sys; print('out'); sys.stderr.write('err\\n'); sys.exit(3)"])
    assert native.returncode == 3
    assert_same(native, emulated)


def test_ls_long_listing_of_a_fixture_directory(tmp_path: Path) -> None:
    listing = tmp_path / "listing"
    listing.mkdir()
    for i, name in enumerate(("alpha", "beta.txt", "gamma.bin", ".hidden")):
        path = listing / name
        path.write_bytes(b"x" * (i * 1000 + 1))
        os.utime(path, (1_600_000_000 + i * 86400, 1_600_000_000 + i * 86400))
    (listing / "subdir").mkdir()
    (listing / "link").symlink_to("alpha")
    native, emulated = run_both(["ls", "-la", "--time-style=long-iso", str(listing)])
    assert b"beta.txt" in native.stdout and b"link -> alpha" in native.stdout
    assert_same(native, emulated)


@pytest.fixture
def generated_lines(tmp_path: Path) -> Path:
    # Few enough lines that GNU sort stays single-threaded (it starts threads for large inputs).
    lines = [f"{(i * 2654435761) % 100003:06d} line {i}\n" for i in range(20000)]
    path = tmp_path / "lines.txt"
    path.write_text("".join(lines))
    return path


def test_sort_of_a_generated_file(generated_lines: Path) -> None:
    native, emulated = run_both(["sort", str(generated_lines)])
    assert native.stdout.splitlines()[0] < native.stdout.splitlines()[-1]
    assert_same(native, emulated)


def test_sha256sum_of_a_generated_file(generated_lines: Path) -> None:
    native, emulated = run_both(["sha256sum", str(generated_lines)])
    assert native.stdout.startswith(hashlib.sha256(generated_lines.read_bytes()).hexdigest().encode())
    assert_same(native, emulated)


def test_gzip_gunzip_round_trip(generated_lines: Path) -> None:
    """gzip compresses on the runtime; gunzip (a #! script running dash, which execs gzip) restores."""
    native, compressed = run_both(["gzip", "-c", "-9", str(generated_lines)])
    assert_same(native, compressed)
    assert gzip.decompress(compressed.stdout) == generated_lines.read_bytes()
    native, restored = run_both(["gunzip", "-c"], input=compressed.stdout)
    assert_same(native, restored)
    assert restored.stdout == generated_lines.read_bytes()
    # And as one shell pipeline, both ends on the runtime.
    run = f"{sys.executable} -m fexaot_tool run --"
    piped = subprocess.run(["/bin/sh", "-c", f"{run} gzip -c {generated_lines} | {run} gunzip -c"],
                           capture_output=True, env=ENV)
    assert (piped.returncode, piped.stderr) == (0, b"") and piped.stdout == generated_lines.read_bytes()


@pytest.mark.parametrize("variant", ["probe", "probe-static", "probe-static-pie"])
def test_probe_program_dynamic_static_and_static_pie(programs: dict[str, Path], variant: str) -> None:
    program = programs[variant]
    kind = read_elf(program).kind
    assert kind == {"probe": "pie", "probe-static": "static-executable", "probe-static-pie": "static-pie"}[variant]
    native, emulated = run_both([str(program), "0", "two words", "ünïcode"])
    assert native.returncode == 0 and b"tls = 42" in native.stdout
    assert_same(native, emulated)


def test_a_non_zero_exit_status_without_a_signal(programs: dict[str, Path]) -> None:
    native, emulated = run_both([str(programs["probe-static"]), "42"])
    assert native.returncode == 42
    assert_same(native, emulated)


def test_fork_and_wait(programs: dict[str, Path], tmp_path: Path) -> None:
    stats = tmp_path / "stats.json"
    native, emulated = run_both([str(programs["forkwait"])], runtime_options=("--stats", str(stats)))
    assert native.returncode == 5 and b"status 7" in native.stdout
    assert_same(native, emulated)
    document = json.loads(stats.read_text())
    assert document["processes"] == 2  # the child's record came back to the parent
    assert document["system_calls"]["clone"] == 1 and document["system_calls"]["exit_group"] == 2
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".fexaot-part")]


# -- what only the runtime shows ---------------------------------------------------------------------


def test_cpuid_answers_are_the_documented_baseline_model(programs: dict[str, Path]) -> None:
    result = fexaot("run", "--", str(programs["cpuid"]))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert lines[0] == f"max_leaf=1 vendor={VENDOR}"
    assert lines[1] == f"leaf1 eax={STEPPING | MODEL << 4 | FAMILY << 8:#x} ecx=0 edx={BASELINE_EDX1:#x}"
    assert lines[2] == f"leaf80000001 ecx=0 edx={BASELINE_EDX81:#x}"
    assert lines[3] == "leaf7 ebx=0 ecx=0 edx=0"
    assert lines[4] == "sse2=1 sse3=0 avx2=0"


def test_profile_and_stats_attribute_blocks_to_files(programs: dict[str, Path], tmp_path: Path) -> None:
    program = programs["probe-static-pie"]
    profile_path, stats_path = tmp_path / "run.fexprof", tmp_path / "run.json"
    result = fexaot("run", "--profile-out", str(profile_path), "--stats", str(stats_path), "--", str(program), "0")
    assert result.returncode == 0, result.stderr
    identity = module_identity(program)
    profile = read_profile(str(profile_path))
    assert [m.file_id for m in profile.modules] == [identity.file_id]  # one file, nothing anonymous
    module = profile.modules[0]
    assert module.name == program.name and module.content_hash == identity.content_hash
    info = read_elf(program)
    blocks = module.counts()
    # vaddrs are in the file's own p_vaddr space: the entry point is e_entry, whatever the load base.
    assert blocks[info.e_entry] == 1
    executable = [s for s in info.load_segments if s.executable]
    assert all(any(s.p_vaddr <= v < s.p_vaddr + s.p_memsz for s in executable) for v in blocks)

    stats = json.loads(stats_path.read_text())
    assert stats["format"] == "fexaot-run-stats" and stats["exit_status"] == 0
    (entry,) = stats["modules"]
    assert entry["file_id"] == f"{identity.file_id:016x}" and int(entry["load_base"], 16) != 0
    assert entry["block_executions"] == module.executions == stats["totals"]["block_executions"]
    assert entry["distinct_blocks"] == len(module.blocks)
    assert entry["instructions"] > entry["block_executions"]
    assert stats["system_calls"]["exit_group"] == 1 and stats["system_calls"]["write"] >= 2


def test_guest_jit_code_is_anonymous_and_rewritten_code_runs_anew(programs: dict[str, Path],
                                                                  tmp_path: Path) -> None:
    stats_path, profile_path = tmp_path / "jit.json", tmp_path / "jit.fexprof"
    native, emulated = run_both([str(programs["jit"])],
                                runtime_options=("--stats", str(stats_path), "--profile-out", str(profile_path)))
    assert b"round 3: 3000" in native.stdout and b"rwx: 7 then 8" in native.stdout
    assert_same(native, emulated)
    (anonymous,) = [m for m in json.loads(stats_path.read_text())["modules"] if m["name"] == "[anonymous]"]
    # 3 rounds x 11 calls through the W^X page, then 2 through the RWX page: two addresses, 35 runs.
    assert (anonymous["file_id"], anonymous["distinct_blocks"], anonymous["block_executions"]) == (None, 2, 35)
    assert anonymous["instructions"] == 70  # mov eax, imm32; ret
    assert "[anonymous]" not in {m.name for m in read_profile(str(profile_path)).modules}


def test_dynamic_program_profile_names_loader_and_libc(programs: dict[str, Path], tmp_path: Path) -> None:
    stats_path = tmp_path / "run.json"
    result = fexaot("run", "--stats", str(stats_path), "--", str(programs["probe"]), "0")
    assert result.returncode == 0, result.stderr
    modules = {m["name"]: m for m in json.loads(stats_path.read_text())["modules"]}
    interp = read_elf(programs["probe"]).interp
    assert {"probe", "libc.so.6", "libm.so.6", os.path.basename(os.path.realpath(interp))} <= set(modules)
    libc = modules["libc.so.6"]
    assert libc["file_id"] == f"{module_identity(os.path.realpath(libc['host_path'])).file_id:016x}"


# -- bad input: one line, a non-zero status, no traceback --------------------------------------------


def test_non_elf_program(tmp_path: Path) -> None:
    program = tmp_path / "data"
    program.write_bytes(b"just some bytes\n")
    program.chmod(0o755)
    result = fexaot("run", "--", str(program))
    assert result.returncode == 1
    assert one_line_error(result) == f"fexaot run: {program}: not an ELF file (no ELF magic number)"


def test_aarch64_elf_program(programs: dict[str, Path], tmp_path: Path) -> None:
    program = tmp_path / "arm"
    data = bytearray(programs["probe"].read_bytes())
    data[18:20] = (183).to_bytes(2, "little")  # e_machine = EM_AARCH64
    program.write_bytes(bytes(data))
    program.chmod(0o755)
    result = fexaot("run", "--", str(program))
    assert result.returncode == 1
    assert one_line_error(result) == f"fexaot run: {program}: ELF file for AArch64, not x86-64"


def test_missing_interpreter(programs: dict[str, Path], tmp_path: Path) -> None:
    program = tmp_path / "nointerp"
    data = programs["probe"].read_bytes()
    interp = read_elf(programs["probe"]).interp.encode()
    missing = b"/lib64/ld-fexaot-missing.so.2"[:len(interp)].ljust(len(interp), b"x")
    program.write_bytes(data.replace(interp + b"\0", missing + b"\0", 1))
    program.chmod(0o755)
    result = fexaot("run", "--", str(program))
    assert result.returncode == 1
    assert missing.decode() in one_line_error(result) and "does not exist" in result.stderr.decode()


def test_jump_to_unmapped_memory(programs: dict[str, Path]) -> None:
    native = subprocess.run([str(programs["jump"])], capture_output=True)
    assert native.returncode == -11  # SIGSEGV
    result = fexaot("run", "--", str(programs["jump"]))
    assert result.returncode == 128 + 11
    assert one_line_error(result) == (f"fexaot run: {programs['jump']}: killed by SIGSEGV: jump to unmapped "
                                      "address 0xdead0000 at rip 0xdead0000")


def test_missing_program_and_command() -> None:
    result = fexaot("run", "--", "/nonexistent/program")
    assert result.returncode == 1
    assert one_line_error(result) == "fexaot run: /nonexistent/program: no such file"
    result = fexaot("run", "--", "fexaot-no-such-command")
    assert result.returncode == 1 and "command not found" in one_line_error(result)


def test_threads_are_refused_naming_the_call(programs: dict[str, Path]) -> None:
    result = fexaot("run", "--", str(programs["thread"]))
    assert result.returncode == 1
    message = one_line_error(result)
    assert "clone(CLONE_VM|" in message and "CLONE_THREAD" in message and "threads are not supported" in message


@needs_debian_python
def test_non_pie_guest_colliding_with_a_non_pie_host_python() -> None:
    """Debian's python3.11 is linked at 0x400000; run as the host, it leaves no room for itself as a guest."""
    site = next(p for p in sys.path if p.endswith("site-packages"))
    env = dict(ENV, PYTHONPATH=os.pathsep.join([site, str(Path(__file__).parent.parent)]))
    probe = subprocess.run([PYTHON, "-c", "import unicorn, iced_x86, xxhash"], env=env, capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"{PYTHON} cannot import the venv's packages: {probe.stderr.decode().strip()[-200:]}")
    result = subprocess.run([PYTHON, "-m", "fexaot_tool", "run", "--", PYTHON, "-c", "pass"], env=env,
                            capture_output=True)
    assert result.returncode == 1
    message = one_line_error(result)
    assert "collides with the runtime's own memory" in message and "0x400000" in message


def test_recall_of_executed_blocks_in_the_static_codemap(programs: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("fexaot_tool.discover")
    program = programs["probe-static"]
    profile_path = tmp_path / "run.fexprof"
    assert fexaot("run", "--profile-out", str(profile_path), "--", str(program)).returncode == 0
    result = fexaot("profile", "recall", str(profile_path), str(program), "--json", "--missed", "1000")
    assert result.returncode == 0, result.stderr
    (report,) = json.loads(result.stdout)
    (module,) = read_profile(str(profile_path)).modules
    assert report["module"] == program.name and report["executed_starts"] == len(module.blocks)
    missed = {int(v, 16) for v in report["missed"]}
    assert len(missed) == report["executed_starts"] - report["codemap_starts"]
    assert missed <= set(module.counts())
    assert report["recall"] > 0.95  # unicorn's extra splits (after rep string instructions) are the misses


def test_in_process_run_returns_the_status_and_gives_memory_back(programs: dict[str, Path], tmp_path: Path,
                                                                   capfd: pytest.CaptureFixture) -> None:
    from fexaot_tool.runtime import GuestProcess, RunOptions

    process = GuestProcess(RunOptions(stats_out=str(tmp_path / "s.json")), [str(programs["probe-static"]), "3"],
                           environ={b"FEXAOT_PROBE": b"in-process"})
    result = process.run()
    out, err = capfd.readouterr()
    assert result.exit_status == 3 and "FEXAOT_PROBE = in-process" in out and "to stderr: 22" in err
    assert result.stats is not None and result.stats["exit_status"] == 3
    assert len(process.memory.table) == 0 and process.engine is None
