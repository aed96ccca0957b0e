"""Shared test set-up: root-only markers and the golden-file switch.

Tests marked ``bpf`` (load the real object, BPF_PROG_TEST_RUN) or ``netns``
(network namespaces, real traffic) need root. Elsewhere they skip with the
reason; under CI=true such a skip is a failure, so CI can never pass by
skipping the tests that exercise the kernel.
"""

from __future__ import annotations

import os
import shutil

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true", help="rewrite tests/golden/*/expected files")


def _missing_privilege() -> str | None:
    if os.geteuid() != 0:
        return "needs root (CAP_BPF, CAP_NET_ADMIN)"
    if not os.path.exists("/sys/kernel/btf/vmlinux"):
        return "needs a kernel with BTF"
    return None


def _missing_tools(item) -> str | None:
    if item.get_closest_marker("netns") and shutil.which("ip") is None:
        return "needs iproute2 (ip)"
    return None


def pytest_runtest_setup(item):
    if not (item.get_closest_marker("bpf") or item.get_closest_marker("netns")):
        return
    reason = _missing_privilege() or _missing_tools(item)
    if reason is None:
        return
    if IN_CI:
        pytest.fail(f"CI=true but this kernel test cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def update_golden(request) -> bool:
    return request.config.getoption("--update-golden")
