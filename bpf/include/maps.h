/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Every BPF map of hepbpf. BPF only.
 *
 * Writers and readers: the loader writes the policy maps once per policy
 * from the compiler's MapImage (loader/maps.py, names in loader/mapnames.py);
 * the datapath only reads them. Counters are written per packet and summed
 * by the loader. Sizes marked "loader" are set between open and load from
 * the MapImage; the number here is a placeholder. Everything is pinned under
 * /sys/fs/bpf/hepbpf/<iface>/ by `hepbpf attach`.
 */
#ifndef HEPBPF_MAPS_H
#define HEPBPF_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "hepbpf_abi.h"

/* Generations. The policy maps below (addr, host, proto, port, class, slot, and
 * the rule counters) hold two policies side by side, generation 0 and 1
 * (hepbpf_abi.h says how keys carry it); packets are judged by the one in
 * hep_gen_v1, read once per packet. An update writes the generation no
 * packet reads, then flips hep_gen_v1 with one map write: a packet sees
 * the old policy or the new one, never a mix.
 *
 * Before the old generation may be written again, every packet that read
 * it must be done. XDP, tc and BPF_PROG_TEST_RUN run inside RCU read-side
 * sections, so one RCU grace period is the wait. User space gets one
 * cheaply: after an update of a BPF_MAP_TYPE_{ARRAY,HASH}_OF_MAPS element
 * the kernel calls synchronize_rcu() before the syscall returns
 * (kernel/bpf/syscall.c, maybe_wait_bpf_programs()). So hep_gen_v1 is
 * reached through hep_sync_v1, and the loader, having written hep_gen_v1,
 * stores it into hep_sync_v1 again: when that returns, no packet is still
 * judged by the previous generation. (Measured on 6.18, 2 CPUs, from
 * Python: an update of hep_sync_v1 returns after 8 ms, up to 20 under
 * load; one of hep_gen_v1 after tens of microseconds.) */

/* hep_gen_v1: the active generation. key: 0; value: __u32, 0 or 1
 * writer: loader (the switch); reader: datapath, through hep_sync_v1,
 * once per packet. size: 1 */
struct hep_gen_map {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 1);
} hep_gen_v1 SEC(".maps");

/* hep_sync_v1: holds hep_gen_v1 (its only element, set at load). The
 * datapath reads the generation through it; the loader's store into it
 * is the wait for in-flight packets described above.
 * key: 0; value: hep_gen_v1. writer: libbpf at load, loader (the wait);
 * reader: datapath. size: 1 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__type(key, __u32);
	__uint(max_entries, 1);
	__array(values, struct hep_gen_map);
} hep_sync_v1 SEC(".maps") = {
	.values = { [0] = &hep_gen_v1 },
};

/* hep_addr4_v1: IPv4 address classes of trie scopes (struct hep_scope).
 * key:   struct hep_lpm4_key {chain, side, gen} exact, address by prefix
 * value: __u32 class id (of the key's generation) into hep_class_v2
 * size:  loader: both generations' capacity of distinct CIDRs per scope,
 *        plus the /0s (deleted entries are freed one by one; no large
 *        frees on the update path) */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct hep_lpm4_key);
	__type(value, __u32);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} hep_addr4_v1 SEC(".maps");

/* hep_addr6_v1: IPv6 address classes; as hep_addr4_v1 with 128-bit keys. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct hep_lpm6_key);
	__type(value, __u32);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} hep_addr6_v1 SEC(".maps");

/* hep_host4_v2: exact-match address blocks. In a trie scope (struct
 * hep_scope) the full-length (/32) entries, which hep_addr4_v1 does not
 * hold, asked before the trie; in a stride scope every entry of the scope,
 * expanded to its stride lengths (controlled prefix expansion,
 * loader/encode.py expand_prefixes), which replace the trie walk.
 * key:   struct hep_host4_key {chain, side, gen, plen, addr & mask(plen)}
 * value: __u32 class id: the trie's answer for every address of the block
 * writer: loader (per generation, like the trie); reader: datapath
 * size:  loader: both generations' entries (expanded), with room; the
 *        encoder keeps a scope's expansion under max(8 x its entries,
 *        entries + 65536), and a large one (past 65536) under 2 x and two
 *        strides, else the scope stays a trie scope (stride_plan).
 *        Preallocated: a hash hit costs a fraction of a trie walk (the
 *        product asks at most half for 100,000 CIDRs), and inserting into
 *        a preallocated hash allocates nothing. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct hep_host4_key);
	__type(value, __u32);
	__uint(max_entries, 1);
} hep_host4_v2 SEC(".maps");

/* hep_host6_v2: as hep_host4_v2 for IPv6 (full length: /128). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct hep_host6_key);
	__type(value, __u32);
	__uint(max_entries, 1);
} hep_host6_v2 SEC(".maps");

/* hep_dir_v1: the DIR scopes' multibit tries (struct hep_scope, mode
 * HEP_SCOPE_DIR): blocks of 2^bits entries per level, leaf-pushed, so an
 * address's class is a few array reads, each inlined by the verifier: no
 * hash computed, no trie walked (loader/encode.py dir_plan, dir_blocks).
 * key:   entry index / HEP_DIR_LINE, the entry index being gen *
 *        hep_config.dir_stride + hep_scope.root + the walk's offset
 * value: struct hep_dir_line: HEP_DIR_LINE entries (HEP_DIR_LEAF | class,
 *        the next block, or a compare record where one prefix is left)
 * writer: loader, through mmap (a generation's scopes, copied as they
 *         are; an update writes the chunks that differ); reader: datapath
 * size:  loader: dir_stride per generation, with room; a scope is a DIR
 *        scope only while its blocks and records fit max(262,144, 64 x
 *        its prefixes) entries in at most HEP_STRIDE_MAX levels, else it
 *        stays a stride or trie scope */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct hep_dir_line);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_MMAPABLE);
} hep_dir_v1 SEC(".maps");

