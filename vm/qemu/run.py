"""Boot each pinned kernel under qemu (TCG: no KVM needed) with the host's /
as its root, run the kernel tests there with the host's pytest command, and
report per kernel: boot, object load and verified instructions, pytest
counts. Exits non-zero if any kernel fails, after the whole report.

  python -m hepbpf.vm.qemu.run [all | NAME[,NAME...]] [--timeout S]
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shlex
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import initramfs, kernels
from .kernels import CACHE, Kernel

REPO = Path(__file__).resolve().parent.parent.parent
GUEST_SH = Path(__file__).resolve().parent / "guest.sh"
VIRTIOFSD = "/usr/lib/qemu/virtiofsd"  # qemu 7.2's C virtiofsd, in qemu-system-common
# The selection: the verifier (every test loads the object), the
# BPF_PROG_TEST_RUN differential suite, the libbpf binding, and one netns
# traffic case (native and generic XDP). TCG runs ~10x slower than the host:
# tests/netns/test_stateful_scenarios.py is left out because its echo
# servers live 30 s of wall clock, about what a scenario takes here (it
# failed so under load; pass it with --pytest-args to try).
PYTEST_ARGS = ("-q tests/bpf/test_differential.py tests/bpf/test_libbpf_binding.py "
               "tests/netns/test_policy_traffic.py::test_case_traffic[allow-one-port-end-of-tier-native] "
               "tests/netns/test_policy_traffic.py::test_case_traffic[allow-one-port-end-of-tier-generic]")
MEMORY = "3G"
LOCK = Path("/run/lock/hepbpf-vm-test.lock")


@dataclass
class Result:
    kernel: Kernel
    release: str = ""
    booted: bool = False
    boot_s: float | None = None  # guest uptime when guest.sh started
    load: dict | None = None
    pytest: dict | None = None
    failure: str = ""  # why the run itself broke (boot, timeout, no report)
    wall_s: float = 0.0
    tail: list[str] = field(default_factory=list)  # last console lines, for a broken run

    @property
    def ok(self) -> bool:
        p = self.pytest or {}
        return (not self.failure and bool(self.load and self.load.get("ok")) and p.get("rc") == 0
                and p.get("tests", 0) > 0 and p.get("passed") == p.get("tests"))


def _uptime(words: list[str]) -> float | None:
    try:
        return float(words[-1])
    except (ValueError, IndexError):
        return None


def _run_file(k: Kernel, pytest_args: str, source: Path) -> Path:
    """Settings guest.sh sources (the kernel command line cannot carry
    spaces). SOURCE: the tree the guest snapshots and runs as REPO (the
    venv's editable install points at REPO). CI=true: there a kernel test
    that cannot run fails, not skips. PY_COLORS=0: the console is a tty."""
    path = CACHE / "runs" / f"{k.name}.env"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"REPO={shlex.quote(str(REPO))}\nSOURCE={shlex.quote(str(source))}\n"
                    f"PYTHON={shlex.quote(sys.executable)}\n"
                    f"MODULES={shlex.quote(str(k.modules))}\nPYTEST_ARGS={shlex.quote(pytest_args)}\n"
                    "export CI=true PY_COLORS=0\n")
    return path


def _start_virtiofsd(sock: Path) -> subprocess.Popen:
    """Share / with the guest. The guest mounts it read-only under a tmpfs
    overlay; cache=always: the lower tree (python, the venv) does not change under a
    run (the guest runs a snapshot of the repo), and every stat of a Python
    import would otherwise be a round trip to virtiofsd."""
    sock.unlink(missing_ok=True)
    with open(sock.with_suffix(".virtiofsd.log"), "w") as errlog:  # the child keeps its own copy
        proc = subprocess.Popen([VIRTIOFSD, f"--socket-path={sock}", "-o", "source=/", "-o", "cache=always",
                                 "-o", "log_level=err",
                                 # namespace mode pivot_roots into source, which fails for /
                                 "-o", "sandbox=chroot"], stdin=subprocess.DEVNULL, stderr=errlog)
    for _ in range(100):
        if sock.exists():
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"virtiofsd did not create {sock}")


def _qemu_argv(k: Kernel, initrd: Path, sock: Path, run_file: Path) -> list[str]:
    append = " ".join(["console=ttyS0", "panic=-1", "quiet", "loglevel=4", "mitigations=off",
                       f"hepbpf_guest={GUEST_SH}", f"hepbpf_run={run_file}"])
    return ["qemu-system-x86_64", "-nodefaults", "-display", "none", "-no-reboot",
            "-accel", "tcg,thread=multi", "-cpu", "max", "-smp", "2", "-m", MEMORY,
            # vhost-user (virtiofsd) maps guest memory: it must be shared memfd.
            "-object", f"memory-backend-memfd,id=mem,size={MEMORY},share=on", "-numa", "node,memdev=mem",
            "-chardev", f"socket,id=vfs,path={sock}", "-device", "vhost-user-fs-pci,chardev=vfs,tag=hostroot",
            "-nic", "none", "-serial", "stdio",
            "-kernel", str(k.vmlinuz), "-initrd", str(initrd), "-append", append]


def run_one(k: Kernel, pytest_args: str, timeout: float, echo, source: Path = REPO) -> Result:
    r = Result(k)
    t0 = time.monotonic()
    kernels.fetch(k)
    r.release = k.release
    initrd = initramfs.build(k)
    run_file = _run_file(k, pytest_args, source)
    sock = CACHE / "runs" / f"{k.name}.sock"
    log_path = CACHE / "logs" / f"{k.name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    vfsd = _start_virtiofsd(sock)
    try:
        argv = _qemu_argv(k, initrd, sock, run_file)
        qemu = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        in_pytest = False
        lines: list[str] = []

        def read() -> None:
            nonlocal in_pytest
            with open(log_path, "w") as log:
                log.write(" ".join(shlex.quote(a) for a in argv) + "\n")
                for raw in qemu.stdout:
                    line = raw.decode(errors="replace").rstrip("\r\n")
                    log.write(line + "\n")
                    log.flush()
                    lines.append(line)
                    words = line.split()
                    tag = words[0] if words else ""
                    if tag == "HEPBPF-VM-STAGE" and words[1:2] == ["guest"]:
                        r.booted, r.boot_s = True, _uptime(words)
                        echo(f"booted in {r.boot_s} s of guest time ({time.monotonic() - t0:.0f} s wall)")
                    elif tag == "HEPBPF-VM-LOAD":
                        r.load = json.loads(line.split(" ", 1)[1])
                    elif tag == "HEPBPF-VM-PYTEST":
                        r.pytest = json.loads(line.split(" ", 1)[1])
                    elif tag == "HEPBPF-VM-FAIL":
                        r.failure = line.split(" ", 1)[1]
                    elif tag == "HEPBPF-VM-BEGIN" and words[1:2] == ["pytest"]:
                        in_pytest = True
                        echo("pytest " + pytest_args)
                    elif tag == "HEPBPF-VM-END":
                        in_pytest = False
                    elif in_pytest:
                        echo("  " + line)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            qemu.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            qemu.kill()  # our own qemu, by its handle
            qemu.wait()
            r.failure = r.failure or f"timed out after {timeout:.0f} s"
        reader.join(timeout=10)
        r.tail = lines[-40:]
        if not r.failure and r.pytest is None:
            r.failure = f"qemu exited ({qemu.returncode}) without a pytest report"
    finally:
        vfsd.terminate()
        try:
            vfsd.wait(timeout=10)
        except subprocess.TimeoutExpired:
            vfsd.kill()
        sock.unlink(missing_ok=True)
    r.wall_s = time.monotonic() - t0
    return r


def _insns(load: dict) -> str:
    progs = load.get("programs") or {}
    return ", ".join(f"{name} {p.get('verified_insns') or 0:,} verified insns" for name, p in progs.items())


def report(r: Result) -> list[str]:
    k = r.kernel
    out = [f"kernel {k.name}: {k.package} {k.version} (uname -r {r.release or '?'})"]
    out.append(f"  boot     {'ok, guest.sh started at ' + str(r.boot_s) + ' s uptime' if r.booted else 'FAILED'}")
    ld = r.load
    if ld is None:
        out.append("  load     not reached")
    elif ld.get("ok"):
        out.append(f"  load     OK in {ld.get('load_s')} s: {_insns(ld)} (BTF {'yes' if ld.get('btf') else 'NO'})")
    else:
        out.append(f"  load     FAILED: {str(ld.get('error')).splitlines()[0]}")
        for key, n in (("verifier_log", 12), ("libbpf_log", 3), ("traceback", 8)):
            if ld.get(key):
                out.append(f"    {key} (last {n} lines; the JSON report has more):")
                out += ["      " + x for x in ld[key].splitlines()[-n:]]
    p = r.pytest
    if p is None:
        out.append("  pytest   not reached")
    elif "error" in p:
        out.append(f"  pytest   exit {p['rc']}, {p['error']}")
    else:
        out.append(f"  pytest   {p['tests']} run, {p['passed']} passed, {p['failures']} failed, {p['errors']} errors, "
                   f"{p['skipped']} skipped in {p['time_s']} s (exit {p['rc']})")
        for pr in p.get("problems", []):
            # The last lines of the traceback hold the reason (for a
            # rejected program: the verifier's last words).
            first = pr["message"].splitlines()[0] if pr["message"] else ""
            out.append(f"    {pr['kind'].upper()} {pr['test']}: {first}")
            out += ["      " + x for x in pr["detail"].rstrip().splitlines()[-4:]]
    if r.failure:
        out.append(f"  run      {r.failure}")
        if not r.pytest:
            out.append("  last console lines:")
            out += ["    " + x for x in r.tail]
    out.append(f"  wall     {r.wall_s:.0f} s; console log {CACHE / 'logs' / (k.name + '.log')}")
    out.append(f"  RESULT   {'PASS' if r.ok else 'FAIL'}")
    return out


def describe_tree(tree: Path) -> str:
    """Which code ran: the guest runs the tree as it was at boot, others'
    uncommitted edits included."""
    head = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        return f"{tree} (not a git checkout)"
    dirty = subprocess.run(["git", "-C", str(tree), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return f"{tree} at {head.stdout.strip()}" + (" with uncommitted changes" if dirty else "")


def summary(r: Result) -> str:
    """One line per kernel: boot, load and XDP verified insns, pytest."""
    ld, p = r.load or {}, r.pytest or {}
    boot = f"boot {r.boot_s} s" if r.booted else "boot FAILED"
    if not ld:
        load = "load -"
    elif ld.get("ok"):
        insns = (ld.get("programs") or {}).get("hep_xdp_ingress", {}).get("verified_insns")
        load = f"load OK, XDP {insns:,} insns" if insns else "load OK"
    else:
        load = "load FAILED"
    tests = f"pytest {p['passed']}/{p['tests']} passed" if "tests" in p else "pytest -"
    return (f"{r.kernel.name:6} {'PASS' if r.ok else 'FAIL'}  {boot:<14} {load:<28} {tests:<22} "
            f"wall {r.wall_s:.0f} s" + (f"  ({r.failure})" if r.failure else ""))


def lock(wait: float):
    """One vm-test at a time on this machine, whatever its cache: runs with
    one cache share its per-kernel files (settings, socket, logs, reports),
    and any two TCG guests on two CPUs stretch each other's timings. Waits
    at most WAIT seconds for another run (another tree's, another
    session's) to finish."""
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    f = open(LOCK, "a+")
    deadline, said = time.monotonic() + wait, False
    while True:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                f.seek(0)
                raise RuntimeError(f"another vm-test still holds {LOCK} after {wait:.0f} s: "
                                   f"{f.read().strip() or '?'}") from None
            if not said:
                f.seek(0)
                print(f"waiting (at most {wait:.0f} s) for another vm-test: {f.read().strip() or '?'}", flush=True)
                said = True
            time.sleep(2)
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()}, tree {REPO}, cache {CACHE}, since {time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n")
    f.flush()
    return f  # held until the process exits


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hepbpf.vm.qemu.run", description=__doc__.split("\n")[0])
    ap.add_argument("kernel", nargs="?", default="all", help="a name from vm/kernels.txt, several with commas, or all")
    ap.add_argument("--timeout", type=float, default=float(os.environ.get("HEPBPF_VM_TIMEOUT", 2400)),
                    help="seconds for one kernel's boot and tests (default 2400)")
    ap.add_argument("--pytest-args", default=os.environ.get("HEPBPF_VM_PYTEST", PYTEST_ARGS))
    ap.add_argument("--tree", type=Path, default=REPO,
                    help="run this copy of the tree (objects built) instead of the live one, e.g. a "
                         "`git worktree` of a commit; the guest sees it at the repo's path")
    ap.add_argument("--lock-wait", type=float, default=float(os.environ.get("HEPBPF_VM_LOCK_WAIT", 1800)),
                    help="seconds to wait for another vm-test run on this machine (default 1800)")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("vm-test needs root (virtiofsd shares /, depmod writes the kernel cache)", file=sys.stderr)
        return 2
    try:
        chosen = kernels.select(kernels.load(), args.kernel)
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    try:
        held = lock(args.lock_wait)  # noqa: F841 - the lock lives as long as this frame
    except RuntimeError as e:
        print(f"vm-test: {e}", file=sys.stderr)
        return 1
    tree = describe_tree(args.tree.resolve())
    print(f"tree: {tree}\npytest {args.pytest_args}", flush=True)
    results = []
    for k in chosen:
        print(f"== {k.name}: {k.package} {k.version}", flush=True)
        try:
            r = run_one(k, args.pytest_args, args.timeout, lambda s, n=k.name: print(f"[{n}] {s}", flush=True),
                        args.tree.resolve())
        except (OSError, RuntimeError, subprocess.CalledProcessError) as e:
            r = Result(k, failure=f"could not start: {e}")
        results.append(r)
        (CACHE / "reports").mkdir(parents=True, exist_ok=True)
        (CACHE / "reports" / f"{k.name}.json").write_text(json.dumps(
            {"kernel": k.name, "package": k.package, "version": k.version, "release": r.release, "tree": tree,
             "pytest_args": args.pytest_args, "ok": r.ok,
             "booted": r.booted, "boot_s": r.boot_s, "load": r.load, "pytest": r.pytest, "failure": r.failure,
             "wall_s": round(r.wall_s, 1)}, indent=2))
    print("\n" + "=" * 72 + f"\nvm-test report (tree {tree})\n")
    for r in results:
        print("\n".join(report(r)) + "\n")
    for r in results:
        print(summary(r))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
