"""DIR scopes, in Python: a walk of the encoder's blocks (the shared-prefix
check, then one entry per level, as bpf/include/stride.bpf.h walks them)
answers what a longest-prefix match answers, for random sets of IPv4 and
IPv6 prefixes, clustered or spread, with and without a /0; the plan fits
its budget, covers exactly the longest prefix, keeps each level inside one
32-bit word, and gives up (None) where no plan of 8 levels fits."""

from __future__ import annotations

import random

import pytest

from hepbpf.loader import abi
from hepbpf.loader.encode import dir_blocks, dir_budget, dir_plan, dir_prefix

from ..addrscopes import dir_walk, lpm


def _cls(i: int) -> bytes:
    return i.to_bytes(4, "little")


def _random_set(rnd: random.Random, width: int) -> dict[int, dict[int, bytes]]:
    by_len: dict[int, dict[int, bytes]] = {}
    if rnd.random() < 0.8:
        by_len[0] = {0: _cls(1)}
    base = rnd.getrandbits(width)
    spread = rnd.choice((width // 4, width // 2, width))
    for i in range(rnd.choice((1, 2, 5, 20, 200))):
        p = rnd.choice((rnd.randint(1, width), width, width - 8, rnd.randint(width // 2, width)))
        a = base ^ rnd.getrandbits(spread) if rnd.random() < 0.9 else rnd.getrandbits(width)
        by_len.setdefault(p, {})[a >> (width - p) << (width - p)] = _cls(100 + i)
    return by_len


@pytest.mark.parametrize("width", [32, 128])
def test_walk_answers_as_longest_prefix_match(width):
    rnd = random.Random(width)
    planned = 0
    for _ in range(150):
        by_len = _random_set(rnd, width)
        plan = dir_plan(by_len, width)
        if plan is None:
            continue
        planned += 1
        skip, levels = plan
        longest = max(p for p in by_len if p)
        assert skip + sum(levels) <= longest and 0 <= skip < longest
        assert all(1 <= s <= abi.const("HEP_DIR_BITS_MAX") for s in levels) and len(levels) <= 8
        ends = [skip + sum(levels[:i + 1]) for i in range(len(levels))]
        assert all(b // 32 == (e - 1) // 32 for b, e in zip([skip] + ends, ends))  # one word per level
        blob = dir_blocks(by_len, skip, levels, width)
        assert len(blob) <= dir_budget(sum(len(g) for p, g in by_len.items() if p))
        prefix = dir_prefix(by_len, skip, width)
        zero = int.from_bytes(by_len[0][0], "little") if 0 in by_len else None
        probes = [rnd.getrandbits(width) for _ in range(40)]
        for p, g in by_len.items():
            for a in g:
                lo, hi = a, a + (1 << (width - p)) - 1
                probes += [lo, hi, max(lo - 1, 0), min(hi + 1, (1 << width) - 1)]
        for a in probes:
            assert dir_walk(blob, skip, levels, prefix, width, a, zero) == lpm(by_len, width, a), hex(a)
    assert planned >= 50  # most of these small sets get a DIR


def test_shared_bits_are_skipped():
    site = int.from_bytes(bytes.fromhex("20010db8") + bytes(12), "big")  # 2001:db8::/32
    top = 0x8005 << 80  # 2001:db8:8005::/48: differs from the /128 at bit 32
    by_len = {0: {0: _cls(1)}, 48: {site | top: _cls(2)}, 64: {site | top | 7 << 64: _cls(3)},
              128: {site | 9: _cls(4)}}
    skip, levels = dir_plan(by_len, 128)
    assert skip == 32 and skip + sum(levels) <= 128
    assert dir_prefix(by_len, skip, 128) == [0x20010DB8, 0, 0, 0]


def test_spread_prefixes_end_in_records_and_dense_ones_in_one_array():
    rnd = random.Random(7)
    by_len = {128: {rnd.getrandbits(128): _cls(i) for i in range(50)}}
    skip, levels = dir_plan(by_len, 128)  # 50 /128s anywhere: a first level parts them, records do the rest
    assert len(levels) == 1 and levels[0] <= 16
    blob = dir_blocks(by_len, skip, levels, 128)
    assert len(blob) <= (1 << levels[0]) + 50 * 8
    for a in by_len[128]:
        assert dir_walk(blob, skip, levels, dir_prefix(by_len, skip, 128), 128, a, None) == lpm(by_len, 128, a)
    dense = {32: {(10 << 24) | i: _cls(2) for i in range(100_000)}, 0: {0: _cls(1)}}
    skip, levels = dir_plan(dense, 32)  # 100,000 neighbouring /32s: one array after the shared bits
    assert (skip, levels) == (15, (17,))


def test_records_count_in_the_plan():
    """100,000 /32s at every other address: one 18-bit level (2^18
    entries, each a leaf) beats one of 17 bits with a record per prefix
    (2^17 + 800,000 entries), both one level deep."""
    spaced = {32: {(10 << 24) | 2 * i: _cls(2) for i in range(100_000)}, 0: {0: _cls(1)}}
    skip, levels = dir_plan(spaced, 32)
    assert skip + sum(levels) == 32 and len(levels) == 1
    assert len(dir_blocks(spaced, skip, levels, 32)) == 1 << levels[0]