/* hep_scope_v2: how an address scope finds a class.
 * key:   ((gen * HEP_CHAIN_MAX + chain) * HEP_SIDE_MAX + side) * 2 +
 *        (family == 6)
 * value: struct hep_scope: the class when the scope holds only its /0 (no
 *        rule of the chain looks at that address: the usual case for the
 *        host's own side), else the mode (trie, the stride lengths to
 *        look up in hep_host{4,6}_v2, or a DIR scope's levels and root in
 *        hep_dir_v1). Per generation, so the modes switch with the policy.
 * writer: loader (per generation, like the LPM entries); reader: datapath.
 * size:  fixed. An array read is inlined (~1 ns); a trie lookup, even of
 * one entry, costs tens of ns per packet. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct hep_scope);
	__uint(max_entries, HEP_GEN_MAX * HEP_CHAIN_MAX * HEP_SIDE_MAX * 2);
} hep_scope_v2 SEC(".maps");

/* hep_proto_v1: protocol classes, or where a protocol's port table starts.
 * key:   ((gen * HEP_CHAIN_MAX + chain) * HEP_SIDE_MAX + side) *
 *        HEP_PROTO_SPACE + protocol
 * value: struct hep_proto_ent
 * size:  fixed, every (gen, chain, side, protocol) */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct hep_proto_ent);
	__uint(max_entries, HEP_GEN_MAX * HEP_CHAIN_MAX * HEP_SIDE_MAX * HEP_PROTO_SPACE);
} hep_proto_v1 SEC(".maps");

/* hep_port_v1: port (or ICMP type << 8 | code) classes.
 * key:   hep_proto_ent.port_base + gen * hep_config.port_stride + port
 * value: __u32 class id
 * writer: loader, through mmap (BPF_F_MMAPABLE: a generation's tables are
 *         hundreds of thousands of entries: one memory copy instead of a
 *         batch update of 0.2 s); reader: datapath
 * size:  loader: HEP_PORT_SPACE per protocol table, port_stride per
 *        generation (an array lookup costs a few ns where an LPM over
 *        port ranges costs tens) */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_MMAPABLE);
} hep_port_v1 SEC(".maps");

/* hep_class_v2: the rule bit vector of each class, with its summary.
 * key:   __u32 class id + gen * hep_config.class_stride
 * value: struct hep_class + nwords * __u64; no BTF value type, so the
 *        loader can size it to the policy (value_size = 32 + 8 * nwords)
 * size:  loader: class_stride (distinct vectors, with room) per generation
 * v2: the summary words replaced lo/hi (a new layout, so an object loaded
 * by an older hepbpf is reloaded rather than updated in place). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(struct hep_class) + 8);
	__uint(max_entries, 1);
} hep_class_v2 SEC(".maps");

/* hep_slot_v1: what each rule slot does.
 * key:   (gen * HEP_CHAIN_MAX + chain) * hep_config.slot_stride + slot
 * value: struct hep_slot
 * size:  loader: HEP_GEN_MAX * HEP_CHAIN_MAX * slot_stride */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct hep_slot);
	__uint(max_entries, 1);
} hep_slot_v1 SEC(".maps");

/* hep_rulestat_v1: packets and bytes decided by each slot.
 * key:   as hep_slot_v1; value: struct hep_stats, per CPU
 * writer: datapath, loader (zeroes a generation before switching to it);
 * reader: loader (status, the active generation). size: as hep_slot_v1 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct hep_stats);
	__uint(max_entries, 1);
} hep_rulestat_v1 SEC(".maps");

/* hep_reasons_v1: packets and bytes per (chain, reason).
 * key:   chain * HEP_REASON_MAX + reason; value: struct hep_stats, per CPU
 * writer: datapath; reader: loader. size: fixed */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct hep_stats);
	__uint(max_entries, HEP_CHAIN_MAX * HEP_REASON_MAX);
} hep_reasons_v1 SEC(".maps");

