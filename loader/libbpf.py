"""The system libbpf (1.x), through cffi in ABI mode.

Two layers:

* ``ffi``/``lib``: a cdef holding only what hepbpf calls, copied from libbpf
  1.1's public headers (``bpf/libbpf.h``, ``bpf/bpf.h``) and the uapi
  ``linux/bpf.h``. libbpf's own objects stay opaque. The opts structs start
  with ``size_t sz``, which we set to ``ffi.sizeof`` of *our* declaration:
  libbpf takes a smaller struct than its own (it zero-fills the rest) and
  refuses a larger one unless the extra bytes are zero, so a declaration
  that matches 1.1 works with every later 1.x.
* ``BpfObject``, ``Map``, ``Program`` and the ``xdp_*``/``*_by_id``
  functions: Pythonic wrappers. Every failure raises ``BpfError`` (an
  ``OSError``) carrying the errno, the call's name, what libbpf printed
  during the call and, on a failed load, the tail of the verifier log.

libbpf's messages never reach stderr: ``libbpf_set_print`` sends them to
``recent_messages()`` and to the ``hepbpf.libbpf`` logger (DEBUG level).

Error convention (libbpf 1.x, "strict mode" is the default): calls that
return ``int`` return ``-errno``; calls that return a pointer return NULL and
set ``errno``. So ``-1`` is -EPERM, never "look at errno". libbpf's own codes
(4000+, e.g. 4001 "BPF object format invalid") come through as they are.

libbpf 1.1 quirks handled here:

* ``bpf_xdp_attach``/``bpf_xdp_detach`` read ``old_prog_fd == 0`` as "not
  set", so an fd 0 is passed as a dup.
* ``bpf_map__name()`` of an internal map is its kernel name,
  ``"<object name[:8]>.rodata"``; ``find_map_by_name(".rodata")`` works too.
* ``bpf_map__fd()`` is -1 (not -errno) before load.
* ``bpf_object__load()`` runs once: after a failure, open the object again.
* With a log buffer of ours, libbpf keeps the verifier log out of its
  messages; we put it in the error ourselves.
* ``bpf_xdp_query()`` on a missing ifindex says "nothing attached".
* ``bpf_tc_attach()`` reads ``prog_fd == 0`` as "not set" (EINVAL): an fd
  0 is passed as a dup, as for XDP.
* libbpf 1.1 predates tcx (kernel 6.6): ``bpf_link_create()`` passes
  ``BPF_TCX_*`` through unchanged, but ``bpf_prog_query_opts()`` has no
  ``link_ids``, so ``prog_query()`` makes the bpf(2) call itself.
"""

from __future__ import annotations

import contextlib
import errno as _errno
import itertools
import logging
import mmap
import os
import platform
import socket
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from enum import IntEnum, IntFlag
from typing import Any, Literal, TypedDict

from cffi import FFI

__all__ = [
    "BpfError", "BpfObject", "Map", "Program",
    "BpfMapType", "BpfProgType", "MapUpdateFlags", "XdpAction", "XdpFlags", "XdpAttached", "PrintLevel",
    "XdpMode", "XdpState", "ProgInfo", "MapInfo", "LinkInfo", "ProgQuery", "TcFilter",
    "BpfAttachType", "BpfLinkType", "TcAttachPoint", "BPF_F_REPLACE", "BPF_F_MMAPABLE",
    "xdp_attach", "xdp_detach", "xdp_query", "prog_fd_by_id", "map_fd_by_id", "obj_get", "obj_pin",
    "link_create", "link_update", "link_detach", "link_fd_by_id", "link_info", "prog_query", "prog_detach",
    "tc_hook_create", "tc_hook_destroy", "tc_attach", "tc_detach", "tc_query",
    "prog_info", "map_info", "num_possible_cpus", "libbpf_version", "recent_messages", "set_debug",
    "LOG_SIZE", "LOG_TAIL_LINES",
]

log = logging.getLogger("hepbpf.libbpf")

# --- constants (linux/bpf.h, linux/if_link.h, bpf/libbpf.h) -----------------


class BpfMapType(IntEnum):
    """enum bpf_map_type (linux/bpf.h, uapi 6.1)."""

    UNSPEC = 0
    HASH = 1
    ARRAY = 2
    PROG_ARRAY = 3
    PERF_EVENT_ARRAY = 4
    PERCPU_HASH = 5
    PERCPU_ARRAY = 6
    STACK_TRACE = 7
    CGROUP_ARRAY = 8
    LRU_HASH = 9
    LRU_PERCPU_HASH = 10
    LPM_TRIE = 11
    ARRAY_OF_MAPS = 12
    HASH_OF_MAPS = 13
    DEVMAP = 14
    SOCKMAP = 15
    CPUMAP = 16
    XSKMAP = 17
    SOCKHASH = 18
    CGROUP_STORAGE = 19
    REUSEPORT_SOCKARRAY = 20
    PERCPU_CGROUP_STORAGE = 21
    QUEUE = 22
    STACK = 23
    SK_STORAGE = 24
    DEVMAP_HASH = 25
    STRUCT_OPS = 26
    RINGBUF = 27
    INODE_STORAGE = 28
    TASK_STORAGE = 29
    BLOOM_FILTER = 30
    USER_RINGBUF = 31


# Their values are one slot per possible CPU, each rounded up to 8 bytes.
PERCPU_MAP_TYPES = frozenset({BpfMapType.PERCPU_HASH, BpfMapType.PERCPU_ARRAY,
                              BpfMapType.LRU_PERCPU_HASH, BpfMapType.PERCPU_CGROUP_STORAGE})


class BpfProgType(IntEnum):
    """enum bpf_prog_type (linux/bpf.h, uapi 6.1)."""

    UNSPEC = 0
    SOCKET_FILTER = 1
    KPROBE = 2
    SCHED_CLS = 3
    SCHED_ACT = 4
    TRACEPOINT = 5
    XDP = 6
    PERF_EVENT = 7
    CGROUP_SKB = 8
    CGROUP_SOCK = 9
    LWT_IN = 10
    LWT_OUT = 11
    LWT_XMIT = 12
    SOCK_OPS = 13
    SK_SKB = 14
    CGROUP_DEVICE = 15
    SK_MSG = 16
    RAW_TRACEPOINT = 17
    CGROUP_SOCK_ADDR = 18
    LWT_SEG6LOCAL = 19
    LIRC_MODE2 = 20
    SK_REUSEPORT = 21
    FLOW_DISSECTOR = 22
    CGROUP_SYSCTL = 23
    RAW_TRACEPOINT_WRITABLE = 24
    CGROUP_SOCKOPT = 25
    TRACING = 26
    STRUCT_OPS = 27
    EXT = 28
    LSM = 29
    SK_LOOKUP = 30
    SYSCALL = 31


class MapUpdateFlags(IntFlag):
    """BPF_ANY / BPF_NOEXIST / BPF_EXIST / BPF_F_LOCK (linux/bpf.h)."""

    ANY = 0
    NOEXIST = 1
    EXIST = 2
    F_LOCK = 4


class XdpAction(IntEnum):
    """enum xdp_action (linux/bpf.h): an XDP program's return value."""

    ABORTED = 0
    DROP = 1
    PASS = 2
    TX = 3
    REDIRECT = 4


class XdpFlags(IntFlag):
    """XDP_FLAGS_* (linux/if_link.h)."""

    UPDATE_IF_NOEXIST = 1 << 0
    SKB_MODE = 1 << 1
    DRV_MODE = 1 << 2
    HW_MODE = 1 << 3
    REPLACE = 1 << 4
    MODES = SKB_MODE | DRV_MODE | HW_MODE


class XdpAttached(IntEnum):
    """XDP_ATTACHED_* (linux/if_link.h): bpf_xdp_query_opts.attach_mode."""

    NONE = 0
    DRV = 1
    SKB = 2
    HW = 3
    MULTI = 4


class PrintLevel(IntEnum):
    """enum libbpf_print_level (bpf/libbpf.h)."""

    WARN = 0
    INFO = 1
    DEBUG = 2


class BpfAttachType(IntEnum):
    """The enum bpf_attach_type values hepbpf uses (linux/bpf.h). TCX_* came
    with kernel 6.6, after Debian 12's uapi headers (6.1): BPF_LSM_CGROUP is
    43 there, then STRUCT_OPS 44, NETFILTER 45, TCX_INGRESS 46, TCX_EGRESS 47."""

    TCX_INGRESS = 46
    TCX_EGRESS = 47


class BpfLinkType(IntEnum):
    """enum bpf_link_type (linux/bpf.h, uapi 6.7)."""

    UNSPEC = 0
    RAW_TRACEPOINT = 1
    TRACING = 2
    CGROUP = 3
    ITER = 4
    NETNS = 5
    XDP = 6
    PERF_EVENT = 7
    KPROBE_MULTI = 8
    STRUCT_OPS = 9
    NETFILTER = 10
    TCX = 11
    UPROBE_MULTI = 12
    NETKIT = 13


