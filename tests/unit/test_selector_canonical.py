"""Calico's canonical selector text (calico-semantics.md §1.4) and the
round trip text -> AST -> canonical text -> the same AST."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hepbpf.compiler.selector import (
    All,
    And,
    Contains,
    EndsWith,
    Eq,
    Global,
    Has,
    In,
    Ne,
    Not,
    NotIn,
    Or,
    Selector,
    SelectorError,
    StartsWith,
    parse_selector,
)


@pytest.mark.parametrize("text, canonical", [
    # parser_test canonicalisationTests
    ("", "all()"),
    (" all() ", "all()"),
    (" (all() )", "all()"),
    ("! (has( b)||! has(a ))", "!(has(b) || !has(a))"),
    ('! (a == "b"&&! c != "d")', '!(a == "b" && !c != "d")'),
    ("a == \"'\"", "a == \"'\""),
    ("a == '\"'", "a == '\"'"),
    ("a contains '\"'", "a contains '\"'"),
    ("a contains \"'\"", "a contains \"'\""),
    ("a startswith '\"'", "a starts with '\"'"),
    ("a endswith \"'\"", "a ends with \"'\""),
    ("a!='\"'", "a != '\"'"),
    ('a in {"d"}', 'a in {"d"}'),
    ('a in {"a", "b"}', 'a in {"a", "b"}'),
    ('a in {"d", "a", "b"}', 'a in {"a", "b", "d"}'),
    ('a in {"z", "x", "y", "a"}', 'a in {"a", "x", "y", "z"}'),
    ('a in {"z", "z", "x", "y", "x", "a"}', 'a in {"a", "x", "y", "z"}'),
    # parser_test visitor cases (without the prefix)
    ("k == 'v' && x == 'y'", '(k == "v" && x == "y")'),
    ("k == 'v' || has(x)", '(k == "v" || has(x))'),
    ("!(k == 'v')", '!k == "v"'),
    ("k not in {'v'}", 'k not in {"v"}'),
    ("!(!(k == 'v' && has(t) || all()) && (a in {'b', 'c'}))",
     '!(!((k == "v" && has(t)) || all()) && a in {"b", "c"})'),
    # more of the same rules
    ("a notin {}", "a not in {}"),
    ("a not \t in {'x',}", 'a not in {"x"}'),
    ("a in {'\"', \"'\"}", "a in {'\"', \"'\"}"),
    ("global( )", "global()"),
    ("!!has(a)", "has(a)"),
    ("!!!has(a)", "!has(a)"),
    ("((has(a)))", "has(a)"),
    ("has(a)&&has(b)||has(c)", "((has(a) && has(b)) || has(c))"),
    ("has(a) && (has(b) && has(c))", "(has(a) && (has(b) && has(c)))"),
    ("in == 'x'", 'in == "x"'),
])
def test_calico_canonical_form(text, canonical):
    sel = parse_selector(text)
    assert str(sel) == canonical
    again = parse_selector(canonical)
    assert again == sel
    assert str(again) == canonical


def test_ast_nodes_print_in_canonical_form():
    assert str(Selector(And((Eq("a", "b"), Not(Or((Has("c"), Global()))))))) == '(a == "b" && !(has(c) || global()))'
    assert str(NotIn("k", ("b", "a", "b"))) == 'k not in {"a", "b"}'
    assert str(Contains("k", 'say "x"')) == "k contains 'say \"x\"'"
    assert str(StartsWith("k", "")) == 'k starts with ""'
    assert str(EndsWith("k", "it's")) == "k ends with \"it's\""
    assert str(Ne("k", "v")) == 'k != "v"'
    assert str(All()) == "all()"


def test_set_nodes_normalise_their_members():
    assert In("k", ("b", "a", "b")) == In("k", ("a", "b"))
    assert In("k", ("b", "a")).values == ("a", "b")
    assert In("k", ("a",)) != NotIn("k", ("a",))


def test_double_negation_prints_as_bangs_and_reparses_to_the_operand():
    # The parser never builds Not(Not(x)); one built by hand prints as `!!x`,
    # which Calico reads back as x, with the same meaning.
    sel = Selector(Not(Not(Has("a"))))
    assert str(sel) == "!!has(a)"
    assert parse_selector(str(sel)) == Selector(Has("a"))
    assert sel.evaluate({"a": ""}) and not sel.evaluate({})


# --- random ASTs -------------------------------------------------------------------

LABEL_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./-"
KEYWORDS = ["in", "not", "notin", "has", "all", "global", "contains", "starts", "startswith",
            "ends", "endswith", "with"]

labels = st.one_of(st.sampled_from(KEYWORDS), st.text(LABEL_CHARS, min_size=1, max_size=12))
# No escapes exist, so a value holding both kinds of quote cannot be written.
values = st.text(max_size=8).filter(lambda v: not ('"' in v and "'" in v))
value_sets = st.lists(values, max_size=4).map(tuple)

LABEL_TESTS = [Eq, Ne, Contains, StartsWith, EndsWith]
SET_TESTS = [In, NotIn]

leaves = st.one_of(
    st.just(All()),
    st.just(Global()),
    st.builds(Has, labels),
    st.builds(lambda op, k, v: op(k, v), st.sampled_from(LABEL_TESTS), labels, values),
    st.builds(lambda op, k, vs: op(k, vs), st.sampled_from(SET_TESTS), labels, value_sets),
)


def _negate(expr):
    # The parser collapses runs of `!`, so it never produces Not(Not(x)).
    return expr.expr if isinstance(expr, Not) else Not(expr)


def _extend(children):
    terms = st.lists(children, min_size=2, max_size=4).map(tuple)
    return st.one_of(children.map(_negate), terms.map(And), terms.map(Or))


# Trees in the parser's normal form: no Not(Not(...)), And/Or of 2+ terms.
exprs = st.recursive(leaves, _extend, max_leaves=12)


@st.composite
def label_maps(draw, expr):
    """Labels that exercise the expression: its own keys, often with one of
    its own values, sometimes absent."""
    sel = Selector(expr)
    wanted = _values_in(expr)
    out = {}
    for key in sorted(sel.labels_used()):
        if draw(st.booleans()):
            out[key] = draw(st.sampled_from(wanted) | values) if wanted else draw(values)
    return out


def _values_in(expr) -> list[str]:
    match expr:
        case In(_, vs) | NotIn(_, vs):
            return list(vs)
        case Eq(_, v) | Ne(_, v) | Contains(_, v) | StartsWith(_, v) | EndsWith(_, v):
            return [v, v + "x", "x" + v]
        case Not(e):
            return _values_in(e)
        case And(ts) | Or(ts):
            return [v for t in ts for v in _values_in(t)]
    return []


@settings(deadline=None)
@given(expr=exprs)
def test_canonical_text_reparses_to_the_same_tree(expr):
    sel = Selector(expr)
    text = str(sel)
    again = parse_selector(text)
    assert again == sel
    assert str(again) == text


@settings(deadline=None)
@given(data=st.data(), expr=exprs)
def test_canonical_text_evaluates_the_same(data, expr):
    sel = Selector(expr)
    again = parse_selector(str(sel))
    for _ in range(5):
        labels = data.draw(label_maps(expr))
        assert again.evaluate(labels) == sel.evaluate(labels)


# Whole operations and operators: random sequences of them often parse.
PIECES = ["has(a)", "all()", "global()", "a == 'x'", 'b != "y"', "c in {'p', 'q',}", "d not in {}",
          "e startswith 'z'", "f ends with ''", "in contains \"'\"", "&&", "||", "!", "(", ")", " "]


@settings(deadline=None)
@given(text=st.lists(st.sampled_from(PIECES), max_size=14).map("".join))
def test_whatever_parses_round_trips(text):
    try:
        sel = parse_selector(text)
    except SelectorError:
        return
    assert parse_selector(str(sel)) == sel


# --- random spellings of random ASTs ------------------------------------------------------
#
# Render a tree the way a person might write it (any blanks, either quote,
# `startswith`/`notin`, redundant parentheses and `!!`, duplicated and
# unsorted set members, trailing commas), then check it parses to the tree.

blanks = st.sampled_from(["", " ", "  ", "\t", " \t "])
some_blanks = st.sampled_from([" ", "  ", "\t", " \t "])
SPELLINGS = {
    Eq: ["=="], Ne: ["!="], Contains: ["contains"],
    StartsWith: ["starts with", "startswith", "starts\t with"],
    EndsWith: ["ends with", "endswith", "ends  with"],
    In: ["in"], NotIn: ["not in", "notin", "not \t in"],
}


def _quoted(draw, value: str) -> str:
    quotes = [q for q in "\"'" if q not in value]
    q = draw(st.sampled_from(quotes))
    return f"{q}{value}{q}"


def _leaf(draw, expr) -> str:
    b = lambda: draw(blanks)  # noqa: E731
    match expr:
        case All():
            return f"all({b()})"
        case Global():
            return f"global({b()})"
        case Has(key):
            return f"has({b()}{key}{b()})"
        case In(key, vs) | NotIn(key, vs):
            op = draw(st.sampled_from(SPELLINGS[type(expr)]))
            members = draw(st.permutations(list(vs) + draw(st.lists(st.sampled_from(vs)))) if vs else st.just([]))
            body = f"{b()},{b()}".join(_quoted(draw, v) for v in members)
            trailing = f"{b()}," if members and draw(st.booleans()) else ""
            return f"{key}{draw(some_blanks)}{op}{b()}{{{b()}{body}{trailing}{b()}}}"
        case _:
            op = draw(st.sampled_from(SPELLINGS[type(expr)]))
            # A word operator must be separated from the label; symbols need not be.
            before = draw(some_blanks) if op[0].isalpha() else b()
            return f"{expr.key}{before}{op}{b()}{_quoted(draw, expr.value)}"


def _operation(draw, expr) -> str:
    """Text that parses as one operation (binds tighter than && and ||)."""
    b = lambda: draw(blanks)  # noqa: E731
    if isinstance(expr, Not):
        bangs = draw(st.sampled_from(["!", "!!!", f"!{b()}!{b()}!"]))
        return f"{bangs}{b()}{_operation(draw, expr.expr)}"
    if isinstance(expr, (And, Or)):
        text = f"({b()}{_bare(draw, expr)}{b()})"
    else:
        text = _leaf(draw, expr)
        if draw(st.booleans()):
            text = f"({b()}{text}{b()})"
    if draw(st.integers(0, 3)) == 0:
        text = f"!{b()}!{b()}{text}"
    return text


def _bare(draw, expr) -> str:
    """An And/Or without its outer parentheses."""
    sep = "&&" if isinstance(expr, And) else "||"
    parts = []
    for term in expr.terms:
        # && binds tighter than ||, so an And inside an Or needs no parentheses.
        if isinstance(expr, Or) and isinstance(term, And) and draw(st.booleans()):
            parts.append(_bare(draw, term))
        else:
            parts.append(_operation(draw, term))
    return f"{draw(blanks)}{sep}{draw(blanks)}".join(parts)


@st.composite
def spellings(draw, expr):
    if isinstance(expr, (And, Or)) and draw(st.booleans()):
        body = _bare(draw, expr)
    else:
        body = _operation(draw, expr)
    return f"{draw(blanks)}{body}{draw(blanks)}"


@settings(deadline=None)
@given(data=st.data(), expr=exprs)
def test_any_spelling_parses_to_the_tree_and_evaluates_the_same(data, expr):
    text = data.draw(spellings(expr))
    sel = parse_selector(text)
    assert sel == Selector(expr)
    labels = data.draw(label_maps(expr))
    assert sel.evaluate(labels) == Selector(expr).evaluate(labels)
