"""A real Debian upgrade, end to end: old packages, caches, upgrade, incremental rebuild, gc.

    .venv/bin/python -m fexaot_tool.package.upgrade_demo [--work DIR] [-j 2] [--packages LIST]

1. ``apt-get download`` the packages below at their older versions (kept in
   ``WORK/debs`` for the next run) and unpack them with ``dpkg -x`` into
   ``WORK/rootfs``, recording each in the rootfs's dpkg database (``dpkg -x``
   writes none) from the package's own file list;
2. ``scons install`` python3.11's bundle (program, loader, libc, libm, libz,
   libexpat) and the caches of ``--packages``, into ``WORK/cache-dir``;
3. upgrade libc6 and libexpat1 in the rootfs to the newer versions (``dpkg -x``
   over it, the database updated, files the new version dropped removed);
4. run the same ``scons install`` again: it translates only the ELF files whose
   content changed; print which and how long;
5. ``fexaot gc``: remove the caches of the old versions;
6. run python3 from the upgraded rootfs on the runtime.

Needs network access to a Debian mirror (apt sources of Debian 12) on the first run.
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from fexaot_tool.bench.project import SconsProject
from fexaot_tool.package.dpkg import DpkgDatabase, DpkgError, record_package
from fexaot_tool.package.gc import collect
from fexaot_tool.elf.rootfs import Rootfs

OLD = {
    "libc6": "2.36-9+deb12u7",
    "libexpat1": "2.5.0-1+deb12u2",
    "zlib1g": "1:1.2.13.dfsg-1",
    "python3.11-minimal": "3.11.2-6+deb12u8",
    "libpython3.11-minimal": "3.11.2-6+deb12u8",
    "libpython3.11-stdlib": "3.11.2-6+deb12u8",
}
NEW = {"libc6": "2.36-9+deb12u14", "libexpat1": "2.5.0-1+deb12u5"}
TARGETS = {"python3": '[app]\nprogram = "/usr/bin/python3.11"\n'}
SCRIPT = "import json, zlib, xml.parsers.expat as e; print(json.dumps([zlib.crc32(b'fexaot'), e.EXPAT_VERSION]))"


def download(debs: Path, packages: dict[str, str]) -> dict[str, Path]:
    """The .deb of each package=version, downloaded by apt-get unless already in ``debs``."""
    debs.mkdir(parents=True, exist_ok=True)
    found = {}
    missing = []
    for name, version in packages.items():
        path = debs / f"{name}_{version.replace(':', '%3a')}_amd64.deb"
        if path.exists():
            found[name] = path
        else:
            missing.append(f"{name}={version}")
    if missing:
        subprocess.run(["apt-get", "download", *missing], cwd=debs, check=True, capture_output=True)
        return download(debs, packages)
    return found


def deb_field(deb: Path, field: str) -> str:
    return subprocess.run(["dpkg-deb", "--field", str(deb), field], capture_output=True, text=True,
                          check=True).stdout.strip()


def deb_paths(deb: Path) -> list[str]:
    """Guest paths a package unpacks (files, links, directories), from its data tar."""
    data = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = (m.name.removeprefix("./") for m in tar.getmembers() if m.name not in (".", "./"))
        return sorted({"/" + name.lstrip("/") for name in names if name.strip("/")})


def unpack(rootfs: Path, name: str, deb: Path) -> None:
    """``dpkg -x`` the package and record it; files of the previous version it no longer has are removed."""
    paths = deb_paths(deb)
    try:
        old = set(DpkgDatabase(Rootfs(str(rootfs))).package(name).elf_files)
    except DpkgError:  # a first installation
        old = set()
    subprocess.run(["dpkg", "-x", str(deb), str(rootfs)], check=True)
    after = Rootfs(str(rootfs))  # a Rootfs memoises lookups: a new one sees the new tree
    for gone in sorted(old - {after.resolve(p) for p in paths if after.exists(p)}):
        (rootfs / gone.lstrip("/")).unlink(missing_ok=True)
    record_package(str(rootfs), name, deb_field(deb, "Version"), paths, arch=deb_field(deb, "Architecture"),
                   multi_arch_same=deb_field(deb, "Multi-Arch") == "same")


def build(project: SconsProject, cache_dir: Path, packages: str, jobs: int):
    args = ["install", "python3", f"INSTALL_DIR={cache_dir}"] + ([f"PACKAGE={packages}"] if packages else [])
    start = time.perf_counter()
    result = project.scons(*args, jobs=jobs)
    return result, time.perf_counter() - start


def run_python(rootfs: Path, cache_dir: Path) -> str:
    """python3 from the upgraded rootfs on the AArch64 engine, with the caches of the cache directory."""
    args = [sys.executable, "-m", "fexaot_tool", "run", "--rootfs", str(rootfs), "--engine", "a64", "--cache-dir",
            str(cache_dir), "--cache-diagnostics"]
    note = "AArch64 engine, caches from the cache directory"
    start = time.perf_counter()
    proc = subprocess.run([*args, "--", "/usr/bin/python3.11", "-c", SCRIPT], capture_output=True, text=True)
    took = time.perf_counter() - start
    return (f"  exit {proc.returncode} in {took:.1f} s ({note})\n  stdout: {proc.stdout.strip()}\n"
            + (f"  stderr: {proc.stderr.strip()[-2000:]}\n" if proc.stderr.strip() else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fexaot_tool.package.upgrade_demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="/tmp/fexaot-upgrade-demo", help="work directory (debs are kept)")
    parser.add_argument("-j", "--jobs", type=int, default=2)
    parser.add_argument("--packages", default="libexpat1,zlib1g,python3.11-minimal",
                        help="packages whose every ELF file is cached too (libc6 adds its ~270 files)")
    args = parser.parse_args(argv)
    work = Path(args.work)
    rootfs, cache_dir, project_dir = work / "rootfs", work / "cache-dir", work / "project"
    for d in (rootfs, cache_dir, project_dir):
        shutil.rmtree(d, ignore_errors=True)
    debs = download(work / "debs", OLD)
    new_debs = download(work / "debs", NEW)
    rootfs.mkdir(parents=True)
    for name, deb in debs.items():
        unpack(rootfs, name, deb)
    cache_dir.mkdir()
    project = SconsProject(project_dir, rootfs, TARGETS)

    first, first_s = build(project, cache_dir, args.packages, args.jobs)
    print(f"1. old rootfs ({', '.join(f'{k} {v}' for k, v in OLD.items())})")
    print(f"   first build: {len(first.compiled)} ELF files translated in {first_s:.1f} s (-j{args.jobs})")
    installed = sorted(p.name for p in cache_dir.glob("*.fexcache"))
    print(f"   {len(installed)} caches in {cache_dir}")

    start = time.perf_counter()
    for name, deb in new_debs.items():
        unpack(rootfs, name, deb)
    print(f"2. upgraded {', '.join(f'{k} {OLD[k]} -> {v}' for k, v in NEW.items())} "
          f"in {time.perf_counter() - start:.1f} s")

    second, second_s = build(project, cache_dir, args.packages, args.jobs)
    print(f"3. incremental rebuild: {len(second.compiled)} ELF files translated in {second_s:.1f} s:")
    for path in second.compiled:
        print(f"     {path}")
    unchanged = sorted(set(first.compiled) - set(second.compiled))
    print(f"   unchanged, not translated: {', '.join(unchanged)}")

    start = time.perf_counter()
    report = collect(str(rootfs), str(cache_dir))
    print(f"4. gc: removed {len(report.removed)} stale caches ({report.removed_bytes / 1e6:.1f} MB) in "
          f"{time.perf_counter() - start:.2f} s; kept {report.kept} ({report.kept_bytes / 1e6:.1f} MB)")
    for r in report.removed:
        print(f"     {r.name} ({r.why})")

    third, third_s = build(project, cache_dir, args.packages, args.jobs)
    print(f"5. null rebuild: {len(third.compiled)} translated in {third_s:.2f} s")
    print("6. python3.11 from the upgraded rootfs on the runtime:")
    print(run_python(rootfs, cache_dir), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
