"""`hepbpf metrics` on the lab: real traffic counted by the attached program,
scraped over HTTP inside the namespaces, and the README's example policy
protecting the metrics port itself.

The server runs as users run it (`ip netns exec NODE hepbpf metrics ...`),
a subprocess whose first line says where it listens; scrapes are
subprocesses in the scraping namespace (http.client, from a chosen source
address). Every one is bounded in time; the server is stopped by its PID.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from hepbpf.vm.lab import NODE4
from hepbpf.vm.probe import PacketSpec, probe

from ..cases import NODE, deny_then_allow
from ..unit.test_metrics_render import parse_exposition, value
from .conftest import hepbpf, status

pytestmark = pytest.mark.netns

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PROTECT_HEADING = "### Protecting the metrics port"
SRC = "198.51.100.7"  # client 1's extra address (the lab fixture's)
DENY_PORT, ALLOW_PORT = 7001, 7002  # outside every failsafe list
N_DENY, N_ALLOW = 5, 3
START_S = 20.0  # the server's first line, at most this late
SERVER_S = 30  # --duration: the server stops by itself even if we never get to

_LINE_RE = re.compile(r"^serving metrics on (http://(\S+):(\d+)/metrics) for ")

# One GET from inside a namespace, from a given source address: prints the
# status code and the body, or "timeout" when nothing answered in time.
_SCRAPE = r"""
import http.client, sys, urllib.parse
url, src, t = urllib.parse.urlsplit(sys.argv[1]), sys.argv[2], float(sys.argv[3])
c = http.client.HTTPConnection(url.hostname, url.port, timeout=t, source_address=(src, 0) if src else None)
try:
    c.request("GET", url.path)
    r = c.getresponse()
    body = r.read()
except TimeoutError:
    print("timeout")
    sys.exit(3)
