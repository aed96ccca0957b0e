// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Baselines for `make bench` (hepbpf.bench), never attached by hepbpf itself:
 *
 *   bench_xdp_pass / bench_tc_pass    E and TC_E: the empty program
 *   bench_xdp_parse / bench_tc_parse  P: hepbpf's own parser, nothing else
 *   bench_xdp_drop                    LIVE0: drop everything, count it
 *   bench_xdp_send                    the live-frames sender: rewrite the
 *                                     source address, redirect out
 *   bench_xdp_lin                     LIN(N)'s entry: parse, keep the flow
 *                                     in bench_lin_v1, tail-call the
 *                                     generated rules (bench/linear.py)
 *   bench_xdp_cidr_{keys,lpm,split}   a 100,000-CIDR set looked up with
 *                                     random keys: the keys alone, a plain
 *                                     LPM trie, hepbpf's host hash + trie
 *                                     (bench/cidrset.py)
 *
 * They share nothing with hep.bpf.o but the parser, so a baseline can never
 * pick up a policy cost by accident. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include "hepbpf_abi.h"
#include "parse.bpf.h"
#include "stride.bpf.h"

/* Sender settings, written by the harness between open and load. */
const volatile __u32 bench_out_ifindex = 0;
const volatile __u32 bench_nsrc = 0;	/* 0: send data_in unchanged */

/* bench_src_v1: source addresses the sender cycles through.
 * key: __u32 index < bench_nsrc; value: 16 bytes (IPv4: first 4).
 * writer: harness; reader: bench_xdp_send. size: 256 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, union hep_addr);
	__uint(max_entries, 256);
} bench_src_v1 SEC(".maps");

/* bench_count_v1: packets seen by bench_xdp_drop (key 0) and sent by
 * bench_xdp_send (key 1). value: __u64 per CPU. writer: programs;
 * reader: harness. size: 2 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 2);
} bench_count_v1 SEC(".maps");

/* bench_seq_v1: the sender's position in bench_src_v1, per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 1);
} bench_seq_v1 SEC(".maps");

/* What LIN(N)'s generated program reads and writes (offsets are part of
 * the contract with bench/linear.py, which reads them from this object's
 * BTF). */
struct bench_lin_state {
	struct hep_flow flow;
	__u32 hit;			/* written by the rules: matching rule, or N */
	__u32 pad;
};

/* bench_lin_v1: the parsed flow handed to LIN(N)'s rules, and the rule
 * that matched. key: 0; value: struct bench_lin_state, per CPU.
 * writer: bench_xdp_lin (flow), the rules (hit); reader: the rules, harness. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct bench_lin_state);
	__uint(max_entries, 1);
} bench_lin_v1 SEC(".maps");

/* bench_lin_jmp_v1: slot 0 holds LIN(N)'s generated program. */
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
	__uint(max_entries, 1);
} bench_lin_jmp_v1 SEC(".maps");

static __always_inline void bench_count(__u32 key)
{
	__u64 *n = bpf_map_lookup_elem(&bench_count_v1, &key);

	if (n)
		*n += 1;
}

SEC("xdp")
int bench_xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

SEC("tc")
int bench_tc_pass(struct __sk_buff *skb)
{
	return TC_ACT_UNSPEC;
}

SEC("xdp")
int bench_xdp_parse(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct hep_flow flow = {};

	/* The verdict depends on the parse so the compiler cannot drop it. */
	if (hep_parse(data, data_end, data_end - data, &flow) == HEP_REASON_MALFORMED)
		return XDP_DROP;
	return flow.dport == 1 ? XDP_DROP : XDP_PASS;
}

SEC("tc")
int bench_tc_parse(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct hep_flow flow = {};

	if (hep_parse(data, data_end, skb->len, &flow) == HEP_REASON_MALFORMED)
		return TC_ACT_SHOT;
	return flow.dport == 1 ? TC_ACT_SHOT : TC_ACT_UNSPEC;
}

SEC("xdp")
int bench_xdp_drop(struct xdp_md *ctx)
{
	bench_count(0);
	return XDP_DROP;
}

/* As Calico's policy programs: the parser in C, then a tail call into
 * straight-line code generated for the rules. */
SEC("xdp")
int bench_xdp_lin(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 zero = 0;
	struct bench_lin_state *st = bpf_map_lookup_elem(&bench_lin_v1, &zero);

	if (!st)
		return XDP_ABORTED;
	__builtin_memset(&st->flow, 0, sizeof(st->flow));
	if (hep_parse(data, data_end, data_end - data, &st->flow) != HEP_REASON_NONE)
		return XDP_DROP;
	bpf_tail_call(ctx, &bench_lin_jmp_v1, 0);
	return XDP_ABORTED;	/* no rules program installed */
}

