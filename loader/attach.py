"""Attach, replace, detach and inspect hepbpf on an interface.

Model: one object, two programs. XDP (ingress) is attached through netlink
(it outlives this process, like `ip link set xdp`); the tc program (egress)
through a tcx link pinned with the rest, or a clsact filter where no
persistent bpffs is reachable or the kernel has no tcx (loader/tc.py). The
programs and maps are pinned under ``<bpffs>/hepbpf/[netns-<inode>/]<iface>/``
so later commands find them. Replacing a policy updates the loaded object
in place when the new policy fits it (datapath.Generations: the changed
entries of the generation no packet reads, then one switch; the record of
what each generation holds is kept beside the state, ``<iface>.gen``).
Otherwise it loads a complete new object that shares the old one's
conntrack table (so established flows stay established) and swaps it in:
XDP with XDP_FLAGS_REPLACE, tc with a link update or an in-place filter
replace; each hook sees the old policy or the new one, never a mix, and if
the second swap fails the first is undone.
The interface's attachments, not the pins, are the truth: status and
detach work even where the pins are gone.

Network namespaces: `ip netns exec` gives each command a private mount
namespace with a fresh /sys and no bpffs, and whatever it mounts is gone
when it exits. So pins go to the host's bpffs when it is reachable (through
/proc/1/root), under a directory named for the network namespace, so two
namespaces with an `eth1` each never collide. Only if no persistent bpffs is
reachable do we mount one for this command, and say so. A bpffs mounted at
/run/hepbpf/bpffs in the host's mount namespace is visible there too (`ip
netns exec` remounts only /sys), so labs and tests mount one there.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hepbpf.compiler import Compiled
from hepbpf.compiler.alloc import gc_paused
from hepbpf.compiler.mapimage import CHAIN_INGRESS, CHAIN_NAMES, SLOT_AUDIT
from hepbpf.compiler.reasons import REASON_NAMES

from . import conntrack, libbpf, tc
from .datapath import Datapath, Generations, UpdateResult, fit_problem, load_image
from .encode import (CT_DEFAULT_SIZE, Capacity, EventSettings, dump_generations, hostaddr_lines, load_generations,
                     local_key)
from .events import event_totals, read_ev_stats
from .mapnames import (ALL_MAPS, CT, CT_STATS, CTSEEN, EV_STATS, EVENTS, GEN, HOSTADDR, LOCAL4, LOCAL6, REASON_STATS,
                       RULE_STATS, SYNC, UPDATE_MAPS, XDP_PROGRAM)
from .netdev import local_nets
from .percpu import read_stats

STATE_ROOT = Path("/run/hepbpf")
SHARED_BPFFS = Path("/run/hepbpf/bpffs")


class AttachError(RuntimeError):
    pass


@dataclass(slots=True)
class AttachResult:
    mode: str
    prog_id: int
    pin_dir: str
    replaced: bool
    notes: list[str] = field(default_factory=list)
    tc_mechanism: str | None = None
    tc_prog_id: int | None = None
    update: UpdateResult | None = None  # what changed, how, how long (also for a reload)


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
    docstring): /sys/fs/bpf if it is a bpffs here, else /run/hepbpf/bpffs,
    else the host's through /proc/1/root (needs ptrace rights on PID 1),
    else one we mount for this command only (``is_persistent`` tells)."""
    if _is_bpffs("/sys/fs/bpf"):
        return Path("/sys/fs/bpf")
    if _is_bpffs(str(SHARED_BPFFS)):
        return SHARED_BPFFS
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
    _PRIVATE_MOUNTS.add("/sys/fs/bpf")
    if notes is not None and netns_key():
        notes.append("note: no persistent bpffs is reachable from this mount namespace, so the pins "
                     "last only as long as this command; enforcement does not depend on them "
                     "(status and detach find the programs through the interface; egress uses clsact)")
    return Path("/sys/fs/bpf")


_PRIVATE_MOUNTS: set[str] = set()


def is_persistent(root: Path) -> bool:
    """Whether pins under ``root`` outlive this command."""
    return str(root) not in _PRIVATE_MOUNTS


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


