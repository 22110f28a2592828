"""Dependency closures of the fixture programs: exact expectations, and the real loader as oracle."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from fexaot_tool.elf.closure import (
    ClosureResolver,
    FoundBy,
    LoaderConfig,
    ld_so_conf_dirs,
    resolve_closure,
    substitute_dst,
)
from fexaot_tool.elf.reader import NotElfError
from fexaot_tool.elf.rootfs import PathNotFoundError, Rootfs
from fexaot_tool.validate.loader import Outcome, judge, parse_listing, probe_host_config, run_real_loader
from rootfs_fixture import copy_fixture_rootfs

LIBC = ("libc.so.6", "/usr/lib/x86_64-linux-gnu/libc.so.6", "/lib/x86_64-linux-gnu/libc.so.6", FoundBy.LD_SO_CACHE)

# program -> its libraries in load order (name, canonical path, path opened, step, needed by)
# and the names it misses (name, needed by, fatal).
EXPECTED = {
    "/usr/bin/app": (
        [
            # app's DT_RUNPATH $ORIGIN/../lib/fx/lib, $ORIGIN being /usr/bin.
            ("libA.so.1", "/usr/lib/fx/lib/libA.so.1.2.3", "/usr/bin/../lib/fx/lib/libA.so.1", FoundBy.RUNPATH, "/usr/bin/app"),
            ("libB.so.1", "/usr/lib/fx/real/libB.so.1.0", "/usr/bin/../lib/fx/lib/libB.so.1", FoundBy.RUNPATH, "/usr/bin/app"),
            (*LIBC, "/usr/bin/app"),
            # libA's DT_RUNPATH $ORIGIN/../lib/private, $ORIGIN being the directory libA was opened in.
            ("libC.so.1", "/usr/lib/fx/lib/private/libC.so.1", "/usr/bin/../lib/fx/lib/../lib/private/libC.so.1",
             FoundBy.RUNPATH, "/usr/lib/fx/lib/libA.so.1.2.3"),
            # libB's $ORIGIN is lib/ (where the link is), not real/ (where its file is): the decoy is not used.
            ("libD.so.1", "/usr/lib/fx/lib/libD.so.1", "/usr/bin/../lib/fx/lib/libD.so.1", FoundBy.RUNPATH, "/usr/lib/fx/real/libB.so.1.0"),
        ],
        [],
    ),
    "/usr/bin/confapp": (
        [
            # /etc/ld.so.conf includes ld.so.conf.d/*.conf, whose fx.conf includes extra/*.conf.
            ("libconf.so.1", "/opt/conflib/libconf.so.1.0", "/opt/conflib/libconf.so.1", FoundBy.LD_SO_CACHE, "/usr/bin/confapp"),
            ("libconf2.so.1", "/opt/conflib2/libconf2.so.1", "/opt/conflib2/libconf2.so.1", FoundBy.LD_SO_CACHE, "/usr/bin/confapp"),
            ("fxplug.so.1", "/usr/lib/x86_64-linux-gnu/fxplug.so.1", "/lib/x86_64-linux-gnu/fxplug.so.1",
             FoundBy.SYSTEM_DIRS, "/usr/bin/confapp"),
            (*LIBC, "/usr/bin/confapp"),
        ],
        [],
    ),
    "/usr/bin/rpathapp": (
        [
            # DT_RPATH /opt/rp/first:/opt/rp/second beats the decoy in ld.so.cache's directories.
            ("librp.so.1", "/opt/rp/second/librp.so.1", "/opt/rp/second/librp.so.1", FoundBy.RPATH, "/usr/bin/rpathapp"),
            ("librunp.so.1", "/opt/rp/first/librunp.so.1", "/opt/rp/first/librunp.so.1", FoundBy.RPATH, "/usr/bin/rpathapp"),
            # The copies in first/ (32-bit) and second/ (AArch64) are skipped, as glibc skips them.
            ("libskip.so.1", "/usr/lib/x86_64-linux-gnu/libskip.so.1", "/lib/x86_64-linux-gnu/libskip.so.1",
             FoundBy.LD_SO_CACHE, "/usr/bin/rpathapp"),
            (*LIBC, "/usr/bin/rpathapp"),
            # librp has no paths of its own: the program's DT_RPATH is inherited.
            ("libinherit.so.1", "/opt/rp/first/libinherit.so.1", "/opt/rp/first/libinherit.so.1",
             FoundBy.RPATH, "/opt/rp/second/librp.so.1"),
            # librunp has DT_RUNPATH: no DT_RPATH is used for it, so not the decoy in first/.
            ("libprec.so.1", "/opt/rp/runp/libprec.so.1", "/opt/rp/runp/libprec.so.1", FoundBy.RUNPATH, "/opt/rp/first/librunp.so.1"),
        ],
        [],
    ),
    "/usr/bin/nodeflibapp": (
        [
            ("libconf.so.1", "/opt/conflib/libconf.so.1.0", "/opt/conflib/libconf.so.1", FoundBy.LD_SO_CACHE, "/usr/bin/nodeflibapp"),
            # libconf has no DF_1_NODEFLIB, so its own libc.so.6 is found.
            (LIBC[0], LIBC[1], LIBC[2], LIBC[3], "/opt/conflib/libconf.so.1.0"),
        ],
        # DF_1_NODEFLIB: no system directories, nor ld.so.cache entries in them.
        [("libnodef.so.1", "/usr/bin/nodeflibapp", False), ("libc.so.6", "/usr/bin/nodeflibapp", False)],
    ),
    "/usr/bin/missingapp": (
        [(*LIBC, "/usr/bin/missingapp")],
        # libhidden.so.1's directory is listed in a file that the include glob does not match.
        [("libnothere.so.1", "/usr/bin/missingapp", False), ("libhidden.so.1", "/usr/bin/missingapp", False)],
    ),
    "/usr/bin/loopapp": (
        [
            # Debian's ldconfig scans /lib too; it skips the loop of the same name.
            ("libloop.so.1", "/usr/lib/libloop.so.1", "/lib/libloop.so.1", FoundBy.LD_SO_CACHE, "/usr/bin/loopapp"),
            (*LIBC, "/usr/bin/loopapp"),
        ],
        # The loop in the first system directory ends that search (ELOOP), before /usr/lib.
        [("loopy.so.1", "/usr/bin/loopapp", False)],
    ),
    "/usr/bin/badapp": (
        [(*LIBC, "/usr/bin/badapp")],
        [("libbad.so.1", "/usr/bin/badapp", True)],
    ),
    "/usr/bin/pathapp": (
        [
            ("usr/lib/fx/noso/libnoso.so", "/usr/lib/fx/noso/libnoso.so", "usr/lib/fx/noso/libnoso.so", FoundBy.PATH, "/usr/bin/pathapp"),
            (*LIBC, "/usr/bin/pathapp"),
        ],
        [],
    ),
}


@pytest.fixture(scope="module")
def resolver(fixture_rootfs) -> ClosureResolver:
    return ClosureResolver(Rootfs(fixture_rootfs.root))


@pytest.mark.parametrize("program", sorted(EXPECTED))
def test_closure_is_exactly_what_the_loader_loads(resolver, fixture_rootfs, program):
    closure = resolver.closure(program)
    libraries, missing = EXPECTED[program]
    assert [(o.name, o.path, o.opened_as, o.found_by, o.needed_by) for o in closure.libraries] == libraries
    assert [(m.name, m.needed_by, m.fatal) for m in closure.missing] == missing
    assert closure.complete == (not missing)
    assert closure.program.path == program and closure.program.found_by is FoundBy.PROGRAM
    assert closure.interpreter.path == fixture_rootfs.interpreter
    assert closure.interpreter.opened_as == "/lib64/ld-linux-x86-64.so.2"
    assert closure.objects == (closure.program, closure.interpreter, *closure.libraries)
    assert closure.paths == tuple(dict.fromkeys([program, fixture_rootfs.interpreter, *(lib[1] for lib in libraries)]))


def test_missing_reasons(resolver, fixture_rootfs):
    [bad] = resolver.closure(fixture_rootfs.bad_app).missing
    assert bad.reason == "/opt/bad/libbad.so.1: invalid ELF header"
    [loopy] = resolver.closure(fixture_rootfs.loop_app).missing
    assert loopy.reason == "not found (search stopped at /lib/x86_64-linux-gnu/loopy.so.1: too many levels of symbolic links)"


def test_static_executable_is_its_own_closure(resolver, fixture_rootfs):
    closure = resolver.closure(fixture_rootfs.static_app)
    assert closure.paths == (fixture_rootfs.static_app,) and closure.interpreter is None and closure.complete


def test_program_through_a_symlink_has_the_origin_of_its_file(resolver, fixture_rootfs):
    """As for execve: /proc/self/exe, from which glibc takes the program's $ORIGIN, is resolved."""
    via_link = resolver.closure(fixture_rootfs.app_via_link)
    direct = resolver.closure(fixture_rootfs.app)
    assert via_link.program.name == fixture_rootfs.app_via_link
    assert via_link.program.path == fixture_rootfs.app
    assert via_link.libraries == direct.libraries


