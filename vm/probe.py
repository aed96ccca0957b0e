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
``listen()`` (a TCP accept loop in the node namespace); and real two-way
traffic between any of a lab's namespaces (clients, node, backend):
``echo_server()`` (a TCP and/or UDP echo server for the ``with`` block),
``echo()`` (one payload there and back, None when nothing came back in
time) and ``echo_session()`` (one TCP connection kept open across steps,
e.g. while the policy is replaced). Every one is a subprocess in the
namespace, bounded in time and killed by its PID.
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

# Hard cap on one probe round. It bounds a failure, never decides what
# arrived (SETTLE_S after ``sent`` does): most of a round is two Pythons
# importing scapy, seconds on a host but 10 s and more in a loaded 2-CPU
# software-emulated guest (`make vm-test`), where a 10 s cap failed rounds.
SNIFF_CAP_S = 60.0
SETTLE_S = 0.5  # how long the sniffer still waits after the last packet was sent
MAX_PACKETS = 10_000  # per round; keeps a round's time and memory bounded
LISTEN_LIFETIME_S = 60.0  # default cap on a listener's life
ECHO_TIMEOUT_S = 2.0  # default wait for a connection, and then for the echo
SESSION_LIFETIME_S = 60.0  # default cap on an echo session's life
MAX_PAYLOAD = 32 << 10  # per echo (passed as hex in argv); keep UDP ones below the MTU: fragments are dropped

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
    if not result["complete"]:
        raise TimeoutError(f"probe sniff in {lab.node_ns}: its {timeout:.0f} s ran out before the sender had sent")
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


class _PeerLog:
    """The peers a probe child reports on its stdout, one line each, read by
    a thread until the child exits or is killed; ``_peer`` turns a line into
    a peer (or None for other lines)."""

    def __init__(self, child: _Child):
        self.pid = child.proc.pid
        self.peers: list = []
        self._child = child
        self._reader = threading.Thread(target=self._read, daemon=True)

    def _peer(self, line: bytes):
        raise NotImplementedError

    def _read(self) -> None:
        fd = self._child.proc.stdout.fileno()
        buf = b""
        with contextlib.suppress(OSError):
            while chunk := os.read(fd, 4096):
                buf += chunk
                *lines, buf = buf.split(b"\n")
                self.peers += [p for p in map(self._peer, lines) if p is not None]

    def wait_peers(self, n: int, timeout: float = 2.0) -> list:
        """The peers once at least ``n`` were seen (or ``timeout`` passed)."""
        end = time.monotonic() + timeout
        while len(self.peers) < n and time.monotonic() < end:
            time.sleep(0.01)
        return list(self.peers)


class Listener(_PeerLog):
    """A running ``listen()``: ``peers`` lists, in order, the source address
    of every connection accepted so far (IPv4 peers as plain dotted quads)."""

    def __init__(self, child: _Child, port: int):
        super().__init__(child)
        self.port = port

    def _peer(self, line: bytes) -> str | None:
        return line.decode().split(" ", 1)[1] if line.startswith(b"accept ") else None


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


# --- the caller's side: echo ------------------------------------------------------

def _ns_of(lab, where) -> str:
    """A namespace of ``lab`` from a namespace name or anything with ``.ns``
    (a Client, the Backend)."""
    ns = where if isinstance(where, str) else where.ns
    if ns not in lab.namespaces:
        raise ValueError(f"{ns!r} is not a namespace of this lab")
    return ns


class EchoServer(_PeerLog):
    """A running ``echo_server()``: ``peers`` lists, in order, ``(proto,
    address)`` for every TCP connection accepted and every UDP datagram
    echoed so far (IPv4 peers as plain dotted quads): the source address the
    server saw, e.g. the client's own behind a DNAT without SNAT."""

    def __init__(self, child: _Child, ns: str, tcp: int | None, udp: int | None):
        super().__init__(child)
        self.ns, self.tcp, self.udp = ns, tcp, udp

    def _peer(self, line: bytes) -> tuple[str, str] | None:
        word, _, rest = line.decode(errors="replace").partition(" ")
        return (word, rest) if word in ("tcp", "udp") else None


