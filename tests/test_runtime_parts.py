"""The runtime's parts on their own: the x86 engine and its block counter, guest memory, paths,
the system call table and the CPUID model."""

from __future__ import annotations

import errno
import signal
from collections import Counter

import iced_x86
import pytest
from unicorn import unicorn_const as uc_const

from fexaot_tool.runtime import blockcounter, host, syscalls
from fexaot_tool.runtime.cpuid import EDX1_SSE2, baseline_model
from fexaot_tool.runtime.engine import EngineFault
from fexaot_tool.runtime.kernel import Kernel
from fexaot_tool.runtime.memory import GuestMemory, Mapping, MappingTable
from fexaot_tool.runtime.paths import GuestPaths
from fexaot_tool.runtime.x86 import X86Engine

PROT_RX = host.PROT_READ | host.PROT_EXEC
PROT_RW = host.PROT_READ | host.PROT_WRITE


class Guest:
    """Code in a host page mapped into an X86Engine, run until it makes the exit system call."""

    def __init__(self, code: bytes):
        self.calls: list[tuple[int, tuple]] = []
        self.engine = X86Engine(baseline_model(), self.syscall)
        self.code = host.mmap(0, 4096, PROT_RW, host.MAP_PRIVATE | host.MAP_ANONYMOUS)
        self.stack = host.mmap(0, 16384, PROT_RW, host.MAP_PRIVATE | host.MAP_ANONYMOUS)
        host.write_memory(self.code, code)
        host.mprotect(self.code, 4096, PROT_RX)
        self.engine.map(self.code, 4096, PROT_RX)
        self.engine.map(self.stack, 16384, PROT_RW)
        self.engine.reset_thread(self.code, self.stack + 16384 - 64)

    def syscall(self, number: int, args: tuple) -> int | None:
        self.calls.append((number, args))
        if number == syscalls.NUMBERS["exit_group"]:
            self.engine.stop()
            return None
        return -errno.ENOSYS

    def close(self) -> None:
        self.engine.close()
        host.munmap(self.code, 4096)
        host.munmap(self.stack, 16384)


# mov ecx, 5000 / loop: dec ecx / jnz loop / mov edi, 7 / mov eax, 231 / syscall
LOOP = bytes.fromhex("b988130000" "ffc9" "75fc" "bf07000000" "b8e7000000" "0f05")


def test_engine_runs_code_and_makes_system_calls() -> None:
    guest = Guest(LOOP)
    try:
        guest.engine.run()
        assert guest.calls == [(231, (7, 0, 0, 0, 0, 0))]
        assert guest.engine.read_register("rcx") == 0
    finally:
        guest.close()


def python_hook_counts(code: bytes) -> dict[tuple[int, int], int]:
    """Block counts from unicorn's own per-block Python hook, on an engine that is never stopped."""
    guest = Guest(code)
    seen: Counter[tuple[int, int]] = Counter()
    guest.engine.uc.hook_add(uc_const.UC_HOOK_BLOCK,
                             lambda uc, address, size, _: seen.update([(address - guest.code, size)]))
    try:
        guest.engine.run()
    finally:
        guest.close()
    return dict(seen)


@pytest.mark.parametrize("entries", [blockcounter.ENTRIES, 100, 7, 2])
def test_native_block_counter_matches_a_python_block_hook(monkeypatch, entries: int) -> None:
    """The same counts as unicorn's per-block Python hook, also when the buffer fills, stops and is drained."""
    reference = python_hook_counts(LOOP)
    # The first dec/jnz is in the entry block; the loop block starts at the dec for the other 4999.
    assert reference == {(0, 9): 1, (5, 4): 4999, (9, 12): 1}
    monkeypatch.setattr(blockcounter, "ENTRIES", entries)
    guest = Guest(LOOP)
    guest.engine.enable_block_counting()
    try:
        guest.engine.run()
        counted = {(b.address - guest.code, b.size): b.count for b in guest.engine.take_block_counts()}
    finally:
        guest.close()
    assert counted == reference
    assert guest.calls == [(231, (7, 0, 0, 0, 0, 0))]  # stopping to drain did not disturb the guest


def test_block_counter_hook_decodes_as_documented() -> None:
    decoded = [str(i) for i in iced_x86.Decoder(64, blockcounter.HOOK_CODE)]
    assert decoded == ["mov rax,[rcx]", "cmp rax,[rcx+8]", "jae short 0000000000000021h", "shl rdx,30h", "or rdx,rsi",
                       "mov [rax],rdx", "add rax,8", "mov [rcx],rax", "cmp rax,[rcx+10h]",
                       "jae short 0000000000000021h",
                       "ret", "jmp qword ptr [rcx+18h]"]


