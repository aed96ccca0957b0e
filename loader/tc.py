"""hepbpf's tc program on an interface's egress: attach, replace, query, detach.

Two mechanisms, one program (``hep_tc_egress``, recognised by its name):

* **tcx** (kernel 6.6+): a BPF link of type BPF_TCX_EGRESS on the ifindex.
  tcx runs many programs per hook, so ours goes last in the chain and the
  programs of others stay where they are. A link lives only while an fd or a
  bpffs pin holds it, so tcx needs a pin directory on a *persistent* bpffs
  (the link is pinned there as ``link_tc_egress``); without one (``pin_dir=None``)
  we use clsact, which lives in the interface. Replace is BPF_LINK_UPDATE on
  that link: the link id and the program's place stay, the program changes
  atomically. The kernel, not the pin, is the truth: the link is found by
  BPF_PROG_QUERY (program and link ids) even where the pin is out of sight.
* **clsact** (any kernel, and on request): a direct-action bpf filter at a
  fixed handle and priority (below) on the clsact qdisc's egress hook. The
  qdisc is created only if missing; whoever created it is told so
  (``created_qdisc``) and must hand that back to ``detach``, which deletes the
  qdisc only if hepbpf created it and no filter of anyone else is left on
  either hook. Replace re-adds the filter at the same handle/priority with
  NLM_F_REPLACE: cls_bpf swaps the program in place, atomically.

Nothing here touches a qdisc, filter or tcx program that is not ours. Every
call works on the network namespace of the calling thread.

"Persistent" matters: a pin on a bpffs that goes away (the private one of an
``ip netns exec`` command, see attach.bpffs_root) releases the link and so
detaches the program. Pass ``pin_dir=None`` when only such a bpffs is
reachable; clsact needs no pin.

Attaching where hepbpf already is refuses (``TcError``): call ``replace``,
which is the one way to change the program. ``replace`` keeps the mechanism
in use (it does not move clsact to tcx); to change it, detach and attach.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pyroute2 import IPRoute

from . import libbpf
from .libbpf import BpfAttachType, BpfError, TcAttachPoint
from .mapnames import TC_PROGRAM

# clsact filter identity. The handle spells "HEPB" in ASCII, so `tc filter
# show` names us; the priority (0x4845, "HE") is far from the values tools
# pick (1 for Cilium-style loaders, 49152 counting down for `tc filter add`
# without a pref), so a foreign filter is unlikely to sit there. Filters run
# in priority order, lowest first.
TC_HANDLE = 0x48455042
TC_PRIORITY = 0x4845
# The tcx link's pin, inside the caller's pin directory.
TCX_LINK_PIN = "link_tc_egress"

_TC_H_CLSACT = 0xFFFFFFF1  # parent of the clsact (and ingress) qdisc
_TC_H_INGRESS_HOOK = 0xFFFFFFF2  # TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS)
_TC_H_EGRESS_HOOK = 0xFFFFFFF3  # TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_EGRESS)

Mechanism = Literal["tcx", "clsact"]


class TcError(RuntimeError):
    """hepbpf refused to act (something not ours is in the way, or nothing
    of ours is there); kernel and libbpf failures raise ``BpfError``."""


@dataclass(frozen=True, slots=True)
class TcAttachment:
    """hepbpf's program on one interface's egress.

    ``created_qdisc`` is known only to the ``attach`` that created the clsact
    qdisc (a query cannot tell): keep it and pass it to ``detach``.
    """

    mechanism: Mechanism
    ifindex: int
    prog_id: int
    link_id: int | None = None  # tcx
    pin_path: str | None = None  # tcx: where the link is pinned, if we know
    handle: int | None = None  # clsact
    priority: int | None = None  # clsact
    created_qdisc: bool = False  # clsact
    replaced: bool = False
    notes: tuple[str, ...] = ()


# --- probing -------------------------------------------------------------------------


@functools.cache
def tcx_supported() -> bool:
    """Whether this kernel has tcx (6.6+ with CONFIG_NET_XGRESS), probed
    once: BPF_PROG_QUERY for BPF_TCX_EGRESS on lo answers (an empty chain)
    where tcx exists and says EINVAL where it does not. Other errors (EPERM
    without CAP_NET_ADMIN) raise and are not cached."""
    try:
        libbpf.prog_query(socket.if_nametoindex("lo"), BpfAttachType.TCX_EGRESS)
    except BpfError as e:
        if e.errno in (errno.EINVAL, errno.EOPNOTSUPP):
            return False
        raise
    return True


# --- query ---------------------------------------------------------------------------


def _prog_name(prog_id: int) -> str | None:
    """The program's name, or None if it is gone meanwhile."""
    try:
        fd = libbpf.prog_fd_by_id(prog_id)
    except BpfError as e:
        if e.errno == errno.ENOENT:
            return None
        raise
    try:
        return libbpf.prog_info(fd)["name"]
    finally:
        os.close(fd)


