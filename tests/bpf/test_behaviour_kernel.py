"""The behaviour table, judged by the real XDP object (BPF_PROG_TEST_RUN)."""

import contextlib

import pytest

from hepbpf.loader.datapath import load_image

from ..behaviour import check_case
from ..cases import CASES, EXPANDERS

pytestmark = pytest.mark.bpf


@contextlib.contextmanager
def kernel(comp):
    with load_image(comp.image, trace=True) as dp:
        yield dp.explain


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_case(case):
    check_case(case, kernel)


@pytest.mark.parametrize("expander", sorted(EXPANDERS))
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_case_with_unrelated_policy(case, expander):
    check_case(case, kernel, extra=EXPANDERS[expander])
