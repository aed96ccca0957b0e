"""Parsing Calico selectors: what is accepted, what it parses to, and where
errors are reported (calico-semantics.md §1.1, §1.2, §1.5)."""

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
    validate_namespace_selector,
    validate_policy_selector,
)

EXPECTED_OPERATOR = "expected an operator after a label (==, !=, in, not in, contains, starts with, ends with)"


def root(text: str):
    return parse_selector(text).root


def error(text: str) -> tuple[str, int]:
    with pytest.raises(SelectorError) as info:
        parse_selector(text)
    return info.value.reason, info.value.offset


# --- valid selectors and what they parse to ------------------------------------


@pytest.mark.parametrize("text", ["", " ", "\t", "  \t  "])
def test_empty_or_blank_selector_is_all(text):
    assert parse_selector(text) == Selector(All())


@pytest.mark.parametrize("text, expected", [
    # tokenizer_test examples
    ('a=="b"', Eq("a", "b")),
    ('label == "value"', Eq("label", "value")),
    ('label contains "value"', Contains("label", "value")),
    ('contains contains "contains"', Contains("contains", "contains")),
    ("contains contains 'contains'", Contains("contains", "contains")),
    ('label contains"value"', Contains("label", "value")),
    ('label startswith "value"', StartsWith("label", "value")),
    ('label endswith "value"', EndsWith("label", "value")),
    ('label starts with "value"', StartsWith("label", "value")),
    ('startswith starts with "value"', StartsWith("startswith", "value")),
    ('label ends with "value"', EndsWith("label", "value")),
    ('endswith ends with "value"', EndsWith("endswith", "value")),
    ('label starts  with "value"', StartsWith("label", "value")),
    ('label ends  with "value"', EndsWith("label", "value")),
    ("has(calico/k8s_ns)", Has("calico/k8s_ns")),
    ("has(calico/k8s_ns/role)", Has("calico/k8s_ns/role")),
    ("has(calico/k8s_NS-.1/role)", Has("calico/k8s_NS-.1/role")),
    ('calico/k8s_ns == "kube-system" && k8s-app == "kube-dns"',
     And((Eq("calico/k8s_ns", "kube-system"), Eq("k8s-app", "kube-dns")))),
    ("a not in {}", NotIn("a", ())),
    ('a not in {"a"}', NotIn("a", ("a",))),
    ('a not in {"a","B"}', NotIn("a", ("B", "a"))),
    ("global()", Global()),
    ("all()", All()),
    ("has( foo )", Has("foo")),
    ("has(\tfoo\t)", Has("foo")),
    ("all( )", All()),
    ("global(\t)", Global()),
])
def test_tokenizer_examples_parse(text, expected):
    assert root(text) == expected


@pytest.mark.parametrize("text, expected", [
    ('in == "x"', Eq("in", "x")),
    ('has == "x"', Eq("has", "x")),
    ('all == "x"', Eq("all", "x")),
    ('global != "x"', Ne("global", "x")),
    ('not in {"x"}', In("not", ("x",))),
    ('in in {"x"}', In("in", ("x",))),
    ('not not in {"x"}', NotIn("not", ("x",))),
    ('starts starts with "x"', StartsWith("starts", "x")),
    ('with ends with "x"', EndsWith("with", "x")),
])
def test_keywords_are_labels_outside_operator_position(text, expected):
    assert root(text) == expected


@pytest.mark.parametrize("text, expected", [
    ('a notin {"x"}', NotIn("a", ("x",))),
    ('a not\t\tin {"x"}', NotIn("a", ("x",))),
    ('a notin{"x"}', NotIn("a", ("x",))),
    ('a in{"x"}', In("a", ("x",))),
    ('a startswith"x"', StartsWith("a", "x")),
    ('a starts \t with "x"', StartsWith("a", "x")),
    ('a endswith"x"', EndsWith("a", "x")),
    ("a!='x'", Ne("a", "x")),
])
def test_multi_word_operators_take_any_blanks_or_none(text, expected):
    assert root(text) == expected


@pytest.mark.parametrize("label", ["1", "-a", ".a", "/a", "a.b/c-d_e", "A-9", "__", "a" * 512])
def test_label_may_use_any_label_char_anywhere_up_to_512(label):
    assert root(f'{label} == "v"') == Eq(label, "v")
    assert root(f"has({label})") == Has(label)


