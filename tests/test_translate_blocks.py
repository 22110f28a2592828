"""Real blocks of the host's libc, translated and run against unicorn x86-64 from random states.

A quick stand-in for ``fexaot validate`` (which samples thousands of blocks):
pages a block touches are mapped on demand with the same bytes on both engines.
"""

from __future__ import annotations

import os
import random

import pytest

from fexaot_tool.cache.compile import guest_code
from fexaot_tool.discover import ElfImage
from fexaot_tool.discover import build_codemap

LIBC = "/lib/x86_64-linux-gnu/libc.so.6"


@pytest.mark.skipif(not os.path.exists(LIBC), reason="needs the host's libc")
def test_random_libc_blocks_match_x86() -> None:
    from translate_harness import ModuleDiffer

    guest = guest_code(ElfImage(LIBC), 0)
    blocks = random.Random(2024).sample(build_codemap(LIBC).blocks, 150)
    differ = ModuleDiffer(guest)
    compared = sum(differ.check(b.start, b.length, states=4, seed=b.start) for b in blocks)
    assert compared > 400  # most states map (the rest touch non-canonical addresses)
