"""What changed between two versions of one address scope (AddrScope), in
time that grows with the change, not with the scope.

Both scopes' keys are sorted, and each carries its keys and classes packed
at a fixed width (compiler/mapimage.py). The walk skips a common run with a
galloping search of memcmps over the packed bytes (a few dozen for a run of
100,000 entries), and steps over a run of keys only one side has with a
bisection of the sorted keys. So one CIDR changed in a 100,000-CIDR set
costs tens of microseconds where comparing the scopes key by key costs
milliseconds; the cost grows with the number of places that differ, and
past ``limit`` of them the caller re-encodes the scope instead.
"""

from __future__ import annotations

import functools
from array import array
from bisect import bisect_left
from dataclasses import dataclass
from operator import itemgetter

from cffi import FFI

from hepbpf.compiler.mapimage import AddrScope, key_width

from . import abi

GALLOP_PLACES = 16  # places that differ the gallop finds before the native merge takes the rest
NATIVE_LIB = "libhepscope.so"
MERGE_FIRST = 4096  # room the native merge gets on its first try


@dataclass(frozen=True, slots=True)
class ScopeDelta:
    """``removed``: keys only the old scope has. ``added``: (key, class) of
    keys only the new one has; ``changed``: of keys both have, with another
    class. Classes are the new image's class numbers; each list in key
    order."""

    removed: list[int]
    added: list[tuple[int, int]]
    changed: list[tuple[int, int]]

    def __len__(self) -> int:
        return len(self.removed) + len(self.added) + len(self.changed)

    def keys(self) -> list[int]:
        return self.removed + list(map(itemgetter(0), self.added)) + list(map(itemgetter(0), self.changed))


def _common_run(a: bytes, i: int, b: memoryview, j: int, most: int, w: int) -> int:
    """How many w-byte records from a[i] and b[j] on are equal (at most
    ``most``): double the run until it breaks, then halve the rest; each
    comparison covers only records not yet known equal, so the bytes
    compared add up to about twice the run. startswith() on a memoryview
    compares in place (comparing memoryviews goes element by element)."""
    if most <= 0:
        return 0
    if a.startswith(b[j * w:(j + most) * w], i * w):
        return most
    lo, step = 0, 1  # [0, lo) equal; [0, lo + step) not yet known
    while lo + step < most and a.startswith(b[(j + lo) * w:(j + lo + step) * w], (i + lo) * w):
        lo += step
        step *= 2
    hi = min(lo + step, most)  # the first difference is in [lo, hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a.startswith(b[(j + lo) * w:(j + mid) * w], (i + lo) * w):
            lo = mid
        else:
            hi = mid
    return lo


@functools.cache
def native():
    """(ffi, lib) of loader/native/scopemerge.c as bpf/Makefile builds it
    beside the BPF objects, or None where it was not built (the Python
    loops then do all the work: slower where the places are many, the
    same results)."""
    path = abi.bpf_dir() / NATIVE_LIB
    if not path.exists():
        return None
    ffi = FFI()
    ffi.cdef("int hep_scope_merge(const unsigned char *ok, const uint32_t *oc, size_t no,"
             " const unsigned char *nk, const uint32_t *nc, size_t nn, size_t w, size_t i, size_t j,"
             " uint32_t *removed, uint32_t *added, uint32_t *changed, size_t max, size_t *counts);"
             "long hep_diff_runs(const unsigned char *a, const unsigned char *b, size_t len, size_t chunk,"
             " size_t gap, uint32_t *out, size_t max);"
             "int hep_scatter_u32(uint32_t *entries, size_t len, const uint32_t *idx, const uint32_t *values,"
             " size_t n);")
    return ffi, ffi.dlopen(str(path))


