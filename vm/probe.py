"""Which packets reach the node's interface: scapy sends, AF_PACKET counts.

XDP runs before packet taps on the receive path (native XDP in the driver,
generic XDP at the top of ``__netif_receive_skb_core``, before the
``ptype_all`` taps), so a frame the program drops is never seen by an
AF_PACKET socket on that interface: exactly the signal we want. (tc and
nftables ``netdev ingress`` run after the taps and would not show here.)

The sniffer runs in the node namespace and the sender in a client namespace,
each a subprocess under ``ip netns exec`` (``python -m hepbpf.vm.probe
sniff|send``): scapy caches interfaces and routes at import and misbehaves
after setns, and a fresh process per side needs no cleanup of its own.

One round of ``probe()``:

1. sniffer and sender start together; the sender imports scapy and builds
   every frame (Ethernet dst = node MAC, src = client MAC) meanwhile;
2. the sniffer binds an ETH_P_ALL socket to eth1 and prints ``ready``;
3. only then the sender is told ``go``: it sends each frame once (``sendp``)
   and prints ``sent``; the sniffer is told ``sent``;
4. the sniffer stops as soon as it has seen every packet, else SETTLE_S after
   ``sent`` (hard cap SNIFF_CAP_S), and prints the indices it saw as JSON.

Every packet carries a unique marker: a payload token
``hepbpf-probe-<nonce>-<index>`` (the nonce is fresh per round, so nothing
of an earlier round can count) which the sniffer matches, plus a unique IPv4
ID / IPv6 flow label so a capture of the same traffic is easy to read.

Also here: ``tcp_connect()`` (a real TCP connection from a client) and
``listen()`` (a TCP accept loop in the node namespace).
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import select
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass

SNIFF_CAP_S = 10.0  # hard cap on one probe round
SETTLE_S = 0.5  # how long the sniffer still waits after the last packet was sent
MAX_PACKETS = 10_000  # per round; keeps a round's time and memory bounded
LISTEN_LIFETIME_S = 60.0  # default cap on a listener's life

TOKEN_HEAD = b"hepbpf-probe-"
INDEX_DIGITS = 5
ETH_P_ALL, ETH_P_IP, ETH_P_IPV6 = 0x0003, 0x0800, 0x86DD
PACKET_OUTGOING = 4
SOL_PACKET, PACKET_STATISTICS = 263, 6
SO_RCVBUFFORCE = 33

PROTO_NUMBERS = {"tcp": 6, "udp": 17, "icmp": 1, "icmp6": 58, "icmpv6": 58, "sctp": 132, "udplite": 136}
_DOC_NETS = [ipaddress.ip_network(n) for n in
             ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")]


@dataclass(frozen=True)
class PacketSpec:
    """One packet to send from a client to the node.

    ``proto``: "tcp", "udp", "icmp", "icmp6", "sctp", "udplite" or a protocol
    number (any other number is sent as a bare IP header plus payload).
    "icmp" between IPv6 addresses means ICMPv6, as in hepbpf's packet specs;
    the number 1 with IPv6 addresses is next header 1, taken literally.
    ``icmp_type`` defaults to echo request (8, or 128 for ICMPv6).

    ``raw``: an escape hatch for malformed packets; the bytes are the whole
    L3 packet put after the Ethernet header (the token is appended after
    them, which a parser honouring the IP length fields ignores), and the
    other fields are not used. ``ethertype`` defaults to IPv6 when the first
    nibble is 6, else IPv4. Build one with ``PacketSpec.from_raw(data)``.
    """
    proto: str | int
    src: str = ""
    dst: str = ""
    sport: int = 40000
    dport: int = 0
    icmp_type: int | None = None
    icmp_code: int = 0
    tcp_flags: str = "S"
    raw: bytes | None = None
    ethertype: int | None = None

    def __post_init__(self):
        if self.raw is not None:
            if not isinstance(self.raw, (bytes, bytearray)):
                raise TypeError("raw must be bytes")
            if self.ethertype is not None and not 0 <= self.ethertype <= 0xFFFF:
                raise ValueError("ethertype out of range")
            return
        if isinstance(self.proto, str):
            if self.proto not in PROTO_NUMBERS:
                raise ValueError(f"unknown protocol {self.proto!r}")
        elif not (isinstance(self.proto, int) and 0 <= self.proto <= 255):
            raise ValueError(f"protocol number {self.proto!r} out of range 0-255")
        src, dst = ipaddress.ip_address(self.src), ipaddress.ip_address(self.dst)
        if src.version != dst.version:
            raise ValueError(f"{self.src} -> {self.dst}: mixed address families")
        for a in (src, dst):
            # Lab traffic stays on documentation ranges.
            if not any(a in n for n in _DOC_NETS):
                raise ValueError(f"{a}: not a documentation address")
        if self.number == 58 and src.version == 4:
            raise ValueError("icmp6 needs IPv6 addresses")
        for p in (self.sport, self.dport):
            if not 0 <= p <= 0xFFFF:
                raise ValueError(f"port {p} out of range")
        if self.icmp_type is not None and not 0 <= self.icmp_type <= 255 or not 0 <= self.icmp_code <= 255:
            raise ValueError("icmp type/code out of range 0-255")

    @property
    def v6(self) -> bool:
        return ":" in self.dst

    @property
    def number(self) -> int | None:
        """The IP protocol / next header sent (None for raw packets)."""
        if self.raw is not None:
            return None
        if self.proto == "icmp" and self.v6:
            return 58
        return PROTO_NUMBERS[self.proto] if isinstance(self.proto, str) else self.proto

    @classmethod
    def from_raw(cls, data: bytes, ethertype: int | None = None) -> PacketSpec:
        return cls("raw", raw=bytes(data), ethertype=ethertype)

    @classmethod
    def from_packet(cls, pkt) -> PacketSpec:
        """From a hepbpf.compiler.packet.Packet."""
        name = {6: "tcp", 17: "udp", 132: "sctp", 136: "udplite", 1: "icmp", 58: "icmp6"}.get(pkt.proto, pkt.proto)
        return cls(name, str(pkt.src), str(pkt.dst), pkt.sport, pkt.dport, pkt.icmp_type, pkt.icmp_code or 0)

    def to_json(self) -> dict:
        d = asdict(self)
        d["raw"] = self.raw.hex() if self.raw is not None else None
        return d


# --- the caller's side ---------------------------------------------------------------

class _Child:
    """A subprocess whose stdout is read line by line with a deadline
    (select on the raw pipe, so no line can hide in a Python buffer)."""

    def __init__(self, argv: list[str]):
        self.argv = argv
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, bufsize=0)
        self._buf = b""

    def readline(self, deadline: float) -> str:
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self._name()}: no answer in time")
            r, _, _ = select.select([fd], [], [], left)
            if r:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise RuntimeError(f"{self._name()} exited early: {self._stderr()}")
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode(errors="replace").strip()

    def expect(self, word: str, deadline: float) -> None:
        line = self.readline(deadline)
        if line != word:
            raise RuntimeError(f"{self._name()}: expected {word!r}, got {line!r}: {self._stderr()}")

    def tell(self, word: str) -> None:
        with contextlib.suppress(BrokenPipeError):  # it may already have finished
            self.proc.stdin.write(word.encode() + b"\n")

    def _name(self) -> str:
        return f"probe {self.argv[7]} in {self.argv[3]}"

    def _stderr(self) -> str:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=2)  # it closed stdout: give it a moment to exit
        if self.proc.poll() is None:
            return "(still running)"
        return self.proc.stderr.read().decode(errors="replace").strip()[-2000:]

    def kill(self) -> None:
        """Kill it (by its own PID) if still running, and reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)

    def stop(self) -> None:
        """Kill and reap it, then close our ends of its pipes."""
        self.kill()
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            with contextlib.suppress(OSError):
                f.close()


