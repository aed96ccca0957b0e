/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* struct hep_flow -> struct hep_verdict, by map lookups only. BPF only.
 *
 * The compiler numbers a chain's rules into slots, in Calico order
 * (failsafes, then tiers and their policies, end-of-tier denies, profiles,
 * and a final no-profile deny that matches everything). Each packet field
 * maps to a class whose bit vector says which slots admit it:
 *
 *   source address   -> hep_scope_v2, then a few reads of hep_dir_v1
 *                       (multibit trie of arrays), or hep_host{4,6}_v2
 *                       (hash) at a few strides, or at full length and
 *                       then hep_addr{4,6}_v1 (LPM)  -> class A
 *   dest address     -> the same                 -> class B
 *   protocol + dport -> hep_proto_v1, hep_port_v1 -> class C
 *   protocol + sport -> hep_proto_v1, hep_port_v1 -> class D
 *
 * The first set bit of A & B & C & D is the first rule that matches. A Pass
 * slot moves the search to the first slot of the next tier, so the work is
 * a fixed number of lookups plus, per hop, one scan of the words that the
 * four classes' summaries share (hep_scan): never a walk over rules.
 *
 * Besides rules, a chain holds a few slots that match every packet and
 * steer it (compiler/lower.py lays them out): the conntrack slot (a packet
 * of a known flow is allowed there), the forward slot (forwarded packets
 * continue in the forward section: applyOnForward policy, then allow), and
 * failsafes flagged DIVERT (for forwarded packets they lead to the forward
 * section instead of allowing).
 *
 * Log rules and the Deny rules of audited policies are slots too; they never
 * decide: matching one notes it (counter; event, by the caller) and the
 * search goes on after the rule. The compiler keeps them to HEP_MAX_NOTED
 * per chain, so the hop budget always reaches a deciding slot.
 *
 * Every lookup is in the packet's generation (maps.h): read once, at the
 * start, so a policy switched meanwhile never mixes into a verdict.
 */
#ifndef HEPBPF_POLICY_BPF_H
#define HEPBPF_POLICY_BPF_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "hepbpf_abi.h"
#include "maps.h"
#include "config.bpf.h"
#include "ct.bpf.h"
#include "stride.bpf.h"

/* The generation this packet is judged by, or HEP_GEN_MAX if the switch
 * is missing (a bug: the packet is denied as an internal miss). */
static __always_inline __u32 hep_generation(void)
{
	__u32 zero = 0;
	void *gens = bpf_map_lookup_elem(&hep_sync_v1, &zero);
	__u32 *gen;

	if (!gens)
		return HEP_GEN_MAX;
	gen = bpf_map_lookup_elem(gens, &zero);
	return gen ? *gen & 1 : HEP_GEN_MAX;
}

/* A class id as hep_class_v2 keys it: the generation's own range. */
static __always_inline __u32 hep_class_key(__u32 klass, __u32 gen)
{
	return klass == ~0U ? ~0U : klass + gen * hep_cfg.class_stride;
}

static __always_inline __u32 hep_slot_key(__u32 gen, __u32 chain, __u32 slot)
{
	return (gen * HEP_CHAIN_MAX + chain) * hep_cfg.slot_stride + slot;
}

/* The class of one side's address (hep_lookup's; see there why it is not
 * inlined into the program). Order: the scope's own class if it needs no
 * lookup; in a DIR scope a walk of at most HEP_STRIDE_MAX array reads
 * (stride.bpf.h); in a stride scope a few exact-match lookups of the
 * expanded prefixes (stride.bpf.h); in a trie scope (expansion would be
 * too large) the exact address in the host hash (most CIDRs of a large
 * policy are /32s and /128s, and a hash hit costs a fraction of a trie
 * walk), then the trie, which holds every shorter prefix. */
