"""compiler/yamlsrc.py: YAML 1.2 core schema, a position for every node, and
every way the text can be wrong reported where it is."""

import dataclasses
import math

import pytest

from hepbpf.compiler import yamlsrc
from hepbpf.compiler.diagnostics import PolicyError, Span
from hepbpf.compiler.yamlsrc import Mapping, Scalar, Sequence, load_documents, to_plain


def load(text: str):
    return load_documents(text, source="p.yaml")


def errors(text: str) -> list[str]:
    with pytest.raises(PolicyError) as e:
        load(text)
    return [str(d) for d in e.value.diagnostics]


def at(node) -> tuple[int, int]:
    return node.span.line, node.span.col


# --------------------------------------------------------------- positions

STREAM = (
    "# leading comment\n"                    # 1
    "apiVersion: projectcalico.org/v3\n"     # 2
    "kind: HostEndpoint\n"                   # 3
    "---\n"                                  # 4
    "apiVersion: projectcalico.org/v3\n"     # 5
    "kind: GlobalNetworkPolicy\n"            # 6
    "spec:\n"                                # 7
    "  ingress:\n"                           # 8
    "  - action: Allow\n"                    # 9
    "    destination:\n"                     # 10
    "      ports: [22, '80:90']\n"           # 11
    "---\n"                                  # 12
    "# third\n"                              # 13
    "kind: Tier\n"                           # 14
)


def test_positions_of_nested_nodes_in_a_multi_document_stream():
    docs = load(STREAM)
    assert len(docs) == 3
    assert [at(d) for d in docs] == [(2, 1), (5, 1), (14, 1)]
    spec = docs[1].get("spec")
    ingress = spec.get("ingress")
    rule = ingress.items[0]
    ports = rule.get("destination").get("ports")
    assert isinstance(ingress, Sequence) and at(ingress) == (9, 3)
    assert isinstance(rule, Mapping) and at(rule) == (9, 5)
    assert at(rule.get("destination")) == (11, 7)
    assert at(ports) == (11, 14)
    assert [(p.value, at(p)) for p in ports.items] == [(22, (11, 15)), ("80:90", (11, 19))]
    assert ports.items[1].span == Span("p.yaml", 11, 19)


def test_documents_after_separators_have_absolute_lines():
    docs = load(STREAM)
    assert at(docs[0].get("kind")) == (3, 7)
    assert docs[1].key_span("kind") == Span("p.yaml", 6, 1)
    assert at(docs[1].get("kind")) == (6, 7)
    assert at(docs[2].get("kind")) == (14, 7)


def test_crlf_and_bom_do_not_shift_positions():
    (doc,) = load("\ufeffa: 1\r\nb:\r\n  c: x\r\n")
    assert at(doc.get("a")) == (1, 4)
    assert at(doc.get("b").get("c")) == (3, 6)
    assert to_plain(doc) == {"a": 1, "b": {"c": "x"}}


def test_an_empty_value_is_placed_after_its_colon_not_on_the_next_line():
    (doc,) = load("a:\nb: 1\nc:   # comment\nd:\n  - \n")
    assert to_plain(doc) == {"a": None, "b": 1, "c": None, "d": [None]}
    assert at(doc.get("a")) == (1, 3)
    assert at(doc.get("c")) == (3, 3)
    assert at(doc.get("d").items[0]) == (5, 4)


# ------------------------------------------------------------- core schema

def test_port_list_is_read_by_the_1_2_core_schema():
    (doc,) = load('ports: [10:20, "80", 80, on, yes, 1e3, 0x1F, 0o17]\n')
    items = doc.get("ports").items
    assert [(n.value, n.tag, n.quoted) for n in items] == [
        ("10:20", "str", False),   # YAML 1.1: the base-60 int 620
        ("80", "str", True),
        (80, "int", False),
        ("on", "str", False),      # YAML 1.1: True
        ("yes", "str", False),     # YAML 1.1: True
        (1000.0, "float", False),  # YAML 1.1 (PyYAML): the string '1e3'
        (31, "int", False),
        (15, "int", False),
    ]
    assert [type(n.value) for n in items] == [str, str, int, str, str, float, int, int]


