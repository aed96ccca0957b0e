"""encode's class summary from a vector's bytes (the path for dense
vectors) gives what class_summary gives, dense or sparse, with zero bytes
across word boundaries."""

import random
import sys

import pytest

from hepbpf.loader.encode import _summary_of_bytes, class_summary


def _vectors(r: random.Random, nwords: int):
    yield 0
    yield (1 << 64 * nwords) - 1
    yield 1 << (64 * nwords - 1)
    yield (0xFF << 60) & ((1 << 64 * nwords) - 1)  # bytes set on both sides of a word boundary
    for density in (0.001, 0.01, 0.1, 0.5, 0.9):
        for _ in range(200):
            vec = 0
            for w in range(nwords):
                if r.random() < density:
                    vec |= r.getrandbits(64) >> r.randint(0, 63) << 64 * w
            yield vec
    for _ in range(200):  # dense, with runs of zero bytes at any offset
        vec = r.getrandbits(64 * nwords)
        at, n = r.randint(0, 8 * nwords - 1), r.randint(1, 40)
        yield vec & ~(((1 << 8 * n) - 1) << 8 * at) & ((1 << 64 * nwords) - 1)


@pytest.mark.parametrize("nwords", [1, 2, 7, 110, 256])
def test_summary_from_bytes_is_class_summary(nwords):
    if sys.byteorder != "little":
        pytest.skip("the path is for little-endian hosts")
    r = random.Random(nwords)
    for vec in _vectors(r, nwords):
        raw = vec.to_bytes(8 * nwords, "little")
        assert _summary_of_bytes(vec, raw, nwords) == class_summary(vec, nwords), hex(vec)
