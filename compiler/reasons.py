"""The reasons a verdict is given, as the kernel's enum hep_reason numbers
them and as `explain`, `status` and events spell them.

tests/unit/test_abi.py checks these numbers against bpf/include/hepbpf_abi.h.
"""

REASONS = {
    "none": 0,
    "rule-allow": 1,
    "rule-deny": 2,
    "end-of-tier": 3,
    "profile-allow": 4,
    "no-profile": 5,
    "failsafe": 6,
    "malformed": 7,
    "fragment": 8,
    "not-ip": 9,
    "internal-miss": 10,
    "no-policy": 11,
    "conntrack": 12,
    "forward-allow": 13,
}
REASON_NAMES = {v: k for k, v in REASONS.items()}
