"""Run inside the guest by guest.sh; each prints one line run.py parses.

  load          compile the lab's policy, load the object with the
                project's loader (the verifier runs), print each program's
                verified instruction count, or the trimmed verifier log
  junit X RC    summarise pytest's junit XML (counts, failures)
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
import traceback
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
POLICY = REPO / "vm" / "policies" / "metrics-allowlist.yaml"
LOG_LINES = 40  # the verifier's reason is at the end of its log


def _tail(text: str, n: int = LOG_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-n:])


def load() -> dict:
    out: dict = {"release": platform.release(), "btf": os.path.exists("/sys/kernel/btf/vmlinux")}
    try:
        from hepbpf.compiler import compile_policy
        from hepbpf.loader.datapath import load_image
        from hepbpf.loader.libbpf import BpfError

        comp = compile_policy([(POLICY.name, POLICY.read_text())], node="lab-node", iface="eth1")
        t = time.perf_counter()
        try:
            dp = load_image(comp.image)
        except BpfError as e:
            out.update(ok=False, error=str(e), call=e.call,
                       verifier_log=_tail(e.verifier_log), libbpf_log=_tail("\n".join(e.libbpf_log), 15))
            return out
        out["load_s"] = round(time.perf_counter() - t, 3)
        with dp:
            out["ok"] = True
            out["programs"] = {p.name: {k: p.info().get(k) for k in ("verified_insns", "xlated_len", "jited_len")}
                               for p in (dp.prog, dp.tc_prog)}
    except Exception as e:  # noqa: BLE001 - any failure is the report's content
        out.update(ok=False, error=f"{type(e).__name__}: {e}", traceback=_tail(traceback.format_exc(), 15))
    return out


def junit(path: str, rc: int) -> dict:
    out: dict = {"rc": rc}
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        out["error"] = f"no junit XML: {e}"
        return out
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    for key in ("tests", "failures", "errors", "skipped"):
        out[key] = sum(int(s.get(key, 0)) for s in suites)
    out["passed"] = out["tests"] - out["failures"] - out["errors"] - out["skipped"]
    out["time_s"] = round(sum(float(s.get("time", 0)) for s in suites), 1)
    out["problems"] = []
    for case in root.iter("testcase"):
        for kind in ("failure", "error", "skipped"):
            el = case.find(kind)
            if el is not None:
                name = f"{case.get('classname', '')}::{case.get('name', '')}"
                out["problems"].append({"test": name, "kind": kind, "message": (el.get("message") or "")[:500],
                                        "detail": _tail(el.text or "", 25)})
    return out


def main(argv: list[str]) -> int:
    if argv[:1] == ["load"]:
        print("HEPBPF-VM-LOAD " + json.dumps(load()), flush=True)
    elif argv[:1] == ["junit"] and len(argv) == 3:
        print("HEPBPF-VM-PYTEST " + json.dumps(junit(argv[1], int(argv[2]))), flush=True)
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
