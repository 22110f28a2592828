"""The build graph end to end: real scons runs over a fixture rootfs of gcc-built files."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from fexaot_tool.cache.key import TranslatorConfig, config_id, module_identity
from fexaot_tool.cache.reader import CacheFile
from fexaot_tool.elf.closure import resolve_closure
from fexaot_tool.elf.rootfs import Rootfs

from rootfs_fixture import copy_fixture_rootfs
from fexaot_tool.bench.project import SconsProject

APP_TARGETS = {"app": '[app]\nprogram = "/usr/bin/app"\ndefault = true\n', "everything": '[set]\ndirs = ["/usr"]\n'}


@pytest.fixture
def project(tmp_path, fixture_rootfs) -> SconsProject:
    rootfs = tmp_path / "rootfs"
    copy_fixture_rootfs(fixture_rootfs.root, rootfs)
    return SconsProject(tmp_path / "project", rootfs, APP_TARGETS)


def closure_paths(rootfs: Path, program: str) -> list[str]:
    return [o.path for o in resolve_closure(Rootfs(str(rootfs)), program).objects]


def tweak_comment(path: Path, keep_mtime: bool = True, replace_file: bool = False) -> None:
    """Change one byte of the .comment string: same size, different content."""
    st = path.stat()
    data = path.read_bytes()
    at = data.index(b"GCC: (")
    new = data[:at] + b"GXC: (" + data[at + 6:]
    if replace_file:
        tmp = path.with_name(path.name + ".new")
        tmp.write_bytes(new)
        os.chmod(tmp, st.st_mode)
        tmp.replace(path)
    else:
        with open(path, "r+b") as f:
            f.write(new)
    if keep_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_bundle_holds_program_and_closure_with_file_ids(project):
    result = project.scons("cache/app.fexcache")
    expected = closure_paths(project.rootfs, "/usr/bin/app")
    assert sorted(result.compiled) == sorted(expected)
    assert result.bundled == ["app.fexcache"]
    cache = CacheFile.open(str(project.out / "app.fexcache"))
    cache.verify_all()
    rootfs = Rootfs(str(project.rootfs))
    want = sorted(module_identity(rootfs.host_path(p)).file_id for p in expected)
    assert sorted(m.file_id for m in cache.modules) == want
    assert cache.config_id == config_id(TranslatorConfig())


def test_null_build_does_nothing(project):
    project.scons("cache/app.fexcache")
    again = project.scons("cache/app.fexcache")
    assert again.compiled == [] and again.bundled == []
    assert "is up to date" in again.stdout


def test_replaced_library_rebuilds_only_that_object_and_relinks_bundle(project):
    project.scons("app", "everything")
    lib = next(p for p in closure_paths(project.rootfs, "/usr/bin/app") if "libB" in p)
    tweak_comment(Path(Rootfs(str(project.rootfs)).host_path(lib)), replace_file=True)
    result = project.scons("app", "everything")
    assert result.compiled == [lib]
    assert result.bundled == ["app.fexcache"]


def test_identical_mtime_rootfs_rebuilds_exactly_the_changed_file(project):
    stamp = 1_700_000_000_000_000_000
    for dirpath, dirnames, filenames in os.walk(project.rootfs):
        for name in filenames + dirnames:
            os.utime(os.path.join(dirpath, name), ns=(stamp, stamp), follow_symlinks=False)
    project.scons("everything")
    lib = next(p for p in closure_paths(project.rootfs, "/usr/bin/app") if "libA" in p)
    # Rewritten in place: same size, same mtime as every other file.
    tweak_comment(Path(Rootfs(str(project.rootfs)).host_path(lib)))
    result = project.scons("everything")
    assert result.compiled == [lib]


def test_two_clean_builds_are_byte_identical_across_job_counts(tmp_path, fixture_rootfs):
    rootfs = tmp_path / "rootfs"
    copy_fixture_rootfs(fixture_rootfs.root, rootfs)
    first = SconsProject(tmp_path / "one", rootfs, APP_TARGETS)
    second = SconsProject(tmp_path / "two", rootfs, APP_TARGETS)
    first.scons("app", "everything", jobs=1)
    time.sleep(1.1)  # a different second, in case anything leaked a clock
    second.scons("app", "everything", jobs=2)

    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.fexcache"))}

    a, b = files(first.out), files(second.out)
    assert len(a) > 3
    assert a == b


def test_config_change_rebuilds_everything_and_interpreter_change_nothing(project, tmp_path):
    def interpreter(path, version: str):
        path.write_text(f"#!/bin/sh\n# Python {version}\nexec {sys.executable} \"$@\"\n")
        path.chmod(0o755)
        return path

    python = interpreter(tmp_path / "python3", "3.11")
    first = project.scons("cache/app.fexcache", f"FEXAOT_PYTHON={python}")
    everything = sorted(first.compiled)
    assert everything
    # The interpreter upgraded in place, then moved: no signature changes.
    interpreter(python, "3.12")
    same = project.scons("cache/app.fexcache", f"FEXAOT_PYTHON={python}")
    assert same.compiled == [] and same.bundled == []
    moved = interpreter(tmp_path / "python3.13", "3.13")
    same = project.scons("cache/app.fexcache", f"FEXAOT_PYTHON={moved}")
    assert same.compiled == [] and same.bundled == []
    # A codegen option is part of ConfigId: everything is compiled again.
    relaxed = project.scons("cache/app.fexcache", "MEMORY_ORDER=relaxed")
    assert sorted(relaxed.compiled) == everything
    assert CacheFile.open(str(project.out / "app.fexcache")).config_id == config_id(TranslatorConfig(memory_order="relaxed"))


def test_filter_change_rebuilds(project):
    project.scons("cache/app.fexcache")
    result = project.scons("cache/app.fexcache", "FILTER=verify")
    assert sorted(result.compiled) == sorted(closure_paths(project.rootfs, "/usr/bin/app"))


def test_killed_build_leaves_no_partial_cache(project):
    """Kill the whole build at many moments; every cache present must be complete."""
    expected = project.scons("everything", "app")
    def caches() -> dict[str, bytes]:
        return {str(p.relative_to(project.out)): p.read_bytes() for p in project.out.rglob("*.fexcache")}

    reference = caches()
    for delay in (0.3, 0.5, 0.7, 0.9, 1.2, 1.6):
        project.scons("-c", "everything", "app")
        proc = project.start("everything", "app", jobs=2)
        time.sleep(delay)
        SconsProject.kill(proc)
        for path in project.out.rglob("*.fexcache"):
            cache = CacheFile.open(str(path))
            cache.verify_all()
            assert path.read_bytes() == reference[str(path.relative_to(project.out))]
    final = project.scons("everything", "app")
    assert final.returncode == 0
    assert caches() == reference
    assert not list(project.out.rglob("*.partial"))
    assert expected.compiled


def test_program_symlink_shares_one_object(project):
    rootfs = Rootfs(str(project.rootfs))
    link = project.rootfs / "usr/bin/app-link"
    link.symlink_to("app")
    project.scons("cache/app.fexcache")
    result = project.scons("cache/app-link.fexcache")
    # The program is the same file under another name: nothing new to compile.
    assert result.compiled == []
    assert result.bundled == ["app-link.fexcache"]
    assert rootfs.resolve("/usr/bin/app-link") == "/usr/bin/app"


def test_unknown_program_is_a_clear_error(project):
    result = project.scons("cache/no-such-program.fexcache", check=False)
    assert result.returncode != 0
    assert "no-such-program" in result.stderr and "not found" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_library_is_a_clear_error(project, fixture_rootfs):
    result = project.scons(f"cache/{fixture_rootfs.missing_app_name}.fexcache", check=False)
    assert result.returncode != 0
    assert "not found" in result.stderr
    assert "Traceback" not in result.stderr


def test_corrupt_elf_in_a_set_fails_with_one_clear_line(project):
    """A file that looks like x86-64 ELF but is cut short: its compile fails, nothing is written."""
    victim = Path(Rootfs(str(project.rootfs)).host_path("/usr/bin/app"))
    victim.write_bytes(victim.read_bytes()[:40])  # the ELF ident survives, the header does not
    result = project.scons("-k", "everything", check=False)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.startswith("fexaot compile:")]
    assert lines == ["fexaot compile: /usr/bin/app: truncated ELF header (40 bytes, need 64)"]
    assert "Traceback" not in result.stderr
    assert not (project.out / "objects/usr/bin/app.fexcache").exists()
    # -k built everything else.
    assert (project.out / "objects/usr/lib/x86_64-linux-gnu/libc.so.6.fexcache").exists()


def test_python3_from_the_host_rootfs(tmp_path):
    """The README's main job on this machine: python3.11 and its five libraries, real FileIds."""
    project = SconsProject(tmp_path / "host", Path("/"))
    project.scons("cache/python3.fexcache", jobs=2)
    rootfs = Rootfs("/")
    closure = resolve_closure(rootfs, rootfs.which("python3"))
    assert len(closure.paths) == 6  # python3.11, ld.so, libm, libz, libexpat, libc
    with CacheFile.open(str(project.out / "python3.fexcache")) as cache:
        cache.verify_all()
        modules = {m.file_id: cache.module(m.file_id).name for m in cache.modules}
    expected = {module_identity(path).file_id: os.path.basename(path) for path in closure.paths}
    assert modules == expected


def test_file_names_with_spaces_and_dollar_signs(project):
    """SCons substitutes '$' and splits on spaces: rootfs file names must survive both."""
    odd = "/usr/bin/my app$HOME"
    app = Path(Rootfs(str(project.rootfs)).host_path("/usr/bin/app"))
    (project.rootfs / odd.lstrip("/")).write_bytes(app.read_bytes() + b"\0")
    result = project.scons("everything")
    assert odd in result.compiled
    with CacheFile.open(str(project.out / "objects" / (odd.lstrip("/") + ".fexcache"))) as cache:
        assert [cache.module(m.file_id).name for m in cache.modules] == ["my app$HOME"]
