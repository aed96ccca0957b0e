"""`hepbpf top` without a kernel: rows, rates, sorting, filtering, the
header's facts and the screen's layout, from hand-made status() dicts; the
key handling; and run_top's batch mode and refusals with status() stubbed."""

from __future__ import annotations

import argparse
import re

import pytest

from hepbpf import top
from hepbpf.top import Controller, View, fmt_count, fmt_rate, parse_keys, render, rows, sample, select_rows

# (chain, slot, action, reason, stage, tier, policy, rule)
SLOTS = [
    ("ingress", 0, "Allow", "failsafe", "failsafe", None, None, 0),
    ("ingress", 1, "Conntrack", "conntrack", "conntrack", None, None, None),
    ("ingress", 2, "Deny", "rule-deny", "normal", "default", "web-deny", 0),
    ("ingress", 3, "Allow", "rule-allow", "normal", "default", "web-deny", 1),
    ("ingress", 4, "Allow", "rule-allow", "normal", "security", "admin-ssh", 0),
    ("ingress", 5, "Deny", "end-of-tier", "normal", "default", None, None),
    ("egress", 0, "Forward", "none", "forward", None, None, None),
    ("egress", 1, "Deny", "no-profile", "profile", None, None, None),
]


def state(counts: dict[tuple[str, int], tuple[int, int]], *, iface="eth1", prog_id=41, **extra) -> dict:
    """A status() dict; ``counts[(chain, slot)] = (packets, bytes)``."""
    rules = [{"chain": c, "slot": s, "action": a, "reason": r, "stage": st, "tier": t, "policy": p, "rule": ru,
              "packets": counts.get((c, s), (0, 0))[0], "bytes": counts.get((c, s), (0, 0))[1]}
             for c, s, a, r, st, t, p, ru in SLOTS]
    by_chain: dict = {"ingress": {}, "egress": {}}
    for r in rules:
        c = by_chain[r["chain"]].setdefault(r["reason"], {"packets": 0, "bytes": 0})
        c["packets"] += r["packets"]
        c["bytes"] += r["bytes"]
    st = {"iface": iface, "mode": "native", "prog_id": prog_id, "tc_mechanism": "tcx", "tc_prog_id": prog_id + 1,
          "pin_dir": f"/sys/fs/bpf/hepbpf/{iface}", "node": "n1", "host_endpoint": f"n1-{iface}",
          "attached": True, "rules": rules, "reasons_by_chain": by_chain,
          "reasons": {k: v for ch in by_chain.values() for k, v in ch.items()},
          "conntrack": {"flows": 3, "size": 65536, "events": {"created": 3}}}
    st.update(extra)
    return st


BEFORE = {("ingress", 0): (10, 600), ("ingress", 2): (100, 6000), ("ingress", 3): (50, 100_000),
          ("ingress", 4): (5, 300), ("egress", 1): (7, 420)}
AFTER = {("ingress", 0): (12, 720), ("ingress", 2): (100, 6000), ("ingress", 3): (90, 180_000),
         ("ingress", 4): (25, 1500), ("egress", 1): (7, 420)}


def two(before=BEFORE, after=AFTER, dt=2.0, **extra):
    a = sample([state(before, **extra)], at=100.0, wall=1_700_000_000.0)
    b = sample([state(after, **extra)], at=100.0 + dt, wall=1_700_000_000.0 + dt)
    return a, b


def by_slot(rs):
    return {(r.chain, r.slot): r for r in rs}


def table_rows(lines: list[str]) -> list[str]:
    start = next(i for i, line in enumerate(lines) if line.startswith("IFACE "))
    return [line for line in lines[start + 1:] if line.startswith("eth")]


# --- rows and rates -------------------------------------------------------------------

def test_rates_are_the_counter_difference_over_the_interval():
    a, b = two(dt=2.0)
    r = by_slot(rows(a, b))
    assert r[("ingress", 3)].pkt_rate == 20.0 and r[("ingress", 3)].byte_rate == 40_000.0
    assert r[("ingress", 4)].pkt_rate == 10.0
    assert r[("ingress", 2)].pkt_rate == 0.0  # busy before, idle now
    assert r[("ingress", 3)].packets == 90 and r[("ingress", 3)].bytes == 180_000


