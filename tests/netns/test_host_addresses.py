"""The host's addresses decide whether an ingress packet is the host's or
forwarded; `hepbpf sync` (and `sync --follow`) keep them current."""

import subprocess
import sys
import time

import pytest

from hepbpf.vm.probe import PacketSpec, probe

from ..cases import gnp, hep
from .conftest import hepbpf

pytestmark = pytest.mark.netns

# Normal policy denies TCP 7000 to the host; forwarded packets meet no
# applyOnForward policy and are allowed (forward-allow).
POLICY = hep(profiles="[projectcalico-default-allow]") + gnp("deny-7000", """
selector: all()
ingress:
- action: Deny
  protocol: TCP
  destination: {ports: [7000]}
""")
NEW = "192.0.2.99"


def _reason_count(lab, reason):
    import json

    st = json.loads(hepbpf(lab, "status", "eth1", "-o", "json").stdout)
    return st["reasons_by_chain"]["ingress"][reason]["packets"]


def _addr(lab, op):
    subprocess.run(["ip", "-n", lab.node_ns, "addr", op, f"{NEW}/32", "dev", "lo"], check=True)


@pytest.mark.parametrize("follow", [False, True], ids=["sync", "follow"])
def test_a_new_address_counts_as_the_hosts_once_synced(lab, tmp_path, follow):
    path = tmp_path / "p.yaml"
    path.write_text(POLICY)
    hepbpf(lab, "attach", "eth1", str(path), "--node", "n1")
    spec = [PacketSpec("tcp", "198.51.100.7", NEW, dport=7000)]
    try:
        probe(lab, lab.clients[0], spec)
        assert _reason_count(lab, "forward-allow") >= 1  # not the host's address yet
        denied = _reason_count(lab, "rule-deny")
        if follow:
            argv = ["ip", "netns", "exec", lab.node_ns, sys.executable, "-m", "hepbpf.cli", "sync", "eth1",
                    "--follow", "5"]
            watcher = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
            try:
                assert "host addresses" in watcher.stdout.readline()  # the first sync is done
                _addr(lab, "add")
                assert "1 added" in watcher.stdout.readline()
            finally:
                watcher.kill()
                watcher.wait(timeout=5)
        else:
            _addr(lab, "add")
            assert "1 added" in hepbpf(lab, "sync", "eth1").stdout
        # A new flow (another source port): the first one is known now.
        probe(lab, lab.clients[0], [PacketSpec("tcp", "198.51.100.7", NEW, sport=40001, dport=7000)])
        assert _reason_count(lab, "rule-deny") == denied + 1
    finally:
        subprocess.run(["ip", "-n", lab.node_ns, "addr", "del", f"{NEW}/32", "dev", "lo"], capture_output=True)
        hepbpf(lab, "detach", "eth1")