def _in_ns(ns: str, *args: str) -> list[str]:
    # `ip netns exec` execs the command, so the Popen PID is Python's own.
    return ["ip", "netns", "exec", ns, sys.executable, "-m", "hepbpf.vm.probe", *args]


def probe(lab, client, packets: list[PacketSpec], timeout: float = SNIFF_CAP_S,
          settle: float = SETTLE_S) -> list[bool]:
    """Send ``packets`` from ``client`` to the node, each once; return, in
    order, whether each one reached the node's eth1 (i.e. got past XDP).
    Raises if a side fails, the round exceeds ``timeout`` seconds, or the
    sniffer's socket lost frames (the answer would not be trustworthy)."""
    if not packets:
        return []
    if len(packets) > MAX_PACKETS:
        raise ValueError(f"at most {MAX_PACKETS} packets per probe")
    nonce = os.urandom(4).hex()
    deadline = time.monotonic() + timeout
    with tempfile.NamedTemporaryFile("w", prefix="hepbpf-probe-", suffix=".json") as f:
        json.dump({"nonce": nonce, "ipid": int.from_bytes(os.urandom(3), "big"),
                   "packets": [p.to_json() for p in packets]}, f)
        f.flush()
        sniffer = _Child(_in_ns(lab.node_ns, "sniff", "--iface", lab.node_iface, "--nonce", nonce,
                                "--count", str(len(packets)), "--seconds", str(timeout), "--settle", str(settle)))
        sender = None
        try:
            sender = _Child(_in_ns(client.ns, "send", "--iface", client.iface, "--src-mac", client.mac,
                                   "--dst-mac", lab.node_mac, "--specs", f.name))
            sniffer.expect("ready", deadline)
            sender.expect("built", deadline)
            sender.tell("go")
            sender.expect("sent", deadline)
            sniffer.tell("sent")
            result = json.loads(sniffer.readline(deadline))
        finally:
            for child in (sender, sniffer):
                if child is not None:
                    child.stop()
    if result["drops"]:
        raise RuntimeError(f"the sniffer's socket dropped {result['drops']} frames: result not trustworthy")
    seen = set(result["seen"])
    return [i in seen for i in range(len(packets))]


