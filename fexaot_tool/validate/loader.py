"""Loader agreement: fexaot's dependency closures against the real glibc loader.

For every dynamically linked x86-64 ELF file under some host directories, run
``/lib64/ld-linux-x86-64.so.2 --list FILE`` in an empty environment (no
LD_LIBRARY_PATH, LD_PRELOAD or GLIBC_TUNABLES) from ``/``, and compare what it
lists with :meth:`ClosureResolver.closure` for the same file: the same files
(compared by realpath, not by fexaot's own resolver) in the same order, and the
same names not found.  ``--list`` stops at the first library it cannot open; for
such files the loader runs again in ldd's trace mode (``LD_TRACE_LOADED_OBJECTS=1``),
which lists every object and prints ``NAME => not found`` for each missing one.

The loader runs on the host, so the rootfs is ``/``, and the emulated loader gets
the host CPU's hwcaps subdirectories (:func:`probe_host_config`) rather than the
target runtime's baseline x86-64.  Tests also run the loader chrooted in a
fixture rootfs (``chroot=``), where paths are resolved inside that rootfs.
"""

from __future__ import annotations

import enum
import os
import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from fexaot_tool.elf.closure import Closure, ClosureResolver, LoaderConfig, ld_so_conf_dirs
from fexaot_tool.elf.reader import ElfError, read_elf
from fexaot_tool.elf.rootfs import Rootfs
from fexaot_tool.errors import FexaotError

HOST_LOADER = "/lib64/ld-linux-x86-64.so.2"
HOST_LDCONFIG = "/sbin/ldconfig"
DEFAULT_DIRS = ("/usr/bin", "/usr/sbin", "/usr/lib/x86_64-linux-gnu")
_TIMEOUT_SECONDS = 60

# ld.so prints one object per line: "NAME => PATH (0xADDR)", "NAME => not found",
# or "PATH (0xADDR)" when it was asked for the object by that path (ld.so, the vDSO).
_NOT_FOUND = re.compile(r"(?P<name>.+) => not found")
_FOUND = re.compile(r"(?P<name>.+) => (?P<path>.*) \(0x[0-9a-f]+\)")
_BARE = re.compile(r"(?P<path>.+) \(0x[0-9a-f]+\)")
_LOAD_ERROR = re.compile(r"error while loading shared libraries: (?P<name>.+?): (?P<message>.*)$")
_CANNOT_OPEN = "cannot open shared object file"
# ldconfig -p: "NAME (FLAGS) => PATH", FLAGS like "libc6,x86-64" or "libc6,x86-64, hwcap: 0x..."
_CACHE_ENTRY = re.compile(r"(?P<name>\S+) \((?P<flags>[^)]*)\) => (?P<path>.+)")


class LoaderCheckError(FexaotError):
    """The agreement check cannot run here (wrong rootfs, no host loader, unexpected loader)."""


class Outcome(enum.StrEnum):
    AGREE = "agree"
    DISAGREE = "disagree"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class ListedObject:
    """One line of the loader's listing: a name and the path it was found at (None: not found)."""

    name: str
    path: str | None


@dataclass(frozen=True)
class LoaderRun:
    """What one run of the real loader printed, parsed."""

    returncode: int
    listing: tuple[ListedObject, ...]
    """Objects in printed order, without the vDSO and without ld.so itself."""
    error: str | None
    """The loader's last stderr line when it failed."""
    unparsed: tuple[str, ...] = ()


@dataclass(frozen=True)
class RealLoaderResult:
    listed: LoaderRun
    """``ld.so --list FILE``."""
    traced: LoaderRun | None
    """Trace mode, run only when --list stopped at a library it could not open."""


@dataclass(frozen=True)
class FileCheck:
    path: str
    outcome: Outcome
    detail: str = ""
    """Why the file was skipped, or what differs."""


@dataclass(frozen=True)
class CacheComparison:
    """The emulated ld.so.cache against the real one, as ``ldconfig -p`` prints it."""

    names: int
    """Library names either side has an entry for."""
    differences: tuple[str, ...]

    def summary(self) -> str:
        return f"ld.so.cache emulation: {self.names} names, {len(self.differences)} differ from ldconfig -p"


