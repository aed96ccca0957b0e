"""`make bench`: every measurement, then every ratio next to its target.

    python -m hepbpf.bench [--out DIR] [--sizes 10,100,1000,10000] [--quick] [--no-live]

Writes DIR/bench.json (every sample, the machine, the verdicts) and
DIR/bench.png. Needs root (BPF, namespaces). Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

from . import micro, report
from .rules import rule_set

DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@contextlib.contextmanager
def _pinned(cpu: int):
    """Run in-kernel timings on one CPU (the probe's recipe: taskset -c 1)."""
    old = os.sched_getaffinity(0)
    cpus = sorted(old)
    os.sched_setaffinity(0, {cpu if cpu in old else cpus[-1]})
    try:
        yield
    finally:
        os.sched_setaffinity(0, old)


def run_micro(sizes, families) -> tuple[list[dict], list[dict], dict]:
    results, timings = [], []
    with _pinned(1):
        _say("in-kernel: baselines")
        results += [r.as_json() for r in micro.baselines(families)]
        for fam in families:
            for n in sizes:
                rs = rule_set(n, fam)
                _say(f"in-kernel: hepbpf, {n} rules, IPv{fam}")
                res, timing = micro.hepbpf(rs)
                results += [r.as_json() for r in res]
                timings.append(timing)
                _say(f"in-kernel: LIN, {n} rules, IPv{fam}")
                results += [r.as_json() for r in micro.lin(rs)]
        _say("in-kernel: the largest LIN the verifier accepts")
        limit = {"lin_max_rules_v4": micro.lin_limit(4)}
    return results, timings, limit


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hepbpf.bench", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where bench.json and bench.png go")
    ap.add_argument("--sizes", default="10,100,1000,10000", help="rule counts")
    ap.add_argument("--families", default="4,6")
    ap.add_argument("--rounds", type=int, default=1, help="end-to-end rounds (ratios are per run)")
    ap.add_argument("--window", type=float, default=1.0, help="end-to-end window, seconds")
    ap.add_argument("--no-live", action="store_true", help="skip the end-to-end part")
    ap.add_argument("--quick", action="store_true", help="small sizes, short windows (a smoke run)")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("hepbpf bench: needs root (BPF_PROG_TEST_RUN, namespaces)", file=sys.stderr)
        return 2
    sizes = tuple(int(x) for x in args.sizes.split(","))
    families = tuple(int(x) for x in args.families.split(","))
    window = args.window
    if args.quick:
        sizes, window = tuple(n for n in sizes if n <= 100) or (10,), 0.3
    t0 = time.monotonic()
    data: dict = {"machine": report.machine(), "sizes": sizes, "families": families}
    data["micro"], data["load_timings"], limits = run_micro(sizes, families)
    data.update(limits)
    if not args.no_live:
        from .live import run_live
        _say("end to end: veth, live frames")
        data["live"] = run_live(sizes=sizes, families=(4,), rounds=args.rounds, window_s=window,
                                windows=3, progress=sys.stderr)
    if not args.quick:
        from .cidrset import measure_cidrset
        _say("in-kernel: a 100,000-CIDR set, hepbpf's scope (DIR, or host hash + trie) against one trie")
        with _pinned(1):
            data["cidr_set"] = measure_cidrset(families)
        try:
            from .scale import measure_scale
        except ImportError:
            measure_scale = None
        if measure_scale:
            _say("scale: 10,000 rules + 100,000 CIDRs")
            data["scale"] = measure_scale()
    if not args.quick:
        from .updates import measure_updates
        _say("updates: k CIDRs of 100,000; one rule of 10,000")
        data["updates"] = measure_updates()
    data["elapsed_s"] = time.monotonic() - t0
    js, png = report.write(data, args.out)
    print(report.text(data))
    print(f"\nwrote {js}" + (f" and {png}" if png else " (no plot: matplotlib is missing)")
          + f" in {data['elapsed_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
