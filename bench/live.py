"""End to end: how many packets per second each filter drops on a veth.

One case is one engine holding one RuleSet, on a fresh pair of network
namespaces (a legacy raw table keeps its hooks in a namespace after a
flush, so nothing is reused):

    <prefix>a  <prefix>a ── veth ── <prefix>b  <prefix>b
    sender: bench_xdp_send          the filter under test, on this veth

Engines on B's veth: ``xdp-drop`` (bench_xdp_drop, native XDP: the floor),
``hepbpf`` (the real program, attached natively by hepbpf's own attach in
B), ``ipt-legacy`` (raw PREROUTING), ``nft-linear`` and ``nft-set`` (see
netfilter.py). Every engine drops the probe packet, including the "none"
probe no rule matches (a default deny, or netfilter's catch-all drop).

The sender is the live-frames mode of BPF_PROG_TEST_RUN: bench_xdp_send
redirects each frame out of A's veth, so the kernel itself injects about
7-10 Mpps and the receiving side, not the sender, sets the pace (an
AF_PACKET sender saturates near 0.65 Mpps here and cannot tell fast
filters apart). Live frames leave through the caller's network namespace,
so the sender is a child process started in A (``--send``). Same-CPU mode,
as measured in shared/reference/perf-probe.md section 2: the sender is
pinned to CPU 1 and B's NAPI (veth schedules it on the CPU that transmits)
runs there too, in softirq, so the rate is 1/(send + receive cost); this
process reads the counters from CPU 0. B's veth has GRO on, which gives it
the NAPI it needs to accept redirected frames when no XDP program is
attached (the netfilter engines).

Per probe: check first that a burst of the probe grows the rule the engine
should drop it by, and no other (and, for XDP engines, veth's own XDP drop
counter by the same amount); then start the sender, warm up, and read that
rule's counter at both ends of each window (at the midpoint of each read)
for packets per second. Reported: median, min and max over the windows.

Run it as root: ``python -m hepbpf.bench.live --sizes 10,1000 --engines
hepbpf,ipt-legacy``. Namespaces are deleted (with their veths, rules and
XDP programs) and hepbpf's pins removed in ``finally``, on Ctrl-C too.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ipaddress
import json
import os
import select
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time

from .netfilter import KINDS as NETFILTER_KINDS
from .netfilter import (Filter, expected_rule, parse_iptables_list, parse_iptables_save, parse_nft_counter,
                        parse_nft_rules, render)
from .rules import NODE, Probe, RuleSet, hepbpf_yaml, rule_set

ENGINES = ("xdp-drop", "hepbpf", *NETFILTER_KINDS)
LIVE_FRAMES = 1 << 1  # BPF_F_TEST_XDP_LIVE_FRAMES (linux/bpf.h)
BATCH = 64  # frames per live-frames batch, NAPI's budget
CALL_S = 0.1  # the sender sizes each test_run call to about this long (<= 0.2 s)
MAX_RUN_S = 120.0  # a sender never runs longer, whatever it is told
MAX_PACKETS = 1 << 40  # nor sends more
BURST = 1024  # packets of the check before timing
WARMUP_S = 0.5
SENDER_CPU, READER_CPU = 1, 0
CMD_TIMEOUT_S = 60.0
ATTACH_TIMEOUT_S = 300.0  # compiling 10,000 rules takes a while
BENCH_OBJECT = "bench.bpf.o"
COUNT_MAP = "bench_count_v1"
MAC_A, MAC_B = "02:00:00:00:b0:0a", "02:00:00:00:b0:0b"
# B's address: the probes' destination (rules.py), so hepbpf judges them as
# the host's packets, not forwarded ones.
ADDRS = {4: "192.0.2.1/24", 6: "2001:db8::1/64"}
SPORT = 12345

_LIVE: set[str] = set()  # namespaces of this process, for the atexit net


class BenchError(RuntimeError):
    pass


def _run(argv: list[str], *, ns: str | None = None, input: str | None = None,
         timeout: float = CMD_TIMEOUT_S, check: bool = True) -> subprocess.CompletedProcess:
    if ns is not None:
        argv = ["ip", "netns", "exec", ns, *argv]
    res = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise BenchError(f"{' '.join(argv[:8])}{' ...' if len(argv) > 8 else ''}: exit {res.returncode}: "
                         f"{res.stderr.strip()[-2000:]}")
    return res


def _python() -> list[str]:
    return [sys.executable, "-m", "hepbpf.bench.live"]


# --- packets ---------------------------------------------------------------------------


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def probe_frame(p: Probe, src_mac: str = MAC_A, dst_mac: str = MAC_B, sport: int = SPORT) -> bytes:
    """The probe as a TCP SYN on the wire, checksums right (the receiving
    stack checks the IPv4 header's before netfilter sees the packet),
    padded to Ethernet's 60-byte minimum."""
    if p.proto != "TCP":
        raise ValueError("live probes are TCP SYNs")
    src, dst = ipaddress.ip_address(p.src), ipaddress.ip_address(p.dst)
    tcp = struct.pack("!HHIIBBHHH", sport, p.dport, 1, 0, 5 << 4, 0x02, 65535, 0, 0)
    if src.version == 4:
        pseudo = src.packed + dst.packed + struct.pack("!BBH", 0, 6, len(tcp))
        ethertype = b"\x08\x00"
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0x4000, 64, 6, 0, src.packed, dst.packed)
        ip = ip[:10] + struct.pack("!H", _csum(ip)) + ip[12:]
    else:
        pseudo = src.packed + dst.packed + struct.pack("!I3xB", len(tcp), 6)
        ethertype = b"\x86\xdd"
        ip = struct.pack("!IHBB16s16s", 6 << 28, len(tcp), 6, 64, src.packed, dst.packed)
    tcp = tcp[:16] + struct.pack("!H", _csum(pseudo + tcp)) + tcp[18:]
    out = bytes.fromhex(dst_mac.replace(":", "")) + bytes.fromhex(src_mac.replace(":", "")) + ethertype + ip + tcp
    return out.ljust(60, b"\0")


