// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Mentions every ABI type once, so each is in BTF for tests/unit/test_abi.py
 * even while no program uses it. Never loaded. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "hepbpf_abi.h"

struct hep_abi_anchor {
	struct hep_lpm4_key lpm4;
	struct hep_lpm6_key lpm6;
	struct hep_host4_key host4;
	struct hep_host6_key host6;
	struct hep_scope scope;
	enum hep_scope_mode scope_mode;
	struct hep_proto_ent proto;
	struct hep_slot slot;
	struct hep_stats stats;
	struct hep_flow flow;
	struct hep_verdict verdict;
	struct hep_config config;
	enum hep_limits limits;
	enum hep_chain chain;
	enum hep_side side;
	enum hep_family family;
	enum hep_action action;
	enum hep_verdict_code code;
	enum hep_reason reason;
	struct hep_class klass;	/* flexible array: last */
};

struct hep_abi_anchor hep_abi_anchor_v1 SEC(".data.anchor");

char LICENSE[] SEC("license") = "Dual BSD/GPL";
