"""`hepbpf doctor`: what this kernel offers hepbpf, and which path each
part will take.

Everything here is detected, never inferred from the kernel version:
the egress hook by asking the kernel for a tcx chain, the datapath by
loading the real object (with a one-rule policy, attached nowhere) and
reading the verified instruction counts, or the verifier's own words
when it refuses. Nothing is attached and nothing is left behind.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from hepbpf.errors import EXIT_FAIL, EXIT_OK

# A host endpoint and one rule: enough to verify every path of the object.
_POLICY = """\
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: doctor, labels: {role: doctor}}
spec: {node: doctor, interfaceName: doctor0}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: doctor}
spec:
  selector: role == 'doctor'
  ingress: [{action: Allow, protocol: TCP, source: {nets: [192.0.2.0/24]}, destination: {ports: [22]}}]
  egress: [{action: Allow}]
"""


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool | None  # None: information, not a requirement
    detail: str

    def line(self) -> str:
        mark = {True: "ok  ", False: "FAIL", None: "info"}[self.ok]
        return f"{mark}  {self.name:<12} {self.detail}"


def _bpffs() -> Check:
    mounts = Path("/proc/self/mounts").read_text().split("\n")
    bpf = [m.split()[1] for m in mounts if m.split()[2:3] == ["bpf"]]
    if "/sys/fs/bpf" in bpf:
        return Check("bpffs", True, "/sys/fs/bpf is mounted: programs and maps can be pinned")
    return Check("bpffs", False, "/sys/fs/bpf is not a bpf filesystem: mount -t bpf bpf /sys/fs/bpf")


def _jit() -> Check:
    try:
        v = Path("/proc/sys/net/core/bpf_jit_enable").read_text().strip()
    except OSError:
        return Check("jit", None, "bpf_jit_enable not readable (a kernel with the JIT always on)")
    return Check("jit", None, "enabled" if v != "0"
                 else "bpf_jit_enable is 0: programs run interpreted, several times slower")


def _btf() -> Check:
    if Path("/sys/kernel/btf/vmlinux").exists():
        return Check("btf", None, "/sys/kernel/btf/vmlinux present")
    return Check("btf", None, "no kernel BTF (not needed by hepbpf's object; bpftool and debugging lose types)")


def _egress() -> Check:
    from hepbpf.loader import tc

    try:
        has = tc.tcx_supported()
    except OSError as e:
        return Check("egress hook", False, f"cannot ask the kernel: {e}")
    return Check("egress hook", True, "tcx (BPF link, 6.6+), pinned on a persistent bpffs; a clsact filter "
                 "where none is reachable (ip netns exec) or with attach --egress clsact" if has
                 else "no tcx on this kernel: a clsact direct-action filter (pref 18501)")


def _datapath() -> Check:
    from hepbpf.compiler import compile_policy
    from hepbpf.loader.datapath import load_image, object_path
    from hepbpf.loader.mapnames import TC_PROGRAM, XDP_PROGRAM

    path = object_path()
    if not Path(path).exists():
        return Check("datapath", False, f"{path} is not built: make -C bpf")
    compiled = compile_policy([("doctor.yaml", _POLICY)], node="doctor", iface="doctor0")
    try:
        dp = load_image(compiled.image, standby=False)
    except OSError as e:  # BpfError carries the trimmed verifier log
        return Check("datapath", False, f"{path} does not load:\n{e}")
    try:
        insns = {p: dp.obj.program(p).info().get("verified_insns") for p in (XDP_PROGRAM, TC_PROGRAM)}
    finally:
        dp.close()
    shown = ", ".join(f"{p} {n:,}" if n else f"{p} ?" for p, n in insns.items())
    return Check("datapath", True, f"loads and verifies (instructions: {shown})")


def checks() -> list[Check]:
    return [Check("kernel", None, os.uname().release), _btf(), _bpffs(), _jit(), _egress(), _datapath(),
            Check("xdp attach", None, "netlink, native mode where the driver has it, else generic "
                                      "(attach --mode native|generic to insist)")]


def run_doctor(args) -> int:
    found = checks()
    if args.output == "json":
        print(json.dumps([asdict(c) for c in found], indent=2))
    else:
        for c in found:
            print(c.line())
    return EXIT_FAIL if any(c.ok is False for c in found) else EXIT_OK
