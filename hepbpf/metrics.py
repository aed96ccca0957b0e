"""`hepbpf metrics`: the counters of every attached interface, served to
Prometheus in its text exposition format (version 0.0.4).

Two halves:

* ``render(states) -> str`` is pure: the list ``loader.attach.status(None)``
  returns in, exposition text out. Every family is written with ``# HELP``
  and ``# TYPE`` (even with no samples, so the schema shows with nothing
  attached), every sample carries ``iface``, counters end in ``_total``,
  label values are escaped as the format asks (``\\``, ``"``, newline).
* ``run_metrics(args)`` serves it with the standard library's
  ThreadingHTTPServer on ``--listen`` (default 127.0.0.1:9469): ``GET
  /metrics`` reads the counters then and there (no background polling, so
  the numbers are as fresh as the scrape), ``GET /`` is a one-line index.

What becomes which metric:

* a slot with a policy (a policy rule, or the default-allow profile) or a
  tier (a tier's end-of-tier deny) counts in ``hepbpf_rule_*_total``, with
  ``rule=""`` where there is no rule index (end-of-tier, the profile) and
  ``tier=""`` for the profile, which belongs to no tier. Slots that share
  their labels are summed: a rule with named ports lowers to several slots,
  an applyOnForward policy has its rules in the normal and the forward
  section. The other slots (failsafes, conntrack, forward steering, the
  no-profile deny) have no policy to name; rather than inventing names,
  their packets are what ``hepbpf_reason_*_total`` shows under their
  reason (``failsafe``, ``conntrack``, ``no-profile``, ``forward-allow``).
* ``action`` is lower case (``allow``, ``deny``, ``pass``, ``log``), as in
  Calico's own policy metrics.
"""

from __future__ import annotations

import ipaddress
import math
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

DEFAULT_ADDR = "127.0.0.1"
DEFAULT_PORT = 9469
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
REQUEST_TIMEOUT_S = 10.0  # a client that stalls mid-request is dropped after this

# Not exported: Calico Enterprise's calico_denied_packets / calico_denied_bytes.
# Their series are keyed by srcIP as well as by the composite policy label
# ("tier|policy|rule|deny|-1"), and hepbpf counts per rule, not per source,
# so an alias could only fill srcIP with a lie or leave it out, and a
# dashboard built for Calico's series would then sum the wrong things
# silently. Being gauges, they would also double every deny series for
# every user, and the CLI has no flag to make them opt-in (the research
# note's advice). hepbpf_rule_packets_total{action="deny"} carries the
# same tier, policy and rule.

# (name, type, help) of every family, in the order they are written.
FAMILIES: tuple[tuple[str, str, str], ...] = (
    ("hepbpf_attached_info", "gauge",
     "Always 1 per interface hepbpf has state for: XDP mode, egress mechanism and program id."),
    ("hepbpf_attached", "gauge",
     "1 while hepbpf's XDP program is attached to the interface, 0 if only stale state is left."),
    ("hepbpf_audit", "gauge",
     "1 when the interface is in audit mode (verdicts counted, nothing dropped), else 0."),
    ("hepbpf_rule_packets_total", "counter",
     "Packets decided by a policy rule, a tier's end-of-tier deny (rule \"\") or the default-allow profile."),
    ("hepbpf_rule_bytes_total", "counter",
     "Bytes decided by a policy rule, a tier's end-of-tier deny (rule \"\") or the default-allow profile."),
    ("hepbpf_reason_packets_total", "counter",
     "Packets by the reason of their verdict (rule-allow, rule-deny, end-of-tier, failsafe, conntrack, ...)."),
    ("hepbpf_reason_bytes_total", "counter",
     "Bytes by the reason of their verdict."),
    ("hepbpf_would_drop_packets_total", "counter",
     "Packets audit mode let through that enforcement would have dropped."),
    ("hepbpf_would_drop_bytes_total", "counter",
     "Bytes audit mode let through that enforcement would have dropped."),
    ("hepbpf_events_total", "counter",
     "Verdict events by outcome: emitted to user space, suppressed by rate limiting, or lost (ring buffer full)."),
    ("hepbpf_conntrack_flows", "gauge",
     "Flows in the interface's conntrack table now."),
    ("hepbpf_conntrack_size", "gauge",
     "Flows the interface's conntrack table holds at most (attach --conntrack-size)."),
    ("hepbpf_conntrack_events_total", "counter",
     "Conntrack events: created, hit, related, closed, expired, create-failed, and evicted (derived)."),
)
_TYPES = {name: kind for name, kind, _ in FAMILIES}

