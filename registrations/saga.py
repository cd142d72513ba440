"""A provision is a sequence of steps with undo actions.

If a step fails for good, the completed steps are undone in reverse and the caller learns which step failed.
Independent steps run concurrently, so a provision costs the depth of its dependency graph in round trips,
not the number of calls. Every undo action is idempotent: "already gone" counts as done.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

from . import deadline
from .adapters.errors import UpstreamError

log = logging.getLogger("registrations.saga")
T = TypeVar("T")


# ------------------------------------------------------------------- Entra's and ARM's replication lag
# Which failures mean "not visible yet" right after a write, matched on status and error code (never text).
def lag_404(exc: UpstreamError) -> bool:
    """An object this request just created or changed is not found yet."""
    return exc.status == 404


def lag_new_application(exc: UpstreamError) -> bool:
    """POST /servicePrincipals right after the app was created: Graph has not replicated the app yet."""
    return exc.status == 404 or (exc.status == 400 and "NoBackingApplicationObject" in exc.details)


def lag_new_principal(exc: UpstreamError) -> bool:
    """A grant naming a service principal this request just created, before Graph or ARM can see it."""
    return exc.status == 404 or (exc.status == 400 and exc.code in (
        "Request_BadRequest", "Request_ResourceNotFound", "PrincipalNotFound"))


def lag_new_reader(exc: UpstreamError) -> bool:
    """A secret reader's role assignment while ARM cannot see the principal yet (often one just made)."""
    return exc.status in (400, 404) and exc.code in ("PrincipalNotFound", None)


class StepFailed(Exception):
    def __init__(self, step: str, cause: BaseException) -> None:
        super().__init__(f"step {step!r} failed")
        self.step = step
        self.cause = cause
        # Filled in by Saga.abort, for the problem that reports the failure.
        self.undone: list[str] = []
        self.failed_undo: list[str] = []


class Saga:
    def __init__(self, executor: Executor | None = None) -> None:
        self._executor = executor
        self._undo: list[tuple[str, Callable[[], Any]]] = []
        self.undone: list[str] = []  # steps whose undo ran
        self.failed_undo: list[str] = []  # steps whose undo failed: left for the sweep

    def run(self, step: str, action: Callable[[], T], undo: Callable[[T], Any] | None = None) -> T:
        try:
            result = action()
        except Exception as exc:
            raise StepFailed(step, exc) from exc
        self._record(step, result, undo)
        return result

    def run_parallel(self, *steps: tuple[str, Callable[[], Any], Callable[[Any], Any] | None]) -> list[Any]:
        """Run independent steps at once. All are waited for, so each success gets its undo recorded even
        when a sibling fails."""
        assert self._executor is not None, "run_parallel needs an executor"
        futures = [(name, deadline.submit(self._executor, action), undo) for name, action, undo in steps]
        results, failure = [], None
        for name, future, undo in futures:
            try:
                result = future.result()
            except StepFailed as exc:  # a step inside a chain failed: report that step
                failure = failure or exc
                results.append(None)
                continue
            except Exception as exc:
                failure = failure or StepFailed(name, exc)
                results.append(None)
                continue
            self._record(name, result, undo)
            results.append(result)
        if failure:
            raise failure
        return results

    def _record(self, step: str, result: Any, undo: Callable[[Any], Any] | None) -> None:
        if undo is not None:
            self._undo.append((step, lambda: undo(result)))

    def abort(self, failure: StepFailed) -> StepFailed:
        """Roll back after `failure` and record on it what was undone and what was left."""
        self.rollback()
        failure.undone, failure.failed_undo = list(self.undone), list(self.failed_undo)
        return failure

    def rollback(self) -> list[str]:
        """Undo completed steps in reverse. Returns the steps whose undo failed (left for the sweep)."""
        for step, undo in reversed(self._undo):
            try:
                undo()
            except Exception:  # keep undoing the rest; report what is left
                log.warning("undo of step %s failed", step, exc_info=True)
                self.failed_undo.append(step)
            else:
                self.undone.append(step)
        self._undo.clear()
        return self.failed_undo


def ensure(
    create: Callable[[], T],
    find: Callable[[], T | None],
    *,
    lagging: Callable[[UpstreamError], bool],
    deadline: float,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Create an object with a call that is not idempotent (a POST the pipeline does not retry).

    A transient failure may have been answered after Graph committed the write (a gateway lost the answer),
    so before trying again look for the object; a conflict means it exists; replication lag is waited out.
    """
    delay = 0.25
    while True:
        try:
            return create()
        except UpstreamError as exc:
            wait = exc.retry_after
            if exc.not_done:
                pass  # throttled: nothing was made, just wait
            elif exc.transient or exc.status == 409:
                found = find()
                if found is not None:
                    return found
                if exc.status == 409:
                    raise
            elif not lagging(exc):
                raise
            if time.monotonic() + (wait or delay) > deadline:
                raise
        sleep(wait or delay * random.uniform(0.8, 1.2))
        delay = min(delay * 2, 8.0)


def eventually(
    action: Callable[[], T],
    *,
    lagging: Callable[[UpstreamError], bool],
    deadline: float,
    sleep: Callable[[float], None] = time.sleep,
    first_delay: float = 0.25,
) -> T:
    """Retry an action while Entra's replication lag explains its failure.

    Microsoft's advice for reads right after writes is exponential backoff (1, 2, 4, 8, 16 s); this starts
    smaller because most lag is sub-second, adds jitter so concurrent provisions do not retry in step, and
    stops at the deadline, which ends before the host's timeout.
    """
    delay = first_delay
    while True:
        try:
            return action()
        except UpstreamError as exc:
            if not lagging(exc) or time.monotonic() + delay > deadline:
                raise
        sleep(delay * random.uniform(0.8, 1.2))
        delay = min(delay * 2, 8.0)
