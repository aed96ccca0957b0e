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
	HEP_SUM_WORDS = HEP_MAX_WORDS / 64, /* hep_class.sum: a bit per word */
	HEP_MAX_HOPS = 16,		/* Pass hops per packet = tiers per chain */
	HEP_MAX_NOTED = 64,		/* Log and audited Deny slots per chain */
	HEP_MAX_NOTES = 16,		/* of which recorded (and reported) per packet */
	HEP_MAX_JUMPS = HEP_MAX_HOPS + HEP_MAX_NOTED + 4, /* + conntrack, forward, failsafe */
	HEP_EV_CAP = 128,		/* frame bytes an event carries */
	HEP_PORT_SPACE = 65536,		/* one port table: every 16-bit value */
	HEP_PROTO_SPACE = 256,
	HEP_SCOPE_BITS = 32,		/* exact-match bits before an LPM address */
	HEP_NO_PORT_TABLE = 0xffffffff,	/* hep_proto_ent.port_base: no ports */
	HEP_SCOPE_LOOKUP = 0xffffffff,	/* hep_scope.klass: look the address up */
	HEP_STRIDE_MAX = 8,		/* hep_scope.len: lookups per address, at most */
	HEP_DIR_LINE = 16,		/* hep_dir_v1 entries per map element (a cache line) */
	HEP_DIR_BITS_MAX = 20,		/* address bits one DIR level indexes, at most */
	HEP_MAX_IPV6_EXT = 6,		/* extension headers walked before giving up */
	HEP_GEN_MAX = 2,		/* policy generations held side by side */
};

