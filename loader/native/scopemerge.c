// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* The loader's two loops over whole address scopes, for updates that
 * change them in many places (where the Python versions cost microseconds
 * per place, these cost nanoseconds per entry): the merge of two versions
 * of a scope's sorted keys (loader/scopediff.py), the search for the
 * entries two versions of a DIR scope differ in (encode._dir_runs), and
 * the setting of a patch's root entries (loader/dirpatch.py). Built
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

/* Where two equal-length runs of bytes differ, in chunk-byte pieces (the
 * last may be shorter): the runs of differing pieces, as (first piece,
 * end piece) pairs in out, ascending, two runs apart by at most gap equal
 * pieces made one (writing a few unchanged entries again costs less than
 * another write). The entries two versions of a DIR scope differ in, for
 * encode._dir_runs. Returns how many runs, or -1 once more than max. */
long hep_diff_runs(const unsigned char *a, const unsigned char *b, size_t len, size_t chunk, size_t gap,
		   uint32_t *out, size_t max)
{
	size_t n = 0, at, i = 0;

	for (at = 0; at < len; at += chunk, i++) {
		size_t m = len - at < chunk ? len - at : chunk;
		int differs;

		if (m == 16) { /* the usual piece: two 64-bit compares, no call */
			uint64_t x[2], y[2];

			memcpy(x, a + at, 16);
			memcpy(y, b + at, 16);
			differs = ((x[0] ^ y[0]) | (x[1] ^ y[1])) != 0;
		} else {
			differs = memcmp(a + at, b + at, m) != 0;
		}
		if (!differs)
			continue;
		if (n && i - out[2 * n - 1] <= gap) {
			out[2 * n - 1] = (uint32_t)(i + 1);
			continue;
		}
		if (n >= max)
			return -1;
		out[2 * n] = (uint32_t)i;
		out[2 * n + 1] = (uint32_t)(i + 1);
		n++;
	}
	return (long)n;
}

/* entries[idx[i]] = values[i] for i < n: a patch's root entries, set
 * without a Python loop (dirpatch.py). Returns -1 if an index is out of
 * range (nothing past it written), else 0. */
int hep_scatter_u32(uint32_t *entries, size_t len, const uint32_t *idx, const uint32_t *values, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		if (idx[i] >= len)
			return -1;
		entries[idx[i]] = values[i];
	}
	return 0;
}
