"""Stride scopes give the trie's answers through BPF_PROG_TEST_RUN: nested
prefixes of many lengths (/8 ... /32, /32 ... /128), each with its own rule,
and addresses at every boundary get the reference evaluator's verdict; the
encoder chose strides (nothing in the trie for that scope). A scope whose
lengths would expand past the budget keeps the trie, with the same answers,
and an update between the two modes switches with the generation."""

from __future__ import annotations

import ipaddress

import pytest

from hepbpf.loader import abi, encode
from hepbpf.loader.datapath import load_image
from hepbpf.loader.encode import content
from hepbpf.loader.mapnames import ADDR4, ADDR6

from ..addrscopes import compile_text, edge_addresses, kernel_verdicts, per_cidr_policy, source_scope, tcp_from

pytestmark = pytest.mark.bpf


@pytest.fixture(autouse=True)
def _no_dir(monkeypatch):
    """These scopes would be DIR scopes (test_dir_scopes.py): here the
    encoder's next choices, strides and the trie, are under test."""
    monkeypatch.setattr(encode, "dir_plan", lambda *a, **k: None)

V4 = ["10.9.9.33/32", "10.9.9.32/27", "10.9.9.0/24", "10.9.8.0/21", "10.9.0.0/16", "10.8.0.0/13", "10.0.0.0/8"]
V6 = ["2001:db8:1:80::1000:5/128", "2001:db8:1:80::1000:0/100", "2001:db8:1:80::/64", "2001:db8:1:80::/57",
      "2001:db8:1::/48", "2001:db8::/32"]
# More lengths than strides: past a budget of no expansion at all.
SPREAD = [str(ipaddress.ip_network(f"2001:db8:1:80::1000:5/{p}", strict=False))
          for p in (128, 120, 112, 100, 90, 80, 64, 57, 48, 40)]


def _compile(nets: list[str]):
    return compile_text(per_cidr_policy(nets))


def _packets(nets: list[str]) -> list[str]:
    return tcp_from(edge_addresses(nets))


def _check(dp, compiled, packets: list[str]) -> None:
    assert set(kernel_verdicts(dp, compiled, packets)) == {"allow", "deny"}


def test_nested_prefixes_in_strides_answer_as_the_reference():
    nets = V4 + V6
    a = _compile(nets)
    with load_image(a.image, trace=True) as dp:
        c = dp.enc.content
        for fam in (4, 6):
            sc = source_scope(c, fam)
            assert sc.mode == abi.const("HEP_SCOPE_STRIDES"), fam
            assert 1 <= sc.n <= abi.const("HEP_STRIDE_MAX") and sc.len[0] == (32 if fam == 4 else 128)
            assert sc.miss != abi.const("HEP_SCOPE_LOOKUP")  # the compiler's /0
        assert c.count(ADDR4) == 0 and c.count(ADDR6) == 0  # nothing left in the tries
        _check(dp, a, _packets(nets) + ["tcp 203.0.113.1:40000 -> 192.0.2.1:80",
                                        "tcp [2001:db9::1]:40000 -> [2001:db8::1]:80"])


def test_past_the_budget_the_scope_keeps_the_trie_and_updates_switch_modes(monkeypatch):
    monkeypatch.setattr(encode, "stride_budget", lambda n: n)
    spread, strided = _compile(SPREAD), _compile(V6)
    assert source_scope(content(spread.image), 6).mode == abi.const("HEP_SCOPE_TRIE")
    assert content(spread.image).count(ADDR6) >= len(SPREAD)
    with load_image(strided.image, trace=True) as dp:
        assert source_scope(dp.enc.content, 6).mode == abi.const("HEP_SCOPE_STRIDES")
        _check(dp, strided, _packets(V6) + _packets(SPREAD))

        res = dp.update(spread.image)  # strides -> trie, in the other generation
        assert not res.reloaded
        _check(dp, spread, _packets(SPREAD) + _packets(V6))

        res = dp.update(strided.image)  # and back
        assert not res.reloaded
        _check(dp, strided, _packets(V6) + _packets(SPREAD))
