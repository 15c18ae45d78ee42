# flad: the two commands a new user needs are `make demo` and `make test`.
# `make test PYTHON=/path/to/python3.13` keeps a venv of its own per interpreter
PYTHON ?= python3
ifeq ($(PYTHON),python3)
VENV   ?= .venv
else
VENV   ?= .venv-$(notdir $(PYTHON))
endif
BIN    := $(VENV)/bin

.PHONY: test lint venv clean demo faults bench test-paramiko-oldest

$(BIN)/flad: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(BIN)/flad

venv: $(BIN)/flad

test: venv
	$(BIN)/pytest -q

# the remote and service tests on the oldest paramiko pyproject allows (make test has the newest)
PARAMIKO_OLDEST ?= 3.4.1
test-paramiko-oldest:
	$(PYTHON) -m venv .venv-paramiko-oldest
	.venv-paramiko-oldest/bin/pip install --quiet --upgrade pip
	.venv-paramiko-oldest/bin/pip install --quiet -e '.[test]' 'paramiko==$(PARAMIKO_OLDEST)'
	.venv-paramiko-oldest/bin/pytest -q tests/test_remote_compat.py tests/test_remote_sftp.py \
		tests/test_remote_wire.py tests/test_service.py tests/test_batches.py

# the crash, network and hostile-input suites in full; prints the scoreboard at the end
faults: venv
	FLAD_FAULTS_FULL=1 $(BIN)/pytest -q tests/faults

lint: venv
	$(BIN)/pip install --quiet -e '.[test,dev]'
	$(BIN)/ruff check flad tests
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

demo: venv
	$(BIN)/python tools/demo.py

# flad against OpenSSH's own sftp on this machine; writes bench/results/<time>.json
# (`make bench BENCH_ARGS="--content dmfa"`: DmfA files, and the check against lxml)
BENCH_ARGS ?=
bench: venv
	$(BIN)/python bench/run.py $(BENCH_ARGS)
	$(BIN)/python bench/wan.py $(WAN_ARGS)
