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
