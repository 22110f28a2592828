"""A small, hermetic Debian-like x86-64 rootfs built from gcc-compiled programs.

:func:`build_fixture_rootfs` lays out merged-/usr (``/lib -> usr/lib``, ``/bin ->
usr/bin``, ``/lib64/ld-linux-x86-64.so.2`` as an absolute link), copies the host's
real ld.so and libc.so.6 into it, and links tiny programs and libraries whose
DT_NEEDED, DT_RPATH, DT_RUNPATH and DF_1_NODEFLIB exercise each rule of the
loader's search.  Every library is linked from one object file and every program
from another, so the whole build is two compiles and a few dozen quick links.

The tree also holds hostile symlinks (to ``/etc/passwd``, to
``../../../../../../etc/passwd``, a loop) and its own ``/etc/passwd``, so a test
can tell the rootfs's file from the host's.  When run as root, the build ends by
running the host's (static) ldconfig chrooted in the tree, so that
``/etc/ld.so.cache`` exists and the real loader can be run inside it as an oracle.

Other tests copy the built tree with :func:`copy_fixture_rootfs` (symlinks kept
as symlinks) rather than building their own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

HOST_INTERPRETER = "/lib64/ld-linux-x86-64.so.2"
HOST_LIBC = "/lib/x86_64-linux-gnu/libc.so.6"
HOST_LDCONFIG = "/sbin/ldconfig"
MULTIARCH = "/usr/lib/x86_64-linux-gnu"

PASSWD = b"root:x:0:0:fexaot fixture root, not the host's:/root:/bin/sh\n"

LD_SO_CONF = """\
# fexaot fixture: comments, a glob include and a hwcap line ldconfig ignores
include /etc/ld.so.conf.d/*.conf
hwcap 1 nosegneg
"""
CONF_FILES = {
    "/etc/ld.so.conf.d/fx.conf": "/opt/conflib\t# libconf.so.1 is only here\n\ninclude extra/*.conf\n",
    "/etc/ld.so.conf.d/extra/more.conf": "/opt/conflib2/\n",
    # Not *.conf, so not included: libhidden.so.1 stays unfindable.
    "/etc/ld.so.conf.d/README": "/opt/notincluded\n",
}

# What libc.so is on a Debian system: a text file where a library is expected.
LINKER_SCRIPT = """\
/* GNU ld script
   Use the shared library, but some functions are only in
   the static library, so try that secondarily.  */
