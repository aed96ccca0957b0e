"""`hepbpf metrics` without a kernel: the exposition text rendered from
hand-made `status` dicts, parsed back by a strict parser of the text format
(0.0.4), the --listen grammar, and the HTTP handler over a socketpair (no
IP traffic)."""

from __future__ import annotations

import argparse
import re
import socket
import threading

import pytest

from hepbpf.cli import EXIT_USAGE
from hepbpf.metrics import (CONTENT_TYPE, FAMILIES, ListenError, _Handler, _Monotonic, escape_label_value,
                            parse_listen, render, run_metrics)

# --- a strict parser of the text exposition format -----------------------------------

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r"[a-zA-Z_][a-zA-Z0-9_]*"
_VALUE = r"(?:[+-]?(?:[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?|\.[0-9]+)|[+-]Inf|NaN)"
_HELP_RE = re.compile(rf"^# HELP ({_NAME}) (.*)$")
_TYPE_RE = re.compile(rf"^# TYPE ({_NAME}) (counter|gauge|histogram|summary|untyped)$")
_SAMPLE_RE = re.compile(rf"^({_NAME})(?:\{{(.*)\}})? ({_VALUE})$")
_PAIR_RE = re.compile(rf'({_LABEL})="((?:[^"\\\n]|\\[\\"n])*)"(,|$)')


def _unescape(v: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "\\": "\\", '"': '"'}[m.group(1)], v)


def _labels(text: str | None, line: str) -> dict[str, str]:
    out: dict[str, str] = {}
    pos = 0
    text = text or ""
    while pos < len(text):
        m = _PAIR_RE.match(text, pos)
        assert m, f"bad label set at {text[pos:]!r} in {line!r}"
        assert m.group(1) not in out, f"label {m.group(1)} twice in {line!r}"
        out[m.group(1)] = _unescape(m.group(2))
        pos = m.end()
    return out


def parse_exposition(text: str) -> dict[str, dict]:
    """{family: {"type", "help", "samples": [(labels, value)]}}; asserts the
    text is well formed: every line a HELP, TYPE or sample line, HELP and
    TYPE once per family and before its samples, a family's lines together,
    sample names equal to their family's, no series twice, a final newline."""
    assert text.endswith("\n"), "the text must end with a newline"
    families: dict[str, dict] = {}
    current = None
    done: set[str] = set()
    for line in text[:-1].split("\n"):
        if m := _HELP_RE.match(line):
            name = m.group(1)
            if name != current:
                assert name not in families, f"family {name} split or repeated"
                if current:
                    done.add(current)
                current = name
                families[name] = {"type": None, "help": None, "samples": [], "series": set()}
            assert families[name]["help"] is None, f"HELP twice for {name}"
            families[name]["help"] = m.group(2).replace("\\n", "\n").replace("\\\\", "\\")
        elif m := _TYPE_RE.match(line):
            name = m.group(1)
            if name != current:
                assert name not in families, f"family {name} split or repeated"
                current = name
                families[name] = {"type": None, "help": None, "samples": [], "series": set()}
            fam = families[name]
            assert fam["type"] is None and not fam["samples"], f"TYPE of {name} twice or after a sample"
            fam["type"] = m.group(2)
        elif m := _SAMPLE_RE.match(line):
            name = m.group(1)
            assert name == current, f"sample {name} outside its family ({current})"
            labels = _labels(m.group(2), line)
            key = tuple(sorted(labels.items()))
            fam = families[name]
            assert key not in fam["series"], f"series twice: {line}"
            fam["series"].add(key)
            fam["samples"].append((labels, float(m.group(3))))
        else:
            raise AssertionError(f"not a line of the text format: {line!r}")
    for fam in families.values():
        del fam["series"]
    return families


def value(families: dict, name: str, **labels) -> float | None:
    """The value of the one sample of ``name`` whose labels include these."""
    hits = [v for lab, v in families[name]["samples"] if all(lab.get(k) == str(w) for k, w in labels.items())]
    assert len(hits) <= 1, f"{name}{labels}: {len(hits)} samples"
    return hits[0] if hits else None


# --- hand-made status -----------------------------------------------------------------

def _slot(chain, slot, action, reason, stage, tier=None, policy=None, rule=None, packets=0, bytes_=0):
    return {"chain": chain, "slot": slot, "action": action, "reason": reason, "stage": stage, "tier": tier,
            "policy": policy, "rule": rule, "packets": packets, "bytes": bytes_}


