"""MapImage: what the loader writes into the policy maps, as plain values.

The compiler stays free of the ABI's binary layout: the loader encodes these
records through cffi types generated from bpf/include/hepbpf_abi.h. The
canonical text dump (``dump``) is what golden tests diff and what
``hepbpf check --dump maps`` shows.
"""

from __future__ import annotations

import struct
from array import array
from dataclasses import dataclass, field, replace
from itertools import repeat

from .ir import IPNetwork
from .reasons import REASON_NAMES

CHAIN_INGRESS, CHAIN_EGRESS = 0, 1  # enum hep_chain
CHAINS = (CHAIN_INGRESS, CHAIN_EGRESS)
CHAIN_NAMES = {CHAIN_INGRESS: "ingress", CHAIN_EGRESS: "egress"}
SIDE_SRC, SIDE_DST = 0, 1  # enum hep_side
SIDE_NAMES = {SIDE_SRC: "src", SIDE_DST: "dst"}
ACTION_CODES = {"Allow": 1, "Deny": 2, "Pass": 3, "Conntrack": 4, "Forward": 5, "Log": 6}  # enum hep_action
SLOT_TRACK, SLOT_DIVERT, SLOT_AUDIT = 1, 2, 4  # enum hep_slot_flag
NO_RULE = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class AddrEntry:
    chain: int
    side: int
    net: IPNetwork
    klass: int


@dataclass(frozen=True, slots=True)
class AddrScope:
    """The LPM entries of one (chain, side, family) scope, as lower makes
    them: each network's sort key, address << 8 | prefix length, ascending,
    and its class. At 200,000 entries, AddrEntry objects cost lower 0.13 s
    to make and encode 0.15 s to take apart (their networks' fields are
    scattered over the heap), so the image keeps these, and ``addr``
    spells them out for whoever reads entries (dump, tests)."""

    chain: int
    side: int
    family: int
    keys: tuple[int, ...]
    classes: tuple[int, ...]  # class id per key
    nets: dict[int, IPNetwork] = field(compare=False, repr=False)  # key -> network (holds every key)
    # keys and classes again, fixed width and back to back (pack_keys,
    # pack_classes): an update compares two scopes' runs with one memcmp
    # each (loader/scopediff.py) instead of 100,000 int comparisons.
    packed_keys: bytes = field(default=b"", compare=False, repr=False)
    packed_classes: bytes = field(default=b"", compare=False, repr=False)

    @classmethod
    def of(cls, chain: int, side: int, family: int, keys: tuple[int, ...], classes: tuple[int, ...],
           nets: dict[int, IPNetwork]) -> AddrScope:
        return cls(chain, side, family, keys, classes, nets, pack_keys(keys, family), pack_classes(classes))

    def entries(self) -> list[AddrEntry]:
        return [AddrEntry(self.chain, self.side, self.nets[k], c) for k, c in zip(self.keys, self.classes)]


def key_width(family: int) -> int:
    """Bytes per key in AddrScope.packed_keys."""
    return 8 if family == 4 else 17


def pack_keys(keys, family: int) -> bytes:
    """Sort keys at a fixed width: an IPv4 key (40 bits) as a native
    __u64 (100,000 in 2 ms), an IPv6 key (136 bits) as 17 big-endian
    bytes. Equal runs of keys are equal runs of bytes, nothing more: order
    is the ints'."""
    if family == 4:
        return array("Q", keys).tobytes()
    return b"".join(map(int.to_bytes, keys, repeat(17), repeat("big")))


def pack_classes(classes) -> bytes:
    return array("I", classes).tobytes()


@dataclass(frozen=True, slots=True)
class ProtoEntry:
    chain: int
    side: int
    proto: int
    klass: int  # when port_table is None
    port_table: int | None  # index of this protocol's 65536-entry table


@dataclass(frozen=True, slots=True)
class PortSegment:
    table: int
    lo: int
    hi: int
    klass: int


@dataclass(frozen=True, slots=True)
class SlotEntry:
    chain: int
    slot: int
    action: str  # a key of ACTION_CODES
    reason: int  # enum hep_reason
    next: int  # Pass, Forward, or divert: where to continue
    stage: str | None = None
    tier: str | None = None
    policy: str | None = None
    rule: int | None = None
    flags: int = 0  # SLOT_TRACK | SLOT_DIVERT | SLOT_AUDIT

    def with_next(self, nxt: int) -> SlotEntry:
        return replace(self, next=nxt)

    @property
    def reason_name(self) -> str:
        return REASON_NAMES[self.reason]


