"""The fexaot-integration package: systemd units that verify, and a dpkg trigger that rebuilds.

The trigger test is a real dpkg run: the integration package and then an
upgraded library package are installed with ``dpkg --root`` into a copy of the
fixture rootfs; dpkg runs the postinst for the file trigger, which runs
``fexaot rebuild`` on that rootfs (``DPKG_ROOT``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fexaot_tool.package.archive import DebControl, Member, write_deb
from fexaot_tool.package.integration import build_integration_deb
from fexaot_tool.package.layout import read_index

from rootfs_fixture import copy_fixture_rootfs
from test_package import LIBFX, build_libfx, expected_name

EPOCH = 1704067200
HOST_SYSTEMD = Path("/usr/lib/systemd")


@pytest.fixture
def integration_deb(tmp_path) -> Path:
    deb = tmp_path / "fexaot-integration.deb"
    build_integration_deb(str(deb), EPOCH, "fexaot test <fexaot-test@example.org>")
    return deb


def test_integration_deb_holds_trigger_postinst_and_units(integration_deb, tmp_path):
    again = tmp_path / "again.deb"
    build_integration_deb(str(again), EPOCH, "fexaot test <fexaot-test@example.org>")
    assert again.read_bytes() == integration_deb.read_bytes()
    info = subprocess.run(["dpkg-deb", "--info", str(integration_deb)], capture_output=True, text=True, check=True)
    assert "triggers" in info.stdout and "postinst" in info.stdout
    triggers = subprocess.run(["dpkg-deb", "--info", str(integration_deb), "triggers"], capture_output=True,
                              text=True, check=True).stdout
    interests = [line.split() for line in triggers.splitlines() if line and not line.startswith("#")]
    assert all(kind == "interest-noawait" for kind, _ in interests)
    assert {"/usr/lib", "/lib", "/usr/bin"} <= {path for _, path in interests}


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_units_verify(integration_deb, tmp_path):
    root = tmp_path / "root"
    subprocess.run(["dpkg", "-x", str(integration_deb), str(root)], check=True)
    # The units reference targets (sysinit.target, timers.target) from systemd itself.
    for unit in HOST_SYSTEMD.joinpath("system").iterdir():
        dest = root / "lib/systemd/system" / unit.name
        if not dest.exists() and not unit.is_dir():
            shutil.copy(unit, dest, follow_symlinks=False)
    units = ["fexaot-rebuild.service", "fexaot-rebuild.timer"]
    proc = subprocess.run(["systemd-analyze", "verify", f"--root={root}", *units], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    service = (root / "lib/systemd/system/fexaot-rebuild.service").read_text()
    for setting in ("ConditionACPower=true", "Nice=19", "IOSchedulingClass=idle", "CPUSchedulingPolicy=idle"):
        assert setting in service.splitlines()
    # The check is real: a unit whose program is missing fails it.
    (root / "usr/libexec/fexaot/fexaot-rebuild").unlink()
    proc = subprocess.run(["systemd-analyze", "verify", f"--root={root}", *units], capture_output=True, text=True)
    assert proc.returncode != 0 and "fexaot-rebuild" in proc.stderr


def _library_package(path: Path, rootfs: Path, version: str) -> Path:
    """A libfx1 .deb holding the rootfs's current libfx.so.1.0 (what an upgrade would unpack)."""
    lib = rootfs / LIBFX.lstrip("/")
    members = [Member(LIBFX.lstrip("/"), data=lib.read_bytes()),
               Member("usr/share/doc/libfx1/copyright", data=b"Copyright 2024 The fx authors\n")]
    control = DebControl("libfx1", version, "fx <fx@example.org>", "fx library", "The fx library.")
    write_deb(str(path), control, members, EPOCH)
    return path


def test_dpkg_trigger_rebuilds_the_upgraded_library(tmp_path, fixture_rootfs, integration_deb):
    rootfs = copy_fixture_rootfs(fixture_rootfs.root, tmp_path / "rootfs")
    build_libfx(rootfs, 1)  # records libfx1 1.1-1 in the rootfs's dpkg database
    for d in ("var/lib/dpkg/updates", "var/lib/dpkg/triggers"):
        (rootfs / d).mkdir(parents=True, exist_ok=True)
    cache_dir, state_dir = tmp_path / "cache", tmp_path / "state"
    bindir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bindir}:/usr/sbin:/usr/bin:/sbin:/bin",
           "FEXAOT": str(bindir / "fexaot"), "FEXAOT_CACHE_DIR": str(cache_dir), "FEXAOT_STATE_DIR": str(state_dir),
           "FEXAOT_PACKAGES": "libfx1", "FEXAOT_TARGETS": ""}

    def dpkg_install(deb: Path) -> subprocess.CompletedProcess:
        proc = subprocess.run(["dpkg", f"--root={rootfs}", "--force-script-chrootless", "--force-not-root",
                               "--force-unsafe-io", "-i", str(deb)], capture_output=True, text=True, env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc

    old = expected_name(rootfs, LIBFX)
    dpkg_install(integration_deb)  # configure: the first build
    assert [e.name for e in read_index(str(cache_dir))] == [old]
    # An upgrade of libfx1 unpacks a new libfx.so.1.0 under /usr/lib: the trigger fires.
    work = tmp_path / "v2"
    shutil.copytree(rootfs, work, symlinks=True)
    build_libfx(work, 2)
    proc = dpkg_install(_library_package(tmp_path / "libfx1_1.2-1_all.deb", work, "1.2-1"))
    assert "Processing triggers for fexaot-integration" in proc.stdout
    new = expected_name(rootfs, LIBFX)
    assert new != old
    assert f"compile {LIBFX}" in proc.stdout  # only the changed file was translated
    assert proc.stdout.count("] compile ") == 1
    assert [e.name for e in read_index(str(cache_dir))] == [new]  # gc removed the old version's cache
