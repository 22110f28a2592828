"""``fexaot validate``: hand-translated blocks, right and wrong, through the real CLI path.

The fixture is a real x86-64 shared object (GNU as + ld) and AArch64 code
assembled with aarch64-linux-gnu-as that follows docs/abi.md by hand, wrapped
in a cache file by cache.writer.  The validator must pass the right
translations and catch the wrong ones with a reproducer.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import struct
import subprocess
from dataclasses import dataclass

import pytest
import xxhash
from capstone import CS_ARCH_ARM64, CS_MODE_ARM, Cs

from fexaot_tool.cache.format import BlockIndexEntry, ElfFacts, Filter, Relocation, SectionKind, pack_section
from fexaot_tool.cache.key import TranslatorConfig, config_id, module_identity
from fexaot_tool.cache.writer import ModuleImage, write_cache
from fexaot_tool.cli import main
from fexaot_tool.elf import read_elf
from fexaot_tool.translate.abi import X87Image
from fexaot_tool.validate import stubs
from fexaot_tool.validate.differential import (
    BlockUnderTest, DifferentialHarness, GuestState, decode_block, defined_flags, make_states, register_roles,
)
from fexaot_tool.validate.guest_abi import CF, OF, PF, SF, ZF, ExitReason
from fexaot_tool.validate.native import NativeReferee

TOOLS = ("as", "ld", "nm", "aarch64-linux-gnu-as", "aarch64-linux-gnu-objcopy", "aarch64-linux-gnu-nm")
pytestmark = pytest.mark.skipif(any(shutil.which(t) is None for t in TOOLS),
                                reason="needs GNU binutils for x86-64 and aarch64")

# The guest: one label per block; the blocks sit apart so none runs into another.
GUEST_ASM = """
    .text
    .globl b_add, b_store, b_cmp, b_sys, b_bad_add, b_bad_store, b_div, b_rep, t_taken
b_add:       add rax, rbx
    .balign 16
b_store:     mov [rdi+8], rsi
    .balign 16
b_cmp:       cmp rax, rcx
             jne t_taken
    .balign 16
b_sys:       syscall
    .balign 16
b_bad_add:   add rax, rbx
    .balign 16
b_bad_store: mov [rdi+8], rsi
    .balign 16
b_div:       div ecx
    .balign 16
b_rep:       rep stosb
    .balign 16