@pytest.mark.parametrize("text, value, tag", [
    ("~", None, "null"), ("null", None, "null"), ("Null", None, "null"), ("NULL", None, "null"),
    ("", None, "null"),
    ("true", True, "bool"), ("True", True, "bool"), ("TRUE", True, "bool"),
    ("false", False, "bool"), ("False", False, "bool"), ("FALSE", False, "bool"),
    ("tRUE", "tRUE", "str"), ("nULL", "nULL", "str"),
    ("0", 0, "int"), ("-0", 0, "int"), ("+12", 12, "int"), ("-12", -12, "int"),
    ("0o17", 15, "int"), ("0x1f", 31, "int"), ("0xFF", 255, "int"),
    ("99999999999999999999", 99999999999999999999, "int"),
    ("-0x1F", "-0x1F", "str"), ("+0o7", "+0o7", "str"), ("0o8", "0o8", "str"), ("0X1F", "0X1F", "str"),
    ("1_000", "1_000", "str"), ("0b11", "0b11", "str"), ("1:20", "1:20", "str"), ("190:20:30", "190:20:30", "str"),
    ("1.5", 1.5, "float"), (".5", 0.5, "float"), ("1.", 1.0, "float"), ("-1.5e-3", -0.0015, "float"),
    ("1e3", 1000.0, "float"), ("+1E+3", 1000.0, "float"),
    (".inf", math.inf, "float"), ("-.Inf", -math.inf, "float"), ("+.INF", math.inf, "float"),
    ("1.2.3", "1.2.3", "str"), ("e3", "e3", "str"), ("inf", "inf", "str"), ("nan", "nan", "str"),
    ("2001-12-14", "2001-12-14", "str"),  # no timestamps in the core schema
    ("10.0.0.0/8", "10.0.0.0/8", "str"), ("all()", "all()", "str"),
])
def test_plain_scalars_resolve_by_the_core_schema(text, value, tag):
    (doc,) = load(f"- {text}\n")
    (node,) = doc.items
    assert (node.value, node.tag, node.quoted) == (value, tag, False)
    assert type(node.value) is type(value)


def test_nan():
    (doc,) = load("[.nan, .NaN, .NAN]\n")
    assert all(math.isnan(n.value) and n.tag == "float" for n in doc.items)


def test_a_float_too_large_is_refused_not_made_infinite():
    assert errors("a: 1e999\n") == ["p.yaml:1:4: a = '1e999': float out of range"]


def test_leading_zero_ints_are_refused_as_ambiguous():
    reason = ("ambiguous number with a leading zero (YAML 1.1 reads it as octal, YAML 1.2 as decimal); "
              "write it without the zero, or as 0o...")
    assert errors("ports: [80, 0777]\nmode: -010\n") == [
        f"p.yaml:1:13: ports[1] = '0777': {reason}",
        f"p.yaml:2:7: mode = '-010': {reason}",
    ]
    (doc,) = load("a: [0, 777, 0o777, !!int 0777, '0777', 0777.5]\n")
    assert to_plain(doc) == {"a": [0, 777, 511, 777, "0777", 777.5]}


def test_yaml_1_1_boolean_words_as_mapping_values_are_refused():
    reason = ("ambiguous: YAML 1.1 reads this word as a boolean, YAML 1.2 as a string; quote it if you "
              "mean the string, or write true/false")
    assert errors("spec:\n  doNotTrack: yes\n  preDNAT: Off\n  x: n\n") == [
        f"p.yaml:2:15: spec.doNotTrack = 'yes': {reason}",
        f"p.yaml:3:12: spec.preDNAT = 'Off': {reason}",
        f"p.yaml:4:6: spec.x = 'n': {reason}",
    ]
    (doc,) = load("a: 'on'\nb: \"yes\"\nc: !!str off\nd: true\ne: [on, no]\non: 1\nf: yesterday\n")
    assert to_plain(doc) == {"a": "on", "b": "yes", "c": "off", "d": True, "e": ["on", "no"], "on": 1,
                             "f": "yesterday"}


