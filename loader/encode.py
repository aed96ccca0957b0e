"""MapImage -> the bytes of every map key and value, sized maps, rodata.

The only place that turns compiler values into the ABI's binary layout, and
it does so through the cffi types generated from hepbpf_abi.h.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from hepbpf.compiler.mapimage import ACTION_CODES, NO_RULE, MapImage

from . import abi
from .mapnames import ADDR4, ADDR6, CLASS, CT, EVENTS, LOCAL4, LOCAL6, PORT, PROTO, RULE_STATS, SLOT

HEP_SCOPE_BITS = 32


def lpm_prefixlen(net) -> int:
    """The one place an LPM prefix length is computed: scope bits + CIDR."""
    return HEP_SCOPE_BITS + net.prefixlen


@dataclass(frozen=True, slots=True)
class EncodedImage:
    rodata: dict  # hep_config fields
    sizes: dict[str, int]  # map name -> max_entries
    value_sizes: dict[str, int]  # map name -> value size (hep_class_v1)
    entries: dict[str, list[tuple[bytes, bytes]]]


def _u32(x: int) -> bytes:
    """A host-order __u32 (array keys, class ids)."""
    return x.to_bytes(4, sys.byteorder)


# Idle timeouts per enum hep_ct_state, in seconds: Calico's BPF dataplane
# defaults (BPFConntrackTimeouts) where it has one.
CT_TIMEOUTS_S = {
    "HEP_CT_SYN_SENT": 20,
    "HEP_CT_ESTABLISHED": 3600,
    "HEP_CT_FIN_WAIT": 30,
    "HEP_CT_CLOSING": 30,
    "HEP_CT_UDP": 60,
    "HEP_CT_ICMP": 5,
    "HEP_CT_OTHER": 600,
}
CT_DEFAULT_SIZE = 65536
LOCAL_ROOM = 256


@dataclass(frozen=True, slots=True)
class EventSettings:
    """What the datapath reports through hep_events_v1, and how much.
    ``rate``/``burst``: events per second per CPU, and how many may come at
    once after a quiet spell (a flood of drops costs counters, not records);
    ``buffer``: ring bytes (a power of 2, at least a page)."""

    log: bool = True
    drops: bool = True
    rate: int = 1000
    burst: int = 2000
    buffer: int = 256 * 1024

    def problem(self) -> str | None:
        if self.rate < 1 or self.burst < 1:
            return "event rate and burst must be at least 1"
        if self.buffer < 4096 or self.buffer & (self.buffer - 1):
            return f"event buffer must be a power of 2 of at least 4096 bytes, not {self.buffer}"
        return None


def local_key(net) -> bytes:
    """The hep_local{4,6}_v1 key of one of the host's networks."""
    if net.version == 4:
        addr = int.from_bytes(net.network_address.packed, sys.byteorder)  # __be32, as packed
        return abi.pack("struct hep_local4_key", {"prefixlen": net.prefixlen, "addr": addr})
    return abi.pack("struct hep_local6_key", {"prefixlen": net.prefixlen, "addr": list(net.network_address.packed)})


