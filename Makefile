# Two entry points for a newcomer: `make run` and `make test`. Both install what they need into .venv.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test bench reset clean orthanc azurite browser north-star

$(STAMP): requirements.txt requirements-dev.txt constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt -c constraints.txt
	touch $(STAMP)

# Orthanc (Debian: orthanc, orthanc-dicomweb) serves the local DICOM services; installed when missing.
orthanc:
	./.ci/install-orthanc

# Azurite (npm, pinned by tools/azurite/package-lock.json) serves the registry's Table Storage locally.
azurite:
	./.ci/install-azurite

# Chromium, chromedriver and the OHIF viewer's prebuilt dist/ (npm) for tests/browser; installed when missing.
browser:
	./.ci/install-browser

# make run PORT=7171 (the host), BASE_PORT=47500 (the tenant: BASE_PORT+1 … +7), BARE=1 (a bare tenant that
# setup prepares first, as an operator would).
run: $(STAMP) orthanc azurite
	$(PY) -m devhost run $(if $(PORT),--port $(PORT)) $(if $(BASE_PORT),--base-port $(BASE_PORT)) $(if $(BARE),--bare)

# The suite mostly waits (HTTP round trips, injected latency and replication delays, Orthanc, subprocesses), so
# it runs on parallel workers even on two cores (tests/parallel.py); WORKERS=0 runs it in this one process.
WORKERS ?= 4
# Bytecode is cached even where the environment says not to (PYTHONDONTWRITEBYTECODE): the suite starts some
# eighty Python processes (hosts, the tenant's CLI, setup, pytest), and each would compile the project again.
test: $(STAMP) orthanc azurite browser
	env -u PYTHONDONTWRITEBYTECODE $(PY) -m pytest -n $(WORKERS) $(PYTEST_ARGS)

# The self-service path end to end from an empty local tenant (a test in make test too), with its figures.
north-star: $(STAMP) orthanc azurite
	$(PY) -m pytest tests/e2e/test_north_star.py -q -p no:cacheprovider

bench: $(STAMP)
	$(PY) -m bench

# The local tenant's state, CA and the host keys go; the virtual environment stays.
reset: $(STAMP)
	$(PY) -m devhost reset

clean:
	rm -rf $(VENV) .local .pytest_cache tools/azurite/node_modules
