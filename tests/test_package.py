"""Packaging end to end: package-scoped builds, the install layout, gc, .deb/.tar.zst, a shared CacheDir.

The rootfs is the fixture (tests/rootfs_fixture.py) plus a gcc-built library
``libfx.so.1.0`` in two versions and a hand-made dpkg database recording
``libc6:amd64`` (Multi-Arch: same), ``libfx1`` and ``fxapp``.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from fexaot_tool.bench.project import REPO, SconsProject
from fexaot_tool.cache.key import TranslatorConfig, config_id, lookup_name, module_identity, parse_lookup_name
from fexaot_tool.cache.lock import open_cache_for_use
from fexaot_tool.cache.reader import CacheFile
from fexaot_tool.elf.rootfs import Rootfs
from fexaot_tool.package.dpkg import DpkgDatabase, DpkgError, parse_package_list, record_package
from fexaot_tool.package.gc import collect
from fexaot_tool.package.layout import INDEX_MAGIC, read_index, scan, write_index

from rootfs_fixture import MULTIARCH, copy_fixture_rootfs

LIBFX = f"{MULTIARCH}/libfx.so.1.0"
LIBFX_SOURCE = "int fx_version(void) {{ return {version}; }}\nint fx_twice(int x) {{ return {version} * x * 2; }}\n"
FXAPP_FILES = ["/usr/bin/app", "/usr/lib/fx/lib/libA.so.1.2.3", "/usr/lib/fx/lib/libA.so.1", "/usr/lib/fx/lib/libA.so",
               "/usr/lib/fx/lib/private/libC.so.1"]
FXAPP_ELF = sorted(["/usr/bin/app", "/usr/lib/fx/lib/libA.so.1.2.3", "/usr/lib/fx/lib/private/libC.so.1"])
TARGETS = {"app": '[app]\nprogram = "/usr/bin/app"\n'}
CID = config_id(TranslatorConfig())


def build_libfx(rootfs: Path, version: int) -> None:
    """Compile libfx.so.1.0 at ``version`` into the rootfs (replacing it by rename, as dpkg does)."""
    work = rootfs.parent / f"libfx-build-{version}"
    work.mkdir(exist_ok=True)
    (work / "fx.c").write_text(LIBFX_SOURCE.format(version=version))
    out = work / "libfx.so.1.0"
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-Wl,-soname,libfx.so.1", "-o", str(out), str(work / "fx.c")],
                   check=True, capture_output=True)
    dest = rootfs / LIBFX.lstrip("/")
    tmp = dest.with_name(".libfx.new")
    shutil.copyfile(out, tmp)
    tmp.replace(dest)
    link = rootfs / f"{MULTIARCH}/libfx.so.1".lstrip("/")
    if not link.is_symlink():
        link.symlink_to("libfx.so.1.0")
    record_package(str(rootfs), "libfx1", f"1.{version}-1", [LIBFX, f"{MULTIARCH}/libfx.so.1",
                                                               "/usr/share/doc/libfx1/copyright"])
    doc = rootfs / "usr/share/doc/libfx1"
    doc.mkdir(parents=True, exist_ok=True)
    (doc / "copyright").write_text("Copyright 2024 The fx authors\nLicense: MIT\n")


@pytest.fixture
def rootfs(tmp_path, fixture_rootfs) -> Path:
    root = copy_fixture_rootfs(fixture_rootfs.root, tmp_path / "rootfs")
    build_libfx(root, 1)
    record_package(str(root), "libc6", "2.36-9+deb12u7",
                   [f"{MULTIARCH}/libc.so.6", f"{MULTIARCH}/ld-linux-x86-64.so.2", "/lib64/ld-linux-x86-64.so.2"],
                   multi_arch_same=True)
    record_package(str(root), "fxapp", "1.0-1", FXAPP_FILES)
    return root


@pytest.fixture
def project(tmp_path, rootfs) -> SconsProject:
    return SconsProject(tmp_path / "project", rootfs, TARGETS)


def expected_name(rootfs: Path, guest: str) -> str:
    host = Rootfs(str(rootfs)).host_path(guest)
    return lookup_name(os.path.basename(guest), module_identity(host).file_id, CID)


def fexaot(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fexaot_tool", *args], capture_output=True, text=True)


# -- the dpkg database ---------------------------------------------------------------------


def test_package_files_come_from_the_dpkg_database(rootfs):
    db = DpkgDatabase(Rootfs(str(rootfs)))
    libc = db.package("libc6")  # found as libc6:amd64.list
    assert libc.list_file == "/var/lib/dpkg/info/libc6:amd64.list"
    assert libc.version == "2.36-9+deb12u7"
    # The /lib64 link is listed but is not a file of its own.
    assert libc.elf_files == (f"{MULTIARCH}/ld-linux-x86-64.so.2", f"{MULTIARCH}/libc.so.6")
    assert db.package("libc6:amd64").elf_files == libc.elf_files
    assert db.package("fxapp").elf_files == tuple(FXAPP_ELF)
    assert db.package("libfx1").elf_files == (LIBFX,)  # the copyright file is not ELF
    assert parse_package_list("libc6, libfx1 libc6,,fxapp") == ["libc6", "libfx1", "fxapp"]


def test_unknown_package_and_missing_database_are_one_clear_error(rootfs, tmp_path):
    with pytest.raises(DpkgError, match=r"^nope: package not installed in rootfs .* \(no /var/lib/dpkg/info/nope.list"):
        DpkgDatabase(Rootfs(str(rootfs))).package("nope")
    bare = tmp_path / "bare"
    bare.mkdir()
    with pytest.raises(DpkgError, match=r"var/lib/dpkg/info: no dpkg database in this rootfs"):
        DpkgDatabase(Rootfs(str(bare)))


# -- scons PACKAGE=, install -----------------------------------------------------------------


def test_package_target_builds_exactly_the_package_elf_files(project):
    result = project.scons("PACKAGE=fxapp,libfx1", jobs=2)
    assert sorted(result.compiled) == sorted(FXAPP_ELF + [LIBFX])
    assert not (project.out / "installed").exists()  # install only when asked
    assert project.scons("PACKAGE=fxapp libfx1").compiled == []


def test_unknown_package_is_one_line_and_builds_nothing(project):
    result = project.scons("PACKAGE=libfx1,no-such-pkg", "install", check=False)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("scons: ***")]
    assert len(errors) == 1 and "no-such-pkg: package not installed in rootfs" in errors[0]
    assert "Traceback" not in result.stderr
    assert result.compiled == [] and not (project.out / "installed").exists()


def test_install_lays_out_lookup_names_and_index(project, rootfs):
    project.scons("PACKAGE=libfx1,fxapp", "install", jobs=2)
    installed = project.out / "installed"
    names = sorted(p.name for p in installed.glob("*.fexcache"))
    assert names == sorted(expected_name(rootfs, g) for g in FXAPP_ELF + [LIBFX])
    index = read_index(str(installed))
    assert [e.name for e in index] == names
    assert (installed / "index").read_text().splitlines()[0] == INDEX_MAGIC
    for entry in index:
        with CacheFile.open(str(installed / entry.name), expect_config_id=CID) as cache:
            module = cache.module(entry.file_id)
            assert module.identity.content_hash == entry.content_hash
            assert parse_lookup_name(entry.name).basename == module.name
    again = project.scons("PACKAGE=libfx1,fxapp", "install")
    assert again.compiled == [] and "is up to date" in again.stdout


def test_upgrade_rebuilds_only_the_changed_library_and_both_versions_coexist(project, rootfs):
    project.scons("PACKAGE=libfx1,fxapp", "install", jobs=2)
    old = expected_name(rootfs, LIBFX)
    build_libfx(rootfs, 2)
    new = expected_name(rootfs, LIBFX)
    assert new != old
    result = project.scons("PACKAGE=libfx1,fxapp", "install")
    assert result.compiled == [LIBFX]
    installed = project.out / "installed"
    assert (installed / old).exists() and (installed / new).exists()
    assert {old, new} <= {e.name for e in read_index(str(installed))}
    # gc: the old libfx cache is stale, everything else is a file of the rootfs.
    report = collect(str(rootfs), str(installed))
    assert [(r.name, r.why) for r in report.removed] == [(old, "stale")]
    assert not (installed / old).exists() and (installed / new).exists()
    assert old not in {e.name for e in read_index(str(installed))}
    assert report.kept == len(FXAPP_ELF) + 1


# -- gc ------------------------------------------------------------------------------------

_HOLDER = """
import sys, time
from fexaot_tool.cache.lock import open_cache_for_use
fd = open_cache_for_use(sys.argv[1])
print("held" if fd is not None else "missing", flush=True)
sys.stdin.read()
"""


def test_gc_keeps_a_cache_a_runtime_holds_and_removes_it_once_released(project, rootfs):
    project.scons("PACKAGE=libfx1", "install")
    installed = project.out / "installed"
    old = installed / expected_name(rootfs, LIBFX)
    build_libfx(rootfs, 3)
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(old)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "held"
        report = collect(str(rootfs), str(installed))
        assert report.removed == () and report.in_use == (old.name,)
        assert old.exists()
    finally:
        holder.stdin.close()
        holder.wait()
    report = collect(str(rootfs), str(installed))
    assert [r.name for r in report.removed] == [old.name]
    assert open_cache_for_use(str(old)) is None  # gone: the runtime sees a miss


def test_gc_size_budget_removes_least_recently_used_first(project, rootfs):
    project.scons("PACKAGE=fxapp,libfx1", "install")
    installed = project.out / "installed"
    entries = {e.name: e for e in scan(str(installed))[0]}
    order = sorted(entries)  # give them increasing access times in name order
    for i, name in enumerate(order):
        os.utime(installed / name, (1_700_000_000 + i, 1_700_000_000))
    budget = sum(entries[n].cache_size for n in order[2:])
    report = collect(str(rootfs), str(installed), max_size=budget)
    assert [(r.name, r.why) for r in report.removed] == [(order[0], "lru"), (order[1], "lru")]
    assert sorted(e.name for e in read_index(str(installed))) == order[2:]
    assert report.kept_bytes <= budget


def test_gc_removes_invalid_caches_and_dead_partials_and_keeps_foreign_files(project, rootfs):
    project.scons("PACKAGE=libfx1", "install")
    installed = project.out / "installed"
    good = expected_name(rootfs, LIBFX)
    torn = installed / lookup_name("libfx.so.1.0", 0x1234, CID)
    torn.write_bytes((installed / good).read_bytes()[:5000])
    (installed / ".libfoo.fexcache.999999999.partial").write_bytes(b"half")
    (installed / "README").write_text("not a cache\n")
    report = collect(str(rootfs), str(installed))
    assert [(r.name, r.why) for r in report.removed] == [(torn.name, "invalid: cache rejected (truncated)")]
    left = sorted(p.name for p in installed.iterdir() if p.name != ".fileids")  # the memo, once files are old enough
    assert left == sorted([".lock", "README", good, "index"])


def test_gc_cli_errors_are_one_line(tmp_path, rootfs):
    missing = tmp_path / "nowhere"
    proc = fexaot("gc", "--rootfs", str(rootfs), "--cache-dir", str(missing))
    assert proc.returncode == 1
    assert proc.stderr == f"fexaot gc: {missing}: cache directory does not exist\n"
    proc = fexaot("gc", "--rootfs", str(rootfs), "--cache-dir", str(tmp_path), "--max-size", "lots")
    assert proc.returncode == 2 and "not a size: 'lots'" in proc.stderr
    proc = fexaot("index", "--show", "--cache-dir", str(tmp_path))
    assert proc.returncode == 1 and proc.stderr.startswith(f"fexaot index: {tmp_path}/index: cannot read index")


def test_gc_cli_dry_run_reports_and_removes_nothing(project, rootfs):
    project.scons("PACKAGE=libfx1", "install")
    installed = project.out / "installed"
    before = sorted(os.listdir(installed))
    build_libfx(rootfs, 4)
    proc = fexaot("gc", "--rootfs", str(rootfs), "--cache-dir", str(installed), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    old = [n for n in before if n.endswith(".fexcache")]
    assert proc.stdout.splitlines()[0] == f"would remove {old[0]}  ({os.path.getsize(installed / old[0])} bytes, stale)"
    assert sorted(os.listdir(installed)) == before


# -- .deb and .tar.zst -----------------------------------------------------------------------


def _deb_paths(deb: Path) -> list[str]:
    data = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return [m.name for m in tar.getmembers()]


def test_deb_is_reproducible_valid_and_installs_where_the_runtime_looks(tmp_path, rootfs):
    one = SconsProject(tmp_path / "one", rootfs, TARGETS)
    two = SconsProject(tmp_path / "two", rootfs, TARGETS)
    one.scons("PACKAGE=libfx1,fxapp", "deb", "tarball", jobs=2)
    two.scons("PACKAGE=libfx1,fxapp", "deb", "tarball", jobs=1)
    files = sorted(p.name for p in (one.out / "packages").iterdir())
    assert files == ["fexaot-cache-fxapp_1.0-1+fexaot%d.%d.tar.zst" % _versions(),
                     "fexaot-cache-fxapp_1.0-1+fexaot%d.%d_all.deb" % _versions(),
                     "fexaot-cache-libfx1_1.1-1+fexaot%d.%d.tar.zst" % _versions(),
                     "fexaot-cache-libfx1_1.1-1+fexaot%d.%d_all.deb" % _versions()]
    for name in files:  # two clean builds, other directories, other times: the same bytes
        assert (one.out / "packages" / name).read_bytes() == (two.out / "packages" / name).read_bytes(), name
    deb = one.out / "packages" / files[3]
    info = subprocess.run(["dpkg-deb", "--info", str(deb)], capture_output=True, text=True, check=True).stdout
    assert "Package: fexaot-cache-libfx1" in info and "Enhances: libfx1 (= 1.1-1)" in info
    cache_name = expected_name(rootfs, LIBFX)
    assert f"./var/lib/fexaot/cache/{cache_name}" in _deb_paths(deb)
    listing = subprocess.run(["dpkg-deb", "--contents", str(deb)], capture_output=True, text=True, check=True).stdout
    assert all(" root/root " in line for line in listing.splitlines())
    # dpkg -x, and a real dpkg --root install into a scratch root.
    scratch = tmp_path / "x"
    subprocess.run(["dpkg", "-x", str(deb), str(scratch)], check=True)
    assert (scratch / "var/lib/fexaot/cache" / cache_name).read_bytes() == \
        (one.out / "objects" / (LIBFX.lstrip("/") + ".fexcache")).read_bytes()
    target = tmp_path / "target"
    for d in ("var/lib/dpkg/info", "var/lib/dpkg/updates"):
        (target / d).mkdir(parents=True)
    (target / "var/lib/dpkg/status").write_text("")
    proc = subprocess.run(["dpkg", f"--root={target}", "--force-not-root", "--force-script-chrootless",
                           "-i", str(deb)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    cache_dir = target / "var/lib/fexaot/cache"
    with CacheFile.open(str(cache_dir / cache_name), expect_config_id=CID) as cache:
        assert cache.modules[0].file_id == module_identity(rootfs / LIBFX.lstrip("/")).file_id
    assert [e.name for e in write_index(str(cache_dir))] == [cache_name]
    # The .tar.zst holds the same tree as the .deb's data.
    tar_zst = one.out / "packages" / files[2]
    data = subprocess.run(["zstd", "-dc", str(tar_zst)], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert f"./var/lib/fexaot/cache/{cache_name}" in tar.getnames()
        assert {(m.uid, m.gid, m.mtime) for m in tar.getmembers()} == {(0, 0, 1704067200)}


@pytest.mark.skipif(shutil.which("lintian") is None, reason="lintian is not installed")
def test_deb_passes_lintian(project):
    project.scons("PACKAGE=libfx1", "deb")
    deb = next((project.out / "packages").glob("*.deb"))
    proc = subprocess.run(["lintian", "--tag-display-limit", "0", str(deb)], capture_output=True, text=True)
    tags = [line for line in proc.stdout.splitlines() if line[:2] in ("E:", "W:")]
    assert tags == [], proc.stdout


def test_deb_follows_source_date_epoch_and_needs_packages(project):
    project.scons("PACKAGE=libfx1", "deb", "SOURCE_DATE_EPOCH=1500000000")
    deb = next((project.out / "packages").glob("*.deb"))
    assert deb.read_bytes()[8 + 16:8 + 28].strip() == b"1500000000"  # the first ar member's mtime
    result = project.scons("deb", check=False)
    assert result.returncode != 0 and "need the packages to archive: PACKAGE=" in result.stderr


def _versions() -> tuple[int, int]:
    config = TranslatorConfig()
    return config.format_version, config.translator_version


# -- a CacheDir shared between checkouts -------------------------------------------------------


def test_second_checkout_with_rootfs_elsewhere_gets_every_cache_from_the_cachedir(tmp_path, rootfs):
    shared = tmp_path / "shared-cachedir"
    elsewhere = copy_fixture_rootfs(rootfs, tmp_path / "another" / "place" / "rootfs")
    writer = SconsProject(tmp_path / "farm-writer", rootfs, TARGETS)
    reader = SconsProject(tmp_path / "farm-reader", elsewhere, TARGETS)
    first = writer.scons("PACKAGE=fxapp,libfx1", "app", f"CACHEDIR={shared}", jobs=2)
    assert sorted(first.compiled) == sorted(set(FXAPP_ELF + [LIBFX] + _app_closure(rootfs)))
    second = reader.scons("--cache-readonly", "PACKAGE=fxapp,libfx1", "app", f"CACHEDIR={shared}", jobs=2)
    assert second.compiled == [] and second.bundled == []
    retrieved = [line for line in second.stdout.splitlines() if line.startswith("Retrieved `")]
    assert len(retrieved) == len(first.compiled) + len(first.bundled)

    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*.fexcache")}

    assert files(writer.out) == files(reader.out)


def _app_closure(rootfs: Path) -> list[str]:
    from fexaot_tool.elf.closure import resolve_closure

    return list(resolve_closure(Rootfs(str(rootfs)), "/usr/bin/app").paths)