def tcp_connect(lab, client, dst: str, dport: int, src: str | None = None, timeout: float = 2.0) -> bool:
    """Whether a real TCP connection from ``client`` (from ``src``, one of its
    addresses, if given) to ``dst:dport`` is established within ``timeout``.
    A refusal, a timeout (e.g. SYN dropped) or an unusable ``src`` is False."""
    args = ["connect", "--dst", dst, "--port", str(dport), "--timeout", str(timeout)]
    if src:
        args += ["--src", src]
    res = subprocess.run(_in_ns(client.ns, *args), capture_output=True, text=True, timeout=timeout + 10)
    return res.returncode == 0 and res.stdout.strip() == "connected"


class Listener:
    """A running ``listen()``: ``peers`` lists, in order, the source address
    of every connection accepted so far (IPv4 peers as plain dotted quads)."""

    def __init__(self, child: _Child, port: int):
        self.port = port
        self.pid = child.proc.pid
        self.peers: list[str] = []
        self._child = child
        self._reader = threading.Thread(target=self._read, daemon=True)

    def _read(self) -> None:
        # Runs until the listener's stdout closes, i.e. until it exits or is killed.
        fd = self._child.proc.stdout.fileno()
        buf = b""
        with contextlib.suppress(OSError):
            while chunk := os.read(fd, 4096):
                buf += chunk
                *lines, buf = buf.split(b"\n")
                self.peers += [ln.decode().split(" ", 1)[1] for ln in lines if ln.startswith(b"accept ")]

    def wait_peers(self, n: int, timeout: float = 2.0) -> list[str]:
        """The peers once at least ``n`` were accepted (or ``timeout`` passed)."""
        end = time.monotonic() + timeout
        while len(self.peers) < n and time.monotonic() < end:
            time.sleep(0.01)
        return list(self.peers)


