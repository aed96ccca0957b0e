"""What the kernel says about an interface: its addresses (a HostEndpoint
with expectedIPs and no interfaceName governs the interface holding one of
them)."""

from __future__ import annotations

import ipaddress
import socket

from pyroute2 import IPRoute


def iface_addresses(iface: str) -> tuple:
    index = socket.if_nametoindex(iface)
    with IPRoute() as ipr:
        return tuple(ipaddress.ip_address(m.get_attr("IFA_ADDRESS")) for m in ipr.get_addr(index=index))


# Destinations the host receives besides its unicast addresses: limited
# broadcast and multicast (Linux delivers them locally, RTN_BROADCAST /
# RTN_MULTICAST).
ALWAYS_LOCAL = tuple(ipaddress.ip_network(n) for n in ("127.0.0.0/8", "255.255.255.255/32", "224.0.0.0/4", "ff00::/8"))


def local_nets() -> tuple:
    """Every address the host in this network namespace receives on: each
    interface's addresses (as /32 or /128) and IPv4 broadcast addresses,
    plus ALWAYS_LOCAL. An ingress packet to anything else is forwarded."""
    nets = set(ALWAYS_LOCAL)
    with IPRoute() as ipr:
        for m in ipr.get_addr():
            for attr in ("IFA_LOCAL", "IFA_ADDRESS", "IFA_BROADCAST"):
                value = m.get_attr(attr)
                if value:
                    addr = ipaddress.ip_address(value.split("%")[0])
                    # IFA_ADDRESS is the peer on point-to-point links; only
                    # IFA_LOCAL is ours there.
                    if attr == "IFA_ADDRESS" and m.get_attr("IFA_LOCAL") and addr.version == 4:
                        continue
                    nets.add(ipaddress.ip_network(addr))
    return tuple(sorted(nets, key=lambda n: (n.version, n)))
