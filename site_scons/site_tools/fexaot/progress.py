"""Build progress: which object is being built and how many fexaot targets remain.

SCons calls :meth:`BuildProgress.evaluated` for every target it considers (built
or up to date) and substitutes :meth:`BuildProgress.line` as the command string
of every fexaot action it runs.
"""

from __future__ import annotations

import threading

import SCons.Subst


class BuildProgress:
    def __init__(self) -> None:
        self.targets: set = set()
        self._seen: set = set()
        self._lock = threading.Lock()

    def add(self, node) -> None:
        self.targets.add(node)

    def evaluated(self, node) -> None:
        if node in self.targets:
            with self._lock:
                self._seen.add(node)

    def line(self, verb: str, what, target):
        with self._lock:
            done = len(self._seen)
        total = len(self.targets)
        width = len(str(total))
        # Literal: SCons must not substitute a '$' that a file name may hold.
        return SCons.Subst.Literal(f"[{done:>{width}}/{total}] {verb} {what}  ({total - done} remaining)")