def encode(img: MapImage, *, trace: bool = False, local_nets: tuple | None = None,
           ct_size: int = CT_DEFAULT_SIZE, ct_timeouts: dict[str, int] | None = None,
           events: EventSettings | None = None, audit: bool = False) -> EncodedImage:
    """``local_nets``: the host's addresses (and broadcast/multicast
    ranges), whose absence makes an ingress packet forwarded; None: the
    host's addresses are unknown, every ingress packet is for the host.
    ``events``: None reports nothing. ``audit``: drop nothing, report what
    would have been dropped."""
    ev = events or EventSettings(log=False, drops=False)
    if ev.problem():
        raise ValueError(ev.problem())
    chains = abi.const("HEP_CHAIN_MAX")
    sides = abi.const("HEP_SIDE_MAX")
    protos = abi.const("HEP_PROTO_SPACE")
    port_space = abi.const("HEP_PORT_SPACE")
    no_table = abi.const("HEP_NO_PORT_TABLE")
    stride = img.slot_stride
    entries: dict[str, list[tuple[bytes, bytes]]] = {
        k: [] for k in (ADDR4, ADDR6, PROTO, PORT, CLASS, SLOT, LOCAL4, LOCAL6)}

    for net in local_nets or ():
        entries[LOCAL4 if net.version == 4 else LOCAL6].append((local_key(net), b"\x01"))

    for e in img.addr:
        key = {"prefixlen": lpm_prefixlen(e.net), "chain": e.chain, "side": e.side}
        if e.net.version == 4:
            # __be32: the integer whose host-order bytes are the packed address.
            key["addr"] = int.from_bytes(e.net.network_address.packed, sys.byteorder)
            entries[ADDR4].append((abi.pack("struct hep_lpm4_key", key), _u32(e.klass)))
        else:
            key["addr"] = list(e.net.network_address.packed)
            entries[ADDR6].append((abi.pack("struct hep_lpm6_key", key), _u32(e.klass)))

    for e in img.proto:
        index = (e.chain * sides + e.side) * protos + e.proto
        base = no_table if e.port_table is None else e.port_table * port_space
        entries[PROTO].append((_u32(index), abi.pack("struct hep_proto_ent", {"klass": e.klass, "port_base": base})))

    for seg in img.ports:
        value = _u32(seg.klass)
        base = seg.table * port_space
        entries[PORT].extend((_u32(base + p), value) for p in range(seg.lo, seg.hi + 1))

    header = abi.sizeof("struct hep_class")
    for klass in range(len(img.classes)):
        lo, hi, words = img.class_words(klass)
        value = abi.pack("struct hep_class", {"lo": lo, "hi": hi}) + b"".join(
            w.to_bytes(8, sys.byteorder) for w in words)
        assert len(value) == header + 8 * img.nwords
        entries[CLASS].append((_u32(klass), value))

    policy_index = {name: i for i, name in enumerate(img.policy_names)}
    for s in img.slots:
        value = abi.pack("struct hep_slot", {
            "action": ACTION_CODES[s.action],
            "reason": s.reason,
            "next": s.next,
            "flags": s.flags,
            "policy": policy_index.get(s.policy or "", 0),
            "rule": NO_RULE if s.rule is None else s.rule,
        })
        entries[SLOT].append((_u32(s.chain * stride + s.slot), value))

    sizes = {
        ADDR4: max(1, len(entries[ADDR4])),
        ADDR6: max(1, len(entries[ADDR6])),
        PORT: max(1, img.port_tables * port_space),
        CLASS: max(1, len(img.classes)),
        SLOT: chains * stride,
        RULE_STATS: chains * stride,
        # Room for addresses the host gains later (attach --sync-addresses).
        LOCAL4: max(LOCAL_ROOM, 2 * len(entries[LOCAL4])),
        LOCAL6: max(LOCAL_ROOM, 2 * len(entries[LOCAL6])),
        CT: ct_size,
        EVENTS: ev.buffer,
    }
    timeouts = dict(CT_TIMEOUTS_S, **(ct_timeouts or {}))
    per_state = [0] * abi.const("HEP_CT_STATE_MAX")
    for name, secs in timeouts.items():
        per_state[abi.const(name)] = secs
    rodata = {
        "nwords": img.nwords,
        "slot_stride": stride,
        "trace": int(trace),
        "has_policy": int(img.has_policy),
        "know_local": int(local_nets is not None),
        "ct_timeout_s": per_state,
        "audit": int(audit),
        "events": (abi.const("HEP_EVMASK_LOG") if ev.log else 0) | (abi.const("HEP_EVMASK_DROP") if ev.drops else 0),
        "ev_interval_ns": 1_000_000_000 // ev.rate,
        "ev_burst_ns": ev.burst * (1_000_000_000 // ev.rate),
    }
    return EncodedImage(rodata, sizes, {CLASS: header + 8 * img.nwords}, entries)
