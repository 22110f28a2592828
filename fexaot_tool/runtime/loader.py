"""The kernel's part of ``execve``: check a program, map it and its PT_INTERP loader, build the stack.

As Linux's ``load_elf_binary`` (fs/binfmt_elf.c) and ``load_script``
(fs/binfmt_script.c) do, for x86-64 ELF executables (ET_EXEC), position-
independent and static-PIE executables (ET_DYN) and ``#!`` scripts.  The
dynamic loader named by PT_INTERP comes from the rootfs and loads the
libraries itself, through the guest's own ``openat``/``mmap`` calls.

Checking (:func:`prepare_exec`) has no side effects, so an ``execve`` that
would fail returns its errno to the guest with the old image intact; mapping
(:func:`load_image`) happens only after that.  The initial stack follows the
System V x86-64 psABI, section 3.4.1: argc, argv, envp, the auxiliary vector,
then the strings.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
import struct
from dataclasses import dataclass

from fexaot_tool.elf.reader import ET_DYN, ET_EXEC, PF_R, PF_W, PF_X, ElfError, ElfInfo, read_elf
from fexaot_tool.runtime import host
from fexaot_tool.runtime.cpuid import CpuidModel
from fexaot_tool.runtime.errors import AddressSpaceCollisionError, GuestError, InterpreterError, ProgramNotFoundError
from fexaot_tool.runtime.host import MAP_ANONYMOUS, MAP_PRIVATE, PROT_EXEC, PROT_NONE, PROT_READ, PROT_WRITE
from fexaot_tool.runtime.memory import GuestMemory
from fexaot_tool.runtime.paths import GuestPaths

# Auxiliary vector types (<linux/auxvec.h>, <elf.h>).
AT_NULL, AT_PHDR, AT_PHENT, AT_PHNUM, AT_PAGESZ, AT_BASE, AT_FLAGS, AT_ENTRY = 0, 3, 4, 5, 6, 7, 8, 9
AT_UID, AT_EUID, AT_GID, AT_EGID, AT_PLATFORM, AT_HWCAP, AT_CLKTCK = 11, 12, 13, 14, 15, 16, 17
AT_SECURE, AT_RANDOM, AT_HWCAP2, AT_EXECFN = 23, 25, 26, 31

PT_PHDR = 6  # the program header table itself (ELF spec, "Program Header")
PLATFORM = b"x86_64"
BINPRM_BUF_SIZE = 256  # bytes of a script's first line the kernel reads
MAX_SCRIPT_NESTING = 4  # BINPRM_MAX_RECURSION: a script's interpreter may itself be a script, this deep
STACK_SIZE = 8 << 20  # the default RLIMIT_STACK; the main stack is mapped whole (it does not grow)
MAX_ARG_STRLEN = 32 * 4096  # longest single argument or environment string (include/uapi/linux/binfmts.h)
MAX_ARGUMENTS_SIZE = STACK_SIZE // 4  # the kernel allows a quarter of RLIMIT_STACK for the strings
_PHDR_SIZE = 56
_E_PHOFF = struct.Struct("<Q")  # Elf64_Ehdr.e_phoff, at byte 32


class ExecError(GuestError):
    """An ``execve`` that fails; ``errno`` is what the kernel would return to the caller."""

    def __init__(self, path: str, problem: str, code: int):
        self.errno = code
        super().__init__(path, problem)


@dataclass(frozen=True)
class ElfFile:
    """An ELF file to map: its guest name, its host path, and what its headers say."""

    guest_path: str
    host_path: str
    info: ElfInfo
    e_phoff: int


@dataclass(frozen=True)
class PreparedExec:
    """A checked ``execve``: everything needed to replace the image, nothing done yet."""

    program: ElfFile
    interpreter: ElfFile | None
    argv: tuple[bytes, ...]
    envp: tuple[bytes, ...]
    execfn: bytes  # the file name execve was given (AT_EXECFN)


@dataclass(frozen=True)
class LoadedObject:
    """Where a file the kernel mapped was placed: ``base`` is added to every p_vaddr."""

    guest_path: str
    host_path: str
    base: int


@dataclass(frozen=True)
class LoadedImage:
    program: LoadedObject
    interpreter: LoadedObject | None
    entry: int  # where the first instruction runs: the interpreter's entry, or the program's
    stack_pointer: int
    brk: int


def find_program(paths: GuestPaths, name: str, search_path: str | None) -> str:
    """The guest path a shell would run for ``name``: a path as given, or the first match on the PATH."""
    if "/" in name:
        return name
    for directory in (search_path or "/usr/local/bin:/usr/bin:/bin").split(":"):
        candidate = f"{directory or '.'}/{name}"
        try:
            st = os.stat(paths.to_host(candidate, fallback=False))
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_mode & 0o111:
            return candidate
    raise ProgramNotFoundError(name, f"command not found on the PATH {search_path!r} in rootfs {paths.root}")


def prepare_exec(paths: GuestPaths, filename: str, argv: tuple[bytes, ...], envp: tuple[bytes, ...]) -> PreparedExec:
    """Check that ``filename`` can be executed, following ``#!`` lines; raises :class:`ExecError`."""
    execfn = os.fsencode(filename)
    strings = (*argv, *envp)
    if sum(len(s) + 1 for s in strings) > MAX_ARGUMENTS_SIZE or any(len(s) >= MAX_ARG_STRLEN for s in strings):
        raise ExecError(filename, "argument list too long", errno.E2BIG)
    for _ in range(MAX_SCRIPT_NESTING + 1):
        host_path = paths.to_host(filename, fallback=False)
        head = _read_head(filename, host_path)
        if head.startswith(b"#!"):
            interpreter, argument = _parse_shebang(filename, head)
            argv = (interpreter.encode(), *([argument] if argument else []), os.fsencode(filename), *argv[1:])
            filename = interpreter
            continue
        program = _elf_file(filename, host_path, errno.ENOEXEC)
        if program.info.e_type not in (ET_EXEC, ET_DYN):
            raise ExecError(filename, "not an executable", errno.ENOEXEC)
        interpreter_file = None
        if program.info.interp:
            interp = program.info.interp
            interp_host = paths.to_host(interp, fallback=False)
            if not os.path.exists(interp_host):
                raise _missing_interpreter(filename, interp, paths)
            try:
                interpreter_file = _elf_file(interp, interp_host, errno.ELIBBAD)
            except ExecError as e:
                raise InterpreterErrorWithErrno(filename, f"bad PT_INTERP {interp}: {e.problem}", e.errno) from None
            if interpreter_file.info.e_type != ET_DYN:
                raise InterpreterErrorWithErrno(filename, f"PT_INTERP {interp} is not a shared object", errno.ELIBBAD)
        return PreparedExec(program, interpreter_file, argv, envp, execfn)
    raise ExecError(filename, f"more than {MAX_SCRIPT_NESTING} nested #! interpreters", errno.ELOOP)