/* --- CIDR sets ---------------------------------------------------------
 * One test run does BENCH_CIDR_LOOKUPS lookups, the keys taken in turn
 * from bench_cidr_keys_v1 (BPF_PROG_TEST_RUN repeats one packet; a set
 * looked up with one key would sit in the cache). The keys-only program
 * is the baseline subtracted from the other two. */
#define BENCH_CIDR_LOOKUPS 64
#define BENCH_CIDR_KEYS 65536

/* bench_cidr_keys_v1: the addresses to look up, in order. key: index;
 * value: union hep_addr. writer: harness; reader: bench_xdp_cidr_*.
 * size: BENCH_CIDR_KEYS */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, union hep_addr);
	__uint(max_entries, BENCH_CIDR_KEYS);
} bench_cidr_keys_v1 SEC(".maps");

/* bench_cidr_run_v1: per CPU, where the next run starts in the keys and
 * the family, and the class each lookup of the last run found (the
 * harness checks them).
 * key: 0; writer: bench_xdp_cidr_*; reader: harness. size: 1 */
struct bench_cidr_run {
	__u32 pos;
	__u32 v6;			/* family of the set under test (harness) */
	__u32 found[BENCH_CIDR_LOOKUPS];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct bench_cidr_run);
	__uint(max_entries, 1);
} bench_cidr_run_v1 SEC(".maps");

/* bench_cidr_lpm{4,6}_v1: the whole set in one trie, the plain way.
 * bench_cidr_rest{4,6}_v1, bench_cidr_host{4,6}_v1, bench_cidr_scope_v1:
 * the set as one scope of hep_addr{4,6}_v1, hep_host{4,6}_v2 and
 * hep_scope_v2 holds it (the harness fills them with the encoder's
 * loader/encode.py scope_entries: expanded to strides, or full-length
 * entries in the hash and the rest in the trie). Keys as the datapath's
 * (chain, side, gen 0); value: a class id.
 * writer: harness; reader: bench_xdp_cidr_*. size: harness. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct hep_lpm4_key);
	__type(value, __u32);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} bench_cidr_lpm4_v1 SEC(".maps"), bench_cidr_rest4_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct hep_lpm6_key);
	__type(value, __u32);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} bench_cidr_lpm6_v1 SEC(".maps"), bench_cidr_rest6_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct hep_host4_key);
	__type(value, __u32);
	__uint(max_entries, 1);
} bench_cidr_host4_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct hep_host6_key);
	__type(value, __u32);
	__uint(max_entries, 1);
} bench_cidr_host6_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct hep_scope);
	__uint(max_entries, 1);
} bench_cidr_scope_v1 SEC(".maps");

/* bench_cidr_dir_v1: the scope's DIR blocks when the encoder made it a DIR
 * scope (as hep_dir_v1, one generation). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct hep_dir_line);
	__uint(max_entries, 1);
} bench_cidr_dir_v1 SEC(".maps");

enum bench_cidr_mode { BENCH_CIDR_KEYS_ONLY, BENCH_CIDR_LPM, BENCH_CIDR_SPLIT };

static __always_inline __u32 bench_cidr_trie(void *trie, const union hep_addr *a, __u32 v6)
{
	__u32 *klass;

	if (!v6) {
		struct hep_lpm4_key k = { .prefixlen = HEP_SCOPE_BITS + 32, .addr = a->v4 };

		klass = bpf_map_lookup_elem(trie, &k);
	} else {
		struct hep_lpm6_key k = { .prefixlen = HEP_SCOPE_BITS + 128 };

		__builtin_memcpy(k.addr, a->v6, 16);
		klass = bpf_map_lookup_elem(trie, &k);
	}
	return klass ? *klass : ~0U;
}

/* As hep_addr_class: the scope's mode, then its DIR walk or strides
 * (stride.bpf.h, the datapath's code) or the host hash and the trie.
 * verifier: global (noinline), as hep_addr_class is, and for the same
 * reason: inlined into the loop, its paths multiply past the budget. */
