"""Updates in time that grows with the change (loader/scopediff.py,
loader/dirpatch.py): scope_delta finds exactly what a set comparison finds
and gives up past its limit; a DIR scope patched for random changes
(prefixes gone, new, reclassed; nested, clustered or spread; IPv4 and
IPv6; one change after another, garbage and all) answers, walked as the
datapath walks it, what a longest-prefix match of the new set answers; a
patch gives up where its shortcut does not hold (the /0 or the shared
prefix changes, the room runs out); and encode.content reuses what did not
change, patches what changed a little, and matches a fresh encoding."""

from __future__ import annotations

import os
import random

import pytest

from hepbpf.compiler.mapimage import AddrScope
from hepbpf.loader import encode, scopediff
from hepbpf.loader.dirpatch import patch
from hepbpf.loader.encode import _fresh_scope
from hepbpf.loader.scopediff import scope_delta

from ..addrscopes import compile_text, dir_walk, lpm, netset_policy


def _cls(i: int) -> bytes:
    return i.to_bytes(4, "little")


def _scope(by_len: dict[int, dict[int, bytes]], family: int) -> AddrScope:
    """An image scope holding ``by_len``, its classes being the class bytes
    as ints (so content class id = image class number)."""
    keys = sorted(a << 8 | p for p, g in by_len.items() for a in g)
    classes = [int.from_bytes(by_len[k & 0xFF][k >> 8], "little") for k in keys]
    return AddrScope.of(0, 0, family, tuple(keys), tuple(classes), {})


IDS = tuple(range(4096))  # content class id of each image class: the same number
CID = [_cls(i) for i in IDS]


