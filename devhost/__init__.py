"""A small local host for the project's Azure Functions app, standing in for `func start`.

It serves the same `func.FunctionApp` object over HTTP on loopback: routes and methods from the function
metadata, the route prefix from host.json, auth levels with host keys, and the admin API for non-HTTP
functions. `python -m devhost serve` and `python -m devhost run` are the command-line entry points.
"""

from devhost._app import build_app, read_route_prefix
from devhost._keys import HostKeys
from devhost._server import LoopbackOnlyError, RunningServer, serve, start_in_thread
from devhost._settings import apply_settings, load_settings, write_settings

__all__ = [
    "HostKeys",
    "LoopbackOnlyError",
    "RunningServer",
    "apply_settings",
    "build_app",
    "load_settings",
    "read_route_prefix",
    "serve",
    "start_in_thread",
    "write_settings",
]