def test_first_sample_has_no_rates():
    _, b = two()
    assert all(r.pkt_rate is None and r.byte_rate is None for r in rows(None, b))
    line = next(x for x in table_rows(render(None, b)) if "admin-ssh" in x)
    assert line.split()[4:6] == ["-", "-"]


def test_a_replaced_program_or_a_counter_going_back_means_no_rate():
    a = sample([state(BEFORE, prog_id=41)], at=0.0, wall=0.0)
    b = sample([state(AFTER, prog_id=77)], at=1.0, wall=1.0)
    assert all(r.pkt_rate is None for r in rows(a, b))
    back = dict(AFTER)
    back[("ingress", 3)] = (1, 60)
    a, b = two(after=back)
    r = by_slot(rows(a, b))
    assert r[("ingress", 3)].pkt_rate is None
    assert r[("ingress", 4)].pkt_rate == 10.0


def test_rows_of_each_interface_are_kept_apart():
    a = sample([state(BEFORE, iface="eth1"), state({}, iface="eth2", prog_id=50)], at=0.0, wall=0.0)
    b = sample([state(AFTER, iface="eth1"), state({("ingress", 2): (4, 240)}, iface="eth2", prog_id=50)],
               at=1.0, wall=1.0)
    rs = rows(a, b)
    assert len(rs) == 2 * len(SLOTS)
    eth2 = {(r.chain, r.slot): r for r in rs if r.iface == "eth2"}
    assert eth2[("ingress", 2)].pkt_rate == 4.0 and eth2[("ingress", 2)].packets == 4


def test_missing_keys_and_empty_rules_are_not_errors():
    a = sample([{"iface": "eth1", "attached": True}], at=0.0, wall=0.0)
    b = sample([{"iface": "eth1", "attached": True}], at=1.0, wall=1.0)
    lines = render(a, b)
    assert "(no rules)" in lines and any(line.startswith("eth1: ENFORCING") for line in lines)


# --- sorting and filtering ------------------------------------------------------------

def test_sort_by_rate_then_total():
    a, b = two()
    order = [(r.chain, r.slot) for r in select_rows(rows(a, b), "rate")]
    # 20/s, 10/s, 1/s, then the idle ones by total (100, 7), then the rest in evaluation order.
    assert order[:5] == [("ingress", 3), ("ingress", 4), ("ingress", 0), ("ingress", 2), ("egress", 1)]
    assert order[5:] == [("ingress", 1), ("ingress", 5), ("egress", 0)]


def test_sort_by_packets_bytes_and_policy():
    a, b = two()
    rs = rows(a, b)
    assert [(r.chain, r.slot) for r in select_rows(rs, "packets")][:4] == \
        [("ingress", 2), ("ingress", 3), ("ingress", 4), ("ingress", 0)]
    assert [(r.chain, r.slot) for r in select_rows(rs, "bytes")][:3] == \
        [("ingress", 3), ("ingress", 2), ("ingress", 4)]
    # By policy name and rule; slots of no policy after, by what they are.
    assert [r.who + (f"/{r.rule}" if r.policy else "") for r in select_rows(rs, "policy")] == \
        ["admin-ssh/0", "web-deny/0", "web-deny/1", "(conntrack)", "(end-of-tier)", "(failsafe)", "(forward)",
         "(no-profile)"]
    with pytest.raises(ValueError):
        select_rows(rs, "colour")


@pytest.mark.parametrize("text, expect", [
    ("web", {("ingress", 2), ("ingress", 3)}),       # policy
    ("SECURITY", {("ingress", 4)}),                  # tier, any case
    ("deny", {("ingress", 2), ("ingress", 3), ("ingress", 5), ("egress", 1)}),  # action, reason, policy
    ("failsafe", {("ingress", 0)}),                  # reason
    ("conntrack", {("ingress", 1)}),                 # action and reason
    ("no such thing", set()),
])
def test_filter_matches_policy_tier_action_reason(text, expect):
    a, b = two()
    assert {(r.chain, r.slot) for r in select_rows(rows(a, b), "rate", text)} == expect


