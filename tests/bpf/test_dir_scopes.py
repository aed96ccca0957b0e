"""DIR scopes (multibit tries of arrays, hep_dir_v1) give the trie's answers
through BPF_PROG_TEST_RUN: nested prefixes of many lengths, each with its
own rule, and addresses at every boundary (inside and outside the bits all
prefixes share) get the reference evaluator's verdict; random prefix sets
too. An update rewrites only the entries that changed, and one that pushes
a scope past the DIR budget moves it to the trie in the other generation,
and back."""

from __future__ import annotations

import ipaddress
import random

import pytest

from hepbpf.loader import abi, encode
from hepbpf.loader.datapath import load_image
from hepbpf.loader.encode import content
from hepbpf.loader.mapnames import ADDR4, ADDR6, DIR, HOST4, HOST6

from ..addrscopes import (compile_text, edge_addresses, kernel_verdicts, netset_policy, per_cidr_policy, source_scope,
                          tcp_from)

pytestmark = pytest.mark.bpf

V4 = ["10.9.9.33/32", "10.9.9.32/27", "10.9.9.0/24", "10.9.8.0/21", "10.9.0.0/16", "10.8.0.0/13"]
V6 = ["2001:db8:1:80::1000:5/128", "2001:db8:1:80::1000:0/100", "2001:db8:1:80::/64", "2001:db8:1:80::/57",
      "2001:db8:1::/48", "2001:db8::/32"]


def _compile(nets: list[str]):
    return compile_text(per_cidr_policy(nets))


def _check(dp, compiled, packets: list[str]) -> set[str]:
    return set(kernel_verdicts(dp, compiled, packets))


def test_nested_prefixes_in_a_dir_answer_as_the_reference():
    nets = V4 + V6
    a = _compile(nets)
    with load_image(a.image, trace=True) as dp:
        c = dp.enc.content
        for fam, shared in ((4, 13), (6, 32)):  # 10.8.0.0/13 and 2001:db8::/32 hold all the others
            sc = source_scope(c, fam)
            assert sc.mode == abi.const("HEP_SCOPE_DIR"), fam
            assert sc.skip == shared, fam
            assert 1 <= sc.n <= abi.const("HEP_STRIDE_MAX") and sc.skip + sum(list(sc.len)[:sc.n]) < (32 if fam == 4 else 128)
            assert sc.miss != abi.const("HEP_SCOPE_LOOKUP")  # the compiler's /0: outside the shared bits
        assert not any(c.count(m) for m in (ADDR4, ADDR6, HOST4, HOST6))  # nothing in the tries or hashes
        assert c.count(DIR) == 2
        outside = ["203.0.113.1", "10.16.0.1", "2001:db9::1", "2001:db7:ffff::1"]
        assert _check(dp, a, tcp_from(edge_addresses(nets) + outside)) == {"allow", "deny"}