# --- the namespace pair ----------------------------------------------------------------


class Pair:
    """Two fresh namespaces joined by one veth; each namespace and its end
    of the veth share one name: ``<prefix>a`` (sender), ``<prefix>b``."""

    def __init__(self, prefix: str, family: int):
        if len(prefix) + 1 > 15:
            raise ValueError(f"prefix {prefix!r} is too long for an interface name")
        self.a, self.b = f"{prefix}a", f"{prefix}b"
        self.family = family

    def __enter__(self) -> Pair:
        try:
            self._create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _create(self) -> None:
        for ns in (self.a, self.b):
            _run(["ip", "netns", "add", ns])
            _LIVE.add(ns)
        # Made in A with its peer put straight into B: never in our namespace.
        _run(["ip", "-n", self.a, "link", "add", self.a, "address", MAC_A, "type", "veth",
              "peer", "name", self.b, "netns", self.b, "address", MAC_B])
        # A needs no address and no IPv6 (the sender injects whole frames);
        # B holds the probes' destination, with IPv6 only if measured. So
        # nothing but the probe ever reaches B.
        _run(["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"], ns=self.a)
        if self.family == 6:
            _run(["sysctl", "-q", "-w", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0",
                  "net.ipv6.conf.all.router_solicitations=0", f"net.ipv6.conf.{self.b}.router_solicitations=0"],
                 ns=self.b)
        else:
            _run(["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"], ns=self.b)
        _run(["ip", "-n", self.b, "addr", "add", ADDRS[self.family], "dev", self.b,
              *(["nodad"] if self.family == 6 else [])])
        for ns, dev in ((self.a, self.a), (self.b, self.b)):
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])
            _run(["ip", "-n", ns, "link", "set", dev, "up"])
        # NAPI on B's veth, so it takes redirected frames with no XDP program.
        _run(["ethtool", "-K", self.b, "gro", "on"], ns=self.b)

    def close(self) -> None:
        for ns in (self.a, self.b):
            if ns in _LIVE:
                _run(["ip", "netns", "del", ns], check=False)
                _LIVE.discard(ns)


@atexit.register
def _delete_leftovers() -> None:
    """The net under ``finally``: what an interrupted cleanup left."""
    for ns in list(_LIVE):
        if ns.endswith("b"):  # hepbpf may be attached there: its pins outlive the namespace
            subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", "hepbpf.cli", "detach", ns],
                           capture_output=True, timeout=CMD_TIMEOUT_S)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=CMD_TIMEOUT_S)
        _LIVE.discard(ns)