@contextlib.contextmanager
def echo_server(lab, where, *, tcp: int | None = None, udp: int | None = None,
                lifetime: float = LISTEN_LIFETIME_S):
    """An echo server in namespace ``where`` (a name, a Client or the
    Backend) on every address, IPv4 and IPv6: TCP on port ``tcp`` (each
    connection gets back every byte it sends, until it closes) and/or UDP on
    port ``udp`` (each datagram is sent back to its source). Lives for the
    ``with`` block, at most ``lifetime`` seconds; killed by its PID on exit."""
    if tcp is None and udp is None:
        raise ValueError("echo_server needs a tcp and/or a udp port")
    ns = _ns_of(lab, where)
    args = ["echo", "--seconds", str(lifetime)]
    args += ["--tcp", str(tcp)] if tcp is not None else []
    args += ["--udp", str(udp)] if udp is not None else []
    child = _Child(_in_ns(ns, *args))
    server = None
    try:
        child.expect("ready", time.monotonic() + 10)
        server = EchoServer(child, ns, tcp, udp)
        server._reader.start()
        yield server
    finally:
        child.kill()
        if server is not None:
            server._reader.join(timeout=5)  # stdout at EOF once it is dead
        child.stop()


def _check_payload(payload: bytes) -> bytes:
    if not isinstance(payload, (bytes, bytearray)) or not 0 < len(payload) <= MAX_PAYLOAD:
        raise ValueError(f"payload: 1..{MAX_PAYLOAD} bytes")
    return bytes(payload)


def _check_dst(dst: str, src: str | None) -> None:
    for a in (dst, src) if src else (dst,):
        if not any(ipaddress.ip_address(a) in n for n in _DOC_NETS):
            raise ValueError(f"{a}: not a documentation address")


def _answer(line: str, what: str) -> bytes | None:
    """One result line of an echo child: ``reply <hex>`` is the bytes that
    came back, ``timeout`` None; a refusal or error raises (something did
    answer, or the call was wrong: never the same as "dropped")."""
    word, _, rest = line.partition(" ")
    if word == "reply":
        return bytes.fromhex(rest)
    if word == "timeout":
        return None
    if word == "refused":
        raise ConnectionRefusedError(f"{what}: refused")
    raise RuntimeError(f"{what}: {line or 'no answer'}")


def echo(lab, where, dst: str, port: int, payload: bytes, *, proto: str = "tcp", src: str | None = None,
         timeout: float = ECHO_TIMEOUT_S) -> bytes | None:
    """Send ``payload`` from namespace ``where`` (a name, a Client or the
    Backend) to ``dst:port`` over ``proto`` ("tcp" or "udp"), from address
    ``src`` if given, and return what came back: for TCP, up to
    ``len(payload)`` bytes read before ``timeout`` after the connection is
    established (``timeout`` for that too); for UDP, the first datagram from
    ``dst:port`` within ``timeout`` (a connected socket: a reply from any
    other address or port does not count).

    None when nothing came back in time (a SYN, the datagram or a reply
    dropped); a TCP reply cut short returns the bytes that did arrive.
    Raises ConnectionRefusedError on a RST or ICMP unreachable, and
    RuntimeError on any other failure (e.g. ``src`` not an address there)."""
    if proto not in ("tcp", "udp"):
        raise ValueError(f"proto {proto!r}: tcp or udp")
    _check_dst(dst, src)
    ns = _ns_of(lab, where)
    args = ["call", "--proto", proto, "--dst", dst, "--port", str(port), "--timeout", str(timeout),
            "--payload", _check_payload(payload).hex()]
    args += ["--src", src] if src else []
    res = subprocess.run(_in_ns(ns, *args), capture_output=True, text=True, timeout=2 * timeout + 15)
    lines = res.stdout.strip().splitlines()
    what = f"{proto} {src or ns} -> {dst}:{port}"
    if not lines:
        raise RuntimeError(f"{what}: exit {res.returncode}: {res.stderr.strip()[-2000:]}")
    return _answer(lines[-1], what)


class EchoSession:
    """A TCP connection kept open by a child process (``echo_session()``).
    ``connected`` says whether it was established; ``send()`` writes a
    payload and returns what came back, as ``echo()`` does."""

    def __init__(self, child: _Child, what: str, timeout: float):
        self._child, self.what, self.timeout = child, what, timeout
        self.pid = child.proc.pid
        self.connected = False

    def send(self, payload: bytes, timeout: float | None = None) -> bytes | None:
        if not self.connected:
            raise RuntimeError(f"{self.what}: not connected")
        t = self.timeout if timeout is None else timeout
        self._child.tell(f"send {_check_payload(payload).hex()} {t}")
        return _answer(self._child.readline(time.monotonic() + t + 10), self.what)


