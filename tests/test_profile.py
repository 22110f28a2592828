"""The profile format, merging (associative, commutative), summaries, recall, and their CLI."""

from __future__ import annotations

import itertools
import random
import struct
from pathlib import Path

import pytest
import xxhash

from fexaot_tool.cli import main
from fexaot_tool.profile import (
    CorruptProfileError,
    ProfileMergeError,
    decode,
    encode,
    make_module,
    make_profile,
    merge_profiles,
    read_profile,
    recall,
    summarize,
)
from fexaot_tool.profile.format import MAX_COUNT


def content_hash(seed: int) -> bytes:
    return xxhash.xxh3_128_digest(seed.to_bytes(8, "little"))


def module(seed: int, counts: dict[int, int], name: str | None = None):
    h = content_hash(seed)
    return make_module(int.from_bytes(h[:8], "big"), h, name or f"lib{seed}.so", counts)


def random_profile(rng: random.Random):
    modules = []
    for seed in rng.sample(range(6), rng.randint(0, 4)):
        counts = {rng.randrange(0x1000, 0x1400) * 4: rng.randint(1, 1 << 40) for _ in range(rng.randint(1, 60))}
        modules.append(module(seed, counts, name=rng.choice([f"lib{seed}.so", f"alias{seed}"])))
    return make_profile(modules)


def test_round_trip_and_layout() -> None:
    profile = make_profile([module(2, {0x1040: 3, 0x1000: 1}), module(1, {0x400000: 7})])
    data = encode(profile)
    assert decode(data) == profile
    magic, version, header_size, count, size = struct.unpack_from("<8sHHIQ", data)
    assert (magic, version, header_size, count, size) == (b"FXPROF\r\n", 1, 48, 2, len(data))
    assert [m.file_id for m in profile.modules] == sorted(m.file_id for m in profile.modules)
    assert profile.modules[[m.name for m in profile.modules].index("lib2.so")].blocks == ((0x1000, 1), (0x1040, 3))
    assert len(data) == 48 + 2 * 48 + 16 + 3 * 16  # header, table, names padded to 16, blocks
    assert encode(decode(data)) == data


def test_empty_profile_round_trips() -> None:
    assert decode(encode(make_profile([]))).modules == ()


@pytest.mark.parametrize("damage", ["truncate", "flip", "magic", "version", "append"])
def test_corrupt_profiles_are_rejected_with_the_file_name(damage: str) -> None:
    data = bytearray(encode(make_profile([module(1, {0x10: 1, 0x20: 2})])))
    if damage == "truncate":
        data = data[:-5]
    elif damage == "flip":
        data[-3] ^= 0x40
    elif damage == "magic":
        data[0:2] = b"XX"
    elif damage == "version":
        data[8] = 9
    else:
        data += b"\0" * 16
    with pytest.raises(CorruptProfileError) as info:
        decode(bytes(data), "some.fexprof")
    assert str(info.value).startswith("some.fexprof: ")


def test_merge_is_associative_and_commutative() -> None:
    rng = random.Random(20240607)
    for _ in range(30):
        a, b, c = (random_profile(rng) for _ in range(3))
        reference = encode(merge_profiles([merge_profiles([a, b]), c]))
        assert encode(merge_profiles([a, merge_profiles([b, c])])) == reference
        for order in itertools.permutations([a, b, c]):
            assert encode(merge_profiles(order)) == reference


def test_merge_adds_counts_and_keeps_the_smallest_name() -> None:
    a = make_profile([module(1, {0x10: 1, 0x20: 5}, "libz.so.1.2.13")])
    b = make_profile([module(1, {0x20: 2, 0x30: 1}, "libz-copy.so"), module(3, {0x99: 4})])
    merged = merge_profiles([a, b])
    by_name = {m.name: m for m in merged.modules}
    assert by_name["libz-copy.so"].blocks == ((0x10, 1), (0x20, 7), (0x30, 1))
    assert by_name["lib3.so"].blocks == ((0x99, 4),)


def test_merge_refuses_one_file_id_with_two_contents_and_overflow() -> None:
    h = content_hash(1)
    other = h[:8] + bytes(8)
    a = make_profile([make_module(int.from_bytes(h[:8], "big"), h, "a", {1: 1})])
    b = make_profile([make_module(int.from_bytes(h[:8], "big"), other, "a", {1: 1})])
    with pytest.raises(ProfileMergeError):
        merge_profiles([a, b])
    big = make_profile([module(1, {0x10: MAX_COUNT})])
    with pytest.raises(ProfileMergeError):
        merge_profiles([big, make_profile([module(1, {0x10: 1})])])


def test_summary_orders_modules_and_blocks_by_executions() -> None:
    profile = make_profile([module(1, {0x10: 5, 0x20: 50, 0x30: 50}), module(2, {0x40: 1000})])
    cold, hot = summarize(profile, top=2)[::-1]
    assert hot.module.name == "lib2.so" and hot.executions == 1000
    assert [(b.vaddr, b.count) for b in cold.hottest] == [(0x20, 50), (0x30, 50)]
    assert cold.share == pytest.approx(105 / 1105)


def test_recall_counts_starts_and_instructions_inside_blocks() -> None:
    m = module(1, {0x100: 10, 0x108: 1, 0x200: 5, 0x300: 2})
    starts, ends = [0x100, 0x200], [0x110, 0x210]
    r = recall(m, starts, ends)
    assert (r.executed, r.found, r.inside, r.missed) == (4, 2, 1, (0x108, 0x300))
    assert r.ratio == 0.5 and r.execution_ratio == pytest.approx(15 / 18)


def test_cli_merge_and_show(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    paths = []
    for i, counts in enumerate(({0x10: 1, 0x20: 2}, {0x20: 3}, {0x30: 9})):
        path = tmp_path / f"p{i}.fexprof"
        path.write_bytes(encode(make_profile([module(1, counts)])))
        paths.append(str(path))
    out = tmp_path / "merged.fexprof"
    assert main(["profile", "merge", *paths, "-o", str(out)]) == 0
    assert read_profile(str(out)).modules[0].blocks == ((0x10, 1), (0x20, 5), (0x30, 9))
    capsys.readouterr()
    assert main(["profile", "show", str(out), "--top", "2", "--json"]) == 0
    import json
    shown = json.loads(capsys.readouterr().out)
    assert [b["vaddr"] for b in shown[0]["hottest"]] == ["0x30", "0x20"]


def test_cli_rejects_a_corrupt_profile_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.fexprof"
    bad.write_bytes(b"not a profile")
    assert main(["profile", "show", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{bad}: not a valid fexaot profile" in err
