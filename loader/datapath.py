"""A loaded hepbpf object with its policy maps filled from a MapImage.

Lifecycle (each step undone on failure): open the object -> size the maps
and set the rodata config -> load (verify) -> fill the maps (both
generations). Attaching is attach.py's business; ``explain --kernel`` and
the tests use a Datapath unattached, through BPF_PROG_TEST_RUN: the XDP
program for the ingress chain, the tc program for the egress chain.

Updates (``Datapath.update``, and attach.update for an interface) go
through ``Generations``: write the changed entries of the generation no
packet reads, zero its rule counters, switch hep_gen_v1 to it, wait for the
packets still judged by the other one (maps.h), done. A policy that does
not fit the loaded object's capacity or rodata reloads it instead.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import mmap
import os
import struct
import sys
import time
from array import array
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from hepbpf.compiler.alloc import gc_paused
from hepbpf.compiler.mapimage import CHAIN_INGRESS, MapImage
from hepbpf.compiler.packet import Packet
from hepbpf.compiler.reasons import REASON_NAMES

from . import abi, conntrack, libbpf
from .encode import (CT_DEFAULT_SIZE, Capacity, Changes, Content, EncodedImage, EventSettings, Placement,
                     content, encode, hostaddr_lines, local_key, local_net)
from .frames import frame
from .libbpf import BPF_F_MMAPABLE, BpfObject, Map
from .mapnames import (CLASS, CT, CTSEEN, DIR, EVENTS, GEN, HOSTADDR, LOCAL4, LOCAL6, NOTES, PORT, RULE_STATS, SYNC,
                       TC_PROGRAM, TRACE, UPDATE_MAPS, XDP_OBJECT, XDP_PROGRAM)
from .percpu import per_cpu

XDP_DROP, XDP_PASS = 1, 2
TC_ACT_UNSPEC, TC_ACT_SHOT = 0xFFFFFFFF, 2  # test_run reports the return value as a __u32
# struct __sk_buff up to ifindex; ingress_ifindex sits at byte 36. The
# kernel zero-fills the rest of a short context.
SKB_CTX = struct.Struct("=9I I I")
ANY_INGRESS_IFINDEX = 1  # a forwarded packet came in somewhere; the number is not read
PARALLEL_BYTES = 1 << 20  # keys written; below, threads cost more than they save


@dataclass(frozen=True, slots=True)
class KernelVerdict:
    retval: int
    verdict: str
    reason: str
    slot: int | None
    notes: tuple[tuple[int, bool], ...] = ()  # (slot, audited) of Log and audited slots passed
    gen: int = 0  # the generation that judged it


@dataclass(frozen=True, slots=True)
class UpdateResult:
    """One policy update. ``seconds``: the whole call (encoding, writes,
    switch, wait); ``effect_seconds``: from the call until every new packet
    met the new policy (the switch, or the program swap of a reload);
    ``settle_seconds``: the wait after the switch for packets still judged
    by the old generation; ``encode_seconds``: of effect_seconds, the part
    spent in Python encoding and comparing the policy (O(policy); the
    kernel writes are O(change)). ``reason``: why the object was reloaded."""

    seconds: float
    effect_seconds: float
    written: int
    deleted: int
    reloaded: bool
    reason: str | None = None
    generation: int = 0
    settle_seconds: float = 0.0
    encode_seconds: float = 0.0


def _u32(x: int) -> bytes:
    return x.to_bytes(4, sys.byteorder)


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
KEEP_FREED = 64 << 20


@functools.cache
def _keep_freed_memory() -> None:
    """Have glibc serve large allocations from the heap and keep freed
    heap memory: an update copies and frees a scope's entries (1 MiB for
    100,000 /32s), and by default each copy is a fresh mmap whose 256 page
    faults cost 0.4 ms of a 1 ms update. Up to KEEP_FREED stays with the
    process. Once per process; a libc without mallopt keeps its defaults."""
    libbpf.mallopt(M_MMAP_THRESHOLD, KEEP_FREED)
    libbpf.mallopt(M_TRIM_THRESHOLD, 2 * KEEP_FREED)


class Generations:
    """The two policy generations of one loaded object: what each holds
    (None: unknown), which one packets read, and the switch between them.
    ``maps``: the UPDATE_MAPS of the object, and GEN."""

    def __init__(self, maps: dict[str, Map], capacity: Capacity, held: list[Content | None]):
        self.maps = maps
        self.capacity = capacity
        self.held = held
        self._views: dict[str, mmap.mmap] = {}
        self._active: int | None = None
        _keep_freed_memory()

    def _view(self, name: str) -> mmap.mmap:
        """The map's values, mapped once: mapping and unmapping hep_dir_v1
        took 0.15 ms of a 1 ms update."""
        mm = self._views.get(name)
        if mm is None:
            mm = self._views[name] = self.maps[name].mmap()
        return mm

    def close(self) -> None:
        """Unmap what _view mapped (the maps stay the caller's)."""
        for mm in self._views.values():
            mm.close()
        self._views.clear()

    @staticmethod
    def gen_map(sync: Map) -> Map:
        """hep_gen_v1 of an object whose other maps came by id: the map
        hep_sync_v1 holds (a lookup there gives the inner map's id)."""
        return Map.from_id(int.from_bytes(sync.lookup(_u32(0)), sys.byteorder))

    @property
    def active(self) -> int:
        """The generation packets read: hep_gen_v1, read once (a lookup
        each time was 0.1 ms of a 1 ms update); switch() keeps it."""
        if self._active is None:
            self._active = int.from_bytes(self.maps[GEN].lookup(_u32(0)), sys.byteorder)
        return self._active

    def plan(self, gen: int, new: Content) -> tuple[Changes, bytes]:
        """What write() does: (changes, rule counter keys)."""
        place = Placement(self.capacity, gen)
        return place.changes(new, self.held[gen]), place.rule_stat_keys(new)

    @gc_paused  # the plan's keys are many objects, none in a cycle
    def write(self, gen: int, new: Content, plan: tuple | None = None) -> tuple[int, int]:
        """Make generation ``gen`` (which no packet reads) hold ``new``;
        zero its rule counters. Returns (entries written, deleted)."""
        ch, counters = plan or self.plan(gen, new)
        self.held[gen] = None  # half written until this returns

        def one(name: str) -> tuple[int, int]:
            m = self.maps[name]
            deleted = sum(m.delete(k) for k in ch.deletes.get(name, ()))
            if name == PORT:
                return self._write_ports(ch.port), deleted
            if name == DIR:
                return self._write_dir(ch.dir), deleted
            keys, values = ch.writes.get(name, (b"", b""))
            m.update_batch(keys, values)
            return len(keys) // m.key_size, deleted

        names = sorted(set(ch.writes) | set(ch.deletes) | ({PORT} if ch.port else set()) | ({DIR} if ch.dir else set()),
                       key=lambda n: -len(ch.writes.get(n, (b"",))[0]))
        # The maps are independent and the kernel works with the GIL
        # released: on two CPUs, the large ones fill side by side (a first
        # fill: ~0.3 s of kernel time one after the other).
        if len(names) > 1 and sum(len(ch.writes.get(n, (b"",))[0]) for n in names) > PARALLEL_BYTES:
            with ThreadPoolExecutor(max_workers=min(len(names), os.cpu_count() or 1)) as pool:
                done = list(pool.map(one, names))
        else:
            done = [one(n) for n in names]
        stats = self.maps[RULE_STATS]
        stats.update_batch(counters, bytes(stats.value_buffer_size * (len(counters) // 4)))
        self.held[gen] = new
        return sum(w for w, _ in done), sum(d for _, d in done)

    def _write_ports(self, runs: list[tuple[int, int, int]]) -> int:
        """hep_port_v1 runs (first, count, class): through mmap when the
        array allows it (a generation's tables are 500,000 entries; no
        syscall per entry), else one batch update."""
        if not runs:
            return 0
        m = self.maps[PORT]
        if m.map_flags & BPF_F_MMAPABLE:
            # An array's elements are 8-byte aligned: a __u32 value, then pad.
            mm = self._view(PORT)
            for first, n, klass in runs:
                mm[8 * first:8 * (first + n)] = array("I", (klass, 0)).tobytes() * n
        else:  # an object loaded before hep_port_v1 was mmapable
            keys, values = array("I"), array("I")
            for first, n, klass in runs:
                keys.extend(range(first, first + n))
                values.extend(array("I", (klass,)) * n)
            m.update_batch(keys.tobytes(), values.tobytes())
        return sum(n for _, n, _ in runs)

    def _write_dir(self, runs: list[tuple[int, bytes]]) -> int:
        """hep_dir_v1 runs (first entry, entries): a DIR scope's blocks are
        a memory copy into the map (its elements are cache lines of
        entries, back to back)."""
        if not runs:
            return 0
        mm = self._view(DIR)
        for first, blob in runs:
            mm[4 * first:4 * first + len(blob)] = blob
        return sum(len(b) // 4 for _, b in runs)

    def switch(self, gen: int) -> float:
        """Make packets read generation ``gen``; return once none reads the
        other one (maps.h: storing into hep_sync_v1 waits an RCU grace
        period). Returns the seconds that wait took."""
        gm = self.maps[GEN]
        gm.update(_u32(0), _u32(gen))
        self._active = gen
        t = time.monotonic()
        self.maps[SYNC].update(_u32(0), _u32(gm.fd))
        return time.monotonic() - t

    def content(self, image: MapImage) -> Content:
        """``image`` encoded to replace the policy packets read now: its
        class ids and address scopes are the starting point (encode.content),
        as the policy the next one most resembles."""
        return content(image, like=self.held[self.active], dir_room=self.capacity.dir)

    @gc_paused  # a full collection of a 100,000-CIDR policy's objects takes 100 ms
    def update(self, new: Content, t0: float) -> UpdateResult:
        """Write the inactive generation, switch to it. ``new``: from
        content(), while this generation was still the inactive one.
        ``t0``: when the update began (monotonic), for the result's times."""
        gen = 1 - self.active
        # Freed when this returns, not while the maps change: the Content a
        # generation held may be the last reference to an old policy's
        # hundreds of thousands of objects.
        retired = self.held[gen]  # noqa: F841
        plan = self.plan(gen, new)
        t1 = time.monotonic()
        written, deleted = self.write(gen, new, plan)
        settle = self.switch(gen)
        end = time.monotonic()
        return UpdateResult(end - t0, end - settle - t0, written, deleted, False, None, gen, settle, t1 - t0)


class Datapath:
    def __init__(self, obj: BpfObject, image: MapImage, enc: EncodedImage, options: dict | None = None,
                 generations: Generations | None = None):
        self.obj = obj
        self.image = image
        self.enc = enc
        self.options = options or {}  # what load_image was given, for a reload
        self.prog = obj.program(XDP_PROGRAM)
        self.tc_prog = obj.program(TC_PROGRAM)
        self._slots = {(e.chain, e.slot): e for e in image.slots}
        self.generations = generations or Generations(_generation_maps(obj), enc.capacity,
                                                      [enc.content, enc.content])

    def fill_standby(self) -> int:
        """Fill the generation no packet reads, if load_image(standby=False)
        left it empty, so the next update writes only what changed.
        Returns the entries written."""
        gen = 1 - self.generations.active
        if self.generations.held[gen] is not None:
            return 0
        return self.generations.write(gen, self.enc.content)[0]

    @gc_paused  # as Generations.update
    def update(self, image: MapImage) -> UpdateResult:
        """Judge packets by ``image`` from now on: in place if it fits the
        loaded object (a packet meets the old policy or the new one, never
        a mix), else by loading a new object (sharing conntrack and the
        event ring); the programs then change, so re-read ``prog``."""
        t0 = time.monotonic()
        new = self.generations.content(image)
        reason = fit_problem(self.enc.capacity, self.enc.rodata, new, image, self.options)
        if reason is None:
            res = self.generations.update(new, t0)
            self.image = image
            self._slots = {(e.chain, e.slot): e for e in image.slots}
            return res
        dp = load_image(image, **self.options, reuse={CT: self.obj.map(CT).fd, CTSEEN: self.obj.map(CTSEEN).fd,
                                                          EVENTS: self.obj.map(EVENTS).fd})
        old = self.obj
        self.generations.close()
        self.obj, self.image, self.enc = dp.obj, dp.image, dp.enc
        self.prog, self.tc_prog, self._slots, self.generations = dp.prog, dp.tc_prog, dp._slots, dp.generations
        old.close()
        end = time.monotonic()
        n = sum(len(v) for v in new.maps.values())
        return UpdateResult(end - t0, end - t0, n, 0, True, reason, self.generations.active)

    @property
    def prog_fd(self) -> int:
        return self.prog.fd

    def close(self) -> None:
        self.generations.close()
        self.obj.close()

    def __enter__(self) -> Datapath:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- BPF_PROG_TEST_RUN -------------------------------------------------

    def run(self, data: bytes, chain: int = CHAIN_INGRESS, *, ingress_ifindex: int = 0) -> KernelVerdict:
        """One frame through the chain's program; the verdict comes from the
        trace map, so the object must have been loaded with trace=True.
        ``ingress_ifindex`` (egress only): non-zero makes it forwarded."""
        trace = self.obj.map(TRACE)
        key = (0).to_bytes(4, sys.byteorder)
        trace.update(key, bytes(trace.value_buffer_size))
        if chain == CHAIN_INGRESS:
            retval, _, _ = self.prog.test_run(data)
            allow = XDP_PASS
        else:
            ctx = SKB_CTX.pack(*([0] * 9), ingress_ifindex, 0)
            retval, _, _ = self.tc_prog.test_run(data, ctx=ctx)
            allow = TC_ACT_UNSPEC
        for cpu, v in enumerate(per_cpu(trace.lookup(key, percpu=True), "struct hep_verdict")):
            if v.verdict:
                slot = None if v.slot == 0xFFFFFFFF else v.slot
                verdict = "allow" if v.verdict == 1 else "deny"
                if (retval == allow) != (verdict == "allow") and not self.enc.rodata["audit"]:
                    raise RuntimeError(f"the program returned {retval} but traced {verdict}")
                return KernelVerdict(retval, verdict, REASON_NAMES[v.reason], slot, self._notes(cpu), v.gen)
        raise RuntimeError("the program left no trace: was it loaded with trace=True?")

    def _notes(self, cpu: int) -> tuple[tuple[int, bool], ...]:
        """The notes of the last packet run, which ran on ``cpu`` (the one
        whose trace it left): another CPU's notes are an older packet's."""
        audit_bit = abi.const("HEP_NOTE_AUDIT")
        cap = abi.const("HEP_MAX_NOTES")
        raw = self.obj.map(NOTES).lookup((0).to_bytes(4, sys.byteorder), percpu=True)
        nt = per_cpu(raw, "struct hep_notes")[cpu]
        return tuple((s & ~audit_bit, bool(s & audit_bit)) for s in list(nt.slot)[:min(nt.n, cap)])

    def set_local(self, addr, local: bool) -> None:
        """Make ``addr`` one of the host's addresses, or not (ingress packets
        to it are then forwarded). Needs an object loaded with local_nets."""
        m = self.obj.map(LOCAL4 if addr.version == 4 else LOCAL6)
        key = local_key(ipaddress.ip_network(addr))
        if local:
            m.update(key, b"\x01")
        else:
            m.delete(key)
        # The exact-address lines follow the tries: rebuilt from what they
        # hold now.
        nets = [local_net(k) for name in (LOCAL4, LOCAL6) for k in self.obj.map(name).keys()]
        self.obj.map(HOSTADDR).update_batch(*hostaddr_lines(nets))

    def ct_map(self):
        return self.obj.map(CT)

    def forget_flows(self) -> int:
        """Empty the conntrack table; returns how many flows it held."""
        return conntrack.clear(self.ct_map())

    def explain(self, pkt: Packet, chain: int = CHAIN_INGRESS, *, forwarded: bool = False,
                known_flow: bool = False) -> dict:
        """The kernel's verdict for one packet, as `explain` prints it.
        ``known_flow`` seeds conntrack with the packet's flow for the run."""
        ct = self.ct_map()
        conntrack.clear(ct)
        if known_flow:
            conntrack.seed(ct, pkt, chain=chain, seen_map=self.obj.map(CTSEEN))
        ifindex = 0
        if chain == CHAIN_INGRESS:
            if self.enc.rodata["know_local"]:
                self.set_local(pkt.dst, not forwarded)
            elif forwarded:
                raise ValueError("this object does not know the host's addresses, so nothing is forwarded")
        elif forwarded:
            ifindex = ANY_INGRESS_IFINDEX
        try:
            kv = self.run(frame(pkt), chain, ingress_ifindex=ifindex)
        finally:
            conntrack.clear(ct)
        out = {"verdict": kv.verdict, "reason": kv.reason, "stage": None, "tier": None,
               "policy": None, "rule": None}
        if kv.slot is not None:
            s = self._slots[(chain, kv.slot)]
            out.update(stage=s.stage, tier=s.tier, policy=s.policy, rule=s.rule)
        out["notes"] = []
        for slot, audited in kv.notes:
            s = self._slots[(chain, slot)]
            out["notes"].append({"kind": "audit" if audited else "log", "stage": s.stage, "tier": s.tier,
                                 "policy": s.policy, "rule": s.rule})
        return out


def object_path() -> str:
    path = abi.bpf_dir() / XDP_OBJECT
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: build the BPF objects first (make -C bpf)")
    return str(path)


def load_image(image: MapImage, *, trace: bool = False, local_nets: tuple | None = None,
               ct_size: int = CT_DEFAULT_SIZE, ct_timeouts: dict | None = None,
               reuse: dict[str, int] | None = None, events: EventSettings | None = None,
               audit: bool = False, standby: bool = True) -> Datapath:
    """Open, size, configure, verify and fill a fresh object. ``reuse``:
    map name -> fd of a live map to share instead of creating one (the
    conntrack table and the event ring survive a policy replacement this
    way). ``events``/``audit``: see encode(). ``standby``: also fill the
    generation packets do not read; False leaves it to fill_standby() (an
    attach calls it once the program enforces: half the fill, off the path
    to enforcing)."""
    options = {"trace": trace, "local_nets": local_nets, "ct_size": ct_size, "ct_timeouts": ct_timeouts,
               "events": events, "audit": audit}
    enc = encode(image, **options)
    with contextlib.ExitStack() as undo:
        obj = BpfObject.open(object_path())
        undo.callback(obj.close)
        for name, n in enc.sizes.items():
            obj.map(name).set_max_entries(n)
        obj.map(CLASS).set_value_size(enc.value_sizes[CLASS])
        for name, fd in (reuse or {}).items():
            obj.map(name).reuse_fd(fd)
        obj.set_rodata(abi.pack("struct hep_config", enc.rodata))
        obj.load()
        gens = fill(obj, enc, standby=standby)
        undo.pop_all()
    return Datapath(obj, image, enc, options, gens)


def _generation_maps(obj: BpfObject) -> dict[str, Map]:
    return {**{n: obj.map(n) for n in UPDATE_MAPS}, GEN: obj.map(GEN)}


def fill(obj: BpfObject, enc: EncodedImage, *, standby: bool = True) -> Generations:
    """Generation 0, which packets read, holds the policy; with
    ``standby`` generation 1 too (so the first update writes only what
    changed), else the returned Generations' write(1, ...) fills it."""
    for name, items in enc.local.items():
        if items:
            obj.map(name).update_batch([k for k, _ in items], [v for _, v in items])
    gens = Generations(_generation_maps(obj), enc.capacity, [None, None])
    gens.write(0, enc.content)
    if standby:
        gens.write(1, enc.content)
    return gens


def fit_problem(capacity: Capacity, rodata: dict, new: Content, image: MapImage, options: dict) -> str | None:
    """Why ``image`` cannot replace in place the policy of an object of
    this capacity and rodata, loaded with these load_image ``options``
    (None: it can): it does not fit the maps, or it needs other rodata."""
    problem = capacity.problem(new)
    if problem:
        return problem
    want = encode(image, **{**options, "local_nets": () if options.get("local_nets") is not None else None},
                  capacity=capacity, policy=new).rodata
    changed = sorted(k for k in want if want[k] != rodata.get(k))
    return f"settings changed: {', '.join(changed)}" if changed else None