@contextlib.contextmanager
def echo_session(lab, where, dst: str, port: int, *, src: str | None = None, timeout: float = ECHO_TIMEOUT_S,
                 lifetime: float = SESSION_LIFETIME_S):
    """One TCP connection from namespace ``where`` to ``dst:port`` (from
    ``src`` if given), open for the ``with`` block (at most ``lifetime``
    seconds), for payloads sent at different moments on the same flow: the
    session's ``connected`` is False if it was not established in
    ``timeout`` (or refused). The child is killed by its PID on exit."""
    _check_dst(dst, src)
    ns = _ns_of(lab, where)
    args = ["session", "--dst", dst, "--port", str(port), "--timeout", str(timeout), "--seconds", str(lifetime)]
    args += ["--src", src] if src else []
    child = _Child(_in_ns(ns, *args))
    try:
        session = EchoSession(child, f"tcp session {src or ns} -> {dst}:{port}", timeout)
        line = child.readline(time.monotonic() + timeout + 10)
        if line not in ("connected", "timeout", "refused"):
            raise RuntimeError(f"{session.what}: {line}")
        session.connected = line == "connected"
        yield session
    finally:
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
    sent = False
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
                sent = True
                stop_at = min(deadline, time.monotonic() + settle)
    drain()  # what arrived during the last wait
    stats = s.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
    _, drops = struct.unpack("II", stats)
    # complete: the answer covers every packet (all seen, or SETTLE_S after
    # they were all sent), not a cap that ran out while the sender was slow.
    print(json.dumps({"seen": sorted(seen), "frames": frames, "drops": drops,
                      "complete": len(seen) >= count or sent}), flush=True)


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
    """Print the result word of one connection attempt; exit 0 connected,
    2 timed out, 1 otherwise."""
    s, word = _tcp_open(dst, port, src, timeout)
    if s is not None:
        s.close()
    print(word, flush=True)
    return {"connected": 0, "timeout": 2}.get(word, 1)


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


# --- subprocess side: echo ----------------------------------------------------------

def _echo_serve(tcp: int | None, udp: int | None, seconds: float) -> None:
    """Echo on [::]:tcp and [::]:udp (IPv4 too, as ::ffff:a.b.c.d) until
    ``seconds`` pass; one select loop, every socket non-blocking."""
    socks: list[socket.socket] = []

    def dual(kind: int, port: int) -> socket.socket:
        s = socket.socket(socket.AF_INET6, kind)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("::", port))
        s.setblocking(False)
        socks.append(s)
        return s

    def host(peer) -> str:
        return peer[0].removeprefix("::ffff:") if "." in peer[0] else peer[0]

    lst = dual(socket.SOCK_STREAM, tcp) if tcp is not None else None
    if lst is not None:
        lst.listen(128)
    dgram = dual(socket.SOCK_DGRAM, udp) if udp is not None else None
    conns: dict[socket.socket, bytes] = {}  # connection -> bytes not yet echoed
    print("ready", flush=True)
    deadline = time.monotonic() + seconds
    try:
        while (left := deadline - time.monotonic()) > 0:
            readers = [s for s in (lst, dgram) if s is not None] + list(conns)
            writers = [c for c, pending in conns.items() if pending]
            r, w, _ = select.select(readers, writers, [], min(left, 0.2))
            for s in r:
                if s is lst:
                    with contextlib.suppress(BlockingIOError):
                        conn, peer = lst.accept()
                        conn.setblocking(False)
                        conns[conn] = b""
                        print(f"tcp {host(peer)}", flush=True)
                elif s is dgram:
                    for _ in range(64):  # bounded per wake-up
                        try:
                            data, peer = dgram.recvfrom(65535)
                        except BlockingIOError:
                            break
                        with contextlib.suppress(OSError):
                            dgram.sendto(data, peer)
                        print(f"udp {host(peer)}", flush=True)
                elif s in conns:
                    try:
                        data = s.recv(65536)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    if data:
                        conns[s] += data
                    else:
                        del conns[s]
                        s.close()
            for c in w:
                if c in conns:
                    try:
                        n = c.send(conns[c])
                        conns[c] = conns[c][n:]
                    except BlockingIOError:
                        pass
                    except OSError:
                        del conns[c]
                        c.close()
    finally:
        for s in socks + list(conns):
            s.close()


def _recv_exactly(s: socket.socket, n: int, deadline: float) -> bytes:
    """Up to ``n`` bytes from a TCP socket, stopping at EOF or the deadline."""
    got = b""
    while len(got) < n and (left := deadline - time.monotonic()) > 0:
        s.settimeout(left)
        try:
            chunk = s.recv(n - len(got))
        except TimeoutError:
            break
        if not chunk:
            break
        got += chunk
    return got


