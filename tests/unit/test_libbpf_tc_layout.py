"""The cdef added for tc and links (hepbpf.loader.libbpf) against the C
headers, without root: a host C program compiled against libbpf's headers
and the uapi prints offsets, sizes and constants, and we compare.

The uapi headers here may predate tcx (Debian 12 ships 6.1): the tcx-only
fields (bpf_link_info.tcx, the query's link_ids/link_attach_flags/revision)
are checked against the 6.6 layout written out below instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from hepbpf.loader import libbpf
from hepbpf.loader.libbpf import BpfAttachType, TcAttachPoint

# Our name -> the header's, where they differ; None: not in a 6.1 header.
STRUCTS: dict[str, dict[str, str | None]] = {
    "struct bpf_tc_hook": {},
    "struct bpf_tc_opts": {},
    "struct bpf_link_create_opts": {},
    "struct bpf_link_update_opts": {},
    "struct bpf_link_info": {"tcx": None},
}
QUERY_FIELDS = {"target": "target_fd", "attach_type": "attach_type", "query_flags": "query_flags",
                "attach_flags": "attach_flags", "prog_ids": "prog_ids", "count": "prog_cnt",
                "prog_attach_flags": "prog_attach_flags"}
CONSTANTS = ["BPF_TC_INGRESS", "BPF_TC_EGRESS", "BPF_TC_CUSTOM", "BPF_TC_F_REPLACE", "BPF_F_REPLACE",
             "BPF_PROG_QUERY", "BPF_LSM_CGROUP", "__NR_bpf"]


def _include_flags() -> list[str]:
    multiarch = Path(f"/usr/include/{os.uname().machine}-linux-gnu")
    return ["-I", str(multiarch)] if multiarch.is_dir() else []


@pytest.fixture(scope="module")
def header_says(tmp_path_factory) -> dict[str, int]:
    if shutil.which("clang") is None or not Path("/usr/include/bpf/libbpf.h").exists():
        pytest.skip("needs clang and libbpf-dev headers")
    ffi = libbpf.ffi
    src = ["#include <stdio.h>", "#include <stddef.h>", "#include <sys/syscall.h>", "#include <bpf/libbpf.h>",
           "#include <bpf/bpf.h>", "#include <linux/bpf.h>", "int main(void) {"]
    for s, renames in STRUCTS.items():
        src.append(f'printf("{s} %zu\\n", sizeof({s}));')
        for name, f in ffi.typeof(s).fields:
            c_name = renames.get(name, name)
            if not name or c_name is None or f.bitsize != -1:
                continue
            src.append(f'printf("{s}.{name} %zu\\n", offsetof({s}, {c_name}));')
    for ours, theirs in QUERY_FIELDS.items():
        src.append(f'printf("query.{ours} %zu\\n", offsetof(union bpf_attr, query.{theirs}));')
    for c in CONSTANTS:
        src.append(f'printf("{c} %ld\\n", (long){c});')
    src.append("return 0; }")
    d = tmp_path_factory.mktemp("layout")
    (d / "layout.c").write_text("\n".join(src))
    subprocess.run(["clang", *_include_flags(), "-o", str(d / "layout"), str(d / "layout.c")],
                   check=True, capture_output=True)
    out = subprocess.run([str(d / "layout")], check=True, capture_output=True, text=True).stdout
    return {k: int(v) for k, v in (line.rsplit(" ", 1) for line in out.splitlines())}


def test_structs_match_the_headers(header_says):
    ffi = libbpf.ffi
    for s, renames in STRUCTS.items():
        assert header_says[s] >= ffi.sizeof(s), s  # ours may stop early (bpf_link_info), never run over
        if s != "struct bpf_link_info":
            assert header_says[s] == ffi.sizeof(s), s
        for name, f in ffi.typeof(s).fields:
            if name and renames.get(name, name) is not None and f.bitsize == -1:
                assert header_says[f"{s}.{name}"] == f.offset, f"{s}.{name}"


def test_tcx_only_fields_follow_the_6_6_layout():
    ffi = libbpf.ffi
    # bpf_link_info: the per-type union starts at 16; tcx is { ifindex, attach_type }.
    assert ffi.offsetof("struct bpf_link_info", "tcx") == ffi.offsetof("struct bpf_link_info", "xdp") == 16
    assert ffi.offsetof("struct bpf_link_info", "tcx", "attach_type") == 20
    q = "struct bpf_attr_query"
    assert [ffi.offsetof(q, f) for f in ("link_ids", "link_attach_flags", "revision")] == [40, 48, 56]
    assert ffi.sizeof(q) == 64


def test_query_attr_matches_the_union_member(header_says):
    for ours in QUERY_FIELDS:
        assert header_says[f"query.{ours}"] == libbpf.ffi.offsetof("struct bpf_attr_query", ours), ours


def test_constants_match_the_headers(header_says):
    assert [header_says[f"BPF_TC_{p.name}"] for p in TcAttachPoint] == [p.value for p in TcAttachPoint]
    assert header_says["BPF_TC_F_REPLACE"] == libbpf.BPF_TC_F_REPLACE
    assert header_says["BPF_F_REPLACE"] == libbpf.BPF_F_REPLACE
    assert header_says["BPF_PROG_QUERY"] == libbpf._BPF_PROG_QUERY
    assert header_says["__NR_bpf"] == libbpf._NR_BPF[os.uname().machine]
    # 6.1 ends enum bpf_attach_type at LSM_CGROUP (43); 6.2 added STRUCT_OPS, 6.4 NETFILTER, 6.6 TCX_*.
    if header_says["BPF_LSM_CGROUP"] == 43:
        assert (BpfAttachType.TCX_INGRESS, BpfAttachType.TCX_EGRESS) == (43 + 3, 43 + 4)
