"""Loader agreement over a sample of host files, and the checker's own parts.

The full run over every host file is a command, not a test (about 1,600 files)::

    .venv/bin/fexaot check-loader

(see docs/elf-and-rootfs.md for its numbers).
"""

from __future__ import annotations

import json
import os
import platform

import pytest

from fexaot_tool.cli import main
from fexaot_tool.elf.closure import ClosureResolver, LoaderConfig
from fexaot_tool.elf.rootfs import Rootfs
from fexaot_tool.validate.loader import (
    HOST_LOADER,
    ListedObject,
    LoaderCheckError,
    LoaderRun,
    Outcome,
    RealLoaderResult,
    check_loader,
    judge,
    parse_listing,
    probe_host_config,
    select_sample,
)

pytestmark = pytest.mark.skipif(
    not (platform.system() == "Linux" and platform.machine() == "x86_64" and os.path.exists(HOST_LOADER)),
    reason="needs an x86-64 Linux host with glibc's loader",
)

LISTING = """\
\tlinux-vdso.so.1 (0x00007ffd1b5f2000)
\tlibm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x00007f48b62bb000)
\tlibgone.so.3 => not found
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f48b608f000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f48b63ae000)
\tusr/lib/relative.so (0x00007f48b6000000)
"""


def test_sample_of_host_files_agrees_with_the_real_loader():
    report = check_loader(sample=40)
    disagreements = [f"{c.path}: {c.detail}" for c in report.checks if c.outcome is Outcome.DISAGREE]
    assert disagreements == []
    assert len(report.checks) == 40
    assert report.count(Outcome.AGREE) >= 35, report.summary()
    assert report.summary().startswith("loader agreement: 40 files, ")


def test_parse_listing_drops_the_vdso_and_the_loader():
    listing, unparsed = parse_listing(LISTING)
    assert listing == (
        ListedObject("libm.so.6", "/lib/x86_64-linux-gnu/libm.so.6"),
        ListedObject("libgone.so.3", None),
        ListedObject("libc.so.6", "/lib/x86_64-linux-gnu/libc.so.6"),
        ListedObject("usr/lib/relative.so", "usr/lib/relative.so"),
    )
    assert unparsed == ()
    assert parse_listing("\tstatically linked\n") == ((), ())
    assert parse_listing("something else\n")[1] == ("something else",)


def test_judge_reports_every_kind_of_difference():
    program = os.path.realpath("/usr/bin/python3.11" if os.path.exists("/usr/bin/python3.11") else "/bin/ls")
    closure = ClosureResolver(Rootfs("/")).closure(program)
    real = [ListedObject(o.name, o.path) for o in closure.libraries]

    def outcome(listing, error=None, unparsed=()):
        run = LoaderRun(0 if error is None else 127, tuple(listing), error, tuple(unparsed))
        return judge(program, closure, RealLoaderResult(run, None))

    assert outcome(real).outcome is Outcome.AGREE
    swapped = outcome([real[1], real[0], *real[2:]])
    assert swapped.outcome is Outcome.DISAGREE and "another order" in swapped.detail
    extra = outcome([*real, ListedObject("libextra.so.1", "/lib/x86_64-linux-gnu/libz.so.1")])
    assert extra.outcome is Outcome.DISAGREE and "only the loader loads" in extra.detail
    missing = outcome([*real, ListedObject("libgone.so.1", None)])
    assert missing.outcome is Outcome.DISAGREE and "libgone.so.1" in missing.detail
    failed = outcome([], error=f"{program}: error while loading shared libraries: libz.so.1: invalid ELF header")
    assert failed.outcome is Outcome.DISAGREE
    assert outcome(real, unparsed=["???"]).outcome is Outcome.DISAGREE
    crashed = judge(program, closure, RealLoaderResult(LoaderRun(-11, (), None), None))
    assert (crashed.outcome, crashed.detail) == (Outcome.SKIPPED, "loader killed by SIGSEGV")


def test_host_config_is_what_the_host_loader_says():
    probe = os.path.realpath("/usr/bin/true" if os.path.exists("/usr/bin/true") else "/bin/sh")
    config = probe_host_config(probe)
    assert config.lib == "lib/x86_64-linux-gnu" and config.platform == "x86_64"
    assert config.system_dirs == LoaderConfig().system_dirs
    # The host may have glibc-hwcaps levels the baseline target does not.
    assert config.search_subdirs[-len(LoaderConfig().search_subdirs):] == LoaderConfig().search_subdirs


def test_sample_is_spread_evenly_and_deterministic():
    files = [f"/f{i:03}" for i in range(100)]
    assert select_sample(files, 4) == ["/f000", "/f025", "/f050", "/f075"]
    assert select_sample(files, None) == files and select_sample(files, 500) == files


def test_check_loader_needs_the_host_root(fixture_rootfs):
    with pytest.raises(LoaderCheckError, match="rootfs must be /"):
        check_loader(str(fixture_rootfs.root))


def test_check_loader_command(capsys):
    assert main(["check-loader", "--sample", "5", "/usr/bin"]) == 0
    out = capsys.readouterr().out
    assert "loader agreement: 5 files, " in out and " 0 disagree" in out


def test_closure_command(capsys, fixture_rootfs):
    assert main(["closure", "--rootfs", str(fixture_rootfs.root), "app", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["program"] == "/usr/bin/app"
    assert [o["found_by"] for o in data["objects"]][:2] == ["program", "PT_INTERP"]
    assert main(["closure", "--rootfs", str(fixture_rootfs.root), fixture_rootfs.missing_app_name]) == 1
    captured = capsys.readouterr()
    assert "libnothere.so.1" in captured.out and "not found" in captured.err
    assert main(["closure", "--rootfs", str(fixture_rootfs.root), "no-such-program"]) == 1
    assert "no-such-program: no executable file on the PATH" in capsys.readouterr().err