class TcAttachPoint(IntFlag):
    """enum bpf_tc_attach_point (bpf/libbpf.h): the clsact qdisc's hooks.
    INGRESS | EGRESS names the qdisc itself (bpf_tc_hook_destroy deletes it)."""

    INGRESS = 1 << 0
    EGRESS = 1 << 1
    CUSTOM = 1 << 2


BPF_F_REPLACE = 1 << 2  # linux/bpf.h: link update only if the old program is still the expected one
BPF_F_MMAPABLE = 1 << 10  # linux/bpf.h: an array user space may mmap
BPF_TC_F_REPLACE = 1 << 0  # bpf/libbpf.h enum bpf_tc_flags
_BPF_PROG_QUERY = 16  # enum bpf_cmd
# __NR_bpf, for the one command libbpf 1.1 cannot spell (prog_query).
_NR_BPF = {"x86_64": 321, "amd64": 321, "i386": 357, "i686": 357, "aarch64": 280, "arm64": 280,
           "riscv64": 280, "loongarch64": 280, "armv7l": 386, "ppc64le": 361, "ppc64": 361, "s390x": 351}

XdpMode = Literal["native", "generic", "offload"]
_MODE_FLAGS: dict[str, XdpFlags] = {
    "native": XdpFlags.DRV_MODE, "generic": XdpFlags.SKB_MODE, "offload": XdpFlags.HW_MODE,
}
_ATTACHED_MODE: dict[int, str | None] = {
    XdpAttached.NONE: None, XdpAttached.DRV: "native", XdpAttached.SKB: "generic",
    XdpAttached.HW: "offload", XdpAttached.MULTI: "multi",
}

# Verifier log buffer. 16 MiB holds a level-1 log of a program near the
# 1M-instruction limit; it lives only while bpf_object__load runs.
LOG_SIZE = 1 << 24
LOG_TAIL_LINES = 60
ENOTSUPP = 524  # kernel-internal, not in Python's errno: "operation not supported" (map batch ops)


def _enum_cdef(c_name: str, prefix: str, enum: type[IntEnum]) -> str:
    """C text for an enum from its Python twin, so the values live in one place."""
    body = ", ".join(f"{prefix}{m.name} = {m.value}" for m in enum)
    return f"enum {c_name} {{ {body} }};\n"


# --- cdef: libbpf 1.1's declarations, verbatim where it matters -------------

_CDEF = """
typedef unsigned char __u8;
typedef unsigned int __u32;
typedef unsigned long long __u64;
""" + _enum_cdef("bpf_map_type", "BPF_MAP_TYPE_", BpfMapType) \
    + _enum_cdef("bpf_prog_type", "BPF_PROG_TYPE_", BpfProgType) \
    + _enum_cdef("libbpf_print_level", "LIBBPF_", PrintLevel) \
    + _enum_cdef("bpf_tc_attach_point", "BPF_TC_", TcAttachPoint) + """
/* The real type ends in va_list, which cffi cannot spell. On the ABIs we
 * format on (see _VA_LIST_IS_POINTER) a va_list argument travels as one
 * pointer-sized value, so void * receives it and hands it on to vsnprintf. */
typedef int (*libbpf_print_fn_t)(enum libbpf_print_level level, const char *fmt, void *ap);

struct bpf_object;
struct bpf_program;
struct bpf_map;

/* bpf/libbpf.h */
struct bpf_object_open_opts {
    size_t sz;
    const char *object_name;
    bool relaxed_maps;
    const char *pin_root_path;
    __u32 :32; /* stub out now removed attach_prog_fd */
    const char *kconfig;
    const char *btf_custom_path;
    char *kernel_log_buf;
    size_t kernel_log_size;
    __u32 kernel_log_level;
    size_t :0;
};

struct bpf_xdp_attach_opts {
    size_t sz;
    int old_prog_fd;
    size_t :0;
};

struct bpf_xdp_query_opts {
    size_t sz;
    __u32 prog_id;
    __u32 drv_prog_id;
    __u32 hw_prog_id;
    __u32 skb_prog_id;
    __u8 attach_mode;
    size_t :0;
};

struct bpf_tc_hook {
    size_t sz;
    int ifindex;
    enum bpf_tc_attach_point attach_point;
    __u32 parent;
    size_t :0;
};

struct bpf_tc_opts {
    size_t sz;
    int prog_fd;
    __u32 flags;
    __u32 prog_id;
    __u32 handle;
    __u32 priority;
    size_t :0;
};

/* bpf/bpf.h */
struct bpf_link_create_opts {
    size_t sz;
    __u32 flags;
    void *iter_info; /* union bpf_iter_link_info * */
    __u32 iter_info_len;
    __u32 target_btf_id;
    union {
        struct {
            __u64 bpf_cookie;
        } perf_event;
        struct {
            __u32 flags;
            __u32 cnt;
            const char **syms;
            const unsigned long *addrs;
            const __u64 *cookies;
        } kprobe_multi;
        struct {
            __u64 cookie;
        } tracing;
    };
    size_t :0;
};

struct bpf_link_update_opts {
    size_t sz;
    __u32 flags;
    __u32 old_prog_fd;
};

struct bpf_map_batch_opts {
    size_t sz;
    __u64 elem_flags;
    __u64 flags;
};

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

/* linux/bpf.h (uapi 6.1). The kernel fills min(info_len, its own size) and
 * reports back how much it wrote. __aligned_u64 is __u64 here: every such
 * field already sits on an 8-byte offset. */
struct bpf_prog_info {
    __u32 type;
    __u32 id;
    __u8  tag[8];
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
    __u32 gpl_compatible:1;
    __u32 :31;
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
    __u32 :32;
};

struct bpf_map_info {
    __u32 type;
    __u32 id;
    __u32 key_size;
    __u32 value_size;
    __u32 max_entries;
    __u32 map_flags;
    char  name[16];
    __u32 ifindex;
    __u32 btf_vmlinux_value_type_id;
    __u64 netns_dev;
    __u64 netns_ino;
    __u32 btf_id;
    __u32 btf_key_type_id;
    __u32 btf_value_type_id;
    __u32 :32;
    __u64 map_extra;
};

/* linux/bpf.h: the start of the kernel's struct (it fills what we have
 * room for). tcx (6.6+) is not in the 6.1 headers; it overlays xdp. */
struct bpf_link_info {
    __u32 type;
    __u32 id;
    __u32 prog_id;
    union {
        struct {
            __u64 tp_name;
            __u32 tp_name_len;
        } raw_tracepoint;
        struct {
            __u32 ifindex;
        } xdp;
        struct {
            __u32 ifindex;
            __u32 attach_type;
        } tcx;
    };
};

/* linux/bpf.h (uapi 6.6+): union bpf_attr's BPF_PROG_QUERY member; for
 * the raw bpf(2) call in prog_query(). Kernels before 6.6 end it at
 * prog_attach_flags and refuse non-zero bytes after that. */
struct bpf_attr_query {
    __u32 target;            /* target_fd or target_ifindex */
    __u32 attach_type;
    __u32 query_flags;
    __u32 attach_flags;
    __u64 prog_ids;
    __u32 count;             /* prog_cnt */
    __u32 :32;
    __u64 prog_attach_flags;
    __u64 link_ids;
    __u64 link_attach_flags;
    __u64 revision;
};

/* bpf/libbpf.h */
const char *libbpf_version_string(void);
int libbpf_strerror(int err, char *buf, size_t size);
libbpf_print_fn_t libbpf_set_print(libbpf_print_fn_t fn);
int libbpf_num_possible_cpus(void);

struct bpf_object *bpf_object__open_file(const char *path, const struct bpf_object_open_opts *opts);
int bpf_object__load(struct bpf_object *obj);
void bpf_object__close(struct bpf_object *object);
const char *bpf_object__name(const struct bpf_object *obj);
struct bpf_map *bpf_object__find_map_by_name(const struct bpf_object *obj, const char *name);
struct bpf_program *bpf_object__find_program_by_name(const struct bpf_object *obj, const char *name);
struct bpf_map *bpf_object__next_map(const struct bpf_object *obj, const struct bpf_map *map);
struct bpf_program *bpf_object__next_program(const struct bpf_object *obj, struct bpf_program *prog);

const char *bpf_map__name(const struct bpf_map *map);
int bpf_map__fd(const struct bpf_map *map);
enum bpf_map_type bpf_map__type(const struct bpf_map *map);
__u32 bpf_map__max_entries(const struct bpf_map *map);
int bpf_map__set_max_entries(struct bpf_map *map, __u32 max_entries);
__u32 bpf_map__key_size(const struct bpf_map *map);
__u32 bpf_map__value_size(const struct bpf_map *map);
int bpf_map__set_value_size(struct bpf_map *map, __u32 size);
int bpf_map__set_initial_value(struct bpf_map *map, const void *data, size_t size);
const void *bpf_map__initial_value(struct bpf_map *map, size_t *psize);
bool bpf_map__is_internal(const struct bpf_map *map);
int bpf_map__set_pin_path(struct bpf_map *map, const char *path);
int bpf_map__reuse_fd(struct bpf_map *map, int fd);

const char *bpf_program__name(const struct bpf_program *prog);
int bpf_program__fd(const struct bpf_program *prog);
enum bpf_prog_type bpf_program__type(const struct bpf_program *prog);
int bpf_program__set_log_level(struct bpf_program *prog, __u32 log_level);
int bpf_program__set_log_buf(struct bpf_program *prog, char *log_buf, size_t log_size);

int bpf_xdp_attach(int ifindex, int prog_fd, __u32 flags, const struct bpf_xdp_attach_opts *opts);
int bpf_xdp_detach(int ifindex, __u32 flags, const struct bpf_xdp_attach_opts *opts);
int bpf_xdp_query(int ifindex, int flags, struct bpf_xdp_query_opts *opts);

int bpf_tc_hook_create(struct bpf_tc_hook *hook);
int bpf_tc_hook_destroy(struct bpf_tc_hook *hook);
int bpf_tc_attach(const struct bpf_tc_hook *hook, struct bpf_tc_opts *opts);
int bpf_tc_detach(const struct bpf_tc_hook *hook, const struct bpf_tc_opts *opts);
int bpf_tc_query(const struct bpf_tc_hook *hook, struct bpf_tc_opts *opts);

/* bpf/bpf.h */
int bpf_map_update_elem(int fd, const void *key, const void *value, __u64 flags);
int bpf_map_lookup_elem(int fd, const void *key, void *value);
int bpf_map_delete_elem(int fd, const void *key);
int bpf_map_get_next_key(int fd, const void *key, void *next_key);
int bpf_map_update_batch(int fd, const void *keys, const void *values, __u32 *count,
                         const struct bpf_map_batch_opts *opts);
int bpf_obj_pin(int fd, const char *pathname);
int bpf_obj_get(const char *pathname);
int bpf_prog_get_fd_by_id(__u32 id);
int bpf_map_get_fd_by_id(__u32 id);
int bpf_obj_get_info_by_fd(int bpf_fd, void *info, __u32 *info_len);
int bpf_prog_test_run_opts(int prog_fd, struct bpf_test_run_opts *opts);
/* enum bpf_attach_type travels as int: our enum lists only what we use */
int bpf_prog_detach2(int prog_fd, int attachable_fd, int type);
int bpf_link_create(int prog_fd, int target_fd, int attach_type, const struct bpf_link_create_opts *opts);
int bpf_link_detach(int link_fd);
int bpf_link_update(int link_fd, int new_prog_fd, const struct bpf_link_update_opts *opts);
int bpf_link_get_fd_by_id(__u32 id);

/* bpf/libbpf.h: ring buffers (opts: always NULL) */
struct ring_buffer;
typedef int (*ring_buffer_sample_fn)(void *ctx, void *data, size_t size);
struct ring_buffer *ring_buffer__new(int map_fd, ring_buffer_sample_fn sample_cb, void *ctx,
                                     const void *opts);
int ring_buffer__add(struct ring_buffer *rb, int map_fd, ring_buffer_sample_fn sample_cb, void *ctx);
int ring_buffer__poll(struct ring_buffer *rb, int timeout_ms);
int ring_buffer__consume(struct ring_buffer *rb);
int ring_buffer__epoll_fd(const struct ring_buffer *rb);
void ring_buffer__free(struct ring_buffer *rb);

/* libc, for libbpf's print callback, the one raw bpf(2) call, and the
   allocator setting of updates (datapath._keep_freed_memory) */
int vsnprintf(char *str, size_t size, const char *format, void *ap);
long syscall(long number, ...);
int mallopt(int param, int value);
"""

