"""The CPU engine interface: what the runtime core needs from whatever executes guest code.

The core (loader, memory, system calls, module map, profiler) talks to an
engine only through :class:`Engine`, so the x86 reference engine (unicorn
x86-64) and the AArch64 engine (a64.py) are interchangeable.  The
guest is always x86-64: registers are named as in the x86 manual, and an
engine that does not run x86 code natively keeps them in its own state block.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from fexaot_tool.runtime.cpuid import CpuidModel

if TYPE_CHECKING:
    from fexaot_tool.runtime.modules import ExecRegion

SYSCALL_ARGUMENT_REGISTERS = ("rdi", "rsi", "rdx", "r10", "r8", "r9")
"""The x86-64 Linux system call convention: number in rax, arguments in these, result in rax."""

SystemCallHandler = Callable[[int, tuple[int, int, int, int, int, int]], int | None]
"""Called for each ``syscall`` instruction with (number, arguments); returns the value for rax,
or None when the handler has stopped the engine and rax does not matter."""


class EngineFault(Exception):
    """The guest did what makes the kernel send it ``signo`` at instruction ``pc``.

    The runtime adds the program's name and where ``pc`` is (module + vaddr) and reports it.
    """

    def __init__(self, signo: int, what: str, pc: int):
        self.signo = signo
        self.what = what
        self.pc = pc
        super().__init__(what)


@dataclass(frozen=True)
class BlockCount:
    """How many times the engine ran the block that starts at ``address`` and is ``size`` bytes long."""

    address: int
    size: int
    count: int


class Engine(ABC):
    """Executes guest code in guest memory that the runtime maps at the guest's own addresses."""

    name: ClassVar[str]

    @abstractmethod
    def __init__(self, cpuid: CpuidModel, on_syscall: SystemCallHandler) -> None: ...

    # -- memory: told about every guest mapping change (the host pages already exist) --------

    @abstractmethod
    def map(self, start: int, size: int, perms: int) -> None:
        """Make [start, start+size) accessible with ``perms`` (PROT_* bits), backed by the host pages there."""

    @abstractmethod
    def unmap(self, start: int, size: int) -> None: ...

    @abstractmethod
    def protect(self, start: int, size: int, perms: int) -> None: ...

    @abstractmethod
    def invalidate_code(self, start: int, end: int) -> None:
        """Forget translations of guest code in [start, end): the bytes there changed."""

    # -- state -------------------------------------------------------------------------

    @abstractmethod
    def reset_thread(self, pc: int, sp: int) -> None:
        """The state of a new process at its entry point: the System V psABI's, all other registers zero."""

    @abstractmethod
    def read_register(self, name: str) -> int: ...

    @abstractmethod
    def write_register(self, name: str, value: int) -> None: ...

    # -- running -----------------------------------------------------------------------

    @abstractmethod
    def run(self) -> None:
        """Run from the current pc until :meth:`stop`; raises :class:`EngineFault`."""

    @abstractmethod
    def stop(self) -> None:
        """Ask :meth:`run` to return once the current system call handler returns."""

    # -- profiling ---------------------------------------------------------------------

    @abstractmethod
    def enable_block_counting(self) -> None:
        """From now on, count every execution of every guest block."""

    @abstractmethod
    def take_block_counts(self) -> list[BlockCount]:
        """The counts since the last call (then reset), one entry per (start, size) seen."""

    def executable_mapped(self, region: ExecRegion) -> None:
        """The guest mapped executable code of ``region`` (an engine with caches installs them here)."""

    def statistics(self) -> Counter[str]:
        """Engine-specific counters since the last call (then reset), added to ``--stats``."""
        return Counter()

    def close(self) -> None:
        """Release the engine (its mappings of guest memory; never the guest pages themselves)."""
