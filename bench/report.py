"""The benchmark's verdicts: every ratio next to its target, the JSON
record, and the plot.

Ratios only compare figures taken in the same run (perf-probe.md: across
runs on this VM medians move 5-18%, within a run a few %). A missing
figure is reported as not measured, never as met.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Verdict:
    goal: str
    measured: float | None  # the ratio (or seconds), None: not measured
    target: str  # e.g. "<= 3x"
    met: bool | None
    detail: str = ""

    def line(self) -> str:
        shown = "not measured" if self.measured is None else f"{self.measured:.3g}"
        state = "-" if self.met is None else ("met" if self.met else "MISSED")
        return f"  {state:<7} {self.goal:<58} {shown:>12}  target {self.target:<10} {self.detail}"

    def as_json(self) -> dict:
        return {"goal": self.goal, "measured": self.measured, "target": self.target, "met": self.met,
                "detail": self.detail}


def _at_most(goal: str, value: float | None, bound: float, unit: str = "x", detail: str = "") -> Verdict:
    if value is None or math.isnan(value):
        return Verdict(goal, None, f"<= {bound:g}{unit}", None, detail)
    return Verdict(goal, value, f"<= {bound:g}{unit}", value <= bound, detail)


def _at_least(goal: str, value: float | None, bound: float, unit: str = "x", detail: str = "") -> Verdict:
    if value is None or math.isnan(value):
        return Verdict(goal, None, f">= {bound:g}{unit}", None, detail)
    return Verdict(goal, value, f">= {bound:g}{unit}", value >= bound, detail)


def machine() -> dict:
    """What the numbers depend on (perf-anchors.md: record all of it)."""
    def read(path: str) -> str | None:
        try:
            return Path(path).read_text().strip()
        except OSError:
            return None
    cpu = next((line.split(":", 1)[1].strip() for line in (read("/proc/cpuinfo") or "").splitlines()
                if line.startswith("model name")), platform.processor())
    vulns = {}
    vdir = Path("/sys/devices/system/cpu/vulnerabilities")
    if vdir.is_dir():
        for name in ("spectre_v2", "retbleed", "spec_rstack_overflow"):
            if (v := read(str(vdir / name))) is not None:
                vulns[name] = v
    return {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "kernel": platform.release(), "cpu": cpu,
            "cpus": os.cpu_count(), "bpf_jit_enable": read("/proc/sys/net/core/bpf_jit_enable"),
            "bpf_stats_enabled": read("/proc/sys/kernel/bpf_stats_enabled"), "mitigations": vulns}


# --- lookups over the raw results -------------------------------------------------------


def _micro(results: list[dict], engine: str, hook: str = "xdp", family: int = 4, n: int = 0,
           case: str = "-") -> float | None:
    for r in results:
        if (r["engine"], r["hook"], r["family"], r["n"], r["case"]) == (engine, hook, family, n, case):
            return None if math.isnan(r["median"]) else r["median"]
    return None


def _live(results: list[dict], engine: str, n: int, case: str, family: int = 4) -> float | None:
    """Median Mpps over rounds of one live case (xdp-drop: the floor)."""
    rates = [r["mpps"] for r in results if r["engine"] == engine and r["family"] == family
             and (engine == "xdp-drop" or (r["n"] == n and r["case"] == case))]
    if not rates:
        return None
    rates.sort()
    return rates[len(rates) // 2]


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def verdicts(data: dict) -> list[Verdict]:
    micro = data.get("micro", [])
    live = data.get("live", [])
    out: list[Verdict] = []
    # In-kernel: hepbpf / P, both families, none and last.
    bounds = {10: 3, 100: 5, 1000: 8, 10000: 16}
    for fam in (4, 6):
        p = _micro(micro, "P", family=fam)
        for n, bound in bounds.items():
            for case in ("none", "last"):
                h = _micro(micro, "hepbpf", family=fam, n=n, case=case)
                out.append(_at_most(f"in-kernel hepbpf/P, IPv{fam}, {n} rules, {case}", _ratio(h, p), bound,
                                    detail=f"{h:.0f} ns vs P {p:.0f} ns" if h and p else ""))
    # tc egress against its own parse-only baseline, same bounds (G4).
    tp = _micro(micro, "TC_P", hook="tc")
    for n, bound in bounds.items():
        h = _micro(micro, "hepbpf", hook="tc", n=n, case="none")
        out.append(_at_most(f"in-kernel tc egress hepbpf/TC_P, IPv4, {n} rules, none", _ratio(h, tp), bound,
                            detail=f"{h:.0f} ns vs {tp:.0f} ns" if h and tp else ""))
    # Against the straight-line program.
    for case in ("none", "last"):
        h100, l100 = _micro(micro, "hepbpf", n=100, case=case), _micro(micro, "LIN", n=100, case=case)
        out.append(_at_most(f"hepbpf/LIN at 100 rules, {case} (no slower)", _ratio(h100, l100), 1.0,
                            detail=f"{h100:.0f} vs {l100:.0f} ns" if h100 and l100 else ""))
        h1k, l1k = _micro(micro, "hepbpf", n=1000, case=case), _micro(micro, "LIN", n=1000, case=case)
        out.append(_at_least(f"LIN/hepbpf at 1,000 rules, {case} (faster)", _ratio(l1k, h1k), 10,
                             detail=f"{l1k:.0f} vs {h1k:.0f} ns" if h1k and l1k else ""))
    # End to end on veth.
    floor = _live(live, "xdp-drop", 0, "-")
    for n, bound in ((10, 0.8), (10000, 0.5)):
        for case in ("none", "last"):
            h = _live(live, "hepbpf", n, case)
            out.append(_at_least(f"veth rate hepbpf/XDP-drop floor, {n} rules, {case}", _ratio(h, floor), bound,
                                 unit="", detail=f"{h:.2f} vs {floor:.2f} Mpps" if h and floor else ""))
    for engine, n, bound in (("ipt-legacy", 1000, 20), ("nft-linear", 1000, 50)):
        for case in ("none", "last"):
            h, o = _live(live, "hepbpf", n, case), _live(live, engine, n, case)
            out.append(_at_least(f"veth rate hepbpf/{engine}, {n} rules, {case}", _ratio(h, o), bound,
                                 detail=f"{h:.3f} vs {o:.3f} Mpps" if h and o else ""))
    for n in (10, 100, 1000, 10000):
        for case in ("none", "last"):
            h, o = _live(live, "hepbpf", n, case), _live(live, "nft-set", n, case)
            out.append(_at_least(f"veth rate hepbpf/nft-set, {n} rules, {case}", _ratio(h, o), 3,
                                 detail=f"{h:.3f} vs {o:.3f} Mpps" if h and o else ""))
    # A 100,000-CIDR source set against a plain LPM trie, random keys
    # (bench/cidrset.py: per family and key mix).
    rows = data.get("cidr_set") or [{"family": 4, "mix": "members"}]
    for r in rows:
        h, lpm = r.get("hepbpf_ns"), r.get("lpm_ns")
        out.append(_at_most(f"100k-CIDR set / plain LPM trie, IPv{r['family']}, {r['mix']} keys", _ratio(h, lpm),
                            0.5, detail=f"{h:.0f} vs {lpm:.0f} ns per lookup" if h and lpm else ""))
    # Updates and scale.
    upd = data.get("updates") or {}
    cidr_s = upd.get("cidr_s") or {}
    if cidr_s and not isinstance(next(iter(cidr_s.values())), dict):
        cidr_s = {"run": cidr_s}  # a result from before the scattered pattern
    for pattern, by_k in cidr_s.items():
        rows = {str(r["k"]): r for r in upd.get("rows", [])
                if r["change"] == "cidrs" and r.get("pattern", "run") == pattern}
        for k, seconds in sorted(by_k.items(), key=lambda kv: int(kv[0])):
            budget = 1e-3 + 1e-6 * int(k)
            r = rows.get(k)
            spread = (f"{1e3 * r['effect_min_s']:.2f}-{1e3 * r['effect_max_s']:.2f} ms of {r['rounds']}; "
                      if r and "rounds" in r else "")
            detail = (spread + f"kernel writes+switch {1e3 * r['kernel_s']:.2f} ms, {r['written']} written, "
                      f"{r['deleted']} deleted{', RELOADED' if r['reloaded'] else ''}") if r else ""
            out.append(_at_most(f"update of {int(k):,} CIDRs ({pattern}) in a 100k set (diff+write+switch)",
                                seconds * 1e3, budget * 1e3, unit=" ms", detail=detail))
    out.append(_at_most("update of 1 rule in a 10,000-rule policy", None if upd.get("rule_s") is None
                        else upd["rule_s"] * 1e3, 100, unit=" ms", detail=upd.get("rule_detail", "")))
    scale = data.get("scale") or {}
    secs = scale.get("seconds") or {}
    phases = ", ".join(f"{k} {secs[k]:.2f}" for k in ("parse", "lower", "encode", "load", "fill") if k in secs)
    mem = f"; peak RSS {scale['peak_rss_bytes'] / 2**20:.0f} MiB" if scale.get("peak_rss_bytes") else ""
    out.append(_at_most("compile + load + fill 10k rules + 100k CIDRs (to enforcing)",
                        secs.get("total"), 2, unit=" s", detail=phases + mem))
    return out


# --- output -----------------------------------------------------------------------------


def write(data: dict, out_dir: Path) -> tuple[Path, Path | None]:
    out_dir.mkdir(parents=True, exist_ok=True)
    data = dict(data, verdicts=[v.as_json() for v in verdicts(data)])
    js = out_dir / "bench.json"
    js.write_text(json.dumps(data, indent=1, sort_keys=True, default=str) + "\n")
    (out_dir / "bench.md").write_text(markdown(data))
    return js, plot(data, out_dir / "bench.png")


def plot(data: dict, path: Path) -> Path | None:
    """ns/packet against rules, log-log: in-kernel (left), end to end (right)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    micro, live = data.get("micro", []), data.get("live", [])
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.6))
    for engine, hook, case, style in (("hepbpf", "xdp", "none", "o-"), ("hepbpf", "xdp", "last", "o--"),
                                      ("hepbpf", "tc", "none", "s-"), ("LIN", "xdp", "none", "^-"),
                                      ("LIN", "xdp", "last", "^--")):
        pts = sorted((r["n"], r["median"]) for r in micro if (r["engine"], r["hook"], r["case"], r["family"])
                     == (engine, hook, case, 4) and not math.isnan(r["median"]))
        if pts:
            a.plot(*zip(*pts), style, label=f"{engine} {hook} {case}")
    for engine, ls in (("E", ":"), ("P", "-.")):
        v = _micro(micro, engine)
        if v:
            a.axhline(v, linestyle=ls, color="grey", label=f"{engine} (XDP {'empty' if engine == 'E' else 'parse only'})")
    a.set(xscale="log", yscale="log", xlabel="rules", ylabel="ns per packet (BPF_PROG_TEST_RUN)",
          title="in-kernel cost, IPv4")
    a.legend(fontsize=7)
    for engine, style in (("hepbpf", "o-"), ("nft-set", "s-"), ("ipt-legacy", "^-"), ("nft-linear", "v-")):
        pts = {}
        for r in live:
            if r["engine"] == engine and r["case"] == "last" and r["family"] == 4 and r["mpps"]:
                pts.setdefault(r["n"], []).append(1e3 / r["mpps"])
        if pts:
            xs = sorted(pts)
            b.plot(xs, [sorted(pts[x])[len(pts[x]) // 2] for x in xs], style, label=f"{engine} (last rule)")
    floor = _live(live, "xdp-drop", 0, "-")
    if floor:
        b.axhline(1e3 / floor, linestyle=":", color="grey", label="XDP drop-all floor")
    b.set(xscale="log", yscale="log", xlabel="rules", ylabel="ns per packet (1 / veth drop rate)",
          title="end to end on veth, sender included")
    b.legend(fontsize=7)
    m = data.get("machine", {})
    fig.suptitle(f"hepbpf bench, {m.get('date', '')}: {m.get('cpu', '')}, {m.get('cpus', '')} CPUs, "
                 f"kernel {m.get('kernel', '')}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def text(data: dict) -> str:
    lines = ["", "targets (ratios from this run):"]
    vs = verdicts(data)
    lines += [v.line() for v in vs]
    met = sum(1 for v in vs if v.met)
    missed = sum(1 for v in vs if v.met is False)
    unmeasured = sum(1 for v in vs if v.met is None)
    lines.append(f"  {met} met, {missed} missed, {unmeasured} not measured")
    return "\n".join(lines)


def markdown(data: dict) -> str:
    """The README's tables: in-kernel ns/packet, end-to-end Mpps, verdicts."""
    micro, live = data.get("micro", []), data.get("live", [])
    m = data.get("machine", {})
    out = [f"Run of {m.get('date', '?')} on {m.get('cpu', '?')}, {m.get('cpus', '?')} CPUs, kernel "
           f"{m.get('kernel', '?')}, JIT {m.get('bpf_jit_enable', '?')}, in {data.get('elapsed_s', 0):.0f} s.", ""]
    fams = sorted({r["family"] for r in micro})
    base = ", ".join(f"{e} {_micro(micro, e, hook=h, family=f):.0f}" for e, h in (("E", "xdp"), ("P", "xdp"),
                     ("TC_E", "tc"), ("TC_P", "tc")) for f in fams[:1] if _micro(micro, e, hook=h, family=f))
    out += [f"In-kernel ns/packet (BPF_PROG_TEST_RUN, median of 5; baselines: {base}):", "",
            "| rules | family | hepbpf XDP none / last / mix | hepbpf tc none / last | LIN XDP none / last |",
            "|---:|---:|---:|---:|---:|"]

    def cell(*vals) -> str:
        return " / ".join("-" if v is None else f"{v:.0f}" for v in vals)
    for n in sorted({r["n"] for r in micro if r["n"]}):
        for f in fams:
            rejected = any(r["engine"] == "LIN" and r["n"] == n and r["family"] == f
                           and r.get("note", "").startswith("rejected") for r in micro)
            lin = "rejected" if rejected else cell(_micro(micro, "LIN", family=f, n=n, case="none"),
                                                   _micro(micro, "LIN", family=f, n=n, case="last"))
            out.append(f"| {n:,} | IPv{f} | {cell(*(_micro(micro, 'hepbpf', family=f, n=n, case=c) for c in CASES_))}"
                       f" | {cell(*(_micro(micro, 'hepbpf', hook='tc', family=f, n=n, case=c) for c in ('none', 'last')))}"
                       f" | {lin} |")
    if live:
        floor = _live(live, "xdp-drop", 0, "-")
        out += ["", f"End to end over veth, Mpps dropped (live-frames sender on the same CPU; XDP drop-all floor "
                f"{floor:.2f} Mpps), rule matched last:" if floor else "", "",
                "| rules | hepbpf | iptables-legacy raw | nft chain | nft set |", "|---:|---:|---:|---:|---:|"]
        for n in sorted({r["n"] for r in live if r["n"]}):
            vals = [_live(live, e, n, "last") for e in ("hepbpf", "ipt-legacy", "nft-linear", "nft-set")]
            out.append(f"| {n:,} | " + " | ".join("-" if v is None else f"{v:.3f}" for v in vals) + " |")
    vs = verdicts(data)
    out += ["", "| goal | measured | target | |", "|---|---:|---|---|"]
    for v in vs:
        shown = "not measured" if v.measured is None else f"{v.measured:.3g}"
        state = "-" if v.met is None else ("met" if v.met else "**missed**")
        out.append(f"| {v.goal} | {shown} | {v.target} | {state} |")
    return "\n".join(out) + "\n"


CASES_ = ("none", "last", "mix")
