# The two set-up commands of the README:
#   make demo   installs everything and brings up a demo network on the lab
#   make test   installs everything and runs the test suite
.PHONY: setup demo demo-down test test-fast bench clean

VENV := .venv/bin

setup:
	@bash tools/setup.sh

demo: setup
	@bash tools/demo.sh

demo-down:
	@$(VENV)/ilnp-lab down

# The tests that need no lab run on both cores (pytest-xdist); the lab tests one at a
# time (each builds namespaces and runs real nodes: in parallel they would measure the
# machine's contention, not the overlay). Both always run; the exit says if either failed.
test: setup
	$(VENV)/python -m pytest -q -m "not lab" -n 2; fast=$$?; \
	$(VENV)/python -m pytest -q -m lab; lab=$$?; \
	exit $$(( fast || lab ))

test-fast: setup
	$(VENV)/python -m pytest -q -m "not lab" -n 2

bench: setup
	$(VENV)/ilnp-bench

clean:
	rm -rf .venv *.egg-info .pytest_cache .hypothesis