DIRECTIONS = ("ingress", "egress")
EVENT_OUTCOMES = ("emitted", "suppressed", "lost")


# --- exposition format ---------------------------------------------------------

def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(v: float | int | bool) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v))


def _sample(name: str, labels: dict[str, str], value) -> str:
    inner = ",".join(f'{k}="{escape_label_value(str(v))}"' for k, v in labels.items())
    return f"{name}{{{inner}}} {format_value(value)}" if inner else f"{name} {format_value(value)}"


class _Families:
    """Samples grouped by family; samples with the same labels are summed
    (several slots of one rule), first-seen order kept."""

    def __init__(self):
        self._by_name: dict[str, dict[tuple, int | float]] = {name: {} for name, _, _ in FAMILIES}

    def add(self, name: str, labels: dict[str, str], value, *, sum_: bool = False) -> None:
        key = tuple(labels.items())
        series = self._by_name[name]
        series[key] = series.get(key, 0) + value if sum_ else value

    def text(self) -> str:
        out = []
        for name, kind, help_ in FAMILIES:
            out.append(f"# HELP {name} {escape_help(help_)}")
            out.append(f"# TYPE {name} {kind}")
            out += [_sample(name, dict(key), v) for key, v in self._by_name[name].items()]
        return "\n".join(out) + "\n"


def _counter(d, key: str) -> int:
    """A counter from a {packets, bytes} dict that may be absent."""
    return int((d or {}).get(key, 0) or 0)


def _label(v) -> str:
    return "" if v is None else str(v)


def render(states: Iterable[dict]) -> str:
    """The exposition text for ``status(None)``'s list: pure, no I/O."""
    fam = _Families()
    for st in states:
        iface = str(st.get("iface", ""))
        base = {"iface": iface}
        fam.add("hepbpf_attached_info", {**base, "mode": _label(st.get("mode")),
                                         "egress": _label(st.get("tc_mechanism")),
                                         "prog_id": _label(st.get("prog_id"))}, 1)
        fam.add("hepbpf_attached", base, bool(st.get("attached")))
        fam.add("hepbpf_audit", base, bool(st.get("audit", False)))

        for r in st.get("rules") or ():
            if r.get("policy") is None and r.get("tier") is None:
                continue  # failsafe, conntrack, forward, no-profile: see the reason metrics
            labels = {**base, "direction": _label(r.get("chain")), "tier": _label(r.get("tier")),
                      "policy": _label(r.get("policy")), "rule": _label(r.get("rule")),
                      "action": _label(r.get("action")).lower()}
            fam.add("hepbpf_rule_packets_total", labels, _counter(r, "packets"), sum_=True)
            fam.add("hepbpf_rule_bytes_total", labels, _counter(r, "bytes"), sum_=True)

        by_chain = st.get("reasons_by_chain") or {}
        for direction in DIRECTIONS:
            for reason, c in (by_chain.get(direction) or {}).items():
                labels = {**base, "direction": direction, "reason": str(reason)}
                fam.add("hepbpf_reason_packets_total", labels, _counter(c, "packets"))
                fam.add("hepbpf_reason_bytes_total", labels, _counter(c, "bytes"))

        would = st.get("would_drop")
        if would is not None:
            for direction in DIRECTIONS:
                labels = {**base, "direction": direction}
                fam.add("hepbpf_would_drop_packets_total", labels, _counter(would.get(direction), "packets"))
                fam.add("hepbpf_would_drop_bytes_total", labels, _counter(would.get(direction), "bytes"))

        events = st.get("events")
        if events is not None:
            for outcome in EVENT_OUTCOMES:
                fam.add("hepbpf_events_total", {**base, "outcome": outcome}, int(events.get(outcome, 0) or 0))

        ct = st.get("conntrack")
        if ct:
            fam.add("hepbpf_conntrack_flows", base, int(ct.get("flows", 0)))
            fam.add("hepbpf_conntrack_size", base, int(ct.get("size", 0)))
            for event, n in (ct.get("events") or {}).items():
                fam.add("hepbpf_conntrack_events_total", {**base, "event": str(event)}, int(n or 0))
    return fam.text()


