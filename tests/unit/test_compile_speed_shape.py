"""The scale benchmark's policy (bench/scale.py) and what the fast compiler
paths must keep: the policy really is 10,000 rules and 100,000 CIDRs, its
MapImage has the entries the policy implies, and the fast paths (libyaml
events, the CIDR reader) give exactly what the reference paths give. No
timing is asserted here: `python -m hepbpf.bench.scale` measures."""

import ipaddress
import random
from pathlib import Path

import pytest

from hepbpf.bench import scale
from hepbpf.compiler import compile_policy, netparse, yamlsrc
from hepbpf.compiler.mapimage import CHAIN_EGRESS, CHAIN_INGRESS, SIDE_DST, SIDE_SRC
from hepbpf.compiler.yamlsrc import load_documents

from ..gen import Gen

# The default failsafes (9 each way), two conntrack and one forward steering
# slot, the end-of-tier denies of security and default, no-profile and
# forward-allow.
STEERING_SLOTS = 9 + 2 + 1 + 2 + 1 + 1


@pytest.fixture(scope="module")
def big():
    text, shape = scale.generate()
    return text, shape, compile_policy([("scale.yaml", text)], node=scale.NODE, iface=scale.IFACE)


def test_the_scale_policy_is_ten_thousand_rules_and_a_hundred_thousand_cidrs(big):
    _, shape, comp = big
    ps = comp.policy_set
    assert shape.rules == scale.N_RULES == 10_000 and shape.cidrs == scale.N_CIDRS == 100_000
    assert sum(len(p.ingress) + len(p.egress) for p in ps.policies) == 10_000
    nets = [n for s in ps.network_sets for n in s.nets]
    assert len(nets) == len(set(nets)) == 100_000
    assert sum(n.version == 4 for n in nets) == shape.v4_cidrs == 80_000
    actions = {r.action for p in ps.policies for r in p.ingress + p.egress}
    assert actions == {"Allow", "Deny", "Log", "Pass"}
    protocols = {r.protocol.name for p in ps.policies for r in p.ingress + p.egress if r.protocol}
    assert protocols == {"TCP", "UDP", "ICMP", "ICMPv6"}
    assert {t.name for t in ps.tiers} == {"security", "platform"}


def test_the_generator_is_deterministic():
    assert scale.policy_text(300, 2000) == scale.policy_text(300, 2000)
    assert scale.policy_text(300, 2000) != scale.policy_text(300, 2000, seed=7)


