/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Per-CPU counters and the explain trace. BPF only. */
#ifndef HEPBPF_STATS_BPF_H
#define HEPBPF_STATS_BPF_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "hepbpf_abi.h"
#include "maps.h"
#include "policy.bpf.h"

static __always_inline void hep_stats_add(void *map, __u32 key, __u32 len)
{
	struct hep_stats *s = bpf_map_lookup_elem(map, &key);

	/* Per-CPU values: no atomics needed. */
	if (s) {
		s->packets++;
		s->bytes += len;
	}
}

/* Count the verdict per reason and per deciding slot; trace it if asked. */
static __always_inline void hep_account(const struct hep_verdict *v, __u32 len)
{
	__u32 zero = 0;

	hep_stats_add(&hep_reasons_v1, v->chain * HEP_REASON_MAX + v->reason, len);
	if (v->slot != ~0U)
		hep_stats_add(&hep_rulestat_v1, hep_slot_key(v->gen, v->chain, v->slot), len);
	if (hep_cfg.trace) {
		struct hep_verdict *t = bpf_map_lookup_elem(&hep_trace_v1, &zero);

		if (t)
			*t = *v;
	}
}

#endif /* HEPBPF_STATS_BPF_H */
