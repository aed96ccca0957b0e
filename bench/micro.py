"""In-kernel cost per packet, through BPF_PROG_TEST_RUN.

Every program runs the same frames, pinned to one CPU, and each figure is
the median (with min and max) of CALLS calls, each call averaging `repeat`
runs as the kernel reports it; hepbpf and LIN are loaded LOADS times, and
their figure is the median of the loads' medians. `repeat` is calibrated so one call takes
about CALL_S. Before anything is timed, each engine's verdict for each
frame is checked against RuleSet.first_match: a fast wrong answer is not a
result.

Engines: E / TC_E (empty program), P / TC_P (hepbpf's parser alone),
hepbpf (the real object with the rule set compiled by the real compiler,
events and counters on and the host's addresses known, as attached), LIN
(bench/linear.py; up to the size the verifier accepts, which is found and
reported).
"""

from __future__ import annotations

import ipaddress
import os
import statistics
import struct
import sys
import time
from dataclasses import asdict, dataclass, field

from hepbpf.compiler import compile_policy
from hepbpf.compiler.reasons import REASONS
from hepbpf.loader import abi
from hepbpf.loader.datapath import load_image
from hepbpf.loader.encode import EventSettings
from hepbpf.loader.netdev import ALWAYS_LOCAL
from hepbpf.loader.libbpf import BpfObject, num_possible_cpus
from hepbpf.loader.mapnames import REASON_STATS
from hepbpf.loader.percpu import read_stats

from . import linear
from .rules import CASES, IFACE, NODE, Probe, RuleSet, hepbpf_yaml, rule_set

CALLS = 5
CALL_S = 0.04
# Each hepbpf and LIN program is loaded LOADS times, and its figure is the
# median of the loads' medians: the same program measures 100 ns on most
# loads here and 135 on some (the XDP program of one load, not the tc
# program sharing its maps: where the JIT placed the code, it seems).
LOADS = 3
XDP_DROP, XDP_PASS = 1, 2
TC_ACT_SHOT = 2
SKB_CTX = struct.Struct("=9I I I")  # struct __sk_buff up to ingress_ifindex (0: the host's own)
REASON_MAX = len(REASONS)


@dataclass
class Result:
    engine: str  # E, P, TC_E, TC_P, hepbpf, LIN
    hook: str  # xdp | tc
    family: int
    n: int  # rules (0 for baselines)
    case: str  # none | last | mix | - (baselines)
    median: float  # ns per packet
    min: float
    max: float
    samples: list = field(default_factory=list)
    note: str = ""

    def as_json(self) -> dict:
        return {"kind": "micro", **asdict(self)}


def frame(p: Probe, family: int, egress: bool = False) -> bytes:
    """A 64-byte-class frame for the probe; egress swaps the endpoints (the
    host sends to the rule's address)."""
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether

    src, dst = (p.dst, p.src) if egress else (p.src, p.dst)
    l3 = IP(src=src, dst=dst) if family == 4 else IPv6(src=src, dst=dst)
    l4 = TCP(sport=40000, dport=p.dport, flags="S") if p.proto == "TCP" else UDP(sport=40000, dport=p.dport)
    return bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / l3 / l4)


def _run(prog, data: bytes, repeat: int, ctx: bytes | None) -> int:
    return prog.test_run(data, repeat=repeat, ctx=ctx)[2]