static __always_inline __u32 hep_addr_class(const struct hep_flow *f, __u32 chain, __u32 side, __u32 gen)
{
	const struct hep_scope *sc;
	__u32 key, *klass;

	key = ((gen * HEP_CHAIN_MAX + chain) * HEP_SIDE_MAX + side) * 2 + (f->family == HEP_FAMILY_V6);
	sc = bpf_map_lookup_elem(&hep_scope_v2, &key);
	if (!sc)
		return ~0U;
	if (sc->klass != HEP_SCOPE_LOOKUP)
		return hep_class_key(sc->klass, gen);
	if (sc->mode == HEP_SCOPE_DIR) {
		__u32 base = gen * hep_cfg.dir_stride + sc->root, w[4];

		hep_dir_words(side == HEP_SIDE_SRC ? &f->saddr : &f->daddr, f->family == HEP_FAMILY_V6, w);
		return hep_class_key(hep_dir_walk(&hep_dir_v1, sc, base, w), gen);
	}
	if (f->family == HEP_FAMILY_V4) {
		__be32 addr = side == HEP_SIDE_SRC ? f->saddr.v4 : f->daddr.v4;
		struct hep_host4_key h = { .chain = chain, .side = side, .gen = gen, .plen = 32, .addr = addr };
		struct hep_lpm4_key k = {
			.prefixlen = HEP_SCOPE_BITS + 32,
			.chain = chain,
			.side = side,
			.gen = gen,
			.addr = addr,
		};

		if (sc->mode == HEP_SCOPE_STRIDES)
			return hep_class_key(hep_stride4(&hep_host4_v2, sc, &h, addr), gen);
		klass = bpf_map_lookup_elem(&hep_host4_v2, &h);
		if (!klass)
			klass = bpf_map_lookup_elem(&hep_addr4_v1, &k);
	} else {
		struct hep_host6_key h = { .chain = chain, .side = side, .gen = gen, .plen = 128 };
		struct hep_lpm6_key k = {
			.prefixlen = HEP_SCOPE_BITS + 128,
			.chain = chain,
			.side = side,
			.gen = gen,
		};

		__builtin_memcpy(k.addr, side == HEP_SIDE_SRC ? f->saddr.v6 : f->daddr.v6, 16);
		if (sc->mode == HEP_SCOPE_STRIDES)
			return hep_class_key(hep_stride6(&hep_host6_v2, sc, &h, k.addr), gen);
		__builtin_memcpy(h.addr, k.addr, 16);
		klass = bpf_map_lookup_elem(&hep_host6_v2, &h);
		if (!klass)
			klass = bpf_map_lookup_elem(&hep_addr6_v1, &k);
	}
	return hep_class_key(klass ? *klass : ~0U, gen);
}

static __always_inline __u32 hep_l4_class(const struct hep_flow *f, __u8 chain, __u8 side,
					  __u32 gen)
{
	__u32 key = ((gen * HEP_CHAIN_MAX + chain) * HEP_SIDE_MAX + side) * HEP_PROTO_SPACE + f->proto;
	struct hep_proto_ent *pe = bpf_map_lookup_elem(&hep_proto_v1, &key);
	__u32 *klass;

	if (!pe)
		return ~0U;
	if (pe->port_base == HEP_NO_PORT_TABLE)
		return hep_class_key(pe->klass, gen);
	key = pe->port_base + gen * hep_cfg.port_stride + (side == HEP_SIDE_SRC ? f->sport : f->dport);
	klass = bpf_map_lookup_elem(&hep_port_v1, &key);
	return hep_class_key(klass ? *klass : ~0U, gen);
}

/* Index of the lowest set bit, 64 if x is 0. BPF has no ctz instruction
 * (and clang 14 crashes lowering __builtin_ctzll), so: the population
 * count of the bits below it, in parallel over the word.
 * verifier: branch-free, so a loop that calls it stays one path (a binary
 * search's six branches made 64 per call). */
static __always_inline __u32 hep_ctz64(__u64 x)
{
	x = (x & -x) - 1;	/* the bits below the lowest set bit */
	x -= (x >> 1) & 0x5555555555555555ULL;
	x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
	x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0fULL;
	return (x * 0x0101010101010101ULL) >> 56;
}

/* The first slot of word w that all four classes admit, or -1; *bits:
 * all of the word's that they admit, when there is one. */
