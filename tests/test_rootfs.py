"""Rootfs: chroot-like resolution that never leaves the rootfs directory."""

from __future__ import annotations

import builtins
import os
import platform

import pytest

from fexaot_tool.elf.closure import ClosureResolver
from fexaot_tool.elf.rootfs import (
    PathNotFoundError,
    Rootfs,
    RootfsError,
    RootfsRequiredError,
    SymlinkLoopError,
    default_rootfs,
)
from rootfs_fixture import copy_fixture_rootfs


@pytest.fixture
def rootfs(fixture_rootfs) -> Rootfs:
    return Rootfs(fixture_rootfs.root)


def under(root: str, host_path: str) -> bool:
    return os.path.commonpath([root, host_path]) == root


@pytest.mark.parametrize("link", ["passwd_absolute_link", "passwd_relative_link"])
def test_hostile_link_to_etc_passwd_stays_inside(fixture_rootfs, rootfs, link):
    guest = getattr(fixture_rootfs, link)
    assert rootfs.resolve(guest) == "/etc/passwd"
    host = rootfs.host_path(guest)
    assert under(rootfs.root, host)
    assert host == os.path.join(rootfs.root, "etc/passwd")
    assert rootfs.read_bytes(guest) == fixture_rootfs.passwd
    with open("/etc/passwd", "rb") as f:
        assert f.read() != fixture_rootfs.passwd


def test_dotdot_never_climbs_above_the_root(fixture_rootfs, rootfs):
    assert rootfs.resolve("/..") == "/"
    assert rootfs.resolve("/../../..") == "/"
    assert rootfs.resolve("/usr/../../../../etc/passwd") == "/etc/passwd"
    assert rootfs.resolve(fixture_rootfs.up_link) == "/"
    assert rootfs.resolve(fixture_rootfs.up_link + "/etc/passwd") == "/etc/passwd"
    assert rootfs.read_bytes(fixture_rootfs.up_link + "/../../etc/passwd") == fixture_rootfs.passwd


def test_dotdot_after_a_symlink_is_the_parent_of_its_target(rootfs):
    # /lib -> usr/lib, so /lib/.. is /usr (as for the kernel), not / (as for os.path.normpath).
    assert rootfs.resolve("/lib/..") == "/usr"
    assert rootfs.resolve("/lib/../bin/app") == "/usr/bin/app"


def test_symlink_loop_is_a_typed_error_naming_the_path(fixture_rootfs, rootfs):
    with pytest.raises(SymlinkLoopError) as error:
        rootfs.resolve(fixture_rootfs.loop_link)
    assert fixture_rootfs.loop_link in str(error.value)
    assert "too many levels of symbolic links" in str(error.value)
    with pytest.raises(SymlinkLoopError):
        rootfs.lookup(fixture_rootfs.loop_link + "/below")
    assert not rootfs.exists(fixture_rootfs.loop_link)


def test_merged_usr_and_the_interpreter_link(fixture_rootfs, rootfs):
    assert rootfs.resolve("/lib/x86_64-linux-gnu/libc.so.6") == fixture_rootfs.libc
    assert rootfs.resolve("/lib64/ld-linux-x86-64.so.2") == fixture_rootfs.interpreter
    assert rootfs.resolve("/bin/app") == "/usr/bin/app"
    assert rootfs.resolve("/usr/lib/fx/lib/libA.so") == "/usr/lib/fx/lib/libA.so.1.2.3"
    assert rootfs.is_symlink("/usr/lib/fx/lib/libA.so.1")
    assert not rootfs.is_symlink("/usr/lib/fx/lib/libA.so.1.2.3")


def test_missing_paths(fixture_rootfs, rootfs):
    assert rootfs.lookup("/no/such/file") is None
    assert rootfs.lookup("/etc/passwd/below") is None  # ENOTDIR
    assert rootfs.lookup("/etc/passwd/") is None
    with pytest.raises(PathNotFoundError) as error:
        rootfs.resolve("/no/such/file")
    assert "/no/such/file" in str(error.value) and rootfs.root in str(error.value)
    assert rootfs.is_file("/etc/passwd") and not rootfs.is_dir("/etc/passwd")
    assert rootfs.is_dir("/lib") and not rootfs.exists("/nope")


def test_relative_guest_paths_start_at_the_root(rootfs):
    assert rootfs.resolve("usr/lib/fx/noso/libnoso.so") == "/usr/lib/fx/noso/libnoso.so"