def _repeat(prog, frames: list[bytes], ctx: bytes | None) -> int:
    """Runs per frame that make a call last about CALL_S."""
    probe = max(1, 20000 // len(frames))
    t0 = time.perf_counter()
    for f in frames:
        _run(prog, f, probe, ctx)
    per_run = (time.perf_counter() - t0) / (probe * len(frames))
    return max(1000, int(CALL_S / max(per_run, 1e-9) / len(frames)))


def _call(prog, frames: list[bytes], repeat: int, ctx: bytes | None) -> float:
    return sum(_run(prog, f, repeat, ctx) for f in frames) / len(frames)


def _summary(samples: list) -> tuple[float, float, float, list]:
    return statistics.median(samples), min(samples), max(samples), samples


def measure(prog, frames: list[bytes], ctx: bytes | None = None, calls: int = CALLS) -> tuple[float, float, float, list]:
    """Median/min/max ns per packet over ``calls`` calls; with several frames
    a call runs each in turn and averages them."""
    repeat = _repeat(prog, frames, ctx)
    return _summary([_call(prog, frames, repeat, ctx) for _ in range(calls)])


def measure_cases(prog, cases: dict[str, list[bytes]], ctx: bytes | None = None,
                  calls: int = CALLS) -> dict[str, tuple[float, float, float, list]]:
    """measure() of each case, the calls taken in turns (none, last, mix,
    none, ...): a spell of machine noise then lands on one call of each
    case, not on every call of one (it once made a case 60% slower)."""
    repeats = {c: _repeat(prog, frames, ctx) for c, frames in cases.items()}
    samples: dict[str, list] = {c: [] for c in cases}
    for _ in range(calls):
        for c, frames in cases.items():
            samples[c].append(_call(prog, frames, repeats[c], ctx))
    return {c: _summary(s) for c, s in samples.items()}


def over_loads(per_load: list[dict[str, tuple]]) -> dict[str, tuple[float, float, float, list, str]]:
    """measure_cases() results of several loads of one program, per case:
    the median of the loads' medians, min and max of every call, every
    call's sample, and a note with each load's median."""
    out = {}
    for c in per_load[0]:
        meds = [r[c][0] for r in per_load]
        samples = [x for r in per_load for x in r[c][3]]
        note = "per-load medians " + ", ".join(f"{m:.0f}" for m in meds) if len(meds) > 1 else ""
        out[c] = (statistics.median(meds), min(samples), max(samples), samples, note)
    return out


# --- baselines ------------------------------------------------------------------------


def baselines(families=(4, 6)) -> list[Result]:
    obj = BpfObject.open(str(abi.bpf_dir() / "bench.bpf.o"))
    try:
        obj.load()
        out = []
        for fam in families:
            f = frame(rule_set(1, fam).probes("none")[0], fam)
            ctx = SKB_CTX.pack(*([0] * 11))
            for engine, prog, hook, c in (("E", "bench_xdp_pass", "xdp", None), ("P", "bench_xdp_parse", "xdp", None),
                                          ("TC_E", "bench_tc_pass", "tc", ctx), ("TC_P", "bench_tc_parse", "tc", ctx)):
                med, lo, hi, s = measure(obj.program(prog), [f], c)
                out.append(Result(engine, hook, fam, 0, "-", med, lo, hi, s))
        return out
    finally:
        obj.close()


# --- hepbpf ---------------------------------------------------------------------------


def _reasons(dp, chain: int) -> list[int]:
    return [p for p, _ in read_stats(dp.obj.map(REASON_STATS), REASON_MAX, chain * REASON_MAX)]


def host_nets(family: int) -> tuple:
    """The addresses attach would find in the live bench's namespace: the
    probes' destination, its subnet's broadcast, and ALWAYS_LOCAL."""
    dst = ipaddress.ip_address(rule_set(1, family).probes("none")[0].dst)
    own = (ipaddress.ip_network(dst),)
    if family == 4:
        own += (ipaddress.ip_network(ipaddress.ip_network(f"{dst}/24", strict=False).broadcast_address),)
    return ALWAYS_LOCAL + own


def _check_hepbpf(dp, rs: RuleSet, case: str, frames: list[bytes], probes, chain: int, ctx) -> None:
    """Each frame once: the reason counter that moves must be the expected one."""
    prog = dp.prog if chain == 0 else dp.tc_prog
    for f, p in zip(frames, probes):
        before = _reasons(dp, chain)
        _run(prog, f, 1, ctx)
        moved = [r for r, (a, b) in enumerate(zip(before, _reasons(dp, chain))) if b != a]
        want = REASONS["end-of-tier"] if rs.first_match(p) is None else REASONS["rule-deny"]
        if moved != [want]:
            raise AssertionError(f"hepbpf judged the {case} packet {p} by reasons {moved}, expected {want}")


def hepbpf(rs: RuleSet, hooks=("xdp", "tc"), cases=CASES, loads: int = LOADS) -> tuple[list[Result], dict]:
    t0 = time.perf_counter()
    compiled = compile_policy([("bench.yaml", hepbpf_yaml(rs))], node=NODE, iface=IFACE)
    t1 = time.perf_counter()
    timing = {"n": rs.n, "family": rs.family, "compile_s": t1 - t0}
    per_load: dict[str, list] = {hook: [] for hook in hooks}
    for i in range(loads):
        # As attach loads it: events on, and the host's addresses known
        # (the ingress forward check reads them).
        t = time.perf_counter()
        dp = load_image(compiled.image, events=EventSettings(), local_nets=host_nets(rs.family))
        timing.setdefault("load_s", time.perf_counter() - t)
        try:
            for hook in hooks:
                chain = 0 if hook == "xdp" else 1
                prog = dp.prog if hook == "xdp" else dp.tc_prog
                ctx = None if hook == "xdp" else SKB_CTX.pack(*([0] * 11))
                frames = {}
                for case in cases:
                    probes = rs.probes(case)
                    frames[case] = [frame(p, rs.family, egress=hook == "tc") for p in probes]
                    if i == 0:
                        _check_hepbpf(dp, rs, case, frames[case], probes, chain, ctx)
                per_load[hook].append(measure_cases(prog, frames, ctx))
        finally:
            dp.close()
    out = [Result("hepbpf", hook, rs.family, rs.n, case, med, lo, hi, s, note)
           for hook in hooks for case, (med, lo, hi, s, note) in over_loads(per_load[hook]).items()]
    return out, timing


# --- LIN(N) ---------------------------------------------------------------------------


class _Lin:
    """bench.bpf.o's LIN entry with one assembled rules program in its slot."""

    def __init__(self):
        self.obj = BpfObject.open(str(abi.bpf_dir() / "bench.bpf.o"))
        self.obj.load()
        self.state = self.obj.map("bench_lin_v1")
        self.jump = self.obj.map("bench_lin_jmp_v1")
        self.entry = self.obj.program("bench_xdp_lin")
        self.fd: int | None = None

    def install(self, rs: RuleSet) -> None:
        fd = linear.load(linear.assemble(rs, self.state.fd))
        self.jump.update((0).to_bytes(4, sys.byteorder), fd.to_bytes(4, sys.byteorder))
        if self.fd is not None:
            os.close(self.fd)
        self.fd = fd

    def hit(self, f: bytes) -> int:
        key = (0).to_bytes(4, sys.byteorder)
        ncpu = num_possible_cpus()
        self.state.update(key, b"\xff" * linear.STATE_SIZE * ncpu)
        ret = self.entry.test_run(f)[0]
        raw = self.state.lookup(key, percpu=True)
        hits = {linear.hit_of(raw[i * linear.STATE_SIZE:(i + 1) * linear.STATE_SIZE]) for i in range(ncpu)}
        hits.discard(0xFFFFFFFF)
        if ret != XDP_DROP or len(hits) != 1:
            raise AssertionError(f"LIN returned {ret} with hits {hits}")
        return hits.pop()

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
        self.obj.close()


def lin(rs: RuleSet, cases=CASES, loads: int = LOADS) -> list[Result]:
    """LIN(N) on XDP, or one Result with note "rejected: ..." if it does not
    load. Loaded ``loads`` times, as hepbpf is (LOADS)."""
    m = _Lin()
    try:
        try:
            m.install(rs)
        except linear.LoadError as e:
            return [Result("LIN", "xdp", rs.family, rs.n, "-", float("nan"), float("nan"), float("nan"),
                           note=f"rejected by the verifier: {e}")]
        frames = {}
        for case in cases:
            probes = rs.probes(case)
            frames[case] = [frame(p, rs.family) for p in probes]
            for f, p in zip(frames[case], probes):
                want = rs.first_match(p)
                got = m.hit(f)
                if got != (rs.n if want is None else want):
                    raise AssertionError(f"LIN matched rule {got} for {p}, expected {want}")
        per_load = [measure_cases(m.entry, frames)]
        for _ in range(loads - 1):
            m.install(rs)
            per_load.append(measure_cases(m.entry, frames))
        return [Result("LIN", "xdp", rs.family, rs.n, case, med, lo, hi, s, note)
                for case, (med, lo, hi, s, note) in over_loads(per_load).items()]
    finally:
        m.close()


def lin_limit(family: int = 4, lo: int = 1000, hi: int = 10000) -> int:
    """The largest rule count LIN loads at (bisection; the generator is
    deterministic, so this is a property of the verifier)."""
    m = _Lin()
    try:
        def loads(n: int) -> bool:
            try:
                m.install(rule_set(n, family))
                return True
            except linear.LoadError:
                return False
        if not loads(lo):
            return 0
        if loads(hi):
            return hi
        while hi - lo > max(16, lo // 50):
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if loads(mid) else (lo, mid)
        return lo
    finally:
        m.close()
