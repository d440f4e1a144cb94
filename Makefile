# Shortcuts for humans; every target runs a script under scripts/ or bench/
# (as root). `make help` lists them.

PYTHON ?= /opt/vcluster/venv/bin/python

.PHONY: help deps stack-up stack-down stack-status test test-unit testbed-up testbed-down \
        bench-expand bench-autoscale bench-reconcile bench-openstack bench-preempt \
        bench-throughput bench-scale

help:
	@echo "make deps             install Debian packages and the virtualenv (scripts/install-deps.sh)"
	@echo "make stack-up         the local stack + expand 2 nodes + a job (scripts/stack.sh up)"
	@echo "make stack-down       tear the local stack down"
	@echo "make stack-status     what the local stack runs"
	@echo "make test             the whole test suite, as CI runs it (scripts/test.sh)"
	@echo "make test-unit        unit tests only"
	@echo "make testbed-up       the OpenStack testbed: Keystone, Placement, Glance, Nova on loopback"
	@echo "make testbed-down     stop the OpenStack testbed and remove its state"
	@echo "make bench-expand     bench/expand.py (needs stack-up)"
	@echo "make bench-autoscale  bench/autoscale.py (needs stack-up)"
	@echo "make bench-reconcile  bench/reconcile.py (needs nothing)"
	@echo "make bench-openstack  bench/openstack_api.py (starts the testbed when it is not up)"
	@echo "make bench-preempt    bench/preempt.py (starts the integration test stack: run stack-down first)"
	@echo "make bench-throughput bench/throughput.py (starts the integration test stack: run stack-down first)"
	@echo "make bench-scale      bench/scale.py: the control plane at 100, 1,000, 10,000 nodes (a simulated site; root)"

deps:
	bash scripts/install-deps.sh

stack-up:
	bash scripts/stack.sh up

stack-down:
	bash scripts/stack.sh down

stack-status:
	bash scripts/stack.sh status

test:
	bash scripts/test.sh

test-unit:
	bash scripts/test.sh tests/unit

testbed-up:
	bash scripts/openstack-testbed/up.sh

testbed-down:
	bash scripts/openstack-testbed/down.sh

bench-expand:
	$(PYTHON) bench/expand.py

bench-autoscale:
	$(PYTHON) bench/autoscale.py --repeat 3

bench-reconcile:
	$(PYTHON) bench/reconcile.py

bench-openstack:
	$(PYTHON) bench/openstack_api.py

bench-preempt:
	$(PYTHON) bench/preempt.py --repeat 5

bench-scale:
	$(PYTHON) bench/scale.py

bench-throughput:
	$(PYTHON) bench/throughput.py --repeat 2