@dataclass(frozen=True)
class AgreementReport:
    checks: tuple[FileCheck, ...]
    elf_files: int
    """x86-64 ELF files found under the directories."""
    not_checked: Counter[str]
    """Why the other ELF files (not dynamically linked, not loadable) were not checked."""
    seconds: float
    ld_so_cache: CacheComparison | None = None
    """None when there was no ldconfig to ask."""

    def count(self, outcome: Outcome) -> int:
        return sum(1 for c in self.checks if c.outcome is outcome)

    @property
    def skip_reasons(self) -> Counter[str]:
        return Counter(c.detail for c in self.checks if c.outcome is Outcome.SKIPPED)

    @property
    def ok(self) -> bool:
        cache_ok = self.ld_so_cache is None or not self.ld_so_cache.differences
        return self.count(Outcome.DISAGREE) == 0 and cache_ok

    def summary(self) -> str:
        reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(self.skip_reasons.items()))
        return (
            f"loader agreement: {len(self.checks)} files, {self.count(Outcome.AGREE)} agree, "
            f"{self.count(Outcome.DISAGREE)} disagree, {self.count(Outcome.SKIPPED)} skipped"
            + (f" ({reasons})" if reasons else "")
        )


def parse_listing(stdout: str, loader: str = HOST_LOADER) -> tuple[tuple[ListedObject, ...], tuple[str, ...]]:
    """The objects of an ``ld.so --list`` output, and the lines that are not listing lines.

    The vDSO (a bare name without ``/``) and the loader itself (printed with the
    path it was invoked as) are dropped: neither is a file a closure holds.
    """
    listing: list[ListedObject] = []
    unparsed: list[str] = []
    for line in stdout.splitlines():
        text = line.strip()
        if not text or text == "statically linked":
            continue
        if match := _NOT_FOUND.fullmatch(text):
            listing.append(ListedObject(match["name"], None))
        elif match := _FOUND.fullmatch(text) or _BARE.fullmatch(text):
            path = match["path"]
            if "/" in path and path != loader:
                listing.append(ListedObject(match.groupdict().get("name") or path, path))
        else:
            unparsed.append(text)
    return tuple(listing), tuple(unparsed)


def run_loader(path: str, *, trace: bool = False, loader: str = HOST_LOADER, chroot: str | None = None) -> LoaderRun:
    """Run the real loader over ``path``: ``--list``, or ldd's trace mode when ``trace``.

    With ``chroot``, the loader runs chrooted in that directory (root only), so
    it sees that rootfs's files, ld.so.cache and ld.so itself.
    """
    if trace:
        argv, env = [loader, path], {"LD_TRACE_LOADED_OBJECTS": "1"}
    else:
        argv, env = [loader, "--list", path], {}

    def enter_chroot() -> None:
        assert chroot is not None
        os.chroot(chroot)
        os.chdir("/")

    # preexec_fn is not safe with threads: check_loader's pool runs without chroot.
    try:
        proc = subprocess.run(argv, env=env, cwd="/", capture_output=True, timeout=_TIMEOUT_SECONDS,
                              preexec_fn=enter_chroot if chroot is not None else None)
    except subprocess.TimeoutExpired:
        return LoaderRun(-signal.SIGKILL, (), f"timed out after {_TIMEOUT_SECONDS} s")
    stdout = proc.stdout.decode("utf-8", "surrogateescape")
    stderr = proc.stderr.decode("utf-8", "surrogateescape").strip()
    listing, unparsed = parse_listing(stdout, loader)
    error = stderr.splitlines()[-1] if proc.returncode != 0 and stderr else None
    return LoaderRun(proc.returncode, listing, error, unparsed)


def run_real_loader(path: str, *, loader: str = HOST_LOADER, chroot: str | None = None) -> RealLoaderResult:
    """``--list``, and the trace-mode listing too when --list stopped at a missing library."""
    listed = run_loader(path, loader=loader, chroot=chroot)
    traced = None
    if listed.error is not None and _CANNOT_OPEN in listed.error:
        traced = run_loader(path, trace=True, loader=loader, chroot=chroot)
    return RealLoaderResult(listed, traced)


def judge(path: str, closure: Closure, real: RealLoaderResult,
          realpath: Callable[[str], str] = os.path.realpath) -> FileCheck:
    """Compare one file's closure with what the real loader did for it.

    ``path`` should be canonical: ``ld.so --list`` takes the program's $ORIGIN
    from the path as given, the closure from the resolved file (as execve does).
    ``realpath`` turns a path the loader printed into the canonical path to
    compare with the closure's (the host's realpath by default).
    """
    listed, traced = real.listed, real.traced
    if listed.returncode < 0:
        return FileCheck(path, Outcome.SKIPPED, f"loader killed by {signal.Signals(-listed.returncode).name}")
    if any(m.named_in == "PT_INTERP" for m in closure.missing):
        return FileCheck(path, Outcome.SKIPPED, "PT_INTERP not in the rootfs (ld.so --list ignores PT_INTERP)")
    if traced is None:
        return _compare(path, closure, listed, realpath)
    # --list stopped at the first library it could not open: that must be the
    # first name fexaot cannot find, and the full trace listing must agree.
    error = _LOAD_ERROR.search(listed.error or "")
    first_missing = closure.missing[0].name if closure.missing else None
    if error is None or error["name"] != first_missing:
        return FileCheck(path, Outcome.DISAGREE, f"loader stops at {listed.error!r}; fexaot's first missing name is {first_missing}")
    if traced.returncode < 0:
        return FileCheck(path, Outcome.SKIPPED, f"loader killed by {signal.Signals(-traced.returncode).name} in trace mode")
    return _compare(path, closure, traced, realpath)