# ---------------------------------------------------------- quoting, blocks

def test_quoted_flag():
    (doc,) = load("a: 80\nb: '80'\nc: \"80\"\nd: |\n  80\ne: >-\n  80\nf: !!str 80\ng: ! 80\nh: ''\n")
    got = {k.value: (v.value, v.tag, v.quoted) for k, v in doc.items}
    assert got == {
        "a": (80, "int", False),
        "b": ("80", "str", True),
        "c": ("80", "str", True),
        "d": ("80\n", "str", True),
        "e": ("80", "str", True),
        "f": ("80", "str", False),
        "g": ("80", "str", False),
        "h": ("", "str", True),
    }


def test_block_scalars_keep_newlines():
    text = ("lit: |\n  line one\n    indented\n\n  line three\n"
            "strip: |-\n  a\n  b\n"
            "keep: |+\n  a\n\n"
            "fold: >\n  a\n  b\n\n  c\n"
            "after: x\n")
    (doc,) = load(text)
    assert to_plain(doc) == {
        "lit": "line one\n  indented\n\nline three\n",
        "strip": "a\nb",
        "keep": "a\n\n",
        "fold": "a b\nc\n",
        "after": "x",
    }
    assert at(doc.get("lit")) == (1, 6)
    assert at(doc.get("after")) == (17, 8)


def test_escapes_in_double_quotes_and_tabs_inside_quotes():
    (doc,) = load("a: \"x\\ty\\u00e9\"\nb: 'it''s'\nc: 'p\tq'\n")
    assert to_plain(doc) == {"a": "x\ty\u00e9", "b": "it's", "c": "p\tq"}


# -------------------------------------------------------------- documents

def test_empty_documents_are_skipped():
    text = "# only a comment\n---\n---\n# another\n...\n---\na: 1\n---\n\n---\n# trailing\n"
    docs = load(text)
    assert [to_plain(d) for d in docs] == [{"a": 1}]
    assert at(docs[0]) == (7, 1)
    assert load("") == ()
    assert load("# nothing\n\n") == ()


def test_a_document_that_is_null_is_kept():
    (doc,) = load("--- ~\n")
    assert (doc.value, doc.tag, at(doc)) == (None, "null", (1, 5))


def test_kind_list_document_with_nested_items():
    text = ("apiVersion: projectcalico.org/v3\n"   # 1
            "kind: List\n"                          # 2
            "items:\n"                              # 3
            "- apiVersion: projectcalico.org/v3\n"  # 4
            "  kind: GlobalNetworkPolicy\n"         # 5
            "  metadata: {name: a}\n"               # 6
            "  spec:\n"                             # 7
            "    selector: role == 'web'\n"         # 8
            "- kind: HostEndpoint\n"                # 9
            "  metadata:\n"                         # 10
            "    name: h\n"                         # 11
            "    labels: {role: web}\n")            # 12
    (doc,) = load(text)
    items = doc.get("items")
    assert [i.get("kind").value for i in items.items] == ["GlobalNetworkPolicy", "HostEndpoint"]
    assert [at(i) for i in items.items] == [(4, 3), (9, 3)]
    assert items.items[0].get("spec").get("selector").value == "role == 'web'"
    assert at(items.items[0].get("spec").get("selector")) == (8, 15)
    assert at(items.items[1].get("metadata").get("labels").get("role")) == (12, 20)
    assert to_plain(items.items[1]) == {"kind": "HostEndpoint",
                                        "metadata": {"name": "h", "labels": {"role": "web"}}}


