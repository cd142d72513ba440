"""Registry scale: what a page of the list, a get and the expiring report cost in remote calls at 40 and at
400 registrations (the registry is read instead of Azure, so the same; a list page joins one read of what the
identity owns, 999 objects a page, so about 500 registrations), what a sweep of 400 takes at 50 ms per remote call (it
works through registrations a few at a time), and the Graph calls of one service create on a warm instance.

`python -m bench.registry_scale [--registrations 400] [--sweep-latency-ms 50]`
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench._harness import (
    BODIES,
    HostProcess,
    Result,
    admin_token,
    api_client,
    lift_object_quota,
    local_tenant,
    standalone,
)

AZURE = ("graph", "arm", "keyvault")
GRAPH_CREATE_WRITES = 3  # application, service principal, password: the minimum for a service client


def _azure_calls(lt: Any) -> dict[str, int]:
    return {op: n for op, n in lt.stats()["calls"].items() if op.split(".")[0] in AZURE}


def _cost(lt: Any, action) -> dict[str, int]:
    before = _azure_calls(lt)
    action()
    after = _azure_calls(lt)
    return {op: n - before.get(op, 0) for op, n in after.items() if n - before.get(op, 0)}


def _reads(lt: Any, client: Any, name: str) -> dict[str, int]:
    """Remote calls of one page of the list (100), one GET and the expiring report."""
    return {"list": sum(_cost(lt, lambda: client.get("/registrations", params={"top": 100}).raise_for_status()).values()),
            "get": sum(_cost(lt, lambda: client.get(f"/registrations/{name}").raise_for_status()).values()),
            "expiring": sum(_cost(lt, lambda: client.get("/reports/expiring",
                                                         params={"days": 730}).raise_for_status()).values())}


def _make(client: Any, names: list[str]) -> None:
    def one(name: str) -> None:
        client.post("/registrations", json=BODIES["service/managed"](name)).raise_for_status()

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, names))


def run(options: argparse.Namespace) -> list[Result]:
    results = []
    total = options.registrations
    with local_tenant() as lt:
        settings = lift_object_quota(lt)
        with HostProcess(lt, settings=settings) as host, api_client(host, admin_token(lt)) as client:
            _make(client, ["rs-warm"])
            create = _cost(lt, lambda: _make(client, ["rs-counted"]))
            graph = {op: n for op, n in create.items() if op.startswith("graph.")}
            writes = sum(n for op, n in graph.items() if not op.split(".")[1].startswith(("get", "list")))
            results.append(Result("registry: Graph calls per service create (warm)",
                                  f"{sum(graph.values())} calls, {writes} writes: {graph}",
                                  f"= {GRAPH_CREATE_WRITES} calls", sum(graph.values()) == GRAPH_CREATE_WRITES))
            small = total // 10
            _make(client, [f"rs-{i}" for i in range(small)])
            few = _reads(lt, client, "rs-0")
            _make(client, [f"rs-{i}" for i in range(small, total)])
            many = _reads(lt, client, "rs-0")
            for what in ("list", "get", "expiring"):
                results.append(Result(f"registry: {what} remote calls at {small} vs {total} registrations",
                                      f"{few[what]} vs {many[what]}", "equal (O(1))",
                                      few[what] == many[what]))
        results.append(_sweep(lt, total, options.sweep_latency_ms))
    return results


def _sweep(lt: Any, total: int, latency_ms: int) -> Result:
    """The sweep in this process (as the timer runs it), every remote call slowed to `latency_ms`."""
    from registrations import settings, sweep, wiring
    from tests.support import settings_override

    with settings_override(**lt.app_settings(), DIRECTORY_OBJECT_QUOTA="0"):
        built = wiring.build(settings.load())
        with wiring.use(built):
            built.service.owned_registrations()  # warm: tokens, connections
            lt.set_faults({"latencyMs": latency_ms})
            try:
                started = time.perf_counter()
                report = sweep.run(built.service)
                took = time.perf_counter() - started
            finally:
                lt.set_faults({})
    budget = total * latency_ms / 1000
    return Result(f"registry: sweep of {total} registrations at {latency_ms} ms per remote call",
                  f"{took:.1f} s ({len(report['errors'])} errors) vs {total} x {latency_ms} ms = {budget:.0f} s",
                  f"<= {budget:.0f} s", took <= budget and not report["errors"])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--registrations", type=int, default=400, help="registrations made for the measures")
    parser.add_argument("--sweep-latency-ms", type=int, default=50, help="injected latency during the sweep")


if __name__ == "__main__":
    sys.exit(standalone(__doc__, add_arguments, run))