def test_the_map_image_holds_what_the_policy_implies(big):
    _, shape, comp = big
    img = comp.image
    per_chain = {c: [s for s in img.slots if s.chain == c] for c in (CHAIN_INGRESS, CHAIN_EGRESS)}
    assert len(per_chain[CHAIN_INGRESS]) == shape.ingress_rules + STEERING_SLOTS
    assert len(per_chain[CHAIN_EGRESS]) == shape.egress_rules + STEERING_SLOTS
    assert [s.slot for s in per_chain[CHAIN_INGRESS]] == list(range(len(per_chain[CHAIN_INGRESS])))
    assert img.nwords == -(-(shape.ingress_rules + STEERING_SLOTS) // 64)
    assert sum(s.action == "Log" for s in img.slots) == shape.log_rules

    # Every network set is selected by some rule of each direction, so each
    # scope's LPM entries are the sets' CIDRs and the rules' own nets on the
    # remote side, and a /0 if none of them is one.
    ps = comp.policy_set
    set_nets = {n for s in ps.network_sets for n in s.nets}
    for chain, side, direction in ((CHAIN_INGRESS, SIDE_SRC, "ingress"), (CHAIN_EGRESS, SIDE_DST, "egress")):
        rule_nets = {n for p in ps.policies for r in getattr(p, direction)
                     for ent in ((r.source,) if side == SIDE_SRC else (r.destination,))
                     for n in ent.nets + ent.not_nets}
        for fam in (4, 6):
            want = {n for n in set_nets | rule_nets if n.version == fam}
            got = [e.net for e in img.addr if (e.chain, e.side, e.net.version) == (chain, side, fam)]
            assert len(got) == len(set(got))
            assert set(got) - want == {ipaddress.ip_network("0.0.0.0/0" if fam == 4 else "::/0")}
            assert len(got) == len(want) + 1
    # the local side of each chain holds no CIDR: only the /0 of each family
    local = [e for e in img.addr if (e.chain, e.side) in ((CHAIN_INGRESS, SIDE_DST), (CHAIN_EGRESS, SIDE_SRC))]
    assert sorted(str(e.net) for e in local) == ["0.0.0.0/0", "0.0.0.0/0", "::/0", "::/0"]

    assert len(img.proto) == 2 * 2 * 256
    assert img.classes[0] == 0 and len(set(img.classes)) == len(img.classes)
    used = {e.klass for e in img.addr} | {e.klass for e in img.proto} | {s.klass for s in img.ports}
    assert used <= set(range(len(img.classes)))
    stride = img.nwords * 64
    assert all(0 <= v < 1 << stride for v in img.classes)


# --- the fast paths give what the reference paths give ------------------------

SEEDS = sorted((Path(__file__).parent.parent / "seeds").glob("*.yaml"))


def test_libyaml_is_there():
    """PyYAML (with libyaml) is a dependency: without it the fast path is
    silently gone and a 3 MB policy takes seconds to read."""
    assert yamlsrc._libyaml is not None


def _reference(text: str, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(yamlsrc, "_libyaml", None)
        return load_documents(text, source="p.yaml")


@pytest.mark.parametrize("text", [
    scale.policy_text(200, 3000),
    *(p.read_text() for p in SEEDS),
    *(Gen(seed).draw(0).text for seed in range(10)),
    "a:\nb: 1\nc:   # comment\nd:\n  - \ne: [10:20, '80', 80, 0o17, 1e3, .inf, ~, null, true, 2001:db8::/64]\n",
    "lit: |\n  x\n\n  y\nfold: >-\n  a\n  b\nq: 'it''s'\ndq: \"a\\tb\\u00e9\"\n",
    "---\n---\na: {b: [c, {d: e}], f: []}\n---\n# only a comment\n",
    "\r\n".join(["k: v", "m:", "  - 1", "  - x", ""]),
])
def test_libyaml_path_builds_the_same_nodes(text, monkeypatch):
    fast = yamlsrc._Fast(text, "p.yaml").stream()  # raises _Fallback if it would not be taken
    assert fast == _reference(text, monkeypatch)
    assert load_documents(text, source="p.yaml") == fast


@pytest.mark.parametrize("text", [
    "a: 1\na: 2\n", "a: on\n", "a: [0777]\n", "a: &x 1\nb: *x\n", "a: !!str 1\n", "%YAML 1.2\n---\na: 1\n",
    "f: >#\n  a\n", "a: ['x':y]\n", "a: 1\n...\n...\n", "a:\tb\n", "a: 1e999\n", "? [a]\n: b\n", "<<: 1\n",
    "a: # comment at the end", "{a: }",
])
def test_libyaml_path_leaves_the_rest_to_ruamel(text, monkeypatch):
    """Errors, and what libyaml and ruamel read differently, go the
    reference way: same result, same messages."""
    def outcome(fn):
        try:
            return fn()
        except yamlsrc.PolicyError as e:
            return [str(d) for d in e.diagnostics]
    with pytest.raises(Exception) as e:
        if not yamlsrc._plain_text(text):
            raise yamlsrc._Fallback
        yamlsrc._Fast(text, "p.yaml").stream()
    assert e.type in (yamlsrc._Fallback, yamlsrc._pyyaml.YAMLError) or issubclass(e.type, yamlsrc._pyyaml.YAMLError)
    assert outcome(lambda: load_documents(text, source="p.yaml")) == outcome(lambda: _reference(text, monkeypatch))


def _ip_network(text: str):
    try:
        net = ipaddress.ip_network(text, strict=False)
        return net, ipaddress.ip_interface(text).ip == net.network_address
    except ValueError as e:
        return type(e), str(e)


def _fast(text: str):
    try:
        net, exact = netparse.network_exact(text)
        assert netparse.network(text) == net
        return net, exact
    except ValueError as e:
        return type(e), str(e)


def test_cidr_reader_agrees_with_ipaddress():
    r = random.Random(6)
    texts = ["10.0.0.0/8", "192.0.2.1", "0.0.0.0/0", "1.2.3.4/31", "255.255.255.255/32", "2001:db8::/32", "::",
             "::/0", "1::", "1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7::", "::2:3:4:5:6:7:8", "2001:DB8::aB/64",
             "::ffff:192.0.2.1", "10.0.0.0/255.0.0.0", "10.0.0.0/0.255.255.255", "10.0.0.0/08", "010.0.0.1",
             "1.2.3.4/33", "1.2.3.4/", "1.2.3", "1..2.3", "2001:db8::/129", "1:2:3:4:5:6:7:8:9", "1::2::3",
             "12345::", ":1::", "1::2:", "1:2:3:4:5:6:7:8::", "::1:2:3:4:5:6:7:8", "fe80::1%eth0", " 10.0.0.1",
             "10.0.0.1 ", "256.0.0.1", "10.0.0.1/32/1", "", "/", "::/", "1e3", "0x10.0.0.1"]
    for _ in range(3000):
        t = r.choice(texts)
        for _ in range(r.randint(0, 2)):
            i = r.randint(0, len(t))
            t = t[:i] + r.choice("0123456789abcdefABCDEF:./ ") + t[i + 1:] if r.random() < 0.5 else t[:i] + t[i + 1:]
        texts.append(t)
    for _ in range(2000):
        if r.random() < 0.5:
            texts.append(f"{ipaddress.IPv4Address(r.getrandbits(32))}/{r.randint(0, 32)}")
        else:
            texts.append(f"{ipaddress.IPv6Address(r.getrandbits(128) >> r.choice((0, 64, 100)))}/{r.randint(0, 128)}")
    for t in texts:
        got, want = _fast(t), _ip_network(t)
        assert got == want, t
        if isinstance(want[0], ipaddress._BaseNetwork):
            assert type(got[0]) is type(want[0]) and hash(got[0]) == hash(want[0]) and str(got[0]) == str(want[0])
            assert vars(got[0]).keys() == vars(want[0]).keys()
    assert netparse._build is netparse._fast_network  # the check at import passed on this Python