def _compare(path: str, closure: Closure, run: LoaderRun, realpath: Callable[[str], str]) -> FileCheck:
    if run.unparsed:
        return FileCheck(path, Outcome.DISAGREE, f"unparsed loader output: {run.unparsed[0]!r}")
    fatal = next((m for m in closure.missing if m.fatal), None)
    if run.error is not None and not run.listing:
        if fatal is not None and run.error.endswith(f"error while loading shared libraries: {fatal.reason}"):
            return FileCheck(path, Outcome.AGREE)
        return FileCheck(path, Outcome.DISAGREE, f"loader failed ({run.error}); fexaot: {_describe(closure)}")
    if fatal is not None:
        return FileCheck(path, Outcome.DISAGREE,
                         f"fexaot predicts the loader stops at {fatal.name} ({fatal.reason}), but it listed {len(run.listing)} objects")

    expected = [o.path for o in closure.libraries]
    listed = [realpath(os.path.join("/", o.path)) for o in run.listing if o.path is not None]
    not_found = sorted(o.name for o in run.listing if o.path is None)
    expected_missing = sorted(m.name for m in closure.missing)
    if listed == expected and not_found == expected_missing:
        return FileCheck(path, Outcome.AGREE)
    problems = []
    if listed != expected:
        only_loader = list((Counter(listed) - Counter(expected)).elements())
        only_fexaot = list((Counter(expected) - Counter(listed)).elements())
        if not only_loader and not only_fexaot:
            problems.append(f"same objects in another order: loader {listed}, fexaot {expected}")
        else:
            problems.append(f"only the loader loads {only_loader}; only fexaot loads {only_fexaot}")
    if not_found != expected_missing:
        problems.append(f"the loader misses {not_found}; fexaot misses {expected_missing}")
    return FileCheck(path, Outcome.DISAGREE, "; ".join(problems))


def _describe(closure: Closure) -> str:
    missing = ", ".join(f"{m.name} ({m.reason})" for m in closure.missing) or "nothing missing"
    return f"{len(closure.libraries)} libraries, {missing}"


def probe_host_config(probe_program: str, loader: str = HOST_LOADER) -> LoaderConfig:
    """The host loader's search configuration, as it reports it itself.

    ``ld.so --help`` gives the system directories, the glibc-hwcaps
    subdirectories this CPU supports, the legacy HWCAP names and AT_PLATFORM.  A
    run with ``LD_DEBUG=libs`` and a probe ``LD_LIBRARY_PATH=.../$LIB`` shows how
    $LIB expands and every subdirectory the loader tries: those must be exactly
    what the resulting :class:`LoaderConfig` produces, or the check refuses to
    run.  ``probe_program`` is any file with a DT_NEEDED entry.
    """
    help_text = subprocess.run([loader, "--help"], env={}, capture_output=True, text=True, check=False).stdout
    system_dirs: list[str] = []
    hwcaps: list[str] = []
    legacy_printed: list[str] = []
    platform = None
    section = ""
    for line in help_text.splitlines():
        if not line.startswith("  "):
            section = line
            continue
        entry = line.strip()
        if section.startswith("Shared library search path") and entry.endswith("(system search path)"):
            system_dirs.append(entry.split(" (", 1)[0])
        elif section.startswith("Subdirectories of glibc-hwcaps") and "searched" in entry:
            hwcaps.append(entry.split(" ", 1)[0])
        elif section.startswith("Legacy HWCAP subdirectories"):
            name = entry.split(" ", 1)[0]
            if "AT_PLATFORM" in entry:
                platform = name
            elif name != "tls" and "searched" in entry:
                legacy_printed.append(name)
    if not system_dirs or platform is None:
        raise LoaderCheckError(loader, "unexpected --help output: no system search path or AT_PLATFORM")

    probe_dir = "/fexaot-probe-nonexistent"
    env = {"LD_DEBUG": "libs", "LD_LIBRARY_PATH": f"{probe_dir}/$LIB"}
    debug = subprocess.run([loader, "--list", probe_program], env=env, cwd="/", capture_output=True, text=True, check=False)
    search_path = next(
        (line.split("search path=", 1)[1].split("\t", 1)[0]
         for line in debug.stderr.splitlines() if "search path=" in line and "(LD_LIBRARY_PATH)" in line),
        None,
    )
    if search_path is None:
        raise LoaderCheckError(probe_program, "LD_DEBUG=libs showed no LD_LIBRARY_PATH search; it needs a DT_NEEDED entry")
    tried = search_path.split(":")
    base = min(tried, key=len)  # the directory itself; its subdirectories are longer
    observed = tuple(dict.fromkeys(t[len(base) + 1:] + "/" if t != base else "" for t in tried))

    # --help prints legacy HWCAP names from the highest bit down; glibc combines them in bit order.
    config = LoaderConfig(platform=platform, lib=base.removeprefix(probe_dir + "/"), hwcaps=tuple(hwcaps),
                          legacy_hwcaps=tuple(reversed(legacy_printed)), system_dirs=tuple(system_dirs))
    if observed != config.search_subdirs:
        raise LoaderCheckError(loader, f"searches subdirectories {observed}, but fexaot's emulation would search {config.search_subdirs}")
    return config


