"""The system libbpf (1.x), through cffi in ABI mode.

Only what hepbpf needs is declared, matching libbpf 1.1's public headers.
libbpf's own objects stay opaque; the opts structs start with ``size_t sz``,
which is set to the size of *our* declaration (libbpf accepts a smaller
struct than its own and zero-fills the rest). Errors: libbpf 1.x returns
-errno (or NULL and sets errno); every failure raises ``BpfError`` naming
the call, with the verifier log on a failed load.
"""

from __future__ import annotations

import errno as _errno
import os
import platform
from collections.abc import Iterator
from enum import IntFlag

from cffi import FFI

_CDEF = """
typedef unsigned char __u8;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef int libbpf_print_fn_t(int level, const char *fmt, void *args);

struct bpf_object;
struct bpf_program;
struct bpf_map;

struct bpf_test_run_opts {
    size_t sz;
    const void *data_in;
    void *data_out;
    __u32 data_size_in;
    __u32 data_size_out;
    const void *ctx_in;
    void *ctx_out;
    __u32 ctx_size_in;
    __u32 ctx_size_out;
    __u32 retval;
    int repeat;
    __u32 duration;
    __u32 flags;
    __u32 cpu;
    __u32 batch_size;
};

struct bpf_xdp_attach_opts {
    size_t sz;
    int old_prog_fd;
};

struct bpf_xdp_query_opts {
    size_t sz;
    __u32 prog_id;
    __u32 drv_prog_id;
    __u32 hw_prog_id;
    __u32 skb_prog_id;
    __u8 attach_mode;
};

struct bpf_map_batch_opts {
    size_t sz;
    __u64 elem_flags;
    __u64 flags;
};

/* linux/bpf.h, up to the fields we read; the kernel fills min(len, its size). */
struct bpf_prog_info {
    __u32 type;
    __u32 id;
    __u8 tag[8];
    __u32 jited_prog_len;
    __u32 xlated_prog_len;
    __u64 jited_prog_insns;
    __u64 xlated_prog_insns;
    __u64 load_time;
    __u32 created_by_uid;
    __u32 nr_map_ids;
    __u64 map_ids;
    char name[16];
    __u32 ifindex;
    __u32 gpl_compatible_bits;
    __u64 netns_dev;
    __u64 netns_ino;
    __u32 nr_jited_ksyms;
    __u32 nr_jited_func_lens;
    __u64 jited_ksyms;
    __u64 jited_func_lens;
    __u32 btf_id;
    __u32 func_info_rec_size;
    __u64 func_info;
    __u32 nr_func_info;
    __u32 nr_line_info;
    __u64 line_info;
    __u64 jited_line_info;
    __u32 nr_jited_line_info;
    __u32 line_info_rec_size;
    __u32 jited_line_info_rec_size;
    __u32 nr_prog_tags;
    __u64 prog_tags;
    __u64 run_time_ns;
    __u64 run_cnt;
    __u64 recursion_misses;
    __u32 verified_insns;
    __u32 attach_btf_obj_id;
    __u32 attach_btf_id;
    __u32 pad;
};

struct bpf_map_info {
    __u32 type;
    __u32 id;
    __u32 key_size;
    __u32 value_size;
    __u32 max_entries;
    __u32 map_flags;
    char name[16];
    __u32 ifindex;
    __u32 btf_vmlinux_value_type_id;
    __u64 netns_dev;
    __u64 netns_ino;
    __u32 btf_id;
    __u32 btf_key_type_id;
    __u32 btf_value_type_id;
    __u32 pad;
    __u64 map_extra;
};

libbpf_print_fn_t *libbpf_set_print(libbpf_print_fn_t *fn);
int libbpf_strerror(int err, char *buf, size_t size);

struct bpf_object *bpf_object__open_file(const char *path, const void *opts);
int bpf_object__load(struct bpf_object *obj);
void bpf_object__close(struct bpf_object *obj);
struct bpf_map *bpf_object__find_map_by_name(const struct bpf_object *obj, const char *name);
struct bpf_program *bpf_object__find_program_by_name(const struct bpf_object *obj, const char *name);
struct bpf_program *bpf_object__next_program(const struct bpf_object *obj, struct bpf_program *prog);

const char *bpf_map__name(const struct bpf_map *map);
int bpf_map__fd(const struct bpf_map *map);
int bpf_map__set_max_entries(struct bpf_map *map, __u32 max_entries);
int bpf_map__set_value_size(struct bpf_map *map, __u32 size);
__u32 bpf_map__key_size(const struct bpf_map *map);
__u32 bpf_map__value_size(const struct bpf_map *map);
__u32 bpf_map__max_entries(const struct bpf_map *map);
const void *bpf_map__initial_value(struct bpf_map *map, size_t *psize);
int bpf_map__set_initial_value(struct bpf_map *map, const void *data, size_t size);

int bpf_program__fd(const struct bpf_program *prog);
int bpf_program__set_log_buf(struct bpf_program *prog, char *log_buf, size_t log_size);
int bpf_program__set_log_level(struct bpf_program *prog, __u32 log_level);

int bpf_map_update_elem(int fd, const void *key, const void *value, __u64 flags);
int bpf_map_lookup_elem(int fd, const void *key, void *value);
int bpf_map_delete_elem(int fd, const void *key);
int bpf_map_get_next_key(int fd, const void *key, void *next_key);
int bpf_map_update_batch(int fd, const void *keys, const void *values, __u32 *count,
                         const struct bpf_map_batch_opts *opts);
int bpf_prog_test_run_opts(int prog_fd, struct bpf_test_run_opts *opts);

int bpf_xdp_attach(int ifindex, int prog_fd, __u32 flags, const struct bpf_xdp_attach_opts *opts);
int bpf_xdp_detach(int ifindex, __u32 flags, const struct bpf_xdp_attach_opts *opts);
int bpf_xdp_query(int ifindex, int flags, struct bpf_xdp_query_opts *opts);

int bpf_obj_pin(int fd, const char *pathname);
int bpf_obj_get(const char *pathname);
int bpf_prog_get_fd_by_id(__u32 id);
int bpf_map_get_fd_by_id(__u32 id);
int bpf_obj_get_info_by_fd(int bpf_fd, void *info, __u32 *info_len);

int vsnprintf(char *str, size_t size, const char *format, void *ap);
"""

