"""hepbpf's conntrack table from user space: keys, entries, counters.

The datapath owns the table (bpf/include/ct.bpf.h); the loader only reads
it for ``status``, and tests and ``explain --kernel`` seed it with a flow to
ask what a packet of a known flow gets. The key layout is the ABI's
struct hep_ct_key: both endpoints, lower (address, port) first.

Seeding a flow also stamps its bucket of the conntrack pre-filter
(hep_ctseen_v1): the datapath skips the table lookup for a key whose bucket
is older than its protocol's longest timeout, so an entry written without
the stamp could go unseen. ``seen_index`` is ct.bpf.h's hep_ct_seen_idx.
"""

from __future__ import annotations

import ipaddress
import sys
import time
from dataclasses import dataclass

from hepbpf.compiler.packet import ICMP, PORTED, Packet

from . import abi
from .mapnames import CTSEEN
from .percpu import read_counters

_U32 = 0xFFFFFFFF

# enum hep_ct_state, by name as `status` shows it.
STATE_NAMES = {
    1: "syn-sent", 2: "established", 3: "fin-wait", 4: "closing", 5: "udp", 6: "icmp", 7: "other",
}
EVENT_NAMES = ("created", "hit", "related", "closed", "expired", "create-failed")  # enum hep_ct_event
ECHO_REQUEST = {1: 8, 58: 128}
ECHO_REPLY = {1: 0, 58: 129}


def _endpoint(addr, port: int) -> tuple[int, int, bytes]:
    packed = addr.packed.ljust(16, b"\0")
    return int.from_bytes(packed, "big"), port, packed


def key_for(pkt: Packet, echo_id: int = 0) -> bytes:
    """The hep_ct_key of ``pkt``'s flow (either direction gives the same)."""
    code = 0
    if pkt.proto in PORTED:
        sp, dp = pkt.sport, pkt.dport
    elif pkt.proto in ICMP:
        sp = dp = echo_id
        code = pkt.icmp_code or 0
    else:
        sp = dp = 0
    a, b = sorted((_endpoint(pkt.src, sp), _endpoint(pkt.dst, dp)))
    return abi.pack("struct hep_ct_key", {
        "family": pkt.family, "proto": pkt.proto, "icmp_code": code, "port_a": a[1], "port_b": b[1],
        "addr_a": list(a[2]), "addr_b": list(b[2]),
    })


def first_state(pkt: Packet) -> int:
    if pkt.proto == 6:
        return abi.const("HEP_CT_ESTABLISHED")
    if pkt.proto in (17, 136):
        return abi.const("HEP_CT_UDP")
    if pkt.proto in ICMP:
        return abi.const("HEP_CT_ICMP")
    return abi.const("HEP_CT_OTHER")


def now_ns() -> int:
    """bpf_ktime_get_ns()'s clock."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


# ct.bpf.h hep_ct_seen_idx: one multiplier per 8-byte word of the key.
_SEEN_MUL = (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93,
             0xFF51AFD7ED558CCD)
_SEEN_FINAL = 0xC4CEB9FE1A85EC53
_U64 = (1 << 64) - 1


def seen_index(key: bytes, bits: int) -> int:
    """The hep_ctseen_v1 bucket (of 2**bits) of a hep_ct_key, as the
    datapath computes it from the key's native-order 64-bit words."""
    h = 0
    for i, m in enumerate(_SEEN_MUL):
        q = int.from_bytes(key[8 * i:8 * i + 8], sys.byteorder)
        h += (q ^ (q >> 32)) * m
    h &= _U64
    h = ((h ^ (h >> 32)) * _SEEN_FINAL) & _U64
    return h >> (64 - bits)