def attach(iface: str, compiled: Compiled, *, mode: str, node: str, sources: list[str],
           ct_size: int = CT_DEFAULT_SIZE, tc_mechanism: str = "auto", audit: bool = False,
           events: EventSettings | None = None, inputs: dict | None = None) -> AttachResult:
    """``audit``: drop nothing, report would-be drops. ``events``: what to
    report through the event ring (default: Log records and drops).
    ``inputs``: what re-creates this attachment (policy texts and options),
    kept for a rollback to it (see loader/confirm.py)."""
    events = events or EventSettings()
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
    old_tc = tc.query(ifindex)
    t0 = time.monotonic()
    reload_reason = None
    if replace_id is not None:
        res, reload_reason = _update_in_place(iface, replace_id, compiled, ct_size=ct_size, events=events,
                                              audit=audit, t0=t0)
        if res is not None:
            st = read_state(iface) or {}
            _write_state(iface, ifindex, mode, replace_id, Path(st.get("pin_dir") or pin_dir(iface)), compiled,
                         node, sources, tc={"mechanism": st.get("tc_mechanism"), "prog_id": st.get("tc_prog_id"),
                                            "link_id": st.get("tc_link_id"),
                                            "created_qdisc": st.get("tc_created_qdisc", False)},
                         extra={"audit": audit, "event_settings": asdict(events), "generation": res.generation,
                                "slot_stride": st.get("slot_stride"), "serial": st.get("serial", 0) + 1,
                                "attached_at": st.get("attached_at"),
                                "updated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
            if inputs is not None:
                _write_json(side_path(iface, "inputs"), inputs)
            remove_side(iface, "rollback")
            return AttachResult(mode, replace_id, st.get("pin_dir") or "", True, notes, st.get("tc_mechanism"),
                                st.get("tc_prog_id"), res)
    root = bpffs_root(notes)
    pins = pin_dir(iface, root)
    staging = pins.with_name(pins.name + "-new")
    # fds: closed however this ends; undo: run only if attaching fails.
    with contextlib.ExitStack() as fds, contextlib.ExitStack() as undo:
        reuse = {}
        if replace_id is not None:
            # Keep the conntrack table (established flows stay established)
            # and the event ring (a running `hepbpf log` goes on).
            # The conntrack pre-filter goes with the table it stands for:
            # a fresh one beside the old table would hide its flows.
            old = maps_of(replace_id, (CT, CTSEEN, EVENTS))
            for m in old.values():
                fds.callback(m.close)
            if CT in old:
                if old[CT].max_entries == ct_size:
                    reuse[CT] = old[CT].fd
                    if CTSEEN in old:
                        reuse[CTSEEN] = old[CTSEEN].fd
                else:
                    notes.append(f"note: conntrack table resized to {ct_size}: known flows start over")
            if EVENTS in old and old[EVENTS].max_entries == events.buffer:
                reuse[EVENTS] = old[EVENTS].fd
        # The standby generation is filled once the program enforces (below).
        dp = load_image(compiled.image, local_nets=local_nets(), ct_size=ct_size, reuse=reuse, events=events,
                        audit=audit, standby=False)
        fds.callback(dp.close)
        restamp = CT in reuse and CTSEEN not in reuse  # from an object without the pre-filter
        if restamp:
            conntrack.restamp(dp.ct_map(), dp.obj.map(CTSEEN))
        # Pin first: if pinning fails, nothing has been attached.
        _remove_pins(staging)
        undo.callback(_remove_pins, staging)
        _pin(dp, staging)
        if replace_id is not None:
            old_fd = libbpf.prog_fd_by_id(replace_id)
            fds.callback(os.close, old_fd)
            libbpf.xdp_attach(ifindex, dp.prog_fd, mode, replace_fd=old_fd)
            got = mode
            # If the tc swap below fails, the old policy keeps enforcing.
            undo.callback(libbpf.xdp_attach, ifindex, old_fd, mode, replace_fd=dp.prog_fd)
        else:
            got = _attach_new(ifindex, dp.prog_fd, mode, notes)
            undo.callback(libbpf.xdp_detach, ifindex, got, expected_fd=dp.prog_fd)
        # tcx links die with their pins, so only pin one where pins last.
        tc_pins = staging if is_persistent(root) else None
        if old_tc is not None:
            eg = tc.replace(ifindex, dp.tc_prog.fd, pin_dir=tc_pins)
            created_qdisc = (read_state(iface) or {}).get("tc_created_qdisc", False)
        else:
            eg = tc.attach(ifindex, dp.tc_prog.fd, pin_dir=tc_pins, mechanism=tc_mechanism)
            created_qdisc = eg.created_qdisc
        notes.extend(eg.notes)
        # Before committing: the first update in place writes what changed
        # into this generation, so it must hold the policy (or undo all).
        dp.fill_standby()
        undo.pop_all()  # committed
        if restamp:  # flows the old program made meanwhile
            conntrack.restamp(dp.ct_map(), dp.obj.map(CTSEEN))
        prog_id = libbpf.prog_info(dp.prog_fd)["id"]
        _remove_pins(pins, prune=False)
        os.rename(staging, pins)
        _write_generations(iface, dp, prog_id, ct_size, events)
        _write_state(iface, ifindex, got, prog_id, pins, compiled, node, sources,
                     tc={"mechanism": eg.mechanism, "prog_id": eg.prog_id, "link_id": eg.link_id,
                         "created_qdisc": created_qdisc},
                     extra={"audit": audit, "event_settings": asdict(events), "generation": 0,
                            "slot_stride": dp.enc.capacity.slot_stride, "serial": 0})
        if inputs is not None:
            _write_json(side_path(iface, "inputs"), inputs)
        remove_side(iface, "rollback")  # an earlier rollback is old news now
    end = time.monotonic()
    n = sum(len(v) for v in dp.enc.content.maps.values())
    res = UpdateResult(end - t0, end - t0, n, 0, True, reload_reason or ("first attach" if replace_id is None else None))
    return AttachResult(got, prog_id, str(pins), replace_id is not None, notes, eg.mechanism, eg.prog_id, res)


def _write_generations(iface: str, dp: Datapath, prog_id: int, ct_size: int, events: EventSettings) -> None:
    """The record an update in place starts from: what the object can hold,
    its rodata, which generation is active, what each one holds."""
    g = dp.generations
    meta = {"prog_id": prog_id, "capacity": asdict(g.capacity), "rodata": dp.enc.rodata, "active": g.active,
            "ct_size": ct_size, "event_buffer": events.buffer}
    path = side_path(iface, "gen")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(dump_generations(meta, g.held))
    os.replace(tmp, path)


@gc_paused  # as Generations.update
def _update_in_place(iface: str, prog_id: int, compiled: Compiled, *, ct_size: int, events: EventSettings,
                     audit: bool, t0: float) -> tuple[UpdateResult | None, str | None]:
    """Update the attached object's inactive generation and switch to it:
    (result, None), or (None, why a reload is needed). The record is marked
    dirty while the maps change, so a failure half way makes the next
    attach reload rather than trust it."""
    dirty = side_path(iface, "gen-dirty")
    if dirty.exists():
        return None, "an earlier update did not finish"
    try:
        meta, held = load_generations(side_path(iface, "gen").read_bytes())
    except (OSError, ValueError):
        return None, "no record of what the loaded object holds"
    if meta.get("prog_id") != prog_id:
        return None, "the record is of another program"
    if meta.get("ct_size") != ct_size:
        return None, f"conntrack size changed to {ct_size}"
    if meta.get("event_buffer") != events.buffer:
        return None, f"event buffer changed to {events.buffer}"
    maps = maps_of(prog_id, UPDATE_MAPS)
    gens = None
    try:
        if set(maps) != set(UPDATE_MAPS):
            return None, "the loaded object predates updates in place"
        maps[GEN] = Generations.gen_map(maps[SYNC])
        gens = Generations(maps, Capacity(**meta["capacity"]), held)
        if gens.active != meta["active"]:
            return None, "the record does not match the active generation"
        new = gens.content(compiled.image)
        options = {"local_nets": (), "ct_size": ct_size, "events": events, "audit": audit}
        problem = fit_problem(gens.capacity, meta["rodata"], new, compiled.image, options)
        if problem:
            return None, problem
        dirty.write_text(str(os.getpid()))
        res = gens.update(new, t0)
        meta["active"] = res.generation
        path = side_path(iface, "gen")
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(dump_generations(meta, gens.held))
        os.replace(tmp, path)
        dirty.unlink()
        return res, None
    finally:
        if gens is not None:
            gens.close()
        for m in maps.values():
            m.close()


def update(target: str | Datapath, compiled: Compiled) -> UpdateResult:
    """Make ``target`` (an attached interface, or a loaded Datapath)
    enforce ``compiled``: in place when it fits, else by reloading. An
    interface keeps the options it was attached with (node, audit,
    events, conntrack size)."""
    if isinstance(target, Datapath):
        return target.update(compiled.image)
    st = read_state(target)
    if st is None:
        raise AttachError(f"{target}: hepbpf is not attached")
    inputs = read_side(target, "inputs") or {}
    res = attach(target, compiled, mode="auto", node=st["node"], sources=st["sources"],
                 ct_size=inputs.get("ct_size", CT_DEFAULT_SIZE), tc_mechanism=inputs.get("egress", "auto"),
                 audit=st.get("audit", False), events=EventSettings(**st.get("event_settings", {})))
    assert res.update is not None
    return res.update


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
    dp.tc_prog.pin(str(where / "prog_tc"))
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


def _write_state(iface, ifindex, mode, prog_id, pins, compiled: Compiled, node, sources, tc: dict,
                 extra: dict | None = None) -> None:
    view = compiled.views[CHAIN_INGRESS]
    img = compiled.image
    state = {
        "iface": iface,
        "ifindex": ifindex,
        "netns": netns_key() or None,
        "mode": mode,
        "prog_id": prog_id,
        "tc_mechanism": tc["mechanism"],
        "tc_prog_id": tc["prog_id"],
        "tc_link_id": tc["link_id"],
        "tc_created_qdisc": tc["created_qdisc"],
        "pin_dir": str(pins),
        "node": node,
        "sources": [os.path.abspath(s) if s != "-" else "-" for s in sources],
        "host_endpoint": view.hep.name if view.hep else None,
        "attached_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "slots": [
            {"chain": CHAIN_NAMES[s.chain], "slot": s.slot, "action": s.action, "reason": s.reason_name,
             "stage": s.stage, "tier": s.tier, "policy": s.policy, "rule": s.rule,
             "audited": bool(s.flags & SLOT_AUDIT), **_tier_policies(compiled, s)}
            for s in img.slots
        ],
        **(extra or {}),
    }
    _write_json(state_path(iface), state)


def _tier_policies(compiled: Compiled, s) -> dict:
    """For an end-of-tier slot: the policies of the tier that applied to the
    endpoint (none of them decided): what a drop there is owed to."""
    if s.reason_name != "end-of-tier":
        return {}
    view = compiled.views[s.chain]
    for tv in tuple(view.tiers) + tuple(view.forward_tiers):
        if tv.tier.name == s.tier and tv.stage == s.stage:
            return {"tier_policies": [p.name for p in tv.policies]}
    return {}


def _write_json(path: Path, data) -> None:
    """Whole or not at all: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def side_path(iface: str, what: str) -> Path:
    """A file kept beside the interface's state: "inputs" (what re-creates
    the attachment), "pending" (an unconfirmed attach, loader/confirm.py).
    Not *.json, which names interfaces."""
    return state_path(iface).with_name(f"{iface}.{what}")


def read_side(iface: str, what: str) -> dict | None:
    try:
        return json.loads(side_path(iface, what).read_text())
    except (OSError, ValueError):
        return None


def write_side(iface: str, what: str, data) -> None:
    _write_json(side_path(iface, what), data)


def remove_side(iface: str, what: str) -> bool:
    try:
        side_path(iface, what).unlink()
        return True
    except FileNotFoundError:
        return False


def read_state(iface: str) -> dict | None:
    """The state `attach` wrote for ``iface`` (slots, options), or None."""
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
    pins = None
    with contextlib.suppress(AttachError):
        pins = pin_dir(iface)
    if ifindex is not None:
        current = _query(ifindex)
        if current["prog_id"] and _ours(current["prog_id"]):
            fd = libbpf.prog_fd_by_id(current["prog_id"])
            try:
                libbpf.xdp_detach(ifindex, current["mode"], expected_fd=fd)
            finally:
                os.close(fd)
            removed = True
        st = read_state(iface) or {}
        removed |= tc.detach(ifindex, pin_dir=pins, created_qdisc=st.get("tc_created_qdisc", False))
    if pins is not None and pins.exists():
        _remove_pins(pins)
        removed = True
    with contextlib.suppress(FileNotFoundError):
        state_path(iface).unlink()
        removed = True
    for what in ("inputs", "pending", "rollback", "watchdog.log", "gen", "gen-dirty"):
        remove_side(iface, what)
    # Leave no empty per-namespace state directory behind.
    with contextlib.suppress(OSError):
        state_path(iface).parent.rmdir()
    return removed


def sync_addresses(iface: str) -> tuple[int, int, int]:
    """Make the attached program's host-address maps match the addresses
    the namespace has now (XDP tells forwarded packets by them). Returns
    (addresses, added, removed). Each map entry changes on its own: a
    packet meets the old or the new answer for its destination."""
    ifindex = socket.if_nametoindex(iface)
    current = _query(ifindex)
    if not (current["prog_id"] and _ours(current["prog_id"])):
        raise AttachError(f"{iface}: hepbpf is not attached")
    maps = maps_of(current["prog_id"], (LOCAL4, LOCAL6, HOSTADDR))
    nets = local_nets()
    added = removed = 0
    try:
        for name, version in ((LOCAL4, 4), (LOCAL6, 6)):
            m = maps[name]
            want = {local_key(n) for n in nets if n.version == version}
            have = set(m.keys())
            for k in want - have:
                m.update(k, b"\x01")
                added += 1
            for k in have - want:
                removed += m.delete(k)
        # After the tries: an address dropped from both is forwarded only
        # once its line is gone too.
        maps[HOSTADDR].update_batch(*hostaddr_lines(nets))
    finally:
        for m in maps.values():
            m.close()
    return len(nets), added, removed


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
        st = read_state(name)
        if st is None:
            if not (current["prog_id"] and _ours(current["prog_id"])):
                continue
            # Attached, but the state under /run is gone (e.g. a reboot of
            # /run without one of the interface): report what the kernel knows.
            st = {"iface": name, "mode": current["mode"], "prog_id": current["prog_id"], "node": None,
                  "host_endpoint": None, "pin_dir": None, "attached_at": None, "slots": [],
                  "state": "missing"}
        st["attached"] = bool(current["prog_id"]) and current["prog_id"] == st["prog_id"]
        st.setdefault("audit", False)
        st["last_rollback"] = read_side(name, "rollback")
        pending = read_side(name, "pending")
        st["pending_confirmation"] = None if pending is None else {
            "deadline": pending["deadline"], "seconds_left": max(0.0, round(pending["deadline"] - time.time(), 1)),
            "rollback_to": "the previous policy" if pending.get("rollback") else "detached"}
        st.update(_counters(st))
        st.pop("slots", None)
        out.append(st)
    return out


def _counters(st: dict) -> dict:
    """Per-reason and per-slot counters of both chains, and conntrack, read
    through the program's map ids (so they work where pins are not visible)."""
    reasons = {REASON_NAMES[r]: {"packets": 0, "bytes": 0} for r in range(len(REASON_NAMES))}
    rules = []
    if not st.get("attached"):
        return {"reasons": reasons, "rules": rules}
    maps = maps_of(st["prog_id"], (REASON_STATS, RULE_STATS, CT, CT_STATS, EV_STATS))
    nreasons = len(REASON_NAMES)
    stride = st.get("slot_stride", 0)
    gen = st.get("generation", 0)  # the rule counters of the policy packets meet now
    try:
        per_chain = read_stats(maps[REASON_STATS], 2 * nreasons)
        for r in range(nreasons):
            pk = per_chain[r][0] + per_chain[nreasons + r][0]
            by = per_chain[r][1] + per_chain[nreasons + r][1]
            reasons[REASON_NAMES[r]] = {"packets": pk, "bytes": by}
        by_chain = {"ingress": per_chain[:nreasons], "egress": per_chain[nreasons:]}
        for chain_no, chain in enumerate(("ingress", "egress")):
            slots = [s for s in st["slots"] if s["chain"] == chain]
            stats = read_stats(maps[RULE_STATS], len(slots), first=(gen * 2 + chain_no) * stride)
            for s, (pk, by) in zip(slots, stats):
                rules.append({**s, "packets": pk, "bytes": by})
        stages: dict[str, dict[str, int]] = {}
        for r in rules:
            key = f"{r['chain']} {r['stage'] or 'none'}"
            t = stages.setdefault(key, {"packets": 0, "bytes": 0})
            if r["action"] != "Log" and not r.get("audited"):  # notes decide nothing
                t["packets"] += r["packets"]
                t["bytes"] += r["bytes"]
        out = {"reasons": reasons, "rules": rules, "stages": stages,
               "reasons_by_chain": {c: {REASON_NAMES[r]: {"packets": v[r][0], "bytes": v[r][1]}
                                        for r in range(nreasons)} for c, v in by_chain.items()}}
        if EV_STATS in maps:
            ev = read_ev_stats(maps[EV_STATS])
            out["events"] = event_totals(ev)
            out["would_drop"] = {c: ev[c]["would_drop"] for c in ev}
        if CT in maps and CT_STATS in maps:
            events = conntrack.stats(maps[CT_STATS])
            flows = sum(1 for _ in maps[CT].keys())
            events["evicted"] = max(0, events["created"] - events["closed"] - events["expired"] - flows)
            out["conntrack"] = {"flows": flows, "size": maps[CT].max_entries, "events": events}
        return out
    finally:
        for m in maps.values():
            m.close()


def maps_of(prog_id: int, names=(REASON_STATS, RULE_STATS)) -> dict:
    """The program's maps of these names, open (the caller closes them)."""
    fd = libbpf.prog_fd_by_id(prog_id)
    try:
        ids = libbpf.prog_info(fd)["map_ids"]
    finally:
        os.close(fd)
    out = {}
    for mid in ids:
        m = libbpf.Map.from_id(mid)
        if m.name in names:
            out[m.name] = m
        else:
            m.close()
    return out
