"""netparse.networks, the reader of a network set's whole list, gives what
netparse.network gives entry by entry: the same objects (type, value,
attributes, hosts) and the same errors."""

import ipaddress
import random

from hepbpf.compiler import netparse


def _one(text: str):
    try:
        return netparse.networks([text])[0]
    except ValueError as e:
        return type(e), str(e)


def _reference(text: str):
    try:
        return netparse.network(text)
    except ValueError as e:
        return type(e), str(e)


def _texts() -> list[str]:
    r = random.Random(6)
    texts = ["10.0.0.0/8", "192.0.2.1", "0.0.0.0/0", "1.2.3.4/31", "1.2.3.4/32", "255.255.255.255/32", "::/0",
             "2001:db8::/32", "10.0.0.0/255.0.0.0", "10.0.0.0/08", "010.0.0.1", "1.2.3.4/33", "1.2.3.4/", "1.2.3",
             "1..2.3", "1.2.3.4.5", "256.0.0.1", "+1.2.3.4", "1.2.3.-4", " 1.2.3.4", "1.2.3.4 ", "1_0.0.0.1",
             "\u0661.2.3.4", "1.2.3.4/+8", "1.2.3.4/ 8", "1.2.3.4/3_2", "1.2.3.4/32/1", "", "/", "::ffff:1.2.3.4"]
    for _ in range(3000):
        t = r.choice(texts)
        for _ in range(r.randint(0, 2)):
            i = r.randint(0, len(t))
            t = t[:i] + r.choice("0123456789:./ ") + t[i + 1:] if r.random() < 0.5 else t[:i] + t[i + 1:]
        texts.append(t)
    for _ in range(3000):
        plen = r.choice((0, 1, 8, 16, 24, 30, 31, 32, None))
        addr = str(ipaddress.IPv4Address(r.getrandbits(32) >> r.choice((0, 8, 24))))
        texts.append(addr if plen is None else f"{addr}/{plen}")
    return texts


def test_each_entry_reads_as_network_reads_it():
    for t in _texts():
        got, want = _one(t), _reference(t)
        assert got == want, t
        if isinstance(want, ipaddress.IPv4Network | ipaddress.IPv6Network):
            assert type(got) is type(want) and hash(got) == hash(want) and str(got) == str(want), t
            assert vars(got).keys() == vars(want).keys(), t
            assert all(getattr(got, k) == getattr(want, k) for k in vars(want) if k != "hosts"), t
            assert type(got.network_address) is type(want.network_address), t
            if want.num_addresses <= 4:
                assert list(got.hosts()) == list(want.hosts()), t


def test_a_whole_list_reads_as_its_entries():
    texts = [t for t in _texts() if not isinstance(_reference(t), tuple)]
    assert netparse.networks(texts) == [netparse.network(t) for t in texts]
