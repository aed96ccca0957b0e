"""hepbpf's tc egress program on an interface (hepbpf.loader.tc): tcx links and
clsact filters, attach / atomic replace / query / detach, and nothing of
others disturbed.

Each test gets a fresh network namespace ``ht<4 hex>`` holding both ends of
a veth pair, and runs its body *inside* it: the fixture moves this thread
into the namespace with setns(2) and back afterwards. Only the network
namespace changes, so the host's bpffs at /sys/fs/bpf stays visible for the
link pins (``ip netns exec`` would hide it). No traffic is sent. Pins go to
a unique directory under /sys/fs/bpf; the namespace (and with it the veth,
its qdiscs and filters, and any tcx link on it) and the pin directory are
removed in teardown, even after a failure.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import secrets
import shutil
import socket
import struct
import subprocess
from pathlib import Path

import pytest

from hepbpf.loader import libbpf, tc
from hepbpf.loader.abi import bpf_dir
from hepbpf.loader.libbpf import BpfAttachType, BpfError, BpfObject, TcAttachPoint
from hepbpf.loader.mapnames import TC_PROGRAM, XDP_OBJECT

from ..conftest import IN_CI

pytestmark = [pytest.mark.bpf, pytest.mark.netns]

CLONE_NEWNET = 0x40000000

# Someone else's tc program: passes everything on (TC_ACT_UNSPEC / TCX_NEXT).
FOREIGN_C = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("tc")
int foreign_tc(struct __sk_buff *skb)
{
    return -1;
}

char LICENSE[] SEC("license") = "GPL";
"""


def _need(ok: bool, reason: str) -> None:
    """Skip without a prerequisite; under CI=true that is a failure."""
    if ok:
        return
    if IN_CI:
        pytest.fail(f"CI=true but this test cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


def _need_tcx() -> None:
    if not tc.tcx_supported():  # a property of the kernel (6.1 has none), not of the set-up
        pytest.skip("this kernel has no tcx (6.6+)")


def _run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=30).stdout


# --- fixtures --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def progs(tmp_path_factory):
    """hep_tc_egress loaded twice (the old and the new program of a
    replace) and a foreign tc program; yields their fds."""
    obj_path = bpf_dir() / XDP_OBJECT
    _need(obj_path.exists(), f"{obj_path} is not built (make -C bpf)")
    _need(shutil.which("clang") is not None, "needs clang to build the foreign test program")
    c = tmp_path_factory.mktemp("foreign") / "foreign.bpf.c"
    c.write_text(FOREIGN_C)
    multiarch = Path(f"/usr/include/{os.uname().machine}-linux-gnu")
    inc = ["-I", str(multiarch)] if multiarch.is_dir() else []
    subprocess.run(["clang", "-g", "-O2", "-target", "bpf", "-Wall", *inc, "-c", str(c), "-o",
                    str(c.with_suffix(".o"))], check=True, capture_output=True)
    with contextlib.ExitStack() as stack:
        objs = [stack.enter_context(BpfObject.open(p)) for p in (obj_path, obj_path, c.with_suffix(".o"))]
        for o in objs:
            o.load()
        old, new = (o.program(TC_PROGRAM) for o in objs[:2])
        yield {"old": old.fd, "new": new.fd, "foreign": objs[2].program("foreign_tc").fd,
               "old_id": old.info()["id"], "new_id": new.info()["id"]}


@pytest.fixture
def pin_dir():
    """A unique directory on the host bpffs; removed with whatever is in it."""
    root = Path("/sys/fs/bpf")
    with open("/proc/self/mountinfo") as f:
        mounted = any(line.split()[4] == str(root) and " - bpf " in line for line in f)
    _need(mounted, "needs a bpffs mounted at /sys/fs/bpf")
    d = root / f"hepbpf-test-{secrets.token_hex(4)}"
    try:
        yield d  # not created: attach() makes it, as it would on a first attach
    finally:
        if d.is_dir():
            for p in d.iterdir():
                with contextlib.suppress(OSError):
                    p.unlink()
            with contextlib.suppress(OSError):
                d.rmdir()


