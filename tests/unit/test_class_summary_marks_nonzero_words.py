"""hep_class.sum, as the encoder computes it without a loop over words: bit
j set iff word j of the vector is not zero. The fold must not carry a
word's bits into its neighbour's (a lone bit 63 or bit 0 next to an empty
word), and every summary bit must fit the summary words."""

import random

import pytest

from hepbpf.loader import abi
from hepbpf.loader.encode import class_summary


def by_words(vec: int, nwords: int) -> int:
    return sum(1 << j for j in range(nwords) if (vec >> 64 * j) & (2**64 - 1))


@pytest.mark.parametrize("nwords", [1, 2, 63, 64, 65, 157, abi.const("HEP_MAX_WORDS")])
def test_summary_is_the_nonzero_words(nwords):
    rnd = random.Random(nwords)
    vecs = [0, (1 << 64 * nwords) - 1]
    for j in range(nwords):  # lone edge bits: nothing may reach word j - 1 or j + 1
        vecs += [1 << 64 * j, 1 << (64 * j + 63)]
    for _ in range(200):
        vec = 0
        for j in range(nwords):
            if rnd.random() < 0.3:
                vec |= rnd.getrandbits(64) << 64 * j
        vecs.append(vec)
    for vec in vecs:
        assert class_summary(vec, nwords) == by_words(vec, nwords)
    assert nwords <= 64 * abi.const("HEP_SUM_WORDS")