ffi = FFI()
ffi.cdef(_CDEF)

try:
    lib: Any = ffi.dlopen("libbpf.so.1")
except OSError as e:  # pragma: no cover - depends on the machine
    raise ImportError("libbpf.so.1 not found: install libbpf1 (Debian: apt-get install libbpf1)") from e
_libc: Any = ffi.dlopen(None)

# --- libbpf's messages --------------------------------------------------------

# va_list is an array (decays to a pointer) or a pointer, or a struct passed
# by reference, on these; elsewhere we keep the unformatted format string.
_VA_LIST_IS_POINTER = platform.machine() in (
    "x86_64", "amd64", "aarch64", "arm64", "i386", "i686", "ppc64le", "ppc64", "s390x", "riscv64")
_MSG_MAX = 16384

# (sequence number, thread, level, text): an error collects what libbpf
# printed on *its* thread since the call began.
_messages: deque[tuple[int, int, PrintLevel, str]] = deque(maxlen=1000)
_seq = itertools.count(1)
_last_seq = 0
_seq_lock = threading.Lock()
_debug = False


def _on_print(level: int, fmt: Any, ap: Any) -> int:
    global _last_seq
    if level == PrintLevel.DEBUG and not _debug:
        return 0  # don't pay for formatting what nobody reads
    if _VA_LIST_IS_POINTER:
        buf = ffi.new("char[]", _MSG_MAX)
        n = _libc.vsnprintf(buf, _MSG_MAX, fmt, ap)  # a va_list is consumed once: one call only
        text = ffi.string(buf).decode(errors="replace")
        if n >= _MSG_MAX:
            text += " [...truncated]"
    else:  # pragma: no cover - other ABIs
        text = ffi.string(fmt).decode(errors="replace")
    text = text.rstrip("\n").removeprefix("libbpf: ")  # BpfError adds its own
    lvl = PrintLevel(level) if level in PrintLevel._value2member_map_ else PrintLevel.WARN
    with _seq_lock:
        _last_seq = next(_seq)
        _messages.append((_last_seq, threading.get_ident(), lvl, text))
    log.debug("libbpf %s: %s", lvl.name.lower(), text)
    return 0


# Kept alive at module level: libbpf holds the raw pointer forever.
_print_cb = ffi.callback("libbpf_print_fn_t", _on_print, error=0)
lib.libbpf_set_print(_print_cb)


def set_debug(enabled: bool) -> None:
    """Also capture libbpf's DEBUG messages (verbose: ELF, relocations, BTF)."""
    global _debug
    _debug = enabled


def recent_messages(n: int = 50) -> list[str]:
    """The last ``n`` messages libbpf printed, oldest first."""
    return [text for _, _, _, text in list(_messages)[-n:]]


def _mark() -> int:
    return _last_seq


def _since(mark: int) -> list[tuple[PrintLevel, str]]:
    me = threading.get_ident()
    return [(lvl, text) for seq, tid, lvl, text in list(_messages) if seq > mark and tid == me]


# --- errors -------------------------------------------------------------------


def _strerror(err: int) -> str:
    # libbpf_strerror knows libbpf's own codes (4000+) as well as errno.
    if err == ENOTSUPP:
        return "Operation not supported"
    buf = ffi.new("char[]", 256)
    if lib.libbpf_strerror(err, buf, 256) == 0:
        return ffi.string(buf).decode(errors="replace")
    return os.strerror(err)


def _trim_log(text: str, lines: int = LOG_TAIL_LINES) -> str:
    out = text.rstrip().splitlines()
    if len(out) > lines:
        out = [f"... ({len(out) - lines} earlier lines omitted)"] + out[-lines:]
    return "\n".join(out)


class BpfError(OSError):
    """A libbpf or bpf(2) call failed.

    ``errno``/``strerror`` as for any OSError; ``call`` names the call (and
    its object); ``libbpf_log`` holds libbpf's messages printed during the
    call; ``verifier_log`` is the tail of the kernel's log on a failed load.
    """

    def __init__(self, call: str, err: int, *, libbpf_log: Iterable[str] = (),
                 verifier_log: str = "", hint: str = ""):
        super().__init__(err, _strerror(err))
        self.call = call
        self.libbpf_log = list(libbpf_log)
        self.verifier_log = verifier_log
        self.hint = hint

    @property
    def log(self) -> str:
        """Everything the kernel and libbpf said, as one text."""
        return "\n".join([*self.libbpf_log, *([self.verifier_log] if self.verifier_log else [])])

    def __str__(self) -> str:
        parts = [f"{self.call}: {self.strerror} (errno {self.errno})"]
        if self.hint:
            parts.append(self.hint)
        parts += [f"libbpf: {line}" for line in self.libbpf_log]
        if self.verifier_log:
            parts.append("kernel log (tail):")
            parts.append(self.verifier_log)
        return "\n".join(parts)

    def __reduce__(self):  # keep pickling (multiprocessing) working
        return (_rebuild_error, (self.call, self.errno, self.libbpf_log, self.verifier_log, self.hint))


