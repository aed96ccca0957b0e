"""The namespace lab: a node, a switch and clients, no real NIC.

    <prefix>-c1   eth1 ──p1─┐
    <prefix>-c2   eth1 ──p2─┼── br0 in <prefix>-sw ──p0── eth1 in <prefix>-node  (the HEP)
    ...                     ┘

One shared L2 segment, so the node has a single host-endpoint interface,
named ``eth1`` inside the node namespace (and ``eth1`` in every client too).
Every veth is created inside the switch namespace (the backend's inside the
node namespace) with its peer put straight into the member namespace:
nothing ever appears in the caller's namespace.

Every namespace has the unique prefix ``hl<4 hex>``; ``close()`` deletes the
namespaces (and with them every veth) even after a failure, and the context
manager calls it on any exit. Only namespaces this object created are ever
deleted (``destroy_by_prefix`` is the explicit crash-recovery exception, for
one known prefix).

Addresses are documentation ranges only: the node is 192.0.2.1/24 and
2001:db8::1/64; client k is 192.0.2.(10k)/24 and 2001:db8::(10k)/64 (10k in
decimal, so client 1 is 2001:db8::10), plus any extra source addresses the
caller asks for, held as /32 or /128 on the client's eth1 and routed on the
node via the client's primary address of the same family.

Nothing is left to timing: DAD, router solicitations and RAs are off, every
address has a permanent neighbour entry on every other member, and the
bridge has static FDB entries. A frame dropped by the program under test can
therefore never be an ARP or ND message that changes later results. The
switch is a plain L2 wire (no br_netfilter, so malformed IP frames pass)
that does not forward the members' MLD/IGMP reports, so the node sees only
the traffic a test sends.

MACs are fixed and locally administered, ``02:00:00:00:<ns>:<if>``: ns 00 is
the node, ns k is client k, ns be the backend, ns fe the switch; if 01 is
eth1, 02 the node's eth2, and the switch port towards member m is if 10+m.

With ``backend=True`` there is also a service backend behind the node, the
way a Kubernetes worker forwards NodePort traffic to a pod::

    <prefix>-node  eth2 ─────── eth1  <prefix>-be

a point-to-point veth made inside the node namespace (peer put straight into
the backend's), node side 203.0.113.1/24 and 2001:db8:b::1/64, backend
203.0.113.2/24 and 2001:db8:b::2/64, under the same discipline (no DAD,
permanent neighbours, fixed MACs). The node forwards (IPv4 and IPv6, no
rp_filter); the backend's default routes and the clients' routes to
203.0.113.0/24 and 2001:db8:b::/64 point at the node, so a client also
reaches the backend directly: forwarded traffic through the HEP eth1.

kube-proxy's part is one nftables table of our own in the node namespace,
``inet hepbpf_lab_nat``: a prerouting DNAT of TCP NODEPORT_TCP (30080) to
the backend's BACKEND_TCP_PORT (8080) and of UDP NODEPORT_UDP (30053) to
BACKEND_UDP_PORT (5353), for either family, on packets to a node address.
No SNAT: the backend sees the client's address and answers through the node,
whose conntrack reverses the DNAT. Nothing else in the lab filters.
"""

from __future__ import annotations

import atexit
import ipaddress
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field

NODE4, NODE6 = "192.0.2.1", "2001:db8::1"
IFACE = "eth1"

