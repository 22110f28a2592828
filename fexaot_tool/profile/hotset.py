"""Hot-set snapshots: the thresholded part of a profile a speed-profile cache is built from.

A build does not recompile a module every time its profile changes (ART's
profman does not either).  Per module it keeps a *snapshot*: a one-module
profile of the blocks run at least ``hot_threshold`` times, each with count
``hot_threshold`` (so compiling from the snapshot selects exactly those).  A
new hot set replaces the snapshot only when it gains at least
``min_new_blocks`` blocks **and** at least ``min_new_percent`` % of the
snapshot's size (or the snapshot had no hot block); smaller changes are held back and the snapshot's bytes, and
so every cache built from it, stay as they are.  docs/profiles.md gives the
defaults and why.

Pure functions: the SCons tool reads and writes the files (atomically).
"""

from __future__ import annotations

from dataclasses import dataclass

from fexaot_tool.profile.format import ModuleProfile, Profile, make_module, make_profile

# A block that runs once still costs the runtime one translation, which is what a
# cache saves: one execution is enough to be worth translating ahead of time.
DEFAULT_HOT_THRESHOLD = 1
# Defaults, adapted from ART's profman figures (100 new methods, 2 %): in a traced
# run of python3.11 a function that ran executed ~10 (libc) to ~23 (python3.11)
# of its blocks, so 1,000 blocks is about 100 functions' worth of new code.
DEFAULT_MIN_NEW_BLOCKS = 1000
DEFAULT_MIN_NEW_PERCENT = 2.0


@dataclass(frozen=True)
class Thresholds:
    hot_threshold: int = DEFAULT_HOT_THRESHOLD  # executions that make a block hot
    min_new_blocks: int = DEFAULT_MIN_NEW_BLOCKS
    min_new_percent: float = DEFAULT_MIN_NEW_PERCENT


def hot_blocks(module: ModuleProfile | None, hot_threshold: int) -> frozenset[int]:
    """The block addresses ``module`` saw run at least ``hot_threshold`` times."""
    if module is None:
        return frozenset()
    return frozenset(vaddr for vaddr, count in module.blocks if count >= hot_threshold)


def snapshot(file_id: int, content_hash: bytes, name: str, hot: frozenset[int], hot_threshold: int) -> Profile:
    """The snapshot profile of one module: its hot blocks, each counted ``hot_threshold`` times."""
    return make_profile([make_module(file_id, content_hash, name, dict.fromkeys(hot, hot_threshold))])


@dataclass(frozen=True)
class Decision:
    replace: bool  # write the new snapshot
    reason: str  # one line for people; empty when nothing changed
    old_blocks: int
    new_blocks: int
    gained: int


def decide(old: Profile | None, file_id: int, hot: frozenset[int], thresholds: Thresholds) -> Decision:
    """Whether the hot set ``hot`` of module ``file_id`` replaces the snapshot ``old`` (None: no snapshot)."""
    new = len(hot)
    if old is None:
        return Decision(True, f"new snapshot: {new:,} hot blocks", 0, new, new)
    module = old.module(file_id)
    if module is None or len(old.modules) != 1:
        return Decision(True, f"the file changed: new snapshot of {new:,} hot blocks", 0, new, new)
    before = frozenset(vaddr for vaddr, _ in module.blocks)
    if any(count != thresholds.hot_threshold for _, count in module.blocks):
        # Made under another HOT_THRESHOLD: it means something else now.
        return Decision(True, f"HOT_THRESHOLD changed: {len(before):,} -> {new:,} hot blocks", len(before), new,
                        len(hot - before))
    if hot == before:
        return Decision(False, "", len(before), new, 0)
    if not before:
        # From no code to some: the whole hot set is the gain, always worth a compile.
        return Decision(True, f"first hot blocks: {new:,}", 0, new, new)
    gained = len(hot - before)
    percent = 100.0 * gained / len(before) if before else float("inf")
    change = f"hot set {len(before):,} -> {new:,} blocks (+{gained:,} new" + (
        f", +{percent:.1f}%)" if before else ")")
    if gained >= thresholds.min_new_blocks and percent >= thresholds.min_new_percent:
        return Decision(True, f"{change}: snapshot replaced", len(before), new, gained)
    return Decision(False, f"{change}: held back (a rebuild needs +{thresholds.min_new_blocks:,} new blocks "
                           f"and +{thresholds.min_new_percent:g}%)", len(before), new, gained)