def test_yaml_1_1_directive_is_rejected_where_it_is():
    reason = ("YAML 1.1 is not accepted, only 1.2 (YAML 1.1 coerces values such as 10:20, 0777 and on); "
              "remove the %YAML directive")
    assert errors("%YAML 1.1\n---\nports: [10:20]\n") == [f"p.yaml:1:1: {reason}"]
    assert errors("a: 1\n...\n%YAML 1.1\n---\nb: on\n") == [f"p.yaml:3:1: {reason}"]
    assert errors("%YAML 1.3\n---\na: 1\n") == [f"p.yaml:1:1: {reason.replace('YAML 1.1 is', 'YAML 1.3 is')}"]
    (doc,) = load("%YAML 1.2\n---\nports: [10:20]\n")
    assert to_plain(doc) == {"ports": ["10:20"]}


# ----------------------------------------------------------------- errors

def test_duplicate_keys_point_at_the_second_key():
    assert errors("a: 1\nb: 2\na: 3\n") == ["p.yaml:3:1: a: duplicate key (first at line 1)"]
    assert errors("spec:\n  ingress:\n  - action: Allow\n    protocol: TCP\n    'action': Deny\n") == [
        "p.yaml:5:5: spec.ingress[0].action: duplicate key (first at line 3)"]
    assert errors("m: {x: 1, y: 2, x: 3}\n") == ["p.yaml:1:17: m.x: duplicate key (first at line 1)"]


def test_all_non_fatal_errors_are_reported_together():
    assert errors("a: 1\na: 2\nb: {c: 0, c: 1}\nd: !!int x\ne: on\n") == [
        "p.yaml:2:1: a: duplicate key (first at line 1)",
        "p.yaml:3:11: b.c: duplicate key (first at line 3)",
        "p.yaml:4:4: d = 'x': not a valid !!int",
        "p.yaml:5:4: e = 'on': ambiguous: YAML 1.1 reads this word as a boolean, YAML 1.2 as a string; "
        "quote it if you mean the string, or write true/false",
    ]


def test_non_string_keys():
    assert errors("80: a\ntrue: b\n1.5: c\n~: d\n? [a]\n: e\n? {b: 1}\n: f\n") == [
        'p.yaml:1:1: mapping key 80 is an int, not a string (quote it: "80")',
        'p.yaml:2:1: mapping key true is a bool, not a string (quote it: "true")',
        'p.yaml:3:1: mapping key 1.5 is a float, not a string (quote it: "1.5")',
        "p.yaml:4:1: mapping key is null (empty or ~); keys must be strings",
        "p.yaml:5:3: mapping key is a sequence; keys must be strings",
        "p.yaml:7:3: mapping key is a mapping; keys must be strings",
    ]
    (doc,) = load("'80': x\n!!str 443: z\n")
    assert doc.keys() == ["80", "443"]


def test_merge_key_is_refused_but_a_quoted_one_is_a_key():
    assert errors("base: &b {a: 1}\nx:\n  <<: *b\n") == [
        "p.yaml:3:3: x: merge keys (<<) are not part of YAML 1.2; write the fields out "
        "(or quote '<<' if it is meant as a key)"]
    (doc,) = load("'<<': 1\n")
    assert to_plain(doc) == {"<<": 1}


def test_syntax_errors_carry_ruamels_position():
    assert errors("a: [1, 2\nb: 3\n") == [
        "p.yaml:2:2: YAML: expected ',' or ']', but got ':' "
        "(while parsing a flow sequence started at line 1, column 4)"]
    assert errors("a: 1\n---\nb: 'open\n") == [
        "p.yaml:4:1: YAML: found unexpected end of stream "
        "(while scanning a quoted scalar started at line 3, column 4)"]
    assert errors("a:\n  b: 1\n c: 2\n") == [
        "p.yaml:3:2: YAML: expected <block end>, but found '<block mapping start>' "
        "(while parsing a block mapping started at line 1, column 1)"]


def test_errors_already_found_come_before_a_syntax_error():
    assert errors("a: 1\na: 2\n---\nb: [\n") == [
        "p.yaml:2:1: a: duplicate key (first at line 1)",
        "p.yaml:5:1: YAML: expected the node content, but found '<stream end>' "
        "(while parsing a flow node)",
    ]


