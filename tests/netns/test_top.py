"""`hepbpf top` over a real attachment and real traffic: the batch snapshot
(`--once`) shows each rule's exact packet count, and the full-screen view,
run inside a real terminal (a tmux pane of a private tmux server), shows
the rules, re-sorts and filters on key presses, follows a resize, shows
live rates, and on `q` (or SIGTERM, or Ctrl-C) leaves the alternate screen
and puts the terminal modes back.

Every wait is bounded; the processes started here (the tmux server on its
own socket, the top process in its pane) are killed by PID if they hang.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from hepbpf.vm.lab import NODE4
from hepbpf.vm.probe import PacketSpec, probe

from ..cases import IFACE, NODE, deny_then_allow
from .conftest import hepbpf

pytestmark = pytest.mark.netns

DENY_PORT, ALLOW_PORT = 7777, 8080  # outside the failsafe ports
DENIED, ALLOWED = 3, 7
POLICY = deny_then_allow("web-guard", DENY_PORT, ALLOW_PORT)
COLS = ["IFACE", "DIR", "SLOT", "ACTION", "PKT/S", "BYTES/S", "PACKETS", "BYTES", "TIER", "POLICY", "RULE"]
WAIT_S = 20.0  # the most any one screen may take to appear


def send(lab, dport: int, n: int, first_sport: int) -> list[bool]:
    """``n`` TCP SYNs to the node's ``dport``, each its own flow (so each
    meets the rule, not conntrack); which ones got past XDP."""
    c = lab.clients[0]
    return probe(lab, c, [PacketSpec("tcp", c.addrs4[0], NODE4, sport=first_sport + i, dport=dport)
                          for i in range(n)])


@pytest.fixture(scope="module")
def attached(lab, tmp_path_factory):
    res = hepbpf(lab, "top", IFACE, "--once", "-d", "0.1", check=False)
    assert res.returncode == 1 and res.stdout.strip() == f"{IFACE}: hepbpf is not attached", res
    path = tmp_path_factory.mktemp("top") / "policy.yaml"
    path.write_text(POLICY)
    hepbpf(lab, "attach", IFACE, str(path), "--node", NODE)
    assert send(lab, DENY_PORT, DENIED, 41000) == [False] * DENIED
    assert send(lab, ALLOW_PORT, ALLOWED, 42000) == [True] * ALLOWED
    try:
        yield lab
    finally:
        hepbpf(lab, "detach", IFACE, check=False)


def table(lines: list[str]) -> list[dict]:
    """The table's rows as {column: cell} (every column present: wide screens)."""
    try:
        start = next(i for i, line in enumerate(lines) if line.split() == COLS)
    except StopIteration:
        return []
    out = []
    for line in lines[start + 1:]:
        cells = line.split()
        if len(cells) != len(COLS):
            break
        out.append(dict(zip(COLS, cells)))
    return out


def rule_rows(rows: list[dict]) -> dict[str, dict]:
    return {r["RULE"]: r for r in rows if r["POLICY"] == "web-guard"}


# --- --once ---------------------------------------------------------------------------

def test_once_shows_exact_rule_counts(attached):
    res = hepbpf(attached, "top", IFACE, "--once", "-d", "0.3")
    assert "\x1b" not in res.stdout
    lines = res.stdout.splitlines()
    assert re.match(r"hepbpf top - \d\d:\d\d:\d\d, rates over 0.3 s, sort: rate$", lines[0])
    assert f"{IFACE}: ENFORCING" in lines
    assert re.search(rf"ingress .*\brule-deny {DENIED}\b", res.stdout)
    assert re.search(rf"ingress .*\brule-allow {ALLOWED}\b", res.stdout)
    web = rule_rows(table(lines))
    assert web["0"]["ACTION"] == "Deny" and web["0"]["PACKETS"] == str(DENIED)
    assert web["1"]["ACTION"] == "Allow" and web["1"]["PACKETS"] == str(ALLOWED)
    assert web["0"]["DIR"] == web["1"]["DIR"] == "ingress" and web["0"]["TIER"] == "default"
    # No traffic during the interval: measured rates, all zero.
    assert web["0"]["PKT/S"] == web["1"]["PKT/S"] == "0"
    # Every rule slot is listed, failsafes and steering slots too.
    assert {"(failsafe)", "(conntrack)", "(no-profile)"} <= {r["POLICY"] for r in table(lines)}

    filtered = hepbpf(attached, "top", IFACE, "--once", "-d", "0.1", "--filter", "rule-allow", "--sort", "policy")
    rows = table(filtered.stdout.splitlines())
    assert [(r["POLICY"], r["RULE"], r["PACKETS"]) for r in rows] == [("web-guard", "1", str(ALLOWED))]


