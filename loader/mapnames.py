"""The name of every map the loader touches, in one table (bpf/include/maps.h)."""

ADDR4 = "hep_addr4_v1"
ADDR6 = "hep_addr6_v1"
HOST4 = "hep_host4_v2"
HOST6 = "hep_host6_v2"
PROTO = "hep_proto_v1"
SCOPE = "hep_scope_v2"
DIR = "hep_dir_v1"
PORT = "hep_port_v1"
CLASS = "hep_class_v2"
SLOT = "hep_slot_v1"
RULE_STATS = "hep_rulestat_v1"
REASON_STATS = "hep_reasons_v1"
TRACE = "hep_trace_v1"
CT = "hep_ct_v1"
CT_STATS = "hep_ctstat_v1"
CTSEEN = "hep_ctseen_v1"
LOCAL4 = "hep_local4_v1"
LOCAL6 = "hep_local6_v1"
HOSTADDR = "hep_hostaddr_v1"
NOTES = "hep_notes_v1"
EVENTS = "hep_events_v1"
EV_STATS = "hep_evstat_v1"
EV_RATE = "hep_evrate_v2"
GEN = "hep_gen_v1"
SYNC = "hep_sync_v1"

POLICY_MAPS = (ADDR4, ADDR6, HOST4, HOST6, SCOPE, DIR, PROTO, PORT, CLASS, SLOT, LOCAL4, LOCAL6, HOSTADDR)
# What an update in place writes: the policy of a generation, its rule
# counters, and the switch (hep_gen_v1 is found through hep_sync_v1).
UPDATE_MAPS = (ADDR4, ADDR6, HOST4, HOST6, SCOPE, DIR, PROTO, PORT, CLASS, SLOT, RULE_STATS, SYNC)
ALL_MAPS = POLICY_MAPS + (RULE_STATS, REASON_STATS, TRACE, CT, CTSEEN, CT_STATS, NOTES, EVENTS, EV_STATS, EV_RATE,
                          GEN, SYNC)

XDP_PROGRAM = "hep_xdp_ingress"
XDP_OBJECT = "hep.bpf.o"
TC_PROGRAM = "hep_tc_egress"
