"""Calico's selector language: tokenizer quirks, grammar, evaluation and
canonical form, as libcalico-go defines them (calico-semantics.md, §1)."""

import random

import pytest

from hepbpf.compiler.selector import (
    SelectorError,
    parse_selector,
    validate_namespace_selector,
    validate_policy_selector,
)

LABELS = {"a": "a1", "b": "b1", "role": "web", "empty": "", "k.io/x": "v-1"}


@pytest.mark.parametrize("sel, expected", [
    ("", True), ("  \t", True), ("all()", True), ("all( )", True), ("global()", True),
    ("has(a)", True), ("has( a )", True), ("has(zz)", False), ("has(empty)", True),
    ("a == 'a1'", True), ('a == "A1"', False), ("zz == 'x'", False),
    ("a != 'x'", True), ("zz != 'x'", True),  # absent key: != is true
    ("a in {'a1', 'b'}", True), ("a in {}", False), ("zz in {'x'}", False),
    ("a not in {'a1'}", False), ("zz not in {'x'}", True), ("a not in {}", True),
    ("role contains 'e'", True), ("role contains ''", True), ("zz contains ''", False),
    ("role starts with 'we'", True), ("role startswith 'eb'", False),
    ("role ends with 'eb'", True), ("role endswith'w'", False),
    ("!a == 'x'", True),  # !(a == 'x'), not (!a) == 'x'
    ("!a == 'a1' && b == 'b1'", False),
    ("!!has(a)", True), ("! ! !has(a)", False),
    ("a == 'x' || b == 'b1'", True), ("a == 'a1' && (b == 'x' || role == 'web')", True),
    ("k.io/x == 'v-1'", True), ("a in {'a1',}", True),
    ("contains contains 'x'", False), ("in == 'x'", False), ("has == 'x'", False),
    ("a notin {'a1'}", False), ("a not   in {'zz'}", True),
    ("label contains\"value\"", False),
])
def test_evaluation(sel, expected):
    assert parse_selector(sel).evaluate(LABELS) is expected


@pytest.mark.parametrize("sel, reason", [
    ("a = 'b'", "expected an operator"),
    ("a", "expected an operator"),
    ("has (foo)", "expected an operator"),  # `has` is then a label
    ("has()", "expected identifier"),
    ("has(a b)", "expected ) after has("),
    ("all ()", "expected an operator"),
    ("a == 'b' 'c'", "unexpected content at end of selector"),
    ("a == b", "expected a string literal"),
    ("'b' == a", "expected identifier"),
    ("a == 'unterminated", "unterminated string"),
    ("a & b", "expected an operator"),
    ("has(a) & has(b)", "expected &&"),
    ("has(a) | has(b)", "expected ||"),
    ("a in 'x'", "expected set literal"),
    ("a ends withs 'x'", "expected an operator"),
    ("a inf {}", "expected an operator"),
    ("a ==\n'b'", "unexpected character"),  # only space and tab are whitespace
    ("(has(a)", "expected )"),
    ("a:b == 'x'", "expected an operator"),
    ("x" * 513 + " == 'y'", "label too long"),
])
def test_rejected(sel, reason):
    with pytest.raises(SelectorError) as e:
        parse_selector(sel)
    assert reason in e.value.reason


def test_label_of_512_bytes_is_fine():
    assert parse_selector("x" * 512 + " == 'y'").evaluate({"x" * 512: "y"})


def test_error_offsets():
    with pytest.raises(SelectorError) as e:
        parse_selector("has(a) && b = 'c'")
    assert e.value.offset == 12


@pytest.mark.parametrize("sel, canonical", [
    ("", "all()"),
    ("! (has( b)||! has(a ))", "!(has(b) || !has(a))"),
    ("a startswith '\"'", "a starts with '\"'"),
    ('a in {"z","z","x","y","x","a"}', 'a in {"a", "x", "y", "z"}'),
    ("a == 'x' && b != 'y'", '(a == "x" && b != "y")'),
    ("a notin {'b'}", 'a not in {"b"}'),
    ("!!has(a)", "has(a)"),
])
def test_canonical_form(sel, canonical):
    assert str(parse_selector(sel)) == canonical


def test_policy_selectors_reject_global_anywhere():
    with pytest.raises(SelectorError):
        validate_policy_selector("a == 'global(x)'")  # a substring test, as Calico's CEL rule


def test_namespace_selector_global_only_alone():
    assert validate_namespace_selector("  global()  ").evaluate({}, all_value=False, global_value=True)
    for bad in ("global() && all()", "global()||all()", "!global()"):
        with pytest.raises(SelectorError):
            validate_namespace_selector(bad)


def _random_selector(r: random.Random, depth: int = 0) -> str:
    keys, values = ["a", "b", "role", "zz"], ["a1", "b1", "web", "", "x"]
    if depth > 2 or r.random() < 0.4:
        k, v = r.choice(keys), r.choice(values)
        return r.choice([f"has({k})", f"{k} == '{v}'", f"{k} != \"{v}\"", f"{k} in {{'{v}', 'web'}}",
                         f"{k} not in {{'{v}'}}", f"{k} contains '{v}'", f"{k} starts with '{v}'",
                         f"{k} ends with '{v}'", "all()"])
    op = r.choice(["&&", "||"])
    inner = f"{_random_selector(r, depth + 1)} {op} {_random_selector(r, depth + 1)}"
    return ("!" * r.randint(0, 2)) + f"({inner})"


def test_canonical_form_round_trips_and_keeps_meaning():
    r = random.Random(7)
    label_sets = [LABELS, {}, {"a": "x"}, {"role": "web", "zz": ""}]
    for _ in range(500):
        text = _random_selector(r)
        sel = parse_selector(text)
        again = parse_selector(str(sel))
        assert again == sel and str(again) == str(sel), text
        for labels in label_sets:
            assert again.evaluate(labels) == sel.evaluate(labels)