def _tcx_ours(ifindex: int) -> list[TcAttachment]:
    if not tcx_supported():
        return []
    q = libbpf.prog_query(ifindex, BpfAttachType.TCX_EGRESS)
    return [TcAttachment("tcx", ifindex, pid, link_id=lid or None)
            for pid, lid in zip(q["prog_ids"], q["link_ids"]) if _prog_name(pid) == TC_PROGRAM]


def _clsact_kind(ifindex: int) -> str | None:
    """The kind of qdisc at the clsact attach point ('clsact', 'ingress') or None."""
    with IPRoute() as ipr:
        for q in ipr.get_qdiscs(index=ifindex):
            if q["parent"] == _TC_H_CLSACT:
                return q.get_attr("TCA_KIND")
    return None


def _slot_taken(ifindex: int) -> bool:
    """Whether a bpf filter sits at our handle/priority on clsact egress.
    (bpf_tc_query cannot say: on a hook without any filter the kernel
    answers EINVAL, as for a bad request.)"""
    with IPRoute() as ipr:
        return any(f["info"] >> 16 == TC_PRIORITY and f["handle"] == TC_HANDLE and f.get_attr("TCA_KIND") == "bpf"
                   for f in ipr.get_filters(index=ifindex, parent=_TC_H_EGRESS_HOOK))


def _clsact_ours(ifindex: int) -> TcAttachment | None:
    if _clsact_kind(ifindex) != "clsact" or not _slot_taken(ifindex):
        return None
    prog_id = libbpf.tc_query(ifindex, TcAttachPoint.EGRESS, handle=TC_HANDLE, priority=TC_PRIORITY)
    if prog_id is None or _prog_name(prog_id) != TC_PROGRAM:
        return None
    return TcAttachment("clsact", ifindex, prog_id, handle=TC_HANDLE, priority=TC_PRIORITY)


def query_all(ifindex: int) -> list[TcAttachment]:
    """Every hepbpf program on ``ifindex``'s egress: tcx links first, then
    our clsact filter. More than one means an interrupted migration or
    someone else's doing; ``detach`` removes them all."""
    found = _tcx_ours(ifindex)
    clsact = _clsact_ours(ifindex)
    return found + ([clsact] if clsact else [])


def query(ifindex: int) -> TcAttachment | None:
    """What hepbpf has on ``ifindex``'s egress (tcx preferred), or None."""
    found = query_all(ifindex)
    return found[0] if found else None


# --- attach --------------------------------------------------------------------------


