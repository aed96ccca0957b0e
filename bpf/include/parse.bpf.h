/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Packet -> struct hep_flow. BPF only.
 *
 * Works on a [data, data_end) window, so XDP and tc entry points share it.
 * Every helper bounds-checks right before it reads. Returns HEP_REASON_NONE
 * when the flow is complete, else the reason the packet cannot be judged:
 *   NOT_IP     not IPv4/IPv6 (ARP, LLDP, VLAN-tagged): not policed
 *   FRAGMENT   any IPv4 fragment or IPv6 fragment header: denied, since a
 *              fragment has no (or only part of an) L4 header to judge
 *   MALFORMED  truncated headers, IHL < 5, bogus lengths, too many IPv6
 *              extension headers: denied
 */
#ifndef HEPBPF_PARSE_BPF_H
#define HEPBPF_PARSE_BPF_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include "hepbpf_abi.h"

/* end is data_end, the bound the verifier knows; limit is where the IP
 * header says the packet ends (frames can carry padding past it). l3_room
 * is how many bytes the packet really has from the L3 header on: on tc
 * egress only the headers are linear (data_end) and a GSO packet's payload
 * sits in fragments, so IP lengths are checked against l3_room and reads
 * against end. */
struct hep_cursor {
	void *pos;
	void *end;
	void *limit;
	__u32 l3_room;
};

/* Returns: a pointer to len bytes at the cursor (and advances), or NULL. */
static __always_inline void *hep_pull(struct hep_cursor *c, __u32 len)
{
	void *p = c->pos;

	if (p + len > c->end || p + len > c->limit)
		return NULL;
	c->pos = p + len;
	return p;
}

/* ICMP types conntrack cares about, per family: echo request and reply,
 * and the errors that quote a packet of a flow (RFC 792, RFC 4443). */
static __always_inline int hep_icmp_kind(__u8 family, __u8 type)
{
	if (family == HEP_FAMILY_V4) {
		if (type == 8)
			return HEP_CT_ECHO_REQUEST;
		if (type == 0)
			return HEP_CT_ECHO_REPLY;
		if (type == 3 || type == 4 || type == 5 || type == 11 || type == 12)
			return HEP_CT_ERROR;
		return HEP_CT_NONE;
	}
	if (type == 128)
		return HEP_CT_ECHO_REQUEST;
	if (type == 129)
		return HEP_CT_ECHO_REPLY;
	if (type >= 1 && type <= 4)
		return HEP_CT_ERROR;
	return HEP_CT_NONE;
}

/* The packet an ICMP error quotes: its IP header and the first 8 bytes
 * of its L4 header. Returns 0 if it cannot be read (then the error is
 * just an ICMP packet, judged by policy). No extension headers or IP
 * options beyond IHL are followed: a quote is never trusted further. */
static __always_inline int hep_parse_quote(struct hep_cursor *c, struct hep_flow *f)
{
	struct hep_inner *in = &f->inner;
	__u8 *l4;

	if (f->family == HEP_FAMILY_V4) {
		struct iphdr *ip = hep_pull(c, sizeof(*ip));

		if (!ip || ip->version != 4 || ip->ihl < 5)
			return 0;
		if (ip->ihl > 5 && !hep_pull(c, (ip->ihl - 5) * 4))
			return 0;
		in->proto = ip->protocol;
		in->saddr.v4 = ip->saddr;
		in->daddr.v4 = ip->daddr;
	} else {
		struct ipv6hdr *ip6 = hep_pull(c, sizeof(*ip6));

		if (!ip6 || ip6->version != 6)
			return 0;
		in->proto = ip6->nexthdr;
		__builtin_memcpy(in->saddr.v6, &ip6->saddr, 16);
		__builtin_memcpy(in->daddr.v6, &ip6->daddr, 16);
	}
	l4 = hep_pull(c, 8);
	if (!l4)
		return 0;
	switch (in->proto) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
	case IPPROTO_UDPLITE:
	case IPPROTO_SCTP:
		in->sport = (__u16)l4[0] << 8 | l4[1];
		in->dport = (__u16)l4[2] << 8 | l4[3];
		return 1;
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6:
		/* An error about an echo request of ours quotes it. */
		if (hep_icmp_kind(f->family, l4[0]) != HEP_CT_ECHO_REQUEST)
			return 0;
		in->icmp_code = l4[1];
		in->sport = in->dport = (__u16)l4[4] << 8 | l4[5];
		return 1;
	default:
		return 1;	/* tracked by addresses alone */
	}
}

static __always_inline int hep_parse_l4(struct hep_cursor *c, struct hep_flow *f)
{
	__u8 *l4;

	switch (f->proto) {
	case IPPROTO_TCP:
		l4 = hep_pull(c, 20);
		if (!l4 || (l4[12] >> 4) < 5)	/* data offset < 5 words */
			return HEP_REASON_MALFORMED;
		f->tcp_flags = l4[13];
		break;
	case IPPROTO_UDP:
	case IPPROTO_UDPLITE:
	case IPPROTO_SCTP:
		l4 = hep_pull(c, IPPROTO_SCTP == f->proto ? 12 : 8);
		if (!l4)
			return HEP_REASON_MALFORMED;
		break;
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6:
		l4 = hep_pull(c, 4);
		if (!l4)
			return HEP_REASON_MALFORMED;
		f->dport = (__u16)l4[0] << 8 | l4[1];	/* type << 8 | code */
		/* ICMPv4 only in IPv4, ICMPv6 only in IPv6: else never tracked. */
		if ((f->proto == IPPROTO_ICMP) != (f->family == HEP_FAMILY_V4)) {
			f->ct = HEP_CT_NONE;
			return HEP_REASON_NONE;
		}
		f->ct = hep_icmp_kind(f->family, l4[0]);
		if (f->ct == HEP_CT_ECHO_REQUEST || f->ct == HEP_CT_ECHO_REPLY) {
			__u8 *rest = hep_pull(c, 4);	/* identifier, sequence */

			if (!rest)
				f->ct = HEP_CT_NONE;	/* too short to track */
			else
				f->echo_id = (__u16)rest[0] << 8 | rest[1];
		} else if (f->ct == HEP_CT_ERROR) {
			if (!hep_pull(c, 4) || !hep_parse_quote(c, f))
				f->ct = HEP_CT_NONE;
		}
		return HEP_REASON_NONE;
	default:
		return HEP_REASON_NONE;		/* no ports to read */
	}
	/* TCP, UDP, UDP-Lite and SCTP all start with two 16-bit ports. */
	f->sport = (__u16)l4[0] << 8 | l4[1];
	f->dport = (__u16)l4[2] << 8 | l4[3];
	return HEP_REASON_NONE;
}

