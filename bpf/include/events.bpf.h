/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Events: Log records and drop (or would-be drop) reports, through the
 * hep_events_v1 ring buffer. BPF only.
 *
 * A token bucket per CPU bounds the rate (hep_cfg.ev_interval_ns per event,
 * bursts up to ev_burst_ns of credit): a flood of denied packets costs a
 * counter increment each, not a record. A full ring means the reader is
 * behind; the record is counted lost and the packet goes on regardless:
 * the datapath never waits for anyone.
 *
 * Only this file and the entry programs touch the packet context: a record
 * carries the first HEP_EV_CAP bytes of the frame, so the reader can print
 * the LOG line fields (TTL, ID, TCP window, ...) the policy never looks at.
 */
#ifndef HEPBPF_EVENTS_BPF_H
#define HEPBPF_EVENTS_BPF_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "hepbpf_abi.h"
#include "maps.h"
#include "config.bpf.h"

static __always_inline void hep_evstat(__u8 chain, __u32 stat, __u32 n, __u32 len)
{
	__u32 key = chain * HEP_EVSTAT_MAX + stat;
	struct hep_stats *s = bpf_map_lookup_elem(&hep_evstat_v1, &key);

	if (s) {
		s->packets += n;
		s->bytes += len;
	}
}

/* Whether the bucket has credit for one more event (and take it).
 *
 * The clock is read once a tick (jiffy) at most: within a tick the bucket
 * holds what the last read left. bpf_jiffies64() is a load (the JIT inlines
 * it), bpf_ktime_get_ns() a helper call that cost a dropped packet 35 ns
 * here; so a flood pays the load. Credit comes up to a tick late, never
 * early: the rate and the burst still bound what is emitted. */
static __always_inline int hep_ev_admit(void)
{
	__u32 zero = 0;
	struct hep_evrate *b = bpf_map_lookup_elem(&hep_evrate_v2, &zero);
	__u64 tick = bpf_jiffies64(), now, credit;

	if (!b)
		return 0;
	credit = b->credit_ns;
	if (tick != b->last_jiffies) {
		now = bpf_ktime_get_ns();
		credit += now - b->last_ns;
		if (credit > hep_cfg.ev_burst_ns || now < b->last_ns)
			credit = hep_cfg.ev_burst_ns;
		b->last_ns = now;
		b->last_jiffies = tick;
	}
	if (credit < hep_cfg.ev_interval_ns) {
		b->credit_ns = credit;
		return 0;
	}
	b->credit_ns = credit - hep_cfg.ev_interval_ns;
	return 1;
}

/* One record. is_xdp is a constant at each call site, so only the right
 * helper for the program type remains. */
static __always_inline void hep_ev_emit(void *ctx, int is_xdp, __u8 kind, __u32 slot,
					const struct hep_verdict *v, const struct hep_flow *f,
					__u32 wire_len, __u32 ifindex, __u32 in_ifindex, __u8 audit)
{
	struct hep_event *e;
	/* verifier: 64-bit, so the bounds checked are on the register
	 * passed (a __u32 gets checked through a zero-extended copy). */
	__u64 cap = wire_len < HEP_EV_CAP ? wire_len : HEP_EV_CAP, n;

	if (!hep_ev_admit()) {
		hep_evstat(v->chain, HEP_EVSTAT_SUPPRESSED, 1, 0);
		return;
	}
	e = bpf_ringbuf_reserve(&hep_events_v1, sizeof(*e), 0);
	if (!e) {
		hep_evstat(v->chain, HEP_EVSTAT_LOST, 1, 0);
		return;
	}
	e->ts_ns = bpf_ktime_get_ns();
	e->ifindex = ifindex;
	e->in_ifindex = in_ifindex;
	e->slot = slot;
	e->decided_slot = v->slot;
	e->wire_len = wire_len;
	e->kind = kind;
	e->chain = v->chain;
	e->verdict = v->verdict;
	e->reason = v->reason;
	e->family = f->family;
	e->proto = f->proto;
	e->sport = f->sport;
	e->dport = f->dport;
	e->audit = audit;
	e->gen = v->gen;
	__builtin_memset(e->pad, 0, sizeof(e->pad));
	e->pad2 = 0;
	__builtin_memcpy(&e->saddr, &f->saddr, sizeof(e->saddr));
	__builtin_memcpy(&e->daddr, &f->daddr, sizeof(e->daddr));
	/* 1 <= cap <= HEP_EV_CAP as one unsigned compare of cap - 1, and the
	 * size passed computed from the value checked: Linux 6.1's verifier
	 * learns no lower bound from "cap != 0" and refuses a size that may be
	 * 0. The asm keeps clang from folding n + 1 back into cap. */
	n = cap - 1;
	asm volatile("" : "+r"(n));
	if (n >= HEP_EV_CAP ||
	    (is_xdp ? bpf_xdp_load_bytes(ctx, 0, e->hdr, n + 1) : bpf_skb_load_bytes(ctx, 0, e->hdr, n + 1)))
		cap = 0;
	e->cap_len = cap;
	bpf_ringbuf_submit(e, 0);
	hep_evstat(v->chain, HEP_EVSTAT_EMITTED, 1, 0);
}

/* The events of one packet: its notes (if the policy judged it), then its
 * drop. Returns whether to drop it (not when auditing: then it is reported
 * and passed). */
static __always_inline int hep_events(void *ctx, int is_xdp, const struct hep_verdict *v,
				      const struct hep_flow *f, int judged, __u32 wire_len,
				      __u32 ifindex, __u32 in_ifindex)
{
	__u32 zero = 0;
	struct hep_notes *nt = judged ? bpf_map_lookup_elem(&hep_notes_v1, &zero) : NULL;
	__u32 n = nt ? nt->n : 0;
	int i;

	for (i = 0; i < HEP_MAX_NOTES && nt; i++) {
		__u32 note;
		int audited;

		if (i >= n)
			break;
		note = nt->slot[i];
		audited = !!(note & HEP_NOTE_AUDIT);
		if (audited)
			hep_evstat(v->chain, HEP_EVSTAT_WOULD_DROP, 1, wire_len);
		if (!(hep_cfg.events & (audited ? HEP_EVMASK_DROP : HEP_EVMASK_LOG)))
			continue;
		hep_ev_emit(ctx, is_xdp, audited ? HEP_EV_WOULD_DROP : HEP_EV_LOG,
			    note & ~(__u32)HEP_NOTE_AUDIT, v, f, wire_len, ifindex, in_ifindex, audited);
	}
	if (n > HEP_MAX_NOTES)
		hep_evstat(v->chain, HEP_EVSTAT_SUPPRESSED, n - HEP_MAX_NOTES, 0);
	if (v->verdict == HEP_VERDICT_ALLOW)
		return 0;
	if (hep_cfg.audit)
		hep_evstat(v->chain, HEP_EVSTAT_WOULD_DROP, 1, wire_len);
	if (hep_cfg.events & HEP_EVMASK_DROP)
		hep_ev_emit(ctx, is_xdp, hep_cfg.audit ? HEP_EV_WOULD_DROP : HEP_EV_DROP, v->slot, v, f,
			    wire_len, ifindex, in_ifindex, hep_cfg.audit);
	return !hep_cfg.audit;
}

#endif /* HEPBPF_EVENTS_BPF_H */
