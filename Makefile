# `make demo` and `make test` are all a newcomer needs: both create .venv and install first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: setup demo test test-fast reliability bench plan plugins clean browser

$(STAMP): pyproject.toml constraints.txt examples/plugin-acme/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# constraints.txt pins the versions the suite was last run with (torch 2.13.0 CPU build)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	# the example third-party plugin package, installed as a third party would be: the suite
	# checks the plugin author's path on it (tests/e2e/test_acme_plugin.py)
	$(PY) -m pip install --quiet -c constraints.txt -e examples/plugin-acme
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(PY) -m framework run +recipe=quickstart

test: setup browser
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not e2e"

# the full reliability suite (make test runs its short variant): figures in .framework/reliability/
reliability: setup
	FRAMEWORK_RELIABILITY=full $(PY) -m pytest -q tests/reliability

bench: setup
	$(PY) benchmarks/quickstart_stages.py
	$(PY) benchmarks/serving_latency.py
	$(PY) benchmarks/ingress_handler.py
	$(PY) benchmarks/shadow_overhead.py
	$(PY) benchmarks/strategy_decisions.py
	$(PY) benchmarks/bandit_regret.py
	$(PY) benchmarks/quantization.py
	$(PY) benchmarks/pruning.py
	$(PY) benchmarks/distillation.py
	$(PY) benchmarks/privacy.py
	$(PY) benchmarks/tune_efficiency.py
	$(PY) benchmarks/labels.py
	$(PY) benchmarks/batch.py
	$(PY) benchmarks/monitoring.py
	$(PY) benchmarks/closed_loop.py

# a headless Chromium for the test that opens the monitoring report (tests/e2e: skipped without one)
# (best effort: without root or Debian's archive the test skips and says why)
browser:
	@command -v chromium-headless-shell >/dev/null || command -v chromium >/dev/null || \
		(apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium-headless-shell) || \
		echo "make browser: no headless Chromium installed; the report test will skip"

plan: setup
	$(PY) -m framework plan +recipe=quickstart

plugins: setup
	$(PY) -m framework plugins

clean:
	rm -rf runs .framework .pytest_cache