def xdp_drops(ns: str, dev: str) -> int:
    """veth's own count of frames its XDP program dropped."""
    out = _run(["ethtool", "-S", dev], ns=ns).stdout
    return sum(int(line.split(":")[1]) for line in out.splitlines()
               if line.strip().startswith("rx_queue_") and line.split(":")[0].endswith("_xdp_drops"))


# --- engines: install a filter on B's veth, read its counters --------------------------


class Engine:
    """A filter on B's veth. Counters are named for the rule they count
    ("rule <i>", "default", ...); ``expected`` names the one a probe grows."""

    name = ""
    xdp = False  # dropped by an XDP program (veth counts it too)

    def __init__(self, pair: Pair, rs: RuleSet):
        self.pair, self.rs = pair, rs
        self.notes: dict = {}

    def install(self) -> None:
        raise NotImplementedError

    def expected(self, probe: Probe) -> str:
        raise NotImplementedError

    def read(self, rule: str) -> int:
        """One rule's packets, cheaply (during the timed windows)."""
        raise NotImplementedError

    def read_all(self) -> dict[str, int]:
        """Every rule's packets (for the check before timing)."""
        raise NotImplementedError

    def close(self) -> None:
        """Undo what deleting B would not (hepbpf's pins and state)."""


class XdpDrop(Engine):
    name, xdp = "xdp-drop", True

    def install(self) -> None:
        out = _run([*_python(), "--attach-drop", self.pair.b], ns=self.pair.b).stdout
        self.prog_id = json.loads(out)["prog_id"]
        from hepbpf.loader.attach import maps_of
        self._map = maps_of(self.prog_id, (COUNT_MAP,))[COUNT_MAP]
        self.notes["xdp_mode"] = "native"

    def expected(self, probe: Probe) -> str:
        return "drop"

    def read(self, rule: str) -> int:
        from hepbpf.loader.percpu import read_counters
        return read_counters(self._map, 1)[0]

    def read_all(self) -> dict[str, int]:
        return {"drop": self.read("drop")}

    def close(self) -> None:
        if getattr(self, "_map", None) is not None:
            self._map.close()
            self._map = None


class Hepbpf(Engine):
    name, xdp = "hepbpf", True

    def install(self) -> None:
        argv = [*_python(), "--attach-hepbpf", self.pair.b, "--n", str(self.rs.n), "--family",
                str(self.rs.family), "--seed", str(self.rs.seed)]
        self._attached = True  # from here on, detach in close() whatever happens
        got = json.loads(_run(argv, ns=self.pair.b, timeout=ATTACH_TIMEOUT_S).stdout)
        if got["mode"] != "native":
            raise BenchError(f"hepbpf attached in {got['mode']} mode, not native")
        self.prog_id, self._slots, self._nslots = got["prog_id"], got["slots"], got["ingress_slots"]
        self._names = {v: k for k, v in self._slots.items()}
        from hepbpf.loader.attach import maps_of
        from hepbpf.loader.mapnames import RULE_STATS
        self._map = maps_of(self.prog_id, (RULE_STATS,))[RULE_STATS]
        self.notes.update(xdp_mode=got["mode"], slots=got["ingress_slots"], compile_s=got["compile_s"],
                          attach_s=got["attach_s"])

    def expected(self, probe: Probe) -> str:
        i = self.rs.first_match(probe)
        return "default" if i is None else f"rule {i}"

    def read(self, rule: str) -> int:
        from hepbpf.loader.percpu import read_stats
        return read_stats(self._map, 1, first=self._slots[rule])[0][0]

    def read_all(self) -> dict[str, int]:
        from hepbpf.loader.percpu import read_stats
        stats = read_stats(self._map, self._nslots)  # the ingress chain's slots come first
        return {self._names.get(k, f"slot {k}"): pk for k, (pk, _) in enumerate(stats)}

    def close(self) -> None:
        if getattr(self, "_map", None) is not None:
            self._map.close()
            self._map = None
        if getattr(self, "_attached", False):
            _run([sys.executable, "-m", "hepbpf.cli", "detach", self.pair.b], ns=self.pair.b, check=False)
            self._attached = False


