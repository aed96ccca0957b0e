"""YAML is read as 1.2 with a position for every node; nothing is coerced:
the YAML 1.1 traps are either read the 1.2 way or refused."""

import pytest

from hepbpf.compiler import PolicyError, parse
from hepbpf.compiler.ir import PortRange
from hepbpf.compiler.yamlsrc import load_documents, to_plain

POLICY = """apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {{name: p}}
spec:
  ingress:
  - action: Allow
    protocol: TCP
    destination:
      ports: [{ports}]
"""


def test_unquoted_port_range_is_a_range_not_sexagesimal():
    ps = parse(POLICY.format(ports="10:20, 30000:32767"), source="p.yaml")
    ports = ps.policies[0].ingress[0].destination.ports
    assert [(p.lo, p.hi) for p in ports] == [(10, 20), (30000, 32767)]
    assert all(isinstance(p, PortRange) for p in ports)


def test_core_schema_values():
    (doc,) = load_documents('a: [10:20, "80", 80, 1e3, 0x1F, 0o17, true, ~, "", 1_000, 0b11, .inf]\n', source="t")
    assert to_plain(doc) == {"a": ["10:20", "80", 80, 1000.0, 31, 15, True, None, "", "1_000", "0b11",
                                   float("inf")]}
    assert [n.quoted for n in doc.get("a").items[:3]] == [False, True, False]


@pytest.mark.parametrize("text, reason", [
    ("a: [0777]\n", "ambiguous number with a leading zero"),
    ("a: on\n", "ambiguous: YAML 1.1 reads this word as a boolean"),
    ("a: 1\na: 2\n", "duplicate key (first at line 1)"),
    ("%YAML 1.1\n---\na: 1\n", "YAML 1.1 is not accepted"),
    ("a: &x [1]\nb: {<<: *x}\n", "merge keys (<<) are not part of YAML 1.2"),
    ("a: [1\n", "YAML:"),
    ("a: !custom 1\n", "unknown tag !custom"),
    ("a: !!int x\n", "not a valid !!int"),
])
def test_refused(text, reason):
    with pytest.raises(PolicyError) as e:
        load_documents(text, source="t.yaml")
    assert reason in str(e.value)


def test_positions_across_documents():
    docs = load_documents("# c\n---\na: 1\n---\n---\nb:\n  c: [x, {d: deep}]\n", source="t.yaml")
    assert len(docs) == 2
    deep = docs[1].get("b").get("c").items[1].get("d")
    assert (deep.value, deep.span.line, deep.span.col) == ("deep", 7, 14)


def test_quoted_port_and_number_port_are_the_same():
    a = parse(POLICY.format(ports="80"), source="p")
    b = parse(POLICY.format(ports='"80"'), source="p")
    pa, pb = a.policies[0].ingress[0].destination.ports, b.policies[0].ingress[0].destination.ports
    assert [(p.lo, p.hi) for p in pa] == [(p.lo, p.hi) for p in pb] == [(80, 80)]


def test_alias_expansion_is_capped(monkeypatch):
    from hepbpf.compiler import yamlsrc

    monkeypatch.setattr(yamlsrc, "MAX_NODES", 1000)
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n" \
           "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
    with pytest.raises(PolicyError, match="more than 1000 nodes"):
        load_documents(bomb, source="t")
