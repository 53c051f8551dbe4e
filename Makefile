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

test: setup
	$(VENV)/python -m pytest -q

test-fast: setup
	$(VENV)/python -m pytest -q -m "not lab"

bench: setup
	$(VENV)/ilnp-bench

clean:
	rm -rf .venv *.egg-info .pytest_cache .hypothesis
