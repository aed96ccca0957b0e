"""What the address-scope tests share (tests/bpf/test_dir_scopes.py,
test_stride_scopes.py, test_host_hash_split.py): a policy with one rule per
source CIDR, the addresses at each CIDR's edges, the encoder's scope header
of a content, and the kernel's verdicts checked against the reference
evaluator."""

from __future__ import annotations

import ipaddress

from hepbpf.compiler import compile_policy, evaluate, parse_spec
from hepbpf.compiler.mapimage import CHAIN_INGRESS
from hepbpf.loader import abi
from hepbpf.loader.mapnames import SCOPE

from .cases import gnp, hep


def per_cidr_policy(nets: list[str]) -> str:
    """One TCP rule per source CIDR, in the order given, Deny and Allow
    alternating, so neighbouring CIDRs give different verdicts."""
    rules = []
    for i, n in enumerate(nets):
        action = "Deny" if i % 2 == 0 else "Allow"
        rules.append(f'- {{action: {action}, protocol: TCP, source: {{nets: ["{n}"]}}}}')
    return hep() + gnp("p", "selector: all()\ningress:\n" + "\n".join(rules) + "\n")


def netset_policy(nets: list[str], allow: str = "source: {nets: [10.0.0.0/16]}") -> str:
    """The CIDRs as one GlobalNetworkSet, denied by a policy that then
    allows TCP matching ``allow`` (by default, the rest of 10.0.0.0/16)."""
    body = "\n".join(f"  - {n}" for n in nets)
    netset = f"""
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata:
  name: many
  labels: {{role: many}}
spec:
  nets:
{body}
---
"""
    return hep() + netset + gnp("p", f"""
selector: all()
ingress:
- {{action: Deny, protocol: TCP, source: {{selector: role == 'many'}}}}
- {{action: Allow, protocol: TCP, {allow}}}
""")


def compile_text(text: str):
    return compile_policy([("p.yaml", text)], node="n1", iface="eth1")


def edge_addresses(nets: list[str]) -> list[str]:
    """Each CIDR's first, last and middle address and its two neighbours."""
    out = []
    for c in nets:
        n = ipaddress.ip_network(c)
        lo, hi = int(n.network_address), int(n.broadcast_address)
        for a in (lo, hi, lo - 1, hi + 1, (lo + hi) // 2):
            out.append(str(ipaddress.ip_address(a)))
    return out


def tcp_from(addrs: list[str]) -> list[str]:
    """A TCP packet spec from each address to the host endpoint."""
    return [f"tcp [{a}]:40000 -> [2001:db8::1]:80" if ":" in a else f"tcp {a}:40000 -> 192.0.2.1:80"
            for a in addrs]


def source_scope(content, family: int):
    """The ingress source scope's struct hep_scope in a Content."""
    sides = abi.const("HEP_SIDE_MAX")
    key = ((CHAIN_INGRESS * sides + abi.const("HEP_SIDE_SRC")) * 2 + (family == 6)).to_bytes(4, "little")
    return abi.unpack("struct hep_scope", content.maps[SCOPE][key])


def kernel_verdicts(dp, compiled, packets: list[str]) -> list[str]:
    """The kernel's verdict of each packet, each asserted equal (the whole
    explanation) to the reference evaluator's."""
    view = compiled.views[CHAIN_INGRESS]
    verdicts = []
    for spec in packets:
        pkt = parse_spec(spec)
        got = dp.explain(pkt)
        assert got == evaluate(view, pkt).as_json(), spec
        verdicts.append(got["verdict"])
    return verdicts


def dir_walk(blob, skip: int, levels, prefix: list[int], width: int, a: int, zero: int | None):
    """The class a DIR scope's entries (``blob``, its plan and shared
    prefix) give address ``a`` (an int), walked as stride.bpf.h walks
    them; None where no prefix holds it (``zero``: the /0's class)."""
    leaf, miss, record = abi.const("HEP_DIR_LEAF"), abi.const("HEP_DIR_MISS"), abi.const("HEP_DIR_RECORD")
    shared = sum(w << (96 - 32 * i) for i, w in enumerate(prefix))
    if skip and ((a << (128 - width)) ^ shared) >> (128 - skip):
        return zero
    node, off = 0, skip
    for s in levels:
        e = blob[node + ((a >> (width - off - s)) & ((1 << s) - 1))]
        if e & record and not e & leaf:  # a compare record
            at = e & ~record
            assert at % 8 == 0
            words, plen, inside, outside = blob[at:at + 4], blob[at + 4], blob[at + 5], blob[at + 6]
            pfx = sum(w << (96 - 32 * i) for i, w in enumerate(words))
            e = outside if ((a << (128 - width)) ^ pfx) >> (128 - plen) else inside
        if e & leaf:
            return None if e == miss else e & ~leaf
        node, off = e, off + s
    raise AssertionError("no leaf within the levels")


def lpm(by_len, width: int, a: int):
    """The longest-prefix match of ``a`` in ``by_len`` (length -> network
    address -> class bytes): its class as an int, or None."""
    for p in sorted(by_len, reverse=True):
        hit = by_len[p].get(a >> (width - p) << (width - p) if p else 0)
        if hit is not None:
            return int.from_bytes(hit, "little")
    return None
