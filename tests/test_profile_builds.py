"""Profile-guided builds: the compiler filters, hot-set snapshots and what SCons rebuilds.

The programs are tiny static executables without libc (so a compile takes a
fraction of a second) whose profiles the x86 reference runtime records; the
rebuild-threshold test adds the host's libc, whose codemap has enough blocks
to cross the default thresholds with profiles written from it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fexaot_tool.bench.project import SconsProject
from fexaot_tool.cache.compile import PROFILE_HOT, PROFILE_REACHED, compile_file, compile_module
from fexaot_tool.cache.format import Filter, SectionKind
from fexaot_tool.cache.inspect import summarize
from fexaot_tool.cache.key import TranslatorConfig, module_identity
from fexaot_tool.cache.reader import CacheFile
from fexaot_tool.discover import ElfImage, build_codemap
from fexaot_tool.discover.elfimage import SHT_SYMTAB
from fexaot_tool.profile import encode, make_module, make_profile, read_profile
from fexaot_tool.profile.hotset import Thresholds, decide, snapshot

HOST_LIBC = "/lib/x86_64-linux-gnu/libc.so.6"
MULTIARCH_LIBC = "/usr/lib/x86_64-linux-gnu/libc.so.6"

# A hot loop with a cold branch (never taken) that calls another function, and a
# function nothing calls.  -O1 keeps the cold branch inside hot_loop's FDE.
HOTCOLD = r"""
static volatile long sink;

__attribute__((noinline)) long cold_helper(long x) { return x * 3 + sink; }

__attribute__((noinline)) long never_called(long x)
{
    long r = 0;
    for (long i = 0; i < x; i++)
        r += i * sink;
    return r;
}

__attribute__((noinline)) long hot_loop(long n)
{
    long r = 0;
    for (long i = 0; i < n; i++) {
        if (__builtin_expect(i == 1000003, 0)) {
            r += cold_helper(i);
            r ^= sink;
        }
        r += i ^ sink;
    }
    return r;
}