@contextlib.contextmanager
def _inside(ns: str):
    """This thread in network namespace ``ns``, and back."""
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        if libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns({ns})")
        try:
            yield
        finally:
            if libc.setns(home, CLONE_NEWNET) != 0:  # pragma: no cover - would strand the test process
                raise OSError(ctypes.get_errno(), "setns(back home)")
    finally:
        os.close(target)
        os.close(home)


class Veth:
    def __init__(self, ns: str):
        self.ns, self.name, self.peer = ns, f"{ns}a", f"{ns}b"
        self.ifindex = 0

    def tc(self, *args: str) -> str:
        return _run("tc", "-n", self.ns, *args)

    def filters(self) -> str:
        return self.tc("filter", "show", "dev", self.name, "ingress") + "--\n" + \
            self.tc("filter", "show", "dev", self.name, "egress")

    def qdiscs(self) -> str:
        return self.tc("qdisc", "show", "dev", self.name)


@pytest.fixture
def veth():
    """Both ends of a fresh veth pair in a fresh namespace; the test body
    runs inside that namespace."""
    _need(shutil.which("tc") is not None, "needs iproute2 (tc)")
    ns = f"ht{secrets.token_hex(2)}"
    v = Veth(ns)
    try:
        _run("ip", "netns", "add", ns)
        _run("ip", "-n", ns, "link", "add", v.name, "type", "veth", "peer", "name", v.peer)
        _run("ip", "-n", ns, "link", "set", v.name, "up")
        _run("ip", "-n", ns, "link", "set", v.peer, "up")
        with _inside(ns):
            v.ifindex = socket.if_nametoindex(v.name)
            yield v
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


def _chain(ifindex: int) -> list[int]:
    return libbpf.prog_query(ifindex, BpfAttachType.TCX_EGRESS)["prog_ids"]


def _revision(ifindex: int) -> int:
    return libbpf.prog_query(ifindex, BpfAttachType.TCX_EGRESS)["revision"]


class TcMonitor:
    """rtnetlink TC notifications (what `tc monitor` prints), for telling a
    replace in place from a delete followed by an add."""

    RTMGRP_TC = 0x8
    RTM_NEWTFILTER, RTM_DELTFILTER = 44, 45

    def __init__(self):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self.sock.bind((0, self.RTMGRP_TC))
        self.sock.settimeout(0.5)

    def events(self) -> list[int]:
        out = []
        with contextlib.suppress(socket.timeout):
            while True:
                data = self.sock.recv(65536)
                while len(data) >= 16:
                    length, kind = struct.unpack_from("=IH", data)
                    out.append(kind)
                    data = data[(length + 3) & ~3:]
        return out

    def close(self) -> None:
        self.sock.close()


# --- the probe ---------------------------------------------------------------------------


def test_tcx_probe_agrees_with_the_kernel_version():
    major, minor = (int(x) for x in os.uname().release.split(".")[:2])
    assert tc.tcx_supported() == ((major, minor) >= (6, 6))
    assert tc.tcx_supported() is tc.tcx_supported()  # probed once


# --- tcx -----------------------------------------------------------------------------------


