"""Runtime layer: run x86-64 Linux programs from a rootfs on an x86-64 host, and record what ran.

Loader, guest memory (identity-mapped, shared with the CPU engine), system
calls, module map, profiler and the CPU engines behind one interface.  May
import ``cache``, ``profile``, ``elf`` and (later) ``translate``; nothing below
imports it.  docs/runtime.md describes it with the numbers measured on it.
"""

from fexaot_tool.runtime.errors import (
    AddressSpaceCollisionError,
    GuestError,
    GuestFault,
    InterpreterError,
    ProgramNotFoundError,
    UnsupportedSystemCallError,
)
from fexaot_tool.runtime.process import ENGINES, GuestProcess, RunOptions, RunResult, run_program

__all__ = [
    "AddressSpaceCollisionError", "GuestError", "GuestFault", "InterpreterError", "ProgramNotFoundError",
    "UnsupportedSystemCallError", "ENGINES", "GuestProcess", "RunOptions", "RunResult", "run_program",
]
