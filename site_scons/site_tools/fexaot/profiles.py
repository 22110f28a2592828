"""Profiles as build inputs (``FILTER=speed-profile``): hot-set snapshots between profile files and caches.

What it builds, from what, how:

- ``FexaotHotSet``: ``$FEXAOT_OUT/profiles/<path in rootfs>.fexprof``, the
  thresholded hot set of one module (``fexaot_tool.profile.hotset``), from every
  ``*.fexprof`` file of the profile directories (``PROFILE_DIR`` and the
  ``profiles`` of every target file), merged once per scons run.  A Python
  action: it only reads profiles and writes one small file.
- The per-object cache of a module then has two sources, the ELF file and its
  snapshot, and is compiled with ``--profile <snapshot>``.

The snapshot is ``Precious`` (SCons does not delete it before the action runs),
because the action compares the new hot set with it: a gain below
``MIN_NEW_BLOCKS`` / ``MIN_NEW_PERCENT`` leaves the file as it is, so its
content signature, and with it the cache, stays up to date.  The action prints
one line per module whose snapshot changed or was held back; ``scons
--debug=explain`` names the snapshot as the cache's changed source.

Every directory named is read whatever targets are requested, so a shared
library's snapshot (and cache) does not depend on which apps a command line
names.
"""

from __future__ import annotations

import os
import sys
import threading

import SCons.Builder
import SCons.Errors

from fexaot_tool.cache.atomic import atomic_write
from fexaot_tool.errors import FexaotError
from fexaot_tool.profile import Profile, decode, encode, merge_profiles, read_profile
from fexaot_tool.profile.hotset import Thresholds, decide, hot_blocks, snapshot

from .packaging import StableAction

SUFFIX = ".fexprof"


class ProfileInputs:
    """The profile files of a build and, on first use, their merge (shared by every snapshot action)."""

    def __init__(self) -> None:
        self.dirs: list[str] = []
        self.files: list[str] = []
        self._merged: Profile | None = None
        self._lock = threading.Lock()

    def add_dir(self, path: str, named_by: str) -> None:
        """Add the ``*.fexprof`` files of ``path``; a directory that is not there is a clear error."""
        path = os.path.abspath(path)
        if path in self.dirs:
            return
        if not os.path.isdir(path):
            raise SCons.Errors.UserError(f"{path}: no such profile directory (named by {named_by})")
        self.dirs.append(path)
        self.files = sorted(set(self.files) | {os.path.join(path, n) for n in os.listdir(path)
                                               if n.endswith(SUFFIX) and os.path.isfile(os.path.join(path, n))})

    def merged(self) -> Profile:
        """Every profile file merged (CorruptProfileError, ProfileMergeError name the file)."""
        with self._lock:
            if self._merged is None:
                self._merged = merge_profiles(read_profile(f) for f in self.files)
            return self._merged


def _thresholds(env) -> Thresholds:
    try:
        t = Thresholds(int(env.subst("$HOT_THRESHOLD")), int(env.subst("$MIN_NEW_BLOCKS")),
                       float(env.subst("$MIN_NEW_PERCENT")))
    except ValueError as e:
        raise SCons.Errors.UserError(f"HOT_THRESHOLD, MIN_NEW_BLOCKS, MIN_NEW_PERCENT must be numbers: {e}") from None
    if t.hot_threshold < 1 or t.min_new_blocks < 0 or t.min_new_percent < 0:
        raise SCons.Errors.UserError("HOT_THRESHOLD must be at least 1; MIN_NEW_BLOCKS and MIN_NEW_PERCENT at least 0")
    return t


def _read_snapshot(path: str) -> Profile | None:
    """The snapshot on disk; None if there is none or it is unreadable (then it is simply replaced)."""
    try:
        with open(path, "rb") as f:
            return decode(f.read(), path)
    except (OSError, FexaotError):
        return None


def _hot_set(target, source, env) -> int:
    path = target[0].abspath
    guest_path, file_id, content_hash, name = target[0].attributes.fexaot_module
    thresholds = _thresholds(env)
    try:
        merged = env["FEXAOT_PROFILE_INPUTS"].merged()
        hot = hot_blocks(merged.module(file_id), thresholds.hot_threshold)
        decision = decide(_read_snapshot(path), file_id, hot, thresholds)
        if decision.replace:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            atomic_write(path, [encode(snapshot(file_id, content_hash, name, hot, thresholds.hot_threshold))])
    except FexaotError as e:
        print(f"fexaot profile: {e}", file=sys.stderr)
        return 1
    if decision.reason:
        print(f"profile {guest_path}: {decision.reason}")
    return 0


# The signature: a fixed text, the module's identity (a changed file needs a new
# snapshot) and the thresholds; the profile files are the sources.
hot_set_builder = SCons.Builder.Builder(
    action=StableAction(_hot_set, "fexaot-hot-set 1", None,
                        varlist=("FEXAOT_MODULE_HASH", "HOT_THRESHOLD", "MIN_NEW_BLOCKS", "MIN_NEW_PERCENT")))


def hot_set_target(env, inputs: ProfileInputs, out_dir: str, guest_path: str, identity, name: str):
    """The snapshot node of one module, its sources the profile files."""
    path = os.path.join(out_dir, "profiles", guest_path.lstrip("/") + SUFFIX)
    node = env.FexaotHotSet(target=env.fs.File(path), source=[env.fs.File(f) for f in inputs.files],
                            FEXAOT_MODULE_HASH=identity.content_hash.hex())[0]
    node.attributes.fexaot_module = (guest_path, identity.file_id, identity.content_hash, name)
    env.Precious(node)
    # Not from a CacheDir: a snapshot depends on the one already here (the hold-back rule), not
    # only on its signature, so another machine's would skip that decision.
    env.NoCache(node)
    return node