def test_host_exec_through_a_symlink_takes_origin_from_the_resolved_file(tmp_path, fixture_rootfs):
    """The kernel, not ld.so --list, starts the program here: its $ORIGIN comes from /proc/self/exe.

    The fixture app runs on the host through a link in another directory; its
    RUNPATH libraries must come from the fixture's /usr/lib/fx/lib, which only
    the directory of the resolved file leads to.
    """
    link = tmp_path / "bin" / "app"
    link.parent.mkdir()
    link.symlink_to(fixture_rootfs.host(fixture_rootfs.app))
    proc = subprocess.run([str(link)], env={"LD_TRACE_LOADED_OBJECTS": "1"}, capture_output=True, text=True, check=True)
    listing, unparsed = parse_listing(proc.stdout)
    assert not unparsed
    found = {o.name: os.path.realpath(o.path) for o in listing if o.path}
    root = str(fixture_rootfs.root)
    assert found["libA.so.1"] == f"{root}/usr/lib/fx/lib/libA.so.1.2.3"
    assert found["libD.so.1"] == f"{root}/usr/lib/fx/lib/libD.so.1"


needs_chroot = pytest.mark.skipif(os.geteuid() != 0, reason="running the real loader chrooted needs root")


@needs_chroot
@pytest.mark.parametrize("program", sorted(EXPECTED))
def test_real_loader_chrooted_in_the_fixture_agrees(fixture_rootfs, resolver, program):
    if not fixture_rootfs.has_ld_so_cache:
        pytest.skip("ldconfig could not build the fixture's ld.so.cache")
    real = run_real_loader(program, chroot=str(fixture_rootfs.root))
    check = judge(program, resolver.closure(program), real, realpath=resolver.rootfs.resolve)
    assert (check.outcome, check.detail) == (Outcome.AGREE, "")