class InterpreterErrorWithErrno(ExecError, InterpreterError):
    """A missing or unusable PT_INTERP loader, with the errno execve returns for it."""


def _missing_interpreter(filename: str, interp: str, paths: GuestPaths) -> ExecError:
    where = "on this host" if paths.identity else f"in rootfs {paths.root}"
    return InterpreterErrorWithErrno(filename, f"its PT_INTERP loader {interp} does not exist {where}", errno.ENOENT)


def _read_head(filename: str, host_path: str) -> bytes:
    try:
        fd = os.open(host_path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ExecError(filename, "no such file", errno.ENOENT) from None
    except NotADirectoryError:
        raise ExecError(filename, "a component of the path is not a directory", errno.ENOTDIR) from None
    except OSError as e:
        raise ExecError(filename, f"cannot open: {e.strerror}", e.errno or errno.EACCES) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ExecError(filename, "not a regular file", errno.EACCES)
        if not st.st_mode & 0o111:
            raise ExecError(filename, "not executable (no x permission bit)", errno.EACCES)
        return os.pread(fd, BINPRM_BUF_SIZE, 0)
    finally:
        os.close(fd)


def _parse_shebang(filename: str, head: bytes) -> tuple[str, bytes]:
    """The interpreter and its one optional argument, as fs/binfmt_script.c splits the line."""
    line = head[2:].split(b"\n", 1)[0].strip(b" \t")
    if not line:
        raise ExecError(filename, "empty #! line", errno.ENOEXEC)
    interpreter, _, argument = line.replace(b"\t", b" ").partition(b" ")
    return os.fsdecode(interpreter), argument.strip(b" ")


def _elf_file(guest_path: str, host_path: str, bad_format_errno: int) -> ElfFile:
    try:
        info = read_elf(host_path, guest_path)
        with open(host_path, "rb") as f:
            header = f.read(64)
    except ElfError as e:
        raise ExecError(guest_path, e.problem, bad_format_errno) from None
    except OSError as e:
        raise ExecError(guest_path, f"cannot read: {e.strerror}", errno.EIO) from None
    return ElfFile(guest_path, host_path, info, _E_PHOFF.unpack_from(header, 32)[0])


# -- mapping ---------------------------------------------------------------------------


def _prot(p_flags: int) -> int:
    return ((PROT_READ if p_flags & PF_R else 0) | (PROT_WRITE if p_flags & PF_W else 0)
            | (PROT_EXEC if p_flags & PF_X else 0))


def _map_elf(memory: GuestMemory, elf: ElfFile) -> int:
    """Map every PT_LOAD of ``elf`` (load_elf_binary's elf_map + padzero + bss); returns the load base."""
    loads = elf.info.load_segments
    lo = host.page_down(min(s.p_vaddr for s in loads))
    hi = host.page_up(max(s.p_vaddr + s.p_memsz for s in loads))
    if elf.info.e_type == ET_DYN:
        # Let the host kernel find room for the whole image, then place segments in it.
        reserved = memory.map(0, hi - lo, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS)
        if reserved < 0:
            raise GuestError(elf.guest_path, f"no room for its {hi - lo:#x}-byte image: {host.strerror(-reserved)}")
        base, inside_reservation = reserved - lo, True
    else:
        base, inside_reservation = 0, False
    fd = os.open(elf.host_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        for s in loads:
            _map_segment(memory, elf, s, base, fd, inside_reservation)
    finally:
        os.close(fd)
    return base


def _map_segment(memory: GuestMemory, elf: ElfFile, s, base: int, fd: int, inside_reservation: bool) -> None:
    prot = _prot(s.p_flags)
    start = base + host.page_down(s.p_vaddr)
    file_end = base + s.p_vaddr + s.p_filesz
    mem_end = host.page_up(base + s.p_vaddr + s.p_memsz)
    if s.p_filesz:
        length = host.page_up(file_end) - start
        result = memory.map_fixed(start, length, prot, fd, host.page_down(s.p_offset),
                                  over_guest_pages=inside_reservation)
        _check(result, elf, start, length)
        if s.p_memsz > s.p_filesz and prot & PROT_WRITE and file_end & host.PAGE_MASK:
            # The rest of the last file page is .bss: it must read as zeros, not as file bytes.
            host.write_memory(file_end, bytes(host.page_up(file_end) - file_end))
        start = host.page_up(file_end)
    if mem_end > start:
        result = memory.map_fixed(start, mem_end - start, prot, over_guest_pages=inside_reservation)
        _check(result, elf, start, mem_end - start)


def _check(result: int, elf: ElfFile, start: int, length: int) -> None:
    if result >= 0:
        return
    if -result in (errno.EEXIST, errno.ENOMEM):
        taken = host.host_mapping_at(start) or next(
            (m for m in (host.host_mapping_at(a) for a in range(start, start + length, host.PAGE_SIZE)) if m), None)
        raise AddressSpaceCollisionError(
            elf.guest_path, f"its segment at {start:#x}-{start + length:#x} collides with the runtime's own "
                            f"memory ({taken or 'a host mapping'}); the host Python must be position-independent")
    raise GuestError(elf.guest_path, f"cannot map its segment at {start:#x}: {host.strerror(-result)}")


def _phdr_address(elf: ElfFile, base: int) -> int:
    """AT_PHDR: PT_PHDR's address, or where the PT_LOAD that holds e_phoff puts the table."""
    for s in elf.info.segments:
        if s.p_type == PT_PHDR:
            return base + s.p_vaddr
    for s in elf.info.load_segments:
        if s.p_offset <= elf.e_phoff < s.p_offset + s.p_filesz:
            return base + s.p_vaddr + elf.e_phoff - s.p_offset
    return 0


def load_image(memory: GuestMemory, prepared: PreparedExec, cpuid: CpuidModel) -> LoadedImage:
    """Map the program, its interpreter and a fresh stack, as ``execve`` leaves a process."""
    program = prepared.program
    base = _map_elf(memory, program)
    image_end = host.page_up(max(base + s.p_vaddr + s.p_memsz for s in program.info.load_segments))
    memory.brk_start = memory.brk_current = image_end
    interp_base = 0
    entry = base + program.info.e_entry
    if prepared.interpreter is not None:
        interp_base = _map_elf(memory, prepared.interpreter)
        entry = interp_base + prepared.interpreter.info.e_entry
    auxv = [
        (AT_HWCAP, cpuid.hwcap),
        (AT_PAGESZ, host.PAGE_SIZE),
        (AT_CLKTCK, os.sysconf("SC_CLK_TCK")),
        (AT_PHDR, _phdr_address(program, base)),
        (AT_PHENT, _PHDR_SIZE),
        (AT_PHNUM, len(program.info.segments)),
        (AT_BASE, interp_base),
        (AT_FLAGS, 0),
        (AT_ENTRY, base + program.info.e_entry),
        (AT_UID, os.getuid()),
        (AT_EUID, os.geteuid()),
        (AT_GID, os.getgid()),
        (AT_EGID, os.getegid()),
        (AT_SECURE, 0),
        (AT_HWCAP2, 0),
    ]
    sp = _build_stack(memory, prepared, auxv)
    interpreter = None
    if prepared.interpreter is not None:
        interpreter = LoadedObject(prepared.interpreter.guest_path, prepared.interpreter.host_path, interp_base)
    return LoadedImage(LoadedObject(program.guest_path, program.host_path, base), interpreter, entry, sp,
                       image_end)


def _build_stack(memory: GuestMemory, prepared: PreparedExec, auxv: list[tuple[int, int]]) -> int:
    """Map the main stack and lay out argc, argv, envp, auxv and the strings (psABI figure 3.9)."""
    limit = STACK_SIZE
    bottom = memory.map(0, limit, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | host.MAP_NORESERVE,
                        label="[stack]")
    if bottom < 0:
        raise GuestError(prepared.execfn.decode(errors="replace"), f"cannot map its stack: {host.strerror(-bottom)}")
    top = bottom + limit

    # The information block, top down as the kernel writes it: the file name,
    # the environment and argument strings, then AT_PLATFORM's string and AT_RANDOM's bytes.
    strings = bytearray()
    argv_offsets, envp_offsets = [], []
    for arg in prepared.argv:
        argv_offsets.append(len(strings))
        strings += arg + b"\0"
    for var in prepared.envp:
        envp_offsets.append(len(strings))
        strings += var + b"\0"
    execfn_offset = len(strings)
    strings += prepared.execfn + b"\0"
    strings_at = top - 8 - len(strings)  # 8 bytes of zeros end the stack, as on Linux
    platform_at = (strings_at - len(PLATFORM) - 1) & ~0xF
    random_at = platform_at - 16
    host.write_memory(strings_at, bytes(strings))
    host.write_memory(platform_at, PLATFORM + b"\0")
    host.write_memory(random_at, secrets.token_bytes(16))

    auxv = auxv + [(AT_RANDOM, random_at), (AT_EXECFN, strings_at + execfn_offset),
                   (AT_PLATFORM, platform_at), (AT_NULL, 0)]
    words = [len(prepared.argv)]
    words += [strings_at + o for o in argv_offsets] + [0]
    words += [strings_at + o for o in envp_offsets] + [0]
    for key, value in auxv:
        words += [key, value]
    sp = (random_at - 8 * len(words)) & ~0xF  # rsp is 16-byte aligned at the entry point
    host.write_memory(sp, struct.pack(f"<{len(words)}Q", *words))
    return sp
