/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Longest-prefix match by controlled prefix expansion. BPF only.
 *
 * A stride scope (struct hep_scope, mode HEP_SCOPE_STRIDES) holds its
 * prefixes expanded to a few stride lengths, every block in an exact-match
 * hash keyed by (scope, stride, address masked to the stride); the first
 * hit, longest stride first, is the trie's answer, and no hit means the
 * scope's /0 (loader/encode.py expand_prefixes proves it). A few hash lookups replace a trie walk,
 * which with 100,000 entries costs most of a microsecond.
 *
 * The hash is a parameter, so bench/cidrset.py measures this same code
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

#endif /* HEPBPF_STRIDE_BPF_H */
