"""Automatic host endpoints, as calico-kube-controllers creates them.

Before: a PolicySet that may hold Nodes and a KubeControllersConfiguration.
After: the same set plus, if the `default` KubeControllersConfiguration has
`controllers.node.hostEndpoint.autoCreate: Enabled`, one HostEndpoint per
Node: `<node>-auto-hep`, `interfaceName: "*"`, the node's addresses as
expectedIPs, the node's labels plus `projectcalico.org/created-by:
calico-kube-controllers`, and the `projectcalico-default-allow` profile
(kube-controllers pkg/controllers/node/hostendpoints.go). A HostEndpoint of
that name given explicitly is replaced, as the controller would replace it.
"""

from __future__ import annotations

from dataclasses import replace

from .ir import HostEndpoint, PolicySet

CREATED_BY = ("projectcalico.org/created-by", "calico-kube-controllers")


def auto_host_endpoints(ps: PolicySet) -> PolicySet:
    enabled = any(k.name == "default" and k.auto_host_endpoints for k in ps.kube_controllers)
    if not enabled:
        return ps
    auto = {
        f"{n.name}-auto-hep": HostEndpoint(
            name=f"{n.name}-auto-hep",
            labels=tuple(sorted(dict(n.labels + (CREATED_BY,)).items())),
            node=n.name,
            interface_name="*",
            expected_ips=n.addresses,
            profiles=("projectcalico-default-allow",),
            span=n.span,
        )
        for n in ps.nodes
    }
    kept = tuple(h for h in ps.host_endpoints if h.name not in auto)
    return replace(ps, host_endpoints=kept + tuple(auto.values()))
