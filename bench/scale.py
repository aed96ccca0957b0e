"""Scale: compile and attach 10,000 rules and 100,000 CIDRs.

The issue's target: the whole path, from policy text to an enforcing
program, in at most 2 s on a 2-core machine, with the share of each phase
and the memory it takes. ``policy_text()`` writes the policy (deterministic:
a seeded generator); ``measure_scale()`` times parse, resolve and lower (the
compiler's passes, separately), encode, open + load (verify, JIT), map fill
and, given an interface, attach; plus peak RSS and the kernel memory of the
BPF maps.

    python -m hepbpf.bench.scale [--iface IFACE] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import ipaddress
import json
import os
import random
import resource
import sys
import time
from dataclasses import dataclass

NODE, IFACE = "n1", "eth1"
N_RULES = 10_000
N_CIDRS = 100_000
SEED = 6  # issue 6

V4_SETS, V6_SETS = 16, 4  # GlobalNetworkSets; N_CIDRS spread evenly over them
LOG_RULES = 8  # per direction: the compiler allows 64 noted slots per chain
INGRESS_SHARE = 0.7


@dataclass(frozen=True, slots=True)
class Shape:
    """What the generated policy holds, for the tests to check against the
    MapImage without re-deriving it from the text."""

    rules: int  # rules written, every policy and direction
    ingress_rules: int
    egress_rules: int
    log_rules: int
    cidrs: int  # network-set CIDRs (all distinct)
    v4_cidrs: int
    v6_cidrs: int
    sets: int
    policies: int
    tiers: tuple[str, ...]


class _Gen:
    def __init__(self, seed: int):
        self.r = random.Random(seed)
        self.seen: set = set()

    # --- CIDRs -------------------------------------------------------------

    def v4(self) -> str:
        """Mostly 10.0.0.0/8 /32s and /24s, some /16-/31, a few in the other
        private ranges."""
        r = self.r
        base = r.choices((0x0A000000, 0xAC100000, 0xC0A80000), weights=(90, 6, 4))[0]
        span = {0x0A000000: 24, 0xAC100000: 20, 0xC0A80000: 16}[base]
        plen = r.choices((32, 24, r.randint(16, 31)), weights=(60, 30, 10))[0]
        plen = max(plen, 32 - span)
        host = r.getrandbits(span) & ~((1 << (32 - plen)) - 1)
        return str(ipaddress.IPv4Network((base | host, plen)))

    def v6(self) -> str:
        """Sub-prefixes of 2001:db8::/32, /48 to /128."""
        r = self.r
        plen = r.choices((128, 64, 56, 48, r.randint(49, 127)), weights=(40, 30, 10, 10, 10))[0]
        bits = r.getrandbits(96) & ~((1 << (128 - plen)) - 1) if plen < 128 else r.getrandbits(96)
        return str(ipaddress.IPv6Network(((0x20010DB8 << 96) | bits, plen)))

    def distinct(self, make) -> str:
        while True:
            c = make()
            if c not in self.seen:
                self.seen.add(c)
                return c

    # --- rules -------------------------------------------------------------

    def ports(self) -> str:
        r = self.r
        out = []
        for _ in range(r.choices((1, 2, 3), weights=(70, 20, 10))[0]):
            lo = r.randint(1, 65000)
            out.append(str(lo) if r.random() < 0.6 else f"{lo}:{lo + r.randint(1, 500)}")
        return "[" + ", ".join(out) + "]"

    def set_selector(self, family: int | None) -> str:
        """Selects one to three of the network sets by their labels."""
        r = self.r
        fam = family or r.choice((4, 6))
        pool = range(V4_SETS) if fam == 4 else range(V4_SETS, V4_SETS + V6_SETS)
        shape = r.random()
        if shape < 0.6:
            return f"feed == 'f{r.choice(pool):02d}'"
        if shape < 0.85:
            picks = sorted(r.sample(list(pool), min(3, len(pool))))
            return "feed in {" + ", ".join(f"'f{p:02d}'" for p in picks) + "}"
        return f"list == 'block' && family == 'v{fam}'"

    def rule(self, direction: str, action: str) -> str:
        r = self.r
        remote = "source" if direction == "ingress" else "destination"
        kind = r.random()
        lines = [f"- action: {action}"]
        fam = r.choice((4, 4, 4, 6))
        if kind < 0.1:  # ICMP
            proto = "ICMP" if fam == 4 else "ICMPv6"
            lines.append(f"  protocol: {proto}")
            if r.random() < 0.7:
                t = r.choice((0, 3, 8, 11) if fam == 4 else (1, 128, 129, 135))
                code = f", code: {r.randint(0, 3)}" if r.random() < 0.4 else ""
                lines.append(f"  icmp: {{type: {t}{code}}}")
            if r.random() < 0.5:
                lines.append(f"  {remote}: {{selector: \"{self.set_selector(fam)}\"}}")
            return "\n".join(lines)
        proto = r.choice(("TCP", "TCP", "UDP"))
        lines.append(f"  protocol: {proto}")
        sides: dict[str, list[str]] = {"source": [], "destination": []}
        if kind < 0.4:  # a network set
            sides[remote].append(f"selector: \"{self.set_selector(fam)}\"")
        elif kind < 0.75:  # nets of the rule's own
            nets = [self.v4() if fam == 4 else self.v6() for _ in range(r.randint(1, 3))]
            sides[remote].append("nets: [" + ", ".join(nets) + "]")
        elif kind < 0.8:
            sides[remote].append(f"notNets: [{self.v4() if fam == 4 else self.v6()}]")
        if r.random() < 0.8:
            key = "notPorts" if r.random() < 0.05 else "ports"
            sides["destination"].append(f"{key}: {self.ports()}")
        for side, fields in sides.items():
            if fields:
                lines.append(f"  {side}: {{{', '.join(fields)}}}")
        return "\n".join(lines)


def _resource(kind: str, name: str, body: str, labels: str = "") -> str:
    meta = f"metadata:\n  name: {name}\n" + (f"  labels: {{{labels}}}\n" if labels else "")
    return f"apiVersion: projectcalico.org/v3\nkind: {kind}\n{meta}spec:\n{body}---\n"


def _indent(text: str, n: int) -> str:
    pad = " " * n
    return "".join(pad + line + "\n" for line in text.splitlines())


def generate(n_rules: int = N_RULES, n_cidrs: int = N_CIDRS, seed: int = SEED,
             iface: str = IFACE) -> tuple[str, Shape]:
    """The scale policy as one YAML stream, and its shape.

    One HostEndpoint; V4_SETS + V6_SETS GlobalNetworkSets holding ``n_cidrs``
    distinct CIDRs (labels feed, list, family); two tiers before default:
    ``security`` (Deny from the block lists, then Pass) and ``platform``
    (defaultAction Pass: Allow, Deny and a few Log rules), and ``default``
    (Allow and Deny ending in the default deny). About 70% of the rules
    are ingress, where the remote side is the source; every network set is
    selected by some ingress rule, so every CIDR reaches the LPM maps."""
    g = _Gen(seed)
    r = g.r
    out = [_resource("HostEndpoint", f"{NODE}-host", f"  node: {NODE}\n  interfaceName: {iface}\n"
                     "  expectedIPs: [192.0.2.1, 2001:db8::1]\n", "role: node")]
    for name, order, action in (("security", 100, "Deny"), ("platform", 200, "Pass")):
        out.append(_resource("Tier", name, f"  order: {order}\n  defaultAction: {action}\n"))
    nsets = V4_SETS + V6_SETS
    v4 = v6 = 0
    for i in range(nsets):
        fam = 4 if i < V4_SETS else 6
        count = n_cidrs // nsets + (1 if i < n_cidrs % nsets else 0)
        nets = [g.distinct(g.v4 if fam == 4 else g.v6) for _ in range(count)]
        v4, v6 = (v4 + count, v6) if fam == 4 else (v4, v6 + count)
        labels = f"feed: f{i:02d}, list: {'block' if i % 2 == 0 else 'allow'}, family: v{fam}"
        out.append(_resource("GlobalNetworkSet", f"feed-{i:02d}", "  nets:\n" + "".join(
            f"  - {n}\n" for n in nets), labels))

    n_in = round(n_rules * INGRESS_SHARE)
    per_dir = {"ingress": n_in, "egress": n_rules - n_in}
    # (tier, policies, share of each direction's rules)
    layout = (("security", 4, 0.2), ("platform", 6, 0.4), ("default", 10, 0.4))
    chunks: dict[tuple[str, int], dict[str, list[str]]] = {}
    logs = 0
    for direction, total in per_dir.items():
        left = total
        for t, (tier, npol, share) in enumerate(layout):
            n = left if t == len(layout) - 1 else round(total * share)
            left -= n
            for k in range(n):
                p = k % npol
                if tier == "security":
                    last = k >= n - npol  # each policy ends in a Pass
                    if last:
                        rule = "- action: Pass"
                    else:
                        remote = "source" if direction == "ingress" else "destination"
                        sets = V4_SETS + V6_SETS
                        # the first rules select every set in turn: every CIDR is live
                        sel = (f"feed == 'f{k % sets:02d}'" if k < sets else g.set_selector(None))
                        rule = f"- action: Deny\n  {remote}: {{selector: \"{sel}\"}}"
                elif tier == "platform" and k < LOG_RULES:
                    rule = g.rule(direction, "Log")
                    logs += 1
                else:
                    action = r.choices(("Allow", "Deny"), weights=(3, 1))[0]
                    rule = g.rule(direction, action)
                chunks.setdefault((tier, p), {"ingress": [], "egress": []})[direction].append(rule)
    order = 0
    for (tier, p), rules in chunks.items():
        order += 10
        name = f"{tier}-{p:02d}" if tier != "default" else f"app-{p:02d}"
        if tier != "default":
            name = f"{tier}.{name}"  # a tier's policies carry its name, as Calico's API wants
        body = f"  tier: {tier}\n  order: {order}\n  selector: role == 'node'\n  types: [Ingress, Egress]\n"
        for direction in ("ingress", "egress"):
            if rules[direction]:
                body += f"  {direction}:\n" + _indent("\n".join(rules[direction]), 2)
            else:
                body += f"  {direction}: []\n"
        out.append(_resource("GlobalNetworkPolicy", name, body))
    shape = Shape(rules=n_rules, ingress_rules=per_dir["ingress"], egress_rules=per_dir["egress"],
                  log_rules=logs, cidrs=v4 + v6, v4_cidrs=v4, v6_cidrs=v6, sets=nsets,
                  policies=len(chunks), tiers=("security", "platform", "default"))
    return "".join(out), shape


def policy_text(n_rules: int = N_RULES, n_cidrs: int = N_CIDRS, seed: int = SEED, iface: str = IFACE) -> str:
    return generate(n_rules, n_cidrs, seed, iface)[0]


# --- measuring ----------------------------------------------------------------

def _compile_phases(text: str, iface: str, times: dict):
    """compile_policy's passes, timed one by one (with the garbage collector
    paused across all three, as compile_policy pauses it)."""
    from hepbpf.compiler import Compiled
    from hepbpf.compiler.alloc import gc_paused
    from hepbpf.compiler.ir import EGRESS, INGRESS
    from hepbpf.compiler.mapimage import CHAIN_EGRESS, CHAIN_INGRESS
    resources = importlib.import_module("hepbpf.compiler.resources")
    resolve = importlib.import_module("hepbpf.compiler.resolve")
    lower = importlib.import_module("hepbpf.compiler.lower")

    @gc_paused
    def run():
        t = time.perf_counter()
        ps = resources.parse_files([("scale.yaml", text)])
        resolve.check_references(ps)
        times["parse"] = time.perf_counter() - t
        t = time.perf_counter()
        views = {chain: resolve.resolve(ps, node=NODE, iface=iface, direction=d)
                 for chain, d in ((CHAIN_INGRESS, INGRESS), (CHAIN_EGRESS, EGRESS))}
        times["resolve"] = time.perf_counter() - t
        t = time.perf_counter()
        image = lower.lower(views)
        times["lower"] = time.perf_counter() - t
        return Compiled(ps, views, image)

    return run()


def _map_memlock() -> int:
    """Bytes the kernel charges for every BPF map this process holds open
    (the ``memlock`` line of each map fd's fdinfo)."""
    total = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") != "anon_inode:bpf-map":
                continue
            with open(f"/proc/self/fdinfo/{fd}") as f:
                for line in f:
                    if line.startswith("memlock:"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total


def _kernel_phases(image, times: dict, info: dict) -> None:
    """encode, open + load (verify, JIT) and map fill, as an attach does
    them, timed one by one: ``fill`` is the generation packets read (the
    program enforces after it), ``fill_standby`` the other one, which an
    attach fills once the program enforces, before it returns. The object
    is closed after."""
    from hepbpf.loader import abi, datapath
    from hepbpf.loader.encode import encode
    from hepbpf.loader.libbpf import BpfObject
    from hepbpf.loader.mapnames import CLASS, XDP_PROGRAM

    t = time.perf_counter()
    enc = encode(image)
    times["encode"] = time.perf_counter() - t
    t = time.perf_counter()
    obj = BpfObject.open(datapath.object_path())
    with contextlib.closing(obj):
        for name, n in enc.sizes.items():
            obj.map(name).set_max_entries(n)
        obj.map(CLASS).set_value_size(enc.value_sizes[CLASS])
        obj.set_rodata(abi.pack("struct hep_config", enc.rodata))
        times["open"] = time.perf_counter() - t
        t = time.perf_counter()
        obj.load()
        times["load"] = time.perf_counter() - t
        t = time.perf_counter()
        gens = datapath.fill(obj, enc, standby=False)
        times["fill"] = time.perf_counter() - t
        t = time.perf_counter()
        gens.write(1, enc.content)
        times["fill_standby"] = time.perf_counter() - t
        gens.close()
        info["map_memlock"] = _map_memlock()
        info["verified_insns"] = obj.program(XDP_PROGRAM).info().get("verified_insns")


def measure_scale(attach_iface: str | None = None, *, n_rules: int = N_RULES, n_cidrs: int = N_CIDRS,
                  seed: int = SEED) -> dict:
    """Generate the scale policy, compile it and load it, timing each phase
    (seconds, wall clock). Kernel phases need root and the built object;
    without them ``kernel`` says why and only the compiler is timed.
    ``attach_iface``: also attach to that interface (compiled for it) the
    way ``hepbpf attach`` does, then detach."""
    iface = attach_iface or IFACE
    times: dict[str, float] = {}
    t = time.perf_counter()
    text, shape = generate(n_rules, n_cidrs, seed, iface)
    generate_s = time.perf_counter() - t
    cpu = time.process_time()
    compiled = _compile_phases(text, iface, times)
    compile_cpu = time.process_time() - cpu
    times["compile"] = times["parse"] + times["resolve"] + times["lower"]
    img = compiled.image
    out: dict = {
        "rules": shape.rules, "cidrs": shape.cidrs, "policy_bytes": len(text), "generate_s": generate_s,
        "compile_cpu_s": compile_cpu,
        "image": {"slots": len(img.slots), "nwords": img.nwords, "classes": len(img.classes),
                  "addr_entries": img.addr_count, "port_tables": img.port_tables, "port_segments": len(img.ports)},
        "kernel": None, "seconds": times,
    }
    info: dict = {}
    try:
        _kernel_phases(img, times, info)
    except (OSError, ImportError, RuntimeError) as e:  # not root, no object built, no libbpf
        out["kernel"] = f"skipped: {e}"
    else:
        times["total"] = times["compile"] + times["encode"] + times["open"] + times["load"] + times["fill"]
        out["map_memlock_bytes"] = info.get("map_memlock")
        out["verified_insns"] = info.get("verified_insns")
    if attach_iface is not None and out["kernel"] is None:
        from hepbpf.loader import attach as attach_mod
        t = time.perf_counter()
        try:
            attach_mod.attach(attach_iface, compiled, mode="auto", node=NODE, sources=["-"])
            times["attach"] = time.perf_counter() - t  # encode + load + fill + attach, as `hepbpf attach`
            times["total_attached"] = times["compile"] + times["attach"]
        finally:
            attach_mod.detach(attach_iface)
    gc.collect()
    out["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return out


def _table(r: dict) -> str:
    s = r["seconds"]
    total = s.get("total", s["compile"])
    rows = [("parse (YAML, validate)", "parse"), ("resolve", "resolve"), ("lower", "lower"),
            ("= compile", "compile"), ("encode", "encode"), ("open", "open"), ("load (verify, JIT)", "load"),
            ("map fill (enforcing)", "fill"), ("= total, enforcing", "total"),
            ("map fill (standby, after)", "fill_standby")]
    lines = [f"{r['rules']:,} rules, {r['cidrs']:,} CIDRs ({r['policy_bytes'] / 1e6:.1f} MB of YAML)", ""]
    for label, key in rows:
        if key in s:
            lines.append(f"  {label:<30} {s[key]:7.3f} s {100 * s[key] / total:5.1f}%")
    if "attach" in s:
        lines += [f"  {'attach (encode, load, fill too)':<30} {s['attach']:7.3f} s",
                  f"  {'= compile + attach':<30} {s['total_attached']:7.3f} s"]
    im = r["image"]
    lines += ["", f"  compile CPU {r['compile_cpu_s']:.3f} s; image: {im['slots']:,} slots, {im['nwords']} words, "
                  f"{im['classes']:,} classes, {im['addr_entries']:,} LPM entries, "
                  f"{im['port_tables']} port tables ({im['port_segments']:,} segments)",
              f"  peak RSS {r['peak_rss_bytes'] / 2**20:.0f} MiB"]
    if r["kernel"]:
        lines.append(f"  kernel phases {r['kernel']}")
    else:
        lines.append(f"  BPF maps {r['map_memlock_bytes'] / 2**20:.1f} MiB (memlock); "
                     f"XDP verified in {r['verified_insns']:,} instructions")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hepbpf.bench.scale", description=__doc__.split("\n")[0])
    ap.add_argument("--iface", help="also attach to this interface (then detach)")
    ap.add_argument("--rules", type=int, default=N_RULES)
    ap.add_argument("--cidrs", type=int, default=N_CIDRS)
    ap.add_argument("--json", action="store_true", help="print the measurements as JSON")
    args = ap.parse_args(argv)
    r = measure_scale(args.iface, n_rules=args.rules, n_cidrs=args.cidrs)
    print(json.dumps(r, indent=2) if args.json else _table(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
