"""The lock-out guard: `attach --confirm-within SECONDS`.

An attach with a deadline is *pending*: unless `hepbpf confirm IFACE` runs
in time, a watchdog process puts back what was there before - the previous
policy (re-compiled from the inputs kept beside the state: the policy texts
as they were then, and the options), or nothing (detach) if hepbpf was not
attached. The watchdog is a session of its own with no terminal, so it
outlives the SSH connection the new policy may have cut.

Files beside the interface's state (attach.side_path):
  <iface>.pending  {"deadline", "token", "pid", "rollback": inputs or null}
  <iface>.inputs   what re-creates the current attachment
The token is the XDP program id of the pending attachment: a newer attach
(or a detach) changes or removes the file, and the old watchdog stands down.
A second pending attach keeps the first one's rollback target, so the
rollback always returns to the last confirmed state.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import asdict

from hepbpf.compiler import Compiled

from . import attach as attach_mod
from .encode import EventSettings

POLL_S = 0.2


def rollback_target(iface: str) -> dict | None:
    """What a rollback would restore, read before attaching: the earlier
    pending attach's target if one is pending, else the current inputs
    (None: nothing attached, so a rollback detaches)."""
    pending = attach_mod.read_side(iface, "pending")
    if pending is not None:
        return pending.get("rollback")
    return attach_mod.read_side(iface, "inputs")


def arm(iface: str, seconds: float, token: int, rollback: dict | None) -> int:
    """Start the watchdog; returns its PID."""
    deadline = time.time() + seconds
    attach_mod.write_side(iface, "pending", {"deadline": deadline, "token": token, "pid": None,
                                             "rollback": rollback})
    log = attach_mod.side_path(iface, "watchdog.log")
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "hepbpf.loader.confirm", iface, str(token)],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True)
    pending = attach_mod.read_side(iface, "pending") or {}
    if pending.get("token") == token:
        pending["pid"] = proc.pid
        attach_mod.write_side(iface, "pending", pending)
    return proc.pid


def confirm(iface: str) -> dict | None:
    """Keep the pending attachment: returns what was pending, or None."""
    pending = attach_mod.read_side(iface, "pending")
    if pending is not None:
        attach_mod.remove_side(iface, "pending")
    return pending


def cancel(iface: str) -> bool:
    """A plain attach or a detach supersedes a pending one."""
    return attach_mod.remove_side(iface, "pending")


def make_inputs(sources: list[tuple[str, str]], paths: list[str], node: str, *, ct_size: int, egress: str,
                audit: bool, events: EventSettings) -> dict:
    """What re-creates an attachment: the policy texts as read, and every
    option that shapes it. JSON, so it can wait beside the state."""
    return {"sources": [list(s) for s in sources], "paths": paths, "node": node, "ct_size": ct_size,
            "egress": egress, "audit": audit, "events": asdict(events)}


def compile_inputs(iface: str, inputs: dict) -> Compiled:
    from hepbpf.compiler import compile_policy

    from .netdev import iface_addresses

    return compile_policy([(name, text) for name, text in inputs["sources"]], node=inputs["node"],
                          iface=iface, iface_addrs=iface_addresses(iface))


def attach_inputs(iface: str, compiled: Compiled, inputs: dict, mode: str) -> attach_mod.AttachResult:
    """Attach ``compiled`` with the options in ``inputs``, and keep them."""
    return attach_mod.attach(iface, compiled, mode=mode, node=inputs["node"], sources=inputs["paths"],
                             ct_size=inputs["ct_size"], tc_mechanism=inputs["egress"], audit=inputs["audit"],
                             events=EventSettings(**inputs["events"]), inputs=inputs)


def reapply(iface: str, inputs: dict) -> attach_mod.AttachResult:
    """Attach again what ``inputs`` describe, the way `hepbpf attach` did
    (mode auto: a replacement keeps the mode the interface runs)."""
    return attach_inputs(iface, compile_inputs(iface, inputs), inputs, mode="auto")


def _still_pending(iface: str, token: int) -> dict | None:
    pending = attach_mod.read_side(iface, "pending")
    return pending if pending is not None and pending.get("token") == token else None


def watch(iface: str, token: int) -> int:
    """The watchdog: wait for the deadline, then roll back if still pending."""
    while True:
        pending = _still_pending(iface, token)
        if pending is None:
            print(f"{time.strftime('%F %T')} {iface}: confirmed or superseded; no rollback", flush=True)
            return 0
        if time.time() >= pending["deadline"]:
            break
        time.sleep(POLL_S)
    target = pending.get("rollback")
    try:
        if target is None:
            # detach() removes every file of the interface, this log too.
            attach_mod.detach(iface)
            print(f"{time.strftime('%F %T')} {iface}: not confirmed in time: detached "
                  f"(nothing was attached before)", flush=True)
            return 0
        res = reapply(iface, target)
    except Exception as e:  # a rollback that fails must say so where status can see it
        attach_mod.write_side(iface, "rollback", {"at": time.time(), "ok": False, "error": str(e)})
        print(f"{time.strftime('%F %T')} {iface}: ROLLBACK FAILED: {e}", flush=True)
        return 1
    # attach() leaves the pending file alone: it is ours to drop.
    attach_mod.remove_side(iface, "pending")
    what = f"restored the previous policy (prog id {res.prog_id})"
    attach_mod.write_side(iface, "rollback", {"at": time.time(), "ok": True, "what": what})
    print(f"{time.strftime('%F %T')} {iface}: not confirmed in time: {what}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(watch(sys.argv[1], int(sys.argv[2])))
