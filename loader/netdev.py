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