class Netfilter(Engine):
    def __init__(self, pair: Pair, rs: RuleSet, kind: str):
        super().__init__(pair, rs)
        self.name = kind
        self.filter: Filter = render(kind, rs)

    def install(self) -> None:
        t = time.monotonic()
        _run(self.filter.loader, ns=self.pair.b, input=self.filter.text, timeout=ATTACH_TIMEOUT_S)
        self.notes["load_s"] = round(time.monotonic() - t, 3)
        if self.filter.elements:
            self.notes["set_elements"] = self.filter.elements

    def expected(self, probe: Probe) -> str:
        return expected_rule(self.filter, self.rs, probe)

    def _nft_family(self) -> str:
        return "ip" if self.rs.family == 4 else "ip6"

    def _ipt(self) -> str:
        return "iptables-legacy" if self.rs.family == 4 else "ip6tables-legacy"

    def read(self, rule: str) -> int:
        if self.name == "ipt-legacy":
            out = _run([self._ipt(), "-t", "raw", "-L", "PREROUTING", str(self.filter.position(rule)), "-v", "-x",
                        "-n"], ns=self.pair.b).stdout
            return parse_iptables_list(out)
        from .netfilter import TABLE
        out = _run(["nft", "-j", "list", "counter", self._nft_family(), TABLE, self.filter.named[rule]],
                   ns=self.pair.b).stdout
        return parse_nft_counter(out)

    def read_all(self) -> dict[str, int]:
        if self.name == "ipt-legacy":
            counts = parse_iptables_save(_run([f"{self._ipt()}-save", "-t", "raw", "-c"], ns=self.pair.b).stdout)
        else:
            from .netfilter import TABLE
            counts = parse_nft_rules(_run(["nft", "-j", "list", "table", self._nft_family(), TABLE],
                                          ns=self.pair.b).stdout)
        if len(counts) != len(self.filter.rules):
            raise BenchError(f"{self.name}: {len(counts)} rules in the kernel, {len(self.filter.rules)} written")
        return dict(zip(self.filter.rules, counts))


def make_engine(name: str, pair: Pair, rs: RuleSet) -> Engine:
    if name == "xdp-drop":
        return XdpDrop(pair, rs)
    if name == "hepbpf":
        return Hepbpf(pair, rs)
    if name in NETFILTER_KINDS:
        return Netfilter(pair, rs, name)
    raise ValueError(f"unknown engine {name!r} (one of {', '.join(ENGINES)})")


# --- the sender (a child process in A) -------------------------------------------------


class Sender:
    """``--send`` running in A, pinned to SENDER_CPU, driven by lines on
    its stdin: ``frame HEX``, ``burst N``, ``run SECONDS`` ... ``stop``."""

    def __init__(self, pair: Pair):
        cpu = SENDER_CPU if (os.cpu_count() or 1) > SENDER_CPU else 0
        # `ip netns exec` and taskset exec: the child's pid is python's.
        self.proc = subprocess.Popen(["ip", "netns", "exec", pair.a, "taskset", "-c", str(cpu), *_python(),
                                      "--send", pair.a], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, bufsize=1)
        self._expect("ready", CMD_TIMEOUT_S)

    def _expect(self, word: str, timeout: float) -> list[str]:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        fields = line.split()
        if not fields or fields[0] != word:
            self.close()
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise BenchError(f"sender: expected {word!r}, got {line.strip()!r}: {err.strip()[-2000:]}")
        return fields[1:]

    def _say(self, line: str) -> None:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def frame(self, data: bytes) -> None:
        self._say(f"frame {data.hex()}")
        self._expect("ok", CMD_TIMEOUT_S)

    def burst(self, n: int) -> None:
        self._say(f"burst {n}")
        self._expect("sent", CMD_TIMEOUT_S)

    def start(self, seconds: float) -> None:
        self._say(f"run {seconds}")
        self._expect("running", CMD_TIMEOUT_S)

    def stop(self) -> tuple[int, float]:
        self._say("stop")
        packets, secs = self._expect("done", CMD_TIMEOUT_S)
        return int(packets), float(secs)

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def _bench_object():
    from hepbpf.loader import abi
    from hepbpf.loader.libbpf import BpfObject
    path = abi.bpf_dir() / BENCH_OBJECT
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: build the BPF objects first (make -C bpf)")
    return BpfObject.open(path)