static __always_inline int hep_word_and(const struct hep_class *v[4], __u64 w, __u64 mask, __u64 *bits)
{
	__u64 x = v[0]->w[w] & v[1]->w[w] & v[2]->w[w] & v[3]->w[w];

	*bits = x;
	x &= mask;
	return x ? w * 64 + hep_ctz64(x) : -1;
}

/* What the last scan read: the word it found a slot in, and every slot of
 * that word the four classes admit (bit i: slot word * 64 + i); no slot
 * from where it started up to that word is admitted. The caller's, per
 * packet: its hops only move forward, so a later hop whose start is at or
 * before that word finds its slot there, if any. */
struct hep_scanned {
	__u64 word;	/* ~0: no slot found */
	__u64 bits;
};

/* Returns: the first slot >= from admitted by all four classes, or -1;
 * *last: the word it is in, and that word's admitted slots.
 *
 * The word `from` is in first: the next hop mostly lands there (the
 * steering slots share word 0). Past it, the ANDed summaries (struct
 * hep_class) name the words where all four classes have bits, and only
 * those are read: a packet that matches the last of 10,000 rules reads
 * three summary words and four words, not 157 words.
 *
 * verifier: inlined only into global (non-static, noinline) functions,
 * hep_scan and hep_lookup: each is verified once, on its own, and its
 * callers see only an unknown return value. Inlined into the program, each
 * of the up to HEP_MAX_WORDS loop exits would carry a different slot range
 * into the rest of it, and 10,000 rules would exceed the verifier's
 * budget. So the classes travel as ids, not map pointers, two to an
 * argument of hep_scan (BPF calls pass five). */
static __always_inline int hep_scan_ids(const __u32 ids[4], __u32 from, struct hep_scanned *last)
{
	const struct hep_class *v[4];
	__u64 w = from / 64, p, k, s, *bits = &last->bits;
	int i, slot;

	last->word = ~0ULL;
	last->bits = 0;	/* a scan that fails leaves nothing to answer from */
	for (i = 0; i < 4; i++) {
		v[i] = bpf_map_lookup_elem(&hep_class_v2, &ids[i]);
		if (!v[i])
			return -1;
	}
	/* verifier: 64-bit, so the bounds checked are on the register used to
	 * index (a __u32 gets checked through a zero-extended copy); bound by
	 * the rodata word count (<= HEP_MAX_WORDS), which the verifier knows,
	 * so w[] and sum[] stay inside the loader-sized value; the barriers
	 * keep clang from computing the address before the check. */
	if (w >= hep_cfg.nwords)
		return -1;
	asm volatile("" : "+r"(w));
	slot = hep_word_and(v, w, ~0ULL << (from % 64), bits);
	if (slot >= 0) {
		last->word = w;
		return slot;
	}
	/* Each pass reads the first candidate word at or after p or, if the
	 * summary word holds none, the next summary word's first word (one
	 * read the summary did not ask for, per summary word passed): p
	 * grows by one at least, so nwords passes reach the end.
	 * verifier: one path per pass (only exits branch), bounded by the
	 * rodata word count, as the plain word loop was: a pass that either
	 * moved on in the summary or read a word made two paths, and states
	 * that the verifier drops after a few misses were explored again,
	 * past its 1M-instruction budget at 157 words. */
	p = w + 1;
	for (i = 0; i < hep_cfg.nwords; i++) {
		if (p >= hep_cfg.nwords)
			return -1;
		asm volatile("" : "+r"(p));
		k = p / 64;
		s = v[0]->sum[k] & v[1]->sum[k] & v[2]->sum[k] & v[3]->sum[k] & (~0ULL << (p % 64));
		w = k * 64 + hep_ctz64(s);
		if (w >= hep_cfg.nwords)
			return -1;
		asm volatile("" : "+r"(w));
		slot = hep_word_and(v, w, ~0ULL, bits);
		if (slot >= 0) {
			last->word = w;
			return slot;
		}
		p = w + 1;
	}
	return -1;
}

__noinline int hep_scan(__u64 c01, __u64 c23, __u32 from, struct hep_scanned *last)
{
	__u32 ids[4] = { c01, c01 >> 32, c23, c23 >> 32 };

	if (!last)
		return -1;
	return hep_scan_ids(ids, from, last);
}