def test_tcx_attach_query_replace_detach(veth, progs, pin_dir):
    _need_tcx()
    ifindex = veth.ifindex
    foreign = libbpf.link_create(progs["foreign"], ifindex, BpfAttachType.TCX_EGRESS)
    try:
        foreign_id = libbpf.prog_info(progs["foreign"])["id"]
        a = tc.attach(ifindex, progs["old"], pin_dir=pin_dir)
        assert (a.mechanism, a.prog_id, a.created_qdisc) == ("tcx", progs["old_id"], False)
        assert a.pin_path == str(pin_dir / tc.TCX_LINK_PIN) and Path(a.pin_path).exists()
        assert tc.query(ifindex) == tc.TcAttachment("tcx", ifindex, progs["old_id"], link_id=a.link_id)
        assert _chain(ifindex) == [foreign_id, progs["old_id"]]  # appended; the foreign one untouched
        assert "clsact" not in veth.qdiscs()

        # Atomic: one chain revision (a detach + attach would be two), same
        # link, same place in the chain, only the program differs.
        rev = _revision(ifindex)
        b = tc.replace(ifindex, progs["new"], pin_dir=pin_dir)
        assert (b.mechanism, b.link_id, b.prog_id, b.replaced) == ("tcx", a.link_id, progs["new_id"], True)
        assert _revision(ifindex) == rev + 1
        assert _chain(ifindex) == [foreign_id, progs["new_id"]]
        assert tc.query(ifindex).prog_id == progs["new_id"]

        # The swap is conditional on the old program: a stale expectation is refused.
        fd = libbpf.link_fd_by_id(a.link_id)
        try:
            with pytest.raises(BpfError) as ei:
                libbpf.link_update(fd, progs["old"], old_prog_fd=progs["old"])
            assert ei.value.errno == errno.EPERM
            info = libbpf.link_info(fd)
            assert (info["type"], info["ifindex"], info["attach_type"]) == \
                (libbpf.BpfLinkType.TCX, ifindex, BpfAttachType.TCX_EGRESS)
        finally:
            os.close(fd)

        notes: list[str] = []
        assert tc.detach(ifindex, pin_dir=pin_dir, notes=notes) is True
        assert not (pin_dir / tc.TCX_LINK_PIN).exists()
        assert tc.query(ifindex) is None
        assert _chain(ifindex) == [foreign_id]
        assert tc.detach(ifindex, pin_dir=pin_dir) is False
    finally:
        os.close(foreign)


def test_tcx_replace_and_detach_find_the_link_without_its_pin(veth, progs, pin_dir):
    """As from a mount namespace where the pin is out of sight: the link is
    held elsewhere (here: an fd), and found by its id."""
    _need_tcx()
    ifindex = veth.ifindex
    a = tc.attach(ifindex, progs["old"], pin_dir=pin_dir)
    holder = libbpf.link_fd_by_id(a.link_id)
    try:
        (pin_dir / tc.TCX_LINK_PIN).unlink()
        b = tc.replace(ifindex, progs["new"])
        assert (b.link_id, b.prog_id) == (a.link_id, progs["new_id"])
        assert tc.detach(ifindex) is True
        assert tc.query(ifindex) is None
        assert libbpf.link_info(holder)["ifindex"] == 0  # detached although still held
    finally:
        os.close(holder)


def test_tcx_replace_pins_a_missing_link_again(veth, progs, pin_dir):
    _need_tcx()
    a = tc.attach(veth.ifindex, progs["old"], pin_dir=pin_dir)
    holder = libbpf.link_fd_by_id(a.link_id)
    try:
        (pin_dir / tc.TCX_LINK_PIN).unlink()
        b = tc.replace(veth.ifindex, progs["new"], pin_dir=pin_dir)
        assert (pin_dir / tc.TCX_LINK_PIN).exists() and any("pinned it again" in n for n in b.notes)
    finally:
        os.close(holder)
    assert tc.query(veth.ifindex).link_id == a.link_id  # the pin alone holds it now
    assert tc.detach(veth.ifindex, pin_dir=pin_dir) is True


def test_tcx_without_a_pin_dir_falls_back_to_clsact(veth, progs):
    _need_tcx()
    a = tc.attach(veth.ifindex, progs["old"], pin_dir=None, mechanism="tcx")
    assert (a.mechanism, a.handle, a.priority, a.created_qdisc) == ("clsact", tc.TC_HANDLE, tc.TC_PRIORITY, True)
    assert any("pin directory" in n for n in a.notes)
    assert _chain(veth.ifindex) == []
    notes: list[str] = []
    assert tc.detach(veth.ifindex, created_qdisc=True, notes=notes) is True
    assert "clsact" not in veth.qdiscs()


# --- clsact --------------------------------------------------------------------------------


