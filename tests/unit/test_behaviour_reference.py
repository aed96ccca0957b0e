"""The behaviour table, judged by the pure-Python reference evaluator."""

import contextlib

import pytest

from hepbpf.compiler import evaluate

from ..behaviour import chain_view, check_case
from ..cases import CASES, EXPANDERS


@contextlib.contextmanager
def reference(comp):
    view = chain_view(comp)
    yield lambda pkt: evaluate(view, pkt).as_json()


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_case(case):
    check_case(case, reference)


@pytest.mark.parametrize("expander", sorted(EXPANDERS))
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_case_with_unrelated_policy(case, expander):
    check_case(case, reference, extra=EXPANDERS[expander])