/* What judging a packet needs before its first hop: the classes of its
 * addresses, whether conntrack may know its flow (the pre-filter; the
 * conntrack slot looks only then), and the first scan (l4: the port
 * classes, destination | source << 32). One call for all: a BPF-to-BPF
 * call and return cost 9 ns here, where returns are mitigated.
 * verifier: global (noinline), so it is verified once and callers see
 * unknown values: inlined, the outcomes of the walks (scope, DIR, host,
 * trie, strides, miss) multiplied the paths through the rest of the
 * program (+70,000 verified instructions at 10,000 rules). */
struct hep_lookups {
	__u32 src;
	__u32 dst;
	__u32 ct_maybe;
	__u32 pad;
	struct hep_scanned first;	/* the scan from slot 0 */
};

__noinline int hep_lookup(const struct hep_flow *f, __u32 chain, __u32 gen, __u64 l4, struct hep_lookups *out)
{
	__u32 ids[4];

	if (!f || !out)
		return -1;
	out->src = hep_addr_class(f, chain, HEP_SIDE_SRC, gen);
	out->dst = hep_addr_class(f, chain, HEP_SIDE_DST, gen);
	out->ct_maybe = hep_ct_maybe(f);
	/* The first hop's scan too: one call fewer. */
	ids[0] = out->src;
	ids[1] = out->dst;
	ids[2] = l4;
	ids[3] = l4 >> 32;
	hep_scan_ids(ids, 0, &out->first);
	return 0;
}

/* The hep_hostaddr_v1 line of an address: its 32-bit words XORed (as
 * loaded: network-order bytes), times HEP_HOSTADDR_MUL, the top bits. */
static __always_inline __u32 hep_hostaddr_line(const struct hep_flow *f)
{
	const __u32 *a = f->daddr.v6_32;
	__u32 x = f->family == HEP_FAMILY_V4 ? a[0] : a[0] ^ a[1] ^ a[2] ^ a[3];

	return (x * (__u32)HEP_HOSTADDR_MUL) >> (32 - HEP_HOSTADDR_BITS);
}

/* Whether an ingress packet is forwarded rather than for the host: its
 * destination is none of the host's addresses. Without them (know_local
 * 0) every packet counts as the host's. The exact addresses first: one
 * array read (a trie lookup cost a packet 16 ns here). */
static __always_inline int hep_dst_is_remote(const struct hep_flow *f)
{
	__u32 line;
	const struct hep_hostaddr *h;

	if (!hep_cfg.know_local)
		return 0;
	line = hep_hostaddr_line(f);
	h = bpf_map_lookup_elem(&hep_hostaddr_v1, &line);
	if (h) {
		const __u32 *a = f->daddr.v6_32, *b = (const __u32 *)h->addr;

		/* One branch, not five (this runs inside the hop loop, which
		 * the verifier walks per hop). The loader zeroes an IPv4
		 * line's last 12 bytes, as the parser does a flow's. */
		if (!((h->family ^ f->family) | (a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3])))
			return 0;
	}
	if (f->family == HEP_FAMILY_V4) {
		struct hep_local4_key k = { .prefixlen = 32, .addr = f->daddr.v4 };

		return !bpf_map_lookup_elem(&hep_local4_v1, &k);
	} else {
		struct hep_local6_key k = { .prefixlen = 128 };

		__builtin_memcpy(k.addr, f->daddr.v6, 16);
		return !bpf_map_lookup_elem(&hep_local6_v1, &k);
	}
}

/* A Log or audited slot was passed: count it, and keep it for events. */
static __always_inline void hep_note(struct hep_notes *nt, __u32 key, __u32 note, __u32 len)
{
	struct hep_stats *st = bpf_map_lookup_elem(&hep_rulestat_v1, &key);
	__u32 n = nt->n;

	if (st) {
		st->packets++;
		st->bytes += len;
	}
	if (n < HEP_MAX_NOTES)
		nt->slot[n] = note;
	nt->n = n + 1;
}

