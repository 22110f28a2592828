"""Each instruction family, translated and run against unicorn x86-64 from edge-value states."""

from __future__ import annotations

import shutil

import pytest

pytestmark = pytest.mark.skipif(shutil.which("as") is None, reason="needs GNU as for x86-64")

from translate_harness import Differ, assemble  # noqa: E402

# One block per row; rows with "cl" run with RCX drawn from shift counts.
CASES = [
    # mov family, partial registers, addressing modes
    "mov rax, rdx", "mov eax, edx", "mov ax, dx", "mov al, dl", "mov ah, dl", "mov dh, ah", "mov bh, ch",
    "mov rax, 0x123456789abcdef0", "mov eax, -1", "mov ax, 0x1234", "mov ah, 0x7f", "mov rax, -5",
    "mov rax, [rbx]", "mov eax, [rbx+8]", "mov ax, [rbx+rsi*2+3]", "mov al, [rbx+rsi-1]",
    "mov [rbx+16], rdx", "mov [rbx+rsi*8], edx", "mov word ptr [rbx+2], 0x1234", "mov byte ptr [rbx], ah",
    "mov qword ptr [rbx+1000], -7", "mov rax, [rsp+8]", "mov [rsp-8], rcx", "mov rax, [rbx+0x1234]",
    "mov rax, qword ptr fs:[0x28]", "mov rax, [rip+0x10]", "lea rax, [rip+0x100]",
    "movzx eax, dl", "movzx eax, dh", "movzx rax, word ptr [rbx]", "movsx rax, dl", "movsx eax, bh",
    "movsx ax, dl", "movsxd rax, edx", "movsxd rax, dword ptr [rbx]", "movsx rax, word ptr [rbx+1]",
    "lea rax, [rdx+rcx*4+0x10]", "lea eax, [rdx+rcx]", "lea ax, [rdx-1]", "lea rax, [rcx*8]",
    "lea rax, [rdx+0x12345678]", "lea r15, [r8+r9*2-0x80]",
    # arithmetic
    "add rax, rdx", "add eax, edx", "add ax, dx", "add al, dl", "add ah, dl", "add rax, 1", "add eax, -1",
    "add rax, 0x12345", "add al, 0x80", "add qword ptr [rbx], rdx", "add dl, byte ptr [rbx]",
    "add word ptr [rbx+rsi*2+0x10], 1", "xor byte ptr [rbx+rsi-1], dl", "inc dword ptr [rbx+rsi*4+8]",
    "shl qword ptr [rbx+rsi+0x20], 3", "bts dword ptr [rbx+rsi*2+2], 5", "neg word ptr [rbx+rsi+6]",
    "sub rax, rdx", "sub eax, edx", "sub ax, dx", "sub al, dl", "sub rax, 1", "sub rax, -0x80",
    "sub rax, rax", "xor eax, eax", "xor ah, ah", "sub dword ptr [rbx+4], 7",
    "cmp rax, rdx", "cmp eax, edx", "cmp ax, dx", "cmp al, dl", "cmp dh, al", "cmp rax, 0", "cmp eax, 0x80000000",
    "cmp qword ptr [rbx], 5", "cmp byte ptr [rbx], dl",
    "adc rax, rdx", "adc eax, edx", "adc rax, 0", "sbb rax, rdx", "sbb eax, eax", "sbb rax, -1",
    "stc\n adc rax, rdx", "adc al, dl", "adc ax, 0x10", "adc dh, al", "sbb sil, sil", "sbb cx, dx",
    "sbb byte ptr [rbx], 1", "cmp rax, rdx\n sbb dl, dl", "stc\n adc cl, 0xff", "clc\n adc ax, dx", "cmc\n sbb al, 0x80", "cmp rax, rdx\n adc rcx, 0", "cmp rax, rdx\n sbb ecx, ecx",
    "neg rax", "neg eax", "neg ax", "neg al", "neg ah", "neg qword ptr [rbx]",
    "inc rax", "inc eax", "inc ax", "inc al", "inc ah", "dec rax", "dec edx", "dec dl", "dec qword ptr [rbx]",
    "cmp rax, rdx\n inc rcx", "cmp rax, rdx\n dec ecx",
    # logic
    "and rax, rdx", "and eax, 0xff", "and ax, dx", "and al, dl", "and rax, -16", "and eax, 0x12345",
    "or rax, rdx", "or eax, 1", "or al, 0x80", "or dh, al", "xor rax, rdx", "xor eax, 0x80000000", "xor ax, dx",
    "test rax, rdx", "test eax, eax", "test al, 1", "test dl, dl", "test ah, 0x40", "test qword ptr [rbx], rdx",
    "not rax", "not eax", "not ax", "not ah", "not byte ptr [rbx]",
    # shifts and rotates
    "shl rax, 1", "shl rax, 5", "shl eax, 31", "shl ax, 3", "shl al, 7", "shl ah, 1", "shr rax, 1", "shr rax, 63",
    "shr eax, 4", "shr ax, 15", "shr dl, 3", "sar rax, 1", "sar rax, 17", "sar eax, 31", "sar ax, 9", "sar al, 5",
    "shl rax, 0", "shr eax, 32", "sar dl, 9", "shl al, 9",
    "rol rax, 1", "rol rax, 13", "rol eax, 7", "rol ax, 3", "rol al, 1", "ror rax, 1", "ror eax, 9", "ror dl, 3",
    "ror ax, 16", "shl qword ptr [rbx], 3", "sar byte ptr [rbx], 1",
    "shld rax, rdx, 5", "shld eax, edx, 1", "shrd rax, rdx, 63", "shrd eax, edx, 12",
    # multiply, divide
    "mul rdx", "mul ecx", "mul cx", "mul cl", "imul rdx", "imul ecx", "imul cx", "imul cl",
    "imul rax, rdx", "imul eax, edx", "imul ax, dx", "imul rax, rdx, 7", "imul eax, edx, -3",
    "imul ax, dx, 300", "imul rax, qword ptr [rbx]",
    "div rcx", "div ecx", "div cx", "div cl", "idiv rcx", "idiv ecx", "idiv cx", "idiv cl",
    "xor edx, edx\n div rcx", "cqo\n idiv rcx", "cdq\n idiv ecx", "xor edx, edx\n mov rcx, 7\n div rcx",
    "mov rdx, 5\n mov rcx, 0x10\n div rcx", "cqo\n mov rcx, -1\n idiv rcx", "mov rdx, -3\n mov rcx, 17\n idiv rcx",
    "mov rdx, 3\n mov rcx, -17\n idiv rcx", "mov rdx, -1\n mov rcx, -3\n idiv rcx",
    # bits
    "bt rax, rdx", "bt eax, 5", "bt rax, 63", "bts rax, rdx", "btr eax, edx", "btc rax, 3", "bts ax, 15",
    "bt qword ptr [rbx], 40", "bts dword ptr [rbx+8], 3", "btr qword ptr [rbx+64], rsi", "bt dword ptr [rbx+64], esi",
    "bsf rax, rdx", "bsf eax, edx", "bsr rax, rdx", "bsr eax, edx", "bsf ax, dx", "bsr ax, dx",
    "tzcnt rax, rdx", "tzcnt eax, edx", "tzcnt ax, dx", "lzcnt rax, rdx", "lzcnt eax, edx", "lzcnt ax, dx",
    "popcnt rax, rdx", "popcnt eax, edx", "popcnt ax, dx", "bswap rax", "bswap edx",
    "cbw", "cwde", "cdqe", "cwd", "cdq", "cqo",
    # conditions
    *[f"cmp rax, rdx\n set{cc} cl" for cc in "o no b ae e ne be a s ns p np l ge le g".split()],
    *[f"cmp al, dl\n set{cc} ch" for cc in "b be a l g".split()],
    *[f"cmp rax, rdx\n cmov{cc} rcx, r8" for cc in "o no b ae e ne be a s ns p np l ge le g".split()],
    *[f"test eax, edx\n cmov{cc} ecx, r8d" for cc in "e ne p np s".split()],
    "add rax, rdx\n cmovb cx, r8w", "cmp rax, rdx\n setb byte ptr [rbx]",
    # data movement, stack
    "xchg rax, rdx", "xchg eax, edx", "xchg al, dh", "xchg ax, dx",
    "push rax", "push rsp", "push 0x12", "push -1", "push qword ptr [rbx]", "pop rax", "pop rsp",
    "push rax\n pop rdx", "leave", "nop", "endbr64", "nop dword ptr [rax+rax]",
    # flags survive a block of non-flag instructions
    "mov rax, rdx", "lea rax, [rcx+1]\n mov [rbx], rax",
]