/* hep_trace_v1: the last verdict on this CPU, only when hep_config.trace
 * (explain --kernel runs one packet at a time through BPF_PROG_TEST_RUN).
 * key: 0; value: struct hep_verdict; writer: datapath; reader: loader. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct hep_verdict);
	__uint(max_entries, 1);
} hep_trace_v1 SEC(".maps");

/* hep_notes_v1: the Log and audited slots the current packet passed on
 * this CPU (reset per packet); explain reads it with hep_trace_v1.
 * key: 0; value: struct hep_notes; writer: datapath; reader: datapath,
 * loader (explain). size: 1 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct hep_notes);
	__uint(max_entries, 1);
} hep_notes_v1 SEC(".maps");

/* hep_ct_v1: connection tracking, shared by the XDP and tc programs of
 * one interface (the loader reuses it across policy replacements).
 * key:   struct hep_ct_key (endpoints in a fixed order)
 * value: struct hep_ct_val
 * writer: datapath (creates on a tracked Allow, updates, removes on close
 *         or timeout); reader: datapath, loader (status, tests)
 * size:  loader (attach --conntrack-size); full: least recently used
 *        entries are evicted by the kernel (LRU), never an error */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct hep_ct_key);
	__type(value, struct hep_ct_val);
	__uint(max_entries, 65536);
} hep_ct_v1 SEC(".maps");

/* hep_ctseen_v1: the conntrack pre-filter (ct.bpf.h): when a flow hashing
 * to each bucket last had a packet, so a packet whose bucket is older than
 * any idle timeout of its protocol skips the hep_ct_v1 lookup.
 * key:   hep_ct_seen_idx() of a struct hep_ct_key (loader/conntrack.py
 *        seen_index() computes the same)
 * value: __u32 CLOCK_MONOTONIC ns >> HEP_CTSEEN_SHIFT; plain stores, never
 *        cleared (a stale bucket costs one lookup, never a verdict)
 * writer: datapath (a flow created or moved on, at most once per unit),
 *         loader (conntrack.seed); reader: datapath
 * size:  fixed 2^HEP_CTSEEN_BITS (1 MiB): 4x the default conntrack table,
 *        so a full table of live flows keeps >= 78% of buckets stale. Reused
 *        with hep_ct_v1 across policy replacements: a fresh one beside an
 *        old table would hide its flows. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 1 << HEP_CTSEEN_BITS);
} hep_ctseen_v1 SEC(".maps");

/* hep_ctstat_v1: conntrack event counts.
 * key: enum hep_ct_event; value: __u64, per CPU
 * writer: datapath; reader: loader. size: fixed */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, HEP_CTEV_MAX);
} hep_ctstat_v1 SEC(".maps");

/* hep_local4_v1: the host's IPv4 addresses (/32), broadcast addresses and
 * 224.0.0.0/4: an ingress packet to one of them is for the host, any other
 * is forwarded. key: struct hep_local4_key; value: __u8 (1)
 * writer: loader (attach, from every interface of the namespace);
 * reader: XDP. size: loader */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct hep_local4_key);
	__type(value, __u8);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} hep_local4_v1 SEC(".maps");

/* hep_local6_v1: as hep_local4_v1 for IPv6 (/128s and ff00::/8). */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct hep_local6_key);
	__type(value, __u8);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} hep_local6_v1 SEC(".maps");

/* hep_hostaddr_v1: the host's /32 and /128 addresses of hep_local{4,6}_v1
 * again, direct-mapped: a packet to one of them is told local by one array
 * read, not a trie walk (most ingress packets are). Two addresses on one
 * line: the second is only in the tries, which stay the answer for a miss.
 * key: hep_hostaddr_line(); value: struct hep_hostaddr.
 * writer: loader (with hep_local{4,6}_v1); reader: XDP.
 * size: 1 << HEP_HOSTADDR_BITS */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct hep_hostaddr);
	__uint(max_entries, 1 << HEP_HOSTADDR_BITS);
} hep_hostaddr_v1 SEC(".maps");

/* hep_events_v1: Log records and drop events for `hepbpf log`.
 * record: struct hep_event; writer: datapath (rate limited by
 * hep_evrate_v2; when full the record is counted lost, never waited for);
 * reader: loader (one consumer at a time: the ring has one read position).
 * size: loader (attach --event-buffer), bytes, a power of 2; kept across
 * policy replacement so a running reader goes on. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} hep_events_v1 SEC(".maps");

/* hep_evstat_v1: emitted, suppressed, lost events and audited packets.
 * key: chain * HEP_EVSTAT_MAX + enum hep_ev_stat; value: struct hep_stats,
 * per CPU. writer: datapath; reader: loader. size: fixed */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct hep_stats);
	__uint(max_entries, HEP_CHAIN_MAX * HEP_EVSTAT_MAX);
} hep_evstat_v1 SEC(".maps");

/* hep_evrate_v2: the event rate limiter's bucket. key: 0; value: struct
 * hep_evrate, per CPU (no atomics). writer, reader: datapath. size: 1 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct hep_evrate);
	__uint(max_entries, 1);
} hep_evrate_v2 SEC(".maps");

#endif /* HEPBPF_MAPS_H */
