"""vm/kernels.txt, the kernels `make vm-test` boots: its parser, the
KERNEL= selection, and the pinned list itself."""

import pytest

from hepbpf.vm.qemu import kernels
from hepbpf.vm.qemu.initramfs import Cpio

TEXT = """\
# name package version
6.1   linux-image-6.1.0-56-cloud-amd64-unsigned   6.1.192-2   # trailing comment

6.12  linux-image-6.12.117+deb12-cloud-amd64-unsigned  6.12.117-1~deb12u1
"""


def test_parse_skips_comments_and_blank_lines():
    ks = kernels.parse(TEXT)
    assert [(k.name, k.package, k.version) for k in ks] == [
        ("6.1", "linux-image-6.1.0-56-cloud-amd64-unsigned", "6.1.192-2"),
        ("6.12", "linux-image-6.12.117+deb12-cloud-amd64-unsigned", "6.12.117-1~deb12u1"),
    ]


@pytest.mark.parametrize("bad, msg", [("6.1 only-a-package\n", "want 'name package version'"),
                                      ("a p 1\na q 2\n", "a listed twice")])
def test_parse_rejects(bad, msg):
    with pytest.raises(ValueError, match=msg):
        kernels.parse(bad)


def test_select():
    ks = kernels.parse(TEXT)
    assert kernels.select(ks, "all") == ks
    assert [k.name for k in kernels.select(ks, "6.12,6.1")] == ["6.12", "6.1"]
    with pytest.raises(ValueError, match="unknown kernel 5.10"):
        kernels.select(ks, "5.10")


def test_the_pinned_list_has_both_debian_12_kernels():
    ks = kernels.load()
    assert {k.name for k in ks} >= {"6.1", "6.12"}
    for k in ks:
        assert k.package.startswith(f"linux-image-{k.name}.") and k.package.endswith("-cloud-amd64-unsigned")


def test_cpio_entries_are_4_byte_aligned_newc():
    c = Cpio()
    c.file("init", b"#!/bin/sh\n", 0o755)
    c.chardev("dev/console", 5, 1)
    data = c.bytes()
    assert data.startswith(b"070701") and len(data) % 4 == 0
    assert data.count(b"070701") == 3 and b"TRAILER!!!\0" in data
