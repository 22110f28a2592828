"""A guest process: one program image after another (execve), in this host process or a fork of it.

:class:`GuestProcess` ties the parts together: it loads an image, creates an
engine for it, observes guest memory (keeping the engine, the module map and
the profiler in step), implements the process-level system calls (exit,
execve, fork) and, when the guest exits, writes the profile and statistics.

A guest ``fork`` is a host ``fork`` of the whole runtime: the child has a copy
of the guest's memory at the same addresses, of the engine and of this
object, and returns 0 to the guest.  A forked child never returns to the
caller of :meth:`GuestProcess.run`: it ends with ``os._exit``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import struct
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

from fexaot_tool.cache.atomic import atomic_write
from fexaot_tool.profile import encode
from fexaot_tool.runtime import host
from fexaot_tool.runtime.a64 import A64Engine, A64Options
from fexaot_tool.runtime.cpuid import CpuidModel, baseline_model
from fexaot_tool.runtime.engine import Engine, EngineFault
from fexaot_tool.runtime.errors import GuestError, GuestFault, UnsupportedSystemCallError
from fexaot_tool.runtime.kernel import Kernel
from fexaot_tool.runtime.loader import ExecError, LoadedImage, PreparedExec, find_program, load_image, prepare_exec
from fexaot_tool.runtime.memory import GuestMemory, Mapping, engine_perms
from fexaot_tool.runtime.modules import ModuleMap
from fexaot_tool.runtime.paths import GuestPaths
from fexaot_tool.runtime.profiler import BlockProfiler
from fexaot_tool.runtime.stats import RunRecord, part_path
from fexaot_tool.runtime.x86 import X86Engine

ENGINES: dict[str, type[Engine]] = {X86Engine.name: X86Engine, A64Engine.name: A64Engine}

# clone(2) flags (<linux/sched.h>).
CLONE_FLAGS = {
    0x00000100: "CLONE_VM", 0x00000200: "CLONE_FS", 0x00000400: "CLONE_FILES", 0x00000800: "CLONE_SIGHAND",
    0x00001000: "CLONE_PIDFD", 0x00002000: "CLONE_PTRACE", 0x00004000: "CLONE_VFORK",
    0x00008000: "CLONE_PARENT", 0x00010000: "CLONE_THREAD", 0x00020000: "CLONE_NEWNS",
    0x00040000: "CLONE_SYSVSEM", 0x00080000: "CLONE_SETTLS", 0x00100000: "CLONE_PARENT_SETTID",
    0x00200000: "CLONE_CHILD_CLEARTID", 0x00400000: "CLONE_DETACHED", 0x00800000: "CLONE_UNTRACED",
    0x01000000: "CLONE_CHILD_SETTID", 0x02000000: "CLONE_NEWCGROUP", 0x04000000: "CLONE_NEWUTS",
    0x08000000: "CLONE_NEWIPC", 0x10000000: "CLONE_NEWUSER", 0x20000000: "CLONE_NEWPID",
    0x40000000: "CLONE_NEWNET", 0x80000000: "CLONE_IO",
}
_NAMED = {name: bit for bit, name in CLONE_FLAGS.items()}
# What a fork of the runtime gives the child anyway (own copies, or nothing to do).
_FORK_COMPATIBLE = (_NAMED["CLONE_SETTLS"] | _NAMED["CLONE_PARENT_SETTID"] | _NAMED["CLONE_CHILD_SETTID"]
                    | _NAMED["CLONE_CHILD_CLEARTID"] | _NAMED["CLONE_DETACHED"] | _NAMED["CLONE_UNTRACED"]
                    | _NAMED["CLONE_VFORK"] | _NAMED["CLONE_IO"])
CSIGNAL = 0xFF


def clone_flag_names(flags: int) -> str:
    names = [name for bit, name in CLONE_FLAGS.items() if flags & bit]
    if flags & CSIGNAL:
        names.append(str(flags & CSIGNAL))
    return "|".join(names) or "0"


@dataclass(frozen=True)
class RunOptions:
    rootfs: str = "/"
    engine: str = "x86"
    profile_out: str | None = None
    stats_out: str | None = None
    a64: A64Options = A64Options()  # caches and diagnostics of the a64 engine

    @property
    def counting(self) -> bool:
        """Blocks are counted only when someone will read the counts."""
        return bool(self.profile_out or self.stats_out)


@dataclass(frozen=True)
class RunResult:
    exit_status: int
    wall_seconds: float
    stats: dict | None  # the --stats document, when blocks or stats were asked for


class GuestProcess:
    def __init__(self, options: RunOptions, argv: list[str], environ: dict[bytes, bytes] | None = None):
        if options.engine not in ENGINES:
            raise GuestError(None, f"unknown engine {options.engine!r} (choose {', '.join(sorted(ENGINES))})")
        if not argv:
            raise GuestError(None, "no program given")
        if not os.path.isdir(options.rootfs):
            raise GuestError(options.rootfs, "rootfs is not a directory")
        for output in (options.profile_out, options.stats_out):
            # Checked before the guest runs, so a typo does not cost the run.
            if output and not os.path.isdir(os.path.dirname(os.path.abspath(output))):
                raise GuestError(output, "cannot write here: the directory does not exist")
        self.options = options
        self.paths = GuestPaths(options.rootfs)
        self.argv = argv
        env = os.environb if environ is None else environ
        self.envp = tuple(k + b"=" + v for k, v in env.items())
        self.cpuid: CpuidModel = baseline_model()
        self.memory = GuestMemory(self)
        self.module_map = ModuleMap(self.paths)
        self.record = RunRecord()
        self.profiler = BlockProfiler(self.module_map, self.record)
        self.kernel = Kernel(self)
        self.engine: Engine = None  # type: ignore[assignment]  # set for each image
        self.image: LoadedImage | None = None
        self.program = argv[0]  # names the guest in messages: the current image's file
        self.executable = argv[0]  # /proc/self/exe: the current image's resolved guest path
        self.exit_status: int | None = None
        self.pending_exec: PreparedExec | None = None
        self.children: list[int] = []
        self.is_forked_child = False

    # -- running -----------------------------------------------------------------------

    def run(self) -> RunResult:
        """Run the program to its exit; raises :class:`GuestError` for what stops it early."""
        started = time.perf_counter()
        search_path = dict(kv.split(b"=", 1) for kv in self.envp if b"=" in kv).get(b"PATH")
        program = find_program(self.paths, self.argv[0], os.fsdecode(search_path) if search_path else None)
        prepared = prepare_exec(self.paths, program, tuple(os.fsencode(a) for a in self.argv), self.envp)
        fault: GuestError | None = None
        try:
            with _guest_signal_dispositions():
                while True:
                    self._start_image(prepared)
                    try:
                        self.engine.run()
                    except EngineFault as f:
                        raise GuestFault(self.program, f.signo, f"{f.what} at rip {self._describe(f.pc)}") from None
                    if self.pending_exec is None:
                        break
                    prepared, self.pending_exec = self.pending_exec, None
                    self._end_image()
                    self.record.execs += 1
        except GuestError as e:
            fault = e
        except BaseException:
            if self.is_forked_child:
                os._exit(1)
            raise
        stats = self._finish(time.perf_counter() - started, fault)
        status = self.exit_status if self.exit_status is not None else _fault_status(fault)
        if self.is_forked_child:
            if fault is not None:
                print(f"fexaot run: {fault}", file=sys.stderr, flush=True)
            os._exit(status)
        self._release()
        if fault is not None:
            raise fault
        return RunResult(status, time.perf_counter() - started, stats)

    def _describe(self, address: int) -> str:
        """``0x7f...1129 (libfoo.so+0x1129)``: an address and where it is in the module map."""
        found = self.module_map.lookup(address)
        if found is None:
            return f"{address:#x}"
        region, vaddr = found
        return f"{address:#x} ({region.module.name}+{vaddr:#x})"

    def _start_image(self, prepared: PreparedExec) -> None:
        if self.options.engine == A64Engine.name:
            self.engine = A64Engine(self.cpuid, self.kernel.dispatch, self.options.a64, self.module_map)
        else:
            self.engine = ENGINES[self.options.engine](self.cpuid, self.kernel.dispatch)
        if self.options.counting:
            self.engine.enable_block_counting()
        self.program = prepared.program.guest_path
        self.executable = self.paths.to_guest(os.path.realpath(prepared.program.host_path))
        self.image = load_image(self.memory, prepared, self.cpuid)
        self.engine.reset_thread(self.image.entry, self.image.stack_pointer)

    def _end_image(self) -> None:
        if self.engine is None:
            return
        self.memory.unmap_all()
        self.module_map.clear()
        self.record.engine.update(self.engine.statistics())
        self.engine.close()
        self.engine = None  # type: ignore[assignment]
        self.kernel.after_exec()
        _close_on_exec_descriptors()

    def _release(self) -> None:
        """Give back the guest's memory and the engine (a caller in the same process may run another)."""
        if self.engine is not None:
            self.memory.unmap_all()
            self.module_map.clear()
            self.engine.close()
            self.engine = None  # type: ignore[assignment]

    def _finish(self, wall_seconds: float, fault: GuestError | None) -> dict | None:
        """Attribute the last counts, take in the children's records, write the outputs."""
        if self.engine is not None and self.options.counting:
            self.profiler.collect(self.engine)
        if self.engine is not None:
            self.record.engine.update(self.engine.statistics())
        self.record.syscalls.update(self.kernel.counts_by_name())
        self.kernel.counts.clear()
        self._adopt_children()
        if not self.options.counting:
            return None
        if self.is_forked_child:
            atomic_write(part_path(self._output_anchor(), os.getpid()), [self.record.to_part()])
            return None
        stats = self.record.stats_document(
            program=self.argv[0], argv=list(self.argv), rootfs=self.paths.root, engine=self.options.engine,
            exit_status=self.exit_status, fault=str(fault) if fault else None, wall_seconds=wall_seconds)
        if self.options.profile_out:
            atomic_write(self.options.profile_out, [encode(self.record.profile())])
        if self.options.stats_out:
            import json
            atomic_write(self.options.stats_out, [json.dumps(stats, indent=2).encode() + b"\n"])
        return stats

    def _output_anchor(self) -> str:
        return self.options.profile_out or self.options.stats_out or "fexaot-run"

    def _adopt_children(self) -> None:
        """Add the records that finished children left (a child that is still running is not waited for)."""
        if not self.options.counting:
            return
        for pid in self.children:
            path = part_path(self._output_anchor(), pid)
            try:
                with open(path, "rb") as f:
                    self.record.add(RunRecord.from_part(f.read()))
                os.unlink(path)
            except (OSError, ValueError, KeyError):
                continue
        self.children.clear()

    # -- process-level system calls ---------------------------------------------------------

    def exit(self, status: int) -> None:
        self.exit_status = status
        self.engine.stop()

    def execve(self, path: str, argv: tuple[bytes, ...], envp: tuple[bytes, ...]) -> int | None:
        try:
            self.pending_exec = prepare_exec(self.paths, path, argv, envp)
        except ExecError as e:
            return -e.errno
        self.engine.stop()
        return None

    def fork(self, flags: int, child_stack: int, parent_tid: int, child_tid: int, tls: int) -> int:
        vm = _NAMED["CLONE_VM"]
        if flags & _NAMED["CLONE_THREAD"] or (flags & vm and not flags & _NAMED["CLONE_VFORK"]):
            raise UnsupportedSystemCallError(self.program, f"clone({clone_flag_names(flags)}) creates a thread; "
                                                           "threads are not supported")
        # CLONE_VM|CLONE_VFORK (posix_spawn) shares memory only until the child
        # execs or exits, which a copy gives too; anything else that shares is refused.
        unsupported = flags & ~(_FORK_COMPATIBLE | CSIGNAL | (vm if flags & _NAMED["CLONE_VFORK"] else 0))
        if unsupported:
            raise UnsupportedSystemCallError(self.program, f"clone with {clone_flag_names(unsupported)} "
                                                           "is not supported (only fork-like clones are)")
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid:
            self.children.append(pid)
            if flags & _NAMED["CLONE_PARENT_SETTID"] and self.memory.writable(parent_tid, 4):
                host.write_memory(parent_tid, struct.pack("<i", pid))
            return pid
        # The child: a fresh record, and the guest's state as the kernel leaves a clone child.
        self.is_forked_child = True
        self.children = []
        self.engine.take_block_counts()
        self.engine.statistics()
        self.record = self.profiler.record = RunRecord()
        self.kernel.counts.clear()
        if child_stack:
            self.engine.write_register("rsp", child_stack)
        if flags & _NAMED["CLONE_SETTLS"]:
            self.engine.write_register("fs_base", tls)
        if flags & _NAMED["CLONE_CHILD_SETTID"] and self.memory.writable(child_tid, 4):
            host.write_memory(child_tid, struct.pack("<i", os.getpid()))
        if flags & _NAMED["CLONE_CHILD_CLEARTID"]:
            self.kernel.clear_child_tid = child_tid
        return 0

    # -- MemoryObserver ----------------------------------------------------------------------

    def changing(self, start: int, end: int) -> None:
        regions = [r for r in self.module_map.regions if r.start < end and r.end > start]
        if not regions:
            return
        if self.options.counting:
            self.profiler.collect(self.engine)
            self.profiler.forget_code(start, end)
        for r in regions:
            self.engine.invalidate_code(max(r.start, start), min(r.end, end))

    def mapped(self, mapping: Mapping) -> None:
        self.engine.map(mapping.start, mapping.end - mapping.start, engine_perms(mapping.prot))
        if mapping.executable:
            self.module_map.add(mapping)
            self._executable_mapped(mapping.start)

    def _executable_mapped(self, start: int) -> None:
        found = self.module_map.lookup(start)
        if found is not None:
            self.engine.executable_mapped(found[0])

    def unmapping(self, mapping: Mapping) -> None:
        if mapping.executable:
            self.module_map.remove(mapping.start, mapping.end)
        self.engine.unmap(mapping.start, mapping.end - mapping.start)

    def protected(self, before: Mapping, prot: int) -> None:
        self.engine.protect(before.start, before.end - before.start, engine_perms(prot))
        if before.executable:
            self.module_map.remove(before.start, before.end)
        if prot & host.PROT_EXEC:
            self.module_map.add(Mapping(before.start, before.end, prot, before.backing, before.label))
            self._executable_mapped(before.start)


def run_program(options: RunOptions, argv: list[str], environ: dict[bytes, bytes] | None = None) -> RunResult:
    """Run ``argv`` under the runtime; the guest's exit status is in the result."""
    return GuestProcess(options, argv, environ).run()


def _fault_status(fault: GuestError | None) -> int:
    if isinstance(fault, GuestFault):
        return fault.exit_status
    return 1


@contextlib.contextmanager
def _guest_signal_dispositions() -> Iterator[None]:
    """The host process is the guest's: give it the dispositions a freshly exec'd program has.

    Python ignores SIGPIPE and SIGXFSZ and catches SIGINT; a native program
    started from it (subprocess's default) has all three at SIG_DFL.
    """
    signals = (signal.SIGINT, signal.SIGPIPE, signal.SIGXFSZ)
    saved = {s: signal.getsignal(s) for s in signals}
    for s in signals:
        signal.signal(s, signal.SIG_DFL)
    try:
        yield
    finally:
        for s, handler in saved.items():
            if handler is not None:
                signal.signal(s, handler)


def _close_on_exec_descriptors() -> None:
    """execve closes the descriptors marked FD_CLOEXEC; the guest's are the process's own."""
    import fcntl

    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            if fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC:
                os.close(fd)
        except OSError:
            continue