def test_filtered_screen_says_when_nothing_matches():
    a, b = two()
    lines = render(a, b, View(filt="nope"))
    assert "(no rule matches 'nope')" in lines and table_rows(lines) == []
    assert "filter: 'nope'" in lines[0]


# --- numbers --------------------------------------------------------------------------

@pytest.mark.parametrize("x, text", [(None, "-"), (0, "0"), (0.0, "0"), (0.34, "0.3"), (7.5, "7.5"), (42.4, "42"),
                                     (999.4, "999"), (999.6, "1.0k"), (1234, "1.2k"), (56_789, "56.8k"),
                                     (123_456, "123k"), (3_400_000, "3.4M"), (7.2e9, "7.2G")])
def test_fmt_rate(x, text):
    assert fmt_rate(x) == text


@pytest.mark.parametrize("n, text", [(0, "0"), (7, "7"), (999_999, "999999"), (1_000_000, "1.0M"),
                                     (123_456_789, "123M"), (5 * 10**12, "5.0T")])
def test_fmt_count(n, text):
    assert fmt_count(n) == text


# --- the header -----------------------------------------------------------------------

def test_header_shows_mode_programs_conntrack_events_and_reasons():
    a, b = two(events={"emitted": 12, "suppressed": 3, "lost": 1})
    lines = render(a, b, View(delay=2.0), once=True)
    text = "\n".join(lines)
    assert lines[0].startswith("hepbpf top - ") and "rates over 2 s" in lines[0] and "sort: rate" in lines[0]
    assert "eth1: ENFORCING" in lines
    assert "XDP native prog 41, egress tcx prog 42, host endpoint n1-eth1, node n1" in text
    assert "conntrack 3 flows of 65536; events 12 emitted, 3 suppressed, 1 lost" in text
    assert ("packets by reason: ingress failsafe 12, rule-deny 100, rule-allow 115 | egress no-profile 7"
            in text)
    assert "AUDIT" not in text
    assert "\x1b" not in text  # plain text: no escapes


def test_audit_mode_is_unmistakable():
    a, b = two(audit=True, would_drop={"ingress": {"packets": 100, "bytes": 6000}, "egress": {"packets": 7}})
    lines = render(a, b)
    assert "eth1: AUDIT: nothing is dropped, would-be drops are only counted" in lines
    assert "ENFORCING" not in "\n".join(lines)
    assert "  would have dropped: ingress 100 packets, egress 7 packets" in lines
    styles = dict((t, s) for s, t in top.screen(a, b, View()))
    assert styles["eth1: AUDIT: nothing is dropped, would-be drops are only counted"] == "alert"


def test_pending_confirmation_and_stale_state():
    a, b = two(pending_confirmation={"deadline": 1_700_000_002.0 + 42})
    assert any("UNCONFIRMED: this attach rolls back in 42 s (" in line for line in render(a, b))
    a, b = two(pending_confirmation={"deadline": 1_700_000_002.0 + 5, "rollback_to": "the previous policy"})
    assert any("UNCONFIRMED: this attach rolls back to the previous policy in 5 s (" in line
               for line in render(a, b))
    # A stale state keeps the event settings under "events": no counts to show.
    a, b = two(events={"log": False, "rate": 100})
    assert not any("emitted" in line for line in render(a, b))
    stale = sample([state({}, attached=False)], at=0.0, wall=0.0)
    assert "eth1: NOT ATTACHED (stale state)" in render(None, stale)
    assert "hepbpf is not attached anywhere" in render(None, sample([], at=0.0, wall=0.0))
    assert "eth1: hepbpf is not attached" in render(None, sample([], at=0.0, wall=0.0), iface="eth1")


# --- the table ------------------------------------------------------------------------

