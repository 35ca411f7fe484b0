# Two commands on a fresh machine: `make demo` and `make test`. Both set up .venv first.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
PYTEST_ARGS ?=

.PHONY: demo test setup clean

setup: $(STAMP)

# torch first, pinned: its CPU wheel is on these machines; an unpinned torch would pull
# several GB of CUDA packages through deepspeed/lightning's requirements.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $@

demo: $(STAMP)
	$(VENV)/bin/flashdist fit --config configs/quickstart.yaml

test: $(STAMP)
	bash slurm/ensure-packages.sh
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf runs lightning_logs .pytest_cache