def _reasons(**counts):
    names = ("none", "rule-allow", "rule-deny", "end-of-tier", "profile-allow", "no-profile", "failsafe",
             "conntrack", "forward-allow")
    return {n: {"packets": counts.get(n.replace("-", "_"), (0, 0))[0],
                "bytes": counts.get(n.replace("-", "_"), (0, 0))[1]} for n in names}


def _state(**over) -> dict:
    st = {
        "iface": "eth1", "mode": "native", "prog_id": 41, "tc_mechanism": "tcx", "tc_prog_id": 42,
        "attached": True, "node": "n1", "host_endpoint": "n1-eth1",
        "reasons_by_chain": {
            "ingress": _reasons(rule_deny=(5, 370), rule_allow=(3, 222), failsafe=(2, 148), end_of_tier=(1, 74)),
            "egress": _reasons(conntrack=(3, 162), no_profile=(4, 240)),
        },
        "rules": [
            _slot("ingress", 0, "Allow", "failsafe", "failsafe", rule=0, packets=2, bytes_=148),
            _slot("ingress", 1, "Conntrack", "conntrack", "conntrack"),
            _slot("ingress", 2, "Forward", "none", "forward"),
            _slot("ingress", 3, "Deny", "rule-deny", "normal", "default", "metrics-test", 0, 5, 370),
            # a rule with named ports: two slots, one series
            _slot("ingress", 4, "Allow", "rule-allow", "normal", "default", "metrics-test", 1, 2, 148),
            _slot("ingress", 5, "Allow", "rule-allow", "normal", "default", "metrics-test", 1, 1, 74),
            _slot("ingress", 6, "Deny", "end-of-tier", "normal", "default", packets=1, bytes_=74),
            _slot("ingress", 7, "Allow", "profile-allow", "profile", policy="projectcalico-default-allow"),
            _slot("ingress", 8, "Deny", "no-profile", "profile"),
            _slot("egress", 0, "Forward", "none", "forward"),
            _slot("egress", 1, "Conntrack", "conntrack", "conntrack", packets=3, bytes_=162),
            _slot("egress", 2, "Deny", "no-profile", "profile", packets=4, bytes_=240),
        ],
        "conntrack": {"flows": 2, "size": 65536,
                      "events": {"created": 3, "hit": 3, "related": 0, "closed": 1, "expired": 0,
                                 "create-failed": 0, "evicted": 0}},
    }
    st.update(over)
    return st


# --- rendering ------------------------------------------------------------------------

def test_every_family_has_help_and_type_and_counters_end_in_total():
    fams = parse_exposition(render([_state()]))
    assert list(fams) == [name for name, _, _ in FAMILIES]
    for name, fam in fams.items():
        assert fam["help"], name
        assert fam["type"] == ("counter" if name.endswith("_total") else "gauge"), name
    for name, fam in fams.items():
        for labels, _ in fam["samples"]:
            assert labels["iface"] == "eth1", name


def test_rule_counters_per_policy_rule_and_end_of_tier():
    fams = parse_exposition(render([_state()]))
    rules = fams["hepbpf_rule_packets_total"]["samples"]
    assert [(s["direction"], s["tier"], s["policy"], s["rule"], s["action"], v) for s, v in rules] == [
        ("ingress", "default", "metrics-test", "0", "deny", 5),
        ("ingress", "default", "metrics-test", "1", "allow", 3),  # two slots summed
        ("ingress", "default", "", "", "deny", 1),  # end-of-tier
        ("ingress", "", "projectcalico-default-allow", "", "allow", 0),
    ]
    assert value(fams, "hepbpf_rule_bytes_total", policy="metrics-test", rule=1) == 222
    assert value(fams, "hepbpf_rule_bytes_total", policy="", tier="default") == 74


def test_steering_failsafe_and_default_slots_only_in_reason_metrics():
    text = render([_state()])
    fams = parse_exposition(text)
    assert not any(s["policy"] in ("None", "failsafe", "conntrack", "no-profile")
                   for s, _ in fams["hepbpf_rule_packets_total"]["samples"])
    assert "None" not in text
    assert value(fams, "hepbpf_reason_packets_total", direction="ingress", reason="failsafe") == 2
    assert value(fams, "hepbpf_reason_packets_total", direction="egress", reason="no-profile") == 4
    assert value(fams, "hepbpf_reason_bytes_total", direction="egress", reason="conntrack") == 162
    # every reason of both chains, zeros too: series do not come and go
    assert len(fams["hepbpf_reason_packets_total"]["samples"]) == 2 * 9


