"""The ABI types of bpf/include/hepbpf_abi.h, through cffi.

The cdef is generated from the header at build time (bpf/Makefile), so the
C and Python views of every struct come from one declaration. Encoding and
decoding of map keys and values goes through these types only.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

from cffi import FFI

_REPO = Path(__file__).resolve().parent.parent


def bpf_dir() -> Path:
    """Where the built objects live: $HEPBPF_BPF_DIR, else bpf/build."""
    return Path(os.environ.get("HEPBPF_BPF_DIR", _REPO / "bpf" / "build"))


class AbiMissing(RuntimeError):
    pass


@cache
def ffi() -> FFI:
    path = bpf_dir() / "hepbpf_abi.cdef"
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise AbiMissing(f"{path} is missing: build the BPF objects first (make -C bpf)") from None
    f = FFI()
    f.cdef(text)
    return f


def sizeof(ctype: str) -> int:
    return ffi().sizeof(ctype)


def new(ctype: str, init=None):
    return ffi().new(ctype + " *", init)


def pack(ctype: str, init=None) -> bytes:
    """Bytes of one ABI value; padding and unnamed fields are zero."""
    p = new(ctype, init)
    return bytes(ffi().buffer(p))


def unpack(ctype: str, data: bytes):
    """An ABI value from bytes (a copy; fields readable as attributes)."""
    f = ffi()
    p = f.new(ctype + " *")
    f.memmove(p, data, f.sizeof(ctype))
    return p[0]


def const(name: str) -> int:
    """An enum constant of the ABI header, e.g. const('HEP_MAX_WORDS')."""
    return int(getattr(_lib(), name))


@cache
def _lib():
    return ffi().dlopen(None)