@contextlib.contextmanager
def listen(lab, port: int, lifetime: float = LISTEN_LIFETIME_S):
    """A TCP listener on every node address (IPv4 and IPv6) at ``port`` for
    the duration of the ``with`` block (at most ``lifetime`` seconds); it
    accepts and closes each connection. Killed by its PID on exit."""
    child = _Child(_in_ns(lab.node_ns, "listen", "--port", str(port), "--seconds", str(lifetime)))
    listener = None
    try:
        child.expect("ready", time.monotonic() + 10)
        listener = Listener(child, port)
        listener._reader.start()
        yield listener
    finally:
        child.kill()
        if listener is not None:
            # Its stdout is at EOF once it is dead; join before closing the
            # pipe, so the reader never touches a reused descriptor.
            listener._reader.join(timeout=5)
        child.stop()


# --- subprocess side: sniffer ----------------------------------------------------

def _sniff(iface: str, nonce: str, count: int, seconds: float, settle: float) -> None:
    head = TOKEN_HEAD + nonce.encode() + b"-"
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    try:
        # A big queue, so a burst is never lost before we read it.
        s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
    except OSError:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind((iface, ETH_P_ALL))
    s.setblocking(False)
    seen: set[int] = set()
    frames = 0

    def drain() -> None:
        nonlocal frames
        for _ in range(100_000):  # bounded; the queue holds far fewer
            try:
                frame, addr = s.recvfrom(65535)
            except BlockingIOError:
                return
            # Only what this interface received: not our replies (ICMP errors
            # quote the token), nor frames queued before bind() took effect.
            if addr[0] != iface or addr[2] == PACKET_OUTGOING:
                continue
            frames += 1
            i = frame.find(head)
            if i >= 0:
                digits = frame[i + len(head):i + len(head) + INDEX_DIGITS]
                if len(digits) == INDEX_DIGITS and digits.isdigit():
                    seen.add(int(digits))

    print("ready", flush=True)
    deadline = time.monotonic() + seconds
    stop_at = deadline
    stdin_open = True
    while time.monotonic() < stop_at and len(seen) < count:
        wait = [s, sys.stdin] if stdin_open else [s]
        r, _, _ = select.select(wait, [], [], max(0.0, min(stop_at - time.monotonic(), 0.1)))
        if s in r:
            drain()
        if sys.stdin in r:
            line = sys.stdin.readline()
            if not line:  # the caller went away
                break
            if line.strip() == "sent":
                stop_at = min(deadline, time.monotonic() + settle)
    drain()  # what arrived during the last wait
    stats = s.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
    _, drops = struct.unpack("II", stats)
    print(json.dumps({"seen": sorted(seen), "frames": frames, "drops": drops}), flush=True)


# --- subprocess side: sender -------------------------------------------------------

def _build(spec: dict, token: bytes, ipid: int):
    """The L3 packet (scapy) for one spec, its token as payload."""
    from scapy.layers.inet import ICMP, IP, TCP, UDP
    from scapy.layers.inet6 import IPv6, ICMPv6Unknown
    from scapy.layers.sctp import SCTP
    from scapy.packet import Raw

    p = PacketSpec(**{**spec, "raw": None})
    num = p.number
    ip = IPv6(src=p.src, dst=p.dst, fl=ipid & 0xFFFFF) if p.v6 else IP(src=p.src, dst=p.dst, id=ipid & 0xFFFF)
    if num == 6:
        return ip / TCP(sport=p.sport, dport=p.dport, flags=p.tcp_flags) / Raw(token)
    if num == 17:
        return ip / UDP(sport=p.sport, dport=p.dport) / Raw(token)
    if num == 132:
        return ip / SCTP(sport=p.sport, dport=p.dport) / Raw(token)
    if num == 136:  # UDP-Lite: ports, checksum coverage 0 (= all), checksum left 0
        ip.setfieldval("nh" if p.v6 else "proto", 136)
        return ip / Raw(struct.pack("!HHHH", p.sport, p.dport, 0, 0) + token)
    if num == 1 and not p.v6:
        return ip / ICMP(type=8 if p.icmp_type is None else p.icmp_type, code=p.icmp_code) / Raw(token)
    if num == 58:
        # ICMPv6Unknown takes any type/code and still gets a correct checksum;
        # the 4 zero bytes complete the usual 8-byte header.
        return ip / ICMPv6Unknown(type=128 if p.icmp_type is None else p.icmp_type, code=p.icmp_code,
                                  msgbody=b"\0\0\0\0" + token)
    ip.setfieldval("nh" if p.v6 else "proto", num)
    return ip / Raw(token)


