/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Connection tracking on struct hep_flow. BPF only.
 *
 * Tracked policy (failsafes, preDNAT, normal, forward) judges only packets
 * that start a flow, as Calico does; an Allow there records the flow in
 * hep_ct_v1, and later packets of it, in either direction, pass at the
 * conntrack slot without being judged again. doNotTrack policy runs before
 * that slot on every packet and records nothing.
 *
 * What is a flow: TCP, UDP, UDP-Lite, SCTP by their 5-tuple; ICMP echo by
 * addresses and identifier (a request starts one, replies belong to it);
 * other protocols by addresses. ICMP errors (unreachable, time exceeded,
 * parameter problem, too big) are related to the flow of the packet they
 * quote and pass with it; they never start one. TCP is followed loosely,
 * like Linux with nf_conntrack_tcp_loose: a mid-stream packet that policy
 * allows picks the flow up; RST removes it, and so does the ACK after both
 * FINs; a SYN on a closing flow starts a new one, judged by policy.
 * Idle flows expire after hep_config.ct_timeout_s of their state; a full
 * table evicts its least recently used entries (LRU map).
 *
 * Pre-filter: most packets of no flow (a flood XDP has to drop) never reach
 * the hash lookup. Every key hashes to a bucket of hep_ctseen_v1 holding
 * when a flow of that bucket last had a packet (creating or moving a flow
 * stamps it, and so does the loader's seed). If that is longer ago than the
 * longest idle timeout of the packet's protocol, no live flow can have the
 * packet's key, and the lookup is skipped. A bucket only ever moves forward
 * in time, whichever flow writes it, so another flow of the bucket never
 * hides one; a stale stamp only costs the lookup; nothing is ever cleared.
 */
#ifndef HEPBPF_CT_BPF_H
#define HEPBPF_CT_BPF_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include "hepbpf_abi.h"
#include "maps.h"
#include "config.bpf.h"


enum {
	HEP_TCP_FIN = 0x01,
	HEP_TCP_SYN = 0x02,
	HEP_TCP_RST = 0x04,
	HEP_TCP_ACK = 0x10,
};

static __always_inline void hep_ct_count(__u32 event)
{
	__u64 *n = bpf_map_lookup_elem(&hep_ctstat_v1, &event);

	if (n)
		*n += 1;	/* per CPU: no atomics needed */
}

/* Whether endpoint (a, pa) sorts before or equal to (b, pb): addresses
 * as big-endian numbers (an IPv4 address is its first word), then ports. */
static __always_inline int hep_ct_le(const union hep_addr *a, __u16 pa,
				     const union hep_addr *b, __u16 pb, int words)
{
	const __u32 *x = (const __u32 *)a, *y = (const __u32 *)b;
	int i;

	for (i = 0; i < 4; i++) {
		__u32 p, q;

		if (i >= words)
			break;
		p = bpf_ntohl(x[i]);
		q = bpf_ntohl(y[i]);
		if (p != q)
			return p < q;
	}
	return pa <= pb;
}

/* Fill k from one direction of a flow. Returns: 1 if the source is
 * endpoint a of the key. */
static __always_inline int hep_ct_key(struct hep_ct_key *k, __u8 family, __u8 proto, __u8 code,
				      const union hep_addr *src, __u16 sport,
				      const union hep_addr *dst, __u16 dport)
{
	int v4 = family == HEP_FAMILY_V4;
	int src_first = hep_ct_le(src, sport, dst, dport, v4 ? 1 : 4);
	const union hep_addr *a = src_first ? src : dst, *b = src_first ? dst : src;

	k->family = family;
	k->proto = proto;
	k->icmp_code = code;
	k->pad = 0;
	k->port_a = src_first ? sport : dport;
	k->port_b = src_first ? dport : sport;
	if (v4) {
		__builtin_memcpy(k->addr_a, &a->v4, 4);
		__builtin_memcpy(k->addr_b, &b->v4, 4);
	} else {
		__builtin_memcpy(k->addr_a, a->v6, 16);
		__builtin_memcpy(k->addr_b, b->v6, 16);
	}
	return src_first;
}

static __always_inline int hep_ct_flow_key(const struct hep_flow *f, struct hep_ct_key *k)
{
	__u16 sp = f->sport, dp = f->dport;
	__u8 code = 0;

	if (f->ct == HEP_CT_ECHO_REQUEST || f->ct == HEP_CT_ECHO_REPLY) {
		sp = dp = f->echo_id;
		code = f->dport & 0xff;
	}
	return hep_ct_key(k, f->family, f->proto, code, &f->saddr, sp, &f->daddr, dp);
}

static __always_inline __u64 hep_ct_timeout_ns(__u8 state)
{
	return (__u64)hep_cfg.ct_timeout_s[state & (HEP_CT_STATE_MAX - 1)] * 1000000000ULL;
}

/* The pre-filter bucket of k: each 8-byte word of the key, its high half
 * folded into its low half, times its own odd constant; the sum mixed once
 * more. The products are independent, so the CPU overlaps them; a chain of
 * dependent multiplies, one per word, cost IPv6 flows 10 ns more a packet. */
static __always_inline __u32 hep_ct_seen_idx(const struct hep_ct_key *k)
{
	const __u64 *q = (const __u64 *)k;	/* keys are 8-aligned locals */
	__u64 h;

	h = (q[0] ^ (q[0] >> 32)) * 0x9e3779b97f4a7c15ULL +
	    (q[1] ^ (q[1] >> 32)) * 0xc2b2ae3d27d4eb4fULL +
	    (q[2] ^ (q[2] >> 32)) * 0x165667b19e3779f9ULL +
	    (q[3] ^ (q[3] >> 32)) * 0xd6e8feb86659fd93ULL +
	    (q[4] ^ (q[4] >> 32)) * 0xff51afd7ed558ccdULL;
	h = (h ^ (h >> 32)) * 0xc4ceb9fe1a85ec53ULL;
	return h >> (64 - HEP_CTSEEN_BITS);
}

static __always_inline __u32 hep_ct_unit(__u64 ns)
{
	return ns >> HEP_CTSEEN_SHIFT;
}

/* The pre-filter's clock: the unit of the last bpf_ktime_get_ns() any CPU
 * read here. A packet of no flow compares its bucket with this instead of
 * calling a clock helper (25-30 ns where returns are mitigated, e.g. SRSO
 * Safe RET). It only ever lags, which makes buckets look younger: a lookup
 * wasted, never a flow missed. Every lookup done brings it up to date. */
__u32 hep_ct_clock_u;

static __always_inline __u64 hep_ct_now(void)
{
	__u64 now = bpf_ktime_get_ns();
	__u32 u = hep_ct_unit(now);

	if (hep_ct_clock_u != u)
		hep_ct_clock_u = u;	/* once a unit: keep the line shared */
	return now;
}

/* How long, in stamp units, a flow of proto can stay live idle: the longest
 * timeout of the states it can be in (a unit is over a second, so counting
 * seconds as units errs long), plus slack. */
static __always_inline __s32 hep_ct_window(__u8 proto)
{
	const volatile __u32 *t = hep_cfg.ct_timeout_s;
	__u32 w;

	switch (proto) {
	case IPPROTO_TCP:
		w = t[HEP_CT_SYN_SENT];
		w = w > t[HEP_CT_ESTABLISHED] ? w : t[HEP_CT_ESTABLISHED];
		w = w > t[HEP_CT_FIN_WAIT] ? w : t[HEP_CT_FIN_WAIT];
		w = w > t[HEP_CT_CLOSING] ? w : t[HEP_CT_CLOSING];
		break;
	case IPPROTO_UDP:
	case IPPROTO_UDPLITE:
		w = t[HEP_CT_UDP];
		break;
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6:
		w = t[HEP_CT_ICMP];
		break;
	default:
		w = t[HEP_CT_OTHER];
	}
	/* Clamped so the signed compare below never sees a negative window. */
	return (w < (1U << 30) ? w : (1U << 30)) + HEP_CTSEEN_SLACK;
}

/* Whether no live flow of the bucket can exist: it is older than the
 * window. Signed: a stamp a moment ahead of now (another CPU) is live. */
static __always_inline int hep_ct_unseen(__u32 bucket, __u32 now_u, __s32 window)
{
	return (__s32)(now_u - bucket) > window;
}

/* Stamp a bucket; only when the unit changed, to keep the cache line
 * shared between CPUs. Never moves it back (a racing CPU may have just
 * stamped a later unit). */
static __always_inline void hep_ct_stamp(__u32 *bucket, __u64 now)
{
	__u32 u = hep_ct_unit(now);

	if ((__s32)(u - *bucket) > 0)
		*bucket = u;
}

/* The live entry for k, or NULL; an expired one is removed on the way. */
static __always_inline struct hep_ct_val *hep_ct_find(const struct hep_ct_key *k, __u64 now)
{
	struct hep_ct_val *ct = bpf_map_lookup_elem(&hep_ct_v1, k);

	if (ct && now - ct->seen_ns > hep_ct_timeout_ns(ct->state)) {
		bpf_map_delete_elem(&hep_ct_v1, k);
		hep_ct_count(HEP_CTEV_EXPIRED);
		return NULL;
	}
	return ct;
}

/* Move a flow on by one of its packets. Returns: 1 if the packet belongs
 * to it, 0 if it starts a new flow instead (the old entry is gone), -1 if
 * it does not belong (an echo request from the replier's side, or a reply
 * from the requester's: Linux keys echo flows by direction too). */
static __always_inline int hep_ct_advance(struct hep_ct_val *ct, const struct hep_ct_key *k,
					  const struct hep_flow *f, int from_a, __u64 now)
{
	__u8 flags = f->tcp_flags;

	if (f->ct == HEP_CT_ECHO_REQUEST && from_a != ct->opener_a)
		return -1;
	if (f->ct == HEP_CT_ECHO_REPLY && from_a == ct->opener_a)
		return -1;

	if (f->proto == IPPROTO_TCP) {
		if (flags & HEP_TCP_RST)
			goto close;
		if ((flags & (HEP_TCP_SYN | HEP_TCP_ACK)) == HEP_TCP_SYN &&
		    ct->state >= HEP_CT_FIN_WAIT) {
			bpf_map_delete_elem(&hep_ct_v1, k);
			hep_ct_count(HEP_CTEV_CLOSED);
			return 0;
		}
		if (ct->state == HEP_CT_CLOSING && (flags & HEP_TCP_ACK) &&
		    !(flags & (HEP_TCP_FIN | HEP_TCP_SYN)))
			goto close;	/* the ACK of the second FIN */
		if (flags & HEP_TCP_FIN) {
			ct->fins |= from_a ? 1 : 2;
			ct->state = ct->fins == 3 ? HEP_CT_CLOSING : HEP_CT_FIN_WAIT;
		} else if (ct->state == HEP_CT_SYN_SENT && from_a != ct->opener_a) {
			ct->state = HEP_CT_ESTABLISHED;
		}
	}
	ct->seen_ns = now;
	ct->packets++;
	hep_ct_count(HEP_CTEV_HIT);
	return 1;
close:
	bpf_map_delete_elem(&hep_ct_v1, k);
	hep_ct_count(HEP_CTEV_HIT);
	hep_ct_count(HEP_CTEV_CLOSED);
	return 1;
}

/* The key of the flow a packet belongs to (an ICMP error: the flow it
 * quotes). Returns: 1 if the source is endpoint a of the key. */
static __always_inline int hep_ct_packet_key(const struct hep_flow *f, struct hep_ct_key *k)
{
	if (f->ct == HEP_CT_ERROR) {
		hep_ct_key(k, f->family, f->inner.proto, f->inner.icmp_code, &f->inner.saddr,
			   f->inner.sport, &f->inner.daddr, f->inner.dport);
		return 0;
	}
	return hep_ct_flow_key(f, k);
}

/* The pre-filter alone, by the cached clock: 0 if no live flow can have
 * the packet's key, 1 if hep_ct_established must look. Side-effect free,
 * so it may run before the conntrack slot is reached. */
static __always_inline int hep_ct_maybe(const struct hep_flow *f)
{
	struct hep_ct_key k __attribute__((aligned(8))) = {};
	__u32 idx, *bucket;

	if (f->ct == HEP_CT_NONE)
		return 0;
	hep_ct_packet_key(f, &k);
	idx = hep_ct_seen_idx(&k);
	bucket = bpf_map_lookup_elem(&hep_ctseen_v1, &idx);
	return bucket && !hep_ct_unseen(*bucket, hep_ct_clock_u, hep_ct_window(k.proto));
}

/* The conntrack slot, once hep_ct_maybe said a flow may exist (so the
 * pre-filter here is by the clock itself). Returns: 1 if f is a packet of
 * a known flow, or an ICMP error about one. verifier: a global function,
 * checked once. */
__noinline int hep_ct_established(const struct hep_flow *f)
{
	struct hep_ct_key k __attribute__((aligned(8))) = {};
	struct hep_ct_val *ct;
	__u32 idx, *bucket;
	__s32 window;
	__u64 now;
	int from_a;

	if (!f)
		return 0;
	if (f->ct == HEP_CT_NONE)
		return 0;
	from_a = hep_ct_packet_key(f, &k);
	idx = hep_ct_seen_idx(&k);
	bucket = bpf_map_lookup_elem(&hep_ctseen_v1, &idx);
	if (!bucket)
		return 0;	/* verifier: idx is masked, never out of range */
	window = hep_ct_window(k.proto);
	now = hep_ct_now();
	if (hep_ct_unseen(*bucket, hep_ct_unit(now), window))
		return 0;	/* the cached clock lagged */
	ct = hep_ct_find(&k, now);
	if (!ct)
		return 0;
	if (f->ct == HEP_CT_ERROR) {
		hep_ct_count(HEP_CTEV_RELATED);
		return 1;
	}
	if (hep_ct_advance(ct, &k, f, from_a, now) <= 0)
		return 0;
	hep_ct_stamp(bucket, now);
	return 1;
}

static __always_inline __u8 hep_ct_first_state(const struct hep_flow *f)
{
	switch (f->proto) {
	case IPPROTO_TCP:
		return (f->tcp_flags & (HEP_TCP_SYN | HEP_TCP_ACK)) == HEP_TCP_SYN
			       ? HEP_CT_SYN_SENT : HEP_CT_ESTABLISHED;
	case IPPROTO_UDP:
	case IPPROTO_UDPLITE:
		return HEP_CT_UDP;
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6:
		return HEP_CT_ICMP;
	default:
		return HEP_CT_OTHER;
	}
}

/* After a tracked Allow: record the flow, or move it on if it exists
 * (a packet allowed before reaching the conntrack slot, e.g. by a
 * failsafe, still closes its flow). verifier: global, checked once. */
__noinline int hep_ct_track(const struct hep_flow *f, __u8 chain)
{
	struct hep_ct_key k __attribute__((aligned(8))) = {};
	struct hep_ct_val val = {};
	struct hep_ct_val *ct;
	__u64 now = hep_ct_now();
	__u32 idx, *bucket;
	int from_a, unseen;

	if (!f)
		return 0;
	/* Echo replies, errors and other ICMP never start a flow; nor RST. */
	if (f->ct != HEP_CT_PLAIN && f->ct != HEP_CT_ECHO_REQUEST)
		return 0;
	from_a = hep_ct_flow_key(f, &k);
	idx = hep_ct_seen_idx(&k);
	bucket = bpf_map_lookup_elem(&hep_ctseen_v1, &idx);
	if (!bucket)
		return 0;	/* verifier: idx is masked, never out of range */
	unseen = hep_ct_unseen(*bucket, hep_ct_unit(now), hep_ct_window(k.proto));
	hep_ct_stamp(bucket, now);	/* before the entry: never a live one unseen */
	val.created_ns = now;
	val.seen_ns = now;
	val.packets = 1;
	val.state = hep_ct_first_state(f);
	val.opener_a = from_a;
	val.chain = chain;
	/* No live flow has this key: insert without looking. An expired entry
	 * may still be there; it fails the insert, and the way below removes
	 * and counts it. */
	if (unseen && !(f->proto == IPPROTO_TCP && (f->tcp_flags & HEP_TCP_RST)) &&
	    bpf_map_update_elem(&hep_ct_v1, &k, &val, BPF_NOEXIST) == 0)
		goto created;
	ct = hep_ct_find(&k, now);
	if (ct && hep_ct_advance(ct, &k, f, from_a, now) != 0)
		return 0;	/* moved on, or another flow's: keep it */
	if (f->proto == IPPROTO_TCP && (f->tcp_flags & HEP_TCP_RST))
		return 0;
	if (bpf_map_update_elem(&hep_ct_v1, &k, &val, BPF_ANY)) {
		hep_ct_count(HEP_CTEV_CREATE_FAILED);
		return 0;
	}
created:
	hep_ct_count(HEP_CTEV_CREATED);
	return 1;
}

#endif /* HEPBPF_CT_BPF_H */
