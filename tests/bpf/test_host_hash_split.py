"""Full-length prefixes live in the host hash, the rest in the trie, and
together they answer what the trie alone would: a /32 (/128) and the /24
(/64) covering it, with different rules, give each address its own verdict
through BPF_PROG_TEST_RUN, also after an update that removes the /32 (its
hash entry must go, or the address would keep the /32's rule)."""

from __future__ import annotations

import sys

import pytest

from hepbpf.loader import encode
from hepbpf.loader.datapath import load_image
from hepbpf.loader.encode import Placement, lpm_prefixlen_of
from hepbpf.loader.mapnames import ADDR4, ADDR6, HOST4, HOST6

from ..addrscopes import compile_text, kernel_verdicts
from ..cases import gnp, hep

pytestmark = pytest.mark.bpf


@pytest.fixture(autouse=True)
def _no_dir(monkeypatch):
    """Small scopes are DIR scopes (test_dir_scopes.py): here the hash and
    trie split, what a scope past the DIR budget gets, is under test."""
    monkeypatch.setattr(encode, "dir_plan", lambda *a, **k: None)

WITH_HOST = hep() + gnp("p", """
selector: all()
ingress:
- {action: Deny, protocol: TCP, source: {nets: [198.51.100.7/32]}}
- {action: Deny, protocol: TCP, source: {nets: ["2001:db8:1::7/128"]}}
- {action: Allow, protocol: TCP, source: {nets: [198.51.100.0/24]}}
- {action: Allow, protocol: TCP, source: {nets: ["2001:db8:1::/64"]}}
""")
WITHOUT_HOST = hep() + gnp("p", """
selector: all()
ingress:
- {action: Deny, protocol: TCP, source: {nets: [198.51.100.9/32]}}
- {action: Allow, protocol: TCP, source: {nets: [198.51.100.0/24]}}
- {action: Allow, protocol: TCP, source: {nets: ["2001:db8:1::/64"]}}
""")
PACKETS = ["tcp 198.51.100.7:40000 -> 192.0.2.1:80", "tcp 198.51.100.8:40000 -> 192.0.2.1:80",
           "tcp 198.51.100.9:40000 -> 192.0.2.1:80", "tcp 203.0.113.1:40000 -> 192.0.2.1:80",
           "tcp [2001:db8:1::7]:40000 -> [2001:db8::1]:80", "tcp [2001:db8:1::8]:40000 -> [2001:db8::1]:80"]


def _check(dp, compiled) -> list[str]:
    return kernel_verdicts(dp, compiled, PACKETS)


def _host_keys(dp, name: str, gen: int) -> set[bytes]:
    """The keys generation ``gen`` holds in a host hash, as the kernel has them."""
    off = 2  # struct hep_host{4,6}_key: chain, side, gen
    return {k for k in dp.obj.map(name).keys() if k[off] == gen}


def test_host_entry_beats_covering_prefix_and_goes_with_update():
    a, b = compile_text(WITH_HOST), compile_text(WITHOUT_HOST)
    with load_image(a.image, trace=True) as dp:
        c = dp.enc.content
        assert c.count(HOST4) >= 1 and c.count(HOST6) >= 1  # the /32 and /128 went to the hashes
        assert lpm_prefixlen_of(32) not in {int.from_bytes(k[:4], sys.byteorder) for k in c.maps[ADDR4]}
        assert lpm_prefixlen_of(128) not in {int.from_bytes(k[:4], sys.byteorder) for k in c.maps[ADDR6]}
        assert _check(dp, a) == ["deny", "allow", "allow", "deny", "deny", "allow"]
        for gen in (0, 1):  # both generations hold it
            assert _host_keys(dp, HOST4, gen) == {Placement(dp.enc.capacity, gen).lpm_key(HOST4, k)
                                                  for k in c.maps[HOST4]}

        res = dp.update(b.image)
        # the /128 of the generation written (the /32's block stays, with the
        # /24's class, where the /24 is expanded to /32s)
        assert not res.reloaded and res.deleted >= 1
        assert _check(dp, b) == ["allow", "allow", "deny", "deny", "allow", "allow"]
        assert not [k for k in _host_keys(dp, HOST6, res.generation) if k[3] == 128]  # plen: no /128 left

        res = dp.update(a.image)  # and back, into the other generation
        assert not res.reloaded
        assert _check(dp, a) == ["deny", "allow", "allow", "deny", "deny", "allow"]
