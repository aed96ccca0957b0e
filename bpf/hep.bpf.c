// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Entry programs: XDP judges what arrives on a host-endpoint interface
 * (before DNAT and the kernel's conntrack), tc what leaves it. Both share
 * every map of one object, so a flow allowed one way is known the other.
 * They only translate the context and the verdict; the logic is in the
 * headers and never touches the packet context. */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
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

SEC("tc")
int hep_tc_egress(struct __sk_buff *skb)
{
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
