"""A DIR scope (hep_dir_v1, encode.dir_blocks) patched for a few changed
prefixes, instead of planned and built again.

dir_blocks leaf-pushes: each entry of the root block holds the answer for
its b1-bit prefix R (b1 = skip + the first level's bits): the class of the
longest prefix of length <= b1 covering R, or, where longer prefixes lie
below R, a compare record (one of them) or a child block (several). So a
root entry is a function of the prefixes of length <= b1 covering R and of
those below R, and a changed prefix P changes only the root entries it
covers (one if P is longer than b1, 2^(b1 - p) if not). Each of those is
made again from the new scope alone: its base class by bisecting the
sorted keys once per prefix length present up to b1, the prefixes below it
by bisecting for R's range; one below it is a record, several a subtree
that dir_blocks builds as it would have below R (skip b1, the other
levels), appended at the end of the scope. The replaced subtree's entries
stay behind, unreached: ``garbage``. So the entries answer exactly what
dir_blocks' entries for the new scope answer (tests/unit/test_dir_patch.py
walks both), without being the same bytes.

The patch gives up (None; the caller builds the scope afresh, which also
sheds the garbage) where its shortcut does not hold: a changed prefix no
longer than skip or outside the skip bits (the root's default or the skip
itself would change), too many root entries to redo, a subtree the levels
cannot hold (dir_blocks' ValueError: the plan needs another level), more
entries than ``room`` or garbage over half of them.
"""

from __future__ import annotations

import sys
from array import array
from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass
from functools import cache
from operator import itemgetter

from hepbpf.compiler.mapimage import AddrScope

from . import abi
from .scopediff import ScopeDelta, native

MAX_REDONE = 1 << 16  # root entries one patch may redo
_KEY, _CLASS = itemgetter(0), itemgetter(1)  # of a ScopeDelta's (key, class) pairs


@dataclass(frozen=True, slots=True)
class DirScope:
    """An encoded DIR scope and what patching it needs (the image scope it
    encodes and its class ids are its encode.ScopeCode's). ``top``: the
    skip bits every prefix but the /0 shares, as an int; ``lens``: prefix
    length -> how many the scope has; ``entries``: its hep_dir_v1 entries,
    __u32 each, as bytes (never changed once made: a patch copies them,
    once, and the copy is what Content holds)."""

    width: int
    skip: int
    levels: tuple[int, ...]
    top: int
    lens: dict[int, int]
    entries: bytes | bytearray
    garbage: int = 0

    @property
    def size(self) -> int:
        """Entries."""
        return len(self.entries) // 4

    def words(self) -> memoryview:
        return memoryview(self.entries).cast("I")


@cache
def _consts() -> tuple[int, int, int, int]:
    return (abi.const("HEP_DIR_LEAF"), abi.const("HEP_DIR_MISS"), abi.const("HEP_DIR_RECORD"),
            abi.const("HEP_DIR_RECORD_LEN"))


def _subtree_size(entries: memoryview, e: int, levels: tuple[int, ...], j: int) -> int:
    """Entries below a root entry ``e`` (a block of level ``j`` or a record),
    found by walking it; 0 for a leaf."""
    leaf, _, record, rec_len = _consts()
    if e & leaf:
        return 0
    if e & record:
        return rec_len
    n = 1 << levels[j]
    size = n
    if j + 1 < len(levels):
        for child in entries[e:e + n]:
            size += _subtree_size(entries, child, levels, j + 1)
    else:  # a last-level block holds leaves and records only
        size += sum(rec_len for c in entries[e:e + n] if not c & leaf and c & record)
    return size


def _shared_base(d: DirScope, nk: tuple[int, ...], ncls: tuple[int, ...], cid: list[int]) -> int:
    """The leaf every root entry starts from: the class of the skip-long
    prefix if the scope has it, else the /0's, else a miss."""
    leaf, miss, _, _ = _consts()
    for key in ((d.top << (d.width - d.skip)) << 8 | d.skip if d.skip else None, 0):
        if key is not None:
            at = bisect_left(nk, key)
            if at < len(nk) and nk[at] == key:
                return leaf | cid[ncls[at]]
    return miss


