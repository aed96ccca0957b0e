/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* hepbpf ABI: every type that crosses the kernel/user boundary.
 *
 * Included by BPF C and, through `cc -E -P -DHEPBPF_CDEF`, by Python's cffi
 * (bpf/Makefile writes build/hepbpf_abi.cdef). Hence: constants are enums,
 * not macros; includes and static asserts sit behind #ifndef HEPBPF_CDEF.
 * tests/unit/test_abi.py checks every struct here against the object's BTF.
 *
 * Byte order: __be* fields are network order, __u* host order.
 */
#ifndef HEPBPF_ABI_H
#define HEPBPF_ABI_H

#ifndef HEPBPF_CDEF
#include <linux/types.h>
#endif

enum hep_limits {
	HEP_MAX_WORDS = 256,		/* 64-bit words per rule bit vector */
	HEP_MAX_SLOTS = HEP_MAX_WORDS * 64, /* rule slots per chain */
	HEP_MAX_HOPS = 16,		/* Pass hops per packet = tiers per chain */
	HEP_PORT_SPACE = 65536,		/* one port table: every 16-bit value */
	HEP_PROTO_SPACE = 256,
	HEP_SCOPE_BITS = 32,		/* exact-match bits before an LPM address */
	HEP_NO_PORT_TABLE = 0xffffffff,	/* hep_proto_ent.port_base: no ports */
	HEP_MAX_IPV6_EXT = 6,		/* extension headers walked before giving up */
};

/* A chain is one ordered list of rule slots, judged by one hook. */
enum hep_chain {
	HEP_CHAIN_INGRESS = 0,		/* XDP: towards the host, before DNAT */
	HEP_CHAIN_EGRESS = 1,		/* tc egress (not compiled yet) */
	HEP_CHAIN_MAX = 2,
};

/* Which packet field an address or L4 lookup classifies. */
enum hep_side {
	HEP_SIDE_SRC = 0,
	HEP_SIDE_DST = 1,
	HEP_SIDE_MAX = 2,
};

enum hep_family {
	HEP_FAMILY_V4 = 4,
	HEP_FAMILY_V6 = 6,
};

/* What a slot does when it is the first match. Log rules take no slot:
 * they never decide, so they never sit in the verdict bit vectors. */
enum hep_action {
	HEP_ACTION_ALLOW = 1,
	HEP_ACTION_DENY = 2,
	HEP_ACTION_PASS = 3,		/* continue at hep_slot.next (next tier) */
};

enum hep_verdict_code {
	HEP_VERDICT_ALLOW = 1,
	HEP_VERDICT_DENY = 2,
};

/* Why a packet got its verdict. One reason per packet; drives counters,
 * `explain --kernel` and (later) events. Keep in step with
 * compiler/reasons.py, which tests/unit/test_abi.py compares. */
enum hep_reason {
	HEP_REASON_NONE = 0,
	HEP_REASON_RULE_ALLOW = 1,	/* an Allow rule of a policy */
	HEP_REASON_RULE_DENY = 2,	/* a Deny rule of a policy */
	HEP_REASON_END_OF_TIER = 3,	/* tier applied, no rule decided: deny */
	HEP_REASON_PROFILE_ALLOW = 4,	/* a profile (e.g. default-allow) */
	HEP_REASON_NO_PROFILE = 5,	/* no tier or profile allowed: deny */
	HEP_REASON_FAILSAFE = 6,	/* failsafe port, ahead of all policy */
	HEP_REASON_MALFORMED = 7,	/* truncated or bogus headers: deny */
	HEP_REASON_FRAGMENT = 8,	/* IP fragment (no L4 to judge): deny */
	HEP_REASON_NOT_IP = 9,		/* ARP and other non-IP: not policed */
	HEP_REASON_INTERNAL_MISS = 10,	/* a map had no entry: a bug, deny */
	HEP_REASON_NO_POLICY = 11,	/* interface has no host endpoint */
	HEP_REASON_MAX = 12,
};