/* Judge one flow on one chain. Always sets exactly one reason.
 * fwd: 1 forwarded, 0 for or from the host, -1 decide by the destination
 * (XDP ingress, only if a slot asks). len: bytes, for the note counters. */
static __always_inline void hep_policy(const struct hep_flow *f, __u8 chain, int fwd,
				       __u32 len, struct hep_verdict *v)
{
	__u32 src, dst, dport, sport, gen;
	__u32 from = 0, zero = 0;
	struct hep_lookups pk = { .first.word = ~0ULL };
	struct hep_notes *nt = bpf_map_lookup_elem(&hep_notes_v1, &zero);
	int hop;

	v->chain = chain;
	v->slot = ~0U;
	v->verdict = HEP_VERDICT_DENY;
	v->reason = HEP_REASON_INTERNAL_MISS;
	if (!nt)
		return;
	nt->n = 0;
	if (!hep_cfg.has_policy) {
		v->verdict = HEP_VERDICT_ALLOW;
		v->reason = HEP_REASON_NO_POLICY;
		return;
	}
	gen = hep_generation();
	if (gen >= HEP_GEN_MAX)
		return;
	v->gen = gen;
	dport = hep_l4_class(f, chain, HEP_SIDE_DST, gen);
	sport = hep_l4_class(f, chain, HEP_SIDE_SRC, gen);
	if (hep_lookup(f, chain, gen, dport | (__u64)sport << 32, &pk))
		return;
	src = pk.src;
	dst = pk.dst;
	for (hop = 0; hop < HEP_MAX_JUMPS; hop++) {
		/* The first hop, and the hops past steering slots (conntrack,
		 * forward) mostly land in the word the last scan found: its
		 * bits answer them without the call (a BPF-to-BPF call and
		 * return cost 9 ns here, where returns are mitigated).
		 * verifier: 20% more instructions at 10,000 rules than a call
		 * per hop. */
		__u64 fw = from / 64;
		__u64 x = fw <= pk.first.word ? pk.first.bits & (~0ULL << (fw == pk.first.word ? from % 64 : 0)) : 0;
		int slot = x ? pk.first.word * 64 + hep_ctz64(x)
			     : hep_scan(src | (__u64)dst << 32, dport | (__u64)sport << 32, from, &pk.first);
		__u32 key;
		struct hep_slot *s;

		if (slot < 0 || slot >= HEP_MAX_SLOTS)
			return;		/* the final catch-all is missing: a bug */
		key = hep_slot_key(gen, chain, slot);
		s = bpf_map_lookup_elem(&hep_slot_v1, &key);
		if (!s)
			return;
		if (s->action == HEP_ACTION_PASS) {
			from = s->next;
			continue;
		}
		if (s->action == HEP_ACTION_LOG || (s->flags & HEP_SLOT_AUDIT)) {
			hep_note(nt, key, s->action == HEP_ACTION_LOG ? slot : slot | HEP_NOTE_AUDIT, len);
			from = s->next;
			continue;
		}
		if (s->action == HEP_ACTION_FORWARD || (s->flags & HEP_SLOT_DIVERT)) {
			if (fwd < 0)
				fwd = hep_dst_is_remote(f);
			if (fwd) {
				from = s->next;
				continue;
			}
			if (s->action == HEP_ACTION_FORWARD) {
				from = slot + 1;
				continue;
			}
		}
		if (s->action == HEP_ACTION_CONNTRACK) {
			if (!pk.ct_maybe || !hep_ct_established(f)) {
				from = slot + 1;
				continue;
			}
			v->slot = slot;
			v->verdict = HEP_VERDICT_ALLOW;
			v->reason = HEP_REASON_CONNTRACK;
			return;
		}
		v->slot = slot;
		v->verdict = s->action == HEP_ACTION_ALLOW ? HEP_VERDICT_ALLOW
							   : HEP_VERDICT_DENY;
		v->reason = s->reason;
		if (v->verdict == HEP_VERDICT_ALLOW && (s->flags & HEP_SLOT_TRACK))
			hep_ct_track(f, chain);
		return;
	}
}

#endif /* HEPBPF_POLICY_BPF_H */