class _Monotonic:
    """Keeps ``evicted`` from going backwards between scrapes. It is derived
    (created - closed - expired - live flows) from reads that are not one
    snapshot, so a flow created between them can make it dip by a few; a
    counter that dips reads to Prometheus as a reset, and rate() jumps. A
    new program (new prog id: its counters start at zero) starts over."""

    def __init__(self):
        self._lock = threading.Lock()
        self._seen: dict[str, tuple[object, int]] = {}

    def apply(self, states: list[dict]) -> list[dict]:
        with self._lock:
            for st in states:
                events = (st.get("conntrack") or {}).get("events")
                if not events or "evicted" not in events:
                    continue
                key, prog = str(st.get("iface")), st.get("prog_id")
                old_prog, old = self._seen.get(key, (None, 0))
                value = max(events["evicted"], old) if old_prog == prog else events["evicted"]
                events["evicted"] = value
                self._seen[key] = (prog, value)
        return states


# --- --listen --------------------------------------------------------------------

class ListenError(ValueError):
    pass


def parse_listen(text: str) -> tuple[str, int]:
    """``ADDR``, ``ADDR:PORT``, ``[IPv6]:PORT``, ``[IPv6]``, a bare IPv6
    address (no port: it needs the brackets) or ``:PORT``; a missing part
    is the default (127.0.0.1, 9469). ADDR may be a host name."""
    text = text.strip()
    if not text:
        raise ListenError("empty address")
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise ListenError(f"{text!r}: missing ']'")
        try:
            if ipaddress.ip_address(host).version != 6:
                raise ValueError
        except ValueError:
            raise ListenError(f"{text!r}: [{host}] is not an IPv6 address") from None
        if rest and not rest.startswith(":"):
            raise ListenError(f"{text!r}: expected ':PORT' after ']'")
        return host, _port(rest[1:], text) if rest else DEFAULT_PORT
    if text.count(":") > 1:
        try:
            return str(ipaddress.IPv6Address(text)), DEFAULT_PORT
        except ValueError:
            raise ListenError(f"{text!r}: not an IPv6 address (with a port, write [ADDR]:PORT)") from None
    host, sep, port = text.partition(":")
    return host or DEFAULT_ADDR, _port(port, text) if sep else DEFAULT_PORT


