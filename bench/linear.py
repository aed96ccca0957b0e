"""LIN(N): the straight-line per-rule baseline, as Calico builds it.

Calico's BPF dataplane parses in C, then tail-calls a policy program that
its Go code assembles instruction by instruction: one block of compares
per rule, in order. This does the same for a RuleSet: bench.bpf.o's
`bench_xdp_lin` parses with hepbpf's own parser (so LIN - P is the rules'
cost) into `bench_lin_v1` and tail-calls slot 0 of `bench_lin_jmp_v1`,
where the program assembled here tests the rules one by one and writes the
index of the first match (N: none) to the state's `hit`.

Assembled rather than generated as C: clang needs minutes for a few
thousand rules in one function, and its output is not what Calico emits.
The verifier rejects the program somewhere past a few thousand rules (the
jump-sequence and 1M-instruction limits); the harness reports that.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct

from .rules import RuleSet

_PROTO = {"TCP": 6, "UDP": 17}

# struct bench_lin_state (bpf/bench.bpf.c): struct hep_flow, then hit.
OFF_PROTO, OFF_DPORT, OFF_SADDR, OFF_HIT = 1, 4, 8, 88
STATE_SIZE = 96
XDP_DROP = 1

# Instruction classes and fields (include/uapi/linux/bpf.h, bpf_common.h).
_LD, _LDX, _ST, _STX, _ALU, _JMP, _JMP32, _ALU64 = range(8)
_W, _H, _B, _DW = 0x00, 0x08, 0x10, 0x18
_IMM, _MEM = 0x00, 0x60
_K, _X = 0x00, 0x08
_AND, _MOV, _ADD = 0x50, 0xB0, 0x00
_JEQ, _JGT, _JNE, _JLT, _CALL, _EXIT = 0x10, 0x20, 0x50, 0xA0, 0x80, 0x90
_PSEUDO_MAP_FD = 1
_FN_MAP_LOOKUP_ELEM = 1
_NEXT = object()  # a jump to the next rule, resolved once the rule is laid out


def _insn(code: int, dst: int = 0, src: int = 0, off: int | object = 0, imm: int = 0) -> list:
    return [code, dst, src, off, imm]


def _encode(insns: list[list]) -> bytes:
    return b"".join(struct.pack("<BBhi", c, (s << 4) | d, o, i if i < 2**31 else i - 2**32)
                    for c, d, s, o, i in insns)


def _masks(net) -> list[tuple[int, int]]:
    """(mask, value) per 32-bit word of the address, as a little-endian
    load of the network-order bytes reads them."""
    packed = net.network_address.packed
    out = []
    for i in range(0, len(packed), 4):
        bits = max(0, min(32, net.prefixlen - i * 8))
        mask = ((1 << bits) - 1) << (32 - bits) if bits else 0
        m = int.from_bytes(mask.to_bytes(4, "big"), "little")
        out.append((m, int.from_bytes(packed[i:i + 4], "little") & m))
    return out


def assemble(rs: RuleSet, state_map_fd: int) -> bytes:
    """The rules program. r6 holds the state; each compare loads its field
    afresh into r1, as Calico's programs read theirs from the stack: the
    verifier then learns nothing per path about a register that outlives
    the rule, so its states merge at every rule (kept in registers, the
    bounds learned would keep paths apart, and 1,000 rules overflow it)."""
    p = [
        _insn(_ST | _MEM | _W, dst=10, off=-4, imm=0),           # key = 0
        _insn(_ALU64 | _MOV | _X, dst=2, src=10),
        _insn(_ALU64 | _ADD | _K, dst=2, imm=-4 & 0xFFFFFFFF),
        _insn(_LD | _DW | _IMM, dst=1, src=_PSEUDO_MAP_FD, imm=state_map_fd), _insn(0),
        _insn(_JMP | _CALL, imm=_FN_MAP_LOOKUP_ELEM),
        _insn(_JMP | _JNE | _K, dst=0, off=2, imm=0),
        _insn(_ALU64 | _MOV | _K, dst=0, imm=XDP_DROP),
        _insn(_JMP | _EXIT),
        _insn(_ALU64 | _MOV | _X, dst=6, src=0),
    ]

    def hit(index: int) -> list:
        return [_insn(_ST | _MEM | _W, dst=6, off=OFF_HIT, imm=index),
                _insn(_ALU64 | _MOV | _K, dst=0, imm=XDP_DROP), _insn(_JMP | _EXIT)]

    for i, r in enumerate(rs.rules):
        block = [_insn(_LDX | _MEM | _B, dst=1, src=6, off=OFF_PROTO),
                 _insn(_JMP | _JNE | _K, dst=1, off=_NEXT, imm=_PROTO[r.proto])]
        for k, (m, v) in enumerate(_masks(r.src)):
            if not m:
                continue
            block.append(_insn(_LDX | _MEM | _W, dst=1, src=6, off=OFF_SADDR + 4 * k))
            if m != 0xFFFFFFFF:
                block.append(_insn(_ALU | _AND | _K, dst=1, imm=m))
            block.append(_insn(_JMP32 | _JNE | _K, dst=1, off=_NEXT, imm=v))
        lo, hi = r.ports
        block.append(_insn(_LDX | _MEM | _H, dst=1, src=6, off=OFF_DPORT))
        if lo == hi:
            block.append(_insn(_JMP | _JNE | _K, dst=1, off=_NEXT, imm=lo))
        else:
            block += [_insn(_JMP | _JLT | _K, dst=1, off=_NEXT, imm=lo),
                      _insn(_JMP | _JGT | _K, dst=1, off=_NEXT, imm=hi)]
        block += hit(i)
        for j, ins in enumerate(block):
            if ins[3] is _NEXT:
                ins[3] = len(block) - j - 1
        p += block
    p += hit(rs.n)
    return _encode(p)


# --- loading: raw BPF_PROG_LOAD (libbpf's object loader wants an ELF) ----------

_SYS_BPF = {"x86_64": 321, "aarch64": 280}.get(os.uname().machine, 321)
_BPF_PROG_LOAD = 5
_PROG_TYPE_XDP = 6
_ATTACH_XDP = 37  # enum bpf_attach_type BPF_XDP
_LOG_SIZE = 1 << 16


class LoadError(OSError):
    pass


def load(insns: bytes, name: str = "lin_rules") -> int:
    """Verify and JIT the assembled program; returns its fd."""
    libc = ctypes.CDLL(None, use_errno=True)
    prog = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(b"GPL")
    log = ctypes.create_string_buffer(_LOG_SIZE)
    # union bpf_attr, BPF_PROG_LOAD: prog_type, insn_cnt, insns, license,
    # log_level, log_size, log_buf, kern_version, prog_flags, prog_name.
    # expected_attach_type BPF_XDP, as libbpf gives SEC("xdp") programs: a
    # prog array takes only programs like its first (the entry's owner).
    attr = struct.pack("<IIQQIIQII16sII", _PROG_TYPE_XDP, len(insns) // 8, ctypes.addressof(prog),
                       ctypes.addressof(lic), 0, 0, 0, 0, 0, name.encode()[:15], 0, _ATTACH_XDP)
    buf = ctypes.create_string_buffer(attr, 144)
    fd = libc.syscall(_SYS_BPF, _BPF_PROG_LOAD, buf, 144)
    if fd >= 0:
        return fd
    err = ctypes.get_errno()
    # Once more with the verifier's log, to say why.
    attr = struct.pack("<IIQQIIQII16sII", _PROG_TYPE_XDP, len(insns) // 8, ctypes.addressof(prog),
                       ctypes.addressof(lic), 1, _LOG_SIZE, ctypes.addressof(log), 0, 0, name.encode()[:15],
                       0, _ATTACH_XDP)
    buf = ctypes.create_string_buffer(attr, 144)
    fd = libc.syscall(_SYS_BPF, _BPF_PROG_LOAD, buf, 144)
    if fd >= 0:
        return fd
    tail = [line for line in log.value.decode(errors="replace").splitlines() if line.strip()][-2:]
    raise LoadError(err, f"{errno.errorcode.get(err, err)}: {' / '.join(tail)}")


def hit_of(state_value: bytes) -> int:
    return int.from_bytes(state_value[OFF_HIT:OFF_HIT + 4], "little")
