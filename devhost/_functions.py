"""What the host needs to know about each function of a `func.FunctionApp`, and how to call one.

Only the public indexing surface of azure-functions is used (`get_functions`, `get_trigger`,
`get_dict_repr`, `get_user_function`), the same metadata the real worker reports to the host at start.
"""

from __future__ import annotations

import enum
import inspect
import uuid
from dataclasses import dataclass
from typing import Any, Callable

import azure.functions as func
from starlette.concurrency import run_in_threadpool

HTTP_TRIGGER = "httptrigger"
ALL_METHODS = None


@dataclass(frozen=True)
class FunctionEntry:
    """One function as indexed from the app: its trigger's binding as plain values, and the callable."""

    name: str
    trigger_type: str
    trigger: dict[str, Any]
    user_function: Callable[..., Any]

    @property
    def arg_name(self) -> str:
        return self.trigger["name"]

    @property
    def is_http(self) -> bool:
        return self.trigger_type.lower() == HTTP_TRIGGER

    @property
    def route(self) -> str:
        # The Functions host routes a function without an explicit route by its name.
        return self.trigger.get("route") or self.name

    @property
    def methods(self) -> frozenset[str] | None:
        methods = self.trigger.get("methods")
        return frozenset(m.upper() for m in methods) if methods else ALL_METHODS

    def auth_level(self, default: str) -> str:
        return str(self.trigger.get("authLevel") or default).lower()

    def describe(self) -> dict[str, Any]:
        """The shape `GET /admin/functions` lists: name, trigger type and the trigger's own settings."""
        settings = {k: v for k, v in self.trigger.items() if k not in ("direction", "name", "type")}
        return {"name": self.name, "trigger": self.trigger_type, **settings}


class FunctionIndexError(ValueError):
    """The app declares something the worker in Azure would refuse to load."""


def index_functions(function_app: func.FunctionApp) -> list[FunctionEntry]:
    entries = []
    for function in function_app.get_functions():
        trigger = _plain(function.get_trigger().get_dict_repr())
        entry = FunctionEntry(
            name=function.get_function_name(),
            trigger_type=trigger["type"],
            trigger=trigger,
            user_function=function.get_user_function(),
        )
        # The Azure worker refuses to load a function whose trigger names a parameter it does not have
        # (`@app.route` names it `req` unless told otherwise); failing here says so at start, not per call.
        if entry.arg_name not in inspect.signature(entry.user_function).parameters:
            raise FunctionIndexError(
                f"function {entry.name!r}: its trigger binds {entry.arg_name!r}, which is not a parameter"
            )
        entries.append(entry)
    return entries


def _plain(value: Any) -> Any:
    """The binding dicts carry enums (AuthLevel, HttpMethod, BindingDirection); JSON wants their values."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class LocalTimerRequest(func.TimerRequest):
    """What a timer function receives when invoked by hand: never past due, as on the real admin API."""

    @property
    def past_due(self) -> bool:
        return False


class LocalContext(func.Context):
    """A minimal invocation context for functions that declare a `context` parameter."""

    def __init__(self, function_name: str) -> None:
        self._invocation_id = str(uuid.uuid4())
        self._function_name = function_name

    invocation_id = property(lambda self: self._invocation_id)
    function_name = property(lambda self: self._function_name)
    function_directory = property(lambda self: "")
    thread_local_storage = property(lambda self: None)
    trace_context = property(lambda self: None)
    retry_context = property(lambda self: None)


async def invoke(entry: FunctionEntry, trigger_value: Any) -> Any:
    """Call the user function: awaited when async, on the thread pool when sync (it may block on I/O)."""
    kwargs = {entry.arg_name: trigger_value}
    if "context" in inspect.signature(entry.user_function).parameters:
        kwargs["context"] = LocalContext(entry.name)
    if inspect.iscoroutinefunction(entry.user_function):
        return await entry.user_function(**kwargs)
    return await run_in_threadpool(entry.user_function, **kwargs)