class _Lines:
    """Lines from fd 0, unbuffered, so select() tells the truth."""

    def __init__(self) -> None:
        self._buf = b""

    def ready(self) -> bool:
        return b"\n" in self._buf or bool(select.select([0], [], [], 0)[0])

    def get(self) -> str | None:
        while b"\n" not in self._buf:
            chunk = os.read(0, 4096)
            if not chunk:
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode()


def _sender_main(iface: str) -> int:
    # Ctrl-C is the parent's to handle: it stops us by closing our stdin.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    obj = _bench_object()
    # .rodata: bench_out_ifindex at 0, bench_nsrc at 4 (0: send data_in as it
    # is); the headers' constant tables follow and are kept as compiled.
    obj.set_rodata(struct.pack("=II", socket.if_nametoindex(iface), 0) + obj.rodata[8:])
    obj.load()
    prog = obj.program("bench_xdp_send")
    lines, frame = _Lines(), b""

    def say(text: str) -> None:
        print(text, flush=True)

    say("ready")
    while (line := lines.get()) is not None:
        cmd, *args = line.split()
        if cmd == "frame":
            frame = bytes.fromhex(args[0])
            say("ok")
        elif cmd == "burst":
            prog.test_run(frame, repeat=int(args[0]), flags=LIVE_FRAMES, batch_size=BATCH)
            say(f"sent {args[0]}")
        elif cmd == "run":
            say("running")
            packets, secs = _blast(prog, frame, min(float(args[0]), MAX_RUN_S), lines)
            say(f"done {packets} {secs:.6f}")
        elif cmd == "stop":
            say("done 0 0")
    return 0


def _blast(prog, frame: bytes, seconds: float, lines: _Lines) -> tuple[int, float]:
    """Send until told to stop, ``seconds`` pass or MAX_PACKETS are sent;
    each call sized to about CALL_S, so a stop is heard within ~0.2 s."""
    repeat, sent = 256, 0
    t0 = time.monotonic()
    deadline = t0 + seconds
    while time.monotonic() < deadline and sent < MAX_PACKETS:
        if lines.ready():
            lines.get()  # "stop"
            break
        t = time.monotonic()
        prog.test_run(frame, repeat=repeat, flags=LIVE_FRAMES, batch_size=BATCH)
        took = max(time.monotonic() - t, 1e-6)
        sent += repeat
        repeat = int(min(max(repeat * CALL_S / took, BATCH), repeat * 4, 1 << 24))
    else:
        lines.get()  # the "stop" that follows anyway
    return sent, time.monotonic() - t0


# --- helpers run inside B --------------------------------------------------------------


def _attach_drop_main(iface: str) -> int:
    from hepbpf.loader import libbpf
    obj = _bench_object()
    obj.load()
    prog = obj.program("bench_xdp_drop")
    # Attached through netlink: it stays after this process exits, until
    # B (and with it the veth) is deleted.
    libbpf.xdp_attach(socket.if_nametoindex(iface), prog.fd, "native")
    print(json.dumps({"prog_id": prog.info()["id"]}))
    return 0


def _attach_hepbpf_main(iface: str, n: int, family: int, seed: int) -> int:
    from hepbpf.compiler import compile_policy
    from hepbpf.compiler.mapimage import CHAIN_INGRESS
    from hepbpf.loader.attach import attach

    rs = rule_set(n, family, seed)
    t0 = time.monotonic()
    compiled = compile_policy([("bench.yaml", hepbpf_yaml(rs, iface, NODE))], node=NODE, iface=iface)
    t1 = time.monotonic()
    res = attach(iface, compiled, mode="native", node=NODE, sources=["-"])
    t2 = time.monotonic()
    ingress = [s for s in compiled.image.slots if s.chain == CHAIN_INGRESS]
    slots = {f"rule {s.rule}": s.slot for s in ingress if s.policy == f"bench-{n}"}
    # A packet no rule matches ends at the tier's default deny.
    slots["default"] = next(s.slot for s in ingress if s.reason_name == "end-of-tier")
    print(json.dumps({"prog_id": res.prog_id, "mode": res.mode, "slots": slots,
                      "ingress_slots": max(s.slot for s in ingress) + 1,
                      "compile_s": round(t1 - t0, 3), "attach_s": round(t2 - t1, 3)}))
    return 0


