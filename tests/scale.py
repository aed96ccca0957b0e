"""A 10,000-rule policy: every rule a distinct (source /32, port) deny,
then one Allow. Used by the kernel and the traffic tests."""

from .cases import gnp, hep

N_RULES = 10_000


def big_policy(n: int = N_RULES) -> str:
    rules = []
    for i in range(n):
        rules.append(f"- action: Deny\n  protocol: TCP\n  source: {{nets: [198.51.100.{i % 250 + 1}/32]}}\n"
                     f"  destination: {{ports: [{20000 + i // 250}]}}")
    rules.append("- action: Allow\n  protocol: TCP")
    return hep() + gnp("big", "selector: all()\ningress:\n" + "\n".join(rules))


def rule_for(src_last_octet: int, port: int) -> int:
    return (port - 20000) * 250 + src_last_octet - 1