@pytest.mark.parametrize("text, value", [
    ('a == ""', ""),
    ("a == ''", ""),
    ("a == \"it's\"", "it's"),
    ("a == 'say \"hi\"'", 'say "hi"'),
    ('a == "back\\"', "back\\"),  # no escapes: the backslash is just a character
    ('a == "new\nline"', "new\nline"),  # only *between* tokens is a newline an error
    ('a == "  spaced  "', "  spaced  "),
    ('a == "ü ∀ 😀"', "ü ∀ 😀"),
    ('a == "&& || ! ( ) { } , == global()"', "&& || ! ( ) { } , == global()"),
])
def test_string_literals_have_no_escapes(text, value):
    assert root(text) == Eq("a", value)


@pytest.mark.parametrize("text, expected", [
    ('a in {"a",}', In("a", ("a",))),
    ('a in {"b", "a", "b",}', In("a", ("a", "b"))),
    ("a in {}", In("a", ())),
    ("a in { }", In("a", ())),
    ("a in {'z', \"y\", 'z'}", In("a", ("y", "z"))),
])
def test_sets_accept_empty_and_trailing_comma_and_are_sorted_and_deduplicated(text, expected):
    assert root(text) == expected


def test_set_order_is_byte_order():
    assert root('a in {"b", "B", "é", "a", "_"}').values == ("B", "_", "a", "b", "é")


@pytest.mark.parametrize("text, expected", [
    ('!a == "x"', Not(Eq("a", "x"))),
    ('!a in {"x"}', Not(In("a", ("x",)))),
    ('!a == "a1" && b == "b1"', And((Not(Eq("a", "a1")), Eq("b", "b1")))),
    ('! a == "a1" || ! b == "b1"', Or((Not(Eq("a", "a1")), Not(Eq("b", "b1"))))),
    ("!has(a)", Not(Has("a"))),
    ("!!has(a)", Has("a")),
    ("!!!has(a)", Not(Has("a"))),
    ("!! ! has(a)", Not(Has("a"))),
    ("! !!has(a)", Not(Has("a"))),
    ("!\t!has(a)", Has("a")),
    ("!(has(a) && has(b))", Not(And((Has("a"), Has("b"))))),
    ("!all()", Not(All())),
])
def test_not_applies_to_one_operation_and_runs_collapse(text, expected):
    assert root(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("has(a) || has(b) && has(c)", Or((Has("a"), And((Has("b"), Has("c")))))),
    ("has(a) && has(b) || has(c)", Or((And((Has("a"), Has("b"))), Has("c")))),
    ("(has(a) || has(b)) && has(c)", And((Or((Has("a"), Has("b"))), Has("c")))),
    ("has(a) && has(b) && has(c)", And((Has("a"), Has("b"), Has("c")))),
    ("has(a) || has(b) || has(c)", Or((Has("a"), Has("b"), Has("c")))),
    ("(has(a) && has(b)) && has(c)", And((And((Has("a"), Has("b"))), Has("c")))),
    ("((has(a)))", Has("a")),
    (" (all() )", All()),
    ("has(a)&&has(b)||has(c)", Or((And((Has("a"), Has("b"))), Has("c")))),
])
def test_and_binds_tighter_than_or_and_parens_group(text, expected):
    assert root(text) == expected


def test_deep_but_reasonable_nesting_parses():
    assert root("(" * 100 + "has(a)" + ")" * 100) == Has("a")


def test_absurd_nesting_is_an_error_not_a_crash():
    text = "(" * 5000 + "has(a)" + ")" * 5000
    with pytest.raises(SelectorError) as info:
        parse_selector(text)
    assert info.value.reason == "selector nested too deeply"


# --- invalid selectors -----------------------------------------------------------


@pytest.mark.parametrize("text", [
    # parser_test badSelectors
    "b == b", "b contains b", "b starts with b", "b ends with b", "'b1' == b", "b", "a b", "!",
    'foo == "bar" &', 'foo == "bar" |', "foo != ||", 'foo in {"", ||', 'foo in ""',
    '"FOO', "\"FOO'", "'FOO", "(", '(a == "foo"', ")", "()", "%", 'a == "b" && %', 'a == "b" || %',
    "a ", "has(foo) &&",
    # tokenizer_test errors
    'label starts foo "value"', 'label ends foo "value"', 'label squiggles "value"', 'label = "value"',
    "has()", "a" * 513 + ' == "v"',
])
def test_calico_bad_selectors_are_rejected(text):
    with pytest.raises(SelectorError):
        parse_selector(text)