# --- measuring -------------------------------------------------------------------------


def _sample(engine: Engine, rule: str) -> tuple[float, int]:
    t0 = time.monotonic()
    c = engine.read(rule)
    return (t0 + time.monotonic()) / 2, c


def _check(engine: Engine, sender: Sender, rule: str, case: str) -> None:
    """A burst of the probe grows ``rule`` and nothing else (for XDP
    engines, veth's XDP drops grow as much): the engine drops it where it
    should. Raises BenchError if not."""
    before = engine.read_all()
    veth0 = xdp_drops(engine.pair.b, engine.pair.b) if engine.xdp else 0
    sender.burst(BURST)
    after = engine.read_all()
    grown = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    what = f"{engine.name} n={engine.rs.n} {case}"
    if set(grown) != {rule} or grown[rule] < BURST // 2:
        raise BenchError(f"{what}: a burst of {BURST} probes should grow {rule!r} only, grew {grown}")
    if engine.xdp:
        veth = xdp_drops(engine.pair.b, engine.pair.b) - veth0
        if veth != grown[rule]:
            raise BenchError(f"{what}: {rule!r} grew {grown[rule]} but veth dropped {veth} in XDP")


def _measure(engine: Engine, sender: Sender, case: str, *, window_s: float, windows: int,
             warmup_s: float) -> dict:
    probe = engine.rs.probes(case)[0]
    rule = engine.expected(probe)
    sender.frame(probe_frame(probe))
    _check(engine, sender, rule, case)
    sender.start(warmup_s + windows * window_s + 10.0)
    try:
        time.sleep(warmup_s)
        rates = []
        t_prev, c_prev = _sample(engine, rule)
        for _ in range(windows):
            time.sleep(max(0.0, t_prev + window_s - time.monotonic()))
            t, c = _sample(engine, rule)
            rates.append((c - c_prev) / (t - t_prev) / 1e6)
            t_prev, c_prev = t, c
    except BaseException:
        sender.close()  # it stops at the end of its stdin
        raise
    sent, secs = sender.stop()
    med = statistics.median(rates)
    return {"engine": engine.name, "n": 0 if engine.name == "xdp-drop" else engine.rs.n, "case": case,
            "family": engine.rs.family, "mpps": med, "min": min(rates), "max": max(rates),
            "ns_per_pkt": 1000.0 / med if med > 0 else float("inf"), "windows": rates, "counter": rule,
            "sent_mpps": sent / secs / 1e6 if secs else 0.0, "notes": dict(engine.notes)}


def run_setup(engine_name: str, n: int, family: int, cases, *, prefix: str, window_s: float, windows: int,
              warmup_s: float = WARMUP_S) -> list[dict]:
    """One fresh namespace pair, one filter, every probe case."""
    rs = rule_set(max(n, 1), family)
    out = []
    with Pair(prefix, family) as pair:
        engine = make_engine(engine_name, pair, rs)
        try:
            engine.install()
            sender = Sender(pair)
            try:
                for case in cases:
                    out.append(_measure(engine, sender, case, window_s=window_s, windows=windows,
                                        warmup_s=warmup_s))
            finally:
                sender.close()
        finally:
            engine.close()
    return out


def _setups(engines, sizes, families):
    for family in families:
        if "xdp-drop" in engines:
            yield "xdp-drop", 0, family
        for n in sizes:
            for e in engines:
                if e != "xdp-drop":
                    yield e, n, family