/* LPM keys: chain and side are matched exactly (HEP_SCOPE_BITS, pad
 * included), then the address by prefix. prefixlen = HEP_SCOPE_BITS +
 * CIDR length; compiler/encode.py computes it in one place. Each
 * (chain, side, family) scope has a /0 entry, so a miss is a bug. */
struct hep_lpm4_key {
	__u32 prefixlen;		/* host order, bits */
	__u8 chain;			/* enum hep_chain */
	__u8 side;			/* enum hep_side */
	__u8 pad[2];
	__be32 addr;
};

struct hep_lpm6_key {
	__u32 prefixlen;		/* host order, bits */
	__u8 chain;
	__u8 side;
	__u8 pad[2];
	__u8 addr[16];			/* network order */
};

/* hep_proto_v1 value, indexed by (chain * HEP_SIDE_MAX + side) *
 * HEP_PROTO_SPACE + protocol. Protocols whose port (or ICMP type/code)
 * matters for some rule get a 65536-entry table in hep_port_v1. */
struct hep_proto_ent {
	__u32 klass;			/* class when port_base is HEP_NO_PORT_TABLE */
	__u32 port_base;		/* index of port 0 in hep_port_v1 */
};

/* hep_class_v1 value: the rules (slots) an address, protocol or port
 * class admits. Words outside [lo, hi] are zero, so the scan skips them.
 * The value size is set by the loader: 8 + 8 * hep_config.nwords. */
struct hep_class {
	__u16 lo;			/* first non-zero word */
	__u16 hi;			/* last non-zero word; lo > hi: empty */
	__u32 pad;
	__u64 w[];
};

/* hep_slot_v1 value, indexed by chain * hep_config.slot_stride + slot. */
struct hep_slot {
	__u8 action;			/* enum hep_action */
	__u8 reason;			/* enum hep_reason if this slot decides */
	__u16 pad;
	__u32 next;			/* Pass: first slot of the next tier */
	__u32 policy;			/* index into the policy name table (loader) */
	__u32 rule;			/* rule index in the policy, or ~0 */
};

/* Counters: per CPU, summed by the loader. */
struct hep_stats {
	__u64 packets;
	__u64 bytes;
};

/* The parsed packet. Policy code reads only this, never the context. */
struct hep_flow {
	__u8 family;			/* enum hep_family */
	__u8 proto;			/* L4 protocol (after IPv6 ext headers) */
	__u16 sport;			/* host order; 0 if the protocol has none */
	__u16 dport;			/* host order; ICMP: type << 8 | code */
	__u16 len;			/* bytes from the L3 header on */
	union {
		__be32 v4;
		__u8 v6[16];
	} saddr;
	union {
		__be32 v4;
		__u8 v6[16];
	} daddr;
};

/* The outcome of one packet, as recorded in hep_trace_v1 when tracing. */
struct hep_verdict {
	__u32 slot;			/* deciding slot, or ~0 */
	__u8 verdict;			/* enum hep_verdict_code */
	__u8 reason;			/* enum hep_reason */
	__u8 chain;			/* enum hep_chain */
	__u8 pad;
};

/* Runtime knobs: .rodata, set by the loader between open and load. */
struct hep_config {
	__u32 nwords;			/* words per class vector, 1..HEP_MAX_WORDS */
	__u32 slot_stride;		/* nwords * 64: slots per chain */
	__u8 trace;			/* record verdicts in hep_trace_v1 */
	__u8 has_policy;		/* 0: no host endpoint, allow all */
	__u8 pad[6];
};

#ifndef HEPBPF_CDEF
_Static_assert(sizeof(struct hep_lpm4_key) == 12, "hep_lpm4_key layout");
_Static_assert(sizeof(struct hep_lpm6_key) == 24, "hep_lpm6_key layout");
_Static_assert(sizeof(struct hep_slot) == 16, "hep_slot layout");
_Static_assert(sizeof(struct hep_class) == 8, "hep_class header");
_Static_assert(sizeof(struct hep_flow) == 40, "hep_flow layout");
_Static_assert(sizeof(struct hep_config) == 16, "hep_config layout");
#endif

#endif /* HEPBPF_ABI_H */
