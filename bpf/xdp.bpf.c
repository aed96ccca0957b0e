// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* XDP entry: host-endpoint ingress policy, before DNAT and conntrack.
 * Only translates the context and the verdict; the logic is in the headers. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "hepbpf_abi.h"
#include "maps.h"
#include "parse.bpf.h"
#include "policy.bpf.h"
#include "stats.bpf.h"

SEC("xdp")
int hep_xdp_ingress(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct hep_flow flow = {};
	struct hep_verdict v = {
		.slot = ~0U,
		.chain = HEP_CHAIN_INGRESS,
		.verdict = HEP_VERDICT_DENY,
	};

	v.reason = hep_parse(data, data_end, &flow);
	if (v.reason == HEP_REASON_NONE)
		hep_policy(&flow, HEP_CHAIN_INGRESS, &v);
	else if (v.reason == HEP_REASON_NOT_IP)
		v.verdict = HEP_VERDICT_ALLOW;
	hep_account(&v, data_end - data);
	return v.verdict == HEP_VERDICT_ALLOW ? XDP_PASS : XDP_DROP;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
