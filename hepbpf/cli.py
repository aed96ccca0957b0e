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

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_NOPERM = 0, 1, 2, 77


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_FAIL):
        super().__init__(message)
        self.code = code


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


def _compile(args, iface: str):
    from hepbpf.loader.netdev import iface_addresses

    return compile_policy(_read_sources(args.files), node=args.node, iface=iface,
                          iface_addrs=iface_addresses(iface))


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
                  f"{len(img.addr)} address entries, {img.port_tables} port tables")
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
    return EXIT_OK


def _need_root() -> None:
    if os.geteuid() != 0:
        raise CliError("this needs root (CAP_BPF and CAP_NET_ADMIN): run it with sudo", EXIT_NOPERM)


def cmd_attach(args) -> int:
    from hepbpf.loader.attach import attach

    _need_root()
    try:
        socket.if_nametoindex(args.iface)
    except OSError:
        raise CliError(f"{args.iface}: no such interface in this network namespace") from None
    t0 = time.monotonic()
    compiled = _compile(args, args.iface)
    _warn(compiled)
    if compiled.views[CHAIN_INGRESS].hep is None:
        raise CliError(f"no HostEndpoint for {args.iface} on node {args.node} in the given files: "
                       f"Calico would not police this interface, so there is nothing to attach "
                       f"(use --node if the node name differs from the hostname)")
    t1 = time.monotonic()
    result = attach(args.iface, compiled, mode=args.mode, node=args.node, sources=args.files,
                    ct_size=args.conntrack_size, tc_mechanism=args.egress)
    t2 = time.monotonic()
    ing, eg = compiled.views[CHAIN_INGRESS], compiled.views[CHAIN_EGRESS]
    verb = "replaced policy on" if result.replaced else "attached to"
    print(f"{verb} {args.iface} (XDP {result.mode} mode, prog id {result.prog_id}; egress {result.tc_mechanism}, "
          f"prog id {result.tc_prog_id}): host endpoint {ing.hep.name}, "
          f"{sum(len(t.policies) for t in ing.tiers)} ingress and {sum(len(t.policies) for t in eg.tiers)} "
          f"egress policies, {len(compiled.image.slots)} slots; compile {1000 * (t1 - t0):.0f} ms, "
          f"load+attach {1000 * (t2 - t1):.0f} ms")
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
        print(f"{st['iface']}: {'ENFORCING' if st['attached'] else 'NOT ATTACHED (stale state)'}, "
              f"XDP {st['mode']} mode, prog id {st['prog_id']}, egress {st.get('tc_mechanism')} "
              f"prog id {st.get('tc_prog_id')}, node {st['node']}, host endpoint {st['host_endpoint']}")
        ct = st.get("conntrack")
        if ct:
            print(f"  conntrack: {ct['flows']} flows of {ct['size']}; " +
                  ", ".join(f"{k} {v}" for k, v in ct["events"].items()))
        print(f"  pinned under {st['pin_dir']}; attached {st['attached_at']}")
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hepbpf",
                                description="Calico host-endpoint policy, enforced by XDP (ingress) and tc (egress).")
    sub = p.add_subparsers(dest="command", required=True)
    node_default = socket.gethostname()

    a = sub.add_parser("attach", help="compile policy and enforce it on an interface")
    a.add_argument("iface")
    a.add_argument("files", nargs="+", metavar="FILE")
    a.add_argument("--node", default=node_default, help="node name of the host endpoints (default: hostname)")
    a.add_argument("--mode", choices=("native", "generic", "auto"), default="auto",
                   help="XDP mode; auto tries native, then generic, and says which it got")
    a.add_argument("--egress", choices=("auto", "tcx", "clsact"), default="auto",
                   help="how the egress program is attached; auto: tcx where the kernel has it and "
                        "a persistent bpffs holds its link, else clsact")
    a.add_argument("--conntrack-size", type=_positive, default=65536, metavar="N",
                   help="flows the conntrack table holds; when full, the least recently used go")
    a.set_defaults(func=cmd_attach)

    y = sub.add_parser("sync", help="reload the host's addresses (ingress tells forwarded packets by them)")
    y.add_argument("iface")
    y.add_argument("--follow", nargs="?", type=float, const=0, metavar="SECONDS",
                   help="keep them current: re-sync on every address change (for SECONDS, or until Ctrl-C)")
    y.set_defaults(func=cmd_sync)

    d = sub.add_parser("detach", help="remove hepbpf from an interface")
    d.add_argument("iface")
    d.set_defaults(func=cmd_detach)

    s = sub.add_parser("status", help="what is attached, and counters")
    s.add_argument("iface", nargs="?")
    s.add_argument("-o", "--output", choices=("text", "json"), default="text")
    s.set_defaults(func=cmd_status)

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