def test_audited_rules_say_so_and_filter_by_it():
    a, b = two()
    for st in (a.states[0], b.states[0]):
        for r in st["rules"]:
            r["audited"] = r["policy"] == "web-deny" and r["action"] == "Deny"
    lines = render(a, b, View(filt="audit"), once=True)
    body = table_rows(lines)
    assert [line.split()[3] for line in body] == ["Deny(audit)"]
    assert body[0].split()[9:] == ["web-deny", "0"]


def test_table_columns_and_cells():
    a, b = two()
    lines = render(a, b, once=True)
    head = next(line for line in lines if line.startswith("IFACE "))
    assert head.split() == ["IFACE", "DIR", "SLOT", "ACTION", "PKT/S", "BYTES/S", "PACKETS", "BYTES", "TIER",
                            "POLICY", "RULE"]
    body = table_rows(lines)
    assert len(body) == len(SLOTS)  # --once: every row, idle ones too
    assert body[0].split() == ["eth1", "ingress", "3", "Allow", "20", "40.0k", "90", "180000", "default",
                               "web-deny", "1"]
    cells = {tuple(line.split()[1:3]): line.split() for line in body}
    assert cells[("ingress", "0")][8:] == ["-", "(failsafe)", "0"]
    assert cells[("ingress", "5")][8:] == ["default", "(end-of-tier)", "-"]
    assert cells[("egress", "1")][8:] == ["-", "(no-profile)", "-"]
    # Numbers right-aligned: the rate column ends at the same place on every line.
    col = head.index("PKT/S") + len("PKT/S")
    assert all(line[col - 1] != " " for line in body)


def test_screen_fits_the_terminal_and_scrolls():
    many = {("ingress", s): (s, s) for s in range(6)}
    a = sample([state({}), state({}, iface="eth2", prog_id=60)], at=0.0, wall=0.0)
    b = sample([state(many), state(many, iface="eth2", prog_id=60)], at=1.0, wall=1.0)
    view = View()
    lines = render(a, b, view, width=50, height=20)
    assert len(lines) == 20 and all(len(line) <= 50 for line in lines)
    header_len = next(i for i, line in enumerate(lines) if line.startswith(("IFACE", "DIR")))
    room = 20 - header_len - 2
    assert room < 2 * len(SLOTS)
    assert lines[-1].startswith(f"[rows 1-{room} of {2 * len(SLOTS)}]  q quit")
    full = render(a, b, View(), width=200, height=20)
    assert full[-1] == f"[rows 1-{room} of {2 * len(SLOTS)}]  {top.HELP}"
    # Scrolled to the end: the last rows show, and the offset is clamped.
    view = View(offset=999)
    scrolled = render(a, b, view, width=200, height=20)
    assert view.offset == 2 * len(SLOTS) - room
    assert f"[rows {view.offset + 1}-{2 * len(SLOTS)} of {2 * len(SLOTS)}]" in scrolled[-1]
    first_page, last_page = table_rows(full), table_rows(scrolled)
    assert len(first_page) == len(last_page) == room
    assert first_page[view.offset:] == last_page[:room - view.offset]  # overlapping pages agree
    assert last_page[-1] not in first_page


def test_narrow_screen_drops_minor_columns_before_the_policy():
    a, b = two()
    head = next(line for line in render(a, b, width=60, height=30) if line.startswith(("IFACE", "DIR")))
    assert head.split() == ["IFACE", "DIR", "ACTION", "PKT/S", "PACKETS", "POLICY", "RULE"]
    assert any("web-deny" in line for line in render(a, b, width=60, height=30))


def test_interactive_screen_marks_the_column_header_and_help():
    a, b = two()
    sc = top.screen(a, b, View(), width=120, height=30, status_line="help here")
    assert sc[-1] == ("title", "help here")
    assert [s for s, t in sc if t.startswith("IFACE ")] == ["title"]


# --- keys -----------------------------------------------------------------------------

def test_parse_keys():
    assert parse_keys(b"qs/") == ["q", "s", "/"]
    assert parse_keys(b"\x1b[A\x1b[B\x1b[5~\x1b[6~\x1bOH") == ["up", "down", "pgup", "pgdn", "home"]
    assert parse_keys(b"\x1b") == ["esc"]
    assert parse_keys(b"ab\r\x7f") == ["a", "b", "enter", "backspace"]
    assert parse_keys(b"\x1b[1;5C") == []  # a key we do not use


