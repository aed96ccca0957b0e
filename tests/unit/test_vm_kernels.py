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


K61 = kernels.parse(TEXT)[0]


def test_download_updates_the_lists_once_then_says_what_to_do(tmp_path, monkeypatch):
    calls = []

    def apt(argv, timeout, cwd=None):
        calls.append(argv[0])
        if cwd is not None:
            (cwd / "half.deb").write_bytes(b"partial")  # an interrupted download
        return 100, "E: Version '6.1.192-2' for 'linux-image-6.1.0-56-cloud-amd64-unsigned' was not found"

    monkeypatch.setattr(kernels, "_apt", apt)
    with pytest.raises(kernels.FetchError) as e:
        kernels.download(K61, tmp_path)
    assert calls == ["download", "update", "download"]
    msg = str(e.value)
    assert "cannot download linux-image-6.1.0-56-cloud-amd64-unsigned=6.1.192-2" in msg
    assert "was not found" in msg and "re-pin vm/kernels.txt" in msg
    assert f"{tmp_path}/, as linux-image-6.1.0-56-cloud-amd64-unsigned_6.1.192-2_amd64.deb" in msg
    assert [p.name for p in tmp_path.iterdir()] == []  # nothing half-downloaded is left for the next run


@pytest.mark.parametrize("rc, words", [
    (100, "E: Failed to fetch http://deb.debian.org/debian-security/pool/updates/main/l/linux/x.deb  "
          "Connection failed [IP: 127.0.0.1 39999]"),
    (-1, "apt-get download still running after 300 s, stopped")])
def test_download_does_not_retry_a_failed_transfer(tmp_path, monkeypatch, rc, words):
    calls = []
    monkeypatch.setattr(kernels, "_apt", lambda argv, timeout, cwd=None: calls.append(argv[0]) or (rc, words))
    with pytest.raises(kernels.FetchError, match="network is down"):
        kernels.download(K61, tmp_path)
    assert calls == ["download"]


def test_download_keeps_the_package_under_its_pinned_name(tmp_path, monkeypatch):
    def apt(argv, timeout, cwd=None):
        assert argv[0] == "download" and argv[-1] == "linux-image-6.1.0-56-cloud-amd64-unsigned=6.1.192-2"
        assert timeout <= 300
        (cwd / "linux-image-6.1.0-56-cloud-amd64-unsigned_6.1.192-2_amd64.deb").write_bytes(b"deb")
        return 0, ""

    monkeypatch.setattr(kernels, "_apt", apt)
    deb = kernels.download(K61, tmp_path)
    assert deb == tmp_path / "linux-image-6.1.0-56-cloud-amd64-unsigned_6.1.192-2_amd64.deb"
    assert [p.name for p in tmp_path.iterdir()] == [deb.name]
    monkeypatch.setattr(kernels, "_apt", None)  # present: no apt at all
    assert kernels.download(K61, tmp_path) == deb


def test_apt_waits_are_bounded(monkeypatch):
    seen = {}

    def run(argv, **kw):
        seen.update(argv=argv, timeout=kw.get("timeout"))
        raise kernels.subprocess.TimeoutExpired(argv, kw["timeout"])

    monkeypatch.setattr(kernels.subprocess, "run", run)
    assert kernels._apt(["update"], 5) == (-1, "apt-get update still running after 5 s, stopped")
    assert seen["timeout"] == 5 and "Acquire::http::Timeout=30" in seen["argv"]
