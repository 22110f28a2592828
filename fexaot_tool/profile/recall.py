"""How many of the block starts a run executed are block starts of the static codemap.

The codemap (``discover``) is passed in as the sorted list of its block
starts, so this layer does not import the layers above it.  A block start
that is not a codemap start may still be an instruction inside a codemap
block; :func:`recall` reports both.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

from fexaot_tool.profile.format import ModuleProfile


@dataclass(frozen=True)
class Recall:
    module: str
    executed: int  # distinct executed block starts
    found: int  # of those, codemap block starts
    inside: int  # of the others, inside a codemap block's bytes
    missed: tuple[int, ...]  # executed starts that are not codemap starts (sorted)
    executions: int  # block executions in the profile
    executions_found: int  # of those, at codemap block starts

    @property
    def ratio(self) -> float:
        return self.found / self.executed if self.executed else 1.0

    @property
    def execution_ratio(self) -> float:
        return self.executions_found / self.executions if self.executions else 1.0


def recall(module: ModuleProfile, starts: Sequence[int], ends: Sequence[int]) -> Recall:
    """``starts``/``ends``: the codemap's blocks as sorted starts and their end addresses."""
    found = inside = executions = executions_found = 0
    missed = []
    for vaddr, count in module.blocks:
        executions += count
        i = bisect.bisect_right(starts, vaddr) - 1
        if i >= 0 and starts[i] == vaddr:
            found += 1
            executions_found += count
            continue
        missed.append(vaddr)
        if i >= 0 and vaddr < ends[i]:
            inside += 1
    return Recall(module.name, len(module.blocks), found, inside, tuple(missed), executions, executions_found)
