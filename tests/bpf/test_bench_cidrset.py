"""The CIDR-set benchmark compares like with like: its plain trie and
hepbpf's layout of the set (a DIR scope, or host hash + trie, as the
encoder chooses) give the longest-prefix match a Python reference computes, for set members and for other addresses, and
the check that guards the timing does fail on a wrong answer."""

import pytest

from hepbpf.bench import cidrset

pytestmark = pytest.mark.bpf


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("mix", ["members", "uniform"])
def test_both_lookups_agree_with_the_reference(family, mix):
    nets = cidrset.cidr_set(family, 3000, seed=family)
    assert 0 < sum(n.prefixlen == n.max_prefixlen for n in nets) < len(nets)  # both maps hold entries
    keys = cidrset.random_keys(nets, family, mix, count=4096, seed=family)
    ref = cidrset.Reference(nets)
    obj = cidrset._load(family, nets, keys)
    try:
        for prog in ("bench_xdp_cidr_lpm", "bench_xdp_cidr_split"):
            cidrset.check(obj, prog, keys, ref, family, runs=64)
    finally:
        obj.close()


def test_the_check_catches_a_wrong_answer():
    nets = cidrset.cidr_set(4, 500, seed=1)
    keys = cidrset.random_keys(nets, 4, "members", count=1024, seed=1)
    ref = cidrset.Reference(nets)
    assert any(ref(k) == len(nets) - 1 for k in keys)  # some key falls in the last entry
    obj = cidrset._load(4, nets[:-1], keys)  # which the maps lack
    try:
        with pytest.raises(AssertionError, match="differ from the reference"):
            cidrset.check(obj, "bench_xdp_cidr_lpm", keys, ref, 4, runs=16)
    finally:
        obj.close()
