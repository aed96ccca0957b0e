// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* The loader's two loops over whole address scopes, for updates that
 * change them in many places (where the Python versions cost microseconds
 * per place, these cost nanoseconds per entry): the merge of two versions
 * of a scope's sorted keys (loader/scopediff.py) and the search for the
 * entries two versions of a DIR scope differ in (encode._dir_runs). Built
 * with the BPF objects (bpf/Makefile) into bpf/build/libhepscope.so and
 * opened through cffi; no allocation, no state. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline int key_cmp(const unsigned char *a, const unsigned char *b, size_t w)
{
	if (w == 8) {
		uint64_t x, y;

		memcpy(&x, a, 8);
		memcpy(&y, b, 8);
		return (x > y) - (x < y);
	}
	return memcmp(a, b, w);
}

/* Indexes of the old keys the new scope lacks (removed), of the new keys
 * the old one lacks (added), and of new keys both have whose class differs
 * (changed), each ascending; counts[0..2] says how many of each. Returns
 * 0, or -1 (counts undefined) once more than max would be written. */
int hep_scope_merge(const unsigned char *ok, const uint32_t *oc, size_t no,
		    const unsigned char *nk, const uint32_t *nc, size_t nn, size_t w,
		    size_t i, size_t j, uint32_t *removed, uint32_t *added, uint32_t *changed,
		    size_t max, size_t *counts)
{
	size_t nr = 0, na = 0, nch = 0;

	while (i < no && j < nn) {
		int c = key_cmp(ok + i * w, nk + j * w, w);

		if (c == 0) {
			if (oc[i] != nc[j]) {
				if (nr + na + nch >= max)
					return -1;
				changed[nch++] = (uint32_t)j;
			}
			i++;
			j++;
		} else if (c < 0) {
			if (nr + na + nch >= max)
				return -1;
			removed[nr++] = (uint32_t)i++;
		} else {
			if (nr + na + nch >= max)
				return -1;
			added[na++] = (uint32_t)j++;
		}
	}
	if (nr + na + nch + (no - i) + (nn - j) > max)
		return -1;
	while (i < no)
		removed[nr++] = (uint32_t)i++;
	while (j < nn)
		added[na++] = (uint32_t)j++;
	counts[0] = nr;
	counts[1] = na;
	counts[2] = nch;
	return 0;
}

/* Where two equal-length runs of bytes differ, as the indexes of the
 * chunk-byte pieces that do (the last may be shorter), ascending: the
 * differing entries of a DIR scope's two versions (encode._dir_runs).
 * Returns how many, or -1 once more than max. */
long hep_diff_chunks(const unsigned char *a, const unsigned char *b, size_t len, size_t chunk,
		     uint32_t *out, size_t max)
{
	size_t n = 0, at;

	for (at = 0; at < len; at += chunk) {
		size_t m = len - at < chunk ? len - at : chunk;
		int differs;

		if (m == 16) { /* the usual chunk: two 64-bit compares, no call */
			uint64_t x[2], y[2];

			memcpy(x, a + at, 16);
			memcpy(y, b + at, 16);
			differs = (x[0] ^ y[0]) | (x[1] ^ y[1]) ? 1 : 0;
		} else {
			differs = memcmp(a + at, b + at, m) != 0;
		}
		if (differs) {
			if (n >= max)
				return -1;
			out[n++] = (uint32_t)(at / chunk);
		}
	}
	return (long)n;
}
