"""The translator as a function: liveness, partial blocks, reasons, relocations, determinism, cache sections."""

from __future__ import annotations

import shutil
import subprocess
import sys

import capstone
import iced_x86
import pytest

from fexaot_tool.cache.compile import compile_file, guest_code
from fexaot_tool.discover import ElfImage
from fexaot_tool.cache.format import Filter, SectionKind
from fexaot_tool.cache.key import TranslatorConfig
from fexaot_tool.cache.reader import CacheFile
from fexaot_tool.discover import build_codemap
from fexaot_tool.translate import BlockRequest, GuestCode, abi, translate_block, translate_module
from fexaot_tool.translate.block import flag_liveness
from fexaot_tool.translate.builder import REASON_ATOMIC, REASON_OPERAND, REASON_VECTOR

pytestmark = pytest.mark.skipif(shutil.which("as") is None, reason="needs GNU as for x86-64")

from translate_harness import GUEST, Differ, assemble  # noqa: E402

LIBC = "/lib/x86_64-linux-gnu/libc.so.6"


def _block(source: str, tso: bool = True):
    code = assemble(source)
    return translate_block(GuestCode(0, ((GUEST, code),)), GUEST, len(code), tso), code


def _mnemonics(code: bytes, count: int) -> list[str]:
    cs = capstone.Cs(capstone.CS_ARCH_ARM64, capstone.CS_MODE_ARM)
    return [m for _, _, m, _ in cs.disasm_lite(code[:count * 4], 0)]


def test_flag_liveness_drops_overwritten_flags() -> None:
    code = assemble("cmp rax, rdx\n add rax, 1\n test eax, eax")
    instructions = list(iced_x86.Decoder(64, code, ip=GUEST))
    # test writes every flag (AF undefined counts as written): nothing before it needs any.
    assert [need for need, _ in flag_liveness(instructions)] == [0, 0, 0x3F]


def test_dead_flags_cost_nothing() -> None:
    block, _ = _block("cmp rax, rdx\n add rax, 1\n test eax, eax")
    mnemonics = _mnemonics(block.code, block.host_instructions)
    # The dead cmp is gone, add sets no flags, test computes them all (x21 is the PF source).
    assert mnemonics[:2] == ["add", "ands"]


def test_carry_is_plain_at_exits_and_inverted_inside() -> None:
    block, _ = _block("cmp rax, rdx\n jb .+0x20")
    mnemonics = _mnemonics(block.code, block.host_instructions)
    # AF source, subs (C = NOT CF), AF source; the exit needs C = CF (docs/abi.md): one cfinv, then b.hs.
    assert mnemonics[:5] == ["eor", "subs", "eor", "cfinv", "b.hs"]


def test_memory_order_changes_accesses() -> None:
    tso, _ = _block("mov rax, [rbx+8]\n mov [rbx], rcx\n mov rdx, [rsp+8]")
    relaxed, _ = _block("mov rax, [rbx+8]\n mov [rbx], rcx\n mov rdx, [rsp+8]", tso=False)
    tso_m = _mnemonics(tso.code, tso.host_instructions)
    relaxed_m = _mnemonics(relaxed.code, relaxed.host_instructions)
    assert "ldapr" in tso_m and "stlr" in tso_m and "ldapr" not in relaxed_m and "stlr" not in relaxed_m
    assert tso_m.count("ldr") == relaxed_m.count("ldr") - 1  # [rsp+8] is thread-private: plain in both modes


def test_first_instruction_untranslatable_gives_no_code() -> None:
    block, _ = _block("paddb mm0, [rbx]\n mov rax, rdx")  # MMX: not translated
    assert block.code == b"" and block.stop[0] == REASON_VECTOR and block.stop[1].startswith("paddb")