def test_clsact_attach_replace_detach(veth, progs):
    ifindex = veth.ifindex
    assert "clsact" not in veth.qdiscs()
    a = tc.attach(ifindex, progs["old"], pin_dir=None, mechanism="clsact")
    assert (a.mechanism, a.prog_id, a.created_qdisc) == ("clsact", progs["old_id"], True)
    assert (a.handle, a.priority) == (tc.TC_HANDLE, tc.TC_PRIORITY)
    shown = veth.filters()
    assert f"pref {tc.TC_PRIORITY} bpf" in shown and f"handle {tc.TC_HANDLE:#x} {TC_PROGRAM}" in shown
    assert "direct-action" in shown
    assert tc.query(ifindex) == tc.TcAttachment("clsact", ifindex, progs["old_id"], handle=tc.TC_HANDLE,
                                                priority=tc.TC_PRIORITY)

    # Atomic: the kernel announces the filter changed in place, never deleted.
    mon = TcMonitor()
    try:
        b = tc.replace(ifindex, progs["new"])
        events = mon.events()
    finally:
        mon.close()
    assert (b.mechanism, b.prog_id, b.handle, b.priority) == ("clsact", progs["new_id"], tc.TC_HANDLE,
                                                              tc.TC_PRIORITY)
    assert TcMonitor.RTM_NEWTFILTER in events and TcMonitor.RTM_DELTFILTER not in events
    assert tc.query(ifindex).prog_id == progs["new_id"]
    assert veth.filters().count(f"handle {tc.TC_HANDLE:#x}") == 1

    notes: list[str] = []
    assert tc.detach(ifindex, created_qdisc=a.created_qdisc, notes=notes) is True
    assert notes == [f"note: deleted the clsact qdisc hepbpf created on ifindex {ifindex}"]
    assert "clsact" not in veth.qdiscs()
    assert tc.query(ifindex) is None


def test_clsact_leaves_a_foreign_qdisc_and_filters_alone(veth, progs):
    veth.tc("qdisc", "add", "dev", veth.name, "clsact")
    for hook in ("ingress", "egress"):
        veth.tc("filter", "add", "dev", veth.name, hook, "protocol", "all", "pref", "100", "u32",
                "match", "u32", "0", "0")
    before = veth.filters()
    a = tc.attach(veth.ifindex, progs["old"], pin_dir=None, mechanism="clsact")
    assert a.created_qdisc is False
    assert tc.replace(veth.ifindex, progs["new"]).prog_id == progs["new_id"]
    notes: list[str] = []
    assert tc.detach(veth.ifindex, created_qdisc=a.created_qdisc, notes=notes) is True
    assert notes == []
    assert "clsact" in veth.qdiscs()
    assert veth.filters() == before


def test_clsact_keeps_its_own_qdisc_while_others_filter_on_it(veth, progs):
    a = tc.attach(veth.ifindex, progs["old"], pin_dir=None, mechanism="clsact")
    assert a.created_qdisc is True
    veth.tc("filter", "add", "dev", veth.name, "ingress", "protocol", "all", "pref", "7", "u32",
            "match", "u32", "0", "0")
    notes: list[str] = []
    assert tc.detach(veth.ifindex, created_qdisc=True, notes=notes) is True
    assert "clsact" in veth.qdiscs() and "pref 7 u32" in veth.filters()
    assert len(notes) == 1 and "kept the clsact qdisc" in notes[0] and "ingress pref 7 u32" in notes[0]


def test_a_foreign_filter_in_our_slot_is_refused_and_kept(veth, progs):
    assert libbpf.tc_hook_create(veth.ifindex, TcAttachPoint.EGRESS) is True
    foreign = libbpf.tc_attach(veth.ifindex, TcAttachPoint.EGRESS, progs["foreign"], handle=tc.TC_HANDLE,
                               priority=tc.TC_PRIORITY)
    assert tc.query(veth.ifindex) is None  # not our program
    with pytest.raises(tc.TcError, match="another filter"):
        tc.attach(veth.ifindex, progs["old"], pin_dir=None, mechanism="clsact")
    assert tc.detach(veth.ifindex, created_qdisc=True) is False  # foreign filter: nothing ours, qdisc kept
    assert libbpf.tc_query(veth.ifindex, TcAttachPoint.EGRESS, handle=tc.TC_HANDLE,
                           priority=tc.TC_PRIORITY) == foreign["prog_id"]


