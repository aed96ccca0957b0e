"""The cffi binding to the system libbpf (hepbpf.loader.libbpf), against the
real kernel: tiny XDP objects compiled here from C strings, then open/load,
maps, BPF_PROG_TEST_RUN, rodata, verifier failures, pins and XDP attach on a
veth pair of our own. Everything created is removed in teardown.

The struct-layout test needs no root: it compiles a host C program against
libbpf's headers and compares every offset with the cdef.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from hepbpf.loader import libbpf
from hepbpf.loader.libbpf import (
    BpfError,
    BpfMapType,
    BpfObject,
    BpfProgType,
    Map,
    MapUpdateFlags,
    Program,
    XdpAction,
)

GOOD_C = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

/* [0] packets seen, [1] packets dropped */
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 2);
    __type(key, __u32);
    __type(value, __u64);
} counters SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 8);
    __type(key, __u32);
    __type(value, __u64);
} scratch SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u32);
} pcpu SEC(".maps");

struct lpm_key { __u32 prefixlen; __u32 addr; };
struct {
    __uint(type, BPF_MAP_TYPE_LPM_TRIE);
    __uint(max_entries, 16);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __type(key, struct lpm_key);
    __type(value, __u32);
} lpm SEC(".maps");

const volatile __u32 knob = 0;  /* 1: drop every packet */

SEC("xdp")
int xdp_count(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    __u32 seen = 0, dropped = 1;
    __u64 *n = bpf_map_lookup_elem(&counters, &seen);
    __u32 *p = bpf_map_lookup_elem(&pcpu, &seen);

    if (n)
        __sync_fetch_and_add(n, 1);
    if (p)
        *p += 1;
    if (knob || (data + 1 <= end && *(__u8 *)data == 0xff)) {
        n = bpf_map_lookup_elem(&counters, &dropped);
        if (n)
            __sync_fetch_and_add(n, 1);
        return XDP_DROP;
    }
    return XDP_PASS;
}

SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
    return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
"""