__noinline __u32 bench_cidr_split(const union hep_addr *a, __u32 v6)
{
	__u32 zero = 0, *klass;
	const struct hep_scope *sc = bpf_map_lookup_elem(&bench_cidr_scope_v1, &zero);

	if (!sc || !a)
		return ~0U;
	if (sc->mode == HEP_SCOPE_DIR) {
		__u32 w[4];

		hep_dir_words(a, v6, w);
		return hep_dir_walk(&bench_cidr_dir_v1, sc, sc->root, w);
	}
	if (!v6) {
		struct hep_host4_key k = { .plen = 32, .addr = a->v4 };

		if (sc->mode == HEP_SCOPE_STRIDES)
			return hep_stride4(&bench_cidr_host4_v1, sc, &k, a->v4);
		klass = bpf_map_lookup_elem(&bench_cidr_host4_v1, &k);
		if (klass)
			return *klass;
		return bench_cidr_trie(&bench_cidr_rest4_v1, a, 0);
	} else {
		struct hep_host6_key k = { .plen = 128 };

		if (sc->mode == HEP_SCOPE_STRIDES)
			return hep_stride6(&bench_cidr_host6_v1, sc, &k, a->v6);
		__builtin_memcpy(k.addr, a->v6, 16);
		klass = bpf_map_lookup_elem(&bench_cidr_host6_v1, &k);
		if (klass)
			return *klass;
		return bench_cidr_trie(&bench_cidr_rest6_v1, a, 1);
	}
}

static __always_inline int bench_cidr(enum bench_cidr_mode mode)
{
	__u32 zero = 0, i, idx, sum = 0, v6;
	struct bench_cidr_run *run = bpf_map_lookup_elem(&bench_cidr_run_v1, &zero);
	union hep_addr *a;

	if (!run)
		return XDP_ABORTED;
	v6 = run->v6;
	for (i = 0; i < BENCH_CIDR_LOOKUPS; i++) {
		__u32 found = ~0U;

		idx = (run->pos + i) & (BENCH_CIDR_KEYS - 1);
		a = bpf_map_lookup_elem(&bench_cidr_keys_v1, &idx);
		if (!a)
			return XDP_ABORTED;
		if (mode == BENCH_CIDR_LPM)
			found = bench_cidr_trie(v6 ? (void *)&bench_cidr_lpm6_v1 : (void *)&bench_cidr_lpm4_v1,
						a, v6);
		else if (mode == BENCH_CIDR_SPLIT)
			found = bench_cidr_split(a, v6);
		else
			found = a->v4;
		run->found[i] = found;
		sum += found;
	}
	run->pos += BENCH_CIDR_LOOKUPS;
	return sum == 1 ? XDP_DROP : XDP_PASS;
}

SEC("xdp")
int bench_xdp_cidr_keys(struct xdp_md *ctx)
{
	return bench_cidr(BENCH_CIDR_KEYS_ONLY);
}

SEC("xdp")
int bench_xdp_cidr_lpm(struct xdp_md *ctx)
{
	return bench_cidr(BENCH_CIDR_LPM);
}

SEC("xdp")
int bench_xdp_cidr_split(struct xdp_md *ctx)
{
	return bench_cidr(BENCH_CIDR_SPLIT);
}

/* Fold a 32-bit one's-complement sum to 16 bits. */
static __always_inline __u16 bench_csum_fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

/* Live frames: each run sends data_in (the kernel re-uses its pages, so
 * earlier rewrites persist; every field written is written every time).
 * With bench_nsrc > 0 the source address cycles through bench_src_v1 and
 * the IPv4 header checksum is recomputed, so the receiving stack accepts
 * the packet as netfilter would see a real one. The L4 checksum is left
 * stale: nothing on the receiving side checks it before the filters. */
SEC("xdp")
int bench_xdp_send(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u32 zero = 0, *seq, idx;
	union hep_addr *src;

	bench_count(1);
	if (!bench_nsrc)
		return bpf_redirect(bench_out_ifindex, 0);
	seq = bpf_map_lookup_elem(&bench_seq_v1, &zero);
	if (!seq || (void *)(eth + 1) > data_end)
		return XDP_ABORTED;
	idx = *seq;
	*seq = idx + 1 >= bench_nsrc ? 0 : idx + 1;
	src = bpf_map_lookup_elem(&bench_src_v1, &idx);
	if (!src)
		return XDP_ABORTED;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		__u16 *w = (void *)ip;
		__u32 sum = 0;
		int i;

		if ((void *)(ip + 1) > data_end)
			return XDP_ABORTED;
		ip->saddr = src->v4;
		ip->check = 0;
		for (i = 0; i < 10; i++)
			sum += w[i];
		ip->check = bench_csum_fold(sum);
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > data_end)
			return XDP_ABORTED;
		__builtin_memcpy(&ip6->saddr, src->v6, 16);
	}
	return bpf_redirect(bench_out_ifindex, 0);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