def attach(ifindex: int, prog_fd: int, *, pin_dir: str | os.PathLike[str] | None,
           mechanism: Literal["auto", "tcx", "clsact"] = "auto") -> TcAttachment:
    """Attach ``prog_fd`` (hep_tc_egress) to ``ifindex``'s egress.

    ``auto`` and ``tcx`` use tcx when the kernel has it and ``pin_dir`` (a
    directory on a persistent bpffs, created if missing) is given; otherwise
    clsact, saying why in ``notes``. An explicit ``tcx`` on a kernel without
    it raises. Refuses (TcError) if hepbpf is already there: use replace().
    """
    if mechanism not in ("auto", "tcx", "clsact"):
        raise ValueError(f"mechanism must be auto, tcx or clsact, not {mechanism!r}")
    current = query_all(ifindex)
    if current:
        raise TcError(f"hepbpf is already on egress of ifindex {ifindex} ({_describe(current[0])}); "
                      f"replace() swaps the program, detach() removes it")
    notes: list[str] = []
    if mechanism != "clsact":
        if not tcx_supported():
            if mechanism == "tcx":
                raise TcError("this kernel has no tcx (needs 6.6+ with CONFIG_NET_XGRESS); use clsact")
            notes.append("note: the kernel has no tcx; attached through clsact")
        elif pin_dir is None:
            notes.append("note: no persistent pin directory, and a tcx link dies with its last fd; "
                         "attached through clsact")
        else:
            return _tcx_attach(ifindex, prog_fd, Path(pin_dir), notes)
    return _clsact_attach(ifindex, prog_fd, notes)


def _tcx_attach(ifindex: int, prog_fd: int, pin_dir: Path, notes: list[str]) -> TcAttachment:
    pin_dir.mkdir(parents=True, exist_ok=True)
    pin = pin_dir / TCX_LINK_PIN
    if os.path.lexists(pin):
        if not _defunct_link_pin(pin):
            raise TcError(f"{pin} already pins a live link (not on this interface's egress); not replacing it")
        pin.unlink()
        notes.append(f"note: removed the pin of a detached link at {pin}")
    fd = libbpf.link_create(prog_fd, ifindex, BpfAttachType.TCX_EGRESS)
    try:
        info = libbpf.link_info(fd)
        libbpf.obj_pin(fd, pin)  # if this fails, closing the only fd below detaches the program again
    finally:
        os.close(fd)
    return TcAttachment("tcx", ifindex, info["prog_id"], link_id=info["id"], pin_path=str(pin),
                        notes=tuple(notes))


def _pinned_link(pin: Path) -> tuple[bool, dict | None]:
    """(whether ``pin`` holds a bpffs object, its link info if it is a link)."""
    try:
        fd = libbpf.obj_get(pin)
    except BpfError:
        return False, None
    try:
        return True, libbpf.link_info(fd)
    except BpfError:  # not a link
        return True, None
    finally:
        os.close(fd)


def _defunct_link_pin(pin: Path) -> bool:
    """Whether ``pin`` holds a tcx link that is no longer attached anywhere."""
    _, info = _pinned_link(pin)
    return info is not None and info["type"] == libbpf.BpfLinkType.TCX and not info["ifindex"]


def _clsact_attach(ifindex: int, prog_fd: int, notes: list[str]) -> TcAttachment:
    created = libbpf.tc_hook_create(ifindex, TcAttachPoint.EGRESS)
    if not created:
        kind = _clsact_kind(ifindex)
        if kind != "clsact":
            raise TcError(f"ifindex {ifindex} has an {kind!r} qdisc where clsact would go; it has no egress "
                          f"hook and hepbpf will not replace a qdisc it did not create")
    try:
        f = libbpf.tc_attach(ifindex, TcAttachPoint.EGRESS, prog_fd, handle=TC_HANDLE, priority=TC_PRIORITY)
    except BpfError as e:
        if created:
            _delete_qdisc_if_empty(ifindex, notes)
        if e.errno == errno.EEXIST:
            raise TcError(f"another filter sits at hepbpf's clsact egress handle {TC_HANDLE:#x} priority "
                          f"{TC_PRIORITY} on ifindex {ifindex}; hepbpf will not replace it") from e
        raise
    return TcAttachment("clsact", ifindex, f["prog_id"], handle=f["handle"], priority=f["priority"],
                        created_qdisc=created, notes=tuple(notes))


