"""The namespace lab: a node, a switch and clients, no real NIC.

    client c1 (eth1) --+
    client c2 (eth1) --+-- br0 in <prefix>-sw -- eth1 in <prefix>-node  (the HEP)
    ...              --+

Every namespace and link has the unique prefix ``hl<4 hex>``; ``close()``
deletes the namespaces (and with them every veth) even after a failure.
Addresses are documentation ranges only: the node is 192.0.2.1/24 and
2001:db8::1/64, client k is 192.0.2.(10k) and 2001:db8::(10k), plus any
extra source addresses the caller asks for (reached through on-link
routes). Neighbours are static and DAD is off, so no ARP, ND or timing can
blur what the XDP program did.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
from dataclasses import dataclass, field

NODE4, NODE6 = "192.0.2.1", "2001:db8::1"
NODE_MAC = "02:00:00:00:00:01"
ALLOWED = [ipaddress.ip_network(n) for n in
           ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")]


def run(argv: list[str], *, ns: str | None = None, check: bool = True, timeout: float = 30,
        **kw) -> subprocess.CompletedProcess:
    if ns is not None:
        argv = ["ip", "netns", "exec", ns] + argv
    return subprocess.run(argv, check=check, timeout=timeout, capture_output=True, text=True, **kw)


@dataclass
class Client:
    name: str
    ns: str
    mac: str
    addrs4: list[str] = field(default_factory=list)
    addrs6: list[str] = field(default_factory=list)
    iface: str = "eth1"

    @property
    def addrs(self) -> list[str]:
        return self.addrs4 + self.addrs6


class Lab:
    def __init__(self, extra_addrs: list[list[str]] | None = None, prefix: str | None = None):
        """``extra_addrs[k]``: additional source addresses of client k+1."""
        self.prefix = prefix or "hl" + os.urandom(2).hex()
        self.node_ns = f"{self.prefix}-node"
        self.sw_ns = f"{self.prefix}-sw"
        self.node_iface = "eth1"
        self.node_mac = NODE_MAC
        self.node_addr4, self.node_addr6 = NODE4, NODE6
        self.clients: list[Client] = []
        self._made: list[str] = []
        extra_addrs = extra_addrs if extra_addrs is not None else [[]]
        for addrs in extra_addrs:
            for a in addrs:
                if not any(ipaddress.ip_address(a) in n for n in ALLOWED):
                    raise ValueError(f"{a}: the lab uses documentation ranges only")
        try:
            self._build(extra_addrs)
        except BaseException:
            self.close()
            raise

    # --- building ---------------------------------------------------------

    def _netns(self, name: str) -> None:
        run(["ip", "netns", "add", name])
        self._made.append(name)
        run(["ip", "link", "set", "lo", "up"], ns=name)
        for key in ("all", "default"):
            run(["sysctl", "-qw", f"net.ipv6.conf.{key}.accept_dad=0"], ns=name)
            run(["sysctl", "-qw", f"net.ipv6.conf.{key}.router_solicitations=0"], ns=name)

    def _port(self, ns: str, index: int, mac: str) -> None:
        """A veth from br0 in the switch namespace to eth1 in ``ns``."""
        port = f"p{index}"
        run(["ip", "-n", self.sw_ns, "link", "add", port, "type", "veth", "peer", "name", "eth1",
             "netns", ns])
        run(["ip", "-n", self.sw_ns, "link", "set", port, "master", "br0", "up"])
        run(["sysctl", "-qw", "net.ipv6.conf.eth1.accept_dad=0"], ns=ns)
        run(["ip", "-n", ns, "link", "set", "eth1", "address", mac, "up"])

    def _build(self, extra_addrs: list[list[str]]) -> None:
        self._netns(self.sw_ns)
        run(["ip", "-n", self.sw_ns, "link", "add", "br0", "type", "bridge"])
        run(["ip", "-n", self.sw_ns, "link", "set", "br0", "up"])
        self._netns(self.node_ns)
        self._port(self.node_ns, 0, NODE_MAC)
        run(["ip", "-n", self.node_ns, "addr", "add", f"{NODE4}/24", "dev", "eth1"])
        run(["ip", "-n", self.node_ns, "addr", "add", f"{NODE6}/64", "dev", "eth1", "nodad"])
        for k, extra in enumerate(extra_addrs, start=1):
            c = Client(f"c{k}", f"{self.prefix}-c{k}", f"02:00:00:00:{k:02x}:02",
                       [f"192.0.2.{10 * k}"], [f"2001:db8::{10 * k:x}"])
            self._netns(c.ns)
            self._port(c.ns, k, c.mac)
            run(["ip", "-n", c.ns, "addr", "add", f"{c.addrs4[0]}/24", "dev", "eth1"])
            run(["ip", "-n", c.ns, "addr", "add", f"{c.addrs6[0]}/64", "dev", "eth1", "nodad"])
            for a in extra:
                v6 = ":" in a
                (c.addrs6 if v6 else c.addrs4).append(a)
                run(["ip", "-n", c.ns, "addr", "add", f"{a}/{128 if v6 else 32}", "dev", "eth1"]
                    + (["nodad"] if v6 else []))
                # The node reaches the extra address on-link (static neighbour below).
                run(["ip", "-n", self.node_ns, "route", "add", f"{a}/{128 if v6 else 32}", "dev", "eth1"])
                # And the client sources from it towards the node.
            for node_addr in (NODE4, NODE6):
                run(["ip", "-n", c.ns, "neigh", "replace", node_addr, "lladdr", NODE_MAC, "dev", "eth1",
                     "nud", "permanent"])
            for a in c.addrs:
                run(["ip", "-n", self.node_ns, "neigh", "replace", a, "lladdr", c.mac, "dev", "eth1",
                     "nud", "permanent"])
            self.clients.append(c)

    # --- using ------------------------------------------------------------

    @property
    def node_ifindex(self) -> int:
        out = run(["cat", f"/sys/class/net/{self.node_iface}/ifindex"], ns=self.node_ns).stdout
        return int(out)

    def exec(self, ns: str, argv: list[str], **kw) -> subprocess.CompletedProcess:
        return run(argv, ns=ns, **kw)

    def close(self) -> None:
        """Delete every namespace this lab made (their veths go with them)."""
        for name in reversed(self._made):
            run(["ip", "netns", "del", name], check=False)
        self._made.clear()

    @staticmethod
    def destroy_by_prefix(prefix: str) -> None:
        """Crash recovery for one known prefix."""
        out = run(["ip", "netns", "list"], check=False).stdout
        for line in out.splitlines():
            name = line.split()[0] if line.strip() else ""
            if name.startswith(prefix + "-"):
                run(["ip", "netns", "del", name], check=False)

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
