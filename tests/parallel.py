"""Parallel workers (pytest-xdist) that keep the session-wide checks meaningful.

The suite waits far more than it computes (HTTP round trips to the local tenant, its injected latency and
replication delays, Orthanc, subprocesses), so `make test` runs it on a few workers even on two cores. Each
worker is a pytest session of its own: its own local tenant, Orthanc and host (the session fixtures), and its
own tests.support.CAPTURED, RESPONSES and ACQUIRED_TOKENS.

A session-wide check (marked after_everything_else) looks at what every other test of its session did. So
under xdist it runs on EVERY worker, after every other test that worker ran: each worker's copy checks the
tests that worker ran, and together they check every test of the run. `LastOnEveryWorker` is xdist's load
scheduling with that one change: the marked tests are held back until no other test is left to hand out, then
each worker is sent all of them, behind what it already has queued.

How the controller learns which tests are marked: it does not collect (xdist's workers do), so each worker
writes the node ids of the marked tests it collected to a file the controller named (workerinput), and the
scheduler reads that file once every worker has collected (the collections are checked to be identical)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
from xdist.scheduler import LoadScheduling

WORKERINPUT_KEY = "after_everything_else_file"
_STASH = pytest.StashKey[Path]()


def marked_file(config: pytest.Config) -> Path:
    """Controller side: the file the workers write the marked node ids to (one per run)."""
    if _STASH not in config.stash:
        handle, name = tempfile.mkstemp(prefix="pytest-after-everything-else-", suffix=".json")
        os.close(handle)
        config.stash[_STASH] = Path(name)
    return config.stash[_STASH]


def forget_marked_file(config: pytest.Config) -> None:
    if _STASH in config.stash:
        config.stash[_STASH].unlink(missing_ok=True)


def tell_controller(config: pytest.Config, nodeids: list[str]) -> None:
    """Worker side: write the marked node ids where the controller reads them (atomically: every worker
    writes the same list)."""
    target = getattr(config, "workerinput", {}).get(WORKERINPUT_KEY)
    if not target:
        return
    handle, name = tempfile.mkstemp(dir=os.path.dirname(target), suffix=".tmp")
    with os.fdopen(handle, "w") as out:
        json.dump(nodeids, out)
    os.replace(name, target)


class LastOnEveryWorker(LoadScheduling):
    """Load scheduling; the tests named in `marked` run on every worker, after everything else it ran."""

    def __init__(self, config: pytest.Config, log, marked: Path) -> None:
        super().__init__(config, log)
        self._marked_file = marked
        self._last: list[int] = []
        self._given: set = set()

    @property
    def tests_finished(self) -> bool:
        # Until every worker has been given the marked tests, the run is not over.
        return super().tests_finished and all(node in self._given for node in self.nodes)

    def schedule(self) -> None:
        if self.collection is None and self.collection_is_completed and self._check_nodes_have_same_collection():
            collection = next(iter(self.node2collection.values()))
            marked = set(json.loads(self._marked_file.read_text() or "[]"))
            self._last = [i for i, nodeid in enumerate(collection) if nodeid in marked]
            # LoadScheduling.schedule sets `pending` to every index and hands out chunks of it: the marked
            # tests are taken out of every list it builds from the collection, so it never sees them.
            self.collection = collection
            self.pending[:] = [i for i in range(len(collection)) if i not in set(self._last)]
            if not self.pending:
                self._hand_out_last()
                return
            self._first_chunks()
            return
        super().schedule()

    def _first_chunks(self) -> None:
        """LoadScheduling.schedule's first distribution, over the unmarked tests."""
        if self.maxschedchunk is None:
            self.maxschedchunk = len(self.pending)
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
        """No unmarked test is left to hand out: every worker gets the marked ones behind its queue, then
        shuts down once it has run them."""
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