@pytest.mark.parametrize("code, signo, what", [
    (bytes.fromhex("0f0b"), signal.SIGILL, "invalid"),  # ud2
    (bytes.fromhex("cc"), signal.SIGTRAP, "breakpoint"),  # int3
    (bytes.fromhex("31c9" "f7f1"), signal.SIGFPE, "divide error"),  # xor ecx, ecx / div ecx
    (bytes.fromhex("48b80000adde00000000" "ffe0"), signal.SIGSEGV, "jump to unmapped address 0xdead0000"),
    (bytes.fromhex("48b80000adde00000000" "8b00"), signal.SIGSEGV, "read from unmapped address 0xdead0000"),
])
def test_faults_become_the_signal_the_kernel_would_send(code: bytes, signo: int, what: str) -> None:
    guest = Guest(code)
    try:
        with pytest.raises(EngineFault) as info:
            guest.engine.run()
    finally:
        guest.close()
    assert info.value.signo == signo and what in info.value.what


def test_cpuid_instruction_answers_from_the_model() -> None:
    # xor eax, eax / inc eax / cpuid / mov edi, edx / mov eax, 231 / syscall
    guest = Guest(bytes.fromhex("31c0" "ffc0" "0fa2" "89d7" "b8e7000000" "0f05"))
    try:
        guest.engine.run()
    finally:
        guest.close()
    assert guest.calls[0][1][0] == baseline_model().query(1).edx
    assert guest.calls[0][1][0] & EDX1_SSE2


def test_cpuid_model_is_the_documented_baseline() -> None:
    model = baseline_model()
    leaf0 = model.query(0)
    vendor = b"".join(r.to_bytes(4, "little") for r in (leaf0.ebx, leaf0.edx, leaf0.ecx))
    assert vendor == b"AuthenticAMD" and leaf0.eax == 1
    assert model.query(1).ecx == 0  # no SSE3, SSSE3, SSE4, POPCNT, AVX: x86-64-v1
    assert model.query(7).ebx == 0 and model.query(0x12345).eax == 0
    brand = b"".join(r.to_bytes(4, "little") for leaf in (0x80000002, 0x80000003, 0x80000004)
                     for r in (lambda q: (q.eax, q.ebx, q.ecx, q.edx))(model.query(leaf)))
    assert brand.rstrip(b"\0") == b"fexaot x86-64 baseline CPU (K8 class)"
    assert model.hwcap == model.query(1).edx


# -- memory --------------------------------------------------------------------------------------


def test_mapping_table_splits_and_finds_gaps() -> None:
    table = MappingTable()
    table.insert(Mapping(0x10000, 0x20000, PROT_RW))
    table.insert(Mapping(0x30000, 0x40000, PROT_RX))
    table.remove(0x18000, 0x34000)
    assert [(m.start, m.end) for m in table] == [(0x10000, 0x18000), (0x34000, 0x40000)]
    assert table.gaps(0x0, 0x50000) == [(0x0, 0x10000), (0x18000, 0x34000), (0x40000, 0x50000)]
    assert table.find(0x34000).prot == PROT_RX and table.find(0x20000) is None
    table.insert(Mapping(0x12000, 0x13000, host.PROT_READ))
    assert [(m.start, m.end, m.prot) for m in table][:3] == [
        (0x10000, 0x12000, PROT_RW), (0x12000, 0x13000, host.PROT_READ), (0x13000, 0x18000, PROT_RW)]


class RecordingObserver:
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def changing(self, start: int, end: int) -> None:
        self.events.append(("changing", start, end))

    def mapped(self, mapping: Mapping) -> None:
        self.events.append(("mapped", mapping.start, mapping.end, mapping.prot))

    def unmapping(self, mapping: Mapping) -> None:
        self.events.append(("unmapping", mapping.start, mapping.end))

    def protected(self, before: Mapping, prot: int) -> None:
        self.events.append(("protected", before.start, before.end, prot))


