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
#include "events.bpf.h"

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
	__u32 len = data_end - data;
	int judged;

	v.reason = hep_parse(data, data_end, len, &flow);
	judged = v.reason == HEP_REASON_NONE;
	if (judged)
		hep_policy(&flow, HEP_CHAIN_INGRESS, -1, len, &v);
	else if (v.reason == HEP_REASON_NOT_IP)
		v.verdict = HEP_VERDICT_ALLOW;
	hep_account(&v, len);
	if (!hep_events(ctx, 1, &v, &flow, judged, len, ctx->ingress_ifindex, ctx->ingress_ifindex))
		return XDP_PASS;
	return XDP_DROP;
}

/* Bytes made linear before parsing: Ethernet, IP with options or a few
 * IPv6 extension headers, L4, and the packet an ICMP error quotes. */
#define HEP_PULL_LEN 256

SEC("tc")
int hep_tc_egress(struct __sk_buff *skb)
{
	struct hep_flow flow = {};
	struct hep_verdict v = {
		.slot = ~0U,
		.chain = HEP_CHAIN_EGRESS,
		.verdict = HEP_VERDICT_DENY,
	};
	void *data, *data_end;
	int judged;
	__u32 linear = skb->data_end - skb->data;

	if (linear < HEP_PULL_LEN && skb->len > linear)
		bpf_skb_pull_data(skb, skb->len < HEP_PULL_LEN ? skb->len : HEP_PULL_LEN);
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	v.reason = hep_parse(data, data_end, skb->len, &flow);
	judged = v.reason == HEP_REASON_NONE;
	/* A packet that came in on some interface is being forwarded;
	 * the host's own have no ingress interface. */
	if (judged)
		hep_policy(&flow, HEP_CHAIN_EGRESS, skb->ingress_ifindex != 0, skb->len, &v);
	else if (v.reason == HEP_REASON_NOT_IP)
		v.verdict = HEP_VERDICT_ALLOW;
	hep_account(&v, skb->len);
	/* Allowed (or audited): let whatever tc program or filter comes after
	 * ours run (TCX_NEXT); the kernel passes the packet if nothing else
	 * decides. */
	if (!hep_events(skb, 0, &v, &flow, judged, skb->len, skb->ifindex, skb->ingress_ifindex))
		return TC_ACT_UNSPEC;
	return TC_ACT_SHOT;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
