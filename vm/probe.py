"""Which packets reach the node's interface: scapy sends, AF_PACKET counts.

XDP runs before packet taps on the receive path, so a frame the program
drops is never seen by an AF_PACKET socket on that interface: exactly the
signal we want. The sniffer runs in the node namespace and the sender in a
client namespace, each as a subprocess under `ip netns exec` (scapy caches
interfaces and routes at import and misbehaves after setns). Every packet
carries a unique token in its payload.

    probe(lab, client, [PacketSpec(...), ...]) -> [True, False, ...]
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

SNIFF_CAP_S = 10.0  # hard cap on a sniffer's life
SETTLE_S = 0.4  # after the last packet is sent


@dataclass(frozen=True)
class PacketSpec:
    proto: str | int  # "tcp", "udp", "icmp", "icmp6" or a protocol number
    src: str
    dst: str
    sport: int = 40000
    dport: int = 0
    icmp_type: int = 8
    icmp_code: int = 0
    tcp_flags: str = "S"

    @classmethod
    def from_packet(cls, pkt) -> PacketSpec:
        """From a hepbpf.compiler.packet.Packet."""
        name = {6: "tcp", 17: "udp", 132: "sctp", 1: "icmp", 58: "icmp6"}.get(pkt.proto, pkt.proto)
        return cls(name, str(pkt.src), str(pkt.dst), pkt.sport, pkt.dport,
                   pkt.icmp_type if pkt.icmp_type is not None else 8, pkt.icmp_code or 0)


_RUN = os.urandom(4).hex()
TOKEN_LEN = len(f"hepbpf-probe-{_RUN}-000000")


def _token(i: int) -> bytes:
    """A fixed-length token, unique per packet of this process."""
    return f"hepbpf-probe-{_RUN}-{i:06d}".encode()


def probe(lab, client, packets: list[PacketSpec], timeout: float = SNIFF_CAP_S) -> list[bool]:
    tokens = [_token(i) for i in range(len(packets))]
    sniffer = subprocess.Popen(
        ["ip", "netns", "exec", lab.node_ns, sys.executable, "-m", "hepbpf.vm.probe", "sniff",
         "--iface", lab.node_iface, "--seconds", str(timeout)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        ready = sniffer.stdout.readline().strip()
        if ready != "ready":
            raise RuntimeError(f"sniffer did not start: {ready!r}")
        specs = [{**asdict(p), "token": t.decode()} for p, t in zip(packets, tokens)]
        subprocess.run(
            ["ip", "netns", "exec", client.ns, sys.executable, "-m", "hepbpf.vm.probe", "send",
             "--iface", client.iface, "--src-mac", client.mac, "--dst-mac", lab.node_mac],
            input=json.dumps(specs), text=True, check=True, timeout=timeout, capture_output=True)
        time.sleep(SETTLE_S)
        out, _ = sniffer.communicate(input="stop\n", timeout=timeout)
    finally:
        if sniffer.poll() is None:
            sniffer.kill()
            sniffer.wait()
    seen = set(json.loads(out.strip().splitlines()[-1]))
    return [t.decode() in seen for t in tokens]


# --- subprocess side ---------------------------------------------------------------

def _sniff(iface: str, seconds: float) -> None:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    s.bind((iface, 0))
    s.setblocking(False)
    seen: set[str] = set()
    print("ready", flush=True)
    deadline = time.monotonic() + seconds
    stop = False
    while time.monotonic() < deadline and not stop:
        r, _, _ = select.select([s, sys.stdin], [], [], 0.05)
        if s in r:
            while True:
                try:
                    frame, addr = s.recvfrom(65535)
                except BlockingIOError:
                    break
                if addr[2] == socket.PACKET_OUTGOING:
                    continue
                i = frame.find(b"hepbpf-probe-")
                if i >= 0:
                    seen.add(frame[i:i + TOKEN_LEN].decode(errors="replace"))
        if sys.stdin in r:
            sys.stdin.readline()
            stop = True
    # A last drain of what already arrived.
    while True:
        try:
            frame, addr = s.recvfrom(65535)
        except BlockingIOError:
            break
        i = frame.find(b"hepbpf-probe-")
        if i >= 0 and addr[2] != socket.PACKET_OUTGOING:
            seen.add(frame[i:i + TOKEN_LEN].decode(errors="replace"))
    print(json.dumps(sorted(seen)), flush=True)


def _build(spec: dict):
    from scapy.layers.inet import ICMP, IP, TCP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.sctp import SCTP
    from scapy.packet import Raw

    v6 = ":" in spec["dst"]
    ip = IPv6(src=spec["src"], dst=spec["dst"]) if v6 else IP(src=spec["src"], dst=spec["dst"])
    payload = Raw(spec["token"].encode())
    proto = spec["proto"]
    if proto == "tcp":
        return ip / TCP(sport=spec["sport"], dport=spec["dport"], flags=spec["tcp_flags"]) / payload
    if proto == "udp":
        return ip / UDP(sport=spec["sport"], dport=spec["dport"]) / payload
    if proto == "sctp":
        return ip / SCTP(sport=spec["sport"], dport=spec["dport"]) / payload
    if proto == "icmp" and not v6:
        return ip / ICMP(type=spec["icmp_type"], code=spec["icmp_code"]) / payload
    if proto in ("icmp", "icmp6"):
        # Any type/code, checksum left zero: the policy reads only type and
        # code, and the sniffer sees the frame before the stack would check.
        ip.nh = 58
        return ip / Raw(bytes([spec["icmp_type"], spec["icmp_code"], 0, 0, 0, 0, 0, 0])) / payload
    if v6:
        ip.nh = int(proto)
    else:
        ip.proto = int(proto)
    return ip / payload


def _send(iface: str, src_mac: str, dst_mac: str) -> None:
    from scapy.layers.l2 import Ether
    from scapy.sendrecv import sendp

    specs = json.loads(sys.stdin.read())
    frames = [Ether(src=src_mac, dst=dst_mac) / _build(s) for s in specs]
    sendp(frames, iface=iface, verbose=False)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m hepbpf.vm.probe")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sniff")
    s.add_argument("--iface", required=True)
    s.add_argument("--seconds", type=float, default=SNIFF_CAP_S)
    t = sub.add_parser("send")
    t.add_argument("--iface", required=True)
    t.add_argument("--src-mac", required=True)
    t.add_argument("--dst-mac", required=True)
    args = p.parse_args()
    if args.cmd == "sniff":
        _sniff(args.iface, min(args.seconds, 60.0))
    else:
        _send(args.iface, args.src_mac, args.dst_mac)


if __name__ == "__main__":
    main()