# --- replace -------------------------------------------------------------------------


def replace(ifindex: int, prog_fd: int, *, pin_dir: str | os.PathLike[str] | None = None) -> TcAttachment:
    """Swap hepbpf's egress program on ``ifindex`` for ``prog_fd``, atomically:
    every packet meets the old program or the new one.

    tcx: BPF_LINK_UPDATE, only if the link still runs the program we found
    (else EPERM); the link id stays. With ``pin_dir``, a missing link pin is
    re-created there. clsact: the filter at our handle/priority is replaced
    in place. TcError if hepbpf is not attached.
    """
    current = query_all(ifindex)
    if not current:
        raise TcError(f"hepbpf is not on egress of ifindex {ifindex}: nothing to replace")
    done = [_replace_one(a, prog_fd, pin_dir) for a in current]
    first = done[0]
    extra = tuple(f"note: also replaced {_describe(a)}" for a in done[1:])
    return TcAttachment(first.mechanism, ifindex, first.prog_id, link_id=first.link_id, pin_path=first.pin_path,
                        handle=first.handle, priority=first.priority, replaced=True, notes=first.notes + extra)


def _replace_one(cur: TcAttachment, prog_fd: int, pin_dir: str | os.PathLike[str] | None) -> TcAttachment:
    new_id = libbpf.prog_info(prog_fd)["id"]
    if cur.mechanism == "clsact":
        f = libbpf.tc_attach(cur.ifindex, TcAttachPoint.EGRESS, prog_fd, handle=TC_HANDLE, priority=TC_PRIORITY,
                             replace=True)
        return TcAttachment("clsact", cur.ifindex, f["prog_id"], handle=f["handle"], priority=f["priority"],
                            replaced=True)
    if cur.link_id is None:
        raise TcError(f"hepbpf's program {cur.prog_id} is on tcx egress of ifindex {cur.ifindex} without a link "
                      f"(attached by something else); detach and attach again")
    notes: list[str] = []
    pin_path = None
    with contextlib.ExitStack() as fds:
        link_fd = libbpf.link_fd_by_id(cur.link_id)
        fds.callback(os.close, link_fd)
        old_fd = libbpf.prog_fd_by_id(cur.prog_id)
        fds.callback(os.close, old_fd)
        libbpf.link_update(link_fd, prog_fd, old_prog_fd=old_fd)
        if pin_dir is not None:
            pin = Path(pin_dir) / TCX_LINK_PIN
            pin_path = str(pin)
            if not os.path.lexists(pin):
                Path(pin_dir).mkdir(parents=True, exist_ok=True)
                libbpf.obj_pin(link_fd, pin)
                notes.append(f"note: the link's pin was missing; pinned it again at {pin}")
    return TcAttachment("tcx", cur.ifindex, new_id, link_id=cur.link_id, pin_path=pin_path, replaced=True,
                        notes=tuple(notes))


# --- detach --------------------------------------------------------------------------


