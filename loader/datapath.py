"""A loaded XDP object with its policy maps filled from a MapImage.

Lifecycle (each step undone on failure): open the object -> size the maps
and set the rodata config -> load (verify) -> fill the maps. Attaching is
attach.py's business; ``explain --kernel`` and the tests use a Datapath
unattached, through BPF_PROG_TEST_RUN.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass

from hepbpf.compiler.mapimage import CHAIN_INGRESS, MapImage
from hepbpf.compiler.packet import Packet
from hepbpf.compiler.reasons import REASON_NAMES

from . import abi
from .encode import EncodedImage, encode
from .frames import frame
from .libbpf import BpfObject, num_possible_cpus
from .mapnames import CLASS, POLICY_MAPS, TRACE, XDP_OBJECT, XDP_PROGRAM

XDP_DROP, XDP_PASS = 1, 2


@dataclass(frozen=True, slots=True)
class KernelVerdict:
    retval: int
    verdict: str
    reason: str
    slot: int | None


def per_cpu(raw: bytes, ctype: str) -> list:
    """Split a per-CPU map value (one 8-byte-aligned slot per possible CPU)
    into ABI values."""
    size = abi.sizeof(ctype)
    stride = (size + 7) & ~7
    return [abi.unpack(ctype, raw[cpu * stride:cpu * stride + size])
            for cpu in range(num_possible_cpus())]


class Datapath:
    def __init__(self, obj: BpfObject, image: MapImage, enc: EncodedImage):
        self.obj = obj
        self.image = image
        self.enc = enc
        self.prog = obj.program(XDP_PROGRAM)
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

    def run(self, data: bytes) -> KernelVerdict:
        """One frame through the program; the verdict comes from the trace
        map, so the object must have been loaded with trace=True."""
        trace = self.obj.map(TRACE)
        key = (0).to_bytes(4, sys.byteorder)
        trace.update(key, bytes(trace.value_buffer_size))
        retval, _, _ = self.prog.test_run(data)
        for v in per_cpu(trace.lookup(key, percpu=True), "struct hep_verdict"):
            if v.verdict:
                slot = None if v.slot == 0xFFFFFFFF else v.slot
                return KernelVerdict(retval, "allow" if v.verdict == 1 else "deny",
                                     REASON_NAMES[v.reason], slot)
        raise RuntimeError("the program left no trace: was it loaded with trace=True?")

    def explain(self, pkt: Packet, chain: int = CHAIN_INGRESS) -> dict:
        kv = self.run(frame(pkt))
        expected = XDP_PASS if kv.verdict == "allow" else XDP_DROP
        if kv.retval != expected:
            raise RuntimeError(f"XDP returned {kv.retval} but traced {kv.verdict}")
        out = {"verdict": kv.verdict, "reason": kv.reason, "stage": None, "tier": None,
               "policy": None, "rule": None}
        if kv.slot is not None:
            s = self._slots[(chain, kv.slot)]
            out.update(stage=s.stage, tier=s.tier, policy=s.policy, rule=s.rule)
        return out


def object_path() -> str:
    path = abi.bpf_dir() / XDP_OBJECT
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: build the BPF objects first (make -C bpf)")
    return str(path)


def load_image(image: MapImage, *, trace: bool = False) -> Datapath:
    """Open, size, configure, verify and fill a fresh XDP object."""
    enc = encode(image, trace=trace)
    with contextlib.ExitStack() as undo:
        obj = BpfObject.open(object_path())
        undo.callback(obj.close)
        for name, n in enc.sizes.items():
            obj.map(name).set_max_entries(n)
        obj.map(CLASS).set_value_size(enc.value_sizes[CLASS])
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


def read_stats(m, key_count: int) -> list[tuple[int, int]]:
    """Sum a per-CPU hep_stats array: [(packets, bytes)] per key."""
    out = []
    for k in range(key_count):
        raw = m.lookup(k.to_bytes(4, sys.byteorder), percpu=True)
        stats = per_cpu(raw, "struct hep_stats") if raw else []
        out.append((sum(s.packets for s in stats), sum(s.bytes for s in stats)))
    return out