JUMPS = [
    *[f"cmp rax, rdx\n j{cc} .+0x20" for cc in "o no b ae e ne be a s ns p np l ge le g".split()],
    *[f"test al, dl\n j{cc} .-0x20" for cc in "e ne p np s".split()],
    "sub rax, 1\n jne .+0x40", "jmp .+0x100", "jmp rax", "jmp qword ptr [rbx]", "call .+0x200", "call rdx",
    "call qword ptr [rsp+8]", "ret", "ret 16", "syscall", "cpuid", "rdtsc", "int3", "hlt", "ud2",
]

CL_CASES = ["shl rax, cl", "shl eax, cl", "shl ax, cl", "shl al, cl", "shr rax, cl", "shr eax, cl", "shr dl, cl",
            "sar rax, cl", "sar eax, cl", "sar ax, cl", "sar al, cl", "rol rax, cl", "rol eax, cl", "ror ax, cl",
            "rol dl, cl", "shld rax, rdx, cl", "shrd eax, edx, cl", "shld eax, edx, cl", "shrd rax, rdx, cl",
            "cmp rax, rdx\n shl rax, cl", "cmp eax, edx\n ror r8, cl\n setp dl"]


@pytest.fixture(scope="module")
def differ() -> Differ:
    return Differ()


@pytest.mark.parametrize("source", CASES + JUMPS)
def test_instruction_matches_x86(differ: Differ, source: str) -> None:
    differ.check(assemble(source))


@pytest.mark.parametrize("source", CL_CASES)
def test_shift_by_cl_matches_x86(differ: Differ, source: str) -> None:
    differ.check(assemble(source), states=30, count_reg=True)


def test_relaxed_mode_matches_x86() -> None:
    relaxed = Differ("relaxed")
    for source in ("mov rax, [rbx+8]", "add qword ptr [rbx+rsi*8+0x10], rdx", "mov [rbx-300], ecx",
                   "mov rax, qword ptr fs:[0x28]"):
        relaxed.check(assemble(source))
