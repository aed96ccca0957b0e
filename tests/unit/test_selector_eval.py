"""Evaluating Calico selectors against label maps (calico-semantics.md §1.3)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hepbpf.compiler.selector import parse_selector

ABSENT: dict[str, str] = {}


def matches(text: str, labels) -> bool:
    return parse_selector(text).evaluate(labels)


@pytest.mark.parametrize("text, labels, expected", [
    # all() / empty / global()
    ("", ABSENT, True),
    ("", {"a": "b"}, True),
    ("all()", ABSENT, True),
    ("global()", ABSENT, True),
    ("global()", {"a": "b"}, True),
    # has(): present with any value, even ""
    ("has(k)", {"k": "v"}, True),
    ("has(k)", {"k": ""}, True),
    ("has(k)", {"K": "v"}, False),
    ("has(k)", ABSENT, False),
    # ==: present and exactly equal, case-sensitive
    ('k == "v"', {"k": "v"}, True),
    ('k == "v"', {"k": "V"}, False),
    ('k == "v"', {"k": "v "}, False),
    ('k == "v"', ABSENT, False),
    ('k == ""', {"k": ""}, True),
    ('k == ""', ABSENT, False),
    # !=: absent, or present with another value
    ('k != "v"', ABSENT, True),
    ('k != "v"', {"k": "w"}, True),
    ('k != "v"', {"k": "v"}, False),
    ('k != ""', ABSENT, True),
    ('k != ""', {"k": ""}, False),
    # in: present and in the set; never true for {}
    ('k in {"a", "b"}', {"k": "b"}, True),
    ('k in {"a", "b"}', {"k": "c"}, False),
    ('k in {"a", "b"}', ABSENT, False),
    ("k in {}", {"k": ""}, False),
    ("k in {}", ABSENT, False),
    ('k in {""}', {"k": ""}, True),
    # not in: absent, or not in the set; always true for {}
    ('k not in {"a", "b"}', ABSENT, True),
    ('k not in {"a", "b"}', {"k": "c"}, True),
    ('k not in {"a", "b"}', {"k": "a"}, False),
    ("k not in {}", ABSENT, True),
    ("k not in {}", {"k": "x"}, True),
    # contains / starts with / ends with: present and substring/prefix/suffix
    ('k contains "b"', {"k": "abc"}, True),
    ('k contains "b"', {"k": "ac"}, False),
    ('k contains "b"', ABSENT, False),
    ('k contains ""', {"k": ""}, True),
    ('k contains ""', ABSENT, False),
    ('k starts with "ab"', {"k": "abc"}, True),
    ('k starts with "ab"', {"k": "cab"}, False),
    ('k starts with ""', {"k": "x"}, True),
    ('k starts with ""', ABSENT, False),
    ('k ends with "bc"', {"k": "abc"}, True),
    ('k ends with "bc"', {"k": "bca"}, False),
    ('k ends with ""', {"k": "x"}, True),
    ('k ends with ""', ABSENT, False),
    ('k contains "É"', {"k": "xÉy"}, True),
    ('k contains "e"', {"k": "É"}, False),
    # boolean operators
    ("!has(k)", ABSENT, True),
    ("has(a) && has(b)", {"a": "", "b": ""}, True),
    ("has(a) && has(b)", {"a": ""}, False),
    ("has(a) || has(b)", {"b": ""}, True),
    ("has(a) || has(b)", ABSENT, False),
])
def test_evaluation_table(text, labels, expected):
    assert matches(text, labels) is expected


# parser_test selectorTests: (selector, labels that match, labels that do not)
CALICO_CASES = [
    ('a == "b"', [{"a": "b"}, {"a": "b", "c": "d"}], [{}, {"a": "c"}, {"c": "d"}]),
    ('a == "b" && c == "d"', [{"a": "b", "c": "d"}],
     [{}, {"a": "b", "c": "e"}, {"a": "c", "c": "d"}, {"c": "d"}, {"a": "b"}]),
    ('a == "b" || c == "d"', [{"a": "b", "c": "d"}, {"a": "b"}, {"c": "d"}],
     [{}, {"a": "e", "c": "e"}, {"c": "e"}, {"a": "e"}]),
    ("a in {\"'\", '\"', \"c\"}", [{"a": "c"}, {"a": '"'}, {"a": "'"}], [{}, {"a": "e"}]),
    ("a not in {\"'\", '\"', \"c\"}", [{}, {"a": "e"}], [{"a": "c"}, {"a": '"'}, {"a": "'"}]),
    ("a == 'a'", [{"a": "a"}], [{"a": "b"}, {}]),
    ('a != "b"', [{"a": "a"}], []),
    ('a != "a"', [{}], [{"a": "a"}]),
    ('a contains "a"', [{"a": "a"}, {"a": "bab"}, {"a": "aaa", "b": "c"}], [{}, {"a": "b"}, {"b": "aaa"}]),
    ('a starts with "a"', [{"a": "a"}, {"a": "abb"}, {"a": "aaa", "b": "c"}],
     [{}, {"a": "b"}, {"a": "baa"}, {"b": "aaa"}]),
    ('a ends with "a"', [{"a": "a"}, {"a": "bba"}, {"a": "aaa", "b": "c"}],
     [{}, {"a": "b"}, {"a": "aab"}, {"b": "aaa"}]),
    ('a in {"a"}', [{"a": "a"}], [{"a": "b"}]),
    ('!a in {"a"}', [{"a": "b"}], []),
    ('a in {"a", "b"}', [{"a": "a"}, {"a": "b"}], [{"a": "c"}]),
    ('a not in {"d", "e"}', [{"a": "a"}], []),
    ('a not in {"a"}', [], [{"a": "a"}]),
    ("has(a)", [{"a": "b"}], []),
    ("has(b)", [], [{"a": "b"}]),
    ("!has(a)", [{"b": "b"}], [{"a": "b"}]),
    ("!!has(b)", [], [{"a": "b"}]),
    ("! has(a)", [], [{"a": "b"}]),
    ("!!! has(a)", [], [{"a": "b"}]),
    ("!!!has(a)", [], [{"a": "b"}]),
    ("!! ! has(a)", [], [{"a": "b"}]),
    ("! !!has(a)", [], [{"a": "b"}]),
    (" ", [{}], []),
    (" all()", [{}, {"a": "b"}], []),
    (" global()", [{}, {"a": "b"}], []),
    ("a == 'a1' && b == 'b1'", [{"a": "a1", "b": "b1"}], []),
    ("a == 'a1' && b != 'b1'", [], [{"a": "a1", "b": "b1"}]),
    ("a != 'a1' && b == 'b1'", [], [{"a": "a1", "b": "b1"}]),
    ("a != 'a1' && b != 'b1'", [], [{"a": "a1", "b": "b1"}]),
    ("a != 'a1' && !b == 'b1'", [], [{"a": "a1", "b": "b1"}]),
    ("!a == 'a1' && b == 'b1'", [], [{"a": "a1", "b": "b1"}]),
    ("has(a) && !has(b)", [{"a": "a"}], []),
    ("!has(b) && has(a)", [{"a": "a"}], []),
    ("!(!has(a) || has(b))", [{"a": "a"}], []),
    ("!(has(b) || !has(a))", [{"a": "a"}], []),
    ("a == 'a1' || b == 'b1'", [{"a": "a1", "b": "b1"}], []),
    ("a == 'a1' || b != 'b1'", [{"a": "a1", "b": "b1"}], []),
    ("a != 'a1' || b == 'b1'", [{"a": "a1", "b": "b1"}], []),
    ("a != 'a1' || b != 'b1'", [], [{"a": "a1", "b": "b1"}]),
    ("! a == 'a1' || ! b == 'b1'", [], [{"a": "a1", "b": "b1"}]),
]


@pytest.mark.parametrize("text, yes, no", CALICO_CASES)
def test_calico_parser_test_cases(text, yes, no):
    sel = parse_selector(text)
    assert [sel.evaluate(labels) for labels in yes] == [True] * len(yes)
    assert [sel.evaluate(labels) for labels in no] == [False] * len(no)


@pytest.mark.parametrize("text, yes, no", CALICO_CASES)
def test_calico_parser_test_cases_after_canonicalising(text, yes, no):
    sel = parse_selector(str(parse_selector(text)))
    assert [sel.evaluate(labels) for labels in yes] == [True] * len(yes)
    assert [sel.evaluate(labels) for labels in no] == [False] * len(no)


def test_not_negates_the_whole_comparison_so_absent_key_matches():
    # `!a == "x"` is `!(a == "x")`: true when a is absent. Read as
    # `(!a) == "x"` it could never be true for an absent key.
    assert matches('!a == "x"', ABSENT)
    assert matches('!a == "x"', {"a": "y"})
    assert not matches('!a == "x"', {"a": "x"})


def test_not_binds_tighter_than_and_and_or():
    # !has(a) && has(b): only the first term is negated.
    assert matches("!has(a) && has(b)", {"b": ""})
    assert not matches("!has(a) && has(b)", ABSENT)
    # !(has(a) && has(b)) negates the group.
    assert matches("!(has(a) && has(b))", ABSENT)


keys = st.sampled_from(["a", "b", "c"])
values = st.sampled_from(["", "x", "y", "xy"])
label_maps = st.dictionaries(keys, values, max_size=3)


@given(key=keys, value=values, labels=label_maps)
def test_negated_equality_is_inequality(key, value, labels):
    assert matches(f'!{key} == "{value}"', labels) == matches(f'{key} != "{value}"', labels)


@given(key=keys, members=st.lists(values, max_size=3), labels=label_maps)
def test_negated_in_is_not_in(key, members, labels):
    body = ", ".join(f'"{m}"' for m in members)
    assert matches(f"!{key} in {{{body}}}", labels) == matches(f"{key} not in {{{body}}}", labels)


@given(key=keys, value=values, labels=label_maps)
def test_in_a_single_member_set_is_equality(key, value, labels):
    assert matches(f'{key} in {{"{value}"}}', labels) == matches(f'{key} == "{value}"', labels)


@pytest.mark.parametrize("text, all_value, global_value, expected", [
    ("all()", False, True, False),
    ("global()", True, False, False),
    ("!all()", False, True, True),
    ("global() || all()", False, False, False),
    ("global() || all()", False, True, True),
    ("has(a) || all()", True, False, True),
])
def test_all_and_global_values_can_be_chosen_by_the_caller(text, all_value, global_value, expected):
    sel = parse_selector(text)
    assert sel.evaluate({}, all_value=all_value, global_value=global_value) is expected


def test_defaults_make_all_and_global_true():
    assert parse_selector("all() && global()").evaluate({})