def stamp(seen_map, key: bytes, t_ns: int) -> int:
    """Mark ``key``'s bucket as having seen a packet at ``t_ns`` (never
    moving it back, as the datapath does); returns the bucket."""
    idx = seen_index(key, seen_map.max_entries.bit_length() - 1)
    raw = idx.to_bytes(4, sys.byteorder)
    old = int.from_bytes(seen_map.lookup(raw), sys.byteorder)
    unit = (t_ns >> abi.const("HEP_CTSEEN_SHIFT")) & _U32
    if 0 < (unit - old) & _U32 < 1 << 31:  # later, modulo 2**32
        seen_map.update(raw, unit.to_bytes(4, sys.byteorder))
    return idx


def restamp(ct_map, seen_map) -> int:
    """Stamp the bucket of every entry by its last packet: for a table kept
    from an object without this pre-filter (or beside a new one), whose
    flows would otherwise go unseen. Returns how many entries."""
    n = 0
    for key, val in ct_map.items():
        stamp(seen_map, key, abi.unpack("struct hep_ct_val", val).seen_ns)
        n += 1
    return n


def _seen_map_of(ct_map):
    """The pre-filter beside ``ct_map`` in its object, or None for an
    object built without one. Map keeps no public link to its object."""
    obj = getattr(ct_map, "_obj", None)
    if obj is None:
        raise ValueError(f"{ct_map.name} is not a map of an object: pass seen_map")
    try:
        return obj.map(CTSEEN)
    except KeyError:
        return None


def seed(ct_map, pkt: Packet, *, state: int | None = None, chain: int = 0, seen_map=None) -> bytes:
    """Record ``pkt``'s flow as known (opened by its source, or for an echo
    reply by its destination); returns the key. ``seen_map``: the object's
    hep_ctseen_v1, found from ``ct_map`` when not given. ``state`` must be
    one a flow of the packet's protocol can have: the pre-filter trusts
    the protocol's timeouts."""
    key = key_for(pkt)
    src_first = key[8:24] == pkt.src.packed.ljust(16, b"\0") and (
        pkt.proto not in PORTED or int.from_bytes(key[4:6], sys.byteorder) == pkt.sport)
    if pkt.proto in ICMP and pkt.icmp_type == ECHO_REPLY[pkt.proto]:
        src_first = not src_first
    t = now_ns()
    if seen_map is None:
        seen_map = _seen_map_of(ct_map)
    if seen_map is not None:
        stamp(seen_map, key, t)  # first: a live entry never has a stale bucket
    ct_map.update(key, abi.pack("struct hep_ct_val", {
        "created_ns": t, "seen_ns": t, "packets": 1,
        "state": first_state(pkt) if state is None else state,
        "opener_a": int(src_first), "chain": chain,
    }))
    return key


def clear(ct_map) -> int:
    n = 0
    for key in list(ct_map.keys()):
        n += ct_map.delete(key)
    return n


@dataclass(frozen=True, slots=True)
class Entry:
    family: int
    proto: int
    a: str
    port_a: int
    b: str
    port_b: int
    state: str
    opener_a: bool
    age_s: float
    idle_s: float
    packets: int


def entries(ct_map) -> list[Entry]:
    out = []
    t = now_ns()
    for raw_key, raw_val in ct_map.items():
        k = abi.unpack("struct hep_ct_key", raw_key)
        v = abi.unpack("struct hep_ct_val", raw_val)
        n = 4 if k.family == 4 else 16
        addr = lambda field: str(ipaddress.ip_address(bytes(field)[:n]))  # noqa: E731
        out.append(Entry(k.family, k.proto, addr(k.addr_a), k.port_a, addr(k.addr_b), k.port_b,
                         STATE_NAMES.get(v.state, str(v.state)), bool(v.opener_a),
                         (t - v.created_ns) / 1e9, (t - v.seen_ns) / 1e9, v.packets))
    return out


def stats(ctstat_map) -> dict[str, int]:
    """Event totals; ``evicted`` is derived: created - closed - expired - live
    can only be the entries the full table pushed out."""
    totals = read_counters(ctstat_map, len(EVENT_NAMES))
    return dict(zip(EVENT_NAMES, totals))