@pytest.mark.parametrize("text, reason, offset", [
    # tokenizer errors
    ('a == "b', "unterminated string", 5),
    ("a == 'b\"", "unterminated string", 5),
    ('label = "value"', EXPECTED_OPERATOR, 6),
    ('(a) = "b"', "expected ==", 4),
    ("has(a) & has(b)", "expected &&", 7),
    ("has(a) | has(b)", "expected ||", 7),
    ("has()", "unexpected character ')', expected identifier", 4),
    ("has( )", "unexpected character ')', expected identifier", 5),
    ("has(", "expected identifier", 4),
    ("has(a b)", "expected ) after has(", 6),
    ("has(a", "expected ) after has(", 5),
    ("all(x)", "expected ) after all(", 4),
    ("global(", "expected ) after global(", 7),
    ("has(" + "a" * 513 + ")", "label too long (max 512)", 4),
    ("x" + "a" * 512 + ' == "v"', "label too long (max 512)", 0),
    ('has(a) && ' + "b" * 600 + ' == "v"', "label too long (max 512)", 10),
    ('label starts foo "value"', EXPECTED_OPERATOR, 6),
    ('label squiggles "value"', EXPECTED_OPERATOR, 6),
    ('a ends withs "x"', EXPECTED_OPERATOR, 2),
    ("a inf {}", EXPECTED_OPERATOR, 2),
    ('a containsx "x"', EXPECTED_OPERATOR, 2),
    ("a notinx {}", EXPECTED_OPERATOR, 2),
    ('a: == "x"', EXPECTED_OPERATOR, 1),
    ("%", "unexpected character '%', expected identifier", 0),
    (':a == "x"', "unexpected character ':', expected identifier", 0),
    ('ä == "x"', "unexpected character 'ä', expected identifier", 0),
    ('a == "b" && %', "unexpected character '%', expected identifier", 12),
    ("a & b", EXPECTED_OPERATOR, 2),
    ("a | b", EXPECTED_OPERATOR, 2),
    # parser errors (the tokenizer accepted these)
    ("b == b", "expected a string literal", 5),
    ("b contains b", "expected a string literal", 11),
    ('a ==', "expected a string literal", 4),
    ("'b1' == b", "unexpected string 'b1', expected identifier", 0),
    ("b", EXPECTED_OPERATOR, 1),
    ("a ", EXPECTED_OPERATOR, 2),
    ('a "x"', EXPECTED_OPERATOR, 2),
    ("has (foo)", EXPECTED_OPERATOR, 4),
    ("all ()", EXPECTED_OPERATOR, 4),
    ("!", "unexpected end of selector, expected identifier", 1),
    ("has(foo) &&", "unexpected end of selector, expected identifier", 11),
    ("(", "unexpected end of selector, expected identifier", 1),
    ('(a == "foo"', "expected )", 11),
    (")", "unexpected ')', expected identifier", 0),
    ("()", "unexpected ')', expected identifier", 1),
    ("foo != ||", "expected a string literal", 7),
    ('foo in ""', "expected set literal", 7),
    ('foo in {"", ||', "expected a string literal or }", 12),
    ('a in {"a" "b"}', "expected , or }", 10),
    ("a in {,}", "expected a string literal or }", 6),
    ('a in {"a",,}', "expected a string literal or }", 10),
    ("a in {b}", "expected a string literal or }", 6),
    ('a in {"a"', "expected , or }", 9),
    ('a == "b" "c"', "unexpected content at end of selector", 9),
    ("has(a) has(b)", "unexpected content at end of selector", 7),
    ("has(a))", "unexpected content at end of selector", 6),
    # tokenizer_test inputs that tokenize but do not parse
    ('a not in "bar" && !has(foo) || b in c', "expected set literal", 9),
    ('a notin"bar"&&!has(foo)||b in"c"', "expected set literal", 7),
])
def test_error_reason_and_offset(text, reason, offset):
    assert error(text) == (reason, offset)


