"""One uvicorn server per origin, all on one event loop in one background thread, on sockets we bind
ourselves (port 0 gives ephemeral ports) and only ever on a loopback address."""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import select
import selectors
import socket
import subprocess
import threading
import time

import uvicorn
from starlette.applications import Starlette


class _QuietShutdown(logging.Filter):
    """Idle keep-alive connections outlive a test's last request; their forced close is not an error."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "timeout graceful shutdown exceeded" not in record.getMessage()


logging.getLogger("uvicorn.error").addFilter(_QuietShutdown())


# select() can only watch descriptors below FD_SETSIZE (1024 with glibc).
FD_SETSIZE = 1024


class PreciseEpollSelector(selectors.EpollSelector):
    """epoll_wait counts whole milliseconds and Python rounds a timeout up, so a timer due in 99.3 ms waits
    100: the injected latency's sleep ends up to 1 ms late whenever the loop went to sleep between two
    events, on top of the latency asked for. select() takes microseconds: wait on the epoll descriptor
    itself with it (it is readable once any registered socket is ready), then collect the events at once.
    Timers still never fire early."""

    def select(self, timeout: float | None = None) -> list:
        fd = self._selector.fileno()
        if timeout is not None and timeout > 0 and fd < FD_SETSIZE:
            select.select([fd], [], [], timeout)
            timeout = 0
        return super().select(timeout)


def _new_loop() -> asyncio.AbstractEventLoop:
    return asyncio.SelectorEventLoop(PreciseEpollSelector())


def free_port() -> int:
    """A loopback port nobody listens on now (for a child process that binds it itself)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def end_process(process: "subprocess.Popen | None") -> None:
    """Stop a child process (Orthanc, Azurite): terminate, then kill what does not stop in 10 s."""
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def require_loopback(host: str) -> None:
    try:
        ok = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"the local tenant binds to loopback addresses only, not {host!r}")


def bind(host: str, port: int) -> socket.socket:
    require_loopback(host)
    # proto=IPPROTO_TCP matters: asyncio only disables Nagle (TCP_NODELAY) on accepted sockets whose proto
    # says TCP, and without it a keep-alive response waits ~40 ms for the client's delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


class Servers:
    def __init__(self) -> None:
        self._servers: list[tuple[uvicorn.Server, socket.socket]] = []
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def add(self, app: Starlette, sock: socket.socket, *, certfile: str | None, keyfile: str | None) -> None:
        # ws="none": no emulated service speaks WebSocket, and uvicorn would import a WebSocket stack for it.
        config = uvicorn.Config(app, ssl_certfile=certfile, ssl_keyfile=keyfile, log_level="warning",
                                lifespan="off", access_log=False, timeout_graceful_shutdown=0.2, ws="none")
        self._servers.append((uvicorn.Server(config), sock))

    def start(self, timeout: float = 15.0) -> None:
        async def serve_all() -> None:
            await asyncio.gather(*(server.serve(sockets=[sock]) for server, sock in self._servers))

        def run() -> None:
            try:
                with asyncio.Runner(loop_factory=_new_loop) as runner:
                    runner.run(serve_all())
            except BaseException as e:  # reported to the starting thread
                self._error = e

        self._thread = threading.Thread(target=run, name="localtenant", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not all(server.started for server, _ in self._servers):
            if self._error is not None or not self._thread.is_alive():
                raise RuntimeError(f"local tenant failed to start: {self._error!r}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError("local tenant did not start in time")
            time.sleep(0.01)

    def stop(self) -> None:
        for server, _ in self._servers:
            server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        for _, sock in self._servers:
            sock.close()
