"""`hepbpf check` and `hepbpf explain` (reference evaluator): output, exit
codes, and that they touch no kernel state (they run unprivileged)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

DEMO = str(Path(__file__).parent.parent.parent / "vm" / "policies" / "metrics-allowlist.yaml")


def hepbpf(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hepbpf.cli", *args], capture_output=True, text=True,
                          input=stdin, timeout=60)


def test_check_summarises_and_exits_zero():
    res = hepbpf("check", DEMO, "--node", "lab-node", "--iface", "eth1")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0] == "valid: 1 GlobalNetworkPolicy, 1 GlobalNetworkSet, 1 HostEndpoint"
    assert "host endpoint lab-node.eth1, 1 tier(s), 1 ingress policies, 9 failsafe ports" in res.stdout


def test_check_reports_every_error_and_exits_one():
    bad = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: p}\n" \
          "spec:\n  ingress:\n  - action: allow\n  - action: Allow\n    protocol: tcp\n"
    res = hepbpf("check", "-", stdin=bad)
    assert res.returncode == 1
    assert res.stderr.splitlines() == [
        "<stdin>:6:13: spec.ingress[0].action = 'allow': action must be one of Allow, Deny, Log, Pass",
        "hepbpf: 1 error; nothing was changed",
    ]


def test_check_missing_file():
    res = hepbpf("check", "/nonexistent/policy.yaml")
    assert res.returncode == 1 and "No such file or directory" in res.stderr


@pytest.mark.parametrize("spec, verdict, reason, policy, rule", [
    ("tcp 198.51.100.7:40000 -> 192.0.2.1:9091", "allow", "rule-allow", "restrict-calico-node-prometheus", 0),
    ("tcp 203.0.113.9:40000 -> 192.0.2.1:9091", "deny", "end-of-tier", None, None),
    ("tcp 203.0.113.9:40000 -> 192.0.2.1:22", "allow", "failsafe", None, 0),
    ("udp [2001:db8::5]:53 -> [2001:db8::1]:53", "deny", "end-of-tier", None, None),
    ("icmp 198.51.100.7 -> 192.0.2.1 type 8 code 0", "deny", "end-of-tier", None, None),
    ("proto 47 198.51.100.7 -> 192.0.2.1", "deny", "end-of-tier", None, None),
])
def test_explain_json(spec, verdict, reason, policy, rule):
    res = hepbpf("explain", DEMO, "--node", "lab-node", "--iface", "eth1", "--packet", spec)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert (out["verdict"], out["reason"], out["policy"], out["rule"]) == (verdict, reason, policy, rule)


def test_explain_several_packets_in_order():
    specs = ["tcp 198.51.100.7:1 -> 192.0.2.1:9091", "tcp 198.51.100.8:1 -> 192.0.2.1:9091"]
    res = hepbpf("explain", DEMO, "--node", "lab-node", "--iface", "eth1", "--packet", specs[0],
                 "--packet", specs[1])
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    assert [line["verdict"] for line in lines] == ["allow", "deny"]


def test_explain_bad_packet_is_a_usage_error():
    res = hepbpf("explain", DEMO, "--node", "lab-node", "--iface", "eth1", "--packet", "tcp 1.2.3.4 -> 5.6.7.8")
    assert res.returncode == 2 and "need ports" in res.stderr


def test_check_warns_about_policy_selecting_no_host_endpoint(tmp_path):
    text = Path(DEMO).read_text().replace('selector: running-calico == "true"', 'selector: running-calico == "yes"')
    path = tmp_path / "p.yaml"
    path.write_text(text)
    res = hepbpf("check", str(path))
    assert res.returncode == 0
    assert "warning: spec.selector = 'running-calico == \"yes\"': selects none of the host endpoints" \
        in res.stderr