def test_tabs():
    assert errors("spec:\n\tselector: all()\n") == [
        "p.yaml:2:1: YAML: tab character used for indentation (YAML indents with spaces only)"]
    assert errors("spec:\n  a: 1\n  \tb: 2\n") == [
        "p.yaml:3:3: YAML: tab character used for indentation (YAML indents with spaces only)"]
    assert errors("a:\t1\n") == ["p.yaml:1:3: YAML: tab character not allowed here; use spaces"]
    (doc,) = load("a: [1,\t2]\nb: 'x\ty'\n")
    assert to_plain(doc) == {"a": [1, 2], "b": "x\ty"}
    # ruamel refuses some tabs YAML 1.2 allows as separation; that is an error, said clearly
    assert errors("b: x\t# comment\n") == ["p.yaml:1:5: YAML: tab character not allowed here; use spaces"]


def test_control_characters_are_refused_with_their_position():
    assert errors("a: 1\nb: x\x01y\n") == ["p.yaml:2:5: YAML: character '\\x01' (U+0001) is not allowed"]


# ------------------------------------------------------------------- tags

def test_standard_tags_are_applied():
    (doc,) = load("a: !!int '80'\nb: !!str 80\nc: !!float 1\nd: !!bool true\ne: !!null ''\n"
                  "f: !!str\ng: !!map {x: 1}\nh: !!seq [1]\ni: !<tag:yaml.org,2002:int> \"7\"\n"
                  "j: !!str 10:20\n")
    got = {k.value: (v.value, v.tag, v.quoted) if isinstance(v, Scalar) else to_plain(v) for k, v in doc.items}
    assert got == {
        "a": (80, "int", True),
        "b": ("80", "str", False),
        "c": (1.0, "float", False),
        "d": (True, "bool", False),
        "e": (None, "null", True),
        "f": ("", "str", False),
        "g": {"x": 1},
        "h": [1],
        "i": (7, "int", True),
        "j": ("10:20", "str", False),
    }
    assert type(got["c"][0]) is float


def test_bad_tags_and_values_that_do_not_fit_their_tag():
    allowed = "(allowed: !!str, !!int, !!float, !!bool, !!null, !!map, !!seq)"
    assert errors("a: !!int 1.5\nb: !!bool yes\nc: !!float x\nd: !!null 0\ne: !!binary aGk=\n"
                  "f: !custom 1\ng: !!seq {x: 1}\nh: !!str [1]\ni: !!timestamp 2001-12-14\n") == [
        "p.yaml:1:4: a = '1.5': not a valid !!int",
        "p.yaml:2:4: b = 'yes': not a valid !!bool",
        "p.yaml:3:4: c = 'x': not a valid !!float",
        "p.yaml:4:4: d = '0': not a valid !!null",
        f"p.yaml:5:4: e = 'aGk=': unsupported tag !!binary {allowed}",
        f"p.yaml:6:4: f = '1': unknown tag !custom {allowed}",
        "p.yaml:7:4: g: tag !!seq cannot apply to a mapping (only !!map can)",
        "p.yaml:8:4: h: tag !!str cannot apply to a sequence (only !!seq can)",
        f"p.yaml:9:4: i = '2001-12-14': unsupported tag !!timestamp {allowed}",
    ]


def test_tag_directive_cannot_rename_the_standard_tags():
    allowed = "(allowed: !!str, !!int, !!float, !!bool, !!null, !!map, !!seq)"
    assert errors("%TAG !! tag:example.com,2000:\n---\na: !!int 1\n") == [
        f"p.yaml:3:4: a = '1': unknown tag tag:example.com,2000:int {allowed}"]


# ---------------------------------------------------------------- aliases

def test_aliases_are_expanded():
    text = "ports: &p [22, 80]\nsame: *p\nname: &n web\nalso: *n\n*n : key from alias\n"
    (doc,) = load(text)
    assert to_plain(doc) == {"ports": [22, 80], "same": [22, 80], "name": "web", "also": "web",
                             "web": "key from alias"}
    assert doc.get("same") is doc.get("ports")        # shared, spans where it was written
    assert at(doc.get("same").items[1]) == (1, 16)
    assert at(doc.get("name")) == (3, 7)
    assert at(doc.get("also")) == (4, 7)              # a scalar alias is placed at the *alias
    assert doc.key_span("web") == Span("p.yaml", 5, 1)


