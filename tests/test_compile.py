"""fexaot compile: one ELF file to a per-object cache holding its identity and codemap."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fexaot_tool.cache.format import Filter, SectionKind
from fexaot_tool.cache.key import TranslatorConfig, config_id, module_identity
from fexaot_tool.cache.reader import CacheFile
from fexaot_tool.discover import build_codemap

PROGRAM = r"""
#include <stdio.h>
int classify(int x) {
    switch (x) { case 0: return 3; case 1: return 9; case 2: return 4; case 3: return 7;
                 case 4: return 1; case 5: return 8; case 6: return 2; default: return -1; }
}
int main(int argc, char **argv) { printf("%d\n", classify(argc)); return 0; }
"""


@pytest.fixture(scope="module", params=["-no-pie", "-pie"])
def program(request, tmp_path_factory):
    out = tmp_path_factory.mktemp("compile") / f"prog{request.param}"
    source = out.with_suffix(".c")
    source.write_text(PROGRAM)
    subprocess.run(["gcc", "-O2", request.param, "-o", str(out), str(source)], check=True)
    return out


def fexaot(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fexaot_tool", *args], capture_output=True, text=True)


@pytest.mark.parametrize("filter", ["speed", "verify"])
def test_cache_holds_identity_and_codemap_relative_to_image_base(program, tmp_path, filter):
    out = tmp_path / "prog.fexcache"
    result = fexaot("compile", str(program), "-o", str(out), "--filter", filter)
    assert result.returncode == 0, result.stderr
    identity = module_identity(program)
    codemap = build_codemap(str(program))
    with CacheFile.open(str(out), expect_config_id=config_id(TranslatorConfig())) as cache:
        assert cache.filter is Filter.from_label(filter)
        module = cache.module(identity.file_id)
        assert module.name == program.name
        assert module.identity == identity
        base = module.facts.image_base
        entries = list(module.records(SectionKind.CODEMAP))
    assert base == (0x400000 if "no-pie" in program.name else 0)
    assert [(e.start + base, e.length, e.instruction_count, e.reasons, e.flags) for e in entries] == [
        (b.start, b.length, b.instructions, b.reasons, b.flags) for b in codemap.blocks
    ]
    assert any(e.start + base == codemap.blocks[0].start for e in entries)


def test_compile_refuses_a_config_id_it_does_not_compute(program, tmp_path):
    out = tmp_path / "prog.fexcache"
    result = fexaot("compile", str(program), "-o", str(out), "--config-id", "0123456789abcdef")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "ConfigId mismatch" in result.stderr
    assert not out.exists()