def test_later_untranslatable_instruction_keeps_the_prefix() -> None:
    block, _ = _block("mov rax, rdx\n lock adc [rbx], eax\n mov rcx, 1")
    reason, detail, at = block.stop
    assert reason == REASON_ATOMIC and "lock" in detail and at == GUEST + 3
    assert block.guest_instructions == 1 and block.guest_size == 3
    # The prefix exits to the runtime with UNTRANSLATABLE, x0 = the instruction, exit_info = its length.
    words = [int.from_bytes(block.code[i:i + 4], "little") for i in range(0, block.host_instructions * 4, 4)]
    from fexaot_tool.translate import a64
    assert a64.movz(0, 1, abi.ExitReason.UNTRANSLATABLE) in words
    assert a64.ldr_uimm(3, 1, abi.STATE, abi.EXIT_TO_RUNTIME_OFFSET) in words
    assert [address for _, address in block.literals] == [GUEST + 3]


def test_uncovered_form_of_a_covered_mnemonic_is_reported() -> None:
    block, _ = _block("mov rax, rdx\n shld ax, dx, 3")
    assert block.stop[0] == REASON_OPERAND and block.guest_instructions == 1


def test_same_bytes_run_at_any_load_base() -> None:
    differ = Differ()
    source = "lea rax, [rip+0x40]\n mov rcx, [rip+0x10]\n call .+0x30"
    for load_base in (0, 0x10000, 0x230000):
        differ.check(assemble(source), states=3, load_base=load_base)


def test_module_translation_is_deterministic_and_relocatable() -> None:
    guest = guest_code(ElfImage(LIBC), 0)
    blocks = [BlockRequest(b.start, b.length) for b in build_codemap(LIBC).blocks[5000:6500]]
    first = translate_module(guest, blocks)
    assert translate_module(guest, list(reversed(blocks))[::-1]) == first
    assert [r[0] for r in first.relocations] == sorted(r[0] for r in first.relocations)
    for offset, kind, addend in first.relocations:
        assert kind == abi.RelocationKind.GUEST_ABS64
        assert first.code[offset:offset + 8] == bytes(8)  # literal slots hold nothing until the runtime patches
        assert guest.read(addend, 1) is not None or addend > 0  # a guest offset of this module
    assert len(first.blocks) + len([u for u in first.untranslated if u.start not in
                                    {b.start for b in first.blocks}]) == len(blocks)


def test_compiled_cache_holds_code_and_inspect_shows_a_block(tmp_path) -> None:
    source = tmp_path / "t.s"
    source.write_text(".intel_syntax noprefix\n.globl _start\n.text\n_start:\n mov rax, 60\n xor edi, edi\n"
                      " syscall\nf:\n paddb mm0, [rsp]\n ret\n")
    elf = tmp_path / "t"
    subprocess.run(["as", "--64", "-o", str(tmp_path / "t.o"), str(source)], check=True)
    subprocess.run(["ld", "-o", str(elf), str(tmp_path / "t.o")], check=True)
    out = tmp_path / "t.fexcache"
    compile_file(str(elf), str(out), TranslatorConfig(), Filter.SPEED)
    with CacheFile.open(out) as cache:
        cache.verify_all()
        module = cache.module(cache.modules[0].file_id)
        index = list(module.records(SectionKind.BLOCK_INDEX))
        untranslatable = list(module.records(SectionKind.UNTRANSLATABLE))
        entry = module.facts.e_entry - module.facts.image_base
        assert [e.guest_offset for e in index] == [entry]
        assert index[0].guest_size == 11 and module.section_info(SectionKind.CODE).size > 0
        assert [u.reason for u in untranslatable] == [REASON_VECTOR]
    shown = subprocess.run([sys.executable, "-m", "fexaot_tool", "inspect", str(out), "--block",
                            hex(module.facts.e_entry), "--elf", str(elf)], capture_output=True, text=True, check=True)
    assert "syscall" in shown.stdout and "ldr x1, [x28, #0xd8]" in shown.stdout


def test_block_ends_at_a_runtime_exit_inside_a_codemap_block() -> None:
    # The codemap does not split blocks at cpuid; the translation stops there, and the
    # flags of the sub must still reach the exit (nothing after cpuid counts for liveness).
    block, code = _block("sub rax, 5\n cpuid\n cmp rax, rax")
    assert block.stop is None and block.guest_size == len(code) - 3 and block.guest_instructions == 2
    assert "subs" in _mnemonics(block.code, block.host_instructions)