sys.stdout.write(f"{r.status}\n{body.decode()}")
"""


@contextlib.contextmanager
def metrics_server(lab, listen: str, duration: float = SERVER_S):
    """`hepbpf metrics --listen LISTEN` in the node namespace; yields
    (url, its first line, the Popen). Stopped by its PID (SIGTERM, then
    SIGKILL) if still running."""
    argv = ["ip", "netns", "exec", lab.node_ns, sys.executable, "-m", "hepbpf.cli", "metrics",
            "--listen", listen, "--duration", str(duration)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
    try:
        line = _first_line(proc, time.monotonic() + START_S)
        m = _LINE_RE.match(line)
        assert m, f"unexpected first line: {line!r}"
        yield m.group(1), line, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        for f in (proc.stdout, proc.stderr):
            f.close()


def _first_line(proc: subprocess.Popen, deadline: float) -> str:
    fd, buf = proc.stdout.fileno(), b""
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("hepbpf metrics printed nothing in time")
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 4096)
            if not chunk:
                proc.wait(timeout=5)
                raise AssertionError(f"hepbpf metrics exited {proc.returncode}: "
                                     f"{proc.stderr.read().decode(errors='replace')}")
            buf += chunk
    return buf.split(b"\n", 1)[0].decode()


def scrape(lab, ns: str, url: str, src: str | None = None, timeout: float = 5.0) -> tuple[int, str] | None:
    """(status, body) of GET url from namespace ``ns``, None on a timeout."""
    res = lab.exec(ns, [sys.executable, "-c", _SCRAPE, url, src or "", str(timeout)], check=False,
                   timeout=timeout + 15)
    if res.returncode == 3 and res.stdout.strip() == "timeout":
        return None
    assert res.returncode == 0, f"scrape {url} from {src or ns}: exit {res.returncode}: {res.stderr.strip()}"
    code, _, body = res.stdout.partition("\n")
    return int(code), body


def _attach(lab, tmp_path, text: str, node: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    hepbpf(lab, "detach", "eth1", check=False)  # fresh counters
    hepbpf(lab, "attach", "eth1", str(path), "--node", node)


@pytest.fixture
def detached(lab):
    yield
    hepbpf(lab, "detach", "eth1", check=False)


# --- counters of known traffic -----------------------------------------------------

METRICS_TEST = deny_then_allow("metrics-test", DENY_PORT, ALLOW_PORT)


def test_rule_and_reason_counters_count_the_traffic(lab, tmp_path, detached):
    _attach(lab, tmp_path, METRICS_TEST, NODE)
    # One SYN per flow (distinct source ports), so every allowed one is a
    # new flow judged by the rule, not by conntrack.
    specs = [PacketSpec("tcp", SRC, NODE4, 41000 + i, DENY_PORT) for i in range(N_DENY)] + \
            [PacketSpec("tcp", SRC, NODE4, 42000 + i, ALLOW_PORT) for i in range(N_ALLOW)]
    assert probe(lab, lab.clients[0], specs) == [False] * N_DENY + [True] * N_ALLOW

    with metrics_server(lab, "127.0.0.1:0") as (url, line, _):
        assert not url.endswith(":0/metrics"), line  # the port actually bound
        code, body = scrape(lab, lab.node_ns, url)
    assert code == 200
    fams = parse_exposition(body)
    rule = dict(iface="eth1", direction="ingress", tier="default", policy="metrics-test")
    deny_pk = value(fams, "hepbpf_rule_packets_total", **rule, rule=0, action="deny")
    allow_pk = value(fams, "hepbpf_rule_packets_total", **rule, rule=1, action="allow")
    assert (deny_pk, allow_pk) == (N_DENY, N_ALLOW)
    assert value(fams, "hepbpf_rule_packets_total", iface="eth1", direction="ingress", tier="default",
                 policy="", rule="", action="deny") == 0  # end-of-tier: nothing else came in

    reason = dict(iface="eth1", direction="ingress")
    assert value(fams, "hepbpf_reason_packets_total", **reason, reason="rule-deny") == N_DENY
    assert value(fams, "hepbpf_reason_packets_total", **reason, reason="rule-allow") == N_ALLOW
    ingress = [v for lab_, v in fams["hepbpf_reason_packets_total"]["samples"] if lab_["direction"] == "ingress"]
    assert sum(ingress) == N_DENY + N_ALLOW  # every packet has exactly one reason

    # Bytes: the rule's equal its reason's, and every probe frame is the same size.
    deny_by = value(fams, "hepbpf_rule_bytes_total", **rule, rule=0, action="deny")
    allow_by = value(fams, "hepbpf_rule_bytes_total", **rule, rule=1, action="allow")
    assert deny_by == value(fams, "hepbpf_reason_bytes_total", **reason, reason="rule-deny")
    assert allow_by == value(fams, "hepbpf_reason_bytes_total", **reason, reason="rule-allow")
    assert deny_by > 0 and deny_by / N_DENY == allow_by / N_ALLOW

    # The same numbers as `hepbpf status`, and the same program.
    st = status(lab)
    by_rule = {(r["policy"], r["rule"]): r["packets"] for r in st["rules"] if r["policy"] == "metrics-test"}
    assert by_rule == {("metrics-test", 0): N_DENY, ("metrics-test", 1): N_ALLOW}
    assert fams["hepbpf_attached_info"]["samples"] == [
        ({"iface": "eth1", "mode": st["mode"], "egress": st["tc_mechanism"], "prog_id": str(st["prog_id"])}, 1)]
    assert value(fams, "hepbpf_attached", iface="eth1") == 1
    assert value(fams, "hepbpf_audit", iface="eth1") == (1 if st.get("audit") else 0)
    assert value(fams, "hepbpf_conntrack_size", iface="eth1") == st["conntrack"]["size"]
    assert value(fams, "hepbpf_conntrack_events_total", iface="eth1", event="created") >= N_ALLOW


# --- the README's example: the metrics port protected by hepbpf itself ----------------

def _protect_yaml(text: str) -> str | None:
    """The first ```yaml block after the protection heading, if any."""
    head = text.find(PROTECT_HEADING)
    if head < 0:
        return None
    m = re.compile(r"^```yaml\n(.*?)^```$", re.M | re.S).search(text, head)
    assert m, f"no yaml block after {PROTECT_HEADING!r}"
    return m.group(1)


def readme_yaml() -> str:
    """The example as README.md shows it: what users copy is what runs."""
    doc = _protect_yaml(README.read_text())
    assert doc, f"{README}: no {PROTECT_HEADING!r} section"
    return doc


def test_readme_example_lets_only_the_listed_source_scrape(lab, tmp_path, detached):
    text = readme_yaml()
    docs = list(YAML(typ="safe").load_all(text))
    hep_ = next(d for d in docs if d["kind"] == "HostEndpoint")
    assert hep_["spec"]["interfaceName"] == "eth1" and NODE4 in hep_["spec"]["expectedIPs"]
    restrict = next(d for d in docs if d["metadata"]["name"] == "restrict-hepbpf-metrics")
    port = restrict["spec"]["ingress"][0]["destination"]["ports"][0]
    assert port == 9469
    netset = next(d for d in docs if d["kind"] == "GlobalNetworkSet")
    granted = str(ipaddress.ip_network(netset["spec"]["nets"][0]).network_address)
    c1, c2 = lab.clients
    assert granted in c1.addrs
    _attach(lab, tmp_path, text, hep_["spec"]["node"])

    with metrics_server(lab, f"{NODE4}:{port}") as (url, _, _):
        assert url == f"http://{NODE4}:{port}/metrics"
        # The listed source gets its answer ...
        code, body = scrape(lab, c1.ns, url, src=granted)
        assert code == 200 and "hepbpf_rule_packets_total" in body
        # ... any other does not, even from the same client: its SYNs are
        # dropped (a timeout, not a refusal: the server is there).
        assert scrape(lab, c1.ns, url, src=c1.addrs4[0], timeout=1.5) is None
        assert scrape(lab, c2.ns, url, timeout=1.5) is None
        code, body = scrape(lab, c1.ns, url, src=granted)
        assert code == 200
    fams = parse_exposition(body)
    at = dict(iface="eth1", direction="ingress", tier="default")
    # At least one SYN of each refused scrape, denied by the example's rule.
    assert value(fams, "hepbpf_rule_packets_total", **at, policy="restrict-hepbpf-metrics", rule=0,
                 action="deny") >= 2
    # The granted scrapes' first packets, let in by default-host.
    assert value(fams, "hepbpf_rule_packets_total", **at, policy="default-host", rule=0, action="allow") >= 2


# --- the command line ------------------------------------------------------------------

def test_duration_bad_listen_and_a_taken_port(lab):
    with metrics_server(lab, "127.0.0.1:0", duration=5) as (url, line, proc):
        assert line.endswith("for 5 s")
        port = url.rsplit(":", 1)[1].split("/")[0]
        res = hepbpf(lab, "metrics", "--listen", f"127.0.0.1:{port}", "--duration", "1", check=False)
        assert res.returncode == 1 and "cannot listen on" in res.stderr, res.stderr
        # Nothing attached: the schema, no samples.
        code, body = scrape(lab, lab.node_ns, url)
        assert code == 200 and all(not f["samples"] for f in parse_exposition(body).values())
        # --duration stops it by itself, cleanly.
        assert proc.wait(timeout=15) == 0
    res = hepbpf(lab, "metrics", "--listen", "127.0.0.1:http", check=False)
    assert res.returncode == 2 and "--listen" in res.stderr and "port 'http'" in res.stderr
