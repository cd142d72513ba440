"""Failure is normal: one time budget per request, two ways of retrying within it, and sagas (steps with undo).

Logic Apps gives up on a call after about 120 s and the Functions host after 230 s; a create that is still
retrying after that only makes a second attempt collide with it. So a request (or the sweep, per
registration) sets a budget once, and everything that waits reads it here: the REST pipeline's timeout, the
retries below and the saga's parallel steps (``submit`` carries it to worker threads). Nothing passes a
deadline around.

Two retry helpers, on top of the transport retries that azure-core's policy gives every idempotent call
(adapters/_rest.py): ``eventually`` repeats an idempotent action while Entra's or ARM's replication lag
explains its failure; ``create_once`` makes something with a call that is not idempotent, looking for what
an ambiguous failure may have made before it tries again. Which failures are lag is the adapters' word
(adapters/errors.py), matched on status and error code, never on text.

Sleeping is one seam (``sleeping``), so tests can stand time still without patching.

A provision is a saga: a sequence of steps with undo actions. If a step fails for good, the completed steps
are undone in reverse and the caller learns which step failed. Independent steps run concurrently, so a
provision costs the depth of its dependency graph in round trips, not the number of calls. Every undo action
is idempotent: "already gone" counts as done.
"""

from __future__ import annotations

import contextvars
import logging
import random
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from contextlib import AbstractContextManager, contextmanager
from typing import Any, TypeVar

from .adapters.errors import UpstreamError, conflict

log = logging.getLogger("registrations.saga")
T = TypeVar("T")
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("deadline", default=None)
_sleep: contextvars.ContextVar[Callable[[float], None]] = contextvars.ContextVar("sleep", default=time.sleep)

# Microsoft's advice for reads right after writes is exponential backoff (1, 2, 4, 8, 16 s); most lag is
# sub-second, so the first wait is shorter. Jitter keeps concurrent provisions from retrying in step.
FIRST_DELAY, MAX_DELAY = 0.25, 8.0
# Undoing a saga gets a budget of its own: the request's may be spent by the time a step fails for good.
ROLLBACK_SECONDS = 30.0


@contextmanager
def scoped(var: contextvars.ContextVar[Any], value: Any) -> Iterator[None]:
    """`var` is `value` within the block (and in the workers `submit` starts from it)."""
    token = var.set(value)
    try:
        yield
    finally:
        var.reset(token)


# ------------------------------------------------------------------------------------------ the budget
def budget(seconds: float) -> AbstractContextManager[None]:
    """Within the block, everything must finish `seconds` from now."""
    return scoped(_deadline, time.monotonic() + seconds)


def remaining() -> float | None:
    """Seconds left in the current budget, or None outside one."""
    deadline = _deadline.get()
    return None if deadline is None else deadline - time.monotonic()


def submit(executor: Executor, action: Callable[..., T], *args: Any) -> Future[T]:
    """Executor.submit that carries the caller's budget (its context variables) to the worker thread."""
    return executor.submit(contextvars.copy_context().run, action, *args)


def map_concurrently(executor: Executor, action: Callable[[Any], T], items: list[Any]) -> list[T]:
    """Executor.map with the caller's budget carried to every worker."""
    return [future.result() for future in [submit(executor, action, item) for item in items]]


# ------------------------------------------------------------------------------------------- sleeping
def sleeping(replacement: Callable[[float], None]) -> AbstractContextManager[None]:
    """Within the block (and the worker threads it submits to), waits call `replacement`, not time.sleep."""
    return scoped(_sleep, replacement)


def sleep(seconds: float) -> None:
    """The one place this code waits (retries here and azure-core's, through adapters/_rest.py)."""
    _sleep.get()(seconds)


def pause(seconds: float) -> bool:
    """Wait `seconds`, unless that would outlast the budget: then return False at once, without waiting."""
    left = remaining()
    if left is None or seconds > left:
        return False
    sleep(seconds)
    return True


def _budgeted() -> None:
    """The retry helpers run only within a budget: without one a retry would have no end. Checked on entry,
    so a caller that forgot its budget fails at once in tests, not on the first failure in production."""
    if remaining() is None:
        raise RuntimeError("a retry helper was called outside a time budget (saga.budget)")


def _backoff() -> Iterator[float]:
    delay = FIRST_DELAY
    while True:
        yield delay * random.uniform(0.8, 1.2)
        delay = min(delay * 2, MAX_DELAY)


# -------------------------------------------------------------------------------------------- retries
def eventually(action: Callable[[], T], *, lagging: Callable[[UpstreamError], bool]) -> T:
    """Repeat an idempotent action while replication lag explains its failure, or the service did nothing
    (a concurrency violation), within the budget."""
    _budgeted()
    for delay in _backoff():
        try:
            return action()
        except UpstreamError as exc:
            if not (lagging(exc) or exc.not_done) or not pause(exc.retry_after or delay):
                raise
    raise AssertionError("unreachable")  # _backoff never ends


def create_once(create: Callable[[], T], find: Callable[[], T | None], *,
                lagging: Callable[[UpstreamError], bool], look_first: bool = False,
                exists: Callable[[UpstreamError], bool] = conflict) -> T:
    """Make an object with a call that is not idempotent (one the pipeline does not retry).

    An ambiguous failure (a gateway error, a lost answer) may come after the service committed the write, so
    before trying again `find` looks for what it made (and may clean up what cannot be used: a password whose
    secret text was lost). A failure that `exists` recognises (by default a 409) means it is there: `find`
    returns it, or the failure is raised. Throttling (429) made nothing and just waits; replication lag is
    waited out, except that a 400 lag could also explain is looked for first: Graph answers a duplicate (an
    app role assignment that already exists) with the same Request_BadRequest as a reference it cannot see
    yet, and only the message tells them apart. With `look_first` (resuming an earlier attempt) it looks
    before the first try too.
    """
    _budgeted()
    if look_first and (found := find()) is not None:
        return found
    for delay in _backoff():
        try:
            return create()
        except UpstreamError as exc:
            if exc.not_done:
                pass
            elif exc.transient or exists(exc):
                if (found := _look(find, lagging)) is not None:
                    return found
                if exists(exc):
                    raise
            elif not lagging(exc):
                raise
            elif exc.status == 400 and (found := _look(find, lagging)) is not None:
                return found
            if not pause(exc.retry_after or delay):
                raise
    raise AssertionError("unreachable")  # _backoff never ends


def _look(find: Callable[[], T | None], lagging: Callable[[UpstreamError], bool]) -> T | None:
    """`find`, where a lookup that lag explains (what it reads has not replicated yet) finds nothing yet."""
    try:
        return find()
    except UpstreamError as exc:
        if lagging(exc):
            return None
        raise


# ---------------------------------------------------------------------------------------------- sagas
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
        futures = [(name, submit(self._executor, action), undo) for name, action, undo in steps]
        results: list[Any] = []
        failure: StepFailed | None = None
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
        """Undo completed steps in reverse, within a budget of their own. Returns the steps whose undo failed
        (left for the sweep)."""
        with budget(ROLLBACK_SECONDS):
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
