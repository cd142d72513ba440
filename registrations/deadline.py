"""One time budget per request, seen by every remote call it makes, including those on worker threads.

Logic Apps gives up on a call after about 120 s and the Functions host after 230 s; a create that is still
retrying after that only makes a second attempt collide with it. So a request sets a budget once and every
remote call it makes stops retrying when the budget runs out.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("deadline", default=None)


@contextmanager
def budget(seconds: float) -> Iterator[float]:
    """Within the block, remote calls must finish `seconds` from now. Yields the deadline (monotonic)."""
    deadline = time.monotonic() + seconds
    token = _deadline.set(deadline)
    try:
        yield deadline
    finally:
        _deadline.reset(token)


def remaining() -> float | None:
    """Seconds left in the current budget, or None outside one."""
    deadline = _deadline.get()
    return None if deadline is None else deadline - time.monotonic()


def expires(default_seconds: float) -> float:
    """The current budget's deadline (monotonic); one `default_seconds` from now outside a budget."""
    return _deadline.get() or time.monotonic() + default_seconds


def submit(executor: Executor, action: Callable[..., T], *args: Any) -> Future[T]:
    """Executor.submit that carries the caller's budget (context variables) to the worker thread."""
    return executor.submit(contextvars.copy_context().run, action, *args)


def map_concurrently(executor: Executor, action: Callable[[Any], T], items: list[Any]) -> list[T]:
    """Executor.map with the caller's budget carried to every worker."""
    return [future.result() for future in [submit(executor, action, item) for item in items]]