def test_an_alias_key_duplicating_a_key_points_at_the_alias():
    assert errors("&k a: 1\n*k : 2\n") == ["p.yaml:2:1: a: duplicate key (first at line 1)"]


def test_undefined_and_cyclic_aliases():
    assert errors("a: *nope\nb: &c [1, *c]\n") == [
        "p.yaml:1:4: a: alias *nope: no such anchor in this document",
        "p.yaml:2:11: b[1]: alias *c: it refers to a node that contains it (a cycle)",
    ]
    # anchors do not cross documents
    assert errors("a: &x 1\n---\nb: *x\n") == ["p.yaml:3:4: b: alias *x: no such anchor in this document"]
    # a redefined anchor: an alias takes the latest definition before it
    (doc,) = load("a: &x 1\nb: *x\nc: &x [2, &x 3, *x]\nd: *x\n")
    assert to_plain(doc) == {"a": 1, "b": 1, "c": [2, 3, 3], "d": [2, 3, 3]}
    # ... so an anchor redefined on a collection that uses the old one is a cycle
    assert errors("a: &x 1\nb: &x [*x]\n") == [
        "p.yaml:2:8: b[0]: alias *x: it refers to a node that contains it (a cycle)"]


BOMB = ("a: &a [x, x, x, x, x, x, x, x, x, x]\n"
        "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
        "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n")


def test_alias_expansion_is_capped(monkeypatch):
    # expanded sizes: a = 11 nodes, b = 1 + 10*11 = 111, c = 1 + 10*111 = 1111; with the keys and
    # the root, the whole document expands to 1 + 3 + 11 + 111 + 1111 = 1237 nodes
    monkeypatch.setattr(yamlsrc, "MAX_NODES", 1237)
    (doc,) = load(BOMB)
    assert len(to_plain(doc)["c"]) == 10
    monkeypatch.setattr(yamlsrc, "MAX_NODES", 1236)
    assert errors(BOMB) == ["p.yaml:3:44: c[9]: document expands to more than 1236 nodes (an alias bomb?)"]


def test_billion_laughs_fails_fast_at_the_default_cap():
    lines = ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, 10):  # 10**10 nodes if expanded
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]")
    # l0..l4 expand to 11 + 111 + ... + 111111 nodes; the 8th *l4 inside l5 crosses 1,000,000
    assert errors("\n".join(lines) + "\n") == [
        "p.yaml:6:45: l5[7]: document expands to more than 1000000 nodes (an alias bomb?)"]
    assert yamlsrc.MAX_NODES == 1_000_000


def test_nesting_depth_is_capped():
    deep = "[" * 101 + "]" * 101
    assert errors(deep) == ["p.yaml:1:101: nesting deeper than 100 levels"]
    (doc,) = load("[" * 100 + "]" * 100)
    assert isinstance(doc, Sequence)


# ------------------------------------------------------------ node helpers

def test_mapping_helpers_and_to_plain():
    (doc,) = load("b: 1\na: [x, {c: null}]\n")
    assert doc.keys() == ["b", "a"]
    assert doc.get("a").items[0] == Scalar("x", Span("p.yaml", 2, 5), "str", False)
    assert doc.get("missing") is None
    assert doc.key_span("a") == Span("p.yaml", 2, 1)
    assert doc.key_span("missing") == doc.span == Span("p.yaml", 1, 1)
    assert to_plain(doc) == {"b": 1, "a": ["x", {"c": None}]}
    assert list(to_plain(doc)) == ["b", "a"]


def test_nodes_are_frozen():
    (doc,) = load("a: 1\n")
    with pytest.raises(dataclasses.FrozenInstanceError):
        doc.get("a").value = 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        doc.items = ()
