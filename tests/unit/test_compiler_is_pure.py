"""The compiler is pure: it imports nothing that touches the kernel, files
or the network. The loader is the only code that does."""

import ast
from pathlib import Path

import hepbpf.compiler

FORBIDDEN = {"cffi", "pyroute2", "socket", "subprocess", "ctypes", "os", "shutil", "pathlib", "hepbpf.loader",
             "scapy"}


def test_compiler_imports():
    root = Path(hepbpf.compiler.__file__).parent
    bad = []
    for path in sorted(root.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            for n in names:
                if n in FORBIDDEN or n.split(".")[0] in FORBIDDEN or n.startswith("hepbpf.loader"):
                    bad.append(f"{path.name}: import {n}")
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "open":
                bad.append(f"{path.name}:{node.lineno}: open()")
    assert not bad, bad
