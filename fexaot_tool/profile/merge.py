"""Combining profiles, as ART's profman merges the profiles of many runs.

The merge of profiles is the per-(FileId, vaddr) sum of counts, so it is
associative and commutative: merging in any order or grouping gives the same
profile, and the same bytes once encoded.  A module's name is the smallest of
the names it was recorded under, for the same reason.
"""

from __future__ import annotations

from collections.abc import Iterable

from fexaot_tool.profile.format import MAX_COUNT, ModuleProfile, Profile, ProfileMergeError, make_profile


def merge_profiles(profiles: Iterable[Profile]) -> Profile:
    by_id: dict[int, tuple[bytes, str, dict[int, int]]] = {}
    for profile in profiles:
        for m in profile.modules:
            entry = by_id.get(m.file_id)
            if entry is None:
                by_id[m.file_id] = (m.content_hash, m.name, dict(m.blocks))
                continue
            content_hash, name, counts = entry
            if content_hash != m.content_hash:
                raise ProfileMergeError(m.name, f"FileId {m.file_id:016x} names two different file contents "
                                                f"({content_hash.hex()} and {m.content_hash.hex()})")
            for vaddr, count in m.blocks:
                total = counts.get(vaddr, 0) + count
                if total > MAX_COUNT:
                    raise ProfileMergeError(m.name, f"the count of block {vaddr:#x} overflows 64 bits")
                counts[vaddr] = total
            if m.name < name:
                by_id[m.file_id] = (content_hash, m.name, counts)
    return make_profile(ModuleProfile(file_id, content_hash, name, tuple(sorted(counts.items())))
                        for file_id, (content_hash, name, counts) in by_id.items())
