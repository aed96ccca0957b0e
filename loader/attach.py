"""Attach, replace, detach and inspect hepbpf on an interface.

Model: XDP is attached through netlink (it outlives this process, like
`ip link set xdp`), and the program and maps are pinned under
``<bpffs>/hepbpf/[netns-<inode>/]<iface>/`` so later commands find them.
Replacing a policy loads a complete new object and swaps it in with
XDP_FLAGS_REPLACE, so a packet sees the old policy or the new one, never a
mix. The interface's XDP attachment, not the pins, is the truth: status
and detach work even where the pins are gone.

Network namespaces: `ip netns exec` gives each command a private mount
namespace with a fresh /sys and no bpffs, and whatever it mounts is gone
when it exits. So pins go to the host's bpffs when it is reachable (through
/proc/1/root), under a directory named for the network namespace, so two
namespaces with an `eth1` each never collide. Only if no persistent bpffs is
reachable do we mount one for this command, and say so.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from hepbpf.compiler import Compiled
from hepbpf.compiler.mapimage import CHAIN_INGRESS, CHAIN_NAMES
from hepbpf.compiler.reasons import REASON_NAMES

from . import libbpf
from .datapath import load_image, read_stats
from .mapnames import ALL_MAPS, REASON_STATS, RULE_STATS, XDP_PROGRAM

STATE_ROOT = Path("/run/hepbpf")


class AttachError(RuntimeError):
    pass


@dataclass(slots=True)
class AttachResult:
    mode: str
    prog_id: int
    pin_dir: str
    replaced: bool
    notes: list[str] = field(default_factory=list)


def _mount_type(path: str, mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """The filesystem type mounted at ``path`` (the last, topmost mount)."""
    kind = None
    try:
        with open(mountinfo) as f:
            for line in f:
                fields = line.split()
                if fields[4] == path:
                    kind = fields[fields.index("-") + 1]
    except OSError:
        return None
    return kind


def _is_bpffs(path: str) -> bool:
    return _mount_type(os.path.realpath(path)) == "bpf"


def netns_key() -> str:
    """'' in the initial network namespace, else 'netns-<inode>'."""
    mine = os.stat("/proc/self/ns/net").st_ino
    try:
        init = os.stat("/proc/1/ns/net").st_ino
    except OSError:
        init = None
    return "" if mine == init else f"netns-{mine}"


def bpffs_root(notes: list[str] | None = None) -> Path:
    """A bpffs for our pins, persistent if we can reach one (see module
    docstring): /sys/fs/bpf if it is a bpffs here, else the host's through
    /proc/1/root (needs ptrace rights on PID 1), else one we mount for this
    command only."""
    if _is_bpffs("/sys/fs/bpf"):
        return Path("/sys/fs/bpf")
    host = Path("/proc/1/root/sys/fs/bpf")
    if netns_key() and _host_is_bpffs():
        try:
            (host / ".").stat()
            return host
        except OSError:
            pass  # PID 1's root is out of reach (containers, sandboxes)
    os.makedirs("/sys/fs/bpf", exist_ok=True)
    if subprocess.run(["mount", "-t", "bpf", "bpf", "/sys/fs/bpf"], capture_output=True).returncode != 0:
        raise AttachError("no bpffs at /sys/fs/bpf and mounting one failed")
    if notes is not None and netns_key():
        notes.append("note: no persistent bpffs is reachable from this mount namespace, so the pins "
                     "last only as long as this command; enforcement does not depend on them "
                     "(status and detach find the program through the interface)")
    return Path("/sys/fs/bpf")


def _host_is_bpffs() -> bool:
    return _mount_type("/sys/fs/bpf", "/proc/1/mountinfo") == "bpf"


def pin_name(iface: str) -> str:
    """bpffs rejects '.' in names (it reserves them), and interface names
    may hold dots (eth0.100); ':' never appears in an interface name."""
    return iface.replace(".", ":")


def pin_dir(iface: str, root: Path | None = None) -> Path:
    root = root or bpffs_root()
    key = netns_key()
    base = root / "hepbpf" / key if key else root / "hepbpf"
    return base / pin_name(iface)


def state_path(iface: str) -> Path:
    key = netns_key() or "init"
    return STATE_ROOT / key / f"{iface}.json"


def _query(ifindex: int) -> dict:
    return libbpf.xdp_query(ifindex)


def _ours(prog_id: int) -> bool:
    fd = libbpf.prog_fd_by_id(prog_id)
    try:
        return libbpf.prog_info(fd)["name"] == XDP_PROGRAM
    finally:
        os.close(fd)


def attach(iface: str, compiled: Compiled, *, mode: str, node: str, sources: list[str]) -> AttachResult:
    ifindex = socket.if_nametoindex(iface)
    notes: list[str] = []
    current = _query(ifindex)
    replace_id = None
    if current["prog_id"]:
        if not _ours(current["prog_id"]):
            raise AttachError(f"{iface} already has another XDP program (id {current['prog_id']}); "
                              f"hepbpf will not replace it")
        replace_id = current["prog_id"]
        if mode != "auto" and mode != current["mode"]:
            raise AttachError(f"{iface} runs hepbpf in {current['mode']} mode; detach first to change "
                              f"the mode to {mode}")
        mode = current["mode"]
    root = bpffs_root(notes)
    pins = pin_dir(iface, root)
    staging = pins.with_name(pins.name + "-new")
    dp = load_image(compiled.image)
    with contextlib.ExitStack() as undo:
        undo.callback(dp.close)
        # Pin first: if pinning fails, nothing has been attached.
        _remove_pins(staging)
        undo.callback(_remove_pins, staging)
        _pin(dp, staging)
        if replace_id is not None:
            old_fd = libbpf.prog_fd_by_id(replace_id)
            undo.callback(os.close, old_fd)
            libbpf.xdp_attach(ifindex, dp.prog_fd, mode, replace_fd=old_fd)
            got = mode
        else:
            got = _attach_new(ifindex, dp.prog_fd, mode, notes)
        prog_id = libbpf.prog_info(dp.prog_fd)["id"]
        _remove_pins(pins, prune=False)
        os.rename(staging, pins)
        _write_state(iface, ifindex, got, prog_id, pins, compiled, node, sources)
    return AttachResult(got, prog_id, str(pins), replace_id is not None, notes)


def _attach_new(ifindex: int, fd: int, mode: str, notes: list[str]) -> str:
    if mode != "auto":
        libbpf.xdp_attach(ifindex, fd, mode)
        return mode
    try:
        libbpf.xdp_attach(ifindex, fd, "native")
        return "native"
    except libbpf.BpfError as e:
        notes.append(f"note: native XDP failed ({e.strerror or e}); attached in generic (skb) mode")
        libbpf.xdp_attach(ifindex, fd, "generic")
        return "generic"


def _pin(dp, where: Path) -> None:
    where.mkdir(parents=True, exist_ok=True)
    dp.prog.pin(str(where / "prog_xdp"))
    for name in ALL_MAPS:
        dp.obj.map(name).pin(str(where / name))


def _remove_pins(pins: Path, prune: bool = True) -> None:
    if pins.is_dir():
        for p in pins.iterdir():
            p.unlink()
        pins.rmdir()
    if not prune:
        return
    # Leave no empty hepbpf/ or netns-*/ directories behind.
    parent = pins.parent
    while parent.name in ("hepbpf",) or parent.name.startswith("netns-"):
        if not parent.is_dir() or any(parent.iterdir()):
            break
        parent.rmdir()
        parent = parent.parent


def _write_state(iface, ifindex, mode, prog_id, pins, compiled: Compiled, node, sources) -> None:
    view = compiled.views[CHAIN_INGRESS]
    img = compiled.image
    state = {
        "iface": iface,
        "ifindex": ifindex,
        "netns": netns_key() or None,
        "mode": mode,
        "prog_id": prog_id,
        "pin_dir": str(pins),
        "node": node,
        "sources": [os.path.abspath(s) if s != "-" else "-" for s in sources],
        "host_endpoint": view.hep.name if view.hep else None,
        "attached_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "slot_stride": img.slot_stride,
        "slots": [
            {"chain": CHAIN_NAMES[s.chain], "slot": s.slot, "action": s.action, "reason": s.reason_name,
             "stage": s.stage, "tier": s.tier, "policy": s.policy, "rule": s.rule}
            for s in img.slots
        ],
    }
    path = state_path(iface)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1))
    os.replace(tmp, path)


def _read_state(iface: str) -> dict | None:
    try:
        return json.loads(state_path(iface).read_text())
    except (OSError, ValueError):
        return None


def detach(iface: str) -> bool:
    """Remove hepbpf from ``iface``: the XDP program, pins, state. Returns
    False if it was not attached. Never touches another program."""
    removed = False
    try:
        ifindex = socket.if_nametoindex(iface)
    except OSError:
        ifindex = None
    if ifindex is not None:
        current = _query(ifindex)
        if current["prog_id"] and _ours(current["prog_id"]):
            fd = libbpf.prog_fd_by_id(current["prog_id"])
            try:
                libbpf.xdp_detach(ifindex, current["mode"], expected_fd=fd)
            finally:
                os.close(fd)
            removed = True
    with contextlib.suppress(AttachError):
        pins = pin_dir(iface)
        if pins.exists():
            _remove_pins(pins)
            removed = True
    with contextlib.suppress(FileNotFoundError):
        state_path(iface).unlink()
        removed = True
    return removed


def _ifaces_with_state() -> list[str]:
    d = state_path("x").parent
    return sorted(p.stem for p in d.glob("*.json")) if d.is_dir() else []


def status(iface: str | None = None) -> list[dict]:
    """What is attached (the interface is the truth; /run state adds names)."""
    out = []
    for name in [iface] if iface else _ifaces_with_state():
        try:
            current = _query(socket.if_nametoindex(name))
        except OSError:
            current = {"prog_id": None, "mode": None}
        st = _read_state(name)
        if st is None:
            if not (current["prog_id"] and _ours(current["prog_id"])):
                continue
            # Attached, but the state under /run is gone (e.g. a reboot of
            # /run without one of the interface): report what the kernel knows.
            st = {"iface": name, "mode": current["mode"], "prog_id": current["prog_id"], "node": None,
                  "host_endpoint": None, "pin_dir": None, "attached_at": None, "slots": [],
                  "state": "missing"}
        st["attached"] = bool(current["prog_id"]) and current["prog_id"] == st["prog_id"]
        st.update(_counters(st))
        st.pop("slots", None)
        out.append(st)
    return out


def _counters(st: dict) -> dict:
    """Per-reason and per-slot counters, read through the program's map ids
    (so they work even where the pins are not visible)."""
    reasons = {REASON_NAMES[r]: {"packets": 0, "bytes": 0} for r in range(len(REASON_NAMES))}
    rules = []
    if not st.get("attached"):
        return {"reasons": reasons, "rules": rules}
    maps = _maps_of(st["prog_id"])
    try:
        for r, (pk, by) in enumerate(read_stats(maps[REASON_STATS], len(REASON_NAMES))):
            reasons[REASON_NAMES[r]] = {"packets": pk, "bytes": by}
        ingress = [s for s in st["slots"] if s["chain"] == "ingress"]
        stats = read_stats(maps[RULE_STATS], len(ingress))
        for s, (pk, by) in zip(ingress, stats):
            rules.append({**s, "packets": pk, "bytes": by})
    finally:
        for m in maps.values():
            m.close()
    return {"reasons": reasons, "rules": rules}


def _maps_of(prog_id: int) -> dict:
    fd = libbpf.prog_fd_by_id(prog_id)
    try:
        ids = libbpf.prog_info(fd)["map_ids"]
    finally:
        os.close(fd)
    out = {}
    for mid in ids:
        m = libbpf.Map.from_id(mid)
        if m.name in (REASON_STATS, RULE_STATS):
            out[m.name] = m
        else:
            m.close()
    return out