def _send(iface: str, src_mac: str, dst_mac: str, specs_path: str) -> None:
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw
    from scapy.sendrecv import sendp

    with open(specs_path) as f:
        job = json.load(f)
    nonce, ipid = job["nonce"], job["ipid"]
    frames = []
    for i, spec in enumerate(job["packets"]):
        token = TOKEN_HEAD + f"{nonce}-{i:0{INDEX_DIGITS}d}".encode()
        if spec["raw"] is not None:
            raw = bytes.fromhex(spec["raw"])
            etype = spec["ethertype"]
            if etype is None:
                etype = ETH_P_IPV6 if raw and raw[0] >> 4 == 6 else ETH_P_IP
            frames.append(Ether(src=src_mac, dst=dst_mac, type=etype) / Raw(raw + token))
        else:
            frames.append(Ether(src=src_mac, dst=dst_mac) / _build(spec, token, ipid + i))
    print("built", flush=True)
    if sys.stdin.readline().strip() != "go":
        sys.exit("no go")
    sendp(frames, iface=iface, verbose=False)
    print("sent", flush=True)


# --- subprocess side: TCP -----------------------------------------------------------

def _connect(dst: str, port: int, src: str | None, timeout: float) -> int:
    fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            if src:
                s.bind((src, 0))
            s.connect((dst, port))
        except TimeoutError:
            print("timeout", flush=True)
            return 2
        except OSError as e:
            print(f"error {e.strerror or e}", flush=True)
            return 1
    print("connected", flush=True)
    return 0


def _listen(port: int, seconds: float) -> None:
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # IPv4 too, as ::ffff:a.b.c.d
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("::", port))
        s.listen(128)
        print("ready", flush=True)
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            r, _, _ = select.select([s], [], [], min(left, 0.2))
            if r:
                conn, peer = s.accept()
                conn.close()
                host = peer[0].removeprefix("::ffff:") if "." in peer[0] else peer[0]
                print(f"accept {host}", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hepbpf.vm.probe",
                                description="the in-namespace halves of hepbpf.vm.probe (not for direct use)")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sniff")
    s.add_argument("--iface", required=True)
    s.add_argument("--nonce", required=True)
    s.add_argument("--count", type=int, required=True)
    s.add_argument("--seconds", type=float, default=SNIFF_CAP_S)
    s.add_argument("--settle", type=float, default=SETTLE_S)
    t = sub.add_parser("send")
    t.add_argument("--iface", required=True)
    t.add_argument("--src-mac", required=True)
    t.add_argument("--dst-mac", required=True)
    t.add_argument("--specs", required=True)
    c = sub.add_parser("connect")
    c.add_argument("--dst", required=True)
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--src")
    c.add_argument("--timeout", type=float, default=2.0)
    ln = sub.add_parser("listen")
    ln.add_argument("--port", type=int, required=True)
    ln.add_argument("--seconds", type=float, default=LISTEN_LIFETIME_S)
    a = p.parse_args(argv)
    if a.cmd == "sniff":
        _sniff(a.iface, a.nonce, a.count, min(a.seconds, 120.0), a.settle)
    elif a.cmd == "send":
        _send(a.iface, a.src_mac, a.dst_mac, a.specs)
    elif a.cmd == "connect":
        return _connect(a.dst, a.port, a.src, min(a.timeout, 60.0))
    else:
        _listen(a.port, min(a.seconds, 3600.0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