def test_rule_and_reason_counters_agree():
    fams = parse_exposition(render([_state()]))
    for action, reason in (("deny", "rule-deny"), ("allow", "rule-allow")):
        rule = sum(v for s, v in fams["hepbpf_rule_packets_total"]["samples"]
                   if s["action"] == action and s["rule"] != "")
        assert rule == value(fams, "hepbpf_reason_packets_total", direction="ingress", reason=reason)


def test_info_attached_audit_and_conntrack():
    fams = parse_exposition(render([_state()]))
    assert fams["hepbpf_attached_info"]["samples"] == [
        ({"iface": "eth1", "mode": "native", "egress": "tcx", "prog_id": "41"}, 1.0)]
    assert value(fams, "hepbpf_attached") == 1
    assert value(fams, "hepbpf_audit") == 0  # no "audit" key: this build enforces
    assert value(fams, "hepbpf_conntrack_flows") == 2
    assert value(fams, "hepbpf_conntrack_size") == 65536
    events = {s["event"]: v for s, v in fams["hepbpf_conntrack_events_total"]["samples"]}
    assert events == {"created": 3, "hit": 3, "related": 0, "closed": 1, "expired": 0, "create-failed": 0,
                      "evicted": 0}


def test_keys_of_newer_loaders_when_present():
    st = _state(audit=True, events={"emitted": 7, "suppressed": 2, "lost": 1},
                would_drop={"ingress": {"packets": 6, "bytes": 444}, "egress": {"packets": 0, "bytes": 0}})
    fams = parse_exposition(render([st]))
    assert value(fams, "hepbpf_audit") == 1
    assert {s["outcome"]: v for s, v in fams["hepbpf_events_total"]["samples"]} == \
        {"emitted": 7, "suppressed": 2, "lost": 1}
    assert value(fams, "hepbpf_would_drop_packets_total", direction="ingress") == 6
    assert value(fams, "hepbpf_would_drop_bytes_total", direction="ingress") == 444
    assert value(fams, "hepbpf_would_drop_packets_total", direction="egress") == 0


def test_keys_of_newer_loaders_when_absent_give_no_samples():
    fams = parse_exposition(render([_state()]))
    for name in ("hepbpf_events_total", "hepbpf_would_drop_packets_total", "hepbpf_would_drop_bytes_total"):
        assert fams[name]["samples"] == [], name


def test_label_values_are_escaped():
    nasty = 'ns/we"ird\\pol\nicy'
    st = _state(iface='e"1', rules=[_slot("ingress", 3, "Deny", "rule-deny", "normal", 'ti\\er', nasty, 0, 1, 60)])
    text = render([st])
    assert r'policy="ns/we\"ird\\pol\nicy"' in text
    assert r'iface="e\"1"' in text and r'tier="ti\\er"' in text
    fams = parse_exposition(text)  # no raw newline broke a line
    (labels, v), = fams["hepbpf_rule_packets_total"]["samples"]
    assert labels["policy"] == nasty and labels["tier"] == "ti\\er" and labels["iface"] == 'e"1' and v == 1
    assert escape_label_value('a\\"\n') == 'a\\\\\\"\\n'


def test_nothing_attached_is_the_schema_alone():
    text = render([])
    fams = parse_exposition(text)
    assert all(f["samples"] == [] for f in fams.values())
    assert len(text.splitlines()) == 2 * len(FAMILIES)


def test_stale_state_without_counters():
    # What status() gives for state whose program is gone: no reasons_by_chain.
    st = {"iface": "eth2", "mode": "generic", "prog_id": 9, "tc_mechanism": "clsact", "attached": False,
          "reasons": {"rule-deny": {"packets": 0, "bytes": 0}}, "rules": []}
    fams = parse_exposition(render([_state(), st]))
    assert value(fams, "hepbpf_attached", iface="eth2") == 0
    assert value(fams, "hepbpf_reason_packets_total", iface="eth2", reason="rule-deny") is None
    assert value(fams, "hepbpf_attached_info", iface="eth2") == 1


def test_two_interfaces_are_separate_series():
    fams = parse_exposition(render([_state(), _state(iface="eth2", prog_id=50)]))
    assert value(fams, "hepbpf_rule_packets_total", iface="eth2", policy="metrics-test", rule=0) == 5
    assert len(fams["hepbpf_attached_info"]["samples"]) == 2


def test_evicted_never_goes_backwards_for_one_program():
    mono = _Monotonic()

    def ev(n, prog=41):
        st = _state(prog_id=prog)
        st["conntrack"]["events"]["evicted"] = n
        return mono.apply([st])[0]["conntrack"]["events"]["evicted"]

    assert [ev(3), ev(2), ev(5), ev(0, prog=77), ev(1, prog=77)] == [3, 3, 5, 0, 1]