def _port(text: str, whole: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 0 <= int(text) <= 65535:
        raise ListenError(f"{whole!r}: port {text!r} is not a number from 0 to 65535")
    return int(text)


def resolve_listen(host: str, port: int) -> tuple[int, tuple]:
    """(address family, sockaddr) to bind; host names resolve here."""
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except socket.gaierror as e:
            raise ListenError(f"{host!r}: not an address, and the name does not resolve ({e.strerror})") from None
        family, _, _, _, sockaddr = infos[0]
        return family, sockaddr
    if addr.version == 6:
        return socket.AF_INET6, (str(addr), port, 0, 0)
    return socket.AF_INET, (str(addr), port)


# --- the server ------------------------------------------------------------------

INDEX_HTML = (b"<html><head><title>hepbpf</title></head><body><h1>hepbpf</h1>"
              b"<p><a href=\"/metrics\">/metrics</a>: per-rule and per-reason counters of every "
              b"interface hepbpf enforces policy on.</p></body></html>\n")


class MetricsServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, family: int, sockaddr: tuple, collect: Callable[[], list[dict]]):
        self.address_family = family
        self.collect = collect
        super().__init__(sockaddr, _Handler)

    def server_bind(self) -> None:
        # [::] means every address, IPv4 ones too, whatever the sysctl says.
        if self.address_family == socket.AF_INET6 and self.server_address[0] == "::":
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()

    @property
    def url(self) -> str:
        host, port = self.socket.getsockname()[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/metrics"


class _Handler(BaseHTTPRequestHandler):
    server: MetricsServer
    timeout = REQUEST_TIMEOUT_S
    server_version = "hepbpf-metrics"

    def do_GET(self) -> None:
        self._respond(body=True)

    def do_HEAD(self) -> None:
        self._respond(body=False)

    def _respond(self, body: bool) -> None:
        path = urlsplit(self.path).path
        if path == "/metrics":
            try:
                payload, ctype, code = render(self.server.collect()).encode(), CONTENT_TYPE, 200
            except Exception as e:  # noqa: BLE001 - a failed scrape must answer, not hang
                msg = f"hepbpf: reading the counters failed: {type(e).__name__}: {e}"
                print(msg, file=sys.stderr, flush=True)
                payload, ctype, code = (msg + "\n").encode(), "text/plain; charset=utf-8", 500
        elif path == "/":
            payload, ctype, code = INDEX_HTML, "text/html; charset=utf-8", 200
        else:
            payload, ctype, code = b"not found: try /metrics\n", "text/plain; charset=utf-8", 404
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def log_message(self, format, *args) -> None:  # noqa: A002 - the base class's name
        pass  # a line per scrape is noise; failures go to stderr above


def _collector() -> Callable[[], list[dict]]:
    from hepbpf.loader.attach import status

    evicted = _Monotonic()
    return lambda: evicted.apply(status(None))


def serve(server: MetricsServer, duration: float | None) -> None:
    """Serve until ``duration`` seconds pass, Ctrl-C, or SIGTERM."""
    stop = threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    worker = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                              name="hepbpf-metrics", daemon=True)
    worker.start()
    try:
        deadline = None if duration is None else time.monotonic() + duration
        while not stop.is_set():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            stop.wait(1.0 if left is None else min(left, 1.0))
    finally:
        server.shutdown()
        worker.join(timeout=5)
        server.server_close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _fail(message: str, code: int) -> int:
    # Printed here, as cli.main prints a CliError, rather than raised: under
    # `python -m hepbpf.cli` (as the tests and labs run it) the CLI module is
    # __main__, and hepbpf.cli.CliError is a class its handler does not catch.
    print(f"hepbpf: {message}", file=sys.stderr)
    return code


def run_metrics(args) -> int:
    from hepbpf.cli import EXIT_FAIL, EXIT_OK, EXIT_USAGE

    if args.duration is not None and not args.duration > 0:
        return _fail(f"--duration: must be more than 0 seconds, got {args.duration:g}", EXIT_USAGE)
    try:
        host, port = parse_listen(args.listen)
        family, sockaddr = resolve_listen(host, port)
    except ListenError as e:
        return _fail(f"--listen {e}", EXIT_USAGE)
    try:
        server = MetricsServer(family, sockaddr, _collector())
    except OSError as e:
        return _fail(f"cannot listen on {args.listen}: {e.strerror or e}", EXIT_FAIL)
    until = f" for {args.duration:g} s" if args.duration is not None else " until Ctrl-C"
    print(f"serving metrics on {server.url}{until}", flush=True)
    try:
        serve(server, args.duration)
    except KeyboardInterrupt:
        pass
    return EXIT_OK