def _base_set(rnd: random.Random, width: int, kind: str) -> dict[int, dict[int, bytes]]:
    by_len: dict[int, dict[int, bytes]] = {}
    if rnd.random() < 0.8:
        by_len[0] = {0: _cls(1)}
    base = rnd.getrandbits(width) >> 8 << 8
    for i in range(rnd.choice((20, 200, 1000))):
        if kind == "dense":  # neighbouring full-length prefixes: one level
            p, a = width, base + rnd.getrandbits(12)
        elif kind == "nested":
            p = rnd.choice((width, width - 4, width - 8, width - 12, width - 20))
            a = base ^ rnd.getrandbits(24)
        else:  # spread: records below a first level
            p = rnd.choice((width, width - 8, rnd.randint(width // 2, width)))
            a = base ^ rnd.getrandbits(width // 2)
        by_len.setdefault(p, {})[a >> (width - p) << (width - p)] = _cls(100 + i % 50)
    return by_len


def _changed(rnd: random.Random, by_len, width: int, kind: str, n: int) -> dict[int, dict[int, bytes]]:
    """``by_len`` with about ``n`` prefixes removed, added near the others,
    or given another class."""
    out = {p: dict(g) for p, g in by_len.items()}
    items = [(p, a) for p, g in out.items() if p for a in g]
    for _ in range(n):
        what = rnd.random()
        if what < 0.35 and items:
            p, a = items.pop(rnd.randrange(len(items)))
            out[p].pop(a, None)
        elif what < 0.7 and items:
            p, a = rnd.choice(items)
            if a in out.get(p, {}):
                out[p][a] = _cls(100 + rnd.randrange(60))
        else:
            p0, a0 = rnd.choice(items) if items else (width, 0)
            p = width if kind == "dense" else rnd.choice((p0, width, min(width, p0 + 4)))
            a = a0 ^ rnd.getrandbits(12 if kind == "dense" else 20)
            out.setdefault(p, {})[a >> (width - p) << (width - p)] = _cls(100 + rnd.randrange(60))
    return {p: g for p, g in out.items() if g}


def _probes(rnd: random.Random, width: int, *sets) -> list[int]:
    out = []
    for by_len in sets:
        for p, g in by_len.items():
            for a in g:
                lo, hi = a, a + (1 << (width - p)) - 1
                out += [lo, hi, max(lo - 1, 0), min(hi + 1, (1 << width) - 1)]
    anchor = next(a for p, g in sets[0].items() if p for a in g)
    out += [anchor ^ rnd.getrandbits(24) for _ in range(50)]
    return out


def _check_walk(d, by_len, width: int, probes: list[int]) -> None:
    prefix = [0, 0, 0, 0]
    if d.skip:
        a = d.top << (width - d.skip) << (128 - width)
        prefix = [(a >> (96 - 32 * i)) & 0xFFFFFFFF for i in range(4)]
    zero = int.from_bytes(by_len[0][0], "little") if 0 in by_len else None
    for a in probes:
        assert dir_walk(d.words(), d.skip, d.levels, prefix, width, a, zero) == lpm(by_len, width, a), hex(a)


def _diff(old: AddrScope, new: AddrScope):
    a, b = dict(zip(old.keys, old.classes)), dict(zip(new.keys, new.classes))
    return (sorted(a.keys() - b.keys()), sorted((k, b[k]) for k in b.keys() - a.keys()),
            sorted((k, b[k]) for k in a.keys() & b.keys() if a[k] != b[k]))


@pytest.mark.parametrize("width", [32, 128])
def test_scope_delta_is_the_set_difference(width):
    rnd = random.Random(width + 1)
    fam = 4 if width == 32 else 6
    for trial in range(120):
        kind = rnd.choice(("dense", "nested", "spread"))
        old = _base_set(rnd, width, kind)
        new = _changed(rnd, old, width, kind, rnd.choice((0, 1, 3, 30, 300)))
        so, sn = _scope(old, fam), _scope(new, fam)
        removed, added, changed = _diff(so, sn)
        d = scope_delta(so, sn, 10**9)
        assert (d.removed, d.added, d.changed) == (removed, added, changed), trial
        if len(d) > 1:
            assert scope_delta(so, sn, len(d) - 1) is None  # past the limit: give up


@pytest.mark.parametrize("width", [32, 128])
@pytest.mark.parametrize("kind", ["dense", "nested", "spread"])
def test_patched_scopes_answer_as_longest_prefix_match(width, kind):
    rnd = random.Random(hash((width, kind)) & 0xFFFF)
    fam = 4 if width == 32 else 6
    patched = tried = 0
    for _ in range(25):
        by_len = _base_set(rnd, width, kind)
        code = _fresh_scope(_scope(by_len, fam), IDS, CID)
        if code.dir is None:
            continue
        d, src = code.dir, code.src
        for _step in range(4):  # one change after another: garbage accumulates, then a rebuild sheds it
            new = _changed(rnd, by_len, width, kind, rnd.choice((1, 2, 5, 20)))
            if not any(p for p in new):
                break
            sn = _scope(new, fam)
            delta = scope_delta(src, sn, 10**9)
            tried += 1
            got = patch(d, sn, list(IDS), delta, 1 << 30)
            if got is None:
                code = _fresh_scope(sn, IDS, CID)
                if code.dir is None:
                    break
                got = code.dir
            else:
                patched += 1
                assert got.garbage * 2 <= got.size
            _check_walk(got, new, width, _probes(rnd, width, by_len, new))
            d, src, by_len = got, sn, new
    assert tried >= 40 and patched >= tried // 2, (patched, tried)


def test_a_patch_gives_up_where_its_shortcut_does_not_hold():
    site = 10 << 24
    by_len = {0: {0: _cls(1)}, 32: {site + i: _cls(2 + i % 3) for i in range(300)}}
    code = _fresh_scope(_scope(by_len, 4), IDS, CID)
    d, src = code.dir, code.src
    assert d is not None and d.skip > 0
    for change in ({0: {0: _cls(7)}},  # the /0's class: every entry's fallback
                   {8: {site: _cls(7)}},  # a prefix as short as the shared bits
                   {32: {(11 << 24) + 5: _cls(7)}}):  # outside the shared bits
        new = {p: dict(g) for p, g in by_len.items()}
        for p, g in change.items():
            new.setdefault(p, {}).update(g)
        sn = _scope(new, 4)
        assert patch(d, sn, list(IDS), scope_delta(src, sn, 10**9), 1 << 30) is None, change
    new = {0: by_len[0], 32: {**by_len[32], site + 400: _cls(9)}}  # inside the shared bits
    sn = _scope(new, 4)
    delta = scope_delta(src, sn, 10**9)
    assert patch(d, sn, list(IDS), delta, d.size - 1) is None  # no room
    assert patch(d, sn, list(IDS), delta, d.size) is not None


@pytest.mark.parametrize("k", [1, 50])
def test_content_reuses_and_patches_and_matches_a_fresh_encoding(k):
    """Through encode.content: the unchanged scopes are the same objects,
    the changed DIR scope is patched (its plan kept), and every address
    answers as in a fresh encoding of the new policy."""
    rnd = random.Random(k)
    nets = sorted({f"10.{rnd.randrange(4)}.{rnd.randrange(256)}.{rnd.randrange(256)}/32" for _ in range(3000)})
    fresh = sorted(set(nets[k:]) | {f"10.3.{i}.1/32" for i in range(k)})
    a, b = compile_text(netset_policy(nets)), compile_text(netset_policy(fresh))
    ca = encode.content(a.image)
    cb = encode.content(b.image, like=ca)
    ref = encode.content(b.image)
    key = (0, 0, 4)
    assert cb.scopes[key].dir is not None and cb.scopes[key].dir.levels == ca.scopes[key].dir.levels
    unchanged = [s for s in ca.scopes if s != key]
    assert unchanged and all(cb.scopes[s].fields is ca.scopes[s].fields for s in unchanged)
    for m in encode.GEN_MAPS:
        if m != encode.DIR:
            assert cb.maps[m] == ref.maps[m], m
    d, r = cb.scopes[key].dir, ref.scopes[key].dir
    width = 32
    by_len: dict[int, dict[int, bytes]] = {}
    src = next(s for s in b.image.addr_scopes if (s.chain, s.side, s.family) == key)
    for kk, c in zip(src.keys, src.classes):
        by_len.setdefault(kk & 0xFF, {})[kk >> 8] = _cls(ref.scopes[key].cid[c])
    probes = _probes(rnd, width, by_len)
    _check_walk(d, by_len, width, probes)
    _check_walk(r, by_len, width, probes)


@pytest.mark.parametrize("width", [32, 128])
def test_the_native_merge_finds_what_the_gallop_finds(width):
    """loader/native/scopemerge.c, taking over after a few places, gives
    the delta the gallop alone gives (and gives up at the same limit)."""
    if scopediff.native() is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{scopediff.NATIVE_LIB} was not built (make -C bpf)")
        pytest.skip(f"{scopediff.NATIVE_LIB} not built (make -C bpf)")
    rnd = random.Random(width + 7)
    fam = 4 if width == 32 else 6
    for trial in range(60):
        kind = rnd.choice(("dense", "nested", "spread"))
        old = _base_set(rnd, width, kind)
        new = _changed(rnd, old, width, kind, rnd.choice((5, 40, 300)))
        so, sn = _scope(old, fam), _scope(new, fam)
        alone = scope_delta(so, sn, 10**9, gallop_places=10**9)
        for places in (0, 3):
            merged = scope_delta(so, sn, 10**9, gallop_places=places)
            assert (merged.removed, merged.added, merged.changed) == (alone.removed, alone.added, alone.changed)
            if len(alone) > 1:
                assert scope_delta(so, sn, len(alone) - 1, gallop_places=places) is None, trial


@pytest.mark.parametrize("family", [4, 6])
def test_a_record_carries_what_patching_needs(family, monkeypatch):
    """`hepbpf apply` is a new process: what it patches comes from the
    generation record (dump_generations), and gives what the process that
    wrote the record would have given."""
    rnd = random.Random(family)
    if family == 4:
        nets = sorted({f"10.{rnd.randrange(4)}.{rnd.randrange(256)}.{rnd.randrange(256)}/32" for _ in range(2000)})
        fresh = {f"10.3.{i}.1/32" for i in range(5)}
    else:
        nets = sorted({f"2001:db8::1:{rnd.randrange(1 << 16):x}/128" for _ in range(2000)})
        fresh = {f"2001:db8::1:{x:x}/128" for x in rnd.sample(range(1 << 16), 40)} - set(nets)
    a = compile_text(netset_policy(nets))
    b = compile_text(netset_policy(sorted(set(nets[5:]) | fresh)))
    ca = encode.content(a.image)
    meta, held = encode.load_generations(encode.dump_generations({"x": 1}, [ca, ca]))
    assert meta == {"x": 1} and held[0].scopes and held[0].maps == ca.maps
    patched = []
    real = encode.patch
    monkeypatch.setattr(encode, "patch", lambda *args: patched.append(real(*args)) or patched[-1])
    from_record = encode.content(b.image, like=held[0])
    in_process = encode.content(b.image, like=ca)
    assert patched and all(p is not None for p in patched)
    assert from_record.maps == in_process.maps
    again = encode.load_generations(encode.dump_generations({}, [from_record, None]))[1][0]
    assert again.maps == from_record.maps
    assert again.scopes.keys() == {k for k, c in from_record.scopes.items() if c.dir is not None}  # DIR ones only


@pytest.mark.parametrize("with_native", [True, False])
def test_dir_runs_turn_the_old_entries_into_the_new(with_native, monkeypatch):
    """encode._dir_runs, written over the old entries (and past their end,
    where the new ones grew), gives the new entries: a few changes, changes
    all over (the native search, runs coalesced), none; with and without
    the native helper."""
    if with_native and scopediff.native() is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{scopediff.NATIVE_LIB} was not built (make -C bpf)")
        pytest.skip(f"{scopediff.NATIVE_LIB} not built (make -C bpf)")
    if not with_native:
        monkeypatch.setattr(encode, "native", lambda: None)
    rnd = random.Random(5)
    for trial in range(100):
        n = 4 * rnd.choice((100, 5000, 300_000))
        old = rnd.randbytes(n)
        new = bytearray(old)
        for _ in range(rnd.choice((0, 1, 3, 50, 2000))):
            new[rnd.randrange(n)] ^= 1
        grown = rnd.randbytes(rnd.choice((0, 64)))
        new = bytes(new) + grown
        written = bytearray(old) + bytes(len(grown))
        for first, blob in encode._dir_runs(10, old, new):
            written[4 * (first - 10):4 * (first - 10) + len(blob)] = blob
        assert bytes(written) == new, trial