# Reads the packet without a bounds check: the verifier must refuse it.
BAD_C = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int xdp_oob(struct xdp_md *ctx)
{
    __u8 *data = (void *)(long)ctx->data;
    return data[0] == 0xff ? XDP_DROP : XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
"""

FRAME_PASS = bytes(14) + bytes(50)          # first byte 0x00
FRAME_DROP = b"\xff" * 6 + bytes(8) + bytes(50)  # broadcast dst: first byte 0xff


def u32(n: int) -> bytes:
    return n.to_bytes(4, sys.byteorder)


def u64(n: int) -> bytes:
    return n.to_bytes(8, sys.byteorder)


def _include_flags() -> list[str]:
    # <linux/bpf.h> needs <asm/types.h>, which Debian keeps under the multiarch dir.
    multiarch = Path(f"/usr/include/{os.uname().machine}-linux-gnu")
    return ["-I", str(multiarch)] if multiarch.is_dir() else []


def _compile(src: str, out: Path) -> Path:
    c = out.with_suffix(".c")
    c.write_text(src)
    subprocess.run(["clang", "-g", "-O2", "-target", "bpf", "-Wall", *_include_flags(),
                    "-c", str(c), "-o", str(out)], check=True, capture_output=True, text=True)
    return out


@pytest.fixture(scope="module")
def objs(tmp_path_factory) -> dict[str, Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root (CAP_BPF, CAP_NET_ADMIN)")
    if shutil.which("clang") is None:
        pytest.skip("needs clang to build the test BPF objects")
    d = tmp_path_factory.mktemp("bpfobj")
    return {"good": _compile(GOOD_C, d / "good.bpf.o"), "bad": _compile(BAD_C, d / "bad.bpf.o")}


@pytest.fixture
def loaded(objs):
    with BpfObject.open(objs["good"]) as obj:
        obj.load()
        yield obj


# --- ABI: our cdef against the C headers (no root needed) -----------------------

LAYOUT_STRUCTS = [
    "struct bpf_object_open_opts", "struct bpf_xdp_attach_opts", "struct bpf_xdp_query_opts",
    "struct bpf_map_batch_opts", "struct bpf_test_run_opts", "struct bpf_prog_info", "struct bpf_map_info",
]


def test_cdef_layout_matches_libbpf_headers(tmp_path):
    if shutil.which("clang") is None or not Path("/usr/include/bpf/libbpf.h").exists():
        pytest.skip("needs clang and libbpf-dev headers")
    ffi = libbpf.ffi
    src = ["#include <stdio.h>", "#include <stddef.h>", "#include <bpf/libbpf.h>", "#include <bpf/bpf.h>",
           "#include <linux/bpf.h>", "int main(void) {"]
    expected = []
    for s in LAYOUT_STRUCTS:
        src.append(f'printf("{s} %zu\\n", sizeof({s}));')
        expected.append(f"{s} {ffi.sizeof(s)}")
        for name, f in ffi.typeof(s).fields:
            if not name or f.bitsize != -1:  # offsetof() cannot take bit-fields
                continue
            src.append(f'printf("{s}.{name} %zu %zu\\n", offsetof({s}, {name}), sizeof((({s} *)0)->{name}));')
            expected.append(f"{s}.{name} {f.offset} {ffi.sizeof(f.type)}")
    src.append("return 0; }")
    (tmp_path / "layout.c").write_text("\n".join(src))
    subprocess.run(["clang", *_include_flags(), "-o", str(tmp_path / "layout"), str(tmp_path / "layout.c")],
                   check=True, capture_output=True)
    got = subprocess.run([str(tmp_path / "layout")], check=True, capture_output=True, text=True).stdout
    assert got.splitlines() == expected


def test_print_callback_formats_libbpf_messages(tmp_path):
    # libbpf prints (through our callback) why it cannot open a non-ELF file.
    bogus = tmp_path / "not-elf.o"
    bogus.write_bytes(b"this is not an ELF file")
    with pytest.raises(BpfError) as ei:
        BpfObject.open(bogus)
    e = ei.value
    assert e.call.startswith("bpf_object__open_file(")
    assert e.errno
    assert any("elf" in line.lower() for line in e.libbpf_log), e.libbpf_log
    assert not any("%" in line for line in e.libbpf_log)  # formatted, not raw format strings
    assert str(e).startswith(e.call)


# --- open / load / maps ---------------------------------------------------------------


@pytest.mark.bpf
def test_open_load_and_introspect(objs):
    with BpfObject.open(objs["good"]) as obj:
        assert {p.name for p in obj.programs()} == {"xdp_count", "xdp_pass"}
        names = {m.name for m in obj.maps()}
        assert {"counters", "scratch", "pcpu", "lpm"} <= names
        # libbpf 1.1 reports internal maps by their kernel name, "<obj[:8]>.rodata".
        assert "good.rodata" in names
        assert obj.map(".rodata") is obj.map("good.rodata")
        counters = obj.map("counters")
        assert (counters.key_size, counters.value_size, counters.max_entries) == (4, 8, 2)
        assert counters.type == BpfMapType.ARRAY
        with pytest.raises(BpfError):
            counters.fd  # no fd before load
        counters.set_max_entries(4)
        obj.load(log_level=1)
        assert obj.loaded
        assert counters.fd >= 0
        with pytest.raises(BpfError) as ei:
            counters.set_max_entries(8)  # the map exists now
        assert ei.value.errno == errno.EBUSY
        assert "processed" in obj.program("xdp_count").log  # level-1 log kept per program

        prog = obj.program("xdp_count")
        info = prog.info()
        assert info["name"] == "xdp_count"
        assert info["type"] == BpfProgType.XDP
        assert len(info["tag"]) == 16 and info["id"] > 0
        assert info["verified_insns"] and info["verified_insns"] > 0
        assert info["jited_len"] > 0
        map_infos = {}
        for mid in info["map_ids"]:
            with Map.from_id(mid) as m:
                map_infos[m.name] = (m.type, m.max_entries)
        assert map_infos["counters"] == (BpfMapType.ARRAY, 4)
        with pytest.raises(KeyError):
            obj.map("nope")
        with pytest.raises(KeyError):
            obj.program("nope")
    with pytest.raises(BpfError):
        counters.fd  # the object is closed


@pytest.mark.bpf
def test_map_update_lookup_next_key_delete(loaded):
    scratch = loaded.map("scratch")
    assert list(scratch.keys()) == []
    assert scratch.lookup(u32(1)) is None
    scratch.update(u32(1), u64(10))
    scratch.update(u32(2), u64(20))
    assert scratch.lookup(u32(1)) == u64(10)
    assert sorted(scratch.keys()) == [u32(1), u32(2)]
    assert dict(scratch.items()) == {u32(1): u64(10), u32(2): u64(20)}
    with pytest.raises(BpfError) as ei:
        scratch.update(u32(1), u64(11), MapUpdateFlags.NOEXIST)
    assert ei.value.errno == errno.EEXIST
    assert scratch.delete(u32(1)) is True
    assert scratch.delete(u32(1)) is False
    assert list(scratch.keys()) == [u32(2)]
    with pytest.raises(ValueError):
        scratch.update(u32(3), b"short")  # would make the kernel read past our buffer

    counters = loaded.map("counters")
    assert list(counters.keys()) == [u32(0), u32(1)]
    with pytest.raises(BpfError) as ei:
        counters.delete(u32(0))  # array elements cannot be deleted
    assert ei.value.errno == errno.EINVAL
    assert "bpf_map_delete_elem(counters)" in str(ei.value)


@pytest.mark.bpf
def test_update_batch_and_fallback(loaded):
    scratch = loaded.map("scratch")  # hash: real batch op
    scratch.update_batch([u32(i) for i in range(5)], [u64(i * i) for i in range(5)])
    assert {int.from_bytes(k, sys.byteorder): int.from_bytes(v, sys.byteorder)
            for k, v in scratch.items()} == {i: i * i for i in range(5)}

    lpm = loaded.map("lpm")  # LPM trie: no batch op, one update per entry
    keys = [struct.pack("=I", 24) + bytes([10, 0, i, 0]) for i in range(3)]
    lpm.update_batch(keys, [u32(i) for i in range(3)])
    assert lpm.lookup(struct.pack("=I", 32) + bytes([10, 0, 2, 9])) == u32(2)


@pytest.mark.bpf
def test_test_run_verdicts_and_counters(loaded):
    prog = loaded.program("xdp_count")
    retval, out, duration = prog.test_run(FRAME_PASS)
    assert retval == XdpAction.PASS
    assert out == FRAME_PASS
    assert duration >= 0
    retval, _, _ = prog.test_run(FRAME_DROP, repeat=3)
    assert retval == XdpAction.DROP
    counters = loaded.map("counters")
    assert counters.lookup(u32(0)) == u64(4)
    assert counters.lookup(u32(1)) == u64(3)
    # Per-CPU values: one 8-byte slot per possible CPU, summed here.
    pcpu = loaded.map("pcpu")
    ncpu = libbpf.num_possible_cpus()
    raw = pcpu.lookup(u32(0))
    assert len(raw) == 8 * ncpu == pcpu.value_buffer_size
    assert sum(int.from_bytes(raw[i * 8:i * 8 + 4], sys.byteorder) for i in range(ncpu)) == 4


@pytest.mark.bpf
def test_rodata_between_open_and_load(objs):
    with BpfObject.open(objs["good"]) as obj:
        assert obj.rodata_size == 4
        assert obj.rodata == u32(0)
        with pytest.raises(ValueError):
            obj.set_rodata(u32(1) + u32(0))
        obj.set_rodata(u32(1))
        assert obj.rodata == u32(1)
        obj.load()
        assert obj.program("xdp_count").test_run(FRAME_PASS)[0] == XdpAction.DROP
        with pytest.raises(BpfError):
            obj.set_rodata(u32(0))  # frozen once loaded
    with BpfObject.open(objs["good"]) as obj:  # unchanged default: the verdict follows the packet
        obj.load()
        assert obj.program("xdp_count").test_run(FRAME_PASS)[0] == XdpAction.PASS


@pytest.mark.bpf
def test_verifier_rejection_raises_with_log(objs):
    with BpfObject.open(objs["bad"]) as obj:
        with pytest.raises(BpfError) as ei:
            obj.load()
    e = ei.value
    assert e.errno == errno.EACCES
    assert e.call == "bpf_object__load(bad.bpf.o)"
    assert "invalid access to packet" in e.verifier_log
    assert "invalid access to packet" in str(e)
    assert len(e.verifier_log.splitlines()) <= libbpf.LOG_TAIL_LINES + 1
    assert any("xdp_oob" in line for line in e.libbpf_log), e.libbpf_log
    assert isinstance(e, OSError)


@pytest.mark.bpf
def test_log_overflow_is_explained(objs):
    # An overflowing verifier log fails the load with ENOSPC even though the
    # program verified (kernels 6.4+ keep the log's tail, older its head).
    with BpfObject.open(objs["good"]) as obj:
        with pytest.raises(BpfError) as ei:
            obj.load(log_level=2, log_size=512)
    e = ei.value
    if e.errno != errno.ENOSPC:
        pytest.skip(f"this kernel reports a truncated log differently ({e.strerror})")
    assert "log_size" in e.hint
    assert e.verifier_log


# --- pins -------------------------------------------------------------------------------


def _is_bpffs(path: str) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path and " - bpf " in line for line in f)


@pytest.fixture
def bpffs_dir():
    """A private directory on a bpffs: under /sys/fs/bpf, or a bpffs mounted
    on a temp dir when there is none. Removed (and unmounted) afterwards."""
    mounted = None
    if _is_bpffs("/sys/fs/bpf"):
        d = tempfile.mkdtemp(prefix="hlb-", dir="/sys/fs/bpf")
    else:
        mounted = d = tempfile.mkdtemp(prefix="hlb-bpffs-")
        subprocess.run(["mount", "-t", "bpf", "bpf", d], check=True)
    try:
        yield Path(d)
    finally:
        for p in Path(d).iterdir():
            with contextlib.suppress(OSError):
                p.unlink()
        if mounted:
            subprocess.run(["umount", mounted], check=False)
        with contextlib.suppress(OSError):
            os.rmdir(d)


@pytest.mark.bpf
def test_pin_and_obj_get_round_trip(loaded, bpffs_dir):
    prog = loaded.program("xdp_count")
    counters = loaded.map("counters")
    counters.update(u32(0), u64(41))
    prog.pin(bpffs_dir / "prog")
    counters.pin(str(bpffs_dir / "counters"))

    with Map.from_pinned(bpffs_dir / "counters") as m:
        assert m.name == "counters" and m.fd != counters.fd
        assert m.lookup(u32(0)) == u64(41)
        m.update(u32(0), u64(42))
    assert counters.lookup(u32(0)) == u64(42)  # the same kernel map

    fd = libbpf.obj_get(bpffs_dir / "prog")
    try:
        assert libbpf.prog_info(fd)["id"] == prog.info()["id"]
    finally:
        os.close(fd)
    with Program.from_pinned(bpffs_dir / "prog") as p:
        assert p.name == "xdp_count"
        assert p.test_run(FRAME_DROP)[0] == XdpAction.DROP
    assert counters.lookup(u32(0)) == u64(43)

    with pytest.raises(BpfError) as ei:
        libbpf.obj_get(bpffs_dir / "missing")
    assert ei.value.errno == errno.ENOENT
    with pytest.raises(BpfError) as ei:
        prog.pin(bpffs_dir / "prog")  # already there
    assert ei.value.errno == errno.EEXIST


# --- XDP attach on our own veth pair ------------------------------------------------------


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def veth():
    """A veth pair (hlb-XXXXXXa in the root namespace, its peer moved into a
    fresh namespace hlb-XXXXXX); yields the root end's (name, ifindex)."""
    if shutil.which("ip") is None:
        pytest.skip("needs iproute2 (ip)")
    tag = f"hlb-{secrets.token_hex(3)}"
    a, b, ns = f"{tag}a", f"{tag}b", tag
    try:
        _ip("netns", "add", ns)
        _ip("link", "add", a, "type", "veth", "peer", "name", b)
        _ip("link", "set", b, "netns", ns)
        _ip("link", "set", a, "up")
        _ip("-n", ns, "link", "set", b, "up")
        yield a, socket.if_nametoindex(a)
    finally:
        subprocess.run(["ip", "link", "del", a], capture_output=True)  # takes the peer with it
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.mark.bpf
@pytest.mark.parametrize("mode", ["generic", "native"])
def test_xdp_attach_query_replace_detach(loaded, veth, mode):
    _, ifindex = veth
    first, second = loaded.program("xdp_count"), loaded.program("xdp_pass")
    first_id, second_id = first.info()["id"], second.info()["id"]
    try:
        assert libbpf.xdp_query(ifindex)["prog_id"] is None
        libbpf.xdp_attach(ifindex, first.fd, mode)
        state = libbpf.xdp_query(ifindex)
        assert (state["prog_id"], state["mode"]) == (first_id, mode)

        with pytest.raises(BpfError) as ei:  # no silent overwrite
            libbpf.xdp_attach(ifindex, second.fd, mode)
        assert ei.value.errno == errno.EBUSY

        other = "native" if mode == "generic" else "generic"
        with pytest.raises(BpfError) as ei:  # one mode at a time; the kernel says why
            libbpf.xdp_attach(ifindex, second.fd, other)
        assert ei.value.errno == errno.EEXIST
        assert any("XDP" in line for line in ei.value.libbpf_log), ei.value.libbpf_log

        libbpf.xdp_attach(ifindex, second.fd, mode, replace_fd=first.fd)  # atomic swap
        assert libbpf.xdp_query(ifindex)["prog_id"] == second_id

        with pytest.raises(BpfError) as ei:  # the expected program is no longer attached
            libbpf.xdp_attach(ifindex, first.fd, mode, replace_fd=first.fd)
        assert ei.value.errno == errno.EEXIST
        with pytest.raises(BpfError) as ei:
            libbpf.xdp_detach(ifindex, mode, expected_fd=first.fd)
        assert ei.value.errno == errno.EEXIST
        assert libbpf.xdp_query(ifindex)["prog_id"] == second_id

        libbpf.xdp_detach(ifindex, mode, expected_fd=second.fd)
        assert libbpf.xdp_query(ifindex) == {"prog_id": None, "mode": None, "drv_prog_id": None,
                                             "skb_prog_id": None, "hw_prog_id": None}
    finally:
        for m in ("generic", "native"):  # the veth teardown would drop it too; be explicit
            with contextlib.suppress(BpfError):
                libbpf.xdp_detach(ifindex, m)


@pytest.mark.bpf
def test_xdp_replace_when_old_program_is_fd_0(loaded, veth):
    """libbpf 1.1 reads old_prog_fd == 0 as "not set"; the binding must not."""
    _, ifindex = veth
    first, second = loaded.program("xdp_count"), loaded.program("xdp_pass")
    saved_stdin = os.dup(0)
    try:
        libbpf.xdp_attach(ifindex, first.fd, "generic")
        os.dup2(first.fd, 0)
        libbpf.xdp_attach(ifindex, second.fd, "generic", replace_fd=0)
        assert libbpf.xdp_query(ifindex)["prog_id"] == second.info()["id"]
    finally:
        os.dup2(saved_stdin, 0)
        os.close(saved_stdin)
        with contextlib.suppress(BpfError):
            libbpf.xdp_detach(ifindex, "generic")


@pytest.mark.bpf
def test_xdp_query_unknown_ifindex():
    with pytest.raises(BpfError) as ei:
        libbpf.xdp_query(0x7FFFFFF0)
    assert ei.value.errno == errno.ENODEV


@pytest.mark.bpf
def test_reload_is_refused_with_a_reason(loaded):
    with pytest.raises(BpfError) as ei:
        loaded.load()
    assert "open it again" in str(ei.value)


@pytest.mark.bpf
def test_fd_by_id_round_trip(loaded):
    prog = loaded.program("xdp_count")
    fd = libbpf.prog_fd_by_id(prog.info()["id"])
    try:
        assert libbpf.prog_info(fd)["name"] == "xdp_count"
    finally:
        os.close(fd)
    mid = libbpf.map_info(loaded.map("counters").fd)["id"]
    fd = libbpf.map_fd_by_id(mid)
    try:
        assert libbpf.map_info(fd)["name"] == "counters"
    finally:
        os.close(fd)
    with pytest.raises(BpfError) as ei:
        libbpf.prog_fd_by_id(0xFFFFFFF0)
    assert ei.value.errno == errno.ENOENT