GROUP ( /opt/bad/libbad.so.1.0 )
"""

LIB_SOURCE = "int fexaot_fixture_library(void) { return 42; }\n"
MAIN_SOURCE = "int main(void) { return 0; }\n"
# A static executable without libc: _start calls exit(0).
STATIC_SOURCE = 'void _start(void) { __asm__ volatile("mov $60, %eax\\n\\txor %edi, %edi\\n\\tsyscall"); }\n'


@dataclass(frozen=True)
class _Lib:
    """A fixture library: where its file goes, its SONAME, and what the linker records."""

    path: str
    soname: str | None
    needed: tuple[str, ...] = ()
    runpath: str | None = None
    links: tuple[tuple[str, str], ...] = ()  # (guest path of a symlink, its target)


@dataclass(frozen=True)
class _App:
    path: str
    needed: tuple[str, ...]
    runpath: str | None = None
    rpath: str | None = None
    ldflags: tuple[str, ...] = ()


LIBS = (
    # app's libraries: found through app's DT_RUNPATH $ORIGIN/../lib/fx/lib.
    _Lib("/usr/lib/fx/lib/libA.so.1.2.3", "libA.so.1", ("libC.so.1",), "$ORIGIN/../lib/private",
         links=(("/usr/lib/fx/lib/libA.so.1", "libA.so.1.2.3"), ("/usr/lib/fx/lib/libA.so", "libA.so.1"))),
    _Lib("/usr/lib/fx/lib/private/libC.so.1", "libC.so.1"),
    # libB is opened as /usr/lib/fx/lib/libB.so.1, a link into ../real: its $ORIGIN
    # is the link's directory, so libD.so.1 comes from lib/, not from the decoy in real/.
    _Lib("/usr/lib/fx/real/libB.so.1.0", "libB.so.1", ("libD.so.1",), "$ORIGIN",
         links=(("/usr/lib/fx/lib/libB.so.1", "../real/libB.so.1.0"),)),
    _Lib("/usr/lib/fx/lib/libD.so.1", "libD.so.1"),
    # Found only through ld.so.conf (a glob include, then a relative include).
    _Lib("/opt/conflib/libconf.so.1.0", "libconf.so.1", links=(("/opt/conflib/libconf.so.1", "libconf.so.1.0"),)),
    _Lib("/opt/conflib2/libconf2.so.1", "libconf2.so.1"),
    _Lib("/opt/notincluded/libhidden.so.1", "libhidden.so.1"),
    # rpathapp has DT_RPATH /opt/rp/first:/opt/rp/second.  librp has no paths of its
    # own, so its libinherit.so.1 comes through the program's DT_RPATH; librunp has a
    # DT_RUNPATH, so the program's DT_RPATH is not used for its libprec.so.1.
    _Lib("/opt/rp/second/librp.so.1", "librp.so.1", ("libinherit.so.1",)),
    _Lib("/opt/rp/first/libinherit.so.1", "libinherit.so.1"),
    _Lib("/opt/rp/first/librunp.so.1", "librunp.so.1", ("libprec.so.1",), "/opt/rp/runp"),
    _Lib("/opt/rp/runp/libprec.so.1", "libprec.so.1"),
    # Not a library name ldconfig records (no "lib" prefix): found by the search of
    # the system directories, the loader's last step.
    _Lib(f"{MULTIARCH}/fxplug.so.1", "fxplug.so.1"),
    _Lib(f"{MULTIARCH}/libskip.so.1", "libskip.so.1"),
    _Lib(f"{MULTIARCH}/libnodef.so.1", "libnodef.so.1"),
    # Each behind a symlink loop of the same name in /lib/x86_64-linux-gnu, the first
    # system directory.  Debian's ldconfig also scans /lib, so libloop.so.1 is in
    # ld.so.cache; loopy.so.1 is not a library name ldconfig records, so the
    # loader's search of the system directories meets the loop and gives up.
    _Lib("/usr/lib/libloop.so.1", "libloop.so.1"),
    _Lib("/usr/lib/loopy.so.1", "loopy.so.1"),
    # No SONAME: a program linked with it by a relative path records that path as
    # DT_NEEDED, which the loader opens from the working directory.
    _Lib("/usr/lib/fx/noso/libnoso.so", None),
)

# Linked against but left out of the rootfs (libbad's place gets a text file).
STUB_LIBS = (_Lib("libnothere.so.1", "libnothere.so.1"), _Lib("libbad.so.1", "libbad.so.1"))

APPS = (
    _App("/usr/bin/app", ("libA.so.1", "libB.so.1"), runpath="$ORIGIN/../lib/fx/lib"),
    _App("/usr/bin/confapp", ("libconf.so.1", "libconf2.so.1", "fxplug.so.1")),
    _App("/usr/bin/rpathapp", ("librp.so.1", "librunp.so.1", "libskip.so.1"), rpath="/opt/rp/first:/opt/rp/second"),
    _App("/usr/bin/nodeflibapp", ("libconf.so.1", "libnodef.so.1"), ldflags=("-Wl,-z,nodefaultlib",)),
    _App("/usr/bin/missingapp", ("libnothere.so.1", "libhidden.so.1")),
    _App("/usr/bin/loopapp", ("libloop.so.1", "loopy.so.1")),
    _App("/usr/bin/badapp", ("libbad.so.1",), rpath="/opt/bad"),
    _App("/usr/bin/pathapp", ("usr/lib/fx/noso/libnoso.so",)),
)

# (copy of, to, how the copy is spoiled): decoys the right search must not find,
# and libraries of the wrong class or machine that glibc skips.
COPIES = (
    ("/usr/lib/fx/lib/libD.so.1", "/usr/lib/fx/real/libD.so.1", None),
    ("/opt/rp/second/librp.so.1", f"{MULTIARCH}/librp.so.1", None),
    ("/opt/rp/runp/libprec.so.1", "/opt/rp/first/libprec.so.1", None),
    (f"{MULTIARCH}/libskip.so.1", "/opt/rp/first/libskip.so.1", "32-bit"),
    (f"{MULTIARCH}/libskip.so.1", "/opt/rp/second/libskip.so.1", "aarch64"),
)

SYMLINKS = (
    ("/bin", "usr/bin"),
    ("/sbin", "usr/sbin"),
    ("/lib", "usr/lib"),
    ("/lib64/ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
    ("/opt/fx/bin/app", "/usr/bin/app"),
    (f"{MULTIARCH}/libloop.so.1", "libloop.so.1"),
    (f"{MULTIARCH}/loopy.so.1", "loopy.so.1"),
    ("/usr/lib/evil/passwd-absolute", "/etc/passwd"),
    ("/usr/lib/evil/passwd-relative", "../../../../../../etc/passwd"),
    ("/usr/lib/evil/loop-a", "loop-b"),
    ("/usr/lib/evil/loop-b", "loop-a"),
    ("/usr/lib/evil/up", "../../../../.."),
)


@dataclass(frozen=True)
class FixtureRootfs:
    """A built fixture rootfs: where it is and the guest paths tests use."""

    root: Path
    has_ld_so_cache: bool
    """True when ldconfig ran in the tree (so the real loader can run chrooted in it)."""
    app: str = "/usr/bin/app"
    app_via_link: str = "/opt/fx/bin/app"
    conf_app: str = "/usr/bin/confapp"
    rpath_app: str = "/usr/bin/rpathapp"
    nodeflib_app: str = "/usr/bin/nodeflibapp"
    missing_app: str = "/usr/bin/missingapp"
    missing_app_name: str = "missingapp"
    loop_app: str = "/usr/bin/loopapp"
    bad_app: str = "/usr/bin/badapp"
    path_app: str = "/usr/bin/pathapp"
    static_app: str = "/usr/bin/static"
    interpreter: str = "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
    libc: str = "/usr/lib/x86_64-linux-gnu/libc.so.6"
    passwd: bytes = PASSWD
    passwd_absolute_link: str = "/usr/lib/evil/passwd-absolute"
    passwd_relative_link: str = "/usr/lib/evil/passwd-relative"
    loop_link: str = "/usr/lib/evil/loop-a"
    up_link: str = "/usr/lib/evil/up"

    @property
    def programs(self) -> tuple[str, ...]:
        """Every dynamically linked program of the fixture."""
        return tuple(app.path for app in APPS)

    def host(self, guest: str) -> Path:
        """Host path of a guest path, without resolving anything (for writing fixtures)."""
        return self.root / guest.lstrip("/")


def build_fixture_rootfs(dest: Path) -> FixtureRootfs:
    """Build the fixture rootfs in the new directory ``dest`` (its parent must exist)."""
    dest = Path(dest)
    dest.mkdir()

    def host(guest: str) -> Path:
        path = dest / guest.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    shutil.copyfile(os.path.realpath(HOST_INTERPRETER), host(f"{MULTIARCH}/ld-linux-x86-64.so.2"))
    shutil.copyfile(os.path.realpath(HOST_LIBC), host(f"{MULTIARCH}/libc.so.6"))
    for name in ("ld-linux-x86-64.so.2", "libc.so.6"):
        os.chmod(host(f"{MULTIARCH}/{name}"), 0o755)
    host("/usr/bin").mkdir(exist_ok=True)
    host("/usr/sbin").mkdir(exist_ok=True)
    for guest, target in SYMLINKS:
        host(guest).symlink_to(target)

    host("/etc/passwd").write_bytes(PASSWD)
    host("/etc/ld.so.conf").write_text(LD_SO_CONF)
    for guest, text in CONF_FILES.items():
        host(guest).write_text(text)

    with tempfile.TemporaryDirectory(prefix="fexaot-fixture-build-") as tmp:
        build = Path(tmp)
        _compile(build, dest, host)

    has_cache = _run_ldconfig(dest)
    return FixtureRootfs(root=dest, has_ld_so_cache=has_cache)


def copy_fixture_rootfs(src: Path, dest: Path) -> Path:
    """Copy a built fixture to ``dest`` (new), keeping symlinks as symlinks."""
    shutil.copytree(src, dest, symlinks=True)
    return Path(dest)


def _compile(build: Path, dest: Path, host) -> None:
    (build / "lib.c").write_text(LIB_SOURCE)
    (build / "main.c").write_text(MAIN_SOURCE)
    (build / "start.c").write_text(STATIC_SOURCE)
    # What to put on the link line for each DT_NEEDED name: the library's file, or
    # the name itself when it is a path (relative to dest, gcc's working directory).
    by_soname = {lib.soname: str(host(lib.path)) for lib in LIBS if lib.soname}
    by_soname.update({lib.soname: str(build / lib.path) for lib in STUB_LIBS if lib.soname})
    by_soname.update({lib.path.lstrip("/"): lib.path.lstrip("/") for lib in LIBS if not lib.soname})
    rpath_link = ":".join(sorted({os.path.dirname(p) for p in by_soname.values() if p.startswith("/")}))

    def link_library(lib: _Lib, out: Path) -> list[str]:
        soname = [f"-Wl,-soname,{lib.soname}"] if lib.soname else []
        args = ["-shared", "-o", str(out), str(build / "lib.o"), *soname,
                "-Wl,--no-as-needed", *(by_soname[n] for n in lib.needed), f"-Wl,-rpath-link,{rpath_link}"]
        if lib.runpath:
            args.append(f"-Wl,--enable-new-dtags,-rpath,{lib.runpath}")
        return args

    def link_app(app: _App) -> list[str]:
        args = ["-o", str(host(app.path)), str(build / "main.o"), *app.ldflags,
                "-Wl,--no-as-needed", *(by_soname[n] for n in app.needed), f"-Wl,-rpath-link,{rpath_link}"]
        if app.runpath:
            args.append(f"-Wl,--enable-new-dtags,-rpath,{app.runpath}")
        if app.rpath:
            args.append(f"-Wl,--disable-new-dtags,-rpath,{app.rpath}")
        return args

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        stages = [
            [["-c", "-fPIC", "-O1", "-o", str(build / "lib.o"), str(build / "lib.c")],
             ["-c", "-O1", "-o", str(build / "main.o"), str(build / "main.c")],
             ["-static", "-nostdlib", "-O1", "-o", str(host("/usr/bin/static")), str(build / "start.c")]],
            [link_library(lib, host(lib.path)) for lib in LIBS if not lib.needed]
            + [link_library(lib, build / lib.path) for lib in STUB_LIBS],
            [link_library(lib, host(lib.path)) for lib in LIBS if lib.needed],
            [link_app(app) for app in APPS],
        ]
        for stage in stages:
            list(pool.map(lambda args: _gcc(args, cwd=dest), stage))

    for lib in LIBS:
        for link, target in lib.links:
            host(link).symlink_to(target)
    for source, copy, spoil in COPIES:
        data = bytearray(host(source).read_bytes())
        if spoil == "32-bit":
            data[4] = 1  # EI_CLASS = ELFCLASS32
        elif spoil == "aarch64":
            data[18:20] = (183).to_bytes(2, "little")  # e_machine = EM_AARCH64
        host(copy).write_bytes(bytes(data))
        os.chmod(host(copy), 0o755)
    host("/opt/bad/libbad.so.1").write_text(LINKER_SCRIPT)


def _gcc(args: list[str], cwd: Path) -> None:
    proc = subprocess.run(["gcc", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"gcc {' '.join(args)} failed:\n{proc.stderr}")


def _run_ldconfig(dest: Path) -> bool:
    """Build /etc/ld.so.cache with the host's static ldconfig, chrooted in the tree (root only)."""
    ldconfig = os.path.realpath(HOST_LDCONFIG)
    if os.geteuid() != 0 or not os.path.exists(ldconfig):
        return False
    inside = dest / "fexaot-ldconfig"
    shutil.copyfile(ldconfig, inside)
    os.chmod(inside, 0o755)

    def enter_root() -> None:
        os.chroot(dest)
        os.chdir("/")

    try:
        # -X: build the cache but create no symlinks, so the tree stays as built.
        proc = subprocess.run(["/fexaot-ldconfig", "-X"], env={}, capture_output=True, preexec_fn=enter_root)
    except OSError:
        return False
    finally:
        inside.unlink()
    return proc.returncode == 0 and (dest / "etc/ld.so.cache").exists()
