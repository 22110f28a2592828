"""Errors of a guest run.  Each names the guest program and says what went wrong in one line."""

from __future__ import annotations

import signal

from fexaot_tool.errors import FexaotError


class GuestError(FexaotError):
    """A guest program could not be started or could not go on."""


class ProgramNotFoundError(GuestError):
    """The program is not an executable file in the rootfs."""


class InterpreterError(GuestError):
    """The program's PT_INTERP names a loader that is missing or not an x86-64 ELF file."""


class AddressSpaceCollisionError(GuestError):
    """A mapping the guest needs at a fixed address is taken by the runtime's own process."""


class UnsupportedSystemCallError(GuestError):
    """The guest made a system call the runtime does not implement (threads, an unknown number)."""


class GuestFault(GuestError):
    """The guest did what would make the kernel kill it with ``signo`` (a bad access, an invalid instruction).

    The runtime does not deliver such signals to guest handlers; it stops and
    reports, and ``fexaot run`` exits with 128 + ``signo`` as a shell reports a
    process killed by that signal.
    """

    def __init__(self, program: str, signo: int, what: str):
        self.signo = signo
        super().__init__(program, f"killed by {signal.Signals(signo).name}: {what}")

    @property
    def exit_status(self) -> int:
        return 128 + self.signo
