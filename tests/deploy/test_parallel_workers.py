"""`make test` runs the suite on parallel workers (tests/parallel.py): every worker runs the session-wide checks
(after_everything_else), each after every other test it ran, the tests marked slow start first, and a one_worker
group runs on one worker. Checked on a small suite of its own, run the way make runs the real one, with this
suite's conftest hooks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

CONFTEST = '''
import json, os
import pytest
from tests.parallel import (pytest_collection_modifyitems, pytest_configure, pytest_configure_node,
                            pytest_unconfigure, pytest_xdist_make_scheduler)

@pytest.fixture(autouse=True)
def _record(request):
    """Each worker appends the tests it runs, in order, to its own file."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    with open(os.path.join(os.environ["RAN_DIR"], worker + ".jsonl"), "a") as out:
        out.write(json.dumps(request.node.nodeid) + "\\n")
    yield
'''

TESTS = '''
import time
import pytest

@pytest.mark.parametrize("n", range(30))
def test_quick(n):
    time.sleep(0.01 * (n % 3))

@pytest.mark.slow(1)
def test_long_one():
    time.sleep(0.3)

@pytest.mark.slow(2)
def test_longer_one():
    time.sleep(0.5)

@pytest.mark.one_worker("pair")
def test_pair_quick():
    pass

@pytest.mark.one_worker("pair")
@pytest.mark.slow(3)
def test_pair_slow():  # its mark alone deals it: the scheduler reads the seconds, it does not time them
    pass
'''

CHECKS = '''
import pytest

pytestmark = pytest.mark.after_everything_else

def test_session_wide():
    pass
'''


@pytest.mark.slow(12)
def test_every_worker_runs_the_session_wide_checks_after_all_else_and_slow_tests_and_groups_first(tmp_path):
    suite, ran = tmp_path / "suite", tmp_path / "ran"
    suite.mkdir()
    ran.mkdir()
    (suite / "conftest.py").write_text(CONFTEST)
    # The check's file sorts first: it still runs last on each worker.
    (suite / "test_a_checks.py").write_text(CHECKS)
    (suite / "test_b_work.py").write_text(TESTS)
    env = {**os.environ, "RAN_DIR": str(ran), "PYTHONPATH": str(ROOT)}
    # The plugins the project's pyproject.toml turns off (the -c below reads no configuration).
    unused = ["-p", "no:schemathesis", "-p", "no:hypothesispytest", "-p", "no:anyio"]
    done = subprocess.run([sys.executable, "-m", "pytest", "-n", "3", "-q", "-p", "no:cacheprovider", *unused,
                           "--rootdir", str(suite), "-c", os.devnull, str(suite)],
                          cwd=suite, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    runs = {path.stem: [json.loads(line) for line in path.read_text().splitlines()] for path in ran.glob("*.jsonl")}
    assert sorted(runs) == ["gw0", "gw1", "gw2"], runs
    check = "test_a_checks.py::test_session_wide"
    work = {nodeid for order in runs.values() for nodeid in order if nodeid != check}
    assert len(work) == 34 and sum(len(order) for order in runs.values()) == 34 + 3
    for worker, order in runs.items():
        assert order[-1] == check and order.count(check) == 1, (worker, order)
    # Longest first (the one_worker pair counts its slow seconds), each to a different worker, before anything
    # else that worker runs; the pair together on one worker, its slow test first.
    firsts = {order[0] for order in runs.values()}
    assert firsts == {"test_b_work.py::test_pair_slow", "test_b_work.py::test_longer_one",
                      "test_b_work.py::test_long_one"}, runs
    paired = [order for order in runs.values() if "test_b_work.py::test_pair_slow" in order]
    assert len(paired) == 1, runs
    assert paired[0][:2] == ["test_b_work.py::test_pair_slow", "test_b_work.py::test_pair_quick"], runs
