/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Longest-prefix match without a trie walk: controlled prefix expansion
 * (stride scopes) and multibit tries of arrays (DIR scopes). BPF only.
 *
 * A stride scope (struct hep_scope, mode HEP_SCOPE_STRIDES) holds its
 * prefixes expanded to a few stride lengths, every block in an exact-match
 * hash keyed by (scope, stride, address masked to the stride); the first
 * hit, longest stride first, is the trie's answer, and no hit means the
 * scope's /0 (loader/encode.py expand_prefixes proves it). A few hash
 * lookups replace a trie walk, which with 100,000 entries costs most of a
 * microsecond.
 *
 * A DIR scope (mode HEP_SCOPE_DIR) is a multibit trie of arrays instead:
 * level i indexes the next len[i] bits of the address into a block of
 * hep_dir_v1; an entry is the answer (leaf-pushed: the longest prefix
 * covering it), the next block, or a compare record (one prefix, in or
 * out). A few inlined array reads, where a hash lookup hashes the key and
 * compares it (tens of ns each).
 *
 * The maps are parameters, so bench/cidrset.py measures this same code
 * over its own maps. */
#ifndef HEPBPF_STRIDE_BPF_H
#define HEPBPF_STRIDE_BPF_H

#include <linux/bpf.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include "hepbpf_abi.h"

/* addr & the mask of a /s, s <= 32. s == 0 is no shift by 32 (undefined
 * in C); the & 31 keeps the verifier sure of the shift's range. */
static __always_inline __be32 hep_mask4(__be32 addr, __u32 s)
{
	return s ? addr & bpf_htonl(~0U << ((32 - s) & 31)) : 0;
}

/* k: chain, side and gen set; the class of addr (sc->miss if no stride
 * holds it). */
static __always_inline __u32 hep_stride4(void *hash, const struct hep_scope *sc,
					 struct hep_host4_key *k, __be32 addr)
{
	__u32 i, *klass;

	for (i = 0; i < HEP_STRIDE_MAX; i++) {
		__u32 s;

		if (i >= sc->n)
			break;
		s = sc->len[i];
		k->plen = s;
		k->addr = hep_mask4(addr, s);
		klass = bpf_map_lookup_elem(hash, k);
		if (klass)
			return *klass;
	}
	return sc->miss;
}

/* As hep_stride4, a 128-bit address as four network-order words. */
static __always_inline __u32 hep_stride6(void *hash, const struct hep_scope *sc,
					 struct hep_host6_key *k, const __u8 *addr)
{
	__u32 a[4], m[4], i, w, *klass;

	__builtin_memcpy(a, addr, 16);
	for (i = 0; i < HEP_STRIDE_MAX; i++) {
		__u32 s;

		if (i >= sc->n)
			break;
		s = sc->len[i];
		for (w = 0; w < 4; w++) {
			__u32 lo = 32 * w;

			m[w] = s >= lo + 32 ? a[w] : s > lo ? hep_mask4(a[w], s - lo) : 0;
		}
		k->plen = s;
		__builtin_memcpy(k->addr, m, 16);
		klass = bpf_map_lookup_elem(hash, k);
		if (klass)
			return *klass;
	}
	return sc->miss;
}

/* Whether the top plen bits of a (four host-order words) differ from
 * prefix's: the mask of word w covers what of bits [32w, 32w + 32) lies
 * below plen. */
static __always_inline int hep_dir_outside(const __u32 *a, const __u32 *prefix, __u32 plen)
{
	__u32 w;

	for (w = 0; w < 4; w++) {
		__u32 lo = 32 * w, m;

		if (plen <= lo)
			break;
		m = plen >= lo + 32 ? ~0U : ~0U << ((32 - (plen - lo)) & 31);
		if ((a[w] ^ prefix[w]) & m)
			return 1;
	}
	return 0;
}

/* The class of a leaf entry. */
static __always_inline __u32 hep_dir_class(__u32 e)
{
	return e == HEP_DIR_MISS ? ~0U : e & ~(__u32)HEP_DIR_LEAF;
}

/* One DIR level: the s bits of word from bit off (counted from its top;
 * off + s <= 32, 1 <= s <= HEP_DIR_BITS_MAX: the encoder's dir_plan) index
 * the block at *node. Returns 1 with *klass set at a leaf or a record, 0
 * with *node moved to the next block, -1 if an entry is missing (a bug:
 * the loader sized the map). */
static __always_inline int hep_dir_step(void *dir, __u32 base, __u32 *node, const __u32 *a, __u32 word,
					__u32 off, __u32 s, __u32 *klass)
{
	__u32 i = base + *node + ((word << (off & 31)) >> ((32 - s) & 31));
	__u32 line = i / HEP_DIR_LINE;
	const struct hep_dir_line *l = bpf_map_lookup_elem(dir, &line);
	const struct hep_dir_record *r;
	__u32 e;

	if (!l)
		return -1;
	e = l->e[i & (HEP_DIR_LINE - 1)];
	if (e & HEP_DIR_LEAF) {
		*klass = hep_dir_class(e);
		return 1;
	}
	if (!(e & HEP_DIR_RECORD)) {
		*node = e;
		return 0;
	}
	/* Records are HEP_DIR_RECORD_LEN-aligned: each sits in one line. */
	i = base + (e & ~(__u32)HEP_DIR_RECORD);
	line = i / HEP_DIR_LINE;
	l = bpf_map_lookup_elem(dir, &line);
	if (!l)
		return -1;
	r = (const void *)&l->e[i & (HEP_DIR_LINE - HEP_DIR_RECORD_LEN)];
	*klass = hep_dir_class(hep_dir_outside(a, r->prefix, r->plen) ? r->out : r->in);
	return 1;
}

/* An address as hep_dir_walk takes it: four host-order words, an IPv4
 * address in the first and zeros after it. */
static __always_inline void hep_dir_words(const union hep_addr *a, int v6, __u32 *w)
{
	w[0] = bpf_ntohl(a->v6_32[0]);	/* v4 shares these bytes */
	w[1] = v6 ? bpf_ntohl(a->v6_32[1]) : 0;
	w[2] = v6 ? bpf_ntohl(a->v6_32[2]) : 0;
	w[3] = v6 ? bpf_ntohl(a->v6_32[3]) : 0;
}

/* The class of an address (four host-order words; IPv4: the first, the
 * rest zero) in a DIR scope whose root block is entry base of dir: miss
 * outside the shared prefix, else the walk from bit skip (skip < the
 * longest prefix: at least one level). A level never spans two words, so
 * its word is the one holding bit off. */
static __always_inline __u32 hep_dir_walk(void *dir, const struct hep_scope *sc, __u32 base, const __u32 *a)
{
	__u32 i, off = sc->skip, node = 0, klass = ~0U;

	if (hep_dir_outside(a, sc->prefix, off))
		return sc->miss;
	for (i = 0; i < HEP_STRIDE_MAX; i++) {
		__u32 s, w;
		int r;

		if (i >= sc->n)
			break;
		s = sc->len[i];
		w = off < 32 ? a[0] : off < 64 ? a[1] : off < 96 ? a[2] : a[3];
		r = hep_dir_step(dir, base, &node, a, w, off, s, &klass);
		if (r)
			return r > 0 ? klass : ~0U;
		off += s;
	}
	return ~0U;	/* no leaf within n levels: a bug */
}

#endif /* HEPBPF_STRIDE_BPF_H */
