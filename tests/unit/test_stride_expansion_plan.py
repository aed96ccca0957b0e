"""Controlled prefix expansion, in Python: the stride lookup (longest
stride first, first hit, else the /0) answers what a longest-prefix match
answers, for nested prefixes of many lengths and for random sets; the
planner picks the fewest strides within the budget, and gives up (the scope
keeps the trie) when even the most strides would expand past it."""

from __future__ import annotations

import ipaddress
import random
from collections import Counter

import pytest

from hepbpf.bench import cidrset

from hepbpf.loader.encode import STRIDE_LOOKUPS, expand_prefixes, stride_budget, stride_plan


def _by_len(nets) -> dict[int, dict[int, int]]:
    out: dict[int, dict[int, int]] = {}
    for i, n in enumerate(nets):
        out.setdefault(n.prefixlen, {})[int(n.network_address)] = i
    return out


def _lpm(by_len, width: int, a: int):
    for p in sorted(by_len, reverse=True):
        hit = by_len[p].get(a & ~((1 << (width - p)) - 1))
        if hit is not None:
            return hit
    return None


def _strided(blocks, by_len, strides, width: int, a: int):
    for s in strides:  # longest first
        hit = blocks[s].get(a & ~((1 << (width - s)) - 1))
        if hit is not None:
            return hit
    return by_len.get(0, {}).get(0)


def _boundaries(nets):
    for n in nets:
        lo, hi = int(n.network_address), int(n.broadcast_address)
        yield from (lo, hi, max(lo - 1, 0), min(hi + 1, (1 << n.max_prefixlen) - 1), (lo + hi) // 2)


NESTED = {
    4: ["0.0.0.0/0", "10.0.0.0/8", "10.8.0.0/13", "10.9.0.0/16", "10.9.8.0/21", "10.9.9.0/24", "10.9.9.32/27",
        "10.9.9.33/32", "10.200.0.0/16", "10.9.9.0/32"],
    6: ["::/0", "2001:db8::/32", "2001:db8:1::/48", "2001:db8:1:80::/57", "2001:db8:1:80::/64",
        "2001:db8:1:80::1000:0/100", "2001:db8:1:80::1000:5/128", "2001:db8:2::/48"],
}


@pytest.mark.parametrize("family", [4, 6])
def test_nested_prefixes_answer_as_the_trie(family):
    nets = [ipaddress.ip_network(c) for c in NESTED[family]]
    width = nets[0].max_prefixlen
    by_len = _by_len(nets)
    for k in range(1, STRIDE_LOOKUPS + 1):
        strides = stride_plan({p: len(g) for p, g in by_len.items()}, k)
        if strides is None:
            continue
        assert strides[0] == width and 0 not in strides and list(strides) == sorted(strides, reverse=True)
        blocks = expand_prefixes(by_len, strides, width)
        for a in _boundaries(nets):
            assert _strided(blocks, by_len, strides, width, a) == _lpm(by_len, width, a), (k, strides, hex(a))


@pytest.mark.parametrize("seed", range(6))
def test_random_sets_answer_as_the_trie(seed):
    r = random.Random(seed)
    family = 4 if seed % 2 == 0 else 6
    width = 32 if family == 4 else 128
    lens = sorted(r.sample(range(1, width + 1), r.randint(2, 9)))
    kind = ipaddress.IPv4Network if family == 4 else ipaddress.IPv6Network
    nets = {kind((0, 0))} if seed % 3 else set()
    base = r.getrandbits(width)
    for _ in range(300):
        p = r.choice(lens)
        # near one base address, so prefixes nest and overlap
        a = base ^ (r.getrandbits(min(width, lens[-1] + 2)) << max(0, width - lens[-1] - 2) if r.random() < 0.7
                    else r.getrandbits(width))
        nets.add(kind((a & ~((1 << (width - p)) - 1) & ((1 << width) - 1), p)))
    nets = sorted(nets)
    by_len = _by_len(nets)
    strides = stride_plan({p: len(g) for p, g in by_len.items()})
    if strides is None:
        pytest.skip("past the budget")  # the trie's case: covered below
    blocks = expand_prefixes(by_len, strides, width)
    assert sum(map(len, blocks.values())) <= stride_budget(len(nets))
    for a in list(_boundaries(nets)) + [r.getrandbits(width) for _ in range(500)]:
        assert _strided(blocks, by_len, strides, width, a) == _lpm(by_len, width, a), hex(a)


def test_plan_is_fewest_strides_then_fewest_entries():
    # 1,000 /32s, 1,000 /24s, 10 /20s: two strides fit (/20 -> /24: 16 each)
    assert stride_plan({32: 1000, 24: 1000, 20: 10, 0: 1}) == (32, 24)
    # only present lengths, the longest always; the /0 is never a stride
    assert stride_plan({0: 1, 128: 5}) == (128,)
    assert stride_plan({0: 1}) == ()
    # lengths far apart (2^28 blocks a merge) need a stride each: four fit
    assert stride_plan({128: 1, 100: 1, 72: 1, 44: 1}, 4) == (128, 100, 72, 44)
    assert stride_plan({128: 1, 100: 1, 72: 1, 44: 1, 16: 1}, 4) is None


def test_past_the_budget_the_scope_keeps_the_trie():
    spread = {16 + 17 * i: 1 for i in range(7)}  # 16, 33, ..., 118: any merge expands >= 2^17
    assert stride_plan(spread, 6) is None
    assert stride_plan(spread, 7) == tuple(sorted(spread, reverse=True))
    # the benchmark's IPv6 set: 81 lengths, too many for the strides
    nets = cidrset.cidr_set(6, 20_000)
    assert stride_plan(Counter(n.prefixlen for n in nets), STRIDE_LOOKUPS) is None