def _merge(old: AddrScope, new: AddrScope, i: int, j: int, limit: int, lib) -> tuple | None:
    """hep_scope_merge from (i, j): (removed keys, added and changed (key,
    class) pairs), or None past ``limit``."""
    ffi, c = lib
    most = max(0, min(limit, len(old.keys) - i + len(new.keys) - j))  # no more can differ
    counts = ffi.new("size_t[3]")
    for cap in sorted({min(most, MERGE_FIRST), most}):  # small buffers first: zeroing 3 x 200 KB costs 60 us
        out = [array("I", bytes(4 * cap)) for _ in range(3)]
        rc = c.hep_scope_merge(ffi.from_buffer(old.packed_keys), ffi.from_buffer("uint32_t[]", old.packed_classes),
                               len(old.keys), ffi.from_buffer(new.packed_keys),
                               ffi.from_buffer("uint32_t[]", new.packed_classes), len(new.keys),
                               key_width(old.family), i, j, *(ffi.from_buffer("uint32_t[]", a) for a in out),
                               cap, counts)
        if rc == 0:
            break
    else:
        return None
    r, a, ch = (out[n][:counts[n]] for n in range(3))
    nk, ncls = new.keys, new.classes
    return (list(map(old.keys.__getitem__, r)), list(zip(map(nk.__getitem__, a), map(ncls.__getitem__, a))),
            list(zip(map(nk.__getitem__, ch), map(ncls.__getitem__, ch))))


def scope_delta(old: AddrScope, new: AddrScope, limit: int, *, gallop_places: int = GALLOP_PLACES
                ) -> ScopeDelta | None:
    """What turns ``old`` into ``new`` (same chain, side and family), or
    None once more than ``limit`` entries differ, or if either scope lacks
    its packed form. First the keys: runs both have (a gallop over the
    packed keys each) and, between them, keys one side has (a bisection of
    the sorted keys each). Then the classes of each run of shared keys, one
    memcmp a run, searched only where it differs. Past ``gallop_places``
    places, the native merge (native()) takes the rest in one pass."""
    w = key_width(old.family)
    no, nn = len(old.keys), len(new.keys)
    if (len(old.packed_keys) != no * w or len(new.packed_keys) != nn * w
            or len(old.packed_classes) != 4 * no or len(new.packed_classes) != 4 * nn):
        return None
    ka, kb = old.packed_keys, memoryview(new.packed_keys)
    ok, nk, ncls = old.keys, new.keys, new.classes
    removed: list[int] = []
    added: list[tuple[int, int]] = []
    shared: list[tuple[int, int, int]] = []  # (i, j, n): old[i:i+n] and new[j:j+n] have the same keys
    lib = native()
    tail: tuple | None = None  # what the native merge found from where the gallop stopped
    i = j = places = 0
    while True:
        run = _common_run(ka, i, kb, j, min(no - i, nn - j), w)
        if run:
            shared.append((i, j, run))
            i += run
            j += run
        if i == no or j == nn:
            break
        places += 1
        if lib is not None and places > gallop_places:
            tail = _merge(old, new, i, j, limit - len(removed) - len(added), lib)
            if tail is None:
                return None
            i, j = no, nn
            break
        ko, kn = ok[i], nk[j]  # they differ: a run ends where keys do
        if ko < kn:  # old keys below kn are gone
            end = bisect_left(ok, kn, i + 1)
            removed.extend(ok[i:end])
            i = end
        else:  # new keys below ko are new
            end = bisect_left(nk, ko, j + 1)
            added.extend(zip(nk[j:end], ncls[j:end]))
            j = end
        if len(removed) + len(added) > limit:
            return None
    removed.extend(ok[i:])
    added.extend(zip(nk[j:], ncls[j:]))
    if len(removed) + len(added) > limit:
        return None
    changed: list[tuple[int, int]] = []
    ca, cb = old.packed_classes, memoryview(new.packed_classes)
    for i, j, n in shared:
        t = 0
        while t < n:
            t += _common_run(ca, i + t, cb, j + t, n - t, 4)
            if t < n:
                changed.append((nk[j + t], ncls[j + t]))
                t += 1
        if len(removed) + len(added) + len(changed) > limit:
            return None
    if tail is not None:
        removed += tail[0]
        added += tail[1]
        changed += tail[2]  # the gallop's all lie before where the merge began
        if len(removed) + len(added) + len(changed) > limit:
            return None
    return ScopeDelta(removed, added, changed)
