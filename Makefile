# hepbpf: the two commands of the README, and what they need.
#   make demo    the Prometheus-metrics example on the built-in namespace lab
#   make test    every test (root: BPF and network-namespace tests included)
# Both install what is missing (Debian 12: apt packages, a venv), then build.

VENV := .venv
PY := $(VENV)/bin/python
APT_PACKAGES := clang llvm libbpf-dev bpftool iproute2 nftables iptables gcc make \
	python3-venv python3-dev libffi-dev tmux ethtool
STRESS_PAIRS ?= 1000000
STRESS_SETS ?= 1000

.PHONY: setup deps venv bpf demo test test-unit stress bench clean

setup: deps venv bpf

# Install only what is missing, so a ready machine needs no network.
deps:
	@missing=$$(for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		if [ "$$(id -u)" != 0 ]; then echo "run as root (or: sudo apt-get install $$missing)" >&2; exit 1; fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,bench]'
	touch $@

bpf:
	$(MAKE) -C bpf

demo: setup
	$(PY) -m hepbpf.vm.demo

test: setup
	$(PY) -m pytest -q

test-unit: setup
	$(PY) -m pytest -q -m "not bpf and not netns"

# The reference evaluator and the kernel on STRESS_PAIRS random packets over
# STRESS_SETS random policy sets (about 25 minutes at the defaults here).
stress: setup
	HEPBPF_STRESS_PAIRS=$(STRESS_PAIRS) HEPBPF_STRESS_SETS=$(STRESS_SETS) \
		$(PY) -m pytest -q -m stress -p no:cacheprovider

# hepbpf against its baselines and netfilter, measured in one run (under 10
# minutes): prints every ratio next to its target, writes bench/results/.
bench: setup
	$(PY) -m hepbpf.bench $(BENCH_ARGS)

clean:
	$(MAKE) -C bpf clean
	rm -rf $(VENV) *.egg-info

# The kernel tests under Debian's own kernels (vm/kernels.txt), each booted
# with qemu in software emulation on the host's tree (read-only, tmpfs
# overlay): `make vm-test KERNEL=6.1`, or every pinned kernel (the default;
# `make vm-matrix` says so). Prints a report per kernel; fails if any fails.
# Kernels and logs are cached in /var/cache/hepbpf-vm (HEPBPF_VM_CACHE).
KERNEL ?= all
VM_APT_PACKAGES := qemu-system-x86 busybox-static kmod
# A dead network fails the target in minutes instead of apt's own patience
# (CI has 90 minutes); the kernel packages are fetched with the same bounds.
VM_APT_NET := -o Acquire::http::Timeout=30 -o Acquire::https::Timeout=30 -o Acquire::Retries=2

.PHONY: vm-deps vm-test vm-matrix

vm-deps:
	@missing=$$(for p in $(VM_APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		if [ "$$(id -u)" != 0 ]; then echo "run as root (or: sudo apt-get install $$missing)" >&2; exit 1; fi; \
		timeout 300 apt-get $(VM_APT_NET) update -qq && DEBIAN_FRONTEND=noninteractive \
			timeout 900 apt-get $(VM_APT_NET) install -y -qq --no-install-recommends $$missing \
			|| { echo "vm-deps: could not install $$missing (apt says why above)" >&2; exit 1; }; \
	fi

vm-test: setup vm-deps
	$(PY) -m hepbpf.vm.qemu.run $(KERNEL) $(VM_ARGS)

vm-matrix:
	$(MAKE) vm-test KERNEL=all