def _random_nets(rnd: random.Random, n: int, family: int) -> list[str]:
    width = 32 if family == 4 else 128
    base = int(ipaddress.ip_address("10.0.0.0" if family == 4 else "2001:db8::"))
    out = set()
    while len(out) < n:
        p = rnd.choice((rnd.randint(8, width), width, width - 8, 24 if family == 4 else 64))
        spread = rnd.choice((8, width // 2, width - 8))  # clustered or spread out
        a = base ^ rnd.getrandbits(spread)
        out.add(str(ipaddress.ip_network((a >> (width - p) << (width - p), p))))
    return sorted(out)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_prefix_sets_answer_as_the_reference(seed):
    rnd = random.Random(seed)
    nets = _random_nets(rnd, 40, 4) + _random_nets(rnd, 40, 6)
    rnd.shuffle(nets)
    a = _compile(nets)
    c = content(a.image)
    assert source_scope(c, 4).mode == abi.const("HEP_SCOPE_DIR")  # IPv6: DIR, or strides if too deep
    addrs = edge_addresses(nets)
    for fam, width, base in ((4, 32, "10.0.0.0"), (6, 128, "2001:db8::")):
        for _ in range(100):
            a_int = int(ipaddress.ip_address(base)) ^ rnd.getrandbits(rnd.choice((8, width // 2, width)))
            addrs.append(str(ipaddress.ip_address(a_int)))
    with load_image(a.image, trace=True) as dp:
        _check(dp, a, tcp_from(addrs))


def test_updates_write_what_changed_and_switch_modes(monkeypatch):
    nets = [f"10.0.{i}.0/24" for i in range(40)]
    a, b = (compile_text(netset_policy(n)) for n in (nets, nets[1:] + ["10.0.200.0/24"]))
    probes = tcp_from(["10.0.0.1", "10.0.200.1", "10.0.39.9", "10.0.99.1", "10.1.0.1"])
    with load_image(a.image, trace=True) as dp:
        gens = dp.generations
        assert source_scope(gens.held[gens.active], 4).mode == abi.const("HEP_SCOPE_DIR")
        res = dp.update(b.image)  # one /24 out, one in: their entries, not the scope's
        assert not res.reloaded and 2 <= res.written <= 8, res
        assert _check(dp, b, probes) == {"allow", "deny"}

        monkeypatch.setattr(encode, "dir_budget", lambda n: 0)
        monkeypatch.setattr(encode, "stride_budget", lambda n: 0)
        res = dp.update(a.image)  # DIR -> trie, in the other generation
        assert not res.reloaded, res.reason
        assert source_scope(gens.held[gens.active], 4).mode == abi.const("HEP_SCOPE_TRIE")
        _check(dp, a, probes)

        monkeypatch.undo()
        res = dp.update(b.image)  # and back
        assert not res.reloaded, res.reason
        assert source_scope(gens.held[gens.active], 4).mode == abi.const("HEP_SCOPE_DIR")
        _check(dp, b, probes)


def _site_nets(rnd: random.Random, n: int, family: int) -> list[str]:
    """CIDRs of many lengths inside 10.0.0.0/16 or 2001:db8::/48."""
    width, base, plen = (32, "10.0.0.0", 16) if family == 4 else (128, "2001:db8::", 48)
    lo = int(ipaddress.ip_address(base))
    out = set()
    while len(out) < n:
        p = rnd.choice((width, width, width - 4, width - 8, rnd.randint(plen + 2, width)))
        a = lo | rnd.getrandbits(width - plen)
        out.add(str(ipaddress.ip_network((a >> (width - p) << (width - p), p))))
    return sorted(out)


@pytest.mark.parametrize("seed", [1, 2])
def test_patched_scopes_answer_as_the_reference(seed, monkeypatch):
    """Updates changing a few CIDRs of a 600-CIDR set (nested, of many
    lengths, both families) patch the DIR scopes (loader/dirpatch.py)
    rather than build them again, and the kernel then answers the
    reference evaluator's verdict at the edges of every CIDR that changed
    and of others."""
    patched = []
    real = encode.patch

    def spy(*args):
        out = real(*args)
        patched.append(out is not None)
        return out

    monkeypatch.setattr(encode, "patch", spy)
    rnd = random.Random(seed)
    nets = sorted(set(_site_nets(rnd, 300, 4) + _site_nets(rnd, 300, 6)))
    a = compile_text(netset_policy(nets))
    verdicts = set()
    with load_image(a.image, trace=True) as dp:
        for _ in range(3):
            gone = set(rnd.sample(nets, 6))
            fresh = set(_site_nets(rnd, 4, 4) + _site_nets(rnd, 4, 6)) - set(nets)
            new = sorted((set(nets) - gone) | fresh)
            b = compile_text(netset_policy(new))
            res = dp.update(b.image)
            assert not res.reloaded, res.reason
            verdicts |= _check(dp, b, tcp_from(edge_addresses(sorted(gone | fresh) + rnd.sample(new, 20))))
            nets = new
    assert verdicts == {"allow", "deny"}
    assert sum(patched) >= 3, patched