def compare_ld_so_cache(resolver: ClosureResolver, ldconfig: str = HOST_LDCONFIG) -> CacheComparison | None:
    """Every name in the host's ld.so.cache, and every file name in the directories
    ldconfig scans: does the emulation give the path the real cache gives?

    The real cache's entry for a name is its first one for x86-64 without hwcap
    bits, the one the loader takes.  None when there is no ldconfig.
    """
    if not os.access(ldconfig, os.X_OK):
        return None
    printed = subprocess.run([ldconfig, "-p"], env={}, capture_output=True, text=True, check=True).stdout
    real: dict[str, str] = {}
    for line in printed.splitlines():
        match = _CACHE_ENTRY.fullmatch(line.strip())
        if match and match["flags"] == "libc6,x86-64":
            real.setdefault(match["name"], match["path"])
    names = set(real)
    for directory in ld_so_conf_dirs(resolver.rootfs, resolver.config):
        if resolver.rootfs.is_dir(directory):
            names.update(resolver.rootfs.listdir(directory))
    entries = {name: (real.get(name), resolver.ld_so_cache_lookup(name)) for name in sorted(names)}
    differences = tuple(f"{name}: ldconfig -p has {have}, fexaot has {emulated}"
                        for name, (have, emulated) in entries.items() if have != emulated)
    return CacheComparison(sum(1 for have, emulated in entries.values() if have or emulated), differences)


def select_sample(files: Sequence[str], n: int | None) -> list[str]:
    """``n`` files spread evenly over the sorted list (deterministic), or all of them."""
    if n is None or n >= len(files):
        return list(files)
    return [files[i * len(files) // n] for i in range(n)]


def check_loader(rootfs_dir: str = "/", dirs: Sequence[str] = DEFAULT_DIRS, sample: int | None = None,
                 jobs: int | None = None, loader: str = HOST_LOADER) -> AgreementReport:
    """Compare closures with the real loader for the dynamically linked ELF files under ``dirs``.

    The real loader runs in ``jobs`` threads (it is a subprocess; default: two
    per core) while this thread computes the closures.
    """
    started = time.monotonic()
    rootfs = Rootfs(rootfs_dir)
    if rootfs.root != "/":
        raise LoaderCheckError(rootfs_dir, "check-loader runs the host's own loader, so the rootfs must be /")
    if not os.access(loader, os.X_OK):
        raise LoaderCheckError(loader, "no x86-64 glibc loader on this host")

    elf_files = rootfs.walk_elf_files(dirs)
    dynamic: list[str] = []
    not_checked: Counter[str] = Counter()
    for path in elf_files:
        try:
            info = read_elf(path)
        except ElfError as e:
            not_checked[_without_numbers(e.problem)] += 1
            continue
        if not info.is_dynamic:
            not_checked[f"no PT_DYNAMIC ({info.kind})"] += 1
        elif not (info.needed or info.interp):
            not_checked[f"no DT_NEEDED or PT_INTERP ({info.kind})"] += 1
        else:
            dynamic.append(path)
    dynamic = select_sample(dynamic, sample)
    if not dynamic:
        return AgreementReport((), len(elf_files), not_checked, time.monotonic() - started)

    resolver = ClosureResolver(rootfs, probe_host_config(dynamic[0], loader))
    with ThreadPoolExecutor(max_workers=jobs or 2 * (os.cpu_count() or 1)) as pool:
        results = pool.map(lambda path: run_real_loader(path, loader=loader), dynamic)
        checks = tuple(judge(path, resolver.closure(path), real) for path, real in zip(dynamic, results, strict=True))
    cache = compare_ld_so_cache(resolver)
    return AgreementReport(checks, len(elf_files), not_checked, time.monotonic() - started, cache)


def _without_numbers(problem: str) -> str:
    """A problem message without the numbers that differ from file to file, for counting."""
    return re.sub(r"0x[0-9a-f]+|\d+", "N", problem)