def test_glob_is_confined_sorted_and_skips_dot_files(tmp_path, fixture_rootfs):
    copy = copy_fixture_rootfs(fixture_rootfs.root, tmp_path / "rootfs")
    (copy / "etc/ld.so.conf.d/.hidden.conf").write_text("/hidden\n")
    (copy / "etc/ld.so.conf.d/a.conf").write_text("/a\n")
    rootfs = Rootfs(copy)
    assert rootfs.glob("/etc/ld.so.conf.d/*.conf") == ["/etc/ld.so.conf.d/a.conf", "/etc/ld.so.conf.d/fx.conf"]
    assert rootfs.glob("/etc/ld.so.conf.d/.*.conf") == ["/etc/ld.so.conf.d/.hidden.conf"]
    assert rootfs.glob("/usr/lib/evil/passwd-*") == ["/usr/lib/evil/passwd-absolute", "/usr/lib/evil/passwd-relative"]
    # Through a link into the rootfs's own /etc, never the host's.
    assert rootfs.glob("/usr/lib/evil/up/etc/pass*") == ["/usr/lib/evil/up/etc/passwd"]
    assert rootfs.glob("/no/such/*") == []


def test_which_searches_the_rootfs_path(tmp_path, fixture_rootfs):
    copy = copy_fixture_rootfs(fixture_rootfs.root, tmp_path / "rootfs")
    (copy / "usr/bin/not-executable").write_text("data\n")
    rootfs = Rootfs(copy)
    assert rootfs.which("app") == "/usr/bin/app"
    assert rootfs.which(fixture_rootfs.app_via_link) == fixture_rootfs.app_via_link
    assert rootfs.which("no-such-program") is None
    assert rootfs.which("not-executable") is None
    assert rootfs.which("passwd") is None  # /etc is not on the PATH


def test_walk_elf_files_lists_each_file_once_by_canonical_path(fixture_rootfs, rootfs):
    files = rootfs.walk_elf_files(["/usr", "/usr/lib", "/lib"])
    assert files == sorted(set(files))
    assert "/usr/bin/app" in files and "/usr/bin/static" in files
    assert "/usr/lib/fx/lib/libA.so.1.2.3" in files and "/usr/lib/fx/lib/libA.so.1" not in files
    assert fixture_rootfs.interpreter in files and fixture_rootfs.libc in files
    assert not any("evil" in f or f.startswith("/etc") for f in files)
    # Links from elsewhere count as the file they lead to, once.
    assert rootfs.walk_elf_files(["/opt/fx"]) == ["/usr/bin/app"]
    with pytest.raises(PathNotFoundError):
        rootfs.walk_elf_files(["/no/such/dir"])


def test_nothing_outside_the_rootfs_is_touched(monkeypatch, fixture_rootfs):
    """Every file the OS is asked to open, stat or list while resolving, reading,
    walking and computing closures really is inside the rootfs: the path given
    and, since the OS follows symlinks in it, the path it leads to."""
    rootfs = Rootfs(fixture_rootfs.root)
    touched: list[tuple[str, str]] = []

    def recording(name, function):
        def wrapper(path, *args, **kwargs):
            if isinstance(path, (str, bytes, os.PathLike)):
                touched.append((name, os.path.abspath(os.fsdecode(path))))
            return function(path, *args, **kwargs)
        return wrapper

    for name in ("lstat", "stat", "readlink", "open", "scandir", "listdir"):
        monkeypatch.setattr(os, name, recording(name, getattr(os, name)))
    monkeypatch.setattr(builtins, "open", recording("open", builtins.open))

    for guest in (fixture_rootfs.passwd_absolute_link, fixture_rootfs.passwd_relative_link):
        assert rootfs.read_bytes(guest) == fixture_rootfs.passwd
    rootfs.resolve(fixture_rootfs.up_link)
    rootfs.glob("/usr/lib/evil/*/etc/*")
    rootfs.walk_elf_files(["/"])
    resolver = ClosureResolver(rootfs)
    for program in fixture_rootfs.programs:
        resolver.closure(program)
    monkeypatch.undo()

    assert len(touched) > 100
    escaped = []
    for name, path in touched:
        # lstat and readlink do not follow the last component; everything else does.
        followed = os.path.realpath(os.path.dirname(path) if name in ("lstat", "readlink") else path)
        if not (under(rootfs.root, path) and under(rootfs.root, followed)):
            escaped.append((name, path, followed))
    assert escaped == []


def test_rootfs_must_be_a_directory(tmp_path):
    with pytest.raises(RootfsError, match="does not exist"):
        Rootfs(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(RootfsError, match="not a directory"):
        Rootfs(tmp_path / "file")


def test_default_rootfs():
    if platform.system() == "Linux" and platform.machine() == "x86_64":
        assert default_rootfs() == "/"
    else:
        with pytest.raises(RootfsRequiredError, match="ROOTFS must be given"):
            default_rootfs()
