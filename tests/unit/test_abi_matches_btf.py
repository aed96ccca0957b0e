"""The cffi view of hepbpf_abi.h matches the compiled objects' BTF.

Sizes and member offsets of every ABI struct, and every enum constant, are
compared with the BTF that clang wrote into the objects (read with bpftool,
no root needed). The compiler's reason names are checked against the enum.
"""

import json
import re
import shutil
import subprocess

import pytest

from hepbpf.compiler.reasons import REASONS
from hepbpf.loader import abi

ABI_STRUCTS = ["hep_lpm4_key", "hep_lpm6_key", "hep_host4_key", "hep_host6_key", "hep_scope", "hep_proto_ent",
               "hep_class", "hep_slot", "hep_stats", "hep_flow", "hep_verdict", "hep_config"]
OBJECTS = ["abi_anchor.bpf.o", "hep.bpf.o"]


def btf_types(obj: str) -> dict[str, dict]:
    if shutil.which("bpftool") is None:
        pytest.fail("bpftool is not installed (make deps)")
    out = subprocess.run(["bpftool", "btf", "dump", "file", str(abi.bpf_dir() / obj), "-j"],
                         check=True, capture_output=True, text=True).stdout
    return {t["name"]: t for t in json.loads(out)["types"] if t.get("name")}


@pytest.mark.parametrize("obj", OBJECTS)
def test_struct_layouts_match(obj):
    types = btf_types(obj)
    ffi = abi.ffi()
    checked = 0
    for name in ABI_STRUCTS:
        if name not in types:
            assert obj != "abi_anchor.bpf.o", f"{name} missing from the anchor object's BTF"
            continue
        t = types[name]
        assert ffi.sizeof(f"struct {name}") == t["size"], name
        for m in t["members"]:
            off = ffi.offsetof(f"struct {name}", m["name"])
            assert off * 8 == m["bits_offset"], f"{name}.{m['name']}"
        checked += 1
    assert checked >= (len(ABI_STRUCTS) if obj == "abi_anchor.bpf.o" else 3)


def test_enum_constants_match():
    types = btf_types("abi_anchor.bpf.o")
    n = 0
    for t in types.values():
        if t["kind"] == "ENUM" and t["name"].startswith("hep_"):
            for v in t["values"]:
                # bpftool prints a 32-bit enum value of ~0 sign-extended.
                mask = (1 << (8 * t["size"])) - 1
                assert abi.const(v["name"]) & mask == v["val"] & mask, v["name"]
                n += 1
    assert n > 30


def test_reason_names_match_enum():
    types = btf_types("abi_anchor.bpf.o")
    enum = {v["name"]: v["val"] for v in types["hep_reason"]["values"]}
    for name, value in REASONS.items():
        c = "HEP_REASON_" + name.upper().replace("-", "_")
        assert enum[c] == value, name
    assert len(REASONS) == enum["HEP_REASON_MAX"]


def test_map_names_fit_the_kernel():
    """The kernel keeps 15 characters of a map name; ours must fit so
    `bpftool map` and map-info lookups show the full name."""
    from hepbpf.loader.mapnames import ALL_MAPS

    maps_h = (abi.bpf_dir().parent / "include" / "maps.h").read_text()
    declared = set(re.findall(r"\} (hep_\w+) SEC\(\"\.maps\"\)", maps_h))
    assert declared == set(ALL_MAPS)
    for name in ALL_MAPS:
        assert len(name) <= 15 and re.fullmatch(r"hep_[a-z0-9]+_v\d+", name), name
