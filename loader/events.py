"""Reading the datapath's events: Log records and drop reports.

The kernel writes one ``struct hep_event`` per Log-rule hit, per audited
Deny passed, and per dropped (auditing: would-be dropped) packet into the
interface's ring buffer (bpf/include/events.bpf.h). This module decodes
them and attributes them: the record names a slot and the generation it
belongs to; the attach state (what ``status`` reads) names the active
generation's slots' tier, policy and rule. After an update in place the
decoder reads the state again; a record of the generation before it
(judged before the switch, read after) keeps its verdict but names no rule.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass, field

from hepbpf.compiler.mapimage import CHAIN_NAMES
from hepbpf.compiler.reasons import REASON_NAMES

from . import abi
from .percpu import read_stats

KINDS = {1: "log", 2: "drop", 3: "would-drop"}  # enum hep_event_kind
EV_STATS = ("emitted", "suppressed", "lost", "would_drop")  # enum hep_ev_stat
NO_SLOT = 0xFFFFFFFF
PROTO_NAMES = {1: "ICMP", 6: "TCP", 17: "UDP", 58: "ICMPv6", 132: "SCTP", 136: "UDPLite"}


@dataclass(frozen=True, slots=True)
class Event:
    time: float  # seconds since the epoch
    iface: str
    in_iface: str  # egress: the interface a forwarded packet came in on, else ""
    kind: str  # "log", "drop", "would-drop"
    direction: str  # "ingress", "egress"
    verdict: str  # the policy's verdict for the packet ("would-drop": before audit)
    reason: str
    audit: bool  # passed only because of audit mode
    stage: str | None
    tier: str | None
    policy: str | None
    rule: int | None
    action: str | None  # the slot's action: Log, Deny, Allow, ...
    family: int  # 4, 6, or 0 when the packet did not parse
    proto: int
    src: str | None
    dst: str | None
    sport: int | None
    dport: int | None
    icmp_type: int | None
    icmp_code: int | None
    length: int  # frame bytes
    frame: bytes = field(repr=False)  # the first bytes of the frame, from L2
    tier_policies: tuple[str, ...] = ()  # end-of-tier: the tier's policies, none of which decided

    def as_json(self) -> dict:
        return {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(self.time)) + f".{int(self.time % 1 * 1e6):06d}Z",
            "iface": self.iface, "in_iface": self.in_iface or None, "direction": self.direction,
            "event": self.kind, "stage": self.stage, "tier": self.tier, "policy": self.policy, "rule": self.rule,
            "action": self.action, "verdict": self.verdict, "reason": self.reason, "audit": self.audit,
            "proto": PROTO_NAMES.get(self.proto, self.proto) if self.family else None,
            "src": self.src, "dst": self.dst, "sport": self.sport, "dport": self.dport,
            "icmp_type": self.icmp_type, "icmp_code": self.icmp_code, "length": self.length,
            "tier_policies": list(self.tier_policies) or None,
        }


def _ifname(ifindex: int, cache: dict[int, str]) -> str:
    if not ifindex:
        return ""
    if ifindex not in cache:
        try:
            cache[ifindex] = socket.if_indextoname(ifindex)
        except OSError:
            cache[ifindex] = f"if{ifindex}"
    return cache[ifindex]


class Decoder:
    """Turns raw records into Events, given each interface's slot table."""

    REFRESH_S = 0.5  # at most this often, re-read an interface's state for a new generation

    def __init__(self):
        self._names: dict[int, str] = {}
        self._slots: dict[str, dict[tuple[str, int], dict]] = {}
        self._gens: dict[str, tuple[int | None, float]] = {}  # iface -> (generation of _slots, read at)
        self._size = abi.sizeof("struct hep_event")
        # CLOCK_MONOTONIC is bpf_ktime_get_ns()'s clock.
        self._epoch = time.time() - time.clock_gettime(time.CLOCK_MONOTONIC)

    def set_slots(self, iface: str, slots: list[dict], generation: int | None = None) -> None:
        """``generation``: whose slots these are (None: as the state says)."""
        self._slots[iface] = {(s["chain"], s["slot"]): s for s in slots}
        self._gens[iface] = (generation, 0.0)

    def _slots_of(self, iface: str, gen: int) -> dict:
        known, at = self._gens.get(iface, (None, 0.0))
        if known != gen and time.monotonic() - at > self.REFRESH_S:
            from .attach import read_state  # attach imports this module

            st = read_state(iface) or {}
            if "slots" in st:
                self._slots[iface] = {(s["chain"], s["slot"]): s for s in st["slots"]}
            known = st.get("generation", 0) if st else known
            self._gens[iface] = (known, time.monotonic())
        return self._slots.get(iface, {}) if known in (gen, None) else {}

    def decode(self, raw: bytes) -> Event | None:
        if len(raw) < self._size:
            return None
        e = abi.unpack("struct hep_event", raw)
        iface = _ifname(e.ifindex, self._names)
        direction = CHAIN_NAMES.get(e.chain, str(e.chain))
        slot = {} if e.slot == NO_SLOT else self._slots_of(iface, e.gen).get((direction, e.slot), {})
        fam = e.family if e.family in (4, 6) else 0
        src = dst = None
        if fam == 4:
            src = str(ipaddress.IPv4Address(bytes(list(e.saddr.v6))[:4]))
            dst = str(ipaddress.IPv4Address(bytes(list(e.daddr.v6))[:4]))
        elif fam == 6:
            src = str(ipaddress.IPv6Address(bytes(list(e.saddr.v6))))
            dst = str(ipaddress.IPv6Address(bytes(list(e.daddr.v6))))
        icmp = fam and e.proto in (1, 58)
        ported = fam and e.proto in (6, 17, 132, 136)
        return Event(
            time=self._epoch + e.ts_ns / 1e9,
            iface=iface,
            in_iface=_ifname(e.in_ifindex, self._names) if e.chain == 1 else "",
            kind=KINDS.get(e.kind, str(e.kind)),
            direction=direction,
            verdict="allow" if e.verdict == 1 else "deny",
            reason=REASON_NAMES.get(e.reason, str(e.reason)),
            audit=bool(e.audit),
            stage=slot.get("stage"), tier=slot.get("tier"), policy=slot.get("policy"), rule=slot.get("rule"),
            action=slot.get("action"),
            family=fam, proto=e.proto if fam else 0, src=src, dst=dst,
            sport=e.sport if ported else None, dport=e.dport if ported else None,
            icmp_type=e.dport >> 8 if icmp else None, icmp_code=e.dport & 0xFF if icmp else None,
            length=e.wire_len,
            frame=bytes(list(e.hdr))[:e.cap_len],
            tier_policies=tuple(slot.get("tier_policies", ())),
        )


def read_ev_stats(m) -> dict[str, dict[str, dict[str, int]]]:
    """hep_evstat_v1, per chain: {chain: {stat: {packets, bytes}}}."""
    n = len(EV_STATS)
    raw = read_stats(m, 2 * n)
    return {CHAIN_NAMES[c]: {EV_STATS[i]: {"packets": raw[c * n + i][0], "bytes": raw[c * n + i][1]}
                             for i in range(n)} for c in (0, 1)}


def event_totals(ev: dict) -> dict[str, int]:
    """Records emitted, suppressed and lost, both chains together, from
    read_ev_stats()."""
    return {k: sum(ev[c][k]["packets"] for c in ev) for k in ("emitted", "suppressed", "lost")}