t_taken:     ret
"""

# AArch64 translations.  `lit_*` labels are GUEST_ABS64 literals: the text after
# the label is "<block>+<bytes>", the guest address they must hold.
EXIT_NEXT = "ldr x1, [x28, #0xd0]\n br x1\n"  # dispatch
EXIT_RUNTIME = "ldr x1, [x28, #0xd8]\n br x1\n"
A64_BLOCKS = {
    "b_add": """
        mov x24, x4
        adds x4, x4, x7
        eor x22, x24, x7
        eor x22, x22, x4
        mov x21, x4
        ldr x0, lit_b_add_3
        """ + EXIT_NEXT,
    "b_store": """
        add x24, x11, #8
        stlr x10, [x24]
        ldr x0, lit_b_store_4
        """ + EXIT_NEXT,
    "b_cmp": """
        subs x24, x4, x5
        cfinv
        mov x21, x24
        eor x22, x4, x5
        eor x22, x22, x24
        b.eq 1f
        ldr x0, lit_t_taken_0
        """ + EXIT_NEXT + """
    1:  ldr x0, lit_b_cmp_5
        """ + EXIT_NEXT,
    "b_sys": """
        mov w1, #1
        str w1, [x28, #0xc0]
        str xzr, [x28, #0xc8]
        ldr x0, lit_b_sys_2
        """ + EXIT_RUNTIME,
    # ret: the next RIP is whatever the stack holds, often no code at all.
    "t_taken": """
        ldapr x0, [x8]
        add x8, x8, #8
        """ + EXIT_NEXT,
    # rep stosb, honouring DF from the state block; flags untouched.
    "b_rep": """
        ldr x24, [x28, #0xa0]
        mov x25, #1
        cbz x24, 1f
        mov x25, #-1
    1:  cbz x5, 2f
        strb w4, [x11]
        add x11, x11, x25
        sub x5, x5, #1
        b 1b
    2:  ldr x0, lit_b_rep_2
        """ + EXIT_NEXT,
    # div ecx: EDX:EAX / ECX, #DE on a zero divisor or a quotient above 32 bits.
    "b_div": """
        mov w24, w5
        cbz w24, 9f
        mov w25, w6
        lsl x25, x25, #32
        mov w26, w4
        orr x25, x25, x26
        udiv x26, x25, x24
        lsr x27, x26, #32
        cbnz x27, 9f
        msub x27, x26, x24, x25
        mov w4, w26
        mov w6, w27
        ldr x0, lit_b_div_2
        """ + EXIT_NEXT + """
    9:  mov w1, #7
        str w1, [x28, #0xc0]
        str xzr, [x28, #0xc8]
        ldr x0, lit_b_div_0
        """ + EXIT_RUNTIME,
    # WRONG: `add` leaves NZCV as it was, so CF/ZF/SF/OF keep their input values.
    "b_bad_add": """
        mov x24, x4
        add x4, x4, x7
        eor x22, x24, x7
        eor x22, x22, x4
        mov x21, x4
        ldr x0, lit_b_bad_add_3
        """ + EXIT_NEXT,
    # WRONG: off by one, stores to rdi+9.
    "b_bad_store": """
        add x24, x11, #9
        stlr x10, [x24]
        ldr x0, lit_b_bad_store_4
        """ + EXIT_NEXT,
}


GUEST_SIZES = {"b_add": 3, "b_store": 4, "b_cmp": 5, "b_sys": 2, "b_bad_add": 3, "b_bad_store": 4, "b_div": 2,
               "b_rep": 2, "t_taken": 1}


@dataclass(frozen=True)
class Fixture:
    so: str
    good: str  # cache with the right translations
    bad: str  # cache that also holds the wrong ones
    offsets: dict[str, int]  # guest offset of each label


def _run(*argv: str, cwd: str) -> str:
    return subprocess.run(argv, cwd=cwd, check=True, capture_output=True, text=True).stdout


def _symbols(nm_output: str) -> dict[str, int]:
    out = {}
    for line in nm_output.splitlines():
        parts = line.split()
        if len(parts) == 3:
            out[parts[2]] = int(parts[0], 16)
    return out


def _assemble_a64(name: str, text: str, workdir: str) -> tuple[bytes, dict[str, int]]:
    source = os.path.join(workdir, f"{name}.s")
    with open(source, "w") as f:
        # Literals after the code, 8-aligned, one per lit_ label the code loads.
        literals = sorted({w for w in text.replace(",", " ").split() if w.startswith("lit_")})
        f.write(text + "\n    .balign 8\n" + "".join(f"{lit}: .quad 0\n" for lit in literals))
    _run("aarch64-linux-gnu-as", "-march=armv8.4-a", f"{name}.s", "-o", f"{name}.o", cwd=workdir)
    _run("aarch64-linux-gnu-objcopy", "-O", "binary", "-j", ".text", f"{name}.o", f"{name}.bin", cwd=workdir)
    with open(os.path.join(workdir, f"{name}.bin"), "rb") as f:
        code = f.read()
    labels = {k: v for k, v in _symbols(_run("aarch64-linux-gnu-nm", f"{name}.o", cwd=workdir)).items()
              if k.startswith("lit_")}
    return code, labels


def write_fixture_cache(path: str, so: str, offsets: dict[str, int], blocks: dict[str, str], workdir: str,
                        tamper_hash: str | None = None, sizes: dict[str, int] | None = None) -> None:
    info = read_elf(so)
    facts = ElfFacts.from_elf(info)
    with open(so, "rb") as f:
        data = f.read()
    code = bytearray()
    index, relocs = [], []
    for name in sorted(blocks, key=lambda n: offsets[n]):
        block_code, literals = _assemble_a64(name, blocks[name], workdir)
        code += bytes(-len(code) % 16)
        start = len(code)
        code += block_code
        for label, at in literals.items():
            target, plus = label[len("lit_"):].rsplit("_", 1)
            relocs.append(Relocation(start + at, 1, offsets[target] + int(plus)))
        guest_size = (sizes or GUEST_SIZES)[name]
        vaddr = facts.image_base + offsets[name]
        file_offset = info.vaddr_to_offset(vaddr)
        guest_hash = xxhash.xxh3_64_intdigest(data[file_offset:file_offset + guest_size])
        if name == tamper_hash:
            guest_hash ^= 1
        index.append(BlockIndexEntry(offsets[name], start, len(block_code), guest_hash, guest_size))
    image = ModuleImage(module_identity(so), os.path.basename(so), facts, {
        SectionKind.BLOCK_INDEX: pack_section(SectionKind.BLOCK_INDEX, index),
        SectionKind.RELOCATIONS: pack_section(SectionKind.RELOCATIONS, sorted(relocs, key=lambda r: r.code_offset)),
        SectionKind.CODE: bytes(code),
    })
    write_cache(path, config_id(TranslatorConfig()), Filter.SPEED, [image])


@pytest.fixture(scope="module")
def fixture(tmp_path_factory) -> Fixture:
    work = str(tmp_path_factory.mktemp("validate"))
    with open(os.path.join(work, "guest.s"), "w") as f:
        f.write("    .intel_syntax noprefix\n" + GUEST_ASM)
    _run("as", "--64", "guest.s", "-o", "guest.o", cwd=work)
    _run("ld", "-shared", "-o", "libguest.so", "guest.o", cwd=work)
    so = os.path.join(work, "libguest.so")
    image_base = ElfFacts.from_elf(read_elf(so)).image_base
    offsets = {k: v - image_base for k, v in _symbols(_run("nm", "libguest.so", cwd=work)).items()
               if k.startswith(("b_", "t_"))}
    good_blocks = {k: v for k, v in A64_BLOCKS.items() if "bad" not in k}
    good = os.path.join(work, "good.fexcache")
    bad = os.path.join(work, "bad.fexcache")
    write_fixture_cache(good, so, offsets, good_blocks, work)
    write_fixture_cache(bad, so, offsets, A64_BLOCKS, work)
    return Fixture(so, good, bad, offsets)


def _validate_json(capsys, *argv: str) -> tuple[int, dict]:
    code = main(["validate", *argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


# --- the harness's own code ---------------------------------------------------------


def test_aarch64_stub_encoders_round_trip_through_capstone():
    from fexaot_tool.validate.guest_abi import OFF_NZCV

    cs = Cs(CS_ARCH_ARM64, CS_MODE_ARM)
    cases = {
        stubs.ldr_x_imm(4, 28, 0x18): "ldr x4, [x28, #0x18]",
        stubs.str_x_imm(20, 28, 0x78): "str x20, [x28, #0x78]",
        stubs.ldr_q_imm(16, 28, 0x120): "ldr q16, [x28, #0x120]",
        stubs.str_q_imm(31, 28, 0x1f0): "str q31, [x28, #0x1f0]",
        stubs.MSR_FPCR_XZR: "msr fpcr, xzr",
    }
    for word, text in cases.items():
        (ins,) = cs.disasm(struct.pack("<I", word), 0)
        assert f"{ins.mnemonic} {ins.op_str}" == text
    # The loader and an exit entry, whole: what docs/validation.md says they do.
    loader = [f"{i.mnemonic} {i.op_str}" for i in cs.disasm(stubs.a64_loader(0x1234)[:-8], 0)]
    assert loader[0].startswith("ldr x28, #") and loader[-3:] == ["msr nzcv, x1", f"ldr x1, [x28, #{stubs.OFF_ENTRY:#x}]", "br x1"]
    assert stubs.a64_loader(0x1234)[-8:] == (0x1234).to_bytes(8, "little")
    exit_entry = [f"{i.mnemonic} {i.op_str}" for i in cs.disasm(stubs.a64_exit_entry(2, 4000), 0)]
    assert exit_entry[:2] == ["mov x1, #2", f"str x1, [x28, #{stubs.OFF_EXIT_PATH:#x}]"]
    assert exit_entry[-3:-1] == ["mrs x1, nzcv", f"str x1, [x28, #{OFF_NZCV:#x}]"]
    assert exit_entry[-1] == f"b #{4000:#x}"  # the halt address, counted from the entry's start


def test_defined_flags_follow_the_last_writer():
    shl_then_add = decode_block(bytes.fromhex("48d3e0" "4801d8"), 0x1000)  # shl rax, cl ; add rax, rbx
    assert defined_flags(shl_then_add[:1]) & OF == 0  # shl by cl leaves OF undefined
    assert defined_flags(shl_then_add) & OF  # ... until add defines it again
    assert defined_flags(decode_block(bytes.fromhex("90"), 0x1000)) & (CF | ZF | SF | OF | PF)  # untouched: compared


# --- the real CLI path ----------------------------------------------------------------


def test_right_translations_pass(fixture, capsys):
    code, report = _validate_json(capsys, fixture.good, "--elf", fixture.so, "--states", "24")
    assert code == 0, report["mismatches"]
    assert report["blocks_validated"] == 7 and report["blocks_sampled"] == 7
    assert report["cases_run"] == 7 * 24 and report["cases_skipped"] == {}
    assert report["mismatches"] == [] and report["ok"]


def test_wrong_translations_are_caught_with_a_reproducer(fixture, capsys):
    code, report = _validate_json(capsys, fixture.bad, "--elf", fixture.so, "--states", "20")
    assert code == 1
    by_offset = {int(m["guest_offset"], 16): m for m in report["mismatches"]}
    assert set(by_offset) == {fixture.offsets["b_bad_add"], fixture.offsets["b_bad_store"]}
    add = by_offset[fixture.offsets["b_bad_add"]]
    assert add["guest_bytes"] == "4801d8"
    assert "4801d8" not in add["aarch64_code"] and len(add["aarch64_code"]) > 16
    assert {d["field"] for d in add["differences"]} <= {"CF", "ZF", "SF", "OF"}
    assert add["differences"] and add["state"]["rax"] and add["failing_cases"] >= 1
    store = by_offset[fixture.offsets["b_bad_store"]]
    assert [d["field"].split("[")[0] for d in store["differences"]] == ["memory"]
    # the text report names the block and prints the reproducer
    assert main(["validate", fixture.bad, "--elf", fixture.so, "--states", "4"]) == 1
    out = capsys.readouterr().out
    assert f"MISMATCH libguest.so +{fixture.offsets['b_bad_add']:#x}" in out and "guest bytes   4801d8" in out


def test_reproducer_reruns_to_the_same_difference(fixture, capsys):
    """The reported state, fed back to the harness, fails the same way: the reproducer is real."""
    _, report = _validate_json(capsys, fixture.bad, "--elf", fixture.so, "--block",
                               f"{fixture.offsets['b_bad_add']:#x}")
    (mismatch,) = report["mismatches"]
    state = mismatch["state"]
    harness = DifferentialHarness(0)
    address = 0x0000_3000_0000_0000
    guest = bytes.fromhex(mismatch["guest_bytes"])
    harness.map_guest(address, guest)
    code = bytearray.fromhex(mismatch["aarch64_code"])
    struct.pack_into("<Q", code, len(code) - 8, address + 3)  # the block's one literal: its next RIP
    code_address = harness.install_code(bytes(code))
    roles = register_roles(guest, address)
    block = BlockUnderTest("libguest.so", 0, address, guest, code_address, bytes(code),
                           decode_block(guest, address), *roles)
    names = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", *(f"r{i}" for i in range(8, 16)))
    result = harness.run_case(block, GuestState(tuple(int(state[n], 16) for n in names),
                                                int(state["rflags"].split()[0], 16),
                                                int(state["pf_src"], 16), int(state["af_src"], 16),
                                                tuple(int(state[f"xmm{n}"], 16) for n in range(16))))
    assert {d.field for d in result.differences} == {d["field"] for d in mismatch["differences"]}


def test_cmp_jne_both_outcomes_and_syscall_exit(fixture):
    """The states reach both sides of the branch, both outcomes of div, and the syscall exit (not skipped)."""
    harness = DifferentialHarness(7)
    so_image = open(fixture.so, "rb").read()
    info = read_elf(fixture.so)
    base = 0x0000_2000_0000_0000
    from fexaot_tool.validate.cache_check import _segment_image

    start, image = _segment_image(info, fixture.so, base)
    harness.map_guest(start, image)
    assert so_image  # the file is real
    a64 = {}
    work = os.path.dirname(fixture.so)
    for name in ("b_cmp", "b_sys", "b_div"):
        code, literals = _assemble_a64(name, A64_BLOCKS[name], work)
        code = bytearray(code)
        for label, at in literals.items():
            target, plus = label[len("lit_"):].rsplit("_", 1)
            struct.pack_into("<Q", code, at, base + fixture.offsets[target] + int(plus))
        a64[name] = bytes(code)
    rips = set()
    for name, size in (("b_cmp", 5), ("b_sys", 2), ("b_div", 2)):
        address = base + fixture.offsets[name]
        guest = image[address - start:address - start + size]
        block = BlockUnderTest("libguest.so", fixture.offsets[name], address, bytes(guest),
                               harness.install_code(a64[name]), a64[name], decode_block(bytes(guest), address),
                               *register_roles(bytes(guest), address))
        for state in make_states(block, random.Random(3), 30):
            result = harness.run_case(block, state)
            assert result.skipped is None and result.differences == ()
            run = harness._run_a64(block, state)  # the exit the translation took, for coverage
            rips.add((name, run.exit.kind, run.rip - base))
    taken, fall = fixture.offsets["t_taken"], fixture.offsets["b_cmp"] + 5
    assert {("b_cmp", "next", taken), ("b_cmp", "next", fall)} <= rips
    assert ("b_sys", ExitReason.SYSCALL.name, fixture.offsets["b_sys"] + 2) in rips
    div = fixture.offsets["b_div"]
    assert {("b_div", ExitReason.DIVIDE_ERROR.name, div), ("b_div", "next", div + 2)} <= rips


def test_syscall_without_exit_is_a_mismatch(fixture, capsys, tmp_path):
    """A translation that runs past `syscall` to the dispatcher must be reported, not trusted."""
    blocks = {"b_sys": "ldr x0, lit_b_sys_2\n" + EXIT_NEXT}
    path = str(tmp_path / "sys.fexcache")
    write_fixture_cache(path, fixture.so, fixture.offsets, blocks, str(tmp_path))
    code, report = _validate_json(capsys, path, "--elf", fixture.so, "--states", "3")
    assert code == 1
    (diff,) = [d for d in report["mismatches"][0]["differences"] if d["field"] == "exit"]
    assert diff["expected"].startswith("SYSCALL") and diff["actual"].startswith("next rip")


def test_block_seed_and_sample_are_reproducible(fixture, capsys):
    _, one = _validate_json(capsys, fixture.bad, "--elf", fixture.so, "--sample", "3", "--seed", "5")
    _, two = _validate_json(capsys, fixture.bad, "--elf", fixture.so, "--sample", "3", "--seed", "5")
    for r in (one, two):
        r.pop("seconds"), r.pop("microseconds_per_case")
    assert one == two and one["blocks_sampled"] == 3
    _, only = _validate_json(capsys, fixture.good, "--elf", fixture.so, "--block",
                             f"libguest.so:{fixture.offsets['b_store']:#x}", "--states", "5")
    assert only["blocks_sampled"] == 1 and only["cases_run"] == 5


def test_guest_hash_mismatch_is_reported(fixture, capsys, tmp_path):
    path = str(tmp_path / "hash.fexcache")
    write_fixture_cache(path, fixture.so, fixture.offsets, {"b_add": A64_BLOCKS["b_add"]}, str(tmp_path),
                        tamper_hash="b_add")
    code, report = _validate_json(capsys, path, "--elf", fixture.so)
    assert code == 1
    assert report["mismatches"][0]["differences"][0]["field"] == "guest_hash"
    assert report["cases_run"] == 0


def test_module_lookup_errors_name_the_file(fixture, capsys, tmp_path):
    rootfs = tmp_path / "root"
    (rootfs / "usr/lib/x86_64-linux-gnu").mkdir(parents=True)
    # not found anywhere
    assert main(["validate", fixture.good, "--rootfs", str(rootfs)]) == 1
    err = capsys.readouterr().err
    assert fixture.good in err and "libguest.so" in err and "not found" in err and len(err.splitlines()) == 1
    # found by basename in the rootfs's library directory, but other content
    impostor = rootfs / "usr/lib/x86_64-linux-gnu/libguest.so"
    impostor.write_bytes(open(fixture.so, "rb").read() + b"\0")
    assert main(["validate", fixture.good, "--rootfs", str(rootfs)]) == 1
    err = capsys.readouterr().err
    assert "content-mismatch" in err and str(impostor) in err and len(err.splitlines()) == 1
    # the right file in the rootfs is found without --elf
    impostor.write_bytes(open(fixture.so, "rb").read())
    assert main(["validate", fixture.good, "--rootfs", str(rootfs), "--states", "2"]) == 0
    capsys.readouterr()
    # a missing cache
    assert main(["validate", str(tmp_path / "nope.fexcache")]) == 1
    assert "missing" in capsys.readouterr().err


@pytest.mark.parametrize("exit_info, ok", [(2, True), (6, False)])
def test_prefix_translation_exits_untranslatable_at_its_end(fixture, capsys, tmp_path, exit_info, ok):
    """A block translated up to an instruction the translator gave up on (here `jne`): the prefix is
    compared, and exit_info must be that instruction's length."""
    prefix = """
        subs x24, x4, x5
        cfinv
        mov x21, x24
        eor x22, x4, x5
        eor x22, x22, x24
        mov w1, #8
        str w1, [x28, #0xc0]
        mov x1, #%d
        str x1, [x28, #0xc8]
        ldr x0, lit_b_cmp_3
        """ % exit_info + EXIT_RUNTIME
    path = str(tmp_path / "prefix.fexcache")
    write_fixture_cache(path, fixture.so, fixture.offsets, {"b_cmp": prefix}, str(tmp_path), sizes={"b_cmp": 3})
    code, report = _validate_json(capsys, path, "--elf", fixture.so, "--states", "10")
    assert report["blocks_validated"] == 1 and report["cases_run"] == 10
    if ok:
        assert code == 0, report["mismatches"]
    else:
        assert code == 1
        assert {d["field"] for d in report["mismatches"][0]["differences"]} == {"exit_info"}


LIBZ = "/lib/x86_64-linux-gnu/libz.so.1"


@pytest.mark.skipif(not os.path.exists(LIBZ), reason="needs the host's libz")
def test_real_cache_sample_from_fexaot_compile(capsys, tmp_path):
    """`fexaot compile` output, module found in the host rootfs by basename and content hash.

    The translator is still growing, so this asserts what the validator owes
    whatever the verdict: every sampled block accounted for, the reproducer's
    guest bytes really at that offset of the ELF file, the exit code matching it.
    """
    cache = str(tmp_path / "z.fexcache")
    assert main(["compile", LIBZ, "-o", cache]) == 0
    code, report = _validate_json(capsys, cache, "--sample", "60", "--states", "8", "--seed", "3")
    assert report["blocks_sampled"] == 60
    assert report["blocks_validated"] + len(report["skipped_blocks"]) + sum(
        1 for m in report["mismatches"] if m["cases"] == 0) == 60
    assert report["cases_run"] == 8 * (60 - len(report["skipped_blocks"]) - sum(
        1 for m in report["mismatches"] if m["cases"] == 0))
    assert code == (1 if report["mismatches"] else 0)
    info = read_elf(LIBZ)
    image_base = ElfFacts.from_elf(info).image_base
    data = open(os.path.realpath(LIBZ), "rb").read()
    for m in report["mismatches"]:
        at = info.vaddr_to_offset(image_base + int(m["guest_offset"], 16))
        guest = bytes.fromhex(m["guest_bytes"])
        assert data[at:at + len(guest)] == guest and m["aarch64_code"]


def _sse_block(harness: DifferentialHarness, guest: bytes, address: int,
               wrong: tuple[int, int] | None = None) -> BlockUnderTest:
    """``guest`` translated, placed at ``address``; ``wrong`` = (word, replacement) tampers with the code."""
    from fexaot_tool.translate import GuestCode, translate_block

    block = translate_block(GuestCode(0, ((0, guest),)), 0, len(guest))
    assert block.stop is None
    code = bytearray(block.code)
    for at, target in block.literals:
        struct.pack_into("<Q", code, at, address + target)
    if wrong is not None:
        at = code.find(wrong[0].to_bytes(4, "little"))
        assert at >= 0 and at % 4 == 0
        code[at:at + 4] = wrong[1].to_bytes(4, "little")
    harness.map_guest(address, guest)
    code_address = harness.install_code(bytes(code))
    return BlockUnderTest("sse", 0, address, guest, code_address, bytes(code), decode_block(guest, address),
                          *register_roles(guest, address))


def test_xmm_registers_are_compared():
    """An SSE block passes; the same block with ORR for EOR is caught, naming the XMM register."""
    from fexaot_tool.translate import a64

    harness = DifferentialHarness(3)
    guest = bytes.fromhex("660fefca")  # pxor xmm1, xmm2
    good = _sse_block(harness, guest, 0x0000_3000_0000_0000)
    bad = _sse_block(harness, guest, 0x0000_3000_0001_0000, (a64.eor_v(1, 1, 1, 2), a64.orr_v(1, 1, 1, 2)))
    states = make_states(good, random.Random(1), 12)
    assert all(not harness.run_case(good, s).differences for s in states)
    fields = {d.field for s in states for d in harness.run_case(bad, s).differences}
    assert fields == {"xmm1"}


def _xmm_state(xmm0: int, xmm1: int) -> GuestState:
    regs = [0] * 16
    regs[4] = 0x0010_0000_8000  # rsp inside the arena
    return GuestState(tuple(regs), 0, 1, 0, (xmm0, xmm1) + (0,) * 14)


TWO_NANS = (0x7FF0000000000001, 0x7FFFFFFFFFFFFFFF)  # silicon: the first operand's NaN, quieted


@pytest.mark.skipif(not NativeReferee().available, reason="the host CPU is not x86-64")
def test_unicorn_nan_choice_is_adjudicated_by_the_host_cpu():
    """addsd of two NaNs: unicorn returns the larger significand, silicon (and the translation) the first."""
    guest = bytes.fromhex("f20f58c1")  # addsd xmm0, xmm1
    state = _xmm_state(*TWO_NANS)
    plain = DifferentialHarness(5, native_referee=False)
    block = _sse_block(plain, guest, 0x0000_3000_0000_0000)
    assert {d.field for d in plain.run_case(block, state).differences} == {"xmm0"}  # unicorn's x87 rule
    harness = DifferentialHarness(5)
    block = _sse_block(harness, guest, 0x0000_3000_0000_0000)
    result = harness.run_case(block, state)
    assert not result.differences and {d.field for d in result.unicorn_deviations} == {"xmm0"}
    assert harness.native.runs == 1


@pytest.mark.skipif(not NativeReferee().available, reason="the host CPU is not x86-64")
def test_the_host_cpu_does_not_excuse_a_wrong_translation():
    guest = bytes.fromhex("f20f58c1")  # addsd xmm0, xmm1
    harness = DifferentialHarness(5)
    code = _sse_block(harness, guest, 0x0000_3000_0000_0000).code
    # Find the fadd (vector, double lanes: 0 Q 0 01110 0 1 1 Rm 110101 Rn Rd) and make it an fsub (bit 23).
    words = [int.from_bytes(code[i:i + 4], "little") for i in range(0, len(code) - 7, 4)]
    fadd = next(w for w in words if w & 0xBFE0FC00 == 0x0E60D400)
    bad = _sse_block(harness, guest, 0x0000_3000_0001_0000, (fadd, fadd | 0x00800000))
    result = harness.run_case(bad, _xmm_state(0x3FF0000000000000, 0x4000000000000000))  # 1.0 + 2.0
    assert {d.field for d in result.differences} == {"xmm0"} and not result.unicorn_deviations


def test_a_shift_by_cl_keeps_earlier_undefined_flags_undefined():
    # bts leaves PF undefined; shr rax, cl with CL = 0 writes no flag, so PF stays undefined.
    instructions = decode_block(bytes.fromhex("480fbae830" "48d3e8"), 0x1000)
    assert not defined_flags(instructions) & PF
    immediate = decode_block(bytes.fromhex("480fbae830" "48c1e803"), 0x1000)  # shr rax, 3 defines PF
    assert defined_flags(immediate) & PF


# -- x87 --------------------------------------------------------------------------------------------

def test_x87_state_is_set_and_compared():
    """An x87 block passes from random x87 states; the same block with a flipped sign bit (eor of the
    fchs changed) is caught, naming the register; states of blocks without x87 carry no x87 state."""
    from fexaot_tool.translate import a64

    harness = DifferentialHarness(7)
    guest = bytes.fromhex("d9e0d9c9dec1")  # fchs; fxch st(1); faddp
    good = _sse_block(harness, guest, 0x0000_3000_0000_0000)
    assert good.uses_x87
    flip = a64.eor_imm(0, 2, 2, 0x8000)
    code = good.code
    words = [int.from_bytes(code[i:i + 4], "little") for i in range(0, len(code) - 3, 4)]
    eor = next(w for w in words if w & ~0x3FF == flip & ~0x3FF)  # eor wN, wN, #0x8000, whatever the register
    wrong = a64.eor_imm(0, eor & 31, eor >> 5 & 31, 0x4000)  # flips an exponent bit instead
    bad = _sse_block(harness, guest, 0x0000_3000_0001_0000, (eor, wrong))
    states = make_states(good, random.Random(2), 20)
    assert all(s.x87 is not None for s in states)
    assert all(not harness.run_case(good, s).differences for s in states)
    fields = {d.field for s in states for d in harness.run_case(bad, s).differences}
    assert fields and all(f.startswith("x87_r") for f in fields)
    assert make_states(_sse_block(harness, bytes.fromhex("4801c8"), 0x0000_3000_0002_0000),
                       random.Random(2), 3)[0].x87 is None


def test_x87_compare_clears_c1_and_flags_as_the_sdm_says():
    """fcomi: unicorn leaves OF/SF/AF and C1, the SDM (and the translation) clear them: a deviation of the
    reference, not a mismatch."""
    harness = DifferentialHarness(7, native_referee=False)
    guest = bytes.fromhex("dbf1")  # fcomi st, st(1)
    block = _sse_block(harness, guest, 0x0000_3000_0000_0000)
    x87 = _x87_image([(1 << 63, 0x3FFF)] * 8, sw=0x200)  # C1 set
    state = GuestState(_xmm_state(0, 0).gpr, 0x891, 1, 0x10, (0,) * 16, x87)  # OF SF AF CF set
    result = harness.run_case(block, state)
    assert not result.differences
    assert {d.field for d in result.unicorn_deviations} == {"OF", "SF", "AF", "x87_sw"}


X87_PROGRAM = r"""
long double scale(long double x, double y, int n) { return x * y + n / (x - 1.5L); }
float narrow(long double x) { return (float)(x / 3); }
long long whole(long double x) { return (long long)(x * 1e6L); }
int main(void) { return (int)scale(2.0L, 3.0, 4) + (int)narrow(9.0L) + (int)whole(0.5L); }
"""


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_x87_option_validates_only_x87_blocks(capsys, tmp_path):
    """`--x87` on a gcc-built long double program: only blocks with x87 instructions, all of them agreeing."""
    source = tmp_path / "x87.c"
    source.write_text(X87_PROGRAM)
    program = tmp_path / "x87"
    subprocess.run(["gcc", "-O1", "-o", str(program), str(source)], check=True)
    cache = str(tmp_path / "x87.fexcache")
    assert main(["compile", str(program), "-o", cache]) == 0
    code, report = _validate_json(capsys, cache, "--x87", "--elf", str(program), "--states", "12")
    assert code == 0 and not report["mismatches"]
    assert 3 <= report["blocks_sampled"] == report["blocks_validated"] < report["blocks_in_cache"]


# -- x87 with the host CPU as referee -----------------------------------------------------------

def _x87_image(regs: list[tuple[int, int]], top: int = 0, cw: int = 0x37F, sw: int = 0, empty: int = 0) -> bytes:
    return X87Image(tuple(regs), top, cw, sw, empty).pack()


ONE, TWO = (1 << 63, 0x3FFF), (1 << 63, 0x4000)
_NATIVE = pytest.mark.skipif(not NativeReferee().available, reason="the host CPU is not x86-64 or ptrace is denied")


def test_fxsave_image_is_stack_relative():
    """FCW, FSW with TOP, the abridged tag word of physical registers, ST(i) = R((TOP + i) & 7)."""
    from fexaot_tool.validate.native import x87_from_fxsave, x87_to_fxsave

    regs = [(0x1111 * (i + 1) | 1 << 63, 0x3FF0 + i) for i in range(8)]
    image = _x87_image(regs, top=5, cw=0x27F, sw=0x4100, empty=0b1000_0001)
    fx = bytearray(512)
    x87_to_fxsave(image, fx)
    assert struct.unpack_from("<HHB", fx, 0) == (0x27F, 0x4100 | 5 << 11, 0b0111_1110)
    for i in range(8):
        assert struct.unpack_from("<QH", fx, 32 + 16 * i) == regs[(5 + i) & 7]
    assert x87_from_fxsave(bytes(fx)) == image


@_NATIVE
def test_native_run_loads_and_reads_x87_state():
    """fld st(2); fchs; faddp st(2) natively from TOP 6: the CPU's physical registers, TOP and empty mask."""
    harness = DifferentialHarness(9)
    guest = bytes.fromhex("d9c2d9e0dec2")
    block = _sse_block(harness, guest, 0x0000_3000_0000_0000)
    regs = [(0, 0)] * 8
    regs[6], regs[7], regs[0] = ONE, TWO, (0xC000000000000000, 0x4000)  # ST(0) 1, ST(1) 2, ST(2) 3
    image = _x87_image(regs, top=6, empty=0b0011_1110)
    run = harness.native.run(dict(harness._original), _xmm_state(0, 0).gpr, 0, (0,) * 16, 0x1F80, 0, 0,
                             block.guest_address, [(i.ip, i.next_ip) for i in block.instructions], [], image)
    assert run is not None and run.fault is None and run.x87 is not None
    after = X87Image.unpack(run.x87)
    # push -3 into R5, pop it into ST(2) of the pushed stack: R7 = 2 + -3 = -1, TOP back at 6.
    assert (after.top, after.empty, after.cw) == (6, 0b0011_1110, 0x37F)
    assert after.regs[7] == (1 << 63, 0xBFFF) and after.regs[6] == ONE


@_NATIVE
def test_native_run_with_an_unmasked_x87_exception_referees_nothing():
    """An unmasked divide-by-zero is delivered by silicon (SIGFPE) and not by translated code: no verdict."""
    harness = DifferentialHarness(9)
    block = _sse_block(harness, bytes.fromhex("dec9" "d9c0"), 0x0000_3000_0000_0000)  # fmulp; fld st(0)
    regs = [ONE] * 8
    regs[1] = (0, 0)
    steps = [(i.ip, i.next_ip) for i in block.instructions]
    masked = _x87_image(regs, sw=0x4, empty=0)  # ZE set, masked
    run = harness.native.run(dict(harness._original), _xmm_state(0, 0).gpr, 0, (0,) * 16, 0x1F80, 0, 0,
                             block.guest_address, steps, [], masked)
    assert run is not None and run.fault is None
    unmasked = _x87_image(regs, cw=0x37F & ~0x4, sw=0x4, empty=0)  # ZE pending and unmasked: #MF
    assert harness.native.run(dict(harness._original), _xmm_state(0, 0).gpr, 0, (0,) * 16, 0x1F80, 0, 0,
                              block.guest_address, steps, [], unmasked) is None


@_NATIVE
def test_x87_sdm_deviations_reach_the_host_cpu():
    """fcomi with C1 set: unicorn keeps OF/SF/AF and C1, the translation clears them, and the host CPU
    (C1 masked: silicon's round-up indicator is not tracked) agrees with the translation."""
    harness = DifferentialHarness(7)
    block = _sse_block(harness, bytes.fromhex("dbf1"), 0x0000_3000_0000_0000)  # fcomi st, st(1)
    x87 = _x87_image([ONE] * 8, sw=0x200)
    state = GuestState(_xmm_state(0, 0).gpr, 0x891, 1, 0x10, (0,) * 16, x87)  # OF SF AF CF set
    result = harness.run_case(block, state)
    assert not result.differences
    assert {d.field for d in result.unicorn_deviations} == {"OF", "SF", "AF", "x87_sw"}
    assert harness.native.runs == 1
    harness.run_case(block, state)  # the CPU confirmed the rule for this block: no second native run
    assert harness.native.runs == 1
    # An empty ST(1) is a stack fault on silicon, not in translated code: the CPU is not asked, the rule stands.
    other = _sse_block(harness, bytes.fromhex("dbf1"), 0x0000_3000_0001_0000)
    empty = GuestState(state.gpr, 0x891, 1, 0x10, (0,) * 16, _x87_image([ONE] * 8, sw=0x200, empty=0b10))
    assert not harness.run_case(other, empty).differences and harness.native.runs == 1


@_NATIVE
def test_the_host_cpu_settles_x87_not_the_sdm_rule(monkeypatch):
    """With the SDM rule made to excuse anything, a wrong x87 result (a sign flip that flips an exponent
    bit) still fails: the host CPU, not the rule, settles it."""
    from fexaot_tool.translate import a64
    from fexaot_tool.validate import differential

    monkeypatch.setattr(differential, "sdm_clears_c1", lambda executed, d, x87: True)
    harness = DifferentialHarness(7)
    guest = bytes.fromhex("d9e0")  # fchs
    good = _sse_block(harness, guest, 0x0000_3000_0000_0000)
    flip = a64.eor_imm(0, 2, 2, 0x8000)
    words = [int.from_bytes(good.code[i:i + 4], "little") for i in range(0, len(good.code) - 3, 4)]
    eor = next(w for w in words if w & ~0x3FF == flip & ~0x3FF)
    bad = _sse_block(harness, guest, 0x0000_3000_0001_0000, (eor, a64.eor_imm(0, eor & 31, eor >> 5 & 31, 0x4000)))
    state = GuestState(_xmm_state(0, 0).gpr, 0, 1, 0, (0,) * 16, _x87_image([TWO] * 8))
    assert not harness.run_case(good, state).differences
    result = harness.run_case(bad, state)
    assert {d.field for d in result.differences} == {"x87_r0"} and harness.native.runs == 1
    # Without the referee the (sabotaged) rule would have let it through: the CPU is what caught it.
    plain = DifferentialHarness(7, native_referee=False)
    bad = _sse_block(plain, guest, 0x0000_3000_0001_0000, (eor, a64.eor_imm(0, eor & 31, eor >> 5 & 31, 0x4000)))
    assert not plain.run_case(bad, state).differences


def test_x87_states_fit_the_blocks_stack():
    """Half the states have the registers the block reads full and those its pushes land in empty."""
    from fexaot_tool.validate.differential import x87_stack_use

    guest = bytes.fromhex("dd0424d9c2dec1dbf1")  # fld qword [rsp]; fld st(2); faddp; fcomi st, st(1)
    assert x87_stack_use(guest, 0) == (2, 2)
    harness = DifferentialHarness(7, native_referee=False)
    block = _sse_block(harness, guest, 0x0000_3000_0000_0000)
    for i, s in enumerate(make_states(block, random.Random(4), 12)):
        x87 = X87Image.unpack(s.x87)
        empty, top = x87.empty, x87.top
        if i % 2:
            assert not empty >> top & 1 and not empty >> ((top + 1) & 7) & 1
            assert empty >> ((top - 1) & 7) & 1 and empty >> ((top - 2) & 7) & 1