# --- both ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["tcx", "clsact"])
def test_attach_twice_is_refused(veth, progs, pin_dir, mechanism):
    if mechanism == "tcx":
        _need_tcx()
    a = tc.attach(veth.ifindex, progs["old"], pin_dir=pin_dir, mechanism=mechanism)
    assert a.mechanism == mechanism
    for again in ("tcx", "clsact"):
        with pytest.raises(tc.TcError, match="already on egress"):
            tc.attach(veth.ifindex, progs["new"], pin_dir=pin_dir, mechanism=again)
    assert tc.query_all(veth.ifindex) == [tc.query(veth.ifindex)]
    assert tc.query(veth.ifindex).prog_id == progs["old_id"]
    assert tc.detach(veth.ifindex, pin_dir=pin_dir, created_qdisc=a.created_qdisc) is True


def test_detach_or_replace_with_nothing_attached(veth, progs, pin_dir):
    assert tc.query(veth.ifindex) is None
    assert tc.detach(veth.ifindex) is False
    assert tc.detach(veth.ifindex, pin_dir=pin_dir) is False
    with pytest.raises(tc.TcError, match="nothing to replace"):
        tc.replace(veth.ifindex, progs["new"])
    veth.tc("qdisc", "add", "dev", veth.name, "clsact")  # someone's empty clsact: ours only if we say so
    assert tc.detach(veth.ifindex) is False
    assert "clsact" in veth.qdiscs()


def test_without_tcx_auto_uses_clsact_and_explicit_tcx_refuses(veth, progs, pin_dir, monkeypatch):
    """What a 6.1 kernel sees (the probe answers False there)."""
    monkeypatch.setattr(tc, "tcx_supported", lambda: False)
    with pytest.raises(tc.TcError, match="no tcx"):
        tc.attach(veth.ifindex, progs["old"], pin_dir=pin_dir, mechanism="tcx")
    a = tc.attach(veth.ifindex, progs["old"], pin_dir=pin_dir)
    assert (a.mechanism, a.created_qdisc) == ("clsact", True)
    assert any("no tcx" in n for n in a.notes)
    assert not (pin_dir / tc.TCX_LINK_PIN).exists()
    assert tc.replace(veth.ifindex, progs["new"], pin_dir=pin_dir).mechanism == "clsact"
    assert tc.detach(veth.ifindex, pin_dir=pin_dir, created_qdisc=True) is True
    assert "clsact" not in veth.qdiscs()


def test_replace_with_a_new_object_sharing_the_old_maps(veth, pin_dir):
    """The update path: the new object reuses the running one's maps
    (Map.reuse_fd before load), then its program replaces the old one."""
    _need_tcx()
    path = bpf_dir() / XDP_OBJECT
    _need(path.exists(), f"{path} is not built (make -C bpf)")
    with BpfObject.open(path) as old:
        old.load()
        a = tc.attach(veth.ifindex, old.program(TC_PROGRAM).fd, pin_dir=pin_dir)
        shared = [m for m in old.maps() if m.name.startswith("hep_")]
        assert shared
        with BpfObject.open(path) as new:
            for m in shared:
                with libbpf.Map.from_id(libbpf.map_info(m.fd)["id"]) as running:
                    new.map(m.name).reuse_fd(running.fd)
            new.load()
            for m in shared:
                assert libbpf.map_info(new.map(m.name).fd)["id"] == libbpf.map_info(m.fd)["id"]
            b = tc.replace(veth.ifindex, new.program(TC_PROGRAM).fd, pin_dir=pin_dir)
            assert b.link_id == a.link_id
            assert set(libbpf.prog_info(new.program(TC_PROGRAM).fd)["map_ids"]) >= \
                {libbpf.map_info(m.fd)["id"] for m in shared if m.name in _used_maps(old)}
            with pytest.raises(BpfError) as ei:  # only before load
                new.map(shared[0].name).reuse_fd(shared[0].fd)
            assert ei.value.errno == errno.EBUSY
    assert tc.detach(veth.ifindex, pin_dir=pin_dir) is True


def _used_maps(obj: BpfObject) -> set[str]:
    ids = set(libbpf.prog_info(obj.program(TC_PROGRAM).fd)["map_ids"])
    return {m.name for m in obj.maps() if libbpf.map_info(m.fd)["id"] in ids}