void _start(void)
{
    sink = hot_loop(50);
    __asm__ volatile("mov $60, %eax\n\txor %edi, %edi\n\tsyscall");
    __builtin_unreachable();
}
"""
# A second program, so a test can tell "rebuilds exactly the affected cache".
OTHER = r"""
static volatile long sink;
__attribute__((noinline)) long work(long n) { long r = 0; for (long i = 0; i < n; i++) r += i ^ sink; return r; }
void _start(void)
{
    sink = work(20);
    __asm__ volatile("mov $60, %eax\n\txor %edi, %edi\n\tsyscall");
    __builtin_unreachable();
}
"""
PROGRAMS = {"/usr/bin/hotcold": HOTCOLD, "/usr/bin/other": OTHER}


def fexaot(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "fexaot_tool", *args], capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"fexaot {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def programs(tmp_path_factory) -> Path:
    """A rootfs of the two static programs, and a profile of one run of each (x86 reference engine)."""
    root = tmp_path_factory.mktemp("pgo")
    rootfs = root / "rootfs"
    for guest, source in PROGRAMS.items():
        c = root / (Path(guest).name + ".c")
        c.write_text(source)
        out = rootfs / guest.lstrip("/")
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["gcc", "-static", "-nostdlib", "-O1", "-fno-inline", "-o", str(out), str(c)], check=True)
        fexaot("run", "--rootfs", str(rootfs), "--profile-out", str(root / f"{out.name}.fexprof"), "--", guest)
    return root


def symbols(path: Path) -> dict[str, tuple[int, int]]:
    return {s.name: (s.st_value, s.st_value + s.st_size)
            for s in ElfImage(str(path)).function_symbols(SHT_SYMTAB)}


def in_function(starts, bounds: tuple[int, int]) -> set[int]:
    return {s for s in starts if bounds[0] <= s < bounds[1]}


def codemap_flags(image) -> dict[int, int]:
    """Block start (virtual address) -> CODEMAP flags of a compiled module image."""
    from fexaot_tool.cache.format import CodemapEntry

    data = image.sections[SectionKind.CODEMAP]
    step = CodemapEntry.STRUCT.size
    return {e.start + image.facts.image_base: e.flags for e in
            (CodemapEntry.from_fields(CodemapEntry.STRUCT.unpack_from(data, i)) for i in range(0, len(data), step))}


def translated_starts(image) -> set[int]:
    from fexaot_tool.cache.format import BlockIndexEntry

    data = image.sections.get(SectionKind.BLOCK_INDEX, b"")
    step = BlockIndexEntry.STRUCT.size
    return {BlockIndexEntry.STRUCT.unpack_from(data, i)[0] + image.facts.image_base for i in range(0, len(data), step)}


def block_code(image) -> dict[int, bytes]:
    """Block start (virtual address) -> its AArch64 code as compiled (before relocation)."""
    from fexaot_tool.cache.format import BlockIndexEntry

    data, code = image.sections.get(SectionKind.BLOCK_INDEX, b""), image.sections.get(SectionKind.CODE, b"")
    entries = (BlockIndexEntry.from_fields(BlockIndexEntry.STRUCT.unpack_from(data, i))
               for i in range(0, len(data), BlockIndexEntry.STRUCT.size))
    return {e.guest_offset + image.facts.image_base: code[e.code_offset:e.code_offset + e.code_size] for e in entries}


# --- the filters -------------------------------------------------------------------


def test_filters_select_what_they_say(programs):
    exe = programs / "rootfs/usr/bin/hotcold"
    profile = read_profile(str(programs / "hotcold.fexprof"))
    codemap = build_codemap(str(exe))
    starts = {b.start for b in codemap.blocks}
    fn = symbols(exe)
    executed = {v for v, _ in profile.modules[0].blocks}
    hot_loop = in_function(starts, fn["hot_loop"])
    cold = hot_loop - executed  # the cold branch: the call to cold_helper and what follows its return
    assert len(cold) == 2, "the fixture's cold branch is two blocks (up to the call, after the return)"

    verify = compile_module(str(exe), filter=Filter.VERIFY)
    assert translated_starts(verify) == set() and SectionKind.CODE not in verify.sections
    speed = compile_module(str(exe), filter=Filter.SPEED)
    assert translated_starts(speed) == starts
    assert not any(f & (PROFILE_HOT | PROFILE_REACHED) for f in codemap_flags(speed).values())

    chosen = compile_module(str(exe), filter=Filter.SPEED_PROFILE, profile=profile)
    flags = codemap_flags(chosen)
    hot = {s for s, f in flags.items() if f & PROFILE_HOT}
    reached = {s for s, f in flags.items() if f & PROFILE_REACHED}
    assert hot == executed  # every executed start is a codemap start here
    assert reached == cold  # the cold branch, reached by the jcc and the call's return
    assert translated_starts(chosen) == hot | reached
    # Not the callee of the cold branch, not the function nothing calls.
    assert not in_function(hot | reached, fn["cold_helper"])
    assert not in_function(hot | reached, fn["never_called"])
    # Its codemap is scoped: exactly the blocks of the functions that ran, as the
    # whole file's codemap has them; the others were never decoded.
    ran = [fn[name] for name in ("hot_loop", "_start")]
    assert set(flags) == {s for s in starts if any(lo <= s < hi for lo, hi in ran)}
    assert in_function(starts, fn["never_called"]) and not in_function(set(flags), fn["never_called"])
    assert not in_function(set(flags), fn["cold_helper"])

    # Hot blocks get the optimised translation, reached ones the one without IR passes.
    from fexaot_tool.cache.compile import guest_code
    from fexaot_tool.translate import translate_block
    guest = guest_code(ElfImage(str(exe)), chosen.facts.image_base)
    code = block_code(chosen)
    for block in codemap.blocks:
        if block.start in hot | reached:
            plain = translate_block(guest, block.start, block.length, optimise=block.start in hot).code
            assert code[block.start] == plain, hex(block.start)
    assert any(translate_block(guest, s, codemap.block_at(s).length).code != code[s] for s in reached)

    # A block is hot from HOT_THRESHOLD executions: at 10 only the loop body is.
    loop_only = compile_module(str(exe), filter=Filter.SPEED_PROFILE, profile=profile, hot_threshold=10)
    flags = codemap_flags(loop_only)
    hot10 = {s for s, f in flags.items() if f & PROFILE_HOT}
    assert hot10 == {v for v, c in profile.modules[0].blocks if c >= 10} and len(hot10) == 2
    assert not in_function(translated_starts(loop_only), fn["_start"])


def test_a_module_the_profile_does_not_mention_gets_no_code(programs):
    other = programs / "rootfs/usr/bin/other"
    profile = read_profile(str(programs / "hotcold.fexprof"))
    image = compile_module(str(other), filter=Filter.SPEED_PROFILE, profile=profile)
    assert translated_starts(image) == set()
    assert image.sections[SectionKind.CODEMAP] == b""  # nothing in scope: nothing discovered
    assert compile_module(str(other), filter=Filter.VERIFY).sections[SectionKind.CODEMAP]


def test_compile_cli_inspect_and_determinism(programs, tmp_path):
    exe = str(programs / "rootfs/usr/bin/hotcold")
    prof = str(programs / "hotcold.fexprof")
    one, two = tmp_path / "one.fexcache", tmp_path / "two.fexcache"
    fexaot("compile", "--filter", "speed-profile", "--profile", prof, "-o", str(one), exe)
    compile_file(exe, str(two), TranslatorConfig(), Filter.SPEED_PROFILE, profile=read_profile(prof))
    assert one.read_bytes() == two.read_bytes()
    with CacheFile.open(str(one)) as cache:
        cache.verify_all()
        (module,) = summarize(cache).modules
        assert cache.filter == Filter.SPEED_PROFILE
    executed = len(read_profile(prof).modules[0].blocks)
    assert (module.from_profile, module.from_reachability) == (executed, 2)
    shown = fexaot("inspect", str(one)).stdout
    assert "speed-profile" in shown and "from profile" in shown
    assert '"from_reachability": 2' in fexaot("inspect", "--json", str(one)).stdout


def test_compile_cli_refuses_bad_profiles_in_one_line(programs, tmp_path):
    exe = str(programs / "rootfs/usr/bin/hotcold")
    bad = tmp_path / "bad.fexprof"
    bad.write_bytes(encode(make_profile([])) + b"\0" * 4)
    proc = fexaot("compile", "--filter", "speed-profile", "--profile", str(bad), "-o", str(tmp_path / "x"), exe,
                  check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [f"fexaot compile: {bad}: not a valid fexaot profile: "
                                                f"header says 48 bytes, file has 52 (truncated or padded)"]
    proc = fexaot("compile", "--filter", "speed-profile", "-o", str(tmp_path / "x"), exe, check=False)
    assert proc.returncode == 1 and "needs --profile" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "x").exists()


# --- snapshots (pure) -----------------------------------------------------------------


def test_snapshot_decisions():
    t = Thresholds(hot_threshold=1, min_new_blocks=100, min_new_percent=2)
    h = bytes(range(16))
    fid = int.from_bytes(h[:8], "big")
    base = frozenset(range(0, 40_000, 4))  # 10,000 blocks
    old = snapshot(fid, h, "m", base, 1)
    assert decide(None, fid, base, t).replace
    assert not decide(old, fid, base, t).replace and decide(old, fid, base, t).reason == ""
    plus = lambda n: base | frozenset(range(1 << 20, (1 << 20) + n))  # noqa: E731
    assert not decide(old, fid, plus(10), t).replace  # 10 new blocks: held back
    assert not decide(old, fid, plus(150), t).replace  # 150 blocks but 1.5 %: held back
    assert "held back" in decide(old, fid, plus(150), t).reason
    assert decide(old, fid, plus(200), t).replace  # 200 blocks and 2 %
    assert not decide(old, fid, frozenset(list(base)[:5000]), t).replace  # losing blocks is never a reason
    assert decide(old, fid ^ 1, base, t).replace  # another file: start again
    empty = snapshot(fid, h, "m", frozenset(), 1)
    assert decide(empty, fid, frozenset({8}), t).replace  # from no code to some
    assert decide(old, fid, base, Thresholds(hot_threshold=5)).replace  # another threshold means another set
    # Deterministic bytes: counts are the threshold, whatever the profile counted.
    assert encode(snapshot(fid, h, "m", base, 3)) == encode(make_profile([make_module(fid, h, "m", dict.fromkeys(base, 3))]))


# --- SCons builds ------------------------------------------------------------------

TARGETS = {
    "hotcold": '[app]\nprogram = "/usr/bin/hotcold"\nfilter = "speed-profile"\nprofiles = "profiles"\n',
    "other": '[app]\nprogram = "/usr/bin/other"\nfilter = "speed-profile"\n',
}


def _project(path: Path, programs: Path, targets=TARGETS, with_libc: bool = False) -> SconsProject:
    rootfs = path / "rootfs"
    shutil.copytree(programs / "rootfs", rootfs, symlinks=True)
    if with_libc:
        (rootfs / MULTIARCH_LIBC.lstrip("/")).parent.mkdir(parents=True)
        shutil.copyfile(HOST_LIBC, rootfs / MULTIARCH_LIBC.lstrip("/"))
    project = SconsProject(path / "project", rootfs, targets)
    (project.path / "profiles").mkdir()
    return project


def _caches(project: SconsProject) -> dict[str, bytes]:
    return {str(p.relative_to(project.out)): p.read_bytes() for p in sorted(project.out.rglob("*.fexcache"))}


def test_filter_switch_rebuilds_and_switching_back_matches_a_fresh_build(programs, tmp_path):
    project = _project(tmp_path / "a", programs)
    shutil.copy(programs / "hotcold.fexprof", project.path / "profiles")
    shutil.copy(programs / "other.fexprof", project.path / "profiles")
    first = project.scons("hotcold", "other")
    assert sorted(first.compiled) == ["/usr/bin/hotcold", "/usr/bin/other"]
    assert "profile /usr/bin/hotcold: new snapshot: 6 hot blocks" in first.stdout
    profiled = _caches(project)
    with CacheFile.open(str(project.out / "hotcold.fexcache")) as cache:
        assert cache.filter == Filter.SPEED_PROFILE
        (module,) = summarize(cache).modules
        assert (module.from_profile, module.from_reachability) == (6, 2)

    assert project.scons("hotcold", "other").compiled == []
    speed = project.scons("hotcold", "other", "FILTER=speed")  # the command line wins over the targets' filter
    assert sorted(speed.compiled) == ["/usr/bin/hotcold", "/usr/bin/other"]
    with CacheFile.open(str(project.out / "hotcold.fexcache")) as cache:
        assert cache.filter == Filter.SPEED
    back = project.scons("hotcold", "other")
    assert sorted(back.compiled) == ["/usr/bin/hotcold", "/usr/bin/other"]
    assert _caches(project) == profiled

    fresh = _project(tmp_path / "b", programs)
    shutil.copy(programs / "hotcold.fexprof", fresh.path / "profiles")
    shutil.copy(programs / "other.fexprof", fresh.path / "profiles")
    fresh.scons("hotcold", "other")
    assert _caches(fresh) == profiled


@pytest.fixture(scope="module")
def libc_starts() -> list[int]:
    return [b.start for b in build_codemap(HOST_LIBC).blocks]


def _libc_profile(path: Path, starts: list[int]) -> None:
    identity = module_identity(HOST_LIBC)
    module = make_module(identity.file_id, identity.content_hash, "libc.so.6", dict.fromkeys(starts, 3))
    path.write_bytes(encode(make_profile([module])))


def test_profile_gains_rebuild_only_past_the_thresholds(programs, tmp_path, libc_starts):
    targets = {**TARGETS, "libs": '[set]\ndirs = ["/usr/lib"]\nfilter = "speed-profile"\n'}
    project = _project(tmp_path, programs, targets, with_libc=True)
    profiles = project.path / "profiles"
    shutil.copy(programs / "hotcold.fexprof", profiles)
    _libc_profile(profiles / "libc-1.fexprof", libc_starts[:1500])
    everything = ("hotcold", "other", "libs")
    first = project.scons(*everything)
    assert sorted(first.compiled) == ["/usr/bin/hotcold", "/usr/bin/other", MULTIARCH_LIBC]
    assert f"profile {MULTIARCH_LIBC}: new snapshot: 1,500 hot blocks" in first.stdout

    # 10 new libc blocks (and another run of hotcold, which gains nothing): held back, nothing compiled.
    _libc_profile(profiles / "libc-2.fexprof", libc_starts[1500:1510])
    shutil.copy(programs / "hotcold.fexprof", profiles / "hotcold-again.fexprof")
    small = project.scons(*everything)
    assert small.compiled == [] and small.bundled == []
    assert [line for line in small.stdout.splitlines() if line.startswith("profile ")] == [
        f"profile {MULTIARCH_LIBC}: hot set 1,500 -> 1,510 blocks (+10 new, +0.7%): held back "
        f"(a rebuild needs +1,000 new blocks and +2%)"]

    # 1,500 more: past both thresholds; only libc's cache is compiled, and explain says why.
    _libc_profile(profiles / "libc-3.fexprof", libc_starts[1510:3010])
    big = project.scons("--debug=explain", *everything)
    assert big.compiled == [MULTIARCH_LIBC]
    assert f"profile {MULTIARCH_LIBC}: hot set 1,500 -> 3,010 blocks (+1,510 new, +100.7%): snapshot replaced" \
        in big.stdout
    snapshot_path = f"cache/profiles{MULTIARCH_LIBC}.fexprof"
    assert f"because `{snapshot_path}' changed" in big.stdout
    with CacheFile.open(str(project.out / f"objects{MULTIARCH_LIBC}.fexcache")) as cache:
        (module,) = summarize(cache).modules
        assert module.from_profile == 3010 and module.from_reachability > 0
    assert read_profile(str(project.out / snapshot_path.removeprefix("cache/"))).modules[0].blocks == tuple(
        (s, 1) for s in sorted(libc_starts[:3010]))

    # A lower threshold in a variable lets a small gain through.
    _libc_profile(profiles / "libc-4.fexprof", libc_starts[3010:3020])
    lowered = project.scons(*everything, "MIN_NEW_BLOCKS=5", "MIN_NEW_PERCENT=0.1")
    assert lowered.compiled == [MULTIARCH_LIBC]


def test_bad_profile_inputs_are_one_clear_line(programs, tmp_path):
    project = _project(tmp_path, programs)
    missing = project.scons("other", "FILTER=speed-profile", "PROFILE_DIR=nowhere", check=False)
    assert missing.returncode != 0 and "Traceback" not in missing.stderr
    assert f"{project.path / 'nowhere'}: no such profile directory (named by PROFILE_DIR)" in missing.stderr

    # One object, two filters in one build: the app's (speed-profile) and the default (speed).
    both = project.scons("hotcold", "cache/objects/usr/bin/hotcold.fexcache", check=False)
    assert both.returncode != 0 and "Traceback" not in both.stderr
    assert ("/usr/bin/hotcold is needed by app hotcold with filter speed-profile and by "
            "cache/objects/usr/bin/hotcold.fexcache with filter speed") in both.stderr

    bad = project.path / "profiles" / "broken.fexprof"
    bad.write_bytes(b"FXPROF\r\n" + b"\0" * 60)
    result = project.scons("hotcold", check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("fexaot profile:")]
    assert lines == [f"fexaot profile: {bad}: profile format version 0; this fexaot reads version 1"]
    assert not (project.out / "hotcold.fexcache").exists()


# --- the filters benchmark ---------------------------------------------------------


def test_bench_filters_measures_what_each_filter_keeps(programs, tmp_path):
    """``fexaot bench filters`` on the hot/cold program: it profiles a run, builds
    speed and speed-profile bundles, runs each on the AArch64 engine and reports
    sizes and shares that agree with the bundles it built."""
    from fexaot_tool.bench.filters import run_filters_benchmark

    rootfs = programs / "rootfs"
    result = run_filters_benchmark(str(rootfs), tmp_path, "hotcold", ("/usr/bin/hotcold",), [1, 10], repeat=1,
                                   program="/usr/bin/hotcold")
    speed, every, loop = result["variants"]
    assert [v["name"] for v in result["variants"]] == ["speed", "speed-profile/1", "speed-profile/10"]
    for v in result["variants"]:
        bundle = tmp_path / "projects" / v["name"].replace("/", "-") / "cache/hotcold.fexcache"
        assert v["bundle_bytes"] == bundle.stat().st_size and v["compile_actions"] == 1
        assert v["cpu_s"][0] > 0 and v["size_share"] == round(v["bundle_bytes"] / speed["bundle_bytes"], 4)
        assert abs(v["executed"]["cache"]["instructions"] / _guest_instructions(v) - v["executed"]["cache"]["share"]) < 1e-5
    # speed and a threshold-1 profile of this very run hold every block it runs.
    assert speed["executed"]["cache"]["share"] == 1.0 and every["executed"]["cache"]["share"] == 1.0
    assert every["executed"]["cache"]["instructions"] == speed["executed"]["cache"]["instructions"]
    # At 10, _start and the loop's entry ran once: the JIT runs them, the loop runs from the cache.
    assert loop["executed"]["jit"]["instructions"] > 0 and 0.5 < loop["executed"]["cache"]["share"] < 1.0
    assert speed["bundle_bytes"] >= every["bundle_bytes"] >= loop["bundle_bytes"]  # regions are page-aligned
    assert not speed["meets_targets"]


def _guest_instructions(variant) -> int:
    executed = variant["executed"]
    return sum(executed[k]["instructions"] for k in ("cache", "jit", "fallback"))


def _successors_by_decoding(image, block) -> tuple[int, ...]:
    """A block's edges for static reachability, from decoding its last instruction again."""
    import iced_x86

    from fexaot_tool.discover import Flag
    from fexaot_tool.discover.flow import TRANSFER_FACTS, Transfer, transfer_of

    last = None
    for last in iced_x86.Decoder(64, image.read(block.start, block.length), ip=block.start):
        pass
    transfer = transfer_of(last)
    facts = TRANSFER_FACTS[transfer]
    out = []
    if facts.has_target and transfer in (Transfer.JUMP, Transfer.BRANCH, Transfer.XBEGIN):
        out.append(last.near_branch_target)
    if facts.falls_through and not block.flags & (Flag.NO_RETURN_CALL | Flag.UNDECODABLE_END):
        out.append(block.end)
    return tuple(out)


def test_discovery_edges_are_the_edges_of_the_decoded_blocks():
    """The compiler's reachability follows the edges discovery kept; decoding each block's last
    instruction again gives the same edges, for every block of a scoped libc codemap."""
    import random

    from fexaot_tool.cache.compile import select_profile_blocks
    from fexaot_tool.discover import explore_image

    image = ElfImage(HOST_LIBC)
    rnd = random.Random(3)
    counts = {b.start: rnd.randint(1, 5) for b in rnd.sample(build_codemap(HOST_LIBC).blocks, 3000)}
    found = explore_image(image, within=list(counts))
    assert set(found.successors) == {b.start for b in found.codemap.blocks}
    assert all(found.successors[b.start] == _successors_by_decoding(image, b) for b in found.codemap.blocks)
    assert len(select_profile_blocks(found, counts, 2).reached) > 1000
