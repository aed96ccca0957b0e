"""Random and mutated frames through the XDP program: it never crashes and
never lets through what the reference denies. Each frame is read by an
independent Python parser (tests/frameparse.py) and judged by the reference
evaluator; the kernel must give the same verdict and reason."""

import os
import random

import pytest

from hepbpf.compiler import compile_policy, evaluate
from hepbpf.compiler.mapimage import CHAINS
from hepbpf.loader.datapath import load_image
from hepbpf.loader.frames import frame

from ..frameparse import read
from ..gen import IFACE, NODE, Gen

pytestmark = pytest.mark.bpf

FRAMES = int(os.environ.get("HEPBPF_FUZZ_FRAMES", "20000"))
PER_SET = 500


def _mutate(r: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(r.randint(1, 4)):
        op = r.random()
        if op < 0.5 and len(b) > 14:
            i = r.randrange(12, min(len(b), 90))
            b[i] = r.randrange(256) if r.random() < 0.5 else b[i] ^ (1 << r.randrange(8))
        elif op < 0.7:
            b = b[:r.randint(14, len(b))]
        elif op < 0.85:
            b += bytes(r.randrange(256) for _ in range(r.randint(1, 40)))
        else:
            b[12:14] = r.choice([b"\x08\x00", b"\x86\xdd", b"\x81\x00", b"\x08\x06"])
    return bytes(b)


def test_fuzzed_frames_agree_with_the_reference(capsys):
    r = random.Random(1234)
    checked = denied = 0
    for seed in range(max(1, FRAMES // PER_SET)):
        draw = Gen(1000 + seed).draw(PER_SET)
        comp = compile_policy([(f"seed-{seed}.json", draw.text)], node=NODE, iface=IFACE)
        with load_image(comp.image, trace=True) as dp:
            for pkt in draw.packets:
                data = _mutate(r, frame(pkt)) if r.random() < 0.9 else \
                    bytes(r.randrange(256) for _ in range(r.randint(14, 120)))
                # The XDP and the tc program parse alike. test_run refuses an
                # skb shorter than Ethernet plus an IP header (the stack never
                # makes one), so short frames go to XDP only.
                chain = r.choice(CHAINS) if len(data) >= 14 + 40 else CHAINS[0]
                parsed = read(data)
                if parsed in ("malformed", "fragment"):
                    want = ("deny", parsed)
                elif parsed == "not-ip":
                    want = ("allow", "not-ip")
                else:
                    v = evaluate(comp.views[chain], parsed)
                    want = (v.verdict, v.reason)
                got = dp.run(data, chain)
                if got.verdict == "allow":
                    dp.forget_flows()  # each frame is judged as the first of its flow
                assert (got.verdict, got.reason) == want, f"seed {seed}: frame {data.hex()} read as {parsed}"
                checked += 1
                denied += want[0] == "deny"
    with capsys.disabled():
        print(f"\nfuzz: {checked} random/mutated frames agree with the reference ({denied} denied)")