@pytest.mark.parametrize("text, offset", [
    ("\n", 0),
    ('a == "b"\n', 8),
    ('\na == "b"', 0),
    ('a == "b" &&\nhas(c)', 11),
    ('a == "b"\r', 8),
    ('a == "b"\f', 8),
    ('a == "b"\v', 8),
    ('a == "b"\u00a0', 8),
])
def test_only_space_and_tab_are_whitespace(text, offset):
    char = text[offset]
    assert error(text) == (f"unexpected character {char!r}, expected identifier "
                           "(only space and tab separate tokens)", offset)


def test_newline_after_a_label_is_not_whitespace_either():
    assert error('a\n== "b"') == (EXPECTED_OPERATOR, 1)


def test_whole_text_is_tokenized_before_parsing():
    # The parse error at `b` comes first in the text, but Calico tokenizes
    # everything first, so the unterminated string is what it reports.
    assert error('b == b && c == "x') == ("unterminated string", 15)


def test_selector_error_is_a_value_error_whose_str_is_the_reason():
    with pytest.raises(ValueError) as info:
        parse_selector('a == "b')
    assert str(info.value) == "unterminated string"
    assert isinstance(info.value, SelectorError)


# Fragments that make up selectors, so random text is often nearly valid.
FRAGMENTS = ["a", "in", "not", "has(", "all(", "global(", "(", ")", "{", "}", ",", "'", '"', "==", "=", "!",
             "!=", "&&", "&", "||", "|", " ", "\t", "\n", "contains", "starts", "with", "ends", "x y", "-", "é"]
selector_like_text = st.lists(st.sampled_from(FRAGMENTS), max_size=12).map("".join)


@settings(deadline=None)
@given(text=selector_like_text)
def test_any_text_parses_or_raises_selector_error_within_the_text(text):
    try:
        parse_selector(text)
    except SelectorError as e:
        assert 0 <= e.offset <= len(text)


# --- labels_used ------------------------------------------------------------------


@pytest.mark.parametrize("text, keys", [
    ("", set()),
    ("all() || global()", set()),
    ('has(a) && !(b == "x" || c in {"y"}) && d not in {} || e contains "" || f starts with "" || g ends with ""',
     set("abcdefg")),
    ('a != "x" && has(a)', {"a"}),
])
def test_labels_used(text, keys):
    assert parse_selector(text).labels_used() == frozenset(keys)


# --- scope validators (§1.5) -------------------------------------------------------


@pytest.mark.parametrize("text", ["", "all()", 'a == "b"', "has(global)", 'global == "x"'])
def test_policy_selector_accepts_selectors_without_global(text):
    assert validate_policy_selector(text) == parse_selector(text)


@pytest.mark.parametrize("text, offset", [
    ("global()", 0),
    ("has(a) || global()", 10),
    ("!global( )", 1),
    ('a == "global(x)"', 6),  # Calico's check is a substring test
])
def test_policy_selector_rejects_any_global(text, offset):
    with pytest.raises(SelectorError) as info:
        validate_policy_selector(text)
    assert (info.value.reason, info.value.offset) == ("global() is only valid in a rule namespaceSelector", offset)


def test_policy_selector_reports_syntax_errors_as_such():
    with pytest.raises(SelectorError) as info:
        validate_policy_selector('a == "b')
    assert info.value.reason == "unterminated string"


@pytest.mark.parametrize("text", ["global()", "  global()  ", "\tglobal( )", "", "all()", "has(team)",
                                  '!has(team) && team != "x"'])
def test_namespace_selector_accepts_global_alone_or_no_global(text):
    assert validate_namespace_selector(text) == parse_selector(text)


@pytest.mark.parametrize("text, offset", [
    ("global() && all()", 0),
    ("global()||all()", 0),
    ("all() || global()", 9),
    ("!global()", 1),
    ("(global())", 1),
    ('team == "global(x)"', 9),  # substring trigger, then the token check fails
])
def test_namespace_selector_rejects_global_combined_with_anything(text, offset):
    with pytest.raises(SelectorError) as info:
        validate_namespace_selector(text)
    assert (info.value.reason, info.value.offset) == ("global() cannot be combined with other selectors", offset)


def test_namespace_selector_reports_syntax_errors_as_such():
    with pytest.raises(SelectorError) as info:
        validate_namespace_selector("global() &&")
    assert info.value.reason == "unexpected end of selector, expected identifier"