def test_controller_sort_keys():
    c = Controller(View())
    seen = []
    for _ in range(4):
        c.key("s")
        seen.append(c.view.sort)
    assert seen == ["packets", "bytes", "policy", "rate"]
    for k, sort in (("o", "policy"), ("b", "bytes"), ("p", "packets"), ("r", "rate")):
        c.key(k)
        assert c.view.sort == sort


def test_controller_filter_typing_enter_escape_clear():
    c = Controller(View(filt="old"))
    for k in ["/", "w", "e", "x", "backspace", "b"]:
        c.key(k)
    assert c.editing == "web" and c.view.filt == "web"  # shown live while typed
    assert "web_" in c.status_line()
    c.key("q")  # typed, not quit
    assert not c.quit and c.view.filt == "webq"
    c.key("backspace")
    c.key("enter")
    assert c.editing is None and c.view.filt == "web"
    c.key("/")
    c.key("z")
    c.key("esc")  # cancel: the filter before is back
    assert c.editing is None and c.view.filt == "web"
    c.key("c")
    assert c.view.filt == ""


def test_controller_pause_delay_scroll_quit():
    c = Controller(View(delay=1.0))
    c.key(" ")
    assert c.view.paused and not c.resample
    c.key(" ")
    assert not c.view.paused and c.resample
    c.key("+")
    assert c.view.delay == 2.0
    c.key("-")
    c.key("-")
    assert c.view.delay == 0.5
    for _ in range(20):
        c.key("-")
    assert c.view.delay == 0.1
    c.key("j")
    c.key("j")
    c.key("k")
    assert c.view.offset == 1
    c.key("s")
    assert c.view.offset == 0
    assert not c.quit
    c.key("q")
    assert c.quit


# --- run_top with status() stubbed ----------------------------------------------------

def args(**kw):
    base = {"iface": "eth1", "delay": 0.1, "once": True, "sort": "rate", "filter": ""}
    base.update(kw)
    return argparse.Namespace(**base)


def test_once_prints_a_plain_snapshot(monkeypatch, capsys):
    readings = iter([[state(BEFORE)], [state(AFTER)]])
    monkeypatch.setattr(top, "_status", lambda iface: next(readings))
    assert top.run_top(args(sort="policy", filter="web")) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out
    body = table_rows(out.splitlines())
    assert [line.split()[9:] for line in body] == [["web-deny", "0"], ["web-deny", "1"]]
    # Rates over the real interval the two readings were taken apart.
    rate = float(body[1].split()[4].rstrip("k"))
    assert body[1].split()[6] == "90" and rate > 0


@pytest.mark.parametrize("iface, code, message", [("eth1", 1, "eth1: hepbpf is not attached"),
                                                  (None, 0, "hepbpf is not attached anywhere")])
def test_once_with_nothing_attached(monkeypatch, capsys, iface, code, message):
    monkeypatch.setattr(top, "_status", lambda i: [])
    assert top.run_top(args(iface=iface)) == code
    assert capsys.readouterr().out.strip() == message


def test_interactive_needs_a_terminal(monkeypatch, capsys):
    called = []
    monkeypatch.setattr(top, "_status", lambda i: called.append(i) or [state({})])
    # pytest captures stdout: not a TTY.
    assert top.run_top(args(once=False)) == 2
    assert "hepbpf top needs a terminal; use --once for a batch snapshot" in capsys.readouterr().err
    assert called == []


@pytest.mark.parametrize("delay", [0, -1, 0.01, 4000])
def test_delay_out_of_range(monkeypatch, capsys, delay):
    monkeypatch.setattr(top, "_status", lambda i: pytest.fail("sampled"))
    assert top.run_top(args(delay=delay)) == 2
    assert re.search(r"--delay must be between 0\.1 and 3600 seconds", capsys.readouterr().err)
