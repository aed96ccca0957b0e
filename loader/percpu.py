"""Reading per-CPU map values: one 8-byte-aligned slot per possible CPU."""

from __future__ import annotations

import sys

from . import abi
from .libbpf import num_possible_cpus


def per_cpu(raw: bytes, ctype: str) -> list:
    """Split a per-CPU map value into ABI values, one per possible CPU."""
    size = abi.sizeof(ctype)
    stride = (size + 7) & ~7
    return [abi.unpack(ctype, raw[cpu * stride:cpu * stride + size])
            for cpu in range(num_possible_cpus())]


def read_stats(m, key_count: int, first: int = 0) -> list[tuple[int, int]]:
    """Sum a per-CPU hep_stats array: [(packets, bytes)] per key, for keys
    first .. first + key_count - 1."""
    out = []
    for k in range(first, first + key_count):
        raw = m.lookup(k.to_bytes(4, sys.byteorder), percpu=True)
        stats = per_cpu(raw, "struct hep_stats") if raw else []
        out.append((sum(s.packets for s in stats), sum(s.bytes for s in stats)))
    return out


def read_counters(m, key_count: int) -> list[int]:
    """Sum a per-CPU __u64 array: one total per key."""
    out = []
    for k in range(key_count):
        raw = m.lookup(k.to_bytes(4, sys.byteorder), percpu=True) or b""
        out.append(sum(int.from_bytes(raw[i:i + 8], sys.byteorder) for i in range(0, len(raw), 8)))
    return out