@dataclass(frozen=True, slots=True)
class MapImage:
    nwords: int
    has_policy: bool
    addr_scopes: tuple[AddrScope, ...]
    proto: tuple[ProtoEntry, ...]
    port_tables: int
    ports: tuple[PortSegment, ...]
    classes: tuple[int, ...]  # class id -> bit vector (bit i = slot i)
    slots: tuple[SlotEntry, ...]
    policy_names: tuple[str, ...]  # index 0 is "no policy"

    @property
    def slot_stride(self) -> int:
        return self.nwords * 64

    @property
    def addr(self) -> tuple[AddrEntry, ...]:
        """Every scope's LPM entries, scope by scope, each in key order."""
        return tuple(e for s in self.addr_scopes for e in s.entries())

    @property
    def addr_count(self) -> int:
        """len(addr), without spelling the entries out."""
        return sum(len(s.keys) for s in self.addr_scopes)

    def class_words(self, klass: int) -> tuple[int, int, tuple[int, ...]]:
        """(lo, hi, words) of a class vector: its first and last non-zero
        64-bit word (lo > hi when empty) and all ``nwords`` words, least
        significant first."""
        vec = self.classes[klass]
        # One conversion, not a shift per word: encoding 35,000 classes of
        # 110 words took 1.3 s word by word.
        words = struct.unpack(f"<{self.nwords}Q", vec.to_bytes(8 * self.nwords, "little"))
        if not vec:
            return 1, 0, words
        return ((vec & -vec).bit_length() - 1) // 64, (vec.bit_length() - 1) // 64, words


def _bits(vec: int) -> str:
    """Set bits as ranges: {0-3,7}."""
    out, i = [], 0
    while vec >> i:
        if not (vec >> i) & 1:
            i += 1
            continue
        j = i
        while (vec >> (j + 1)) & 1:
            j += 1
        out.append(str(i) if i == j else f"{i}-{j}")
        i = j + 1
    return "{" + ",".join(out) + "}"


def dump(img: MapImage) -> str:
    """Canonical, stable text of a MapImage."""
    lines = [f"nwords {img.nwords}", f"has_policy {int(img.has_policy)}", "", "slots:"]
    for s in img.slots:
        where = " ".join(
            f"{k}={v}" for k, v in (("stage", s.stage), ("tier", s.tier), ("policy", s.policy), ("rule", s.rule))
            if v is not None
        )
        nxt = f" next={s.next}" if s.action in ("Pass", "Forward", "Log") or s.flags & (SLOT_DIVERT | SLOT_AUDIT) \
            else ""
        flags = "".join(f" +{n}" for bit, n in ((SLOT_TRACK, "track"), (SLOT_DIVERT, "divert"), (SLOT_AUDIT, "audit"))
                        if s.flags & bit)
        lines.append(f"  {CHAIN_NAMES[s.chain]}[{s.slot}] {s.action} {s.reason_name}{flags}{nxt} {where}".rstrip())
    lines += ["", "classes:"]
    lines += [f"  c{i} {_bits(v)}" for i, v in enumerate(img.classes)]
    lines += ["", "addresses:"]
    for e in sorted(img.addr, key=lambda e: (e.chain, e.side, e.net.version, int(e.net.network_address), e.net.prefixlen)):
        lines.append(f"  {CHAIN_NAMES[e.chain]} {SIDE_NAMES[e.side]} {e.net} -> c{e.klass}")
    lines += ["", "protocols:"]
    for e in img.proto:
        target = f"t{e.port_table}" if e.port_table is not None else f"c{e.klass}"
        lines.append(f"  {CHAIN_NAMES[e.chain]} {SIDE_NAMES[e.side]} {e.proto} -> {target}")
    lines += ["", "ports:"]
    for seg in img.ports:
        rng = str(seg.lo) if seg.lo == seg.hi else f"{seg.lo}-{seg.hi}"
        lines.append(f"  t{seg.table} {rng} -> c{seg.klass}")
    return "\n".join(_fold_protocols(lines)) + "\n"


def _fold_protocols(lines: list[str]) -> list[str]:
    """Fold runs of protocols with the same target into 'a-b' ranges."""
    out: list[str] = []
    run: list[tuple[str, int, str]] = []

    def flush():
        if run:
            head, lo, target = run[0]
            hi = run[-1][1]
            out.append(f"{head} {lo if lo == hi else f'{lo}-{hi}'} -> {target}")
            run.clear()

    in_protocols = False
    for line in lines:
        if line == "protocols:":
            in_protocols = True
            out.append(line)
            continue
        if in_protocols and line.startswith("  "):
            head, rest = line.rsplit(" ", 3)[0], line.rsplit(" ", 3)[1:]
            proto, target = int(rest[0]), rest[2]
            if run and run[-1][0] == head and run[-1][2] == target and run[-1][1] == proto - 1:
                run.append((head, proto, target))
            else:
                flush()
                run.append((head, proto, target))
            continue
        flush()
        in_protocols = in_protocols and line != ""
        out.append(line)
    flush()
    return out
