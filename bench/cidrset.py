"""A 100,000-CIDR set looked up with random keys: hepbpf's way against a
plain LPM trie.

The issue's target: a source CIDR set of 100,000 entries costs at most
half a plain LPM-trie lookup of the same set. hepbpf holds a scope as a
multibit trie of arrays where it fits its budget (a DIR scope,
hep_dir_v1: a few array reads, bpf/include/stride.bpf.h), else expands
its prefixes to a few stride lengths, each block in an exact-match hash
(hep_host{4,6}_v2), looked up longest first; a scope that would expand
past that budget too keeps full-length prefixes in the hash and the rest
in the trie (hep_addr{4,6}_v1). bpf/bench.bpf.c holds the same lookups over its own
maps (same key layouts), filled by the loader's own encoder
(loader/encode.py scope_entries), so the set can be measured alone:

  keys   only fetch each key (the baseline subtracted below)
  lpm    the whole set in one trie
  split  the set as hepbpf's datapath holds it (DIR, strides, or hash + trie)

Each test run does LOOKUPS lookups with consecutive keys from a table of
KEYS random addresses (a single repeated key would keep the trie path in
cache). Two key mixes: ``members``, an address inside a random entry (the
set's own traffic: a block list being hit), and ``uniform``, an address
drawn evenly from the ranges the set is drawn from (mostly misses).
Before timing, every program's answers for a few thousand keys are
checked against a longest-prefix match computed here.
"""

from __future__ import annotations

import ipaddress
import random
import struct
import sys

from hepbpf.loader import abi
from hepbpf.loader.encode import lpm_prefixlen_of, scope_entries
from hepbpf.loader.libbpf import BpfObject

from . import micro
from .rules import rule_set
from .scale import _Gen

N_CIDRS = 100_000
LOOKUPS = 64  # BENCH_CIDR_LOOKUPS
KEYS = 65536  # BENCH_CIDR_KEYS
CHECK_RUNS = 32
SEED = 100_000
_RUN = struct.Struct(f"=II{LOOKUPS}I")  # struct bench_cidr_run


def cidr_set(family: int, n: int = N_CIDRS, seed: int = SEED) -> list[ipaddress._BaseNetwork]:
    """``n`` distinct CIDRs shaped like the scale policy's network sets."""
    g = _Gen(seed)
    make = g.v4 if family == 4 else g.v6
    return [ipaddress.ip_network(g.distinct(make)) for _ in range(n)]


def random_keys(nets, family: int, mix: str, count: int = KEYS, seed: int = SEED) -> list[int]:
    r = random.Random(seed + (mix == "uniform"))
    if mix == "members":
        out = []
        for _ in range(count):
            net = r.choice(nets)
            host = r.getrandbits(net.max_prefixlen - net.prefixlen) if net.prefixlen < net.max_prefixlen else 0
            out.append(int(net.network_address) | host)
        return out
    if family == 4:  # as _Gen.v4 draws: 10/8, 172.16/12, 192.168/16
        bases = ((0x0A000000, 24), (0xAC100000, 20), (0xC0A80000, 16))
        return [b | r.getrandbits(span) for b, span in r.choices(bases, weights=(90, 6, 4), k=count)]
    return [(0x20010DB8 << 96) | r.getrandbits(96) for _ in range(count)]


class Reference:
    """Longest-prefix match over the set, in Python: the answer each program
    must give (class id = index in the set; ~0 for no match)."""

    def __init__(self, nets):
        self.width = nets[0].max_prefixlen
        self.by_len: dict[int, dict[int, int]] = {}
        for i, net in enumerate(nets):
            self.by_len.setdefault(net.prefixlen, {})[int(net.network_address)] = i
        self.lens = sorted(self.by_len, reverse=True)

    def __call__(self, addr: int) -> int:
        for plen in self.lens:
            hit = self.by_len[plen].get(addr & ~((1 << (self.width - plen)) - 1))
            if hit is not None:
                return hit
        return 0xFFFFFFFF


