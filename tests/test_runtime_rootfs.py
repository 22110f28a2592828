"""A Python script run from a rootfs built from real Debian packages, not from the host's ``/``.

The packages are fetched with ``apt-get download`` into a cache directory that
survives between runs (``build/test-debs`` in the checkout, or
``$FEXAOT_DEB_CACHE``) and unpacked with ``dpkg -x``.  The test is skipped, with
the reason, only when they cannot be fetched (no Debian archive reachable).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fexaot_tool.cache.key import module_identity

PACKAGES = ("python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib", "libc6", "zlib1g",
            "libexpat1", "libssl3")
CACHE = Path(os.environ.get("FEXAOT_DEB_CACHE", Path(__file__).resolve().parent.parent / "build" / "test-debs"))
SCRIPT = """\
import hashlib, json, os, re, sys
words = re.findall(r"[a-z]+", "ahead of time caches for x86 programs")
print(json.dumps({"words": words, "sha256": hashlib.sha256(" ".join(words).encode()).hexdigest(),
                  "total": sum(len(w) ** 3 for w in words)}, sort_keys=True))
"""
PROBE = """\
import os, sys
print(sys.executable, sys.prefix)
print(os.readlink("/lib64/ld-linux-x86-64.so.2"))
print(open("/etc/fexaot-marker").read().strip())
print(os.path.exists("/proc/self/maps"), os.getcwd())
"""


def _fetch(packages: tuple[str, ...]) -> list[Path]:
    CACHE.mkdir(parents=True, exist_ok=True)
    missing = [p for p in packages if not glob.glob(str(CACHE / f"{p}_*.deb"))]
    if missing:
        if shutil.which("apt-get") is None:
            pytest.skip("apt-get is not available: cannot fetch Debian packages for the rootfs")
        proc = subprocess.run(["apt-get", "download", "-o", "APT::Sandbox::User=root", *missing], cwd=CACHE,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            pytest.skip(f"Debian archive unreachable (apt-get download {' '.join(missing)}): {last}")
    return [Path(sorted(glob.glob(str(CACHE / f"{p}_*.deb")))[-1]) for p in packages]


@pytest.fixture(scope="module")
def debian_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    debs = _fetch(PACKAGES)
    root = tmp_path_factory.mktemp("debian") / "rootfs"
    root.mkdir()
    for deb in debs:
        subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
    # Debian byte-compiles the standard library when it installs the package
    # (py3compile); do the same, so the guest does not compile every module it imports.
    subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "0", str(root / "usr/lib/python3.11")],
                   capture_output=True)
    (root / "etc/fexaot-marker").write_text("read from the rootfs\n")
    return root


def fexaot_run(root: Path, *argv: str, options=()) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C", "HOME": "/root"}
    return subprocess.run([sys.executable, "-m", "fexaot_tool", "run", "--rootfs", str(root), *options, "--",
                           *argv], capture_output=True, text=True, env=env, cwd="/")


def test_python_script_from_a_debian_rootfs(debian_rootfs: Path, tmp_path: Path) -> None:
    stats_path = tmp_path / "stats.json"
    result = fexaot_run(debian_rootfs, "/usr/bin/python3.11", "-c", SCRIPT, options=("--stats", str(stats_path)))
    native = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True)
    assert (result.returncode, result.stderr, result.stdout) == (0, "", native.stdout)

    # The rootfs's own loader, libc and interpreter ran, identified by their content.
    modules = {m["name"]: m for m in json.loads(stats_path.read_text())["modules"]}
    root = str(debian_rootfs)
    for name, guest in (("python3.11", "/usr/bin/python3.11"),
                        ("ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
                        ("libc.so.6", "/lib/x86_64-linux-gnu/libc.so.6")):
        module = modules[name]
        assert module["guest_path"] == guest
        assert module["host_path"] == root + guest
        assert module["file_id"] == f"{module_identity(root + guest).file_id:016x}"
        assert module["block_executions"] > 0
    assert all(m["host_path"].startswith(root + "/") for m in modules.values())


def test_paths_are_looked_up_in_the_rootfs_first(debian_rootfs: Path) -> None:
    result = fexaot_run(debian_rootfs, "/usr/bin/python3.11", "-c", PROBE)
    assert result.returncode == 0, result.stderr
    executable, absolute_link, marker, proc_and_cwd = result.stdout.splitlines()
    assert executable == "/usr/bin/python3.11 /usr"  # found its prefix through the rootfs, no host path leaks
    assert absolute_link == "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"  # the link's content, as in the rootfs
    assert marker == "read from the rootfs"
    assert proc_and_cwd == "True /"  # /proc comes from the host; so does the working directory (/ here)