/* A 16-bit network-order field, with bounds the verifier can see: before
 * 6.3 a byte swap leaves its result unbounded, and the pointer add that
 * follows is refused ("math between pkt pointer and register with
 * unbounded min value"). The mask is in asm so clang cannot drop it as
 * redundant. */
static __always_inline __u32 hep_be16(__be16 v)
{
	__u32 x = bpf_ntohs(v);

	asm volatile("%[x] &= 0xffff" : [x] "+r"(x));
	return x;
}

static __always_inline int hep_parse_ipv4(struct hep_cursor *c, struct hep_flow *f)
{
	struct iphdr *ip = c->pos;
	__u32 hlen, tot;

	if ((void *)(ip + 1) > c->end)
		return HEP_REASON_MALFORMED;
	if (ip->version != 4 || ip->ihl < 5)
		return HEP_REASON_MALFORMED;
	hlen = ip->ihl * 4;
	tot = hep_be16(ip->tot_len);
	if (tot < hlen || tot > c->l3_room)
		return HEP_REASON_MALFORMED;
	c->limit = c->pos + tot;	/* L4 must lie within tot_len */
	if (ip->frag_off & bpf_htons(0x3fff))	/* MF or an offset */
		return HEP_REASON_FRAGMENT;
	f->family = HEP_FAMILY_V4;
	f->proto = ip->protocol;
	f->len = tot;
	f->saddr.v4 = ip->saddr;
	f->daddr.v4 = ip->daddr;
	/* Options are skipped, never parsed: they cannot change the verdict. */
	if (!hep_pull(c, hlen))
		return HEP_REASON_MALFORMED;
	return hep_parse_l4(c, f);
}

/* Extension headers that ip6tables also skips to find the protocol. */
static __always_inline int hep_ipv6_is_ext(__u8 nh)
{
	return nh == IPPROTO_HOPOPTS || nh == IPPROTO_ROUTING ||
	       nh == IPPROTO_DSTOPTS || nh == IPPROTO_AH ||
	       nh == IPPROTO_FRAGMENT;
}

static __always_inline int hep_parse_ipv6(struct hep_cursor *c, struct hep_flow *f)
{
	struct ipv6hdr *ip6 = hep_pull(c, sizeof(*ip6));
	__u8 nh;
	__u32 plen;
	int i;

	if (!ip6 || ip6->version != 6)
		return HEP_REASON_MALFORMED;
	plen = hep_be16(ip6->payload_len);
	if (sizeof(*ip6) + plen > c->l3_room)
		return HEP_REASON_MALFORMED;
	c->limit = c->pos + plen;
	f->family = HEP_FAMILY_V6;
	f->len = plen + sizeof(*ip6);
	__builtin_memcpy(f->saddr.v6, &ip6->saddr, 16);
	__builtin_memcpy(f->daddr.v6, &ip6->daddr, 16);
	nh = ip6->nexthdr;
	for (i = 0; i < HEP_MAX_IPV6_EXT; i++) {
		__u8 *ext;

		if (!hep_ipv6_is_ext(nh))
			break;
		if (nh == IPPROTO_FRAGMENT)
			return HEP_REASON_FRAGMENT;
		ext = hep_pull(c, 8);
		if (!ext)
			return HEP_REASON_MALFORMED;
		/* AH counts its length in 4-byte units, the others in 8. */
		if (!hep_pull(c, nh == IPPROTO_AH ? ext[1] * 4 : ext[1] * 8))
			return HEP_REASON_MALFORMED;
		nh = ext[0];
	}
	if (hep_ipv6_is_ext(nh))
		return HEP_REASON_MALFORMED;	/* chain longer than we walk */
	f->proto = nh;
	return hep_parse_l4(c, f);
}

/* Returns: HEP_REASON_NONE with *f filled, or why the packet has no flow.
 * wire_len: the packet's full length (>= data_end - data). */
static __always_inline int hep_parse(void *data, void *data_end, __u32 wire_len,
				     struct hep_flow *f)
{
	struct hep_cursor c = { .pos = data, .end = data_end, .limit = data_end };
	struct ethhdr *eth = hep_pull(&c, sizeof(*eth));

	if (!eth)
		return HEP_REASON_MALFORMED;
	c.l3_room = wire_len - sizeof(*eth);	/* wire_len >= the pulled header */
	if (eth->h_proto == bpf_htons(ETH_P_IP))
		return hep_parse_ipv4(&c, f);
	if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		return hep_parse_ipv6(&c, f);
	return HEP_REASON_NOT_IP;
}

#endif /* HEPBPF_PARSE_BPF_H */