def detach(ifindex: int, *, pin_dir: str | os.PathLike[str] | None = None, created_qdisc: bool = False,
           notes: list[str] | None = None) -> bool:
    """Remove hepbpf's egress program(s) from ``ifindex``: tcx links (found
    by id, detached even if pinned somewhere we cannot see), our clsact
    filter, and the link pin in ``pin_dir``. With ``created_qdisc`` (from
    attach's result), also the clsact qdisc, but only if no filter of anyone
    else is left on it. What was done with the qdisc goes to ``notes``.
    Returns False if there was nothing of ours to remove."""
    notes = notes if notes is not None else []
    removed = False
    detached_links: set[int] = set()
    for a in query_all(ifindex):
        if a.mechanism == "clsact":
            try:
                libbpf.tc_detach(ifindex, TcAttachPoint.EGRESS, handle=TC_HANDLE, priority=TC_PRIORITY)
            except BpfError as e:
                if e.errno != errno.ENOENT:
                    raise
                continue  # deleted meanwhile
            removed = True
        elif a.link_id is not None:
            try:
                fd = libbpf.link_fd_by_id(a.link_id)
            except BpfError as e:
                if e.errno != errno.ENOENT:
                    raise
                continue  # released meanwhile
            try:
                libbpf.link_detach(fd)
            finally:
                os.close(fd)
            detached_links.add(a.link_id)
            removed = True
        else:  # attached without a link, by something else, but it is our program
            fd = libbpf.prog_fd_by_id(a.prog_id)
            try:
                libbpf.prog_detach(fd, ifindex, BpfAttachType.TCX_EGRESS)
            finally:
                os.close(fd)
            removed = True
    if pin_dir is not None:
        removed |= _remove_link_pin(Path(pin_dir) / TCX_LINK_PIN, detached_links, notes)
    if created_qdisc:
        removed |= _delete_qdisc_if_empty(ifindex, notes)
    return removed


def _remove_link_pin(pin: Path, detached: set[int], notes: list[str]) -> bool:
    """Unlink the pin if it holds a link we just detached or a defunct one;
    a live link elsewhere (a wrong pin_dir) keeps its pin."""
    if not os.path.lexists(pin):
        return False
    pinned, info = _pinned_link(pin)
    if not pinned:
        return False
    if info is None:
        notes.append(f"note: {pin} is not a link; left in place")
        return False
    if info["id"] not in detached and info["ifindex"]:
        notes.append(f"note: {pin} pins link {info['id']} attached to ifindex {info['ifindex']}; left in place")
        return False
    pin.unlink()
    return True


def _foreign_filters(ifindex: int) -> list[str]:
    """The filters of others on the clsact hooks, as "egress pref 100 u32"
    (one per hook, priority and kind: a dump lists a u32 filter's hash
    tables and nodes, and every priority's header, as entries of their own)."""
    found = set()
    slot_is_ours = _clsact_ours(ifindex) is not None  # our handle/priority, and our program there
    with IPRoute() as ipr:
        for hook, parent in (("ingress", _TC_H_INGRESS_HOOK), ("egress", _TC_H_EGRESS_HOOK)):
            for f in ipr.get_filters(index=ifindex, parent=parent):
                prio, kind = f["info"] >> 16, f.get_attr("TCA_KIND")
                ours = (slot_is_ours and hook == "egress" and prio == TC_PRIORITY and kind == "bpf"
                        and f["handle"] in (0, TC_HANDLE))
                if not ours:
                    found.add((hook, prio, kind))
    return [f"{hook} pref {prio} {kind}" for hook, prio, kind in sorted(found)]


def _delete_qdisc_if_empty(ifindex: int, notes: list[str]) -> bool:
    """Delete the clsact qdisc hepbpf created, unless filters of others
    are on it. (A filter added between the check and the delete would go
    with it; tc offers no conditional delete.)"""
    if _clsact_kind(ifindex) != "clsact":
        return False
    others = _foreign_filters(ifindex)
    if others:
        notes.append(f"note: kept the clsact qdisc hepbpf created on ifindex {ifindex}: filters of others "
                     f"remain on it ({', '.join(others)})")
        return False
    libbpf.tc_hook_destroy(ifindex, TcAttachPoint.INGRESS | TcAttachPoint.EGRESS)
    notes.append(f"note: deleted the clsact qdisc hepbpf created on ifindex {ifindex}")
    return True


def _describe(a: TcAttachment) -> str:
    if a.mechanism == "tcx":
        link = f"link id {a.link_id}" if a.link_id else "no link"
        return f"tcx, {link}, program id {a.prog_id}"
    return f"clsact, handle {a.handle:#x} priority {a.priority}, program id {a.prog_id}"