def _frame() -> bytes:
    """Any frame: the programs read their keys from a map, not from it."""
    return micro.frame(rule_set(1, 4).probes("none")[0], 4)


def _addr_bytes(addr: int, family: int) -> bytes:
    return addr.to_bytes(4 if family == 4 else 16, "big")


def _load(family: int, nets, keys: list[int]) -> BpfObject:
    """The set in the plain trie, and as one hepbpf scope (chain 0, side 0)
    encoded by the loader's own scope_entries; class id = index in the set."""
    sfx = "4" if family == 4 else "6"
    other = "6" if family == 4 else "4"
    width = 32 if family == 4 else 128
    by_len: dict[int, dict[int, bytes]] = {}
    for i, net in enumerate(nets):
        by_len.setdefault(net.prefixlen, {})[int(net.network_address)] = i.to_bytes(4, sys.byteorder)
    host: dict[bytes, bytes] = {}
    rest: dict[bytes, bytes] = {}
    dirs: dict[bytes, bytes] = {}
    scope = scope_entries(by_len, width, 0, 0, host, rest, dirs)
    blocks = b"".join(dirs.values())  # one scope, at root 0
    line = 4 * abi.const("HEP_DIR_LINE")
    blocks += bytes(-len(blocks) % line)
    # struct hep_lpm{4,6}_key: prefixlen, chain 0, side 0, gen 0, pad; address
    lpm = {struct.pack("=I4x", lpm_prefixlen_of(n.prefixlen)) + _addr_bytes(int(n.network_address), family):
           i.to_bytes(4, sys.byteorder) for i, n in enumerate(nets)}
    obj = BpfObject.open(str(abi.bpf_dir() / "bench.bpf.o"))
    try:
        sizes = {f"bench_cidr_lpm{sfx}_v1": len(nets), f"bench_cidr_rest{sfx}_v1": max(1, len(rest)),
                 f"bench_cidr_host{sfx}_v1": max(1, len(host)), "bench_cidr_dir_v1": max(1, len(blocks) // line)}
        sizes.update({f"bench_cidr_{kind}{other}_v1": 1 for kind in ("lpm", "rest", "host")})
        for name, n in sizes.items():
            obj.map(name).set_max_entries(n)
        obj.load()
        for name, entries in ((f"bench_cidr_lpm{sfx}_v1", lpm), (f"bench_cidr_rest{sfx}_v1", rest),
                              (f"bench_cidr_host{sfx}_v1", host), ("bench_cidr_scope_v1", {bytes(4): scope})):
            if entries:
                obj.map(name).update_batch(list(entries), list(entries.values()))
        if blocks:
            obj.map("bench_cidr_dir_v1").update_batch(
                [i.to_bytes(4, sys.byteorder) for i in range(len(blocks) // line)],
                [blocks[i:i + line] for i in range(0, len(blocks), line)])
        obj.map("bench_cidr_keys_v1").update_batch(
            [i.to_bytes(4, sys.byteorder) for i in range(len(keys))],
            [_addr_bytes(k, family).ljust(16, b"\0") for k in keys])
        obj.scope = abi.unpack("struct hep_scope", scope)  # what the encoder chose
        obj.expanded = (len(host), len(rest), len(blocks) // 4)
        return obj
    except BaseException:
        obj.close()
        raise


def _run_state(obj, pos: int, v6: bool) -> None:
    m = obj.map("bench_cidr_run_v1")
    slot = m.value_buffer_size // micro.num_possible_cpus()
    m.update(bytes(4), _RUN.pack(pos, int(v6), *([0] * LOOKUPS)).ljust(slot, b"\0") * micro.num_possible_cpus())


def _found(obj) -> list[list[int]]:
    """Each CPU's found[] of its last run."""
    m = obj.map("bench_cidr_run_v1")
    raw = m.lookup(bytes(4), percpu=True)
    slot = len(raw) // micro.num_possible_cpus()
    return [list(_RUN.unpack_from(raw, c * slot)[2:]) for c in range(micro.num_possible_cpus())]


def check(obj, prog: str, keys: list[int], ref: Reference, family: int, runs: int = CHECK_RUNS) -> None:
    """The program's answers for the first runs * LOOKUPS keys equal the
    reference's; raises AssertionError otherwise."""
    want = [ref(k) for k in keys[:runs * LOOKUPS]]
    p, frame = obj.program(prog), _frame()
    for r in range(runs):
        # every CPU's position, each run: the run may land on another CPU
        _run_state(obj, r * LOOKUPS, family == 6)
        p.test_run(frame, repeat=1)
        got = want[r * LOOKUPS:(r + 1) * LOOKUPS]
        if got not in _found(obj):
            raise AssertionError(f"{prog}, IPv{family}: lookups {r * LOOKUPS}.. differ from the reference")


def measure_cidrset(families=(4, 6), mixes=("members", "uniform"), n: int = N_CIDRS) -> list[dict]:
    """ns per lookup (run time minus the keys-only run, over LOOKUPS) for
    the plain trie and hepbpf's split, per family and key mix."""
    frame = _frame()
    rows = []
    for fam in families:
        nets = cidr_set(fam, n)
        ref = Reference(nets)
        full = sum(net.prefixlen == net.max_prefixlen for net in nets)
        for mix in mixes:
            keys = random_keys(nets, fam, mix)
            obj = _load(fam, nets, keys)
            try:
                for prog in ("bench_xdp_cidr_lpm", "bench_xdp_cidr_split"):
                    check(obj, prog, keys, ref, fam)
                _run_state(obj, 0, fam == 6)
                res = {}
                for kind in ("keys", "lpm", "split"):
                    med, lo, hi, _ = micro.measure(obj.program(f"bench_xdp_cidr_{kind}"), [frame])
                    res[kind] = (med, lo, hi)
                base = res["keys"][0]
                hits = sum(ref(k) != 0xFFFFFFFF for k in keys[:4096]) / 4096
                host_hits = sum(ref(k) != 0xFFFFFFFF and nets[ref(k)].prefixlen == nets[0].max_prefixlen
                                for k in keys[:4096]) / 4096
                sc = obj.scope
                rows.append({
                    "family": fam, "mix": mix, "cidrs": len(nets), "full_length": full,
                    "strides": list(sc.len)[:sc.n] if sc.mode == abi.const("HEP_SCOPE_STRIDES") else None,
                    "dir": {"skip": sc.skip, "levels": list(sc.len)[:sc.n]}
                    if sc.mode == abi.const("HEP_SCOPE_DIR") else None,
                    "hash_entries": obj.expanded[0], "trie_entries": obj.expanded[1],
                    "dir_entries": obj.expanded[2],
                    "lpm_ns": (res["lpm"][0] - base) / LOOKUPS, "hepbpf_ns": (res["split"][0] - base) / LOOKUPS,
                    "keys_ns": base / LOOKUPS, "runs": {k: v for k, v in res.items()},
                    "hit_share": hits, "host_hit_share": host_hits,
                })
            finally:
                obj.close()
    return rows


def _shape(r: dict) -> str:
    if r.get("dir"):
        return (f"DIR, levels {r['dir']['levels']} after {r['dir']['skip']} shared bits, "
                f"{r['dir_entries']:,} array entries")
    return f"strides {r['strides']}, {r['hash_entries']:,} hash + {r['trie_entries']:,} trie entries"


def text(rows: list[dict]) -> str:
    lines = []
    for r in rows:
        lines.append(f"IPv{r['family']} {r['cidrs']:,} CIDRs ({r['full_length']:,} full length), {r['mix']} keys "
                     f"({100 * r['hit_share']:.0f}% in the set, {100 * r['host_hit_share']:.0f}% on a full-length "
                     f"entry): trie {r['lpm_ns']:.1f} ns, hepbpf {r['hepbpf_ns']:.1f} ns per lookup "
                     f"({r['hepbpf_ns'] / r['lpm_ns']:.2f}x); " + _shape(r))
    return "\n".join(lines)


if __name__ == "__main__":
    print(text(measure_cidrset()))