def test_without_a_terminal_top_refuses(attached):
    res = hepbpf(attached, "top", IFACE, "-d", "0.3", check=False)
    assert res.returncode == 2 and res.stdout == ""
    assert "hepbpf top needs a terminal; use --once for a batch snapshot" in res.stderr


# --- the full-screen view in a real terminal ------------------------------------------

class Pane:
    """`hepbpf top` in a pane of a tmux server of our own (own socket, own
    config). The pane runs a shell that starts top, then prints its exit
    status and the terminal's modes (``stty -a``) once it is gone."""

    def __init__(self, lab, tmp_path, *args: str, width: int = 130, height: int = 45):
        self.sock = f"hepbpf-top-{os.getpid()}-{os.urandom(3).hex()}"
        conf = tmp_path / "tmux.conf"
        conf.write_text("set -g status off\nset -g default-shell /bin/sh\nset -g history-limit 100\n")
        argv = " ".join(["ip", "netns", "exec", lab.node_ns, sys.executable, "-m", "hepbpf.cli", "top", *args])
        # The shell outlives a Ctrl-C meant for top (a trap with a command is
        # reset to the default in top, unlike an ignored signal).
        script = f'trap true INT; {argv}; echo "top exited $?"; stty -a; sleep 60'
        self.server_pid = self.top_pid = None
        self._tmux("-f", str(conf), "new-session", "-d", "-s", "top", "-x", str(width), "-y", str(height), script)
        try:
            self.server_pid = int(self._tmux("display-message", "-p", "-t", "top", "#{pid}"))
            self.shell_pid = int(self._tmux("display-message", "-p", "-t", "top", "#{pane_pid}"))
            self.top_pid = self._child_of_shell()
        except BaseException:
            self.close()
            raise

    def _tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.sock, *args], capture_output=True, text=True, check=True,
                              timeout=10).stdout.strip()

    def _child_of_shell(self) -> int:
        deadline = time.monotonic() + 5
        path = f"/proc/{self.shell_pid}/task/{self.shell_pid}/children"
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                kids = open(path).read().split()
                if kids:
                    return int(kids[0])  # `ip netns exec` execs: this PID becomes top's
            time.sleep(0.02)
        raise AssertionError("the pane's shell started nothing")

    def fmt(self, what: str) -> str:
        return self._tmux("display-message", "-p", "-t", "top", what)

    def screen(self, joined: bool = False) -> list[str]:
        """The visible screen; ``joined``: lines the terminal wrapped, whole."""
        return self._tmux("capture-pane", "-p", *(["-J"] if joined else []), "-t", "top").splitlines()

    def keys(self, *keys: str, literal: bool = False) -> None:
        self._tmux("send-keys", "-t", "top", *(["-l"] if literal else []), *keys)

    def wait(self, what: str, ok, timeout: float = WAIT_S, poll: float = 0.05, joined: bool = False) -> list[str]:
        """The first screen ``ok`` accepts, polled until ``timeout``."""
        deadline = time.monotonic() + timeout
        lines: list[str] = []
        while time.monotonic() < deadline:
            lines = self.screen(joined)
            if ok(lines):
                return lines
            time.sleep(poll)
        raise AssertionError(f"no screen with {what} within {timeout} s; last one:\n" + "\n".join(lines))

    def alive(self) -> bool:
        return self.top_pid is not None and _running(self.top_pid)

    def close(self) -> None:
        if self.alive():
            os.kill(self.top_pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.SubprocessError):
            self._tmux("kill-server")
        if self.server_pid is not None:
            deadline = time.monotonic() + 3
            while _running(self.server_pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            if _running(self.server_pid):
                os.kill(self.server_pid, signal.SIGKILL)
        with contextlib.suppress(OSError):  # a killed server leaves its socket
            os.unlink(f"{os.environ.get('TMUX_TMPDIR', '/tmp')}/tmux-{os.geteuid()}/{self.sock}")


def _running(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie does not: its parent reaps it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.fixture
def pane_factory(tmp_path):
    if shutil.which("tmux") is None:
        pytest.skip("needs tmux")
    panes = []

    def make(lab, *args, **kw) -> Pane:
        p = Pane(lab, tmp_path, *args, **kw)
        panes.append(p)
        return p

    yield make
    for p in panes:
        p.close()


def _order(rows: list[dict]) -> list[str]:
    return [r["RULE"] for r in rows if r["POLICY"] == "web-guard"]


def _sorted_by(lines: list[str], key: str) -> bool:
    return bool(lines) and f"sort: {key}" in lines[0]


def _exited(lines: list[str]) -> bool:
    # The exit status, then `stty -a`'s modes: wait for both (the pane may be
    # captured between the two lines).
    return (any(line.startswith("top exited ") for line in lines)
            and re.search(r"\bicanon\b", " ".join(lines)) is not None)


def test_interactive_view(attached, pane_factory):
    pane = pane_factory(attached, IFACE, "-d", "0.3")
    # The rules and their counts; the first sorted by rate (all idle: then by total).
    lines = pane.wait("both rules", lambda s: len(rule_rows(table(s))) == 2 and _sorted_by(s, "rate"))
    assert re.match(r"hepbpf top - \d\d:\d\d:\d\d, every 0.3 s, sort: rate", lines[0])
    assert f"{IFACE}: ENFORCING" in lines
    web = rule_rows(table(lines))
    assert (web["0"]["ACTION"], web["0"]["PACKETS"]) == ("Deny", str(DENIED))
    assert (web["1"]["ACTION"], web["1"]["PACKETS"]) == ("Allow", str(ALLOWED))
    assert _order(table(lines)) == ["1", "0"]  # 7 packets before 3
    assert lines[-1].startswith("q quit  s sort")  # the key help, on the last line
    assert pane.fmt("#{alternate_on} #{cursor_flag}") == "1 0"  # alternate screen, no cursor

    # `o`: by policy and rule; `s` goes on to the next key, rate.
    pane.keys("o")
    lines = pane.wait("sort: policy", lambda s: _sorted_by(s, "policy"))
    assert _order(table(lines)) == ["0", "1"]
    policies = [r["POLICY"] for r in table(lines)]
    assert policies[:2] == ["web-guard", "web-guard"] and "(conntrack)" in policies[2:]
    pane.keys("s")
    lines = pane.wait("sort: rate", lambda s: _sorted_by(s, "rate"))
    assert _order(table(lines)) == ["1", "0"]
    pane.keys("s")
    lines = pane.wait("sort: packets", lambda s: _sorted_by(s, "packets"))
    assert _order(table(lines)) == ["1", "0"]

    # `/` + text + Enter: only matching rows; `c` clears.
    pane.keys("/")
    pane.keys("Deny", literal=True)
    pane.keys("Enter")
    lines = pane.wait("the filter", lambda s: s and "filter: 'Deny'" in s[0] and _order(table(s)) == ["0"])
    rows = table(lines)
    assert rows and all(r["ACTION"] == "Deny" for r in rows)
    assert "(no-profile)" in {r["POLICY"] for r in rows} and "(failsafe)" not in {r["POLICY"] for r in rows}
    assert lines[-1].startswith("q quit")  # editing is over
    pane.keys("c")
    lines = pane.wait("no filter", lambda s: s and "filter:" not in s[0] and len(rule_rows(table(s))) == 2)
    assert "(failsafe)" in {r["POLICY"] for r in table(lines)}

    # Live rates: while packets arrive the rule's PKT/S is not zero, then it
    # is again. (The probe returns only after its sniffer has waited out the
    # drops, longer than one interval: watch the screen meanwhile.)
    sent: list = []
    sender = threading.Thread(target=lambda: sent.append(send(attached, DENY_PORT, DENIED, 43000)))
    sender.start()
    rates = set()
    deadline = time.monotonic() + 15.0
    while time.monotonic() < deadline:
        row = rule_rows(table(pane.screen())).get("0")
        if row:
            rates.add(row["PKT/S"])
            if row["PACKETS"] == str(2 * DENIED) and row["PKT/S"] == "0" and len(rates) > 1:
                break
        time.sleep(0.03)
    sender.join(timeout=max(0.0, deadline - time.monotonic()) + 5)
    assert sent == [[False] * DENIED]
    busy = {float(r) for r in rates if r not in ("0", "-")}
    assert busy and all(0 < r <= 2 * DENIED / 0.3 for r in busy), rates
    assert rule_rows(table(pane.screen()))["0"]["PACKETS"] == str(2 * DENIED)

    # A smaller terminal: redrawn to fit (SIGWINCH), minor columns dropped.
    pane._tmux("resize-window", "-t", "top", "-x", "72", "-y", "16")
    lines = pane.wait("the small screen", lambda s: len(s) == 16 and "q quit" in s[-1]
                      and any(line.split()[:2] == ["IFACE", "DIR"] for line in s))
    head = next(line.split() for line in lines if line.split()[:2] == ["IFACE", "DIR"])
    assert "SLOT" not in head and "POLICY" in head and "RULE" in head, "\n".join(lines)
    assert re.match(r"\[rows 1-\d+ of \d+\]  q quit", lines[-1])  # the table does not fit: which rows show
    assert all(len(line) <= 72 for line in lines) and any(len(line) == 72 for line in lines)

    # `q`: exits 0 promptly, off the alternate screen, cursor and modes back.
    t0 = time.monotonic()
    pane.keys("q")
    lines = pane.wait("top's exit", _exited, timeout=5.0, joined=True)
    assert time.monotonic() - t0 < 5.0
    assert "top exited 0" in lines
    modes = " ".join(lines)
    assert re.search(r"(?<!-)\bicanon\b", modes) and re.search(r"(?<!-)\becho\b", modes), modes
    assert pane.fmt("#{alternate_on} #{cursor_flag}") == "0 1"
    assert not pane.alive()


@pytest.mark.parametrize("how", ["SIGTERM", "Ctrl-C"])
def test_stopped_otherwise_it_restores_the_terminal(attached, pane_factory, how):
    pane = pane_factory(attached, IFACE, "-d", "0.3", "--sort", "policy", "--filter", "web")
    lines = pane.wait("the filtered rules", lambda s: _order(table(s)) == ["0", "1"])
    assert "filter: 'web'" in lines[0] and len(table(lines)) == 2
    assert pane.fmt("#{alternate_on} #{cursor_flag}") == "1 0"
    if how == "SIGTERM":
        os.kill(pane.top_pid, signal.SIGTERM)
    else:
        pane.keys("C-c")
    lines = pane.wait("top's exit", _exited, timeout=5.0, joined=True)
    assert "top exited 0" in lines
    assert not re.search(r"-icanon|-echo\b", " ".join(lines))
    assert pane.fmt("#{alternate_on} #{cursor_flag}") == "0 1"
