"""First matches far into the rule vector, after many hops, agree with the
reference evaluator.

Five tiers of 1,600 rules hold Log rules and end in a Pass, so a packet
hops through a dozen slots (conntrack, forward, then Logs and a Pass per
tier) before a sixth tier decides it, mostly past slot 8,192: the scan of
that hop reads three summary words. A tenth of the rules are decoys that
take every packet's source and no packet's port, so the source classes
have bits in nearly every word while the four classes' AND has bits in
few: many words are candidates for some summaries and not for all four.
"""

import ipaddress
import random

import pytest

from hepbpf.compiler import compile_policy, evaluate, parse_spec
from hepbpf.compiler.mapimage import CHAIN_INGRESS
from hepbpf.loader.datapath import load_image

from ..cases import gnp, hep
from ..gen import IFACE, NODE

pytestmark = pytest.mark.bpf

TIERS, RULES, PACKETS = 6, 1600, 240
NET4, NET6 = ipaddress.ip_network("10.20.0.0/16"), ipaddress.ip_network("2001:db8:20::/48")
PORTS, DECOY_PORTS = (1000, 3000), (5000, 6000)
FIELDS = ("verdict", "reason", "stage", "tier", "policy", "rule", "notes")


def _rule(rnd: random.Random, action: str) -> dict:
    net = NET4 if rnd.random() < 0.5 else NET6
    if rnd.random() < 0.1:
        # A decoy: every packet's source, ports no packet uses. The source
        # classes get bits in nearly every word, the port classes do not.
        return {"action": action, "proto": rnd.choice(("TCP", "UDP")), "src": net,
                "ports": (rnd.randint(*DECOY_PORTS),) * 2}
    plen = rnd.randint(net.prefixlen + 6, net.max_prefixlen)
    host = int(net.network_address) + rnd.getrandbits(net.max_prefixlen - net.prefixlen)
    cidr = ipaddress.ip_network((host >> (net.max_prefixlen - plen) << (net.max_prefixlen - plen), plen))
    lo = rnd.randint(*PORTS)
    return {"action": action, "proto": rnd.choice(("TCP", "UDP")), "src": cidr, "ports": (lo, lo + rnd.randint(0, 50))}


def _yaml(r: dict) -> str:
    lo, hi = r["ports"]
    return (f"- action: {r['action']}\n  protocol: {r['proto']}\n  source: {{nets: [{r['src']}]}}\n"
            f"  destination: {{ports: [\"{lo}:{hi}\"]}}")


def _policy(rnd: random.Random) -> tuple[str, list[dict]]:
    """The policy text, and the last tier's rules (the packets aim at them)."""
    text = hep()
    last = []
    for t in range(TIERS):
        text += f"\napiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {{name: t{t}}}\nspec: {{order: {t + 1}}}\n---\n"
        rules = [_rule(rnd, "Deny") for _ in range(RULES)]
        body = [_yaml(r) for r in rules]
        if t < TIERS - 1:
            # Log rules between the rules (each a noted hop), then a Pass.
            for net in ("2001:db8:20::/49", "10.20.0.0/17"):
                body.insert(2 * RULES // 3, f"- action: Log\n  source: {{nets: [{net}]}}")
            body.insert(RULES // 3, "- action: Log")
            body.append("- action: Pass")
        else:
            for r in rules[::2]:
                r["action"] = "Allow"
            body = [_yaml(r) for r in rules]
            last = rules
        text += gnp(f"p{t}", f"tier: t{t}\nselector: all()\ningress:\n" + "\n".join(body))
    return text, last


def _packets(rnd: random.Random, last: list[dict]) -> list[str]:
    out = []
    for i in range(PACKETS):
        if i % 4 == 3:  # anywhere in the rules' space: mostly no rule, the last tier's end
            net = NET4 if i % 8 == 3 else NET6
            src = net.network_address + rnd.getrandbits(net.max_prefixlen - net.prefixlen)
            proto, port = rnd.choice(("tcp", "udp")), rnd.randint(*PORTS)
        else:  # inside one of the last tier's rules
            r = rnd.choice(last)
            src = r["src"].network_address + rnd.randrange(r["src"].num_addresses)
            proto, port = r["proto"].lower(), rnd.randint(*r["ports"])
        if src.version == 4:
            out.append(f"{proto} {src}:40000 -> 192.0.2.1:{port}")
        else:
            out.append(f"{proto} [{src}]:40000 -> [2001:db8::1]:{port}")
    return out


@pytest.fixture(scope="module")
def far():
    rnd = random.Random(7)
    text, last = _policy(rnd)
    comp = compile_policy([("far.yaml", text)], node=NODE, iface=IFACE)
    return comp, _packets(rnd, last)


def test_far_matches_agree_with_reference(far, capsys):
    comp, specs = far
    view = comp.views[CHAIN_INGRESS]
    slot_of = {(s.tier, s.policy, s.rule): s.slot for s in comp.image.slots if s.chain == CHAIN_INGRESS}
    far_slots, hops = [], []
    with load_image(comp.image, trace=True) as dp:
        for spec in specs:
            pkt = parse_spec(spec)
            want = evaluate(view, pkt).as_json()
            got = dp.explain(pkt)
            assert {f: got[f] for f in FIELDS} == {f: want[f] for f in FIELDS}, spec
            slot = slot_of.get((got["tier"], got["policy"], got["rule"]))
            if got["tier"] == f"t{TIERS - 1}" and slot is not None:
                far_slots.append(slot)
                hops.append(len(got["notes"]))
    with capsys.disabled():
        print(f"\nfar matches: {comp.image.nwords} words; {len(far_slots)} of {len(specs)} packets decided "
              f"in the last tier (slots {min(far_slots)}-{max(far_slots)}), after up to {max(hops)} Log notes")
    # The point of the test: many decisions past two summary words, after notes.
    assert comp.image.nwords > 128
    assert sum(s >= 128 * 64 for s in far_slots) >= PACKETS // 4
    assert max(hops) == 2 * (TIERS - 1)