def test_guest_memory_never_replaces_host_mappings() -> None:
    observer = RecordingObserver()
    memory = GuestMemory(observer)
    host_page = host.mmap(0, 4096, PROT_RW, host.MAP_PRIVATE | host.MAP_ANONYMOUS)  # the "runtime's" page
    host.write_memory(host_page, b"runtime data")
    try:
        flags = host.MAP_PRIVATE | host.MAP_ANONYMOUS | host.MAP_FIXED
        assert memory.map(host_page, 4096, PROT_RW, flags) == -errno.ENOMEM
        assert host.read_memory(host_page, 12) == b"runtime data"
        assert memory.protect(host_page, 4096, host.PROT_READ) == -errno.ENOMEM
        assert memory.unmap(host_page, 4096) == 0 and host.read_memory(host_page, 12) == b"runtime data"
        assert observer.events == [("changing", host_page, host_page + 4096)]
    finally:
        host.munmap(host_page, 4096)


def test_guest_memory_keeps_the_observer_in_step() -> None:
    observer = RecordingObserver()
    memory = GuestMemory(observer)
    base = memory.map(0, 3 * 4096, PROT_RW, host.MAP_PRIVATE | host.MAP_ANONYMOUS)
    assert base > 0 and memory.writable(base, 3 * 4096)
    assert memory.protect(base + 4096, 4096, PROT_RX) == 0
    assert memory.unmap(base, 4096) == 0
    assert not memory.readable(base, 1) and memory.readable(base + 4096, 1) and not memory.writable(base + 4096, 1)
    host.write_memory(base + 8192, b"path\0")
    assert memory.read_c_string(base + 8192) == b"path" and memory.read_c_string(base) is None
    assert observer.events == [
        ("mapped", base, base + 3 * 4096, PROT_RW),
        ("changing", base + 4096, base + 8192), ("protected", base + 4096, base + 8192, PROT_RX),
        ("changing", base, base + 4096), ("unmapping", base, base + 4096),
    ]
    memory.unmap_all()
    assert len(memory.table) == 0


# -- paths -----------------------------------------------------------------------------------------


def test_guest_paths_stay_inside_the_rootfs(fixture_rootfs) -> None:
    paths = GuestPaths(str(fixture_rootfs.root))
    root = str(fixture_rootfs.root.resolve())
    # An absolute symlink in the rootfs resolves inside it, not on the host.
    assert paths.to_host(fixture_rootfs.passwd_absolute_link) == root + "/etc/passwd"
    assert paths.to_host(fixture_rootfs.passwd_relative_link) == root + "/etc/passwd"
    # Without following, the link itself is named (lstat, readlink).
    assert paths.to_host(fixture_rootfs.passwd_absolute_link, follow=False) == root + "/usr/lib/evil/passwd-absolute"
    # The loader through /lib64's absolute link.
    assert paths.to_host("/lib64/ld-linux-x86-64.so.2") == root + fixture_rootfs.interpreter
    # A new file in a rootfs directory is created there.
    assert paths.to_host("/etc/new-file") == root + "/etc/new-file"
    # What the rootfs lacks comes from the host, except for programs and their loaders.
    assert paths.to_host("/var/lib/dpkg") == "/var/lib/dpkg"
    assert paths.to_host("/var/lib/dpkg", fallback=False) == root + "/var/lib/dpkg"
    assert paths.to_host("/proc/self/maps") == "/proc/self/maps"
    assert paths.to_host("relative/path") == "relative/path"
    assert paths.to_guest(root + "/usr/bin/app") == "/usr/bin/app" and paths.to_guest("/tmp/x") == "/tmp/x"
    assert GuestPaths("/").to_host("/usr/lib/evil") == "/usr/lib/evil"


# -- the system call table -------------------------------------------------------------------------


def test_system_call_table() -> None:
    assert (syscalls.NAMES[0], syscalls.NAMES[59], syscalls.NAMES[231], syscalls.NAMES[257]) == (
        "read", "execve", "exit_group", "openat")
    assert len(set(syscalls.NAMES.values())) == len(syscalls.NAMES)
    sections = (syscalls.OWNED, syscalls.ENOSYS, syscalls.NOT_SUPPORTED, syscalls.PATH_ARGUMENTS)
    for i, section in enumerate(sections):
        assert set(section) <= set(syscalls.NUMBERS), set(section) - set(syscalls.NUMBERS)
        for other in sections[i + 1:3]:
            assert not set(section) & set(other)
    for name in syscalls.OWNED:
        assert callable(getattr(Kernel, f"sys_{name}"))
    assert syscalls.name_of(999) == "syscall_999"
