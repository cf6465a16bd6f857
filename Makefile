# The two commands: `make demo` (the main job on the embedded default) and `make test`.
# Both install what they need: Debian packages (tools/install-deps.sh) and a virtual environment.

SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
EXAMPLE := examples/two-node.toml
DEMO_OUT := out/demo
LAB := /tmp/appliance-lab-demo

.PHONY: demo test test-vm test-vm-ci deps venv clean wheelhouse

deps: .stamp-deb venv

.stamp-deb: tools/install-deps.sh
	./tools/install-deps.sh
	@touch $@

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml .stamp-deb
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

demo: deps
	@echo "== 1. the offline plan of $(EXAMPLE) (contacts nothing) =="
	$(BIN)/appliance install --check -i $(EXAMPLE)
	@test -f examples/two-node.secrets.toml || $(BIN)/appliance secrets init -i $(EXAMPLE)
	@echo "== 2. every file for both nodes, validated by the real tools =="
	$(BIN)/appliance render -i $(EXAMPLE) -o $(DEMO_OUT) --force
	@echo "== 3. what Pacemaker does when cloud-cc01 dies =="
	@cat $(DEMO_OUT)/cluster/failover-cloud-cc01.txt
	@echo "== 4. the core manager on the embedded default: ten VMs on real qcow2 overlays =="
	./tools/manager-demo.sh
	@echo "== 5. the lab: two frontends as namespaces on this machine, installed over SSH =="
	$(BIN)/appliance lab down --dir $(LAB) > /dev/null 2>&1 || true
	$(BIN)/appliance lab up --dir $(LAB)
	$(BIN)/appliance install -i $(LAB)/lab.toml
	$(BIN)/appliance status -i $(LAB)/lab.toml
	@echo "== 6. kill the active node while a client writes through the API =="
	$(BIN)/appliance drill kill-node -i $(LAB)/lab.toml
	$(BIN)/appliance lab down --dir $(LAB)

test: deps
	$(BIN)/pytest -q --ignore=tests/vmlab

# The VM lab tier: QEMU machines with Debian's own kernel (DRBD, LVM, AoE, kernel NFS for real).
# Its own target: minutes of TCG boots and installs; .ci/run calls it after `make test`.
test-vm: deps
	$(BIN)/pytest -q tests/vmlab

# CI's part of the VM tier: install, reinstalls, every drill and the split-brain runbook; the
# three whole-runbook walks and the split-brain DRBD resolves by itself (about 25 more minutes) only
# in `make test-vm`, so that `make test` and this fit CI's hour.
test-vm-ci: deps
	$(BIN)/pytest -q -m "not vm_full_only" tests/vmlab

# What `appliance install` ships to production nodes ([manager] wheelhouse in the inventory): the
# appliance's wheel and every dependency's, so the nodes install with no package index.
wheelhouse: venv
	rm -rf dist/wheelhouse
	$(BIN)/pip wheel --quiet -w dist/wheelhouse .
	@ls dist/wheelhouse

clean:
	rm -rf $(VENV) out .stamp-deb .pytest_cache .hypothesis