def _rebuild_error(call: str, err: int, libbpf_log: list[str], verifier_log: str, hint: str) -> BpfError:
    return BpfError(call, err, libbpf_log=libbpf_log, verifier_log=verifier_log, hint=hint)


def _warnings(mark: int) -> list[str]:
    return [text for lvl, text in _since(mark) if lvl == PrintLevel.WARN]


def _call(call: str, fn: Any, *args: Any) -> int:
    """Run an int-returning libbpf call; raise BpfError on -errno."""
    mark = _mark()
    rc = fn(*args)
    if rc < 0:
        raise BpfError(call, -rc, libbpf_log=_warnings(mark))
    return rc


def _call_ptr(call: str, fn: Any, *args: Any) -> Any:
    """Run a pointer-returning libbpf call; raise BpfError on NULL (errno)."""
    mark = _mark()
    ptr = fn(*args)
    if ptr == ffi.NULL:
        raise BpfError(call, ffi.errno or _errno.EINVAL, libbpf_log=_warnings(mark))
    return ptr


def _opts(ctype: str, **fields: Any) -> Any:
    """A zeroed opts struct with ``sz`` = the size of our declaration."""
    return ffi.new(f"{ctype} *", {"sz": ffi.sizeof(ctype), **fields})


def _bytes(data: bytes | bytearray | memoryview) -> Any:
    return ffi.from_buffer("char[]", data)


