"""String instructions and atomics, translated and run against unicorn x86-64 (tests/translate_harness.py).

Every state draws DF at random (the harness puts it in the state block and compares it after), so each
string case runs with DF clear and set.  Pointer registers point into the middle of DATA so that 1000
quadwords either way stay inside it; memory is compared byte for byte.
"""

from __future__ import annotations

import random
import shutil

import pytest

pytestmark = pytest.mark.skipif(shutil.which("as") is None, reason="needs GNU as for x86-64")

from translate_harness import DATA, DATA_SIZE, Differ, assemble  # noqa: E402

RCX, RSI, RDI = 1, 6, 7


def _pointers(counts):
    """RSI/RDI into DATA (RSI around +0x3000, RDI around +0xb000, any alignment); RCX from ``counts``."""
    return {RSI: lambda rnd: DATA + 0x3000 + rnd.randrange(0x1000),
            RDI: lambda rnd: DATA + 0xB000 + rnd.randrange(0x1000),
            RCX: lambda rnd: rnd.choice(counts)}


def _equal_regions(rnd: random.Random) -> bytes:
    """DATA as one 0x1000-byte pattern repeated (so [rsi] and [rdi] regions 0x8000 apart compare equal
    when their offsets agree), with a few bytes changed so repe/repne stop somewhere in the middle."""
    pattern = rnd.randbytes(0x1000)
    data = bytearray(pattern * (DATA_SIZE // 0x1000))
    for _ in range(rnd.choice((0, 1, 3))):
        data[rnd.randrange(DATA_SIZE)] ^= 1 << rnd.randrange(8)
    return bytes(data)


def _same_offsets(counts):
    o = _pointers(counts)
    offset = {}

    def rsi(rnd):
        offset["v"] = rnd.randrange(0x1000)
        return DATA + 0x3000 + offset["v"]
    o[RSI] = rsi
    o[RDI] = lambda rnd: DATA + 0xB000 + offset["v"]
    return o


@pytest.fixture(scope="module")
def differ() -> Differ:
    return Differ()


WIDTHS = "b w d q".split()
COUNTS = [0, 1, 2, 3, 17, 1000]


@pytest.mark.parametrize("op", ["movs", "stos", "lods", "cmps", "scas"])
@pytest.mark.parametrize("width", WIDTHS)
def test_single_string_instruction(differ: Differ, op: str, width: str) -> None:
    differ.check(assemble(f"{op}{width}"), states=24, overrides=_pointers([0, 1]))


@pytest.mark.parametrize("op", ["movs", "stos", "lods"])
@pytest.mark.parametrize("width", WIDTHS)
def test_rep_string_instruction(differ: Differ, op: str, width: str) -> None:
    differ.check(assemble(f"rep {op}{width}"), states=24, overrides=_pointers(COUNTS))


@pytest.mark.parametrize("prefix", ["repe", "repne"])
@pytest.mark.parametrize("op", ["cmps", "scas"])
@pytest.mark.parametrize("width", WIDTHS)
def test_repe_repne_stop_on_zf(differ: Differ, prefix: str, op: str, width: str) -> None:
    # Equal regions make repe run long and repne stop at once; random bytes do the opposite.
    differ.check(assemble(f"{prefix} {op}{width}"), states=16, overrides=_same_offsets(COUNTS),
                 fill=_equal_regions)
    differ.check(assemble(f"{prefix} {op}{width}"), states=16, seed=2, overrides=_pointers(COUNTS))


def test_scas_finds_the_accumulator(differ: Differ) -> None:
    """repne scasb as strlen/memchr use it: AL = 0 against data with zero bytes."""
    def sparse_zeros(rnd):
        return bytes(0 if rnd.random() < 0.02 else rnd.randrange(1, 256) for _ in range(DATA_SIZE))
    differ.check(assemble("xor eax, eax\n repne scasb"), states=12, overrides=_pointers([1000, 5, 0]),
                 fill=sparse_zeros)


@pytest.mark.parametrize("distance", [-9, -1, 1, 3, 8])
@pytest.mark.parametrize("width", ["b", "q"])
def test_overlapping_movs(differ: Differ, distance: int, width: str) -> None:
    """rep movs over overlapping buffers copies element by element, in the direction DF says."""
    differ.check(assemble(f"lea rdi, [rsi{distance:+d}]\n rep movs{width}"), states=16,
                 overrides=_pointers([0, 1, 7, 100, 1000]))


def test_cld_std(differ: Differ) -> None:
    for source in ("cld", "std", "std\n movsb", "cld\n stosq", "std\n rep stosd", "cld\n std\n lodsw"):
        differ.check(assemble(source), states=8, overrides=_pointers([0, 3]))


def test_flags_survive_rep_with_count_zero(differ: Differ) -> None:
    """A rep cmps/scas with RCX = 0 changes no flag: the flags of the cmp before it must stay."""
    for source in ("cmp rax, rdx\n repe cmpsb", "cmp al, dl\n repne scasq", "sub rax, rdx\n repe cmpsd"):
        differ.check(assemble(source), states=16, overrides=_pointers([0, 0, 1, 2]))


def test_string_instructions_in_a_block(differ: Differ) -> None:
    differ.check(assemble("mov ecx, 40\n rep movsq\n mov ecx, 9\n std\n rep stosb\n cld\n lodsd\n scasb"),
                 states=16, overrides=_pointers([0]))


def test_32bit_addressing_stays_untranslatable() -> None:
    from fexaot_tool.translate import GuestCode, translate_block
    from fexaot_tool.translate.builder import REASON_OPERAND
    code = assemble("rep movsb [edi], [esi]")
    block = translate_block(GuestCode(0, ((0x1000, code),)), 0x1000, len(code))
    assert block.stop is not None and block.stop[0] == REASON_OPERAND


# --- atomics -------------------------------------------------------------------------------

RAX, RDX, RBX = 0, 2, 3
ALIGNED = {RBX: lambda rnd: DATA + 0x4000 + 16 * rnd.randrange(64)}  # atomics need natural alignment
LSE = ("flagm", "lrcpc", "lse")
NO_LSE = ("flagm", "lrcpc")
SIZES = {"byte": ("al", "cl", "dl"), "word": ("ax", "cx", "dx"), "dword": ("eax", "ecx", "edx"),
         "qword": ("rax", "rcx", "rdx")}


@pytest.fixture(scope="module", params=[LSE, NO_LSE], ids=["lse", "exclusive"])
def atomic_differ(request) -> Differ:
    return Differ(features=request.param)


@pytest.mark.parametrize("size", SIZES)
def test_lock_arithmetic(atomic_differ: Differ, size: str) -> None:
    _, c, _ = SIZES[size]
    for op in ("add", "sub", "and", "or", "xor"):
        for operand in (c, "0x5a", "-1"):
            atomic_differ.check(assemble(f"lock {op} {size} ptr [rbx+8], {operand}"), states=12, overrides=ALIGNED)
    for op in ("inc", "dec", "not"):
        atomic_differ.check(assemble(f"lock {op} {size} ptr [rbx]"), states=12, overrides=ALIGNED)
    # unicorn computes the flags of "lock neg" wrongly (not of the value read): a plain neg is the reference.
    atomic_differ.check(assemble(f"lock neg {size} ptr [rbx]"), states=12, overrides=ALIGNED,
                        reference=assemble(f"nop\n neg {size} ptr [rbx]"))


@pytest.mark.parametrize("size", SIZES)
def test_xadd_xchg(atomic_differ: Differ, size: str) -> None:
    _, c, d = SIZES[size]
    for source in (f"lock xadd {size} ptr [rbx], {c}", f"xadd {size} ptr [rbx], {c}", f"xadd {d}, {c}",
                   f"xadd {c}, {c}", f"xchg {size} ptr [rbx], {c}", f"xchg {c}, {size} ptr [rbx+16]"):
        atomic_differ.check(assemble(source), states=12, overrides=ALIGNED)


@pytest.mark.parametrize("size", SIZES)
def test_cmpxchg_success_and_failure(atomic_differ: Differ, size: str) -> None:
    a, c, d = SIZES[size]
    load = "mov eax, dword ptr [rbx]" if size == "dword" else f"mov {a}, {size} ptr [rbx]"
    # Success (the accumulator holds the memory's value) and, from random states, failure.
    atomic_differ.check(assemble(f"{load}\n lock cmpxchg {size} ptr [rbx], {c}"), states=12, overrides=ALIGNED)
    zero_extend = "mov eax, eax\n " if size == "dword" else ""  # see test_cmpxchg_32bit_keeps_upper_halves
    atomic_differ.check(assemble(f"{zero_extend}lock cmpxchg {size} ptr [rbx], {c}"), states=12, overrides=ALIGNED)
    atomic_differ.check(assemble(f"{zero_extend}cmpxchg {size} ptr [rbx], {c}"), states=12, overrides=ALIGNED)
    # Register destination: equal and (mostly) unequal.
    dest_zero_extend = "mov edx, edx\n " if size == "dword" else ""
    atomic_differ.check(assemble(f"mov {a}, {d}\n cmpxchg {d}, {c}"), states=8)
    atomic_differ.check(assemble(f"{zero_extend}{dest_zero_extend}cmpxchg {d}, {c}"), states=8)
    atomic_differ.check(assemble(f"cmpxchg {a}, {c}"), states=8)


def test_cmpxchg8b_16b(atomic_differ: Differ) -> None:
    success8 = "mov eax, dword ptr [rbx]\n mov edx, dword ptr [rbx+4]\n"
    success16 = "mov rax, qword ptr [rbx]\n mov rdx, qword ptr [rbx+8]\n"
    for source in (f"{success8} lock cmpxchg8b qword ptr [rbx]", "mov eax, eax\n mov edx, edx\n lock cmpxchg8b [rbx]",
                   f"{success16} lock cmpxchg16b xmmword ptr [rbx]", "lock cmpxchg16b xmmword ptr [rbx]"):
        atomic_differ.check(assemble(source), states=12, overrides=ALIGNED)


@pytest.mark.parametrize("width", [8, 16])
def test_cmpxchg8b_16b_change_only_zf(atomic_differ: Differ, width: int) -> None:
    """The SDM and silicon (this host: CF and SF of a cmp survive): only ZF changes.  unicorn clears the
    other flags, so this compares with the SDM, not with unicorn."""
    memory = (5).to_bytes(8, "little") + (6).to_bytes(8, "little")
    source = f"cmp rsi, rdi\n lock cmpxchg{width}b [rbx]"
    for rax, rdx, zf in ((5, 6 if width == 16 else 0, 1), (2, 6, 0)):
        got = _translated_run(atomic_differ, source, {RAX: rax, RDX: rdx, RBX: DATA, 6: 0x70, 7: 0x8000}, memory)
        assert (got.flags["CF"], got.flags["SF"], got.flags["OF"], got.flags["ZF"]) == (1, 1, 0, zf)
        assert got.gprs[RAX] == (rax if zf else 5)


def test_lock_bit_test(atomic_differ: Differ) -> None:
    index = {6: lambda rnd: rnd.choice((0, 1, 7, 8, 31, 63, 64, 200, -1 & (2**64 - 1), -9 & (2**64 - 1)))}
    for op in ("bts", "btr", "btc"):
        for source in (f"lock {op} dword ptr [rbx+16], 5", f"lock {op} qword ptr [rbx+16], 45",
                       f"lock {op} word ptr [rbx+16], 9", f"lock {op} qword ptr [rbx+64], rsi",
                       f"lock {op} dword ptr [rbx+64], esi", f"cmp rax, rdx\n lock {op} qword ptr [rbx], 3"):
            atomic_differ.check(assemble(source), states=12, overrides={**ALIGNED, **index})


def test_flags_the_atomic_leaves_alone(atomic_differ: Differ) -> None:
    for source in ("cmp rax, rdx\n lock inc qword ptr [rbx]", "cmp al, dl\n lock dec byte ptr [rbx]",
                   "cmp rax, rdx\n xchg [rbx], rcx", "cmp rax, rdx\n lock not dword ptr [rbx]",
                   "sub rax, rdx\n lock add qword ptr [rbx], rcx\n setb dl"):
        atomic_differ.check(assemble(source), states=12, overrides=ALIGNED)


def _translated_run(differ: Differ, source: str, gprs: dict[int, int], memory: bytes):
    """What the translation of ``source`` leaves on unicorn ARM64, run from ``gprs`` (others 0)."""
    from fexaot_tool.translate import GuestCode, translate_block
    from translate_harness import GUEST, HOST_CODE
    code = assemble(source)
    block = translate_block(GuestCode(0, ((GUEST, code),)), GUEST, len(code), features=differ.features)
    differ.arm.mem_write(HOST_CODE, block.code)
    differ.arm.ctl_remove_cache(HOST_CODE, HOST_CODE + 0x10000)
    state = {"gprs": [gprs.get(n, 0) for n in range(16)],
             "flags": {"CF": 0, "PF": 0, "AF": 0, "ZF": 0, "SF": 0, "OF": 0, "DF": 0}, "xmm": [0] * 16}
    return differ._run_arm(state, memory.ljust(DATA_SIZE, b"\0"))


def test_cmpxchg_32bit_keeps_upper_halves(atomic_differ: Differ) -> None:
    """Silicon (this x86-64 host, and QEMU since 8.1; unicorn's QEMU differs): a 32-bit cmpxchg writes
    EAX only when it fails, and a register destination only when it succeeds."""
    upper = 0xDEADBEEF00000000
    memory = (0x1234).to_bytes(4, "little")
    success = _translated_run(atomic_differ, "lock cmpxchg dword ptr [rbx], ecx",
                              {RAX: upper | 0x1234, 1: 0x55, RBX: DATA}, memory).gprs
    assert success[RAX] == upper | 0x1234
    failure = _translated_run(atomic_differ, "lock cmpxchg dword ptr [rbx], ecx",
                              {RAX: upper | 0x9999, 1: 0x55, RBX: DATA}, memory).gprs
    assert failure[RAX] == 0x1234
    dest = 0xAAAAAAAA00001234
    success = _translated_run(atomic_differ, "cmpxchg edx, ecx", {RAX: upper | 0x1234, 1: upper | 0x55, RDX: dest},
                              b"").gprs
    assert (success[RAX], success[RDX]) == (upper | 0x1234, 0x55)
    failure = _translated_run(atomic_differ, "cmpxchg edx, ecx", {RAX: upper | 0x9999, 1: 0x55, RDX: dest}, b"").gprs
    assert (failure[RAX], failure[RDX]) == (0x1234, dest)


def test_lse_and_exclusive_code_differ() -> None:
    """The features select the code: LSE forms with "lse", exclusive pairs and a barrier without."""
    import capstone
    from fexaot_tool.translate import GuestCode, translate_block
    cs = capstone.Cs(capstone.CS_ARCH_ARM64, capstone.CS_MODE_ARM)
    code = assemble("lock add qword ptr [rbx], rcx\n lock cmpxchg dword ptr [rbx], edx\n xchg [rbx], al")
    texts = {}
    for name, features in (("lse", LSE), ("exclusive", NO_LSE)):
        block = translate_block(GuestCode(0, ((0x1000, code),)), 0x1000, len(code), features=features)
        texts[name] = [i.mnemonic for i in cs.disasm(block.code[:4 * block.host_instructions], 0)]
    assert {"ldaddal", "casal", "swpalb"} <= set(texts["lse"]) and "ldaxr" not in texts["lse"]
    assert {"ldaxr", "stlxr", "ldaxrb", "stlxrb", "dmb"} <= set(texts["exclusive"])
    assert not {"ldaddal", "casal", "swpalb"} & set(texts["exclusive"])


def test_default_features_are_the_default_config() -> None:
    from fexaot_tool.cache.key import DEFAULT_CPU_FEATURES
    from fexaot_tool.translate.builder import DEFAULT_FEATURES
    assert tuple(sorted(DEFAULT_FEATURES)) == tuple(sorted(DEFAULT_CPU_FEATURES))


def test_untranslatable_reasons_stay_honest() -> None:
    from fexaot_tool.translate import GuestCode, translate_block
    from fexaot_tool.translate.builder import REASON_ATOMIC
    for source in ("lock adc qword ptr [rbx], rcx", "lock sbb dword ptr [rbx], 1"):
        code = assemble(source)
        block = translate_block(GuestCode(0, ((0x1000, code),)), 0x1000, len(code))
        assert block.stop is not None and block.stop[0] == REASON_ATOMIC, source