def run_live(sizes=(10, 100, 1000, 10000), cases=("none", "last"), families=(4,), rounds=1, window_s=1.0,
             windows=3, engines=ENGINES, *, prefix: str | None = None, warmup_s: float = WARMUP_S,
             progress=sys.stderr) -> list[dict]:
    """Every engine x size x probe case x family, ``rounds`` times (each
    round measures every case once, so ratios can be taken within a round).
    One dict per measurement; see _measure for the keys. ``prefix``: names
    of the namespaces (default ``hbl<pid>-``), the setup number appended."""
    if os.geteuid() != 0:
        raise BenchError("the live benchmark needs root (namespaces, XDP, netfilter)")
    for e in engines:
        if e not in ENGINES:
            raise ValueError(f"unknown engine {e!r} (one of {', '.join(ENGINES)})")
    prefix = prefix or f"hbl{os.getpid()}-"
    notes = {"kernel": os.uname().release, "mode": f"same-CPU: sender and RX softirq on CPU {SENDER_CPU}",
             "window_s": window_s, "warmup_s": warmup_s, "batch": BATCH}
    affinity = os.sched_getaffinity(0)
    if (os.cpu_count() or 1) > READER_CPU + 1:
        os.sched_setaffinity(0, {READER_CPU})  # our reads (and their commands) stay off the sender's CPU
    results, k = [], 0
    try:
        for rnd in range(rounds):
            for engine, n, family in _setups(engines, sizes, families):
                t = time.monotonic()
                got = run_setup(engine, n, family, cases, prefix=f"{prefix}{k:x}", window_s=window_s,
                                windows=windows, warmup_s=warmup_s)
                k += 1
                for r in got:
                    r["round"] = rnd
                    r["notes"] = {**notes, **r["notes"]}
                    results.append(r)
                    print(f"live: round {rnd} {r['engine']:<10} IPv{family} n={r['n']:<5} {r['case']:<4} "
                          f"{r['mpps']:8.3f} Mpps ({r['min']:.3f}..{r['max']:.3f})", file=progress, flush=True)
                print(f"live: {engine} n={n} IPv{family} took {time.monotonic() - t:.1f} s", file=progress,
                      flush=True)
    finally:
        os.sched_setaffinity(0, affinity)
    return results


def format_table(results: list[dict]) -> str:
    head = f"{'engine':<11} {'fam':>3} {'n':>6} {'case':<5} {'Mpps':>8} {'min':>8} {'max':>8} {'ns/pkt':>9}"
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(f"{r['engine']:<11} {'v' + str(r['family']):>3} {r['n']:>6} {r['case']:<5} {r['mpps']:8.3f} "
                     f"{r['min']:8.3f} {r['max']:8.3f} {r['ns_per_pkt']:9.0f}")
    return "\n".join(lines)


def _csv(text: str, conv=str) -> tuple:
    return tuple(conv(x) for x in text.split(",") if x)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hepbpf.bench.live", description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10,100,1000,10000", help="rule counts (comma-separated)")
    ap.add_argument("--cases", default="none,last", help="probe cases: none, last")
    ap.add_argument("--families", default="4", help="4, 6 or 4,6")
    ap.add_argument("--engines", default=",".join(ENGINES), help=f"of {', '.join(ENGINES)}")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--window", type=float, default=1.0, help="seconds per window")
    ap.add_argument("--windows", type=int, default=3)
    ap.add_argument("--warmup", type=float, default=WARMUP_S, help="seconds")
    ap.add_argument("--json", metavar="PATH", help="also write the results here")
    # Internal: the parts that run inside a namespace.
    ap.add_argument("--send", metavar="IFACE", help=argparse.SUPPRESS)
    ap.add_argument("--attach-drop", metavar="IFACE", help=argparse.SUPPRESS)
    ap.add_argument("--attach-hepbpf", metavar="IFACE", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--family", type=int, default=4, help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.send:
        return _sender_main(args.send)
    if args.attach_drop:
        return _attach_drop_main(args.attach_drop)
    if args.attach_hepbpf:
        return _attach_hepbpf_main(args.attach_hepbpf, args.n, args.family, args.seed)

    def interrupted(signum, _frame):
        # Once: a second signal must not cut the cleanup short.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)  # clean up as on Ctrl-C
    signal.signal(signal.SIGINT, interrupted)
    try:
        results = run_live(sizes=_csv(args.sizes, int), cases=_csv(args.cases), families=_csv(args.families, int),
                           rounds=args.rounds, window_s=args.window, windows=args.windows,
                           engines=_csv(args.engines), warmup_s=args.warmup)
    except BenchError as e:
        print(f"live: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("live: interrupted; everything it made is removed", file=sys.stderr)
        return 130
    print(format_table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