def patch(d: DirScope, new: AddrScope, cid: list[int], delta: ScopeDelta, room: int) -> DirScope | None:
    """``d`` made to encode ``new`` (whose content class ids are ``cid``),
    given what changed from the scope ``d`` encodes, in at most ``room`` entries (the DIR
    budget of ``new``'s size, or what the loaded object has room for);
    None where a fresh build is needed (module docstring)."""
    leaf, miss, record, rec_len = _consts()
    if d.size > room:
        return None
    width, skip, levels, top = d.width, d.skip, d.levels, d.top
    b1 = skip + levels[0]
    root_shift, mask0 = width - b1, (1 << levels[0]) - 1
    # Lengths counted in C (Counter over map()); a few per scope.
    gone = Counter(map((0xFF).__and__, delta.removed))
    came = Counter(map((0xFF).__and__, map(_KEY, delta.added)))
    moved = Counter(map((0xFF).__and__, map(_KEY, delta.changed)))
    lens = dict(d.lens)
    for p, n in gone.items():
        lens[p] -= n
    for p, n in came.items():
        lens[p] = lens.get(p, 0) + n
    # Every changed key must lie strictly inside the skip prefix: longer
    # than it, and within its addresses. Keys sort by address, then length,
    # so that is a range of keys, checked at each list's ends.
    lowest = ((top << (width - skip)) << 8) | skip
    highest = ((top + 1) << (width - skip)) << 8
    for ks in (delta.removed, [k for k, _ in delta.added[:1] + delta.added[-1:]],
               [k for k, _ in delta.changed[:1] + delta.changed[-1:]]):
        if ks and (ks[0] <= lowest or ks[-1] >= highest):
            return None
    nk, ncls = new.keys, new.classes
    deep = any(n and p > b1 for p, n in lens.items())  # else every root entry is a leaf
    shift = 8 + root_shift
    if not deep and not any(n and skip < p < b1 for p, n in lens.items()) and \
            (gone.keys() | came.keys() | moved.keys()) <= {b1}:
        # The usual change to a set of addresses (a one-level plan, every
        # prefix of length b1): a removed prefix's entry falls back to the
        # skip prefix's or the /0's class, a new one's is its own.
        const = _shared_base(d, nk, ncls, cid)
        buf = bytearray(d.entries)
        set_ = delta.added + delta.changed
        index = array("I", map(mask0.__and__, map(shift.__rrshift__, delta.removed)))
        index.extend(map(mask0.__and__, map(shift.__rrshift__, map(_KEY, set_))))
        values = array("I", [const]) * len(delta.removed)
        values.extend(map(leaf.__or__, map(cid.__getitem__, map(_CLASS, set_))))
        lib = native()
        if lib is not None:  # 20,000 entries: 0.1 ms, where the loop below takes 3
            ffi, c = lib
            if c.hep_scatter_u32(ffi.from_buffer("uint32_t[]", buf), len(buf) // 4,
                                 ffi.from_buffer("uint32_t[]", index), ffi.from_buffer("uint32_t[]", values),
                                 len(index)):
                return None
        else:
            with memoryview(buf).cast("I") as entries:
                for r, v in zip(index, values):
                    entries[r] = v
        return DirScope(width, skip, levels, top, lens, buf, d.garbage)

    # Root entries to make again -> their base leaf where the change tells
    # it (a prefix of length b1 is the longest covering its entry), else None.
    redo: dict[int, int | None] = {}
    for k in delta.keys():
        p = k & 0xFF
        if p < b1:
            first = (k >> 8 >> root_shift) & mask0
            n = 1 << (b1 - p)
            if len(redo) + n > MAX_REDONE:
                return None
            for r in range(first, first + n):
                redo.setdefault(r, None)
        else:
            redo.setdefault((k >> 8 >> root_shift) & mask0, None)
    for k, c in delta.added + delta.changed:
        if k & 0xFF == b1:
            redo[(k >> 8 >> root_shift) & mask0] = leaf | cid[c]

    nkeys = len(nk)
    # Lengths a root entry inherits: those in (skip, b1] looked up per
    # entry; the skip-long prefix or else the /0 covers every entry alike.
    between = sorted((p for p, n in lens.items() if n and skip < p <= b1), reverse=True)
    const = _shared_base(d, nk, ncls, cid)
    # Root entries change in a copy of the old ones; new records and
    # subtrees go after them (``tail``), joined at the end.
    buf = bytearray(d.entries)
    old_entries = d.words()
    head_n = len(old_entries)
    tail = array("I")
    garbage = d.garbage
    span = 1 << root_shift
    base_bits = top << levels[0]
    with memoryview(buf).cast("I") as entries:
        for r, base in redo.items():
            r_addr = (base_bits | r) << root_shift
            if base is None:
                base = const
                for p in between:
                    key = (r_addr >> (width - p) << (width - p)) << 8 | p
                    at = bisect_left(nk, key)
                    if at < nkeys and nk[at] == key:
                        base = leaf | cid[ncls[at]]
                        break
            old = entries[r]
            if not old & leaf:
                garbage += _subtree_size(old_entries, old, levels, 1)
            if not deep:
                entries[r] = base
                continue
            lo = bisect_left(nk, r_addr << 8 | (b1 + 1))
            hi = bisect_left(nk, (r_addr + span) << 8, lo)
            if hi == lo:
                entries[r] = base
                continue
            pad = -(head_n + len(tail)) % rec_len
            if pad:
                tail.extend(array("I", [0]) * pad)
                garbage += pad
            at = head_n + len(tail)
            if hi - lo == 1:  # alone below R: a compare record, as dir_blocks makes one
                k = nk[lo]
                a, p, e = k >> 8, k & 0xFF, leaf | cid[ncls[lo]]
                if width == 32:
                    tail.extend((a, 0, 0, 0, p, e, base, 0))
                else:
                    tail.extend((a >> 96, (a >> 64) & 0xFFFFFFFF, (a >> 32) & 0xFFFFFFFF, a & 0xFFFFFFFF,
                                 p, e, base, 0))
                entries[r] = record | at
                continue
            if len(levels) == 1:  # two below R need a level the plan does not have
                return None
            from .encode import dir_blocks  # encode imports this module

            by_len: dict[int, dict[int, bytes]] = {}
            if base != miss:
                by_len[b1] = {r_addr: (base & ~leaf).to_bytes(4, sys.byteorder)}
            for i in range(lo, hi):
                k = nk[i]
                by_len.setdefault(k & 0xFF, {})[k >> 8] = cid[ncls[i]].to_bytes(4, sys.byteorder)
            try:
                sub = dir_blocks(by_len, b1, levels[1:], width, origin=at)
            except ValueError:  # two prefixes share a last-level entry: the plan needs changing
                return None
            tail.extend(sub)
            entries[r] = at
            if head_n + len(tail) > room:
                return None
    size = head_n + len(tail)
    if size > room or 2 * garbage > size:
        return None
    buf += tail.tobytes()
    return DirScope(width, skip, levels, top, lens, buf, garbage)
