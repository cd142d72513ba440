# Two entry points for a newcomer: `make run` and `make test`. Both install what they need into .venv.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test bench reset clean orthanc azurite browser

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

run: $(STAMP) orthanc azurite
	$(PY) -m devhost run

# The suite mostly waits (HTTP round trips, injected latency and replication delays, Orthanc, subprocesses), so
# it runs on parallel workers even on two cores (tests/parallel.py); WORKERS=0 runs it in this one process.
WORKERS ?= 4
test: $(STAMP) orthanc azurite browser
	$(PY) -m pytest -n $(WORKERS) $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) -m bench

# The local tenant's state, CA and the host keys go; the virtual environment stays.
reset: $(STAMP)
	$(PY) -m devhost reset

clean:
	rm -rf $(VENV) .local .pytest_cache tools/azurite/node_modules