def test_parser_rejects_malformed_text():
    good = render([_state()])
    for bad in (good.rstrip("\n"),  # no final newline
                good.replace('action="deny"', 'action="de\ny"', 1),  # raw newline in a value
                good.replace('policy="metrics-test"', 'policy="a"b"', 1),  # unescaped quote
                good + "hepbpf_attached{iface=\"eth1\"} 1\n",  # a family split
                good.replace("# TYPE hepbpf_audit gauge", "# TYPE hepbpf_audit gauge\n# TYPE hepbpf_audit gauge")):
        with pytest.raises(AssertionError):
            parse_exposition(bad)


# --- --listen ---------------------------------------------------------------------------

@pytest.mark.parametrize("text, want", [
    ("127.0.0.1", ("127.0.0.1", 9469)),
    ("192.0.2.1:9469", ("192.0.2.1", 9469)),
    ("127.0.0.1:0", ("127.0.0.1", 0)),
    (":9100", ("127.0.0.1", 9100)),  # a missing address is the default, localhost
    ("[2001:db8::1]:9469", ("2001:db8::1", 9469)),
    ("[::]:80", ("::", 80)),
    ("[::1]", ("::1", 9469)),
    ("2001:db8::1", ("2001:db8::1", 9469)),  # bare IPv6: no port without brackets
    ("0.0.0.0", ("0.0.0.0", 9469)),
])
def test_listen_forms(text, want):
    assert parse_listen(text) == want


@pytest.mark.parametrize("text, says", [
    ("", "empty"),
    ("127.0.0.1:http", "port 'http'"),
    ("127.0.0.1:65536", "0 to 65535"),
    ("127.0.0.1:", "port ''"),
    (":-1", "port '-1'"),
    ("[2001:db8::1", "missing ']'"),
    ("[192.0.2.1]:80", "not an IPv6"),
    ("[::1]80", "':PORT'"),
    ("2001:db8::zz", "[ADDR]:PORT"),
])
def test_bad_listen_values(text, says):
    with pytest.raises(ListenError, match=re.escape(says)):
        parse_listen(text)


def test_bad_listen_and_duration_are_usage_errors(capsys):
    assert run_metrics(argparse.Namespace(listen="127.0.0.1:99999", duration=None)) == EXIT_USAGE
    assert "hepbpf: --listen '127.0.0.1:99999': port '99999'" in capsys.readouterr().err
    assert run_metrics(argparse.Namespace(listen="127.0.0.1:0", duration=0.0)) == EXIT_USAGE
    assert "hepbpf: --duration: must be more than 0 seconds, got 0" in capsys.readouterr().err


# --- the HTTP handler, over a socketpair -------------------------------------------------

class _FakeServer:
    def __init__(self, collect):
        self.collect = collect


def _request(collect, raw: bytes) -> tuple[str, dict[str, str], bytes]:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.settimeout(5)
        ours.sendall(raw)
        t = threading.Thread(target=_Handler, args=(theirs, ("test", 0), _FakeServer(collect)), daemon=True)
        t.start()
        t.join(timeout=5)
        assert not t.is_alive()
        theirs.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := ours.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines)}
    return status, headers, body


def test_handler_serves_metrics_index_404_and_500():
    calls = []

    def collect():
        calls.append(1)
        return [_state()]

    status, headers, body = _request(collect, b"GET /metrics?x=1 HTTP/1.0\r\n\r\n")
    assert status.split()[1] == "200" and headers["content-type"] == CONTENT_TYPE
    assert int(headers["content-length"]) == len(body)
    assert value(parse_exposition(body.decode()), "hepbpf_rule_packets_total", rule=0) == 5
    assert len(calls) == 1  # read on the scrape, once

    status, headers, body = _request(collect, b"HEAD /metrics HTTP/1.0\r\n\r\n")
    assert status.split()[1] == "200" and body == b"" and len(calls) == 2

    status, _, body = _request(collect, b"GET / HTTP/1.0\r\n\r\n")
    assert status.split()[1] == "200" and b'href="/metrics"' in body

    status, _, _ = _request(collect, b"GET /other HTTP/1.0\r\n\r\n")
    assert status.split()[1] == "404"

    def broken():
        raise OSError(9, "Bad file descriptor")

    status, _, body = _request(broken, b"GET /metrics HTTP/1.0\r\n\r\n")
    assert status.split()[1] == "500" and b"reading the counters failed" in body
