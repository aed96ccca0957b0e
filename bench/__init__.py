"""`make bench`: hepbpf's cost against baselines measured in the same run.

Modules: rules (the rule sets every engine gets), micro (BPF_PROG_TEST_RUN
costs), linear (the straight-line per-rule baseline program), live
(end-to-end packet rates over veth, against iptables and nftables), scale
(compile and attach of a large policy), report (ratios, targets, JSON,
plot). `python -m hepbpf.bench` runs them all.
"""