# The optional backend behind the node (Lab(..., backend=True)).
BACKEND_IFACE = "eth2"  # the node's side of the backend link; the backend's side is eth1
NODE_B4, NODE_B6 = "203.0.113.1", "2001:db8:b::1"  # the node on the backend link
BACKEND4, BACKEND6 = "203.0.113.2", "2001:db8:b::2"
BACKEND_NET4, BACKEND_NET6 = "203.0.113.0/24", "2001:db8:b::/64"
NODEPORT_TCP, NODEPORT_UDP = 30080, 30053  # on every node address
BACKEND_TCP_PORT, BACKEND_UDP_PORT = 8080, 5353  # where the NodePorts lead
NAT_TABLE = "hepbpf_lab_nat"  # inet family, node namespace
ALLOWED = [ipaddress.ip_network(n) for n in
           ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")]
PREFIX_RE = re.compile(r"^hl[0-9a-f]{4}$")
MAX_CLIENTS = 24  # 192.0.2.(10k) must stay below 255
CMD_TIMEOUT_S = 30.0


def mac(ns: int, iface: int) -> str:
    return f"02:00:00:00:{ns:02x}:{iface:02x}"


NODE_MAC = mac(0, 1)
NODE_B_MAC = mac(0, 2)
BACKEND_MAC = mac(0xBE, 1)

# Per-interface IPv6 knobs: no DAD (addresses usable at once, no ND probes),
# no router solicitations or RAs (no unsolicited traffic, no routes appear).
_V6_QUIET = {"accept_dad": "0", "dad_transmits": "0", "router_solicitations": "0", "accept_ra": "0"}

# Forwarded by the switch, never: MLDv2 reports (to ff02::16) and IGMPv3
# reports (to 224.0.0.22).
_SWITCH_NFT = """
table bridge lab {
    chain forward {
        type filter hook forward priority 0; policy accept;
        ether daddr { 33:33:00:00:00:16, 01:00:5e:00:00:16 } drop
    }
}
"""


# kube-proxy's NodePort DNAT, reduced to what the lab needs: only packets to a
# node address (kube-proxy's "fib daddr type local"), no masquerade.
_NAT_NFT = f"""
table inet {NAT_TABLE} {{
    chain prerouting {{
        type nat hook prerouting priority dstnat; policy accept;
        fib daddr type local meta nfproto ipv4 tcp dport {NODEPORT_TCP} dnat ip to {BACKEND4}:{BACKEND_TCP_PORT}
        fib daddr type local meta nfproto ipv4 udp dport {NODEPORT_UDP} dnat ip to {BACKEND4}:{BACKEND_UDP_PORT}
        fib daddr type local meta nfproto ipv6 tcp dport {NODEPORT_TCP} dnat ip6 to [{BACKEND6}]:{BACKEND_TCP_PORT}
        fib daddr type local meta nfproto ipv6 udp dport {NODEPORT_UDP} dnat ip6 to [{BACKEND6}]:{BACKEND_UDP_PORT}
    }}
}}
"""


class CommandError(subprocess.CalledProcessError):
    """A failed command, whose message carries its stderr."""

    def __str__(self) -> str:
        err = self.stderr.strip() if isinstance(self.stderr, str) else ""
        return f"{' '.join(map(str, self.cmd))}: exit {self.returncode}" + (f": {err}" if err else "")



def run(argv: list[str], *, ns: str | None = None, check: bool = True, timeout: float = CMD_TIMEOUT_S,
        **kw) -> subprocess.CompletedProcess:
    """Run a command (inside ``ns`` with ``ip netns exec`` if given), output
    captured as text; a failure raises with its stderr in the message."""
    if ns is not None:
        argv = ["ip", "netns", "exec", ns, *argv]
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    res = subprocess.run(argv, timeout=timeout, **kw)
    if check and res.returncode != 0:
        raise CommandError(res.returncode, argv, res.stdout, res.stderr)
    return res


def _ip_batch(ns: str, lines: list[str]) -> None:
    """Many ``ip`` commands in one process (``ip -batch`` stops at the first error)."""
    if lines:
        run(["ip", "-n", ns, "-batch", "-"], input="\n".join(lines) + "\n")


def _netns_names() -> set[str]:
    out = run(["ip", "-j", "netns", "list"], check=False).stdout.strip()
    return {n["name"] for n in json.loads(out)} if out else set()


def _check_allowed(addr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    a = ipaddress.ip_address(addr)
    if not any(a in n for n in ALLOWED):
        raise ValueError(f"{addr}: the lab uses documentation ranges only")
    return a


@dataclass
class Client:
    """A client namespace; ``addrs4[0]``/``addrs6[0]`` are its primary
    addresses, the rest the caller's extra source addresses."""
    name: str
    ns: str
    mac: str
    addrs4: list[str] = field(default_factory=list)
    addrs6: list[str] = field(default_factory=list)
    iface: str = IFACE

    @property
    def addrs(self) -> list[str]:
        return self.addrs4 + self.addrs6


@dataclass
class Backend:
    """The service backend behind the node (``Lab(..., backend=True)``):
    like a Client, so the traffic helpers take either."""
    name: str
    ns: str
    mac: str = BACKEND_MAC
    addrs4: list[str] = field(default_factory=lambda: [BACKEND4])
    addrs6: list[str] = field(default_factory=lambda: [BACKEND6])
    iface: str = IFACE

    @property
    def addrs(self) -> list[str]:
        return self.addrs4 + self.addrs6


_OPEN: set[Lab] = set()


@atexit.register
def _close_leftovers() -> None:
    """Last resort for a lab its owner never closed (a normal interpreter exit)."""
    for lab in list(_OPEN):
        lab.close()


class Lab:
    """Build with ``Lab(extra_addrs)`` or ``Lab(clients=N)``; use as a context
    manager, or call ``close()`` (idempotent) yourself.

    ``extra_addrs[k]`` lists the extra source addresses of client k+1 (IPv4
    or IPv6, documentation ranges only); its length is the client count.
    ``backend=True`` adds the backend namespace and the NodePort DNAT
    (``lab.backend``, else None).
    """

    def __init__(self, extra_addrs: list[list[str]] | None = None, *, clients: int | None = None,
                 prefix: str | None = None, backend: bool = False):
        if extra_addrs is None:
            extra_addrs = [[] for _ in range(1 if clients is None else clients)]
        elif clients is not None and clients != len(extra_addrs):
            raise ValueError("clients= disagrees with len(extra_addrs)")
        if not 1 <= len(extra_addrs) <= MAX_CLIENTS:
            raise ValueError(f"1..{MAX_CLIENTS} clients")
        taken = {NODE4, NODE6} | {f"192.0.2.{10 * k}" for k in range(1, len(extra_addrs) + 1)} \
            | {str(ipaddress.ip_address(f"2001:db8::{10 * k}")) for k in range(1, len(extra_addrs) + 1)}
        if backend:
            if shutil.which("nft") is None:
                raise RuntimeError("backend=True needs nft (nftables) for the NodePort DNAT")
            # An extra address in the backend link's subnets would be routed
            # towards a client and towards the backend at once.
            for a in (a for addrs in extra_addrs for a in addrs):
                if any(_check_allowed(a) in ipaddress.ip_network(n) for n in (BACKEND_NET4, BACKEND_NET6)):
                    raise ValueError(f"{a}: in the backend link's subnet")
        for addrs in extra_addrs:
            for a in addrs:
                norm = str(_check_allowed(a))
                if norm in taken:
                    raise ValueError(f"{a}: already used in the lab")
                taken.add(norm)
        self.prefix = prefix if prefix is not None else self._fresh_prefix()
        if not PREFIX_RE.match(self.prefix):
            raise ValueError(f"prefix {self.prefix!r} is not hl + 4 hex digits")
        self.node_ns = f"{self.prefix}-node"
        self.sw_ns = f"{self.prefix}-sw"
        self.node_iface = IFACE
        self.node_mac = NODE_MAC
        self.node_addr4, self.node_addr6 = NODE4, NODE6
        self.node_ifindex: int | None = None
        self.clients: list[Client] = []
        self.backend: Backend | None = Backend("be", f"{self.prefix}-be") if backend else None
        self._made: list[str] = []  # namespaces this object created, in order
        _OPEN.add(self)
        try:
            self._build(extra_addrs)
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _fresh_prefix() -> str:
        existing = _netns_names()
        for _ in range(16):
            p = "hl" + os.urandom(2).hex()
            if not any(n.startswith(p + "-") for n in existing):
                return p
        raise RuntimeError("no free lab prefix after 16 tries")

    @property
    def namespaces(self) -> list[str]:
        """The namespaces this lab created and has not deleted yet."""
        return list(self._made)

    # --- building ---------------------------------------------------------

    def _netns(self, name: str) -> None:
        # `ip netns add` fails on an existing name, so we never adopt (and
        # later delete) a namespace somebody else made.
        run(["ip", "netns", "add", name])
        self._made.append(name)
        sysctls = [f"net.ipv6.conf.{scope}.{k}={v}" for scope in ("all", "default") for k, v in _V6_QUIET.items()]
        run(["sysctl", "-qw", *sysctls], ns=name)
        _ip_batch(name, ["link set lo up"])

    def _member(self, index: int, ns: str, member_mac: str) -> None:
        """Namespace ``ns`` with eth1, plugged into br0 by switch port p<index>."""
        self._netns(ns)
        port = f"p{index}"
        run(["ip", "-n", self.sw_ns, "link", "add", port, "address", mac(0xFE, 0x10 + index), "type", "veth",
             "peer", "name", IFACE, "address", member_mac, "netns", ns])
        # The peer was registered in `ns` (taking its defaults), but set the
        # knobs on the interface itself too: cheap, and independent of that.
        run(["sysctl", "-qw", *[f"net.ipv6.conf.{IFACE}.{k}={v}" for k, v in _V6_QUIET.items()]], ns=ns)
        _ip_batch(self.sw_ns, [f"link set {port} master br0 up"])
        run(["bridge", "-n", self.sw_ns, "fdb", "replace", member_mac, "dev", port, "master", "static"])
        _ip_batch(ns, [f"link set {IFACE} up"])

    def _build(self, extra_addrs: list[list[str]]) -> None:
        self._netns(self.sw_ns)
        # The switch carries no IP itself: no IPv6 on its ports means no MLD
        # or RS from them. Snooping off: multicast is simply flooded.
        run(["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"],
            ns=self.sw_ns)
        # With br_netfilter in the kernel, a new namespace's bridges hand IP
        # frames to iptables, which first validates (and silently drops)
        # malformed IP headers: the switch must stay a plain L2 wire, or
        # malformed test frames never reach the node. -e: the keys exist
        # only where br_netfilter does.
        run(["sysctl", "-e", "-qw", *[f"net.bridge.bridge-nf-call-{t}=0"
                                      for t in ("iptables", "ip6tables", "arptables")]], ns=self.sw_ns)
        _ip_batch(self.sw_ns, ["link add br0 type bridge stp_state 0 mcast_snooping 0", "link set br0 up"])
        # The members' own MLD/IGMP reports (sent for about a second after
        # their addresses appear) would reach the node and count in its
        # program's statistics: the switch does not forward them.
        if shutil.which("nft"):
            run(["nft", "-f", "-"], ns=self.sw_ns, input=_SWITCH_NFT)

        self._member(0, self.node_ns, NODE_MAC)
        for k, extra in enumerate(extra_addrs, start=1):
            c = Client(f"c{k}", f"{self.prefix}-c{k}", mac(k, 1), [f"192.0.2.{10 * k}"],
                       [str(ipaddress.ip_address(f"2001:db8::{10 * k}"))])
            for a in extra:
                (c.addrs6 if ":" in a else c.addrs4).append(str(ipaddress.ip_address(a)))
            self._member(k, c.ns, c.mac)
            self.clients.append(c)

        # Addresses, and the node's routes back to extra source addresses.
        _ip_batch(self.node_ns, [f"addr add {NODE4}/24 dev {IFACE}", f"addr add {NODE6}/64 dev {IFACE} nodad"])
        node_routes = []
        for c in self.clients:
            lines = [f"addr add {c.addrs4[0]}/24 dev {IFACE}", f"addr add {c.addrs6[0]}/64 dev {IFACE} nodad"]
            lines += [f"addr add {a}/32 dev {IFACE}" for a in c.addrs4[1:]]
            # Deprecated (preferred_lft 0): a socket bound to one still uses
            # it, but source selection keeps the primary, which otherwise
            # loses to an extra in 2001:db8::/64 by longest match (RFC 6724).
            lines += [f"addr add {a}/128 dev {IFACE} nodad preferred_lft 0" for a in c.addrs6[1:]]
            _ip_batch(c.ns, lines)
            node_routes += [f"route add {a}/32 via {c.addrs4[0]} dev {IFACE}" for a in c.addrs4[1:]]
            node_routes += [f"route add {a}/128 via {c.addrs6[0]} dev {IFACE}" for a in c.addrs6[1:]]
        _ip_batch(self.node_ns, node_routes)

        # Permanent neighbours for every lab address on every other member.
        owners = [(self.node_ns, NODE_MAC, [NODE4, NODE6])] + [(c.ns, c.mac, c.addrs) for c in self.clients]
        for ns, _, _ in owners:
            _ip_batch(ns, [f"neigh replace {a} lladdr {m} dev {IFACE} nud permanent"
                           for other, m, addrs in owners if other != ns for a in addrs])

        if self.backend is not None:
            self._build_backend(self.backend)

        out = run(["ip", "-n", self.node_ns, "-j", "link", "show", "dev", IFACE]).stdout
        self.node_ifindex = json.loads(out)[0]["ifindex"]

    def _build_backend(self, be: Backend) -> None:
        """The backend link, forwarding, the routes through the node, the DNAT."""
        self._netns(be.ns)
        run(["ip", "-n", self.node_ns, "link", "add", BACKEND_IFACE, "address", NODE_B_MAC, "type", "veth",
             "peer", "name", IFACE, "address", be.mac, "netns", be.ns])
        run(["sysctl", "-qw", *[f"net.ipv6.conf.{BACKEND_IFACE}.{k}={v}" for k, v in _V6_QUIET.items()]],
            ns=self.node_ns)
        run(["sysctl", "-qw", *[f"net.ipv6.conf.{IFACE}.{k}={v}" for k, v in _V6_QUIET.items()]], ns=be.ns)
        # A router, not a host: forwarding on (which also keeps accept_ra
        # off), and reverse-path filtering off whatever the host's defaults
        # are, so only the program under test ever drops a lab packet.
        run(["sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1",
             *[f"net.ipv4.conf.{scope}.rp_filter=0" for scope in ("all", "default", IFACE, BACKEND_IFACE)]],
            ns=self.node_ns)
        _ip_batch(self.node_ns, [
            f"addr add {NODE_B4}/24 dev {BACKEND_IFACE}",
            f"addr add {NODE_B6}/64 dev {BACKEND_IFACE} nodad",
            f"link set {BACKEND_IFACE} up",
            *[f"neigh replace {a} lladdr {be.mac} dev {BACKEND_IFACE} nud permanent" for a in be.addrs]])
        _ip_batch(be.ns, [
            f"addr add {BACKEND4}/24 dev {IFACE}",
            f"addr add {BACKEND6}/64 dev {IFACE} nodad",
            f"link set {IFACE} up",
            *[f"neigh replace {a} lladdr {NODE_B_MAC} dev {IFACE} nud permanent" for a in (NODE_B4, NODE_B6)],
            f"route add default via {NODE_B4} dev {IFACE}",
            f"route add default via {NODE_B6} dev {IFACE}"])
        for c in self.clients:
            _ip_batch(c.ns, [f"route add {BACKEND_NET4} via {NODE4} dev {IFACE}",
                             f"route add {BACKEND_NET6} via {NODE6} dev {IFACE}"])
        run(["nft", "-f", "-"], ns=self.node_ns, input=_NAT_NFT)

    # --- using ------------------------------------------------------------

    def exec(self, ns: str, argv: list[str], **kw) -> subprocess.CompletedProcess:
        """Run ``argv`` inside one of this lab's namespaces (``ip netns exec``),
        with a timeout (``timeout=``, default 30 s) and ``check=True`` by
        default; other keywords go to ``subprocess.run``."""
        if ns not in self._made:
            raise ValueError(f"{ns!r} is not a namespace of this lab")
        return run(argv, ns=ns, **kw)

    def close(self) -> None:
        """Delete every namespace this lab made (their veths go with them).
        Idempotent; raises only if a namespace would not go away."""
        _OPEN.discard(self)
        failed = []
        for name in reversed(self._made):
            res = run(["ip", "netns", "del", name], check=False)
            if res.returncode != 0 and name in _netns_names():
                failed.append(f"{name}: {res.stderr.strip()}")
        self._made.clear()
        if failed:
            raise RuntimeError("could not delete lab namespaces: " + "; ".join(failed))

    @staticmethod
    def destroy_by_prefix(prefix: str) -> list[str]:
        """Crash recovery for one known prefix: delete ``<prefix>-node``,
        ``<prefix>-sw``, ``<prefix>-be`` and ``<prefix>-c<N>``, nothing else.
        Returns the names deleted."""
        if not PREFIX_RE.match(prefix):
            raise ValueError(f"prefix {prefix!r} is not hl + 4 hex digits")
        mine = re.compile(rf"^{prefix}-(node|sw|be|c[0-9]+)$")
        gone = []
        for name in sorted(_netns_names()):
            if mine.match(name):
                run(["ip", "netns", "del", name], check=False)
                gone.append(name)
        return gone

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Lab({self.prefix}, clients={[c.name for c in self.clients]}, backend={self.backend is not None}, "
                f"open={bool(self._made)})")
