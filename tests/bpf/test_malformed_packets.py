"""Malformed frames get their defined verdict from the real XDP object, and
never get through where policy would deny (IP options, truncation, bogus
lengths, fragments, IPv6 extension headers, non-IP)."""

import pytest

from hepbpf.compiler import compile_policy
from hepbpf.loader.datapath import XDP_DROP, XDP_PASS, load_image

from ..cases import hep
from ..packets import MALFORMED

pytestmark = pytest.mark.bpf


@pytest.fixture(scope="module")
def failsafe_only():
    comp = compile_policy([("hep.yaml", hep())], node="n1", iface="eth1")
    with load_image(comp.image, trace=True) as dp:
        yield dp


@pytest.fixture(scope="module")
def default_allow():
    comp = compile_policy([("hep.yaml", hep(profiles="[projectcalico-default-allow]"))], node="n1", iface="eth1")
    with load_image(comp.image, trace=True) as dp:
        yield dp


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_defined_verdict(failsafe_only, name):
    frame, verdict, reason = MALFORMED[name]
    got = failsafe_only.run(frame)
    assert (got.verdict, got.reason) == (verdict, reason)
    assert got.retval == (XDP_PASS if verdict == "allow" else XDP_DROP)


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_unjudgeable_frames_stay_denied_under_allow_all(default_allow, name):
    """Even with an allow-everything profile, a frame the parser cannot
    judge is dropped; everything else is allowed by the profile."""
    frame, _, reason = MALFORMED[name]
    got = default_allow.run(frame)
    if reason in ("malformed", "fragment"):
        assert (got.verdict, got.reason) == ("deny", reason)
    elif reason == "not-ip":
        assert (got.verdict, got.reason) == ("allow", "not-ip")
    else:
        assert got.verdict == "allow"


# Frames shorter than Ethernet + an IP header are left out: the stack never
# hands tc such an skb, and test_run refuses to build one.
@pytest.mark.parametrize("name", sorted(n for n, (frame, _, reason) in MALFORMED.items()
                                        if reason in ("malformed", "fragment", "not-ip") and len(frame) >= 54))
def test_tc_egress_parses_alike(default_allow, name):
    """The tc program shares the parser: what XDP cannot judge, tc cannot
    either."""
    frame, verdict, reason = MALFORMED[name]
    got = default_allow.run(frame, 1)
    assert (got.verdict, got.reason) == (verdict, reason)
