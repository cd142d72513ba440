"""Parallel workers (pytest-xdist) that keep the session-wide checks meaningful.

The suite waits far more than it computes (HTTP round trips to the local tenant, its injected latency and
replication delays, Orthanc, subprocesses), so `make test` runs it on a few workers even on two cores. Each
worker is a pytest session of its own: its own local tenant, Orthanc and host (the session fixtures), and its
own tests.support.CAPTURED, RESPONSES and ACQUIRED_TOKENS.

`Scheduler` is xdist's load scheduling with three changes:
- A session-wide check (marked after_everything_else) looks at what every other test of its session did. So
  it runs on EVERY worker, after every other test that worker ran: each worker's copy checks the tests that
  worker ran, and together they check every test of the run. The marked tests are held back until no other
  test is left to hand out; then each worker is sent all of them, behind what it already has queued.
- A test marked slow(seconds) is handed out first, longest first, each to the worker with the fewest slow
  seconds so far: the run does not end waiting for a long test that started last.
- Tests marked one_worker(name) with the same name go to one worker together, as one of those slow tests
  (their slow seconds added up): they share a fixture that is dear to make (a browser and the tenant it signs
  in to), which each worker that ran one of them would make again.

How the controller learns the marks: it does not collect (xdist's workers do), so each worker writes them to a
file the controller named (workerinput), and the scheduler reads that file once every worker has collected
(the collections are checked to be identical)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from xdist.scheduler import LoadScheduling

WORKERINPUT_KEY = "test_marks_file"
_STASH = pytest.StashKey[Path]()


def marks_file(config: pytest.Config) -> Path:
    """Controller side: the file the workers write the marks to (one per run)."""
    if _STASH not in config.stash:
        handle, name = tempfile.mkstemp(prefix="pytest-marks-", suffix=".json")
        os.close(handle)
        config.stash[_STASH] = Path(name)
    return config.stash[_STASH]


def forget_marks_file(config: pytest.Config) -> None:
    if _STASH in config.stash:
        config.stash[_STASH].unlink(missing_ok=True)


def tell_controller(config: pytest.Config, *, last: list[str], slow: dict[str, float],
                    groups: dict[str, str]) -> None:
    """Worker side: write the node ids of the session-wide checks, the slow tests' seconds and the one_worker
    groups where the controller reads them (atomically: every worker writes the same)."""
    target = getattr(config, "workerinput", {}).get(WORKERINPUT_KEY)
    if not target:
        return
    handle, name = tempfile.mkstemp(dir=os.path.dirname(target), suffix=".tmp")
    with os.fdopen(handle, "w") as out:
        json.dump({"last": last, "slow": slow, "groups": groups}, out)
    os.replace(name, target)


class Scheduler(LoadScheduling):
    def __init__(self, config: pytest.Config, log, marks: Path) -> None:
        super().__init__(config, log)
        self._marks_file = marks
        self._last: list[int] = []
        self._given: set = set()

    @property
    def tests_finished(self) -> bool:
        # Until every worker has been given the session-wide checks, the run is not over.
        return super().tests_finished and all(node in self._given for node in self.nodes)

    def schedule(self) -> None:
        if self.collection is None and self.collection_is_completed and self._check_nodes_have_same_collection():
            collection = next(iter(self.node2collection.values()))
            text = self._marks_file.read_text()
            marks = json.loads(text) if text else {"last": [], "slow": {}, "groups": {}}
            last, slow, groups = set(marks["last"]), marks["slow"], marks["groups"]
            self._last = [i for i, nodeid in enumerate(collection) if nodeid in last]
            # LoadScheduling.schedule sets `pending` to every index and hands out chunks of it: this does the
            # same over the tests that are neither session-wide checks, nor slow, nor in a one_worker group,
            # after dealing those: a slow test alone, a group together (its slow tests first, longest first).
            self.collection = collection
            units: dict[str, list[int]] = {}
            for i, nodeid in enumerate(collection):
                if nodeid in groups:
                    units.setdefault("group " + groups[nodeid], []).append(i)
                elif nodeid in slow and nodeid not in last:
                    units[nodeid] = [i]
            seconds = {key: sum(slow.get(collection[i], 0.0) for i in unit) for key, unit in units.items()}
            order = sorted(units, key=lambda key: -seconds[key])
            dealt = [sorted(units[key], key=lambda i: -slow.get(collection[i], 0.0)) for key in order]
            taken = set(self._last).union(*dealt)
            self.pending[:] = [i for i in range(len(collection)) if i not in taken]
            self._deal(dealt, [seconds[key] for key in order])
            self._first_chunks()
            return
        super().schedule()

    def _deal(self, units: list[list[int]], seconds: list[float]) -> None:
        """Longest first, each to the worker with the fewest slow seconds so far."""
        load = {node: 0.0 for node in self.nodes}
        for unit, took in zip(units, seconds):
            node = min(load, key=lambda n: load[n])
            load[node] += took
            self.node2pending[node].extend(unit)
            node.send_runtest_some(unit)

    def _first_chunks(self) -> None:
        """LoadScheduling.schedule's first distribution, over what `pending` holds."""
        if self.maxschedchunk is None:
            self.maxschedchunk = len(self.collection or [])
        if len(self.pending) < 2 * len(self.nodes):
            nodes = list(self.nodes)
            for i in range(len(self.pending)):
                self._send_tests(nodes[i % len(nodes)], 1)
        else:
            chunk = max(min(len(self.pending) // len(self.node2pending) // 4, self.maxschedchunk), 2)
            for node in self.nodes:
                self._send_tests(node, chunk)
        if not self.pending:
            self._hand_out_last()

    def check_schedule(self, node, duration: float = 0) -> None:
        if node.shutting_down:
            return
        if self.pending:
            super().check_schedule(node, duration)
        else:
            self._hand_out_last()

    def _hand_out_last(self) -> None:
        """No other test is left to hand out: every worker gets the session-wide checks behind its queue,
        then shuts down once it has run them."""
        for node in self.nodes:
            if node not in self._given and not node.shutting_down:
                self._given.add(node)
                if self._last:
                    self.node2pending[node].extend(self._last)
                    node.send_runtest_some(list(self._last))
                node.shutdown()

    def remove_node(self, node):
        self._given.discard(node)
        return super().remove_node(node)


# ------------------------------------------------------------------ the hooks (tests/conftest.py imports them)
# Session-wide checks look at what every other test of the session did (the log lines and response bodies in
# tests.support.CAPTURED and RESPONSES), so they must run last. They say so with this marker rather than by a
# file name that sorts last: pytest_collection_modifyitems below moves every marked test after the unmarked
# ones, keeping each group's own order. That holds for any selection of files, in any order on the command
# line, and after any plugin that reorders tests (the hook runs last: trylast).
AFTER_EVERYTHING_ELSE = "after_everything_else"
ONE_WORKER = "one_worker"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{AFTER_EVERYTHING_ELSE}: a session-wide check; runs after every other selected test "
                   "(tests/parallel.py moves it)")
    config.addinivalue_line(
        "markers", f"{ONE_WORKER}(name): tests with the same name run on one parallel worker, together "
                   "(they share a fixture that is dear to make; tests/parallel.py)")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    last = [item for item in items if item.get_closest_marker(AFTER_EVERYTHING_ELSE)]
    if last:
        items[:] = [item for item in items if not item.get_closest_marker(AFTER_EVERYTHING_ELSE)] + last
    slow = {item.nodeid: slow_seconds(item) for item in items if item.get_closest_marker("slow")}
    groups = {item.nodeid: group_name(item) for item in items
              if item.get_closest_marker(ONE_WORKER) and not item.get_closest_marker(AFTER_EVERYTHING_ELSE)}
    tell_controller(config, last=[item.nodeid for item in last], slow=slow, groups=groups)


def _only_argument(item: pytest.Item, mark: str) -> Any:
    """The one positional argument of the test's `mark` (None when it has other arguments)."""
    marker = item.get_closest_marker(mark)
    return marker.args[0] if len(marker.args) == 1 and not marker.kwargs else None


def slow_seconds(item: pytest.Item) -> float:
    seconds = _only_argument(item, "slow")
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise pytest.UsageError(f"{item.nodeid}: slow takes the seconds the test runs: @pytest.mark.slow(20)")
    return float(seconds)


def group_name(item: pytest.Item) -> str:
    name = _only_argument(item, ONE_WORKER)
    if not isinstance(name, str) or not name:
        raise pytest.UsageError(f"{item.nodeid}: one_worker takes the group's name: "
                                '@pytest.mark.one_worker("browser")')
    return name


# Under pytest-xdist (`make test` runs the suite on parallel workers) each worker is a session of its own, so the
# marked tests run on every worker, after everything else that worker ran; tests marked slow start first
# (the Scheduler above says how).
@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    node.workerinput[WORKERINPUT_KEY] = str(marks_file(node.config))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    if config.getvalue("dist") != "load":
        raise pytest.UsageError(f"--dist {config.getvalue('dist')} would run the {AFTER_EVERYTHING_ELSE} checks "
                                "once, beside other tests: use the default (load) distribution")
    return Scheduler(config, log, marks_file(config))


def pytest_unconfigure(config: pytest.Config) -> None:
    forget_marks_file(config)
