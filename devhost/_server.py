"""Running the host with uvicorn: loopback only, no uvicorn access log (it would log query strings)."""

from __future__ import annotations

import importlib
import ipaddress
import logging
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Mapping

import azure.functions as func
import uvicorn
from starlette.applications import Starlette

from devhost._app import DEFAULT_HOST_JSON, PROJECT_ROOT, build_app
from devhost._keys import HostKeys
from devhost._settings import apply_settings, load_settings

log = logging.getLogger("devhost")


class LoopbackOnlyError(ValueError):
    """The host holds keys and talks to a local tenant full of secrets; it is never reachable from outside."""


def ensure_loopback(host: str) -> None:
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise LoopbackOnlyError(
        f"devhost binds to loopback only (127.0.0.1, ::1 or localhost), not {host!r}; "
        "to expose the app, deploy it to Azure"
    )


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening-ready socket bound by us, so an ephemeral port (0) is known before serving starts."""
    ensure_loopback(host)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio only disables Nagle on accepted sockets of that protocol, and with
    # Nagle on, every keep-alive response waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    # A restart right after Ctrl-C must not fail on connections still in TIME_WAIT.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def socket_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def uvicorn_server(app: Starlette) -> uvicorn.Server:
    # log_config=None leaves logging to the caller, so uvicorn's records reach the root logger (and tests);
    # proxy_headers=False: nothing sits in front of a loopback host, so no X-Forwarded-* is trusted.
    # ws="none": the Functions host takes no WebSocket, and uvicorn would import a WebSocket stack for it.
    config = uvicorn.Config(app, log_config=None, access_log=False, proxy_headers=False, lifespan="off",
                            ws="none")
    # uvicorn still writes its access line (full URL, query string and all) whenever any handler is attached
    # to its logger, whatever access_log says; devhost's own access log replaces it, so it is switched off.
    logging.getLogger("uvicorn.access").disabled = True
    return uvicorn.Server(config)


class RunningServer:
    """uvicorn on a background thread; a context manager that stops it and waits for the thread."""

    def __init__(self, app: Starlette, sock: socket.socket) -> None:
        self.app = app
        self._socket = sock
        self._server = uvicorn_server(app)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="devhost", daemon=True
        )

    @property
    def url(self) -> str:
        return socket_url(self._socket)

    def start(self, timeout: float = 10.0) -> RunningServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the local Functions host did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_in_thread(app: Starlette, *, host: str = "127.0.0.1", port: int = 0) -> RunningServer:
    return RunningServer(app, bind_socket(host, port)).start()


def import_function_app(module_name: str = "function_app") -> func.FunctionApp:
    """The module-level `app`, imported only now that the settings are in the environment."""
    if str(PROJECT_ROOT) not in sys.path:
        sys.path.insert(0, str(PROJECT_ROOT))  # function_app.py sits at the root, as Azure expects
    return importlib.import_module(module_name).app


def serve(
    function_app: func.FunctionApp | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 7071,
    settings_path: Path | None = None,
    keys: HostKeys | Mapping[str, str] | None = None,
    host_json_path: Path = DEFAULT_HOST_JSON,
    module_name: str = "function_app",
) -> None:
    """Serve in the foreground until Ctrl-C. Settings are applied before function_app is imported."""
    sock = bind_socket(host, port)  # refuses a non-loopback host before anything is loaded
    if settings_path is not None:
        apply_settings(load_settings(settings_path))
    function_app = function_app or import_function_app(module_name)
    app = build_app(function_app, keys=keys, host_json_path=host_json_path)
    log.info("Functions host listening on %s (route prefix %r)", socket_url(sock), app.state.route_prefix)
    try:
        uvicorn_server(app).run(sockets=[sock])
    finally:
        sock.close()
