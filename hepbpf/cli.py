"""The `hepbpf` command.

Exit codes: 0 success; 1 invalid policy or a failure (nothing is changed on
failure: the policy already enforced keeps enforcing); 2 usage; 77 needs
root.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import sys
import time

from hepbpf.compiler import PolicyError, SpecError, compile_policy, evaluate, parse_spec
from hepbpf.compiler.dump import dump_view
from hepbpf.compiler.mapimage import CHAIN_EGRESS, CHAIN_INGRESS, dump as dump_maps

from hepbpf.errors import EXIT_FAIL, EXIT_NOPERM, EXIT_OK, EXIT_USAGE, CliError


def _read_sources(files: list[str]) -> list[tuple[str, str]]:
    out = []
    for path in files:
        try:
            if path == "-":
                out.append(("<stdin>", sys.stdin.read()))
            else:
                with open(path, encoding="utf-8") as f:
                    out.append((path, f.read()))
        except OSError as e:
            raise CliError(f"{path}: {e.strerror}") from None
        except UnicodeDecodeError as e:
            raise CliError(f"{path}: not UTF-8 text ({e.reason})") from None
    return out


def _warn(compiled) -> None:
    for w in compiled.warnings:
        print(str(w), file=sys.stderr)


def cmd_check(args) -> int:
    from hepbpf.compiler import parse_files
    from hepbpf.compiler.resolve import check_references, selection_warnings

    sources = _read_sources(args.files)
    ps = parse_files(sources)
    check_references(ps)
    kinds: dict[str, int] = {}
    for group in (ps.policies, ps.host_endpoints, ps.network_sets, ps.felix_configs, ps.tiers):
        for r in group:
            kind = getattr(r, "kind", type(r).__name__)
            kinds[kind] = kinds.get(kind, 0) + 1
    for w in ps.warnings + selection_warnings(ps):
        print(str(w), file=sys.stderr)
    summary = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "no resources"
    print(f"valid: {summary}")
    if args.dump and not args.iface:
        raise CliError("--dump needs --iface (and --node)", EXIT_USAGE)
    if args.iface:
        compiled = compile_policy(sources, node=args.node, iface=args.iface)
        for w in compiled.warnings[len(ps.warnings):]:
            print(str(w), file=sys.stderr)
        view = compiled.views[CHAIN_INGRESS]
        img = compiled.image
        if view.hep is None:
            print(f"{args.iface} on node {args.node}: no host endpoint; not policed")
        else:
            pols = sum(len(t.policies) for t in view.tiers)
            print(f"{args.iface} on node {args.node}: host endpoint {view.hep.name}, "
                  f"{len(view.tiers)} tier(s), {pols} ingress policies, {len(view.failsafes)} failsafe ports")
            print(f"compiled: {len(img.slots)} slots, {img.nwords} word(s), {len(img.classes)} classes, "
                  f"{img.addr_count} address entries, {img.port_tables} port tables")
        if args.dump == "maps":
            sys.stdout.write(dump_maps(img))
        elif args.dump == "view":
            sys.stdout.write(dump_view(view))
    return EXIT_OK


def cmd_explain(args) -> int:
    packets = []
    for spec in args.packet:
        try:
            packets.append(parse_spec(spec))
        except SpecError as e:
            raise CliError(str(e), EXIT_USAGE) from None
    chain = CHAIN_INGRESS if args.direction == "ingress" else CHAIN_EGRESS
    sources = _read_sources(args.files)
    compiled = compile_policy(sources, node=args.node, iface=args.iface)
    _warn(compiled)
    how = {"forwarded": args.forwarded, "known_flow": args.established}
    if args.kernel:
        from hepbpf.loader.datapath import load_image

        _need_root()
        # local_nets=(): the object tells the host's addresses from others,
        # and explain marks each destination as the packet asks.
        with load_image(compiled.image, trace=True, local_nets=()) as dp:
            results = [dp.explain(p, chain, **how) for p in packets]
    else:
        results = [evaluate(compiled.views[chain], p, **how).as_json() for p in packets]
    for pkt, res in zip(packets, results):
        res = {"packet": str(pkt), **res}
        if args.output == "json":
            print(json.dumps(res))
        else:
            where = " ".join(f"{k}={res[k]}" for k in ("stage", "tier", "policy", "rule") if res.get(k) is not None)
            print(f"{res['verdict'].upper():5} {res['packet']}  ({res['reason']}{', ' + where if where else ''})")
            for n in res.get("notes", ()):
                what = f"policy={n['policy']} rule={n['rule']}" if n["policy"] else f"tier={n['tier']} end-of-tier"
                print(f"      {'logged' if n['kind'] == 'log' else 'would deny (audit)'} by {what}")
    return EXIT_OK


def _need_root() -> None:
    if os.geteuid() != 0:
        raise CliError("this needs root (CAP_BPF and CAP_NET_ADMIN): run it with sudo", EXIT_NOPERM)


def cmd_attach(args) -> int:
    from hepbpf.loader import confirm
    from hepbpf.loader.encode import EventSettings

    _need_root()
    try:
        socket.if_nametoindex(args.iface)
    except OSError:
        raise CliError(f"{args.iface}: no such interface in this network namespace") from None
    if args.command == "apply":
        from hepbpf.loader.attach import status

        if not any(st["attached"] for st in status(args.iface)):
            raise CliError(f"{args.iface}: hepbpf is not attached; `hepbpf attach` it first")
    events = EventSettings(log=not args.no_events, drops=not args.no_events, rate=args.event_rate,
                           burst=args.event_burst or 2 * args.event_rate, buffer=args.event_buffer)
    if events.problem():
        raise CliError(events.problem(), EXIT_USAGE)
    t0 = time.monotonic()
    # What re-creates this attachment: a later --confirm-within rolls back to it.
    inputs = confirm.make_inputs(_read_sources(args.files), args.files, args.node, ct_size=args.conntrack_size,
                                 egress=args.egress, audit=args.audit, events=events)
    compiled = confirm.compile_inputs(args.iface, inputs)
    _warn(compiled)
    if compiled.views[CHAIN_INGRESS].hep is None:
        raise CliError(f"no HostEndpoint for {args.iface} on node {args.node} in the given files: "
                       f"Calico would not police this interface, so there is nothing to attach "
                       f"(use --node if the node name differs from the hostname)")
    rollback = confirm.rollback_target(args.iface)
    t1 = time.monotonic()
    result = confirm.attach_inputs(args.iface, compiled, inputs, mode=args.mode)
    t2 = time.monotonic()
    if args.confirm_within is not None:
        # The token names this attach: an update in place keeps the prog id.
        pid = confirm.arm(args.iface, args.confirm_within, time.time_ns(), rollback)
        result.notes.append(f"PENDING: run `hepbpf confirm {args.iface}` within {args.confirm_within:g} s, or "
                            f"the {'previous policy comes back' if rollback else 'interface is detached'} "
                            f"(watchdog pid {pid})")
    elif confirm.cancel(args.iface):
        result.notes.append("note: this attach replaces a pending (unconfirmed) one; no rollback will happen")
    ing, eg = compiled.views[CHAIN_INGRESS], compiled.views[CHAIN_EGRESS]
    up = result.update
    audit = "AUDIT MODE (nothing is dropped; would-be drops are reported): " if args.audit else ""
    what = (f"host endpoint {ing.hep.name}, {sum(len(t.policies) for t in ing.tiers)} ingress and "
            f"{sum(len(t.policies) for t in eg.tiers)} egress policies, {len(compiled.image.slots)} slots; "
            f"compile {1000 * (t1 - t0):.0f} ms")
    if up is not None and not up.reloaded:
        print(f"{audit}updated {args.iface} in {1000 * up.effect_seconds:.1f} ms: {up.written} entries written, "
              f"{up.deleted} deleted, generation {up.generation} (no reload; then {1000 * up.settle_seconds:.1f} ms "
              f"for packets in flight) (prog id {result.prog_id}): {what}")
    else:
        verb = "replaced policy on" if result.replaced else "attached to"
        why = f" (reload: {up.reason})" if result.replaced and up is not None and up.reason else ""
        print(f"{audit}{verb} {args.iface}{why} in {1000 * (t2 - t1):.0f} ms (XDP {result.mode} mode, prog id "
              f"{result.prog_id}; egress {result.tc_mechanism}, prog id {result.tc_prog_id}): {what}")
    for note in result.notes:
        print(note, file=sys.stderr)
    print(f"pinned under {result.pin_dir}")
    return EXIT_OK


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def cmd_sync(args) -> int:
    from hepbpf.loader.attach import AttachError, sync_addresses

    _need_root()

    def once() -> None:
        try:
            n, added, removed = sync_addresses(args.iface)
        except AttachError as e:
            raise CliError(str(e)) from None
        print(f"{args.iface}: {n} host addresses and ranges ({added} added, {removed} removed)", flush=True)

    once()
    if args.follow is None:
        return EXIT_OK
    from pyroute2 import IPRoute

    # Re-sync on every address change the kernel announces, until told to
    # stop (Ctrl-C) or --follow's time is up.
    deadline = None if args.follow == 0 else time.monotonic() + args.follow
    with IPRoute() as ipr:
        ipr.bind()
        while deadline is None or time.monotonic() < deadline:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([ipr], [], [], wait)[0]:
                continue
            if any(m["event"] in ("RTM_NEWADDR", "RTM_DELADDR") for m in ipr.get()):
                once()
    return EXIT_OK


def cmd_confirm(args) -> int:
    from hepbpf.loader import confirm

    _need_root()
    pending = confirm.confirm(args.iface)
    if pending is None:
        raise CliError(f"{args.iface}: nothing is pending confirmation")
    left = pending["deadline"] - time.time()
    print(f"{args.iface}: confirmed{f' with {left:.1f} s to spare' if left > 0 else ''}; the policy stays")
    return EXIT_OK


def cmd_log(args) -> int:
    from hepbpf.logcmd import run_log

    _need_root()
    return run_log(args)


def cmd_detach(args) -> int:
    from hepbpf.loader.attach import detach

    _need_root()
    removed = detach(args.iface)
    print(f"detached from {args.iface}" if removed else f"{args.iface}: hepbpf was not attached")
    return EXIT_OK


def cmd_status(args) -> int:
    from hepbpf.loader.attach import status

    _need_root()
    states = status(args.iface)
    if args.output == "json":
        print(json.dumps(states if args.iface is None else (states[0] if states else None), indent=2))
        return EXIT_OK if states or args.iface is None else EXIT_FAIL
    if not states:
        print(f"{args.iface}: hepbpf is not attached" if args.iface else "hepbpf is not attached anywhere")
        return EXIT_OK if args.iface is None else EXIT_FAIL
    for st in states:
        if not st["attached"]:
            what = "NOT ATTACHED (stale state)"
        elif st.get("audit"):
            wd = st.get("would_drop") or {}
            n = sum(v["packets"] for v in wd.values())
            what = f"AUDIT (enforcing nothing that drops; would have dropped {n} packets)"
        else:
            what = "ENFORCING"
        print(f"{st['iface']}: {what}, "
              f"XDP {st['mode']} mode, prog id {st['prog_id']}, egress {st.get('tc_mechanism')} "
              f"prog id {st.get('tc_prog_id')}, node {st['node']}, host endpoint {st['host_endpoint']}")
        lr = st.get("last_rollback")
        if lr:
            when = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(lr["at"]))
            print(f"  ROLLED BACK at {when}: {lr.get('what') or 'FAILED: ' + lr.get('error', '?')}")
        pc = st.get("pending_confirmation")
        if pc:
            print(f"  PENDING CONFIRMATION: {pc['seconds_left']:.0f} s left, then {pc['rollback_to']} "
                  f"(`hepbpf confirm {st['iface']}` keeps it)")
        ev = st.get("events")
        if ev:
            print(f"  events: {ev['emitted']} emitted, {ev['suppressed']} suppressed by the rate limit, "
                  f"{ev['lost']} lost (ring full)")
        ct = st.get("conntrack")
        if ct:
            print(f"  conntrack: {ct['flows']} flows of {ct['size']}; " +
                  ", ".join(f"{k} {v}" for k, v in ct["events"].items()))
        print(f"  pinned under {st['pin_dir']}; attached {st['attached_at']}")
        if st.get("updated_at"):
            print(f"  policy updated in place {st['updated_at']} ({st.get('serial', 0)} updates since the load), "
                  f"generation {st.get('generation', 0)}")
        print(f"  {'reason':<16} {'packets':>12} {'bytes':>14}")
        for reason, c in st["reasons"].items():
            print(f"  {reason:<16} {c['packets']:>12} {c['bytes']:>14}")
        active = [r for r in st["rules"] if r["packets"]]
        if active:
            print(f"  {'chain':<7} {'slot':>5} {'action':<9} {'packets':>10}  policy / rule")
            for r in active:
                who = r["policy"] or r["reason"]
                rule = f" rule {r['rule']}" if r["rule"] is not None else ""
                print(f"  {r['chain']:<7} {r['slot']:>5} {r['action']:<9} {r['packets']:>10}  {who}{rule}")
    return EXIT_OK


def cmd_doctor(args) -> int:
    from hepbpf.doctor import run_doctor

    _need_root()
    return run_doctor(args)


def cmd_top(args) -> int:
    from hepbpf.top import run_top

    _need_root()
    return run_top(args)


def cmd_metrics(args) -> int:
    from hepbpf.metrics import run_metrics

    _need_root()
    return run_metrics(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hepbpf",
                                description="Calico host-endpoint policy, enforced by XDP (ingress) and tc (egress).")
    sub = p.add_subparsers(dest="command", required=True)
    node_default = socket.gethostname()

    a = sub.add_parser("attach", help="compile policy and enforce it on an interface (again: update it)")
    ap = sub.add_parser("apply", help="update the policy of an attached interface: only what changed, "
                                      "one atomic switch (a reload only if it does not fit)")
    for q in (a, ap):
        q.add_argument("iface")
        q.add_argument("files", nargs="+", metavar="FILE")
        q.add_argument("--node", default=node_default, help="node name of the host endpoints (default: hostname)")
        q.add_argument("--conntrack-size", type=_positive, default=65536, metavar="N",
                       help="flows the conntrack table holds; when full, the least recently used go")
        q.add_argument("--audit", action="store_true",
                       help="drop nothing: packets the policy denies pass, reported as would-drop events "
                            "(per policy: annotation hepbpf.io/audit: \"true\")")
        q.add_argument("--confirm-within", type=float, metavar="SECONDS",
                       help="roll back to the previous state unless `hepbpf confirm IFACE` runs in time")
        q.add_argument("--event-rate", type=_positive, default=1000, metavar="N",
                       help="events (Log records, drops) per second per CPU at most; the rest are counted")
        q.add_argument("--event-burst", type=_positive, default=None, metavar="N",
                       help="events allowed at once after a quiet spell (default: 2 x rate)")
        q.add_argument("--event-buffer", type=_positive, default=256 * 1024, metavar="BYTES",
                       help="event ring size, a power of 2 (default 256 KiB)")
        q.add_argument("--no-events", action="store_true", help="report nothing through the event ring")
        q.set_defaults(func=cmd_attach, mode="auto", egress="auto")
    a.add_argument("--mode", choices=("native", "generic", "auto"), default="auto",
                   help="XDP mode; auto tries native, then generic, and says which it got")
    a.add_argument("--egress", choices=("auto", "tcx", "clsact"), default="auto",
                   help="how the egress program is attached; auto: tcx where the kernel has it and "
                        "a persistent bpffs holds its link, else clsact")

    y = sub.add_parser("sync", help="reload the host's addresses (ingress tells forwarded packets by them)")
    y.add_argument("iface")
    y.add_argument("--follow", nargs="?", type=float, const=0, metavar="SECONDS",
                   help="keep them current: re-sync on every address change (for SECONDS, or until Ctrl-C)")
    y.set_defaults(func=cmd_sync)

    k = sub.add_parser("confirm", help="keep a policy attached with --confirm-within")
    k.add_argument("iface")
    k.set_defaults(func=cmd_confirm)

    g = sub.add_parser("log", help="Log records and drop events (calico-packet LOG lines, or JSON)")
    g.add_argument("iface", nargs="?", help="only this interface (default: every attached one)")
    g.add_argument("-f", "--follow", action="store_true", help="keep streaming (default: print what is queued)")
    g.add_argument("-o", "--output", choices=("text", "json"), default="text")
    g.add_argument("--verdict", choices=("allow", "deny"), help="only packets the policy gave this verdict")
    g.add_argument("--event", action="append", choices=("log", "drop", "would-drop"),
                   help="only these events (repeatable)")
    g.add_argument("--policy", action="append", help="only events of this policy (repeatable)")
    g.add_argument("--ip", action="append", metavar="ADDR[/LEN]", help="source or destination in it (repeatable)")
    g.add_argument("--port", action="append", type=int, help="source or destination port (repeatable)")
    g.add_argument("--direction", choices=("ingress", "egress"))
    g.add_argument("--prefix", default="calico-packet: ", help="text line prefix (Felix's logPrefix + ': ')")
    g.add_argument("--count", type=_positive, help="stop after N events")
    g.add_argument("--duration", type=float, metavar="SECONDS", help="with -f: stop after SECONDS")
    g.add_argument("--syslog", metavar="SOCKET|HOST:PORT", nargs="?", const="/dev/log",
                   help="also send each text line to syslog/journald (default /dev/log)")
    g.set_defaults(func=cmd_log)

    d = sub.add_parser("detach", help="remove hepbpf from an interface")
    d.add_argument("iface")
    d.set_defaults(func=cmd_detach)

    s = sub.add_parser("status", help="what is attached, and counters")
    s.add_argument("iface", nargs="?")
    s.add_argument("-o", "--output", choices=("text", "json"), default="text")
    s.set_defaults(func=cmd_status)

    dr = sub.add_parser("doctor", help="what this kernel offers: the paths hepbpf will take, and whether "
                        "its object loads here")
    dr.add_argument("-o", "--output", choices=["text", "json"], default="text")
    dr.set_defaults(func=cmd_doctor)

    t = sub.add_parser("top", help="live per-rule counters and rates")
    t.add_argument("iface", nargs="?", help="only this interface (default: every attached one)")
    t.add_argument("-d", "--delay", type=float, default=1.0, metavar="SECONDS",
                   help="refresh interval (default 1 s)")
    t.add_argument("--once", action="store_true",
                   help="print one table (rates over one interval) and exit: for scripts")
    t.add_argument("--sort", choices=("rate", "packets", "bytes", "policy"), default="rate")
    t.add_argument("--filter", default="", metavar="TEXT",
                   help="only rows whose policy, tier, action or reason contains TEXT")
    t.set_defaults(func=cmd_top)

    m = sub.add_parser("metrics", help="serve counters to Prometheus")
    m.add_argument("--listen", default="127.0.0.1", metavar="ADDR",
                   help="ADDR, ADDR:PORT, [IPv6]:PORT or :PORT (default 127.0.0.1, port 9469)")
    m.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                   help="stop serving after SECONDS (default: until Ctrl-C)")
    m.set_defaults(func=cmd_metrics)

    c = sub.add_parser("check", help="validate and compile; touches no kernel state")
    c.add_argument("files", nargs="+", metavar="FILE")
    c.add_argument("--node", default=node_default)
    c.add_argument("--iface", help="also compile for this interface and summarise")
    c.add_argument("--dump", choices=("view", "maps"),
                   help="print the resolved policy (view) or the compiled map contents (maps)")
    c.set_defaults(func=cmd_check)

    e = sub.add_parser("explain", help="the verdict for packets, and which rule gave it")
    e.add_argument("files", nargs="+", metavar="FILE")
    e.add_argument("--node", required=True)
    e.add_argument("--iface", required=True)
    e.add_argument("--direction", choices=("ingress", "egress"), default="ingress")
    e.add_argument("--packet", action="append", required=True, metavar="SPEC",
                   help="e.g. 'tcp 198.51.100.7:40000 -> 192.0.2.1:22' (repeatable)")
    e.add_argument("--forwarded", action="store_true",
                   help="the packets pass through the host (routed), rather than to or from it")
    e.add_argument("--established", action="store_true",
                   help="the packets belong to a flow conntrack already knows (e.g. replies)")
    e.add_argument("--kernel", action="store_true",
                   help="run the packets through the real object (XDP for ingress, tc for egress, "
                        "BPF_PROG_TEST_RUN) instead of the reference evaluator")
    e.add_argument("-o", "--output", choices=("json", "text"), default="json")
    e.set_defaults(func=cmd_explain)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except PolicyError as e:
        for d in e.diagnostics:
            print(str(d), file=sys.stderr)
        n = len(e.diagnostics)
        print(f"hepbpf: {n} error{'s' if n > 1 else ''}; nothing was changed", file=sys.stderr)
        return EXIT_FAIL
    except CliError as e:
        print(f"hepbpf: {e}", file=sys.stderr)
        return e.code
    except (OSError, RuntimeError) as e:
        # Kernel and libbpf failures (BpfError is an OSError): say what failed.
        print(f"hepbpf: {e}", file=sys.stderr)
        return EXIT_FAIL
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