def add_hwcaps_variants(fixture_rootfs, tmp_path) -> Rootfs:
    """A copy of the fixture with libD in glibc-hwcaps/x86-64-v3/ and libC in tls/."""
    copy = copy_fixture_rootfs(fixture_rootfs.root, tmp_path / "rootfs")
    v3 = copy / "usr/lib/fx/lib/glibc-hwcaps/x86-64-v3"
    v3.mkdir(parents=True)
    shutil.copy(copy / "usr/lib/fx/lib/libD.so.1", v3 / "libD.so.1")
    (copy / "usr/lib/fx/lib/private/tls").mkdir()
    shutil.copy(copy / "usr/lib/fx/lib/private/libC.so.1", copy / "usr/lib/fx/lib/private/tls/libC.so.1")
    return Rootfs(copy)


def test_hwcaps_subdirectories_follow_the_configured_cpu(tmp_path, fixture_rootfs):
    rootfs = add_hwcaps_variants(fixture_rootfs, tmp_path)
    baseline = {o.name: o.path for o in resolve_closure(rootfs, "/usr/bin/app").libraries}
    # Baseline x86-64 (the default): no glibc-hwcaps subdirectory; glibc 2.36 still searches tls/.
    assert baseline["libD.so.1"] == "/usr/lib/fx/lib/libD.so.1"
    assert baseline["libC.so.1"] == "/usr/lib/fx/lib/private/tls/libC.so.1"
    v3 = LoaderConfig(hwcaps=("x86-64-v3", "x86-64-v2"))
    assert {o.name: o.path for o in resolve_closure(rootfs, "/usr/bin/app", v3).libraries}["libD.so.1"] == \
        "/usr/lib/fx/lib/glibc-hwcaps/x86-64-v3/libD.so.1"


