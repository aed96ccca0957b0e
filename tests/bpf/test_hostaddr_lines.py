"""The host's exact addresses, direct-mapped (hep_hostaddr_v1) in front of
the hep_local{4,6}_v1 tries: XDP tells an ingress packet for the host from a
forwarded one by them. With more addresses than lines, some share a line
and only the tries know them; every address must still count as the
host's, and no other may.

The policy denies the host's ingress TCP and forwards the rest, so the
reason says which way the kernel decided: "end-of-tier" for the host,
"forward-allow" for a forwarded packet.
"""

import ipaddress
import random
import sys

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from hepbpf.compiler import compile_policy
from hepbpf.loader import abi
from hepbpf.loader.datapath import load_image
from hepbpf.loader.encode import hostaddr_line, hostaddr_lines
from hepbpf.loader.mapnames import HOSTADDR

from ..cases import gnp, hep

pytestmark = pytest.mark.bpf

POLICY = hep() + gnp("deny-in", """
selector: all()
types: [Ingress]
ingress:
- action: Deny
  protocol: UDP
""")
PEER4, PEER6 = "198.51.100.7", "2001:db8:ffff::7"


def _syn(dst: str) -> bytes:
    ip = IP(src=PEER4, dst=dst) if ":" not in dst else IPv6(src=PEER6, dst=dst)
    return bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / ip / TCP(sport=40000, dport=8080, flags="S"))


def _reason(dp, dst) -> str:
    dp.forget_flows()  # a forward-allow tracks the flow: judge each packet anew
    return dp.run(_syn(str(dst)), 0).reason


def _host_nets(rnd: random.Random) -> list:
    v4 = [ipaddress.ip_network(f"203.0.113.{i}/32") for i in range(1, 255)]
    v4 += [ipaddress.ip_network(f"192.0.2.{i}/32") for i in range(1, 200)]
    v6 = [ipaddress.ip_network((0x20010DB8 << 96 | rnd.getrandbits(64), 128)) for _ in range(150)]
    return v4 + v6


def test_every_host_address_is_local_even_where_lines_collide():
    rnd = random.Random(7)
    nets = _host_nets(rnd)
    keys, values = hostaddr_lines(nets)
    lines = {hostaddr_line(n.network_address) for n in nets}
    placed = sum(1 for v in values if v[:4] != b"\0\0\0\0")
    assert placed == len(lines) < len(nets)  # both paths are taken below
    comp = compile_policy([("p.yaml", POLICY)], node="n1", iface="eth1")
    with load_image(comp.image, trace=True, local_nets=tuple(nets)) as dp:
        for n in nets:
            assert _reason(dp, n.network_address) == "end-of-tier", n
        strangers = [f"192.0.2.{i}" for i in range(200, 255)]
        strangers += [str(ipaddress.ip_address(0x20010DB8 << 96 | rnd.getrandbits(64))) for _ in range(50)]
        for a in strangers:
            assert _reason(dp, a) == "forward-allow", a


def test_a_line_alone_makes_its_address_local():
    """White box: the kernel reads the line Python computes (a hash that
    disagreed would still pass the test above, through the tries)."""
    comp = compile_policy([("p.yaml", POLICY)], node="n1", iface="eth1")
    with load_image(comp.image, trace=True, local_nets=()) as dp:
        m = dp.obj.map(HOSTADDR)
        for addr in (ipaddress.ip_address("192.0.2.77"), ipaddress.ip_address("2001:db8::77")):
            assert _reason(dp, addr) == "forward-allow"
            family = abi.const("HEP_FAMILY_V4" if addr.version == 4 else "HEP_FAMILY_V6")
            value = abi.pack("struct hep_hostaddr", {"family": family, "addr": list(addr.packed.ljust(16, b"\0"))})
            m.update(hostaddr_line(addr).to_bytes(4, sys.byteorder), value)
            assert _reason(dp, addr) == "end-of-tier"


def test_set_local_keeps_the_lines_with_the_tries():
    comp = compile_policy([("p.yaml", POLICY)], node="n1", iface="eth1")
    addr = ipaddress.ip_address("192.0.2.9")
    with load_image(comp.image, trace=True, local_nets=(ipaddress.ip_network(addr),)) as dp:
        assert _reason(dp, addr) == "end-of-tier"
        dp.set_local(addr, False)
        assert _reason(dp, addr) == "forward-allow"
        dp.set_local(addr, True)
        assert _reason(dp, addr) == "end-of-tier"