def _tcp_open(dst: str, port: int, src: str | None, timeout: float) -> tuple[socket.socket | None, str]:
    """A connected TCP socket, or None and the result word."""
    s = socket.socket(socket.AF_INET6 if ":" in dst else socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        if src:
            s.bind((src, 0))
        s.connect((dst, port))
    except TimeoutError:
        s.close()
        return None, "timeout"
    except ConnectionRefusedError:
        s.close()
        return None, "refused"
    except OSError as e:
        s.close()
        return None, f"error {e.strerror or e}"
    return s, "connected"


def _exchange(s: socket.socket, payload: bytes, timeout: float) -> str:
    """Send on a connected TCP socket, read the echo: the result line."""
    try:
        s.settimeout(timeout)
        s.sendall(payload)
        got = _recv_exactly(s, len(payload), time.monotonic() + timeout)
    except ConnectionRefusedError:
        return "refused"
    except TimeoutError:
        return "timeout"
    except OSError as e:
        return f"error {e.strerror or e}"
    return f"reply {got.hex()}" if got else "timeout"


def _call(proto: str, dst: str, port: int, src: str | None, payload: bytes, timeout: float) -> int:
    if proto == "tcp":
        s, word = _tcp_open(dst, port, src, timeout)
        if s is None:
            print(word, flush=True)
            return 1
        with s:
            line = _exchange(s, payload, timeout)
    else:
        with socket.socket(socket.AF_INET6 if ":" in dst else socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            try:
                if src:
                    s.bind((src, 0))
                s.connect((dst, port))  # replies from anywhere else are not ours
                s.send(payload)
                line = f"reply {s.recv(65535).hex()}"
            except TimeoutError:
                line = "timeout"
            except ConnectionRefusedError:
                line = "refused"
            except OSError as e:
                line = f"error {e.strerror or e}"
    print(line, flush=True)
    return 0 if line.startswith("reply") else 1


def _session(dst: str, port: int, src: str | None, timeout: float, seconds: float) -> int:
    """Connect, then for each ``send <hex> <timeout>`` line on stdin send and
    print the result line; stop at EOF or after ``seconds``."""
    s, word = _tcp_open(dst, port, src, timeout)
    print(word, flush=True)
    if s is None:
        return 1
    deadline = time.monotonic() + seconds
    with s:
        while (left := deadline - time.monotonic()) > 0:
            r, _, _ = select.select([sys.stdin], [], [], min(left, 0.5))
            if not r:
                continue
            line = sys.stdin.readline()
            if not line:
                break
            cmd, data, t = (line.split() + ["", "", ""])[:3]
            if cmd != "send":
                print(f"error unknown command {cmd!r}", flush=True)
                continue
            print(_exchange(s, bytes.fromhex(data), min(float(t or timeout), left)), flush=True)
    return 0


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
    e = sub.add_parser("echo")
    e.add_argument("--tcp", type=int)
    e.add_argument("--udp", type=int)
    e.add_argument("--seconds", type=float, default=LISTEN_LIFETIME_S)
    k = sub.add_parser("call")
    k.add_argument("--proto", choices=("tcp", "udp"), required=True)
    k.add_argument("--dst", required=True)
    k.add_argument("--port", type=int, required=True)
    k.add_argument("--src")
    k.add_argument("--payload", required=True, help="hex")
    k.add_argument("--timeout", type=float, default=ECHO_TIMEOUT_S)
    ss = sub.add_parser("session")
    ss.add_argument("--dst", required=True)
    ss.add_argument("--port", type=int, required=True)
    ss.add_argument("--src")
    ss.add_argument("--timeout", type=float, default=ECHO_TIMEOUT_S)
    ss.add_argument("--seconds", type=float, default=SESSION_LIFETIME_S)
    a = p.parse_args(argv)
    if a.cmd == "echo":
        _echo_serve(a.tcp, a.udp, min(a.seconds, 3600.0))
    elif a.cmd == "call":
        return _call(a.proto, a.dst, a.port, a.src, bytes.fromhex(a.payload), min(a.timeout, 60.0))
    elif a.cmd == "session":
        return _session(a.dst, a.port, a.src, min(a.timeout, 60.0), min(a.seconds, 3600.0))
    elif a.cmd == "sniff":
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