def _close_fd(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


# --- info -----------------------------------------------------------------------


class ProgInfo(TypedDict):
    id: int
    name: str
    tag: str
    type: BpfProgType | int
    map_ids: list[int]
    jited_len: int
    xlated_len: int
    verified_insns: int | None
    load_time: int
    created_by_uid: int
    btf_id: int
    run_time_ns: int | None
    run_cnt: int | None


class MapInfo(TypedDict):
    id: int
    name: str
    type: BpfMapType | int
    key_size: int
    value_size: int
    max_entries: int
    map_flags: int
    btf_id: int


def _enum_or_int(enum: Any, value: int) -> Any:
    # A newer kernel may report a type our uapi copy does not list.
    return enum(value) if value in enum._value2member_map_ else value


def _get_info(fd: int, ctype: str, info: Any = None) -> tuple[Any, int]:
    info = info if info is not None else ffi.new(f"{ctype} *")
    n = ffi.new("__u32 *", ffi.sizeof(ctype))
    _call(f"bpf_obj_get_info_by_fd({fd})", lib.bpf_obj_get_info_by_fd, fd, info, n)
    return info, n[0]


def _filled(ctype: str, field: str, n: int) -> bool:
    """Did the kernel write ``field``? It reports how much it filled, and an
    older kernel fills less than our declaration."""
    f = dict(ffi.typeof(ctype).fields)[field]
    return n >= f.offset + ffi.sizeof(f.type)


def prog_info(fd: int) -> ProgInfo:
    """BPF_OBJ_GET_INFO_BY_FD for a program fd."""
    ct = "struct bpf_prog_info"
    info, n = _get_info(fd, ct)
    # Second pass for the map ids: the kernel copies at most nr_map_ids.
    nr = info.nr_map_ids
    ids = ffi.new("__u32[]", max(nr, 1))
    info2 = ffi.new(f"{ct} *", {"nr_map_ids": nr, "map_ids": int(ffi.cast("uintptr_t", ids))})
    _get_info(fd, ct, info2)
    got = min(nr, info2.nr_map_ids)
    return {
        "id": info.id,
        "name": ffi.string(info.name).decode(errors="replace"),
        "tag": bytes(info.tag).hex(),
        "type": _enum_or_int(BpfProgType, info.type),
        "map_ids": [ids[i] for i in range(got)],
        "jited_len": info.jited_prog_len,
        "xlated_len": info.xlated_prog_len,
        "verified_insns": info.verified_insns if _filled(ct, "verified_insns", n) else None,
        "load_time": info.load_time,
        "created_by_uid": info.created_by_uid,
        "btf_id": info.btf_id,
        # Zero unless kernel.bpf_stats_enabled=1.
        "run_time_ns": info.run_time_ns if _filled(ct, "run_time_ns", n) else None,
        "run_cnt": info.run_cnt if _filled(ct, "run_cnt", n) else None,
    }


def map_info(fd: int) -> MapInfo:
    """BPF_OBJ_GET_INFO_BY_FD for a map fd."""
    info, _ = _get_info(fd, "struct bpf_map_info")
    return {
        "id": info.id,
        "name": ffi.string(info.name).decode(errors="replace"),
        "type": _enum_or_int(BpfMapType, info.type),
        "key_size": info.key_size,
        "value_size": info.value_size,
        "max_entries": info.max_entries,
        "map_flags": info.map_flags,
        "btf_id": info.btf_id,
    }


def num_possible_cpus() -> int:
    """Per-CPU map values hold one slot per *possible* CPU (not online)."""
    return _call("libbpf_num_possible_cpus", lib.libbpf_num_possible_cpus)


def mallopt(param: int, value: int) -> bool:
    """glibc's mallopt(); False where the libc has none."""
    try:
        return bool(_libc.mallopt(param, value))
    except AttributeError:
        return False


def libbpf_version() -> str:
    return ffi.string(lib.libbpf_version_string()).decode()


# --- maps -------------------------------------------------------------------------


class _FdHolder:
    """An fd this object may own: closed by close(), ``with`` or GC. Maps
    and programs of an open BpfObject do not own theirs (the object does)."""

    _fd: int
    _owned: bool

    def close(self) -> None:
        if self._owned and self._fd >= 0:
            _close_fd(self._fd)
        self._fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_owned", False):
            self.close()


class Map(_FdHolder):
    """A BPF map: either a map of an open ``BpfObject`` (resizable until the
    object is loaded, its fd owned by the object) or a bare fd (from an id or
    a pin; owned by this Map unless told otherwise, closed by ``close()``).

    Keys and values are raw bytes of exactly ``key_size`` and
    ``value_buffer_size`` bytes (per-CPU maps: one 8-byte-aligned slot per
    possible CPU).
    """

    def __init__(self, *, fd: int = -1, owned: bool = False, info: MapInfo | None = None,
                 obj: BpfObject | None = None, ptr: Any = None, name: str = ""):
        self._name = info["name"] if info is not None else name
        self._fd = fd
        self._owned = owned
        self._info = info
        self._obj = obj  # keeps the object (and so our fd) alive
        self._ptr = ptr

    # -- construction from outside an object --
    @classmethod
    def from_fd(cls, fd: int, owned: bool = True) -> Map:
        """Wrap a map fd; with ``owned`` (default) ``close()`` closes it."""
        try:
            return cls(fd=fd, owned=owned, info=map_info(fd))
        except BaseException:
            if owned:
                _close_fd(fd)
            raise

    @classmethod
    def from_id(cls, map_id: int) -> Map:
        return cls.from_fd(map_fd_by_id(map_id))

    @classmethod
    def from_pinned(cls, path: str | os.PathLike[str]) -> Map:
        return cls.from_fd(obj_get(path))

    # -- properties: live from libbpf for object maps, from the kernel otherwise --
    def _live(self) -> Any:
        if self._obj is not None and self._obj._ptr is None:
            raise BpfError(f"map {self.name}", _errno.EBADF, hint="its BpfObject is closed")
        return self._ptr

    @property
    def name(self) -> str:
        return self._name

    @property
    def fd(self) -> int:
        ptr = self._live()
        if ptr is None:
            if self._fd < 0:
                raise BpfError(f"map {self.name}", _errno.EBADF, hint="the map is closed")
            return self._fd
        fd = lib.bpf_map__fd(ptr)
        if fd < 0:  # libbpf returns the map's fd field, -1 before load
            raise BpfError(f"bpf_map__fd({self.name})", _errno.ENOENT, hint="the object is not loaded yet")
        return fd

    def _kernel(self) -> MapInfo:
        assert self._info is not None  # an fd-backed Map always carries its info
        return self._info

    @property
    def type(self) -> BpfMapType | int:
        ptr = self._live()
        return _enum_or_int(BpfMapType, lib.bpf_map__type(ptr) if ptr is not None else self._kernel()["type"])

    @property
    def key_size(self) -> int:
        ptr = self._live()
        return lib.bpf_map__key_size(ptr) if ptr is not None else self._kernel()["key_size"]

    @property
    def value_size(self) -> int:
        ptr = self._live()
        return lib.bpf_map__value_size(ptr) if ptr is not None else self._kernel()["value_size"]

    @property
    def max_entries(self) -> int:
        ptr = self._live()
        return lib.bpf_map__max_entries(ptr) if ptr is not None else self._kernel()["max_entries"]

    @property
    def percpu(self) -> bool:
        return self.type in PERCPU_MAP_TYPES

    @property
    def value_buffer_size(self) -> int:
        """Bytes a lookup returns / an update takes."""
        if self.percpu:
            return ((self.value_size + 7) & ~7) * num_possible_cpus()
        return self.value_size

    # -- before load --
    def _before_load(self, call: str) -> Any:
        ptr = self._live()
        if ptr is None:
            raise BpfError(call, _errno.EBUSY, hint="only a map of an object not yet loaded can change")
        return ptr

    def set_max_entries(self, n: int) -> None:
        call = f"bpf_map__set_max_entries({self.name}, {n})"
        _call(call, lib.bpf_map__set_max_entries, self._before_load(call), n)

    def set_value_size(self, n: int) -> None:
        call = f"bpf_map__set_value_size({self.name}, {n})"
        _call(call, lib.bpf_map__set_value_size, self._before_load(call), n)

    def set_pin_path(self, path: str | os.PathLike[str] | None) -> None:
        """Have load() pin (or reuse a map already pinned at) ``path``."""
        call = f"bpf_map__set_pin_path({self.name})"
        p = ffi.NULL if path is None else os.fsencode(path)
        _call(call, lib.bpf_map__set_pin_path, self._before_load(call), p)

    def reuse_fd(self, fd: int) -> None:
        """Before load: have load() use the existing kernel map ``fd`` (say,
        ``Map.from_id(...).fd`` of the object running now) instead of
        creating this one, so two objects share it. libbpf takes its own
        dup, so ``fd`` stays the caller's to close. libbpf adopts the kernel
        map's type, sizes and flags as they are (no compatibility check
        here; the verifier then judges the programs against them) and its
        name unless that is just our name cut to 15 characters."""
        call = f"bpf_map__reuse_fd({self.name}, fd {fd})"
        ptr = self._before_load(call)
        if self._obj is not None and self._obj.loaded:  # libbpf 1.1 would swap the loaded map's fd
            raise BpfError(call, _errno.EBUSY, hint="a map is reused before its object is loaded")
        _call(call, lib.bpf_map__reuse_fd, ptr, fd)
        self._name = ffi.string(lib.bpf_map__name(ptr)).decode()

    # -- element operations --
    def _key(self, key: bytes) -> Any:
        ks = self.key_size
        if len(key) != ks:
            raise ValueError(f"map {self.name}: key is {len(key)} bytes, the map's keys are {ks}")
        return _bytes(key) if ks else ffi.NULL

    def update(self, key: bytes, value: bytes, flags: MapUpdateFlags | int = MapUpdateFlags.ANY) -> None:
        vs = self.value_buffer_size
        if len(value) != vs:  # the kernel would read past our buffer
            raise ValueError(f"map {self.name}: value is {len(value)} bytes, expected {vs}")
        _call(f"bpf_map_update_elem({self.name})", lib.bpf_map_update_elem,
              self.fd, self._key(key), _bytes(value), int(flags))

    def lookup(self, key: bytes, percpu: bool | None = None) -> bytes | None:
        """The value, or None if there is no such key. ``percpu`` is accepted
        for compatibility; per-CPU sizing follows the map's type."""
        buf = ffi.new("char[]", max(self.value_buffer_size, 1))
        rc = lib.bpf_map_lookup_elem(self.fd, self._key(key), buf)
        if rc == -_errno.ENOENT:
            return None
        if rc < 0:
            raise BpfError(f"bpf_map_lookup_elem({self.name})", -rc)
        return bytes(ffi.buffer(buf, self.value_buffer_size))

    def delete(self, key: bytes) -> bool:
        """Delete ``key``; False if it was not there. (Arrays cannot delete: EINVAL.)"""
        rc = lib.bpf_map_delete_elem(self.fd, self._key(key))
        if rc == -_errno.ENOENT:
            return False
        if rc < 0:
            raise BpfError(f"bpf_map_delete_elem({self.name})", -rc)
        return True

    def keys(self) -> Iterator[bytes]:
        """Every key, via BPF_MAP_GET_NEXT_KEY. For a hash map that changes
        meanwhile, a deleted current key restarts the walk from the start."""
        fd, ks = self.fd, self.key_size
        cur: Any = ffi.NULL
        nxt = ffi.new("char[]", max(ks, 1))
        while True:
            rc = lib.bpf_map_get_next_key(fd, cur, nxt)
            if rc == -_errno.ENOENT:
                return
            if rc < 0:
                raise BpfError(f"bpf_map_get_next_key({self.name})", -rc)
            key = bytes(ffi.buffer(nxt, ks))
            yield key
            cur = ffi.new("char[]", key)

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        for key in self.keys():
            value = self.lookup(key)
            if value is not None:  # deleted meanwhile
                yield key, value

    def update_batch(self, keys: list[bytes] | bytes, values: list[bytes] | bytes,
                     flags: MapUpdateFlags | int = MapUpdateFlags.ANY) -> None:
        """Many updates in one BPF_MAP_UPDATE_BATCH; map types without batch
        ops (older kernels) fall back to one update per entry. ``keys`` and
        ``values``: lists of entries, or the entries already concatenated."""
        ks, vs = self.key_size, self.value_buffer_size
        kb = keys if isinstance(keys, (bytes, bytearray)) else b"".join(keys)
        vb = values if isinstance(values, (bytes, bytearray)) else b"".join(values)
        n = len(kb) // ks if ks else 0
        # The joined lengths, not each entry's: hundreds of thousands of
        # entries per policy, and a wrong-sized one shifts the total.
        if len(kb) != n * ks or len(vb) != n * vs or (not isinstance(keys, (bytes, bytearray)) and len(keys) != n):
            raise ValueError(f"map {self.name}: entries must be {ks}-byte keys and {vs}-byte values, "
                             "as many of each")
        if not n:
            return
        count = ffi.new("__u32 *", n)
        opts = _opts("struct bpf_map_batch_opts", elem_flags=int(flags))
        rc = lib.bpf_map_update_batch(self.fd, _bytes(kb), _bytes(vb), count, opts)
        if rc == 0:
            return
        err = -rc
        if err not in (ENOTSUPP, _errno.EOPNOTSUPP, _errno.EINVAL):
            raise BpfError(f"bpf_map_update_batch({self.name})", err)
        # ENOTSUPP leaves count untouched; after a per-element EINVAL it says
        # how many went in, and the loop names the failing entry precisely.
        start = count[0] if count[0] < n else 0
        for i in range(start, n):
            self.update(bytes(kb[i * ks:(i + 1) * ks]), bytes(vb[i * vs:(i + 1) * vs]), flags)

    @property
    def map_flags(self) -> int:
        return map_info(self.fd)["map_flags"]

    def mmap(self) -> mmap.mmap:
        """The values of a BPF_F_MMAPABLE array, shared with the kernel:
        writing a slice writes those elements (no syscall per entry).
        Elements are 8-byte aligned (kernel/bpf/arraymap.c), so element
        i starts at byte i * round_up(value_size, 8). The caller closes it."""
        size = self.max_entries * ((self.value_size + 7) & ~7)
        size = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE * mmap.PAGESIZE
        return mmap.mmap(self.fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)

    # -- fds --
    def pin(self, path: str | os.PathLike[str]) -> None:
        obj_pin(self.fd, path)

    def __repr__(self) -> str:
        where = "object" if self._ptr is not None else f"fd={self._fd}"
        return f"<Map {self.name} {where}>"

    @classmethod
    def _of_object(cls, obj: BpfObject, ptr: Any) -> Map:
        return cls(obj=obj, ptr=ptr, name=ffi.string(lib.bpf_map__name(ptr)).decode())


# --- programs ---------------------------------------------------------------------


class Program(_FdHolder):
    """A BPF program: of a ``BpfObject`` (fd owned by the object) or a bare
    fd (from an id or a pin; owned unless told otherwise)."""

    def __init__(self, *, fd: int = -1, owned: bool = False, name: str = "",
                 obj: BpfObject | None = None, ptr: Any = None):
        self._fd = fd
        self._owned = owned
        self._name = name
        self._obj = obj
        self._ptr = ptr
        self.log = ""  # the verifier log, when loaded with log_level > 0

    @classmethod
    def from_fd(cls, fd: int, owned: bool = True) -> Program:
        try:
            return cls(fd=fd, owned=owned, name=prog_info(fd)["name"])
        except BaseException:
            if owned:
                _close_fd(fd)
            raise

    @classmethod
    def from_id(cls, prog_id: int) -> Program:
        return cls.from_fd(prog_fd_by_id(prog_id))

    @classmethod
    def from_pinned(cls, path: str | os.PathLike[str]) -> Program:
        return cls.from_fd(obj_get(path))

    @property
    def name(self) -> str:
        return self._name

    @property
    def fd(self) -> int:
        if self._ptr is None:
            if self._fd < 0:
                raise BpfError(f"program {self.name}", _errno.EBADF, hint="the program is closed")
            return self._fd
        if self._obj is not None and self._obj._ptr is None:
            raise BpfError(f"program {self.name}", _errno.EBADF, hint="its BpfObject is closed")
        fd = lib.bpf_program__fd(self._ptr)
        if fd < 0:
            raise BpfError(f"bpf_program__fd({self.name})", -fd, hint="the object is not loaded yet")
        return fd

    def test_run(self, data: bytes, repeat: int = 1, ctx: bytes | None = None, *, flags: int = 0,
                 batch_size: int = 0) -> tuple[int, bytes, int]:
        """BPF_PROG_TEST_RUN: (return value, data out, average ns per run).
        XDP needs at least an Ethernet header (14 bytes) of data. ``ctx``:
        the context to run with (e.g. a struct __sk_buff with
        ingress_ifindex set, for tc programs). ``flags``: BPF_F_TEST_* (with
        BPF_F_TEST_XDP_LIVE_FRAMES, XDP verdicts act for real: redirected
        frames leave through the caller's network namespace, and there is
        no data out). ``batch_size``: frames per batch in live mode (0: the
        kernel's default, 64)."""
        live = bool(flags & 2)  # BPF_F_TEST_XDP_LIVE_FRAMES
        # Room for what bpf_xdp_adjust_head/tail may add; too small -> ENOSPC.
        out_size = 0 if live else len(data) + 4096
        out = ffi.new("char[]", max(out_size, 1))
        extra = {}
        if ctx is not None:
            extra = {"ctx_in": _bytes(ctx), "ctx_size_in": len(ctx)}
        if not live:
            extra.update(data_out=out, data_size_out=out_size)
        opts = _opts("struct bpf_test_run_opts", data_in=_bytes(data), data_size_in=len(data),
                     repeat=repeat, flags=flags, batch_size=batch_size, **extra)
        _call(f"bpf_prog_test_run_opts({self.name})", lib.bpf_prog_test_run_opts, self.fd, opts)
        return opts.retval, bytes(ffi.buffer(out, opts.data_size_out)), opts.duration

    def pin(self, path: str | os.PathLike[str]) -> None:
        obj_pin(self.fd, path)

    def info(self) -> ProgInfo:
        return prog_info(self.fd)

    def __repr__(self) -> str:
        return f"<Program {self.name}>"


# --- objects ------------------------------------------------------------------------


class BpfObject:
    """An ELF BPF object: ``open`` -> size maps, set rodata -> ``load`` ->
    use maps and programs -> ``close`` (or use it as a context manager).
    Closing releases every map and program fd the object owns."""

    def __init__(self, ptr: Any, path: str, log_buf: Any):
        self._ptr = ptr
        self.path = path
        self._log_buf = log_buf
        self._maps: dict[int, Map] = {}
        self._progs: dict[str, Program] = {}
        self.loaded = False
        self.log = ""  # BTF / verifier log from the object-wide buffer

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> BpfObject:
        path = os.fspath(path)
        # The object-wide buffer catches the BTF log and the log of any
        # program that fails; without one libbpf would print them via us.
        log_buf = ffi.new("char[]", LOG_SIZE)
        opts = _opts("struct bpf_object_open_opts", kernel_log_buf=log_buf, kernel_log_size=LOG_SIZE,
                     kernel_log_level=0)
        ptr = _call_ptr(f"bpf_object__open_file({path})", lib.bpf_object__open_file, os.fsencode(path), opts)
        return cls(ptr, path, log_buf)

    @property
    def name(self) -> str:
        return ffi.string(lib.bpf_object__name(self._live())).decode()

    def _live(self) -> Any:
        if self._ptr is None:
            raise BpfError(f"BpfObject({self.path})", _errno.EBADF, hint="the object is closed")
        return self._ptr

    # -- maps and programs --
    def _map_of(self, ptr: Any) -> Map:
        # Keyed by libbpf's pointer: ".rodata" and "<obj>.rodata" are one map.
        key = int(ffi.cast("uintptr_t", ptr))
        if key not in self._maps:
            self._maps[key] = Map._of_object(self, ptr)
        return self._maps[key]

    def map(self, name: str) -> Map:
        """A map by its ELF name; internal maps also answer to ".rodata" etc."""
        ptr = lib.bpf_object__find_map_by_name(self._live(), name.encode())
        if ptr == ffi.NULL:
            raise KeyError(f"{self.path} has no map {name!r}")
        return self._map_of(ptr)

    def maps(self) -> list[Map]:
        """Every map, including libbpf's internal ones. libbpf 1.1 names
        those for the kernel: "<first 8 chars of object name>.rodata"."""
        out = []
        ptr = lib.bpf_object__next_map(self._live(), ffi.NULL)
        while ptr != ffi.NULL:
            out.append(self._map_of(ptr))
            ptr = lib.bpf_object__next_map(self._ptr, ptr)
        return out

    def program(self, name: str) -> Program:
        if name not in self._progs:
            ptr = lib.bpf_object__find_program_by_name(self._live(), name.encode())
            if ptr == ffi.NULL:
                raise KeyError(f"{self.path} has no program {name!r}")
            self._progs[name] = Program(name=name, obj=self, ptr=ptr)
        return self._progs[name]

    def programs(self) -> list[Program]:
        out = []
        ptr = lib.bpf_object__next_program(self._live(), ffi.NULL)
        while ptr != ffi.NULL:
            out.append(self.program(ffi.string(lib.bpf_program__name(ptr)).decode()))
            ptr = lib.bpf_object__next_program(self._ptr, ptr)
        return out

    # -- .rodata (const volatile globals), settable between open and load --
    def _rodata_ptr(self) -> Any:
        ptr = lib.bpf_object__find_map_by_name(self._live(), b".rodata")
        if ptr == ffi.NULL:
            raise KeyError(f"{self.path} has no .rodata (no const volatile globals)")
        return ptr

    @property
    def rodata_size(self) -> int:
        size = ffi.new("size_t *")
        lib.bpf_map__initial_value(self._rodata_ptr(), size)
        return size[0]

    @property
    def rodata(self) -> bytes:
        """The current .rodata image (as compiled, or as set)."""
        size = ffi.new("size_t *")
        data = lib.bpf_map__initial_value(self._rodata_ptr(), size)
        return b"" if data == ffi.NULL else bytes(ffi.buffer(data, size[0]))

    def set_rodata(self, data: bytes) -> None:
        """Replace the whole .rodata image before load; the size must match."""
        ptr = self._rodata_ptr()
        if self.loaded:
            raise BpfError("bpf_map__set_initial_value(.rodata)", _errno.EBUSY,
                           hint=".rodata is frozen once the object is loaded")
        if len(data) != self.rodata_size:
            raise ValueError(f"{self.path}: .rodata is {self.rodata_size} bytes, got {len(data)}")
        _call("bpf_map__set_initial_value(.rodata)", lib.bpf_map__set_initial_value, ptr, _bytes(data), len(data))

    # -- load --
    def load(self, log_level: int = 0, log_size: int = LOG_SIZE) -> None:
        """Create the maps and verify and load every program.

        ``log_level`` 0 asks for a log only if a program fails (libbpf then
        retries it at level 1); 1 or 2 keep each program's log in
        ``Program.log``. A log that outgrows ``log_size`` fails the load with
        ENOSPC even if the program verified (kernel 6.4+ keeps the log's
        tail, older kernels its head). A failed load cannot be retried: open
        the object again.
        """
        obj = self._live()
        if self.loaded:  # libbpf would say EINVAL; say why
            raise BpfError(f"bpf_object__load({os.path.basename(self.path)})", _errno.EINVAL,
                           hint="the object was loaded already (a failed load too): open it again")
        prog_bufs: list[tuple[Program, Any]] = []
        for prog in self.programs():
            _call(f"bpf_program__set_log_level({prog.name})", lib.bpf_program__set_log_level, prog._ptr, log_level)
            if log_level > 0:
                buf = ffi.new("char[]", log_size)
                _call(f"bpf_program__set_log_buf({prog.name})", lib.bpf_program__set_log_buf,
                      prog._ptr, buf, log_size)
                prog_bufs.append((prog, buf))
        mark = _mark()
        rc = lib.bpf_object__load(obj)
        self.loaded = True  # libbpf refuses a second attempt, even after a failure
        self.log = ffi.string(self._log_buf).decode(errors="replace")
        for prog, buf in prog_bufs:
            prog.log = ffi.string(buf).decode(errors="replace")
        # libbpf reads the log buffers only inside bpf_object__load, which
        # runs once per object: release the megabytes now.
        self._log_buf = None
        if rc >= 0:
            return
        # The failing program is the last one with a log (they load in order);
        # at log_level 0 libbpf retried it at level 1 into the object buffer.
        text, size = next(((p.log, log_size) for p, _ in reversed(prog_bufs) if p.log), (self.log, LOG_SIZE))
        hint = ""
        if -rc == _errno.ENOSPC and len(text.encode()) >= size - 1:
            hint = (f"the verifier log filled its {size}-byte buffer, which fails the load "
                    f"(kernels 6.4+ keep the tail). A larger load(log_size=...) gives it room")
        raise BpfError(f"bpf_object__load({os.path.basename(self.path)})", -rc,
                       libbpf_log=_warnings(mark), verifier_log=_trim_log(text), hint=hint)

    # -- lifetime --
    def close(self) -> None:
        if self._ptr is not None:
            lib.bpf_object__close(self._ptr)
            self._ptr = None
            self._log_buf = None

    def __enter__(self) -> BpfObject:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown  # noqa: BLE001
            pass

    def __repr__(self) -> str:
        state = "closed" if self._ptr is None else ("loaded" if self.loaded else "open")
        return f"<BpfObject {self.path} {state}>"


# --- fds by id and by pin -----------------------------------------------------------


def prog_fd_by_id(prog_id: int) -> int:
    """A new fd (yours to close) for the program with this id."""
    return _call(f"bpf_prog_get_fd_by_id({prog_id})", lib.bpf_prog_get_fd_by_id, prog_id)


def map_fd_by_id(map_id: int) -> int:
    """A new fd (yours to close) for the map with this id."""
    return _call(f"bpf_map_get_fd_by_id({map_id})", lib.bpf_map_get_fd_by_id, map_id)


def obj_get(path: str | os.PathLike[str]) -> int:
    """A new fd (yours to close) for the object pinned at ``path``."""
    return _call(f"bpf_obj_get({os.fspath(path)})", lib.bpf_obj_get, os.fsencode(path))


def obj_pin(fd: int, path: str | os.PathLike[str]) -> None:
    """Pin ``fd`` at ``path`` on a bpffs (the directory must exist)."""
    _call(f"bpf_obj_pin({os.fspath(path)})", lib.bpf_obj_pin, fd, os.fsencode(path))


# --- XDP (netlink attach: outlives this process, like `ip link set xdp`) ------------


class XdpState(TypedDict):
    prog_id: int | None
    mode: str | None  # "native" | "generic" | "offload" | "multi" | None
    drv_prog_id: int | None
    skb_prog_id: int | None
    hw_prog_id: int | None


def _mode_flags(mode: str) -> XdpFlags:
    try:
        return _MODE_FLAGS[mode]
    except KeyError:
        raise ValueError(f"XDP mode must be one of {', '.join(_MODE_FLAGS)}, not {mode!r}") from None


def _attach_opts(old_fd: int | None) -> tuple[Any, int | None]:
    """Opts carrying ``old_fd``. libbpf 1.1 reads old_prog_fd == 0 as "unset",
    so an fd 0 goes in as a dup (returned, for the caller to close)."""
    if old_fd is None:
        return _opts("struct bpf_xdp_attach_opts"), None
    dup = os.dup(old_fd) if old_fd == 0 else None
    return _opts("struct bpf_xdp_attach_opts", old_prog_fd=dup if dup is not None else old_fd), dup


def xdp_attach(ifindex: int, prog_fd: int, mode: XdpMode, replace_fd: int | None = None) -> None:
    """Attach ``prog_fd`` to ``ifindex`` in ``mode``.

    Without ``replace_fd`` it refuses (EBUSY) if any program is attached in
    this mode. With it, the kernel swaps atomically, and only if the attached
    program is still ``replace_fd``'s (else EEXIST): no packet sees neither.
    """
    flags = _mode_flags(mode)
    flags |= XdpFlags.UPDATE_IF_NOEXIST if replace_fd is None else XdpFlags.REPLACE
    opts, dup = _attach_opts(replace_fd)
    try:
        _call(f"bpf_xdp_attach(ifindex {ifindex}, {mode}{', replace' if replace_fd is not None else ''})",
              lib.bpf_xdp_attach, ifindex, prog_fd, int(flags), opts)
    finally:
        if dup is not None:
            os.close(dup)


def xdp_detach(ifindex: int, mode: XdpMode, expected_fd: int | None = None) -> None:
    """Detach the ``mode`` program from ``ifindex``; with ``expected_fd``,
    only if that program is still the one attached (else EEXIST)."""
    flags = _mode_flags(mode)
    if expected_fd is not None:
        flags |= XdpFlags.REPLACE
    opts, dup = _attach_opts(expected_fd)
    try:
        _call(f"bpf_xdp_detach(ifindex {ifindex}, {mode})", lib.bpf_xdp_detach, ifindex, int(flags), opts)
    finally:
        if dup is not None:
            os.close(dup)


def xdp_query(ifindex: int) -> XdpState:
    """What XDP program ``ifindex`` runs, and in which mode."""
    try:  # the netlink dump of a missing ifindex is empty, not an error
        socket.if_indextoname(ifindex)
    except OSError:
        raise BpfError(f"bpf_xdp_query(ifindex {ifindex})", _errno.ENODEV) from None
    opts = _opts("struct bpf_xdp_query_opts")
    _call(f"bpf_xdp_query(ifindex {ifindex})", lib.bpf_xdp_query, ifindex, 0, opts)
    return {
        "prog_id": opts.prog_id or None,  # 0 in "multi" mode: see the per-mode ids
        "mode": _ATTACHED_MODE.get(opts.attach_mode, f"unknown({opts.attach_mode})"),
        "drv_prog_id": opts.drv_prog_id or None,
        "skb_prog_id": opts.skb_prog_id or None,
        "hw_prog_id": opts.hw_prog_id or None,
    }


# --- BPF links (tcx and friends) -----------------------------------------------------


class LinkInfo(TypedDict):
    id: int
    type: BpfLinkType | int
    prog_id: int
    ifindex: int | None  # xdp and tcx links; 0 once a tcx link is detached
    attach_type: BpfAttachType | int | None  # tcx links


class ProgQuery(TypedDict):
    prog_ids: list[int]
    link_ids: list[int]  # parallel to prog_ids; 0: attached without a link
    revision: int


def link_create(prog_fd: int, target: int, attach_type: BpfAttachType | int) -> int:
    """BPF_LINK_CREATE: attach ``prog_fd`` to ``target`` (an ifindex for
    tcx) and return the link's fd (yours to close). For tcx the program goes
    last in the interface's chain; the link lives while an fd or a bpffs
    pin holds it, and closing the last one detaches the program."""
    return _call(f"bpf_link_create({_attach_name(attach_type)}, target {target})", lib.bpf_link_create,
                 prog_fd, target, int(attach_type), ffi.NULL)


def link_update(link_fd: int, new_prog_fd: int, old_prog_fd: int | None = None) -> None:
    """BPF_LINK_UPDATE: swap the link's program atomically (the link, its id
    and its place in the chain stay). With ``old_prog_fd``, only if that is
    still the link's program (else EPERM)."""
    opts = _opts("struct bpf_link_update_opts")
    if old_prog_fd is not None:
        opts.flags = BPF_F_REPLACE
        opts.old_prog_fd = old_prog_fd  # fd 0 is fine here: BPF_F_REPLACE says it is set
    _call(f"bpf_link_update(link fd {link_fd})", lib.bpf_link_update, link_fd, new_prog_fd, opts)


def link_detach(link_fd: int) -> None:
    """BPF_LINK_DETACH: detach the link now, even while fds or pins still
    hold it (they then hold a defunct link, released with the last one)."""
    _call(f"bpf_link_detach(link fd {link_fd})", lib.bpf_link_detach, link_fd)


def link_fd_by_id(link_id: int) -> int:
    """A new fd (yours to close) for the link with this id."""
    return _call(f"bpf_link_get_fd_by_id({link_id})", lib.bpf_link_get_fd_by_id, link_id)


def link_info(fd: int) -> LinkInfo:
    """BPF_OBJ_GET_INFO_BY_FD for a link fd."""
    info, _ = _get_info(fd, "struct bpf_link_info")
    kind = _enum_or_int(BpfLinkType, info.type)
    ifindex = attach_type = None
    if kind == BpfLinkType.TCX:
        ifindex, attach_type = info.tcx.ifindex, _enum_or_int(BpfAttachType, info.tcx.attach_type)
    elif kind == BpfLinkType.XDP:
        ifindex = info.xdp.ifindex
    return {"id": info.id, "type": kind, "prog_id": info.prog_id, "ifindex": ifindex,
            "attach_type": attach_type}


def _attach_name(attach_type: int) -> str:
    return BpfAttachType(attach_type).name if attach_type in BpfAttachType._value2member_map_ \
        else f"attach type {attach_type}"


def _sys_bpf(call: str, cmd: int, attr: Any) -> int:
    nr = _NR_BPF.get(platform.machine())
    if nr is None:  # pragma: no cover - other architectures
        raise BpfError(call, _errno.ENOSYS, hint=f"no bpf(2) syscall number known for {platform.machine()}")
    # syscall(2) reads every argument as a long: pass longs, not ints with
    # undefined upper halves.
    rc = _libc.syscall(ffi.cast("long", nr), ffi.cast("long", cmd), attr,
                       ffi.cast("long", ffi.sizeof(ffi.typeof(attr).item)))
    if rc < 0:
        raise BpfError(call, ffi.errno or _errno.EINVAL)
    return rc


def prog_query(target: int, attach_type: BpfAttachType | int) -> ProgQuery:
    """BPF_PROG_QUERY with link ids (the kernel's multi-program attach
    points: tcx on 6.6+). ``target`` is an ifindex for tcx. A kernel without
    the attach type says EINVAL; an early 6.6 says ENOENT for an interface
    that never had a tcx program, which this reports as an empty chain."""
    call = f"bpf_prog_query({_attach_name(attach_type)}, target {target})"
    size = 8
    while True:  # the chain may grow between the calls: retry on ENOSPC
        prog_ids = ffi.new("__u32[]", size)
        link_ids = ffi.new("__u32[]", size)
        attr = ffi.new("struct bpf_attr_query *", {
            "target": target, "attach_type": int(attach_type), "count": size,
            "prog_ids": int(ffi.cast("uintptr_t", prog_ids)), "link_ids": int(ffi.cast("uintptr_t", link_ids))})
        try:
            _sys_bpf(call, _BPF_PROG_QUERY, attr)
        except BpfError as e:
            if e.errno == _errno.ENOSPC:
                size = max(size * 2, attr.count)
                continue
            if e.errno == _errno.ENOENT and attach_type in (BpfAttachType.TCX_INGRESS, BpfAttachType.TCX_EGRESS):
                return {"prog_ids": [], "link_ids": [], "revision": 0}
            raise
        n = min(attr.count, size)
        return {"prog_ids": [prog_ids[i] for i in range(n)], "link_ids": [link_ids[i] for i in range(n)],
                "revision": attr.revision}


def prog_detach(prog_fd: int, target: int, attach_type: BpfAttachType | int) -> None:
    """BPF_PROG_DETACH of a program attached without a link (tcx: target is
    the ifindex)."""
    # An attach_bpf_fd of 0 means "no program": tcx would then detach the
    # last program of the chain, whoever's it is. Never send 0.
    dup = os.dup(prog_fd) if prog_fd == 0 else None
    try:
        _call(f"bpf_prog_detach2({_attach_name(attach_type)}, target {target})", lib.bpf_prog_detach2,
              dup if dup is not None else prog_fd, target, int(attach_type))
    finally:
        if dup is not None:
            os.close(dup)


# --- tc clsact (netlink, like `tc filter add ... bpf da`) ------------------------------


class TcFilter(TypedDict):
    prog_id: int
    handle: int
    priority: int


def _tc_hook(ifindex: int, attach_point: TcAttachPoint | int) -> Any:
    return _opts("struct bpf_tc_hook", ifindex=ifindex, attach_point=int(attach_point))


def tc_hook_create(ifindex: int, attach_point: TcAttachPoint | int = TcAttachPoint.EGRESS) -> bool:
    """Create the clsact qdisc on ``ifindex`` (INGRESS, EGRESS or both name
    the same qdisc). True if this call created it, False if the interface
    already had a qdisc there: a clsact, or an ``ingress`` qdisc (which has
    no egress hook; bpf_tc_attach to EGRESS then fails)."""
    rc = lib.bpf_tc_hook_create(_tc_hook(ifindex, attach_point))
    if rc == -_errno.EEXIST:
        return False
    if rc < 0:
        raise BpfError(f"bpf_tc_hook_create(ifindex {ifindex})", -rc)
    return True


def tc_hook_destroy(ifindex: int, attach_point: TcAttachPoint | int) -> None:
    """INGRESS | EGRESS: delete the clsact qdisc and every filter on it.
    INGRESS or EGRESS alone: delete every filter on that hook, anyone's.
    Either way, check first that nothing of others is there."""
    _call(f"bpf_tc_hook_destroy(ifindex {ifindex}, {TcAttachPoint(attach_point)!r})", lib.bpf_tc_hook_destroy,
          _tc_hook(ifindex, attach_point))


def tc_attach(ifindex: int, attach_point: TcAttachPoint | int, prog_fd: int, *, handle: int, priority: int,
              replace: bool = False) -> TcFilter:
    """Add a direct-action bpf filter (protocol all) at ``handle``/``priority``
    on a clsact hook. Without ``replace`` it refuses (EEXIST) if a filter is
    there; with it, it swaps the program of that filter atomically (or adds
    the filter if there is none)."""
    dup = os.dup(prog_fd) if prog_fd == 0 else None  # libbpf reads prog_fd 0 as "not set"
    opts = _opts("struct bpf_tc_opts", prog_fd=dup if dup is not None else prog_fd, handle=handle,
                 priority=priority, flags=BPF_TC_F_REPLACE if replace else 0)
    try:
        _call(f"bpf_tc_attach(ifindex {ifindex}, handle {handle:#x}, priority {priority}"
              f"{', replace' if replace else ''})", lib.bpf_tc_attach, _tc_hook(ifindex, attach_point), opts)
    finally:
        if dup is not None:
            os.close(dup)
    return {"prog_id": opts.prog_id, "handle": opts.handle, "priority": opts.priority}


def tc_detach(ifindex: int, attach_point: TcAttachPoint | int, *, handle: int, priority: int) -> None:
    """Delete the bpf filter at ``handle``/``priority`` (whatever its program:
    check with tc_query first). ENOENT if there is none."""
    opts = _opts("struct bpf_tc_opts", handle=handle, priority=priority)
    _call(f"bpf_tc_detach(ifindex {ifindex}, handle {handle:#x}, priority {priority})", lib.bpf_tc_detach,
          _tc_hook(ifindex, attach_point), opts)


def tc_query(ifindex: int, attach_point: TcAttachPoint | int, *, handle: int, priority: int) -> int | None:
    """The program id of the bpf filter at ``handle``/``priority``, or None
    if there is none. Without a clsact qdisc, or with no filter at all on
    the hook (no chain 0 yet), the kernel says EINVAL."""
    opts = _opts("struct bpf_tc_opts", handle=handle, priority=priority)
    rc = lib.bpf_tc_query(_tc_hook(ifindex, attach_point), opts)
    if rc == -_errno.ENOENT:
        return None
    if rc < 0:
        raise BpfError(f"bpf_tc_query(ifindex {ifindex}, handle {handle:#x}, priority {priority})", -rc)
    return opts.prog_id


# --- ring buffers -----------------------------------------------------------------


class RingBuffer:
    """Records of one or more BPF ring buffers. libbpf calls back per record
    (an ffi.callback: ABI mode has no extern "Python"); the callback only
    copies the bytes, so nothing Python-side can fail inside libbpf.

    A ring has a single read position: two readers of one ring each get
    part of the records."""

    def __init__(self, map_fds: Iterable[int]):
        self._records: list[tuple[int, bytes]] = []
        self._cbs: list[Any] = []  # keep the callbacks alive as long as the ring
        self._rb: Any = ffi.NULL
        for i, fd in enumerate(map_fds):
            cb = ffi.callback("ring_buffer_sample_fn", self._sampler(i))
            self._cbs.append(cb)
            if self._rb == ffi.NULL:
                self._rb = _call_ptr(f"ring_buffer__new(map fd {fd})", lib.ring_buffer__new, fd, cb, ffi.NULL,
                                     ffi.NULL)
            else:
                _call(f"ring_buffer__add(map fd {fd})", lib.ring_buffer__add, self._rb, fd, cb, ffi.NULL)
        if self._rb == ffi.NULL:
            raise ValueError("RingBuffer needs at least one map")

    def _sampler(self, index: int):
        def sample(_ctx: Any, data: Any, size: int) -> int:
            self._records.append((index, bytes(ffi.buffer(data, size))))
            return 0
        return sample

    def _take(self) -> list[tuple[int, bytes]]:
        out, self._records = self._records, []
        return out

    def poll(self, timeout_ms: int) -> list[tuple[int, bytes]]:
        """Wait up to ``timeout_ms`` for records; returns (ring index, bytes)."""
        rc = lib.ring_buffer__poll(self._rb, timeout_ms)
        if rc < 0 and -rc != _errno.EINTR:
            raise BpfError("ring_buffer__poll", -rc)
        return self._take()

    def drain(self) -> list[tuple[int, bytes]]:
        """Every record there is now, without waiting."""
        rc = lib.ring_buffer__consume(self._rb)
        if rc < 0:
            raise BpfError("ring_buffer__consume", -rc)
        return self._take()

    def fileno(self) -> int:
        return lib.ring_buffer__epoll_fd(self._rb)

    def close(self) -> None:
        if self._rb != ffi.NULL:
            lib.ring_buffer__free(self._rb)
            self._rb = ffi.NULL

    def __enter__(self) -> RingBuffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