@needs_chroot
def test_real_loader_agrees_on_hwcaps_with_the_host_cpu_config(tmp_path, fixture_rootfs):
    rootfs = add_hwcaps_variants(fixture_rootfs, tmp_path)
    config = probe_host_config("/usr/bin/true" if os.path.exists("/usr/bin/true") else os.path.realpath("/bin/sh"))
    real = run_real_loader("/usr/bin/app", chroot=rootfs.root)
    check = judge("/usr/bin/app", ClosureResolver(rootfs, config).closure("/usr/bin/app"), real, realpath=rootfs.resolve)
    assert (check.outcome, check.detail) == (Outcome.AGREE, "")


def test_search_subdirectories():
    assert LoaderConfig().search_subdirs == ("tls/x86_64/x86_64/", "tls/x86_64/", "tls/", "x86_64/x86_64/", "x86_64/", "")
    config = LoaderConfig(hwcaps=("x86-64-v3", "x86-64-v2"), legacy_hwcaps=("x86_64", "avx512_1"))
    assert config.search_subdirs[:3] == ("glibc-hwcaps/x86-64-v3/", "glibc-hwcaps/x86-64-v2/", "tls/x86_64/avx512_1/x86_64/")
    assert config.search_subdirs[-1] == ""


def test_dynamic_string_tokens():
    config = LoaderConfig()
    assert substitute_dst("$ORIGIN/../lib", "/usr/bin", config) == "/usr/bin/../lib"
    assert substitute_dst("${ORIGIN}/x:$LIB/$PLATFORM", "/o", config) == "/o/x:lib/x86_64-linux-gnu/x86_64"
    # Not tokens: an identifier character follows, or the name is unknown.
    assert substitute_dst("$ORIGINAL/$LIBS/$HOME", "/o", config) == "$ORIGINAL/$LIBS/$HOME"
    assert substitute_dst("$ORIGIN/x", None, config) is None
    assert substitute_dst("/plain", None, config) == "/plain"


def test_ld_so_conf_dirs_of_the_fixture(fixture_rootfs):
    # /usr/lib/x86_64-linux-gnu and /usr/lib are /lib/x86_64-linux-gnu and /lib (merged /usr).
    assert ld_so_conf_dirs(Rootfs(fixture_rootfs.root)) == ("/opt/conflib", "/opt/conflib2", "/lib/x86_64-linux-gnu", "/lib")


def test_ld_so_conf_syntax(tmp_path, fixture_rootfs):
    copy = copy_fixture_rootfs(fixture_rootfs.root, tmp_path / "rootfs")
    for d in ("a", "b", "c", "d"):
        (copy / "opt" / d).mkdir()
    (copy / "etc/ld.so.conf").write_text(
        "  # comment line\n"
        "/opt/a=libc6   \n"  # a library type after '=' and trailing blanks are dropped
        "HWCAP 0 nosegneg\n"  # ignored, whatever its case
        "/opt/missing\n"  # does not exist: left out
        "/opt/b///\t# trailing slashes and a comment\n"
        "include\tnope/*.conf /etc/cycle.conf\n"  # two patterns; the first matches nothing
        "/opt/a\n"  # a directory seen before keeps its first place
    )
    (copy / "etc/cycle.conf").write_text("/opt/c\ninclude /etc/ld.so.conf\ninclude sub.d/*.conf\n")
    (copy / "etc/sub.d").mkdir()
    (copy / "etc/sub.d/x.conf").write_text("/opt/d\n")
    assert ld_so_conf_dirs(Rootfs(copy)) == ("/opt/a", "/opt/b", "/opt/c", "/opt/d", "/lib/x86_64-linux-gnu", "/lib")


def test_missing_interpreter_is_reported(tmp_path, fixture_rootfs):
    copy = copy_fixture_rootfs(fixture_rootfs.root, tmp_path / "rootfs")
    (copy / "lib64/ld-linux-x86-64.so.2").unlink()
    closure = resolve_closure(Rootfs(copy), "/usr/bin/confapp")
    [missing] = closure.missing
    assert (missing.name, missing.named_in, missing.fatal) == ("/lib64/ld-linux-x86-64.so.2", "PT_INTERP", True)
    assert closure.interpreter is None
    # libc.so.6 still needs ld-linux-x86-64.so.2, found as a library now.
    assert "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" in [o.path for o in closure.libraries]


def test_programs_that_cannot_be_resolved_raise(resolver, fixture_rootfs):
    with pytest.raises(PathNotFoundError, match="/usr/bin/nope"):
        resolver.closure("/usr/bin/nope")
    with pytest.raises(NotElfError, match="^/etc/passwd: not an ELF file"):
        resolver.closure("/etc/passwd")