/* A chain is one ordered list of rule slots, judged by one hook. */
enum hep_chain {
	HEP_CHAIN_INGRESS = 0,		/* XDP: towards the host, before DNAT */
	HEP_CHAIN_EGRESS = 1,		/* tc: from the host (or forwarded) out */
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

/* What a slot does when it is the first match. */
enum hep_action {
	HEP_ACTION_ALLOW = 1,
	HEP_ACTION_DENY = 2,
	HEP_ACTION_PASS = 3,		/* continue at hep_slot.next (next tier) */
	HEP_ACTION_CONNTRACK = 4,	/* a known flow: allow; else the next slot */
	HEP_ACTION_FORWARD = 5,		/* forwarded: continue at next; else the next slot */
	HEP_ACTION_LOG = 6,		/* note it (event, counter), continue at next */
};

/* hep_slot.flags */
enum hep_slot_flag {
	HEP_SLOT_TRACK = 1,		/* an Allow here starts a conntrack flow */
	HEP_SLOT_DIVERT = 2,		/* forwarded packets continue at next instead */
	HEP_SLOT_AUDIT = 4,		/* a Deny of an audited policy: note, continue at next */
};

/* hep_notes.slot[]: a Log slot, or an audited Deny slot with this bit. */
enum hep_note_bits {
	HEP_NOTE_AUDIT = 0x80000000,
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
	HEP_REASON_CONNTRACK = 12,	/* a packet of a flow allowed before */
	HEP_REASON_FORWARD_ALLOW = 13,	/* forwarded, no applyOnForward policy denied */
	HEP_REASON_MAX = 14,
};

/* Generations: the policy maps hold two policies side by side, and
 * hep_gen_v1 says which one packets are judged by (maps.h). Every policy
 * key carries the generation: LPM keys in their gen byte; array indexes
 * through the per-generation strides of struct hep_config (hep_proto_v1:
 * HEP_PROTO_SPACE * HEP_SIDE_MAX * HEP_CHAIN_MAX entries per generation).
 * Values (class ids, port_base, slot numbers) are the same in both: the
 * datapath adds the generation's offset, so one encoding serves both. */

/* LPM keys: chain, side and generation are matched exactly
 * (HEP_SCOPE_BITS, pad included), then the address by prefix. prefixlen =
 * HEP_SCOPE_BITS + CIDR length; loader/encode.py computes it in one place.
 * Each (gen, chain, side, family) scope has a /0 entry, so a miss is a bug. */
struct hep_lpm4_key {
	__u32 prefixlen;		/* host order, bits */
	__u8 chain;			/* enum hep_chain */
	__u8 side;			/* enum hep_side */
	__u8 gen;			/* 0 .. HEP_GEN_MAX - 1 */
	__u8 pad;
	__be32 addr;
};

struct hep_lpm6_key {
	__u32 prefixlen;		/* host order, bits */
	__u8 chain;
	__u8 side;
	__u8 gen;
	__u8 pad;
	__u8 addr[16];			/* network order */
};

/* Host keys (hep_host{4,6}_v2): an address block of a scope, matched
 * exactly in a hash. In a trie scope, the full-length prefixes (/32, /128),
 * asked before the trie; in a stride scope, every prefix expanded to the
 * scope's stride lengths (struct hep_scope; loader/encode.py). Either way
 * the class is what the trie would answer for the block's addresses. */
struct hep_host4_key {
	__u8 chain;			/* enum hep_chain */
	__u8 side;			/* enum hep_side */
	__u8 gen;			/* 0 .. HEP_GEN_MAX - 1 */
	__u8 plen;			/* the block's prefix length (a stride) */
	__be32 addr;			/* masked to plen */
};

struct hep_host6_key {
	__u8 chain;
	__u8 side;
	__u8 gen;
	__u8 plen;
	__u8 addr[16];			/* network order, masked to plen */
};

/* How hep_scope.mode finds an address's class. */
enum hep_scope_mode {
	HEP_SCOPE_TRIE = 0,		/* full length in the host hash, else the trie */
	HEP_SCOPE_STRIDES = 1,		/* host hash at each of len[0..n), first hit, else miss */
	HEP_SCOPE_DIR = 2,		/* multibit trie of arrays in hep_dir_v1 */
};

/* hep_scope_v2 value: how one (gen, chain, side, family) scope maps an
 * address to a class. klass != HEP_SCOPE_LOOKUP: that class, no lookup
 * (the scope holds only its /0). Else by mode; in a stride scope, miss is
 * the class when no stride hits (the /0's: it needs no lookup). In a DIR
 * scope, an address outside the skip bits every prefix shares gets miss;
 * else the walk starts at bit skip, level i indexing the next len[i] bits
 * (1..HEP_DIR_BITS_MAX, never across a 32-bit word of the address), from
 * the block at root in the scope's generation of hep_dir_v1. (Policy
 * CIDRs tend to share a site prefix, 2001:db8::/32 say: the walk starts
 * there instead of spending levels on it.) */
struct hep_scope {
	__u32 klass;
	__u32 miss;			/* STRIDES, DIR: the /0's class, or ~0 */
	__u8 mode;			/* enum hep_scope_mode */
	__u8 n;				/* strides (levels) in len[], <= HEP_STRIDE_MAX */
	__u8 skip;			/* DIR: bits every prefix shares (but the /0) */
	__u8 pad;
	__u8 len[HEP_STRIDE_MAX];	/* STRIDES: prefix lengths, longest first; DIR: bits per level */
	__u32 root;			/* DIR: entry index of the first block */
	__u32 prefix[4];		/* DIR: those bits, host-order words; outside them: miss */
};

/* A hep_dir_v1 entry: HEP_DIR_LEAF set, the class in the other bits (all
 * ones: no class, an internal miss); HEP_DIR_RECORD set, a compare record
 * (struct hep_dir_record) at that entry index from the scope's root; else
 * the next level's block, as an entry index from the scope's root. Blocks
 * are leaf-pushed: every entry holds the answer of the longest prefix
 * covering it, so a walk ends at the first leaf or record. */
enum {
	HEP_DIR_LEAF = 0x80000000,
	HEP_DIR_RECORD = 0x40000000,
	HEP_DIR_MISS = 0xffffffff,
	HEP_DIR_RECORD_LEN = 8,		/* entries a record takes, aligned to it */
};

/* A compare record: where only one prefix lies below an entry (the usual
 * case past the first level of spread-out IPv6 prefixes), the entry points
 * here instead of to a chain of blocks: an address inside the prefix gets
 * in, any other out (the answer of the entry before the record). */
struct hep_dir_record {
	__u32 prefix[4];		/* host-order words, masked to plen */
	__u32 plen;
	__u32 in;			/* a leaf entry */
	__u32 out;			/* a leaf entry */
	__u32 pad;
};

/* hep_dir_v1 value: HEP_DIR_LINE entries, so a map element is a cache
 * line and the map's memory (mmap) is the entries, back to back. */
struct hep_dir_line {
	__u32 e[HEP_DIR_LINE];
};

/* hep_proto_v1 value, indexed by ((gen * HEP_CHAIN_MAX + chain) *
 * HEP_SIDE_MAX + side) * HEP_PROTO_SPACE + protocol. Protocols whose port
 * (or ICMP type/code) matters for some rule get a 65536-entry table in
 * hep_port_v1. */
struct hep_proto_ent {
	__u32 klass;			/* class when port_base is HEP_NO_PORT_TABLE */
	__u32 port_base;		/* port 0 in hep_port_v1, + gen * port_stride */
};

/* hep_class_v2 value, at class id + gen * hep_config.class_stride: the
 * rules (slots) an address, protocol or port class admits, w[] bit i =
 * slot i. sum[] summarises w[]: bit j is set iff w[j] is not zero, so the
 * scan ANDs four summaries to find the words where a common bit can be,
 * rather than reading every word (first and last word bounds were no use:
 * the catch-all slots at both ends put every class in word 0 and the
 * last). The value size is set by the loader: 32 + 8 * hep_config.nwords.
 * (v1: a __u16 lo, hi of the non-zero words instead of sum[].) */
struct hep_class {
	__u64 sum[4];			/* HEP_SUM_WORDS: one bit per word of w[] */
	__u64 w[];
};

/* hep_slot_v1 value, indexed by (gen * HEP_CHAIN_MAX + chain) *
 * hep_config.slot_stride + slot. */
struct hep_slot {
	__u8 action;			/* enum hep_action */
	__u8 reason;			/* enum hep_reason if this slot decides */
	__u8 flags;			/* enum hep_slot_flag */
	__u8 pad;
	__u32 next;			/* Pass, FORWARD, DIVERT: where to continue */
	__u32 policy;			/* index into the policy name table (loader) */
	__u32 rule;			/* rule index in the policy, or ~0 */
};

/* Counters: per CPU, summed by the loader. */
struct hep_stats {
	__u64 packets;
	__u64 bytes;
};

union hep_addr {
	__be32 v4;
	__u8 v6[16];
	__be32 v6_32[4];		/* v6 as words: read a word at a time */
};

/* The packet an ICMP error quotes, as far as conntrack needs it: its
 * protocol, addresses and ports (or echo id), in the quoted packet's own
 * direction. */
struct hep_inner {
	__u8 proto;
	__u8 icmp_code;			/* a quoted echo request: its code */
	__u16 sport;			/* host order; echo: the id */
	__u16 dport;			/* host order; echo: the id */
	__u16 pad2;
	union hep_addr saddr;
	union hep_addr daddr;
};

/* hep_flow.ct: what conntrack reads besides the 5-tuple. */
enum hep_ct_kind {
	HEP_CT_PLAIN = 0,		/* tracked by its own 5-tuple */
	HEP_CT_ECHO_REQUEST = 1,	/* ICMP echo request: may start a flow */
	HEP_CT_ECHO_REPLY = 2,		/* ICMP echo reply: only matches one */
	HEP_CT_ERROR = 3,		/* ICMP error: related to hep_flow.inner */
	HEP_CT_NONE = 4,		/* other ICMP: never tracked */
};

/* The parsed packet. Policy code reads only this, never the context. */
struct hep_flow {
	__u8 family;			/* enum hep_family */
	__u8 proto;			/* L4 protocol (after IPv6 ext headers) */
	__u16 sport;			/* host order; 0 if the protocol has none */
	__u16 dport;			/* host order; ICMP: type << 8 | code */
	__u16 len;			/* bytes from the L3 header on */
	union hep_addr saddr;
	union hep_addr daddr;
	__u8 tcp_flags;			/* TCP: the flags byte (FIN 1, SYN 2, RST 4, ACK 16) */
	__u8 ct;			/* enum hep_ct_kind */
	__u16 echo_id;			/* ICMP echo: the identifier, host order */
	__u32 pad;
	struct hep_inner inner;		/* ct == HEP_CT_ERROR */
};

/* Connection tracking. A flow is keyed by its two endpoints in a fixed
 * order (lower address, then lower port, first), so both directions find
 * the same entry; IPv4 addresses fill the first 4 bytes. */
struct hep_ct_key {
	__u8 family;
	__u8 proto;
	__u8 icmp_code;			/* ICMP echo: the code (Linux tracks it too) */
	__u8 pad;
	__u16 port_a;			/* host order; ICMP echo: the id */
	__u16 port_b;
	__u8 addr_a[16];
	__u8 addr_b[16];
};

enum hep_ct_state {
	HEP_CT_SYN_SENT = 1,		/* TCP: only the opener has spoken */
	HEP_CT_ESTABLISHED = 2,		/* TCP: both sides seen */
	HEP_CT_FIN_WAIT = 3,		/* TCP: one side sent FIN */
	HEP_CT_CLOSING = 4,		/* TCP: both sent FIN; the last ACK removes it */
	HEP_CT_UDP = 5,
	HEP_CT_ICMP = 6,		/* an echo exchange */
	HEP_CT_OTHER = 7,		/* any other protocol */
	HEP_CT_STATE_MAX = 8,
};

struct hep_ct_val {
	__u64 created_ns;		/* bpf_ktime_get_ns() */
	__u64 seen_ns;			/* last packet */
	__u64 packets;
	__u8 state;			/* enum hep_ct_state */
	__u8 opener_a;			/* 1: endpoint a opened the flow */
	__u8 fins;			/* bit 0: a sent FIN, bit 1: b sent FIN */
	__u8 chain;			/* enum hep_chain of the packet that opened it */
	__u32 pad;
};

/* hep_ctstat_v1 keys: conntrack events, counted per CPU. Entries evicted
 * because the table was full are created - closed - expired - live. */
enum hep_ct_event {
	HEP_CTEV_CREATED = 0,
	HEP_CTEV_HIT = 1,		/* a packet passed as part of a flow */
	HEP_CTEV_RELATED = 2,		/* an ICMP error passed for a flow */
	HEP_CTEV_CLOSED = 3,		/* removed by RST or the last ACK */
	HEP_CTEV_EXPIRED = 4,		/* found past its timeout, removed */
	HEP_CTEV_CREATE_FAILED = 5,
	HEP_CTEV_MAX = 6,
};

/* The conntrack pre-filter (ct.bpf.h, hep_ctseen_v1). */
enum hep_ctseen {
	HEP_CTSEEN_BITS = 18,		/* hep_ctseen_v1 has 2^18 buckets */
	HEP_CTSEEN_SHIFT = 30,		/* stamp unit: 2^30 ns, a little over 1 s */
	HEP_CTSEEN_SLACK = 2,		/* units: floor rounding, racing stamps */
};

/* hep_hostaddr_v1: the host's exact addresses, direct-mapped by
 * hep_hostaddr_line(); a line holds one (or none: family 0). */
enum hep_hostaddr_lines {
	HEP_HOSTADDR_BITS = 8,		/* 2^8 lines */
	HEP_HOSTADDR_MUL = 0x9e3779b1,	/* the line's multiplicative hash */
};

struct hep_hostaddr {
	__u32 family;			/* HEP_FAMILY_V4 or _V6; 0: empty line */
	__u8 addr[16];			/* network order; IPv4 in the first 4 */
};

/* hep_local{4,6}_v1 keys: the host's own addresses (and broadcast and
 * multicast ranges), by prefix. Ingress packets to other addresses are
 * forwarded ones. */
struct hep_local4_key {
	__u32 prefixlen;
	__be32 addr;
};

struct hep_local6_key {
	__u32 prefixlen;
	__u8 addr[16];
};

/* The outcome of one packet, as recorded in hep_trace_v1 when tracing. */
struct hep_verdict {
	__u32 slot;			/* deciding slot, or ~0 */
	__u8 verdict;			/* enum hep_verdict_code */
	__u8 reason;			/* enum hep_reason */
	__u8 chain;			/* enum hep_chain */
	__u8 gen;			/* the generation that judged it */
};

/* hep_notes_v1 value: the Log and audited slots one packet passed, in
 * order (the verifier would track a list on the stack path by path). */
struct hep_notes {
	__u32 n;			/* passed; past HEP_MAX_NOTES counted, not kept */
	__u32 slot[HEP_MAX_NOTES];	/* a slot, | HEP_NOTE_AUDIT if audited */
};

/* Events: one ring-buffer record per Log or audited-Deny note and per
 * dropped (or, auditing, would-be-dropped) packet. */
enum hep_event_kind {
	HEP_EV_LOG = 1,			/* a Log rule matched */
	HEP_EV_DROP = 2,		/* the packet was dropped */
	HEP_EV_WOULD_DROP = 3,		/* audit: it would have been dropped; passed */
};

/* hep_config.events bits: which events to emit. */
enum hep_event_mask {
	HEP_EVMASK_LOG = 1,
	HEP_EVMASK_DROP = 2,		/* drops and would-be drops */
};

struct hep_event {
	__u64 ts_ns;			/* bpf_ktime_get_ns() */
	__u32 ifindex;			/* where the program runs */
	__u32 in_ifindex;		/* tc: the ingress interface, 0 if the host's own */
	__u32 slot;			/* the Log / audited / deciding slot, or ~0 */
	__u32 decided_slot;		/* the slot that gave the verdict, or ~0 */
	__u32 wire_len;			/* frame length */
	__u8 kind;			/* enum hep_event_kind */
	__u8 chain;			/* enum hep_chain */
	__u8 verdict;			/* the policy's verdict (before audit) */
	__u8 reason;			/* enum hep_reason of the verdict */
	__u8 family;			/* parsed packet, as the policy saw it; */
	__u8 proto;			/* 0 when it did not parse */
	__u16 sport;
	__u16 dport;
	__u16 cap_len;			/* bytes of hdr[] filled */
	__u8 audit;			/* 1: passed only because of audit mode */
	__u8 gen;			/* the generation whose slots these are */
	__u8 pad[2];
	union hep_addr saddr;
	union hep_addr daddr;
	__u8 hdr[HEP_EV_CAP];		/* the frame from its L2 header */
	__u32 pad2;
};

/* hep_evstat_v1 keys (chain * HEP_EVSTAT_MAX + stat): event accounting. */
enum hep_ev_stat {
	HEP_EVSTAT_EMITTED = 0,		/* records written */
	HEP_EVSTAT_SUPPRESSED = 1,	/* over the rate limit (or past HEP_MAX_NOTES) */
	HEP_EVSTAT_LOST = 2,		/* ring buffer full: the reader is behind */
	HEP_EVSTAT_WOULD_DROP = 3,	/* packets (and bytes) passed by audit */
	HEP_EVSTAT_MAX = 4,
};

/* hep_evrate_v2 value: the per-CPU token bucket of events. */
struct hep_evrate {
	__u64 credit_ns;		/* time credit; an event costs ev_interval_ns */
	__u64 last_ns;			/* the clock when credit_ns was last topped up */
	__u64 last_jiffies;		/* the tick of that read */
};

/* Runtime knobs: .rodata, set by the loader between open and load. The
 * sizes are capacities, with room for later policies of a few more rules
 * (an update that does not fit reloads the object). */
struct hep_config {
	__u32 nwords;			/* words per class vector, 1..HEP_MAX_WORDS */
	__u32 slot_stride;		/* nwords * 64: slots per chain */
	__u32 class_stride;		/* hep_class_v2 entries per generation */
	__u32 port_stride;		/* hep_port_v1 entries per generation */
	__u32 dir_stride;		/* hep_dir_v1 entries per generation */
	__u8 trace;			/* record verdicts in hep_trace_v1 */
	__u8 has_policy;		/* 0: no host endpoint, allow all */
	__u8 know_local;		/* hep_local*_v1 filled: ingress can tell forwarded */
	__u8 audit;			/* 1: drop nothing, report would-be drops */
	__u8 events;			/* enum hep_event_mask */
	__u8 pad[7];
	__u32 ct_timeout_s[8];		/* idle timeout per enum hep_ct_state */
	__u64 ev_interval_ns;		/* per CPU, one event per interval on average */
	__u64 ev_burst_ns;		/* credit cap: burst * ev_interval_ns */
};

#ifndef HEPBPF_CDEF
_Static_assert(sizeof(struct hep_lpm4_key) == 12, "hep_lpm4_key layout");
_Static_assert(sizeof(struct hep_lpm6_key) == 24, "hep_lpm6_key layout");
_Static_assert(sizeof(struct hep_host4_key) == 8, "hep_host4_key layout");
_Static_assert(sizeof(struct hep_host6_key) == 20, "hep_host6_key layout");
_Static_assert(sizeof(struct hep_scope) == 40, "hep_scope layout");
_Static_assert(sizeof(struct hep_dir_line) == 64, "hep_dir_line layout");
_Static_assert(sizeof(struct hep_dir_record) == 4 * HEP_DIR_RECORD_LEN, "hep_dir_record layout");
_Static_assert(sizeof(struct hep_slot) == 16, "hep_slot layout");
_Static_assert(sizeof(struct hep_class) == 8 * HEP_SUM_WORDS, "hep_class header");
_Static_assert(sizeof(struct hep_flow) == 88, "hep_flow layout");
_Static_assert(sizeof(struct hep_ct_key) == 40, "hep_ct_key layout");
_Static_assert(sizeof(struct hep_ct_val) == 32, "hep_ct_val layout");
_Static_assert(sizeof(struct hep_config) == 80, "hep_config layout");
_Static_assert(sizeof(struct hep_event) == 208, "hep_event layout");
_Static_assert(sizeof(struct hep_verdict) == 8, "hep_verdict layout");
_Static_assert(HEP_CT_STATE_MAX == 8, "hep_config.ct_timeout_s length");
#endif

#endif /* HEPBPF_ABI_H */