ffi = FFI()
ffi.cdef(_CDEF)


class XdpFlags(IntFlag):
    """linux/if_link.h XDP_FLAGS_*."""

    UPDATE_IF_NOEXIST = 1 << 0
    SKB_MODE = 1 << 1
    DRV_MODE = 1 << 2
    HW_MODE = 1 << 3
    REPLACE = 1 << 4


XDP_ATTACHED_MODES = {0: None, 1: "native", 2: "generic", 3: "offload", 4: "multi"}  # XDP_ATTACHED_*
MODE_FLAGS = {"native": XdpFlags.DRV_MODE, "generic": XdpFlags.SKB_MODE}
BPF_ANY = 0
LOG_SIZE = 1 << 22


class BpfError(OSError):
    def __init__(self, call: str, err: int, log: str = ""):
        self.call = call
        self.log = log
        msg = f"{call}: {os.strerror(err) if err else 'failed'}"
        if log:
            msg += "\n" + log
        super().__init__(err, msg)

    def __str__(self) -> str:
        return self.args[1]


try:
    lib = ffi.dlopen("libbpf.so.1")
except OSError as e:  # pragma: no cover - depends on the machine
    raise ImportError("libbpf.so.1 not found: install libbpf1 (Debian: apt-get install libbpf1)") from e
_libc = ffi.dlopen(None)
_messages: list[str] = []


def _on_print(level, fmt, args) -> int:
    # va_list is a pointer-sized handle on x86-64 and arm64 calls; format it
    # with vsnprintf so libbpf's messages join our error, not stderr.
    buf = ffi.new("char[]", 1024)
    _libc.vsnprintf(buf, 1024, fmt, args)
    _messages.append(ffi.string(buf).decode(errors="replace").rstrip())
    del _messages[:-200]
    return 0


if platform.machine() in ("x86_64", "aarch64"):
    _print_cb = ffi.callback("libbpf_print_fn_t", _on_print)  # kept alive at module level
    lib.libbpf_set_print(_print_cb)


def _check(call: str, rc: int, log: str = "") -> int:
    if rc < 0:
        err = -rc if rc != -1 else ffi.errno
        raise BpfError(call, err, log)
    return rc


def _trim_log(text: str, lines: int = 60) -> str:
    out = text.strip().splitlines()
    if len(out) > lines:
        out = [f"... ({len(out) - lines} lines of verifier log omitted)"] + out[-lines:]
    return "\n".join(out)


