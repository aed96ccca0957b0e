"""A loaded hepbpf object with its policy maps filled from a MapImage.

Lifecycle (each step undone on failure): open the object -> size the maps
and set the rodata config -> load (verify) -> fill the maps. Attaching is
attach.py's business; ``explain --kernel`` and the tests use a Datapath
unattached, through BPF_PROG_TEST_RUN: the XDP program for the ingress
chain, the tc program for the egress chain.
"""

from __future__ import annotations

import contextlib
import ipaddress
import struct
import sys
from dataclasses import dataclass

from hepbpf.compiler.mapimage import CHAIN_INGRESS, MapImage
from hepbpf.compiler.packet import Packet
from hepbpf.compiler.reasons import REASON_NAMES

from . import abi, conntrack
from .encode import CT_DEFAULT_SIZE, EncodedImage, EventSettings, encode, local_key
from .frames import frame
from .libbpf import BpfObject
from .mapnames import CLASS, CT, LOCAL4, LOCAL6, NOTES, POLICY_MAPS, TC_PROGRAM, TRACE, XDP_OBJECT, XDP_PROGRAM
from .percpu import per_cpu

XDP_DROP, XDP_PASS = 1, 2
TC_ACT_UNSPEC, TC_ACT_SHOT = 0xFFFFFFFF, 2  # test_run reports the return value as a __u32
# struct __sk_buff up to ifindex; ingress_ifindex sits at byte 36. The
# kernel zero-fills the rest of a short context.
SKB_CTX = struct.Struct("=9I I I")
ANY_INGRESS_IFINDEX = 1  # a forwarded packet came in somewhere; the number is not read


@dataclass(frozen=True, slots=True)
class KernelVerdict:
    retval: int
    verdict: str
    reason: str
    slot: int | None
    notes: tuple[tuple[int, bool], ...] = ()  # (slot, audited) of Log and audited slots passed


class Datapath:
    def __init__(self, obj: BpfObject, image: MapImage, enc: EncodedImage):
        self.obj = obj
        self.image = image
        self.enc = enc
        self.prog = obj.program(XDP_PROGRAM)
        self.tc_prog = obj.program(TC_PROGRAM)
        self._slots = {(e.chain, e.slot): e for e in image.slots}

    @property
    def prog_fd(self) -> int:
        return self.prog.fd

    def close(self) -> None:
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
        for v in per_cpu(trace.lookup(key, percpu=True), "struct hep_verdict"):
            if v.verdict:
                slot = None if v.slot == 0xFFFFFFFF else v.slot
                verdict = "allow" if v.verdict == 1 else "deny"
                if (retval == allow) != (verdict == "allow") and not self.enc.rodata["audit"]:
                    raise RuntimeError(f"the program returned {retval} but traced {verdict}")
                return KernelVerdict(retval, verdict, REASON_NAMES[v.reason], slot, self._notes())
        raise RuntimeError("the program left no trace: was it loaded with trace=True?")

    def _notes(self) -> tuple[tuple[int, bool], ...]:
        """The notes of the last packet run (on whichever CPU ran it)."""
        audit_bit = abi.const("HEP_NOTE_AUDIT")
        cap = abi.const("HEP_MAX_NOTES")
        raw = self.obj.map(NOTES).lookup((0).to_bytes(4, sys.byteorder), percpu=True)
        best: tuple = ()
        for nt in per_cpu(raw, "struct hep_notes"):
            got = tuple((s & ~audit_bit, bool(s & audit_bit)) for s in list(nt.slot)[:min(nt.n, cap)])
            best = max(best, got, key=len)
        return best

    def set_local(self, addr, local: bool) -> None:
        """Make ``addr`` one of the host's addresses, or not (ingress packets
        to it are then forwarded). Needs an object loaded with local_nets."""
        m = self.obj.map(LOCAL4 if addr.version == 4 else LOCAL6)
        key = local_key(ipaddress.ip_network(addr))
        if local:
            m.update(key, b"\x01")
        else:
            m.delete(key)

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
            conntrack.seed(ct, pkt, chain=chain)
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
               audit: bool = False) -> Datapath:
    """Open, size, configure, verify and fill a fresh object. ``reuse``:
    map name -> fd of a live map to share instead of creating one (the
    conntrack table and the event ring survive a policy replacement this
    way). ``events``/``audit``: see encode()."""
    enc = encode(image, trace=trace, local_nets=local_nets, ct_size=ct_size, ct_timeouts=ct_timeouts,
                 events=events, audit=audit)
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
        fill(obj, enc)
        undo.pop_all()
    return Datapath(obj, image, enc)


def fill(obj: BpfObject, enc: EncodedImage) -> None:
    for name in POLICY_MAPS:
        items = enc.entries[name]
        if items:
            obj.map(name).update_batch([k for k, _ in items], [v for _, v in items])
