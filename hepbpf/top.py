"""`hepbpf top`: live per-rule counters and rates, like bpftop or
`watch iptables -vnL`.

Every ``delay`` seconds it samples ``hepbpf.loader.attach.status()`` and
computes each rule slot's packet and byte rate from the previous sample (a
row is one slot: interface, direction, slot number). Above the table: per
interface whether it is ENFORCING or only in AUDIT, the XDP mode and program
ids, conntrack flows, events, and per-reason totals.

The screen is a pure function of two samples and the view settings
(``render``), so it is tested without a kernel; ``run_top`` only samples,
reads keys and draws. The full-screen mode uses plain ANSI escapes (the
alternate screen, the cursor, erase to end of line) and the terminal in
cbreak mode; whatever way it ends (``q``, Ctrl-C, SIGTERM, an exception) the
terminal is put back as it was. ``--once`` prints one snapshot as plain text
(rates over one interval): for scripts and for terminals that are not.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import sys
import time
from dataclasses import dataclass

SORT_KEYS = ("rate", "packets", "bytes", "policy")
DELAY_STEPS = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
MIN_DELAY, MAX_DELAY = 0.1, 3600.0
DIRECTIONS = ("ingress", "egress")
HELP = "q quit  s sort  r/p/b/o rate/packets/bytes/policy  / filter  c clear  space pause  +/- delay  j/k scroll"

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


# --- samples and rows -----------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Sample:
    """One reading of ``status()``: ``at`` is monotonic (for rates),
    ``wall`` the epoch time shown and used for deadlines."""
    at: float
    wall: float
    states: tuple


@dataclass(frozen=True, slots=True)
class Row:
    iface: str
    chain: str
    slot: int
    action: str
    reason: str
    stage: str | None
    tier: str | None
    policy: str | None
    rule: int | None
    packets: int
    bytes: int
    pkt_rate: float | None  # None: unknown (first sample, or the counters restarted)
    byte_rate: float | None
    audited: bool = False  # a rule of a policy in audit: counted, decides nothing

    @property
    def shown_action(self) -> str:
        return f"{self.action}(audit)" if self.audited else self.action

    @property
    def who(self) -> str:
        """The policy, or for slots of no policy what they are: (failsafe),
        (conntrack), (end-of-tier), (no-profile), (forward), ..."""
        if self.policy:
            return self.policy
        return f"({self.reason if self.reason and self.reason != 'none' else self.stage or '?'})"

    def matches(self, text: str) -> bool:
        t = text.lower()
        return any(t in (f or "").lower() for f in (self.policy, self.tier, self.shown_action, self.reason))


def sample(states, at: float | None = None, wall: float | None = None) -> Sample:
    return Sample(time.monotonic() if at is None else at, time.time() if wall is None else wall, tuple(states))


def rows(prev: Sample | None, cur: Sample) -> list[Row]:
    """Every rule slot of ``cur``, with rates from ``prev``. A slot's rate
    is unknown when the interface's policy changed (a replaced or updated
    policy numbers its slots anew and starts its counters at 0) or its
    counter went backwards."""
    dt = cur.at - prev.at if prev is not None else 0.0
    before: dict[tuple, tuple[int, int]] = {}
    progs: dict[str, object] = {}
    if prev is not None and dt > 0:
        for st in prev.states:
            progs[st.get("iface")] = (st.get("prog_id"), st.get("serial"))
            for r in st.get("rules") or ():
                before[(st.get("iface"), r.get("chain"), r.get("slot"))] = (r.get("packets", 0), r.get("bytes", 0))
    out = []
    for st in cur.states:
        iface = st.get("iface") or "?"
        same_prog = iface in progs and progs[iface] == (st.get("prog_id"), st.get("serial"))
        for r in st.get("rules") or ():
            pk, by = int(r.get("packets") or 0), int(r.get("bytes") or 0)
            old = before.get((iface, r.get("chain"), r.get("slot"))) if same_prog else None
            if old is not None and pk >= old[0] and by >= old[1]:
                pr, br = (pk - old[0]) / dt, (by - old[1]) / dt
            else:
                pr = br = None
            out.append(Row(iface, r.get("chain") or "?", int(r.get("slot") or 0), r.get("action") or "?",
                           r.get("reason") or "", r.get("stage"), r.get("tier"), r.get("policy"), r.get("rule"),
                           pk, by, pr, br, bool(r.get("audited"))))
    return out


def _chain_order(chain: str) -> int:
    return DIRECTIONS.index(chain) if chain in DIRECTIONS else len(DIRECTIONS)


def _rate(x: float | None) -> float:
    return -1.0 if x is None else x


def select_rows(all_rows: list[Row], sort: str = "rate", filt: str = "") -> list[Row]:
    """Filtered (policy, tier, action or reason contains ``filt``, any case)
    and sorted: rate = packets/s, then total packets; packets and bytes =
    totals, then rate; policy = by policy name and rule (slots of no policy
    last, by what they are). Ties keep evaluation order."""
    if sort not in SORT_KEYS:
        raise ValueError(f"unknown sort key {sort!r}")
    picked = [r for r in all_rows if not filt or r.matches(filt)]

    def where(r: Row):
        return (r.iface, _chain_order(r.chain), r.slot)

    if sort == "rate":
        key = lambda r: (-_rate(r.pkt_rate), -r.packets, -r.bytes, where(r))  # noqa: E731
    elif sort == "packets":
        key = lambda r: (-r.packets, -_rate(r.pkt_rate), -r.bytes, where(r))  # noqa: E731
    elif sort == "bytes":
        key = lambda r: (-r.bytes, -_rate(r.byte_rate), -r.packets, where(r))  # noqa: E731
    else:
        key = lambda r: (r.policy is None, (r.policy or r.who).lower(), -1 if r.rule is None else r.rule,  # noqa: E731
                         where(r))
    return sorted(picked, key=key)


# --- numbers --------------------------------------------------------------------------

_UNITS = ("", "k", "M", "G", "T", "P")


def _scaled(x: float) -> str:
    i = 0
    while x >= 999.5 and i < len(_UNITS) - 1:
        x /= 1000.0
        i += 1
    if i == 0:
        return f"{x:.0f}"
    return f"{x:.1f}{_UNITS[i]}" if x < 99.95 else f"{x:.0f}{_UNITS[i]}"


def fmt_rate(x: float | None) -> str:
    """Per-second rates: '-' unknown, '0', '0.3', '7.5', '42', '1.2k', '3.4M'."""
    if x is None:
        return "-"
    if x <= 0:
        return "0"
    if x < 9.95:
        return f"{x:.1f}"
    return _scaled(x)


def fmt_count(n: int) -> str:
    """Totals: exact below a million, then '1.2M', '34.5G', '123T'."""
    return str(n) if n < 1_000_000 else _scaled(float(n))


# --- the screen -----------------------------------------------------------------------

COLUMNS = ("IFACE", "DIR", "SLOT", "ACTION", "PKT/S", "BYTES/S", "PACKETS", "BYTES", "TIER", "POLICY", "RULE")
_RIGHT = {"SLOT", "PKT/S", "BYTES/S", "PACKETS", "BYTES", "RULE"}
_SHRINK = (("POLICY", 12), ("TIER", 6))  # what gives way on a narrow screen, down to what width
_HIDE = ("SLOT", "BYTES/S", "BYTES", "TIER", "IFACE")  # then which columns go, in this order


def _cells(r: Row) -> tuple[str, ...]:
    return (r.iface, r.chain, str(r.slot), r.shown_action, fmt_rate(r.pkt_rate), fmt_rate(r.byte_rate),
            fmt_count(r.packets), fmt_count(r.bytes), r.tier or "-", r.who, "-" if r.rule is None else str(r.rule))


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[:max(0, width - 1)] + "~"


def table(selected: list[Row], width: int | None = None) -> list[str]:
    """The column header and one line per row, columns as wide as their
    widest cell. On a screen ``width`` wide, POLICY and TIER get narrower,
    then the least needed columns go (slot, byte rate, bytes, tier, iface)."""
    cells = [_cells(r) for r in selected]
    widths = {c: max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(COLUMNS)}
    shown = set(COLUMNS)
    if width is not None:
        def excess() -> int:
            return sum(widths[c] + 1 for c in shown) - 1 - width

        if excess() > 0:
            natural = dict(widths)
            for col, least in _SHRINK:
                widths[col] = min(widths[col], least)
            for col in _HIDE:
                if excess() <= 0:
                    break
                shown.discard(col)
            for col in ("TIER", "POLICY"):  # give back what room is left
                if col in shown:
                    widths[col] += max(0, min(-excess(), natural[col] - widths[col]))

    def line(values) -> str:
        parts = []
        for c, v in zip(COLUMNS, values):
            if c not in shown:
                continue
            v = _fit(v, widths[c])
            parts.append(v.rjust(widths[c]) if c in _RIGHT else v.ljust(widths[c]))
        return " ".join(parts).rstrip()

    return [line(COLUMNS)] + [line(row) for row in cells]


def _reason_totals(st: dict) -> str:
    by_chain = st.get("reasons_by_chain")
    parts = []
    if by_chain:
        for chain in DIRECTIONS:
            counts = [(k, v.get("packets", 0)) for k, v in (by_chain.get(chain) or {}).items() if v.get("packets")]
            if counts:
                parts.append(f"{chain} " + ", ".join(f"{k} {fmt_count(n)}" for k, n in counts))
    else:
        counts = [(k, v.get("packets", 0)) for k, v in (st.get("reasons") or {}).items() if v.get("packets")]
        if counts:
            parts.append(", ".join(f"{k} {fmt_count(n)}" for k, n in counts))
    return "packets by reason: " + (" | ".join(parts) if parts else "none yet")


def iface_header(st: dict, now: float) -> list[tuple[str, str]]:
    """(style, text) lines about one interface; style 'alert' for what must
    not be missed (AUDIT, an unconfirmed attach, stale state)."""
    iface = st.get("iface") or "?"
    if not st.get("attached"):
        verdict, style = "NOT ATTACHED (stale state)", "alert"
    elif st.get("audit"):
        verdict, style = "AUDIT: nothing is dropped, would-be drops are only counted", "alert"
    else:
        verdict, style = "ENFORCING", ""
    out = [(style, f"{iface}: {verdict}")]
    facts = [f"XDP {st.get('mode') or '-'} prog {st.get('prog_id') or '-'}",
             f"egress {st.get('tc_mechanism') or '-'} prog {st.get('tc_prog_id') or '-'}",
             f"host endpoint {st.get('host_endpoint') or '-'}", f"node {st.get('node') or '-'}"]
    out.append(("", "  " + ", ".join(facts)))
    more = []
    ct = st.get("conntrack")
    if ct:
        more.append(f"conntrack {fmt_count(ct.get('flows', 0))} flows of {fmt_count(ct.get('size', 0))}")
    ev = st.get("events")
    if ev and "emitted" in ev:  # counts (not the event settings of a stale state)
        more.append(f"events {fmt_count(ev.get('emitted', 0))} emitted, {fmt_count(ev.get('suppressed', 0))} "
                    f"suppressed, {fmt_count(ev.get('lost', 0))} lost")
    if more:
        out.append(("", "  " + "; ".join(more)))
    pending = st.get("pending_confirmation")
    if pending:
        pending = pending if isinstance(pending, dict) else {}
        deadline = pending.get("deadline")
        to = f" to {pending['rollback_to']}" if pending.get("rollback_to") else ""
        when = (f" in {max(0, round(deadline - now))} s ({time.strftime('%H:%M:%S', time.localtime(deadline))})"
                if isinstance(deadline, (int, float)) else "")
        out.append(("alert", f"  UNCONFIRMED: this attach rolls back{to}{when} unless confirmed"))
    wd = st.get("would_drop")
    if st.get("audit") and wd:
        out.append(("alert", "  would have dropped: " + ", ".join(
            f"{c} {fmt_count((wd.get(c) or {}).get('packets', 0))} packets" for c in DIRECTIONS)))
    out.append(("", "  " + _reason_totals(st)))
    return out


@dataclass(slots=True)
class View:
    """What the user chose: sort key, filter, interval, pause, scroll."""
    sort: str = "rate"
    filt: str = ""
    delay: float = 1.0
    paused: bool = False
    offset: int = 0


def screen(prev: Sample | None, cur: Sample, view: View, *, width: int | None = None, height: int | None = None,
           once: bool = False, status_line: str | None = None, iface: str | None = None) -> list[tuple[str, str]]:
    """The whole screen as (style, text) lines; style '' plain, 'title'
    for the column header, 'alert' for what must stand out. Without a
    height every row is there (``--once``); with one, the table scrolls by
    ``view.offset`` (clamped here to the rows there are) and the last line
    is ``status_line`` (the key help). ``iface``: the one interface asked
    for, if one was."""
    clock = time.strftime("%H:%M:%S", time.localtime(cur.wall))
    if once:
        top = f"hepbpf top - {clock}, rates over {view.delay:g} s, sort: {view.sort}"
    else:
        top = f"hepbpf top - {clock}, every {view.delay:g} s, sort: {view.sort}"
    if view.filt:
        top += f", filter: {view.filt!r}"
    if view.paused:
        top += "  PAUSED"
    out: list[tuple[str, str]] = [("", top)]
    if not cur.states:
        out.append(("alert", f"{iface}: hepbpf is not attached" if iface else "hepbpf is not attached anywhere"))
    for st in cur.states:
        out.extend(iface_header(st, cur.wall))
    selected = select_rows(rows(prev, cur), view.sort, view.filt)
    lines = table(selected, width)
    out.append(("title", lines[0]))
    body = lines[1:]
    if not body:
        body = [f"(no rule matches {view.filt!r})" if view.filt else "(no rules)"]
    if height is None:
        out.extend(("", b) for b in body)
    else:
        room = max(1, height - len(out) - 1)
        view.offset = max(0, min(view.offset, len(body) - room))
        shown = body[view.offset:view.offset + room]
        out.extend(("", b) for b in shown)
        out.extend(("", "") for _ in range(room - len(shown)))
        more = ""
        if len(body) > room:  # first: a narrow screen cuts the help, not this
            more = f"[rows {view.offset + 1}-{view.offset + len(shown)} of {len(body)}]  "
        out.append(("title", more + (status_line if status_line is not None else HELP)))
        out = out[:height]
    if width is not None:
        out = [(s, t[:width]) for s, t in out]
    return out


def render(prev: Sample | None, cur: Sample, view: View | None = None, **kw) -> list[str]:
    """The screen as plain lines (see ``screen``)."""
    return [t for _, t in screen(prev, cur, view or View(), **kw)]


# --- keys -----------------------------------------------------------------------------

_CSI = {"A": "up", "B": "down", "H": "home", "F": "end", "5~": "pgup", "6~": "pgdn", "1~": "home", "4~": "end"}


def parse_keys(data: bytes) -> list[str]:
    """Bytes from a cbreak terminal as keys: single characters, 'esc',
    'enter', 'backspace', and 'up', 'down', 'pgup', 'pgdn', 'home', 'end'
    from the escape sequences of those keys (others are ignored)."""
    keys: list[str] = []
    text = data.decode("utf-8", "replace")
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\x1b":
            if i + 1 < len(text) and text[i + 1] in "[O":
                j = i + 2
                while j < len(text) and not ("\x40" <= text[j] <= "\x7e"):
                    j += 1
                seq = text[i + 2:j + 1]
                if seq in _CSI:
                    keys.append(_CSI[seq])
                i = j + 1
                continue
            keys.append("esc")
        elif ch in "\r\n":
            keys.append("enter")
        elif ch in "\x7f\x08":
            keys.append("backspace")
        else:
            keys.append(ch)
        i += 1
    return keys


def _step_delay(delay: float, up: bool) -> float:
    if up:
        bigger = [d for d in DELAY_STEPS if d > delay + 1e-9]
        return bigger[0] if bigger else delay
    smaller = [d for d in DELAY_STEPS if d < delay - 1e-9]
    return smaller[-1] if smaller else delay


class Controller:
    """The interactive state machine: keys in, view changes out. ``editing``
    is the filter being typed (None when not); the view shows it live, and
    Esc puts back the filter it replaced."""

    def __init__(self, view: View):
        self.view = view
        self.editing: str | None = None
        self._saved_filter = ""
        self.quit = False
        self.resample = False  # take a sample now (just unpaused)

    def key(self, k: str, page: int = 10) -> None:
        v = self.view
        if self.editing is not None:
            if k == "enter":
                self.editing = None
            elif k == "esc":
                v.filt, self.editing = self._saved_filter, None
            elif k == "backspace":
                self.editing = self.editing[:-1]
                v.filt = self.editing
            elif k == "\x15":  # Ctrl-U
                self.editing = v.filt = ""
            elif len(k) == 1 and k.isprintable():
                self.editing += k
                v.filt = self.editing
            v.offset = 0
            return
        if k in ("q", "Q", "esc"):
            self.quit = True
        elif k == "s":
            v.sort = SORT_KEYS[(SORT_KEYS.index(v.sort) + 1) % len(SORT_KEYS)]
        elif k in ("r", "p", "b", "o"):
            v.sort = {"r": "rate", "p": "packets", "b": "bytes", "o": "policy"}[k]
        elif k == "/":
            self._saved_filter, self.editing = v.filt, ""
            v.filt = ""
        elif k == "c":
            v.filt = ""
        elif k == " ":
            v.paused = not v.paused
            self.resample = not v.paused
        elif k in ("+", "="):
            v.delay = _step_delay(v.delay, True)
        elif k in ("-", "_"):
            v.delay = _step_delay(v.delay, False)
        elif k in ("j", "down"):
            v.offset += 1
        elif k in ("k", "up"):
            v.offset = max(0, v.offset - 1)
        elif k == "pgdn":
            v.offset += page
        elif k == "pgup":
            v.offset = max(0, v.offset - page)
        elif k in ("g", "home"):
            v.offset = 0
        elif k in ("G", "end"):
            v.offset = 1 << 30  # clamped when drawn
        if k in ("s", "r", "p", "b", "o", "c"):
            v.offset = 0

    def status_line(self) -> str:
        if self.editing is not None:
            return f"filter (policy, tier, action, reason): {self.editing}_   Enter keep, Esc cancel"
        return HELP


# --- running --------------------------------------------------------------------------

def _status(iface: str | None) -> list[dict]:
    from hepbpf.loader.attach import status

    return status(iface)


def _not_attached(iface: str | None) -> int:
    print(f"{iface}: hepbpf is not attached" if iface else "hepbpf is not attached anywhere")
    return EXIT_OK if iface is None else EXIT_FAIL


def _error(message: str, code: int) -> int:
    print(f"hepbpf: {message}", file=sys.stderr)
    return code


def run_top(args) -> int:
    iface = getattr(args, "iface", None)
    delay = float(getattr(args, "delay", 1.0))
    if not MIN_DELAY <= delay <= MAX_DELAY:
        return _error(f"--delay must be between {MIN_DELAY:g} and {MAX_DELAY:g} seconds, got {delay:g}", EXIT_USAGE)
    view = View(sort=getattr(args, "sort", "rate") or "rate", filt=getattr(args, "filter", "") or "", delay=delay)
    once = bool(getattr(args, "once", False))
    if not once and not sys.stdout.isatty():
        return _error("hepbpf top needs a terminal; use --once for a batch snapshot", EXIT_USAGE)
    first = sample(_status(iface))
    if not first.states:
        return _not_attached(iface)
    if once:
        time.sleep(delay)
        second = sample(_status(iface))
        if not second.states:
            return _not_attached(iface)
        for line in render(first, second, view, once=True):
            print(line)
        return EXIT_OK
    return _Interactive(iface, view).run(first)


class _Terminal:
    """The terminal as full-screen mode wants it, and back: the alternate
    screen, no cursor, no line wrap, cbreak input without echo. ``leave``
    undoes exactly what ``enter`` did, and may be called more than once."""

    ENTER = "\x1b[?1049h\x1b[?25l\x1b[?7l\x1b[H\x1b[2J"
    LEAVE = "\x1b[0m\x1b[?7h\x1b[?25h\x1b[?1049l"

    def __init__(self, out, in_fd: int | None):
        self.out = out
        self.in_fd = in_fd
        self._saved = None
        self.active = False

    def enter(self) -> None:
        import termios
        import tty

        if self.in_fd is not None:
            self._saved = termios.tcgetattr(self.in_fd)
            tty.setcbreak(self.in_fd, termios.TCSANOW)
        self.out.write(self.ENTER)
        self.out.flush()
        self.active = True

    def leave(self) -> None:
        import termios

        if not self.active:
            return
        self.active = False
        with contextlib.suppress(OSError, ValueError):  # the terminal may be gone
            self.out.write(self.LEAVE)
            self.out.flush()
        if self._saved is not None:
            with contextlib.suppress(OSError, termios.error):
                termios.tcsetattr(self.in_fd, termios.TCSADRAIN, self._saved)

    def size(self) -> tuple[int, int]:
        try:
            sz = os.get_terminal_size(self.out.fileno())
            return sz.columns, sz.lines
        except OSError:
            sz = shutil.get_terminal_size()
            return sz.columns, sz.lines

    def draw(self, lines: list[tuple[str, str]], width: int) -> None:
        style = {"title": "\x1b[7m", "alert": "\x1b[1m"}
        buf = ["\x1b[H"]
        for n, (s, text) in enumerate(lines):
            if n:
                buf.append("\r\n")
            # After the last column the cursor stays on it: erasing from
            # there would erase the line's last character.
            erase = "\x1b[K" if len(text) < width else ""
            buf.append(f"{style[s]}{text}{erase}\x1b[0m" if s in style else f"{text}{erase}")
        buf.append("\x1b[J")
        self.out.write("".join(buf))
        self.out.flush()


class _Stop(Exception):
    """SIGTERM or SIGHUP: leave as after 'q'."""


class _Interactive:
    def __init__(self, iface: str | None, view: View):
        self.iface = iface
        self.ctl = Controller(view)
        self.prev: Sample | None = None
        self.cur: Sample | None = None
        self.error = ""

    def _sample(self) -> None:
        try:
            s = sample(_status(self.iface))
        except (OSError, RuntimeError) as e:
            # A policy being replaced can make one reading fail: keep the last.
            self.error = f"reading counters failed: {e}"
            return
        self.error = ""
        self.prev, self.cur = self.cur, s

    def _draw(self, term: _Terminal) -> None:
        width, height = term.size()
        status = self.ctl.status_line()
        if self.error and self.ctl.editing is None:
            status = self.error
        term.draw(screen(self.prev, self.cur, self.ctl.view, width=width, height=max(3, height),
                         status_line=status, iface=self.iface), width)

    def run(self, first: Sample) -> int:
        self.cur = first
        in_fd = sys.stdin.fileno() if sys.stdin is not None and sys.stdin.isatty() else None
        term = _Terminal(sys.stdout, in_fd)
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        os.set_blocking(wake_r, False)

        def on_winch(signum, frame):
            with contextlib.suppress(OSError):
                os.write(wake_w, b"w")

        def on_stop(signum, frame):
            raise _Stop()

        def on_tstp(signum, frame):
            # Ctrl-Z: give the shell its terminal back, stop, and come back.
            term.leave()
            signal.signal(signal.SIGTSTP, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTSTP)
            signal.signal(signal.SIGTSTP, on_tstp)
            term.enter()
            on_winch(signum, frame)

        old = {sig: signal.getsignal(sig) for sig in (signal.SIGWINCH, signal.SIGTERM, signal.SIGHUP,
                                                      signal.SIGTSTP)}
        try:
            signal.signal(signal.SIGWINCH, on_winch)
            signal.signal(signal.SIGTERM, on_stop)
            signal.signal(signal.SIGHUP, on_stop)
            if in_fd is not None:
                signal.signal(signal.SIGTSTP, on_tstp)
            term.enter()
            self._loop(term, in_fd, wake_r)
        except (KeyboardInterrupt, _Stop):
            pass
        finally:
            term.leave()
            for sig, handler in old.items():
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
            os.close(wake_r)
            os.close(wake_w)
        return EXIT_OK

    def _loop(self, term: _Terminal, in_fd: int | None, wake_r: int) -> None:
        ctl = self.ctl
        next_tick = time.monotonic() + ctl.view.delay
        self._draw(term)
        while not ctl.quit:
            fds = [wake_r] + ([in_fd] if in_fd is not None else [])
            timeout = None if ctl.view.paused else max(0.0, next_tick - time.monotonic())
            ready = select.select(fds, [], [], timeout)[0]
            redraw = False
            if wake_r in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 512)
                redraw = True
            if in_fd is not None and in_fd in ready:
                try:
                    data = os.read(in_fd, 1024)
                except OSError:  # the terminal went away (EIO)
                    return
                if not data:
                    return
                if data.endswith(b"\x1b") and select.select([in_fd], [], [], 0.05)[0]:
                    data += os.read(in_fd, 1024)  # the rest of an escape sequence
                delay = ctl.view.delay
                _, height = term.size()
                for k in parse_keys(data):
                    ctl.key(k, page=max(1, height - 8))
                    if ctl.quit:
                        return
                if ctl.view.delay != delay:
                    next_tick = (self.cur.at if self.cur else time.monotonic()) + ctl.view.delay
                redraw = True
            now = time.monotonic()
            if ctl.resample or (not ctl.view.paused and now >= next_tick):
                ctl.resample = False
                self._sample()
                # Keep the cadence; after a pause or a slow reading, start over.
                next_tick += ctl.view.delay
                if next_tick <= now:
                    next_tick = now + ctl.view.delay
                redraw = True
            if redraw:
                self._draw(term)