class Map:
    """A map by fd. Owned fds (from ids or pins) are closed by close()."""

    def __init__(self, fd: int, name: str, key_size: int, value_size: int, max_entries: int,
                 map_type: int = 0, owned: bool = False):
        self.fd = fd
        self.name = name
        self.key_size = key_size
        self.value_size = value_size
        self.max_entries = max_entries
        self.type = map_type
        self._owned = owned

    @classmethod
    def from_fd(cls, fd: int, owned: bool = True) -> Map:
        info = ffi.new("struct bpf_map_info *")
        n = ffi.new("__u32 *", ffi.sizeof("struct bpf_map_info"))
        _check("bpf_obj_get_info_by_fd", lib.bpf_obj_get_info_by_fd(fd, info, n))
        return cls(fd, ffi.string(info.name).decode(), info.key_size, info.value_size, info.max_entries,
                   info.type, owned)

    @classmethod
    def from_id(cls, map_id: int) -> Map:
        return cls.from_fd(_check("bpf_map_get_fd_by_id", lib.bpf_map_get_fd_by_id(map_id)))

    @classmethod
    def from_pinned(cls, path: str) -> Map:
        return cls.from_fd(_check(f"bpf_obj_get({path})", lib.bpf_obj_get(path.encode())))

    @property
    def percpu(self) -> bool:
        return self.type in (5, 6, 10)  # PERCPU_HASH, PERCPU_ARRAY, LRU_PERCPU_HASH

    def _vsize(self, percpu: bool) -> int:
        if not percpu:
            return self.value_size
        from .datapath import possible_cpus

        return ((self.value_size + 7) & ~7) * possible_cpus()

    def update(self, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
        _check(f"bpf_map_update_elem({self.name})", lib.bpf_map_update_elem(self.fd, key, value, flags))

    def lookup(self, key: bytes, percpu: bool = False) -> bytes | None:
        buf = ffi.new("char[]", self._vsize(percpu))
        rc = lib.bpf_map_lookup_elem(self.fd, key, buf)
        if rc < 0:
            err = -rc if rc != -1 else ffi.errno
            if err == _errno.ENOENT:
                return None
            raise BpfError(f"bpf_map_lookup_elem({self.name})", err)
        return bytes(ffi.buffer(buf))

    def delete(self, key: bytes) -> None:
        _check(f"bpf_map_delete_elem({self.name})", lib.bpf_map_delete_elem(self.fd, key))

    def keys(self) -> Iterator[bytes]:
        cur = ffi.NULL
        nxt = ffi.new("char[]", self.key_size)
        while lib.bpf_map_get_next_key(self.fd, cur, nxt) == 0:
            key = bytes(ffi.buffer(nxt))
            yield key
            cur = ffi.new("char[]", key)

    def update_batch(self, keys: list[bytes], values: list[bytes]) -> None:
        """Many updates in few syscalls (falls back to one per entry where
        the map type has no batch op, e.g. LPM tries)."""
        if not keys:
            return
        kbuf = b"".join(keys)
        vbuf = b"".join(values)
        assert len(kbuf) == self.key_size * len(keys) and len(vbuf) == self.value_size * len(values)
        opts = ffi.new("struct bpf_map_batch_opts *", {"sz": ffi.sizeof("struct bpf_map_batch_opts")})
        count = ffi.new("__u32 *", len(keys))
        rc = lib.bpf_map_update_batch(self.fd, kbuf, vbuf, count, opts)
        if rc == 0 and count[0] == len(keys):
            return
        err = -rc if rc not in (0, -1) else ffi.errno
        if rc < 0 and err not in (_errno.EINVAL, _errno.ENOTSUPP if hasattr(_errno, "ENOTSUPP") else 524,
                                  524, _errno.EOPNOTSUPP):
            raise BpfError(f"bpf_map_update_batch({self.name})", err)
        for k, v in zip(keys[count[0] if rc == 0 else 0:], values[count[0] if rc == 0 else 0:]):
            self.update(k, v)

    def pin(self, path: str) -> None:
        _check(f"bpf_obj_pin({path})", lib.bpf_obj_pin(self.fd, path.encode()))

    def close(self) -> None:
        if self._owned and self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Program:
    def __init__(self, obj: BpfObject, ptr, name: str):
        self._obj = obj
        self._ptr = ptr
        self.name = name
        self._log = None

    @property
    def fd(self) -> int:
        return _check(f"bpf_program__fd({self.name})", lib.bpf_program__fd(self._ptr))

    def test_run(self, data: bytes, repeat: int = 1) -> tuple[int, bytes, int]:
        """BPF_PROG_TEST_RUN: (return value, data out, average ns per run)."""
        out = ffi.new("char[]", len(data) + 256)
        opts = ffi.new("struct bpf_test_run_opts *", {
            "sz": ffi.sizeof("struct bpf_test_run_opts"),
            "data_in": ffi.from_buffer(data), "data_size_in": len(data),
            "data_out": out, "data_size_out": len(data) + 256, "repeat": repeat,
        })
        _check(f"bpf_prog_test_run_opts({self.name})", lib.bpf_prog_test_run_opts(self.fd, opts))
        return opts.retval, bytes(ffi.buffer(out, opts.data_size_out)), opts.duration

    def pin(self, path: str) -> None:
        _check(f"bpf_obj_pin({path})", lib.bpf_obj_pin(self.fd, path.encode()))

    def info(self) -> dict:
        return prog_info(self.fd)


class BpfObject:
    """open -> (size maps, set rodata) -> load -> use -> close."""

    def __init__(self, ptr, path: str):
        self._ptr = ptr
        self.path = path
        self._maps: dict[str, Map] = {}
        self._progs: dict[str, Program] = {}
        self._keep: list = []

    @classmethod
    def open(cls, path: str) -> BpfObject:
        ptr = lib.bpf_object__open_file(path.encode(), ffi.NULL)
        if ptr == ffi.NULL:
            raise BpfError(f"bpf_object__open_file({path})", ffi.errno, "\n".join(_messages[-5:]))
        return cls(ptr, path)

    def _map_ptr(self, name: str):
        m = lib.bpf_object__find_map_by_name(self._ptr, name.encode())
        if m == ffi.NULL:
            raise KeyError(f"{self.path} has no map {name}")
        return m

    def map(self, name: str) -> _ObjectMap:
        return _ObjectMap(self._map_ptr(name), name)

    def program(self, name: str) -> Program:
        if name not in self._progs:
            p = lib.bpf_object__find_program_by_name(self._ptr, name.encode())
            if p == ffi.NULL:
                raise KeyError(f"{self.path} has no program {name}")
            self._progs[name] = Program(self, p, name)
        return self._progs[name]

    def set_rodata(self, data: bytes) -> None:
        """Replace the whole .rodata image (hepbpf's only rodata variable
        is its config struct, so sizes must match exactly)."""
        m = self._map_ptr(".rodata") if _has_map(self._ptr, ".rodata") else self._find_rodata()
        size = ffi.new("size_t *")
        lib.bpf_map__initial_value(m, size)
        if size[0] != len(data):
            raise ValueError(f".rodata is {size[0]} bytes, config is {len(data)}")
        _check("bpf_map__set_initial_value(.rodata)", lib.bpf_map__set_initial_value(m, data, len(data)))

    def _find_rodata(self):
        # libbpf names internal maps "<obj prefix>.rodata" (truncated); find it.
        for prefix_len in range(1, 9):
            name = (os.path.basename(self.path)[:prefix_len] + ".rodata").encode()
            m = lib.bpf_object__find_map_by_name(self._ptr, name)
            if m != ffi.NULL:
                return m
        raise KeyError("no .rodata map")

    def load(self, log_level: int = 0) -> None:
        logs = []
        p = lib.bpf_object__next_program(self._ptr, ffi.NULL)
        while p != ffi.NULL:
            # Our own buffer: the verifier log lands in it, not on stderr.
            buf = ffi.new("char[]", LOG_SIZE)
            self._keep.append(buf)
            lib.bpf_program__set_log_buf(p, buf, LOG_SIZE)
            lib.bpf_program__set_log_level(p, log_level)
            logs.append(buf)
            p = lib.bpf_object__next_program(self._ptr, p)
        del _messages[:]
        rc = lib.bpf_object__load(self._ptr)
        if rc < 0:
            text = "\n".join(ffi.string(b).decode(errors="replace") for b in logs) or "\n".join(_messages)
            raise BpfError(f"bpf_object__load({os.path.basename(self.path)})",
                           -rc, _trim_log(text or "\n".join(_messages)))

    def close(self) -> None:
        if self._ptr is not None:
            lib.bpf_object__close(self._ptr)
            self._ptr = None

    def __enter__(self) -> BpfObject:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _has_map(obj_ptr, name: str) -> bool:
    return lib.bpf_object__find_map_by_name(obj_ptr, name.encode()) != ffi.NULL


class _ObjectMap(Map):
    """A map of an open object: sizable before load, usable after."""

    def __init__(self, ptr, name: str):
        self._ptr = ptr
        super().__init__(-1, name, 0, 0, 0)

    def __getattribute__(self, attr):
        if attr in ("fd", "key_size", "value_size", "max_entries", "type"):
            ptr = object.__getattribute__(self, "_ptr")
            if attr == "fd":
                return _check(f"bpf_map__fd({object.__getattribute__(self, 'name')})", lib.bpf_map__fd(ptr))
            if attr == "key_size":
                return lib.bpf_map__key_size(ptr)
            if attr == "value_size":
                return lib.bpf_map__value_size(ptr)
            if attr == "max_entries":
                return lib.bpf_map__max_entries(ptr)
            return 0
        return object.__getattribute__(self, attr)

    def __setattr__(self, attr, value):
        if attr in ("fd", "key_size", "value_size", "max_entries", "type"):
            return  # derived from libbpf
        object.__setattr__(self, attr, value)

    def set_max_entries(self, n: int) -> None:
        _check(f"bpf_map__set_max_entries({self.name})", lib.bpf_map__set_max_entries(self._ptr, n))

    def set_value_size(self, n: int) -> None:
        _check(f"bpf_map__set_value_size({self.name})", lib.bpf_map__set_value_size(self._ptr, n))

    def close(self) -> None:
        pass  # owned by the object


def prog_info(fd: int) -> dict:
    info = ffi.new("struct bpf_prog_info *")
    n = ffi.new("__u32 *", ffi.sizeof("struct bpf_prog_info"))
    _check("bpf_obj_get_info_by_fd", lib.bpf_obj_get_info_by_fd(fd, info, n))
    nmaps = info.nr_map_ids
    ids = ffi.new("__u32[]", max(1, nmaps))
    info2 = ffi.new("struct bpf_prog_info *", {"nr_map_ids": nmaps, "map_ids": int(ffi.cast("uintptr_t", ids))})
    n[0] = ffi.sizeof("struct bpf_prog_info")
    _check("bpf_obj_get_info_by_fd", lib.bpf_obj_get_info_by_fd(fd, info2, n))
    return {
        "id": info.id,
        "type": info.type,
        "name": ffi.string(info.name).decode(),
        "tag": bytes(info.tag).hex(),
        "map_ids": [ids[i] for i in range(nmaps)],
        "xlated_len": info.xlated_prog_len,
        "jited_len": info.jited_prog_len,
        "verified_insns": info.verified_insns,
    }


def xdp_attach(ifindex: int, prog_fd: int, mode: str, replace_fd: int | None = None) -> None:
    """Attach through netlink (outlives the process). Without replace_fd it
    refuses to overwrite anything; with it, the swap is atomic and fails if
    the attached program is not replace_fd's."""
    flags = MODE_FLAGS[mode]
    opts = ffi.new("struct bpf_xdp_attach_opts *", {"sz": ffi.sizeof("struct bpf_xdp_attach_opts")})
    if replace_fd is None:
        flags |= XdpFlags.UPDATE_IF_NOEXIST
    else:
        flags |= XdpFlags.REPLACE
        opts.old_prog_fd = replace_fd
    _check(f"bpf_xdp_attach({mode})", lib.bpf_xdp_attach(ifindex, prog_fd, int(flags), opts))


def xdp_detach(ifindex: int, mode: str, expected_fd: int | None = None) -> None:
    flags = MODE_FLAGS[mode]
    opts = ffi.new("struct bpf_xdp_attach_opts *", {"sz": ffi.sizeof("struct bpf_xdp_attach_opts")})
    if expected_fd is not None:
        flags |= XdpFlags.REPLACE  # only if our program is still the one attached
        opts.old_prog_fd = expected_fd
    _check(f"bpf_xdp_detach({mode})", lib.bpf_xdp_detach(ifindex, int(flags), opts))


def xdp_query(ifindex: int) -> dict:
    opts = ffi.new("struct bpf_xdp_query_opts *", {"sz": ffi.sizeof("struct bpf_xdp_query_opts")})
    _check("bpf_xdp_query", lib.bpf_xdp_query(ifindex, 0, opts))
    return {"prog_id": opts.prog_id or None, "mode": XDP_ATTACHED_MODES.get(opts.attach_mode)}


def prog_fd_by_id(prog_id: int) -> int:
    return _check(f"bpf_prog_get_fd_by_id({prog_id})", lib.bpf_prog_get_fd_by_id(prog_id))


def obj_get(path: str) -> int:
    return _check(f"bpf_obj_get({path})", lib.bpf_obj_get(path.encode()))
