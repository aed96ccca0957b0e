"""`hepbpf log`: stream Log records and drop events.

Text lines are the kernel LOG target's (what Calico's Log action prints,
prefix "calico-packet: "), byte for byte from the captured frame
(hepbpf/logline.py), followed by the attribution hepbpf knows and the
kernel LOG line never had. JSON lines carry the same as named fields.

Without -f: print what the ring holds now and exit. With -f: follow.
A ring has one read position, so two `hepbpf log` at once share the
records between them; run one.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import logging.handlers
import signal
import sys
import time

from hepbpf.loader import attach as attach_mod
from hepbpf.loader.events import Decoder, Event, event_totals, read_ev_stats
from hepbpf.loader.libbpf import RingBuffer
from hepbpf.loader.mapnames import EV_STATS, EVENTS
from hepbpf.logline import log_line

REPORT_EVERY_S = 10.0


def attribution(ev: Event) -> str:
    """The fields appended to the LOG line: what decided, and why."""
    parts = [f"EVENT={ev.kind}", f"DIR={ev.direction}"]
    for key, value in (("STAGE", ev.stage), ("TIER", ev.tier), ("POLICY", ev.policy), ("RULE", ev.rule),
                       ("ACTION", ev.action)):
        if value is not None:
            parts.append(f"{key}={value}")
    if ev.tier_policies:
        parts.append(f"TIER_POLICIES={','.join(ev.tier_policies)}")
    parts += [f"VERDICT={ev.verdict}", f"REASON={ev.reason}"]
    if ev.audit:
        parts.append("AUDIT=1")
    return " ".join(parts)


def text_line(ev: Event, prefix: str) -> str:
    if ev.direction == "ingress":
        in_dev, out_dev = ev.iface, ""
    else:
        in_dev, out_dev = ev.in_iface, ev.iface
    return log_line(ev.frame, in_dev=in_dev, out_dev=out_dev, prefix=prefix) + attribution(ev)


class Filter:
    """--verdict, --event, --policy, --ip, --port, --direction: all must hold."""

    def __init__(self, args):
        self.verdict = args.verdict
        self.event = args.event
        self.policy = args.policy
        self.direction = args.direction
        self.nets = [ipaddress.ip_network(a, strict=False) for a in args.ip or ()]
        self.ports = set(args.port or ())

    def __call__(self, ev: Event) -> bool:
        if self.verdict and ev.verdict != self.verdict:
            return False
        if self.event and ev.kind not in self.event:
            return False
        if self.policy and ev.policy not in self.policy:
            return False
        if self.direction and ev.direction != self.direction:
            return False
        if self.nets:
            addrs = [ipaddress.ip_address(a) for a in (ev.src, ev.dst) if a]
            if not any(a in n for a in addrs for n in self.nets if a.version == n.version):
                return False
        if self.ports and not ({ev.sport, ev.dport} & self.ports):
            return False
        return True


def _syslog(target: str) -> logging.Logger:
    """Records to syslog (journald reads /dev/log), as the daemon facility at
    notice level - the kernel's LOG lines are level 5 too."""
    log = logging.getLogger("hepbpf.events")
    log.propagate = False
    address = target if target.startswith("/") else (target.rsplit(":", 1)[0], int(target.rsplit(":", 1)[1]))
    handler = logging.handlers.SysLogHandler(address=address, facility=logging.handlers.SysLogHandler.LOG_DAEMON)
    handler.mapPriority = lambda _levelname: "notice"  # type: ignore[method-assign]
    handler.setFormatter(logging.Formatter("hepbpf: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return log


class _Source:
    """The rings and counters of the attached interfaces."""

    def __init__(self, iface: str | None, decoder: Decoder):
        states = [st for st in attach_mod.status(iface) if st.get("attached")]
        if not states:
            raise LookupError(f"{iface}: hepbpf is not attached" if iface else "hepbpf is not attached anywhere")
        self.rings, self.stats, self.ifaces = [], [], []
        for st in states:
            maps = attach_mod.maps_of(st["prog_id"], (EVENTS, EV_STATS))
            if EVENTS not in maps:
                for m in maps.values():
                    m.close()
                continue
            self.rings.append(maps[EVENTS])
            self.stats.append(maps.get(EV_STATS))
            self.ifaces.append(st["iface"])
            decoder.set_slots(st["iface"], (attach_mod.read_state(st["iface"]) or {}).get("slots", []))
        if not self.rings:
            raise LookupError("the attached programs have no event ring (re-attach with this version)")
        self.ring = RingBuffer(m.fd for m in self.rings)

    def counts(self) -> dict[str, int]:
        out = {"suppressed": 0, "lost": 0}
        for m in self.stats:
            if m is None:
                continue
            totals = event_totals(read_ev_stats(m))
            for k in out:
                out[k] += totals[k]
        return out

    def close(self) -> None:
        self.ring.close()
        for m in self.rings + [m for m in self.stats if m is not None]:
            m.close()


def run_log(args) -> int:
    decoder = Decoder()
    try:
        src = _Source(args.iface, decoder)
    except LookupError as e:
        print(f"hepbpf: {e}", file=sys.stderr)
        return 1
    keep = Filter(args)
    sink = _syslog(args.syslog) if args.syslog else None
    start = src.counts()
    shown = 0
    deadline = None if args.duration is None else time.monotonic() + args.duration
    next_report = time.monotonic() + REPORT_EVERY_S
    reported = dict(start)

    def emit(records) -> None:
        nonlocal shown
        for _, raw in records:
            ev = decoder.decode(raw)
            if ev is None or not keep(ev):
                continue
            line = json.dumps(ev.as_json()) if args.output == "json" else text_line(ev, args.prefix)
            print(line, flush=args.follow)
            if sink is not None:
                sink.info(text_line(ev, args.prefix))
            shown += 1
            if args.count and shown >= args.count:
                raise StopIteration

    def report(final: bool) -> None:
        now = src.counts()
        delta = {k: now[k] - start[k] for k in now}
        if final or any(now[k] != reported[k] for k in now):
            print(f"hepbpf: {shown} events shown; since start {delta['suppressed']} suppressed by the rate "
                  f"limit, {delta['lost']} lost (ring full); since attach {now['suppressed']} suppressed, "
                  f"{now['lost']} lost", file=sys.stderr, flush=True)
            reported.update(now)

    def stop(_sig, _frame):
        raise KeyboardInterrupt

    # A service manager stops us with SIGTERM: still print the summary.
    signal.signal(signal.SIGTERM, stop)
    try:
        emit(src.ring.drain())
        while args.follow and (deadline is None or time.monotonic() < deadline):
            emit(src.ring.poll(200))
            if time.monotonic() >= next_report:
                report(False)
                next_report = time.monotonic() + REPORT_EVERY_S
    except StopIteration:
        pass
    except KeyboardInterrupt:
        pass
    finally:
        report(True)
        src.close()
    return 0
