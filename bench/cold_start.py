"""Cold start: what the Functions worker pays to import function_app, next to azure.functions alone, and the
time to the first responses of a freshly started host.

`python -m bench.cold_start [--runs N]`
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from bench._harness import PY, ROOT, HostProcess, Result, admin_token, local_tenant, median, standalone

GOAL = 1.3


def _import_seconds(module: str) -> float:
    started = time.perf_counter()
    subprocess.run([PY, "-c", f"import {module}"], cwd=ROOT, check=True, env={"PYTHONDONTWRITEBYTECODE": "1"})
    return time.perf_counter() - started


def import_ratio(runs: int) -> Result:
    _import_seconds("function_app")  # bytecode and page cache warm for both, as on a worker that restarts
    _import_seconds("azure.functions")
    ours, base = [], []
    for _ in range(runs):  # alternating, so drift on a noisy machine hits both alike
        ours.append(_import_seconds("function_app"))
        base.append(_import_seconds("azure.functions"))
    ratio = median(ours) / median(base)
    return Result("cold start import", f"function_app {median(ours) * 1000:.0f} ms / azure.functions "
                  f"{median(base) * 1000:.0f} ms = {ratio:.2f} (median of {runs})", f"<= {GOAL}", ratio <= GOAL)


def first_response() -> Result:
    import httpx

    with local_tenant() as lt:
        token = admin_token(lt)
        with HostProcess(lt) as host:
            headers = {"x-functions-key": host.function_key}
            with httpx.Client(base_url=host.api, trust_env=False, timeout=60, headers=headers) as client:
                health = client.get("/health")
                t_health = time.perf_counter() - host.started
                listing = client.get("/registrations", headers={"Authorization": f"Bearer {token}"})
                t_list = time.perf_counter() - host.started
    ok = health.status_code == 200 and listing.status_code == 200
    return Result("cold start first response",
                  f"from spawn: listening {host.ready_after * 1000:.0f} ms, first GET /api/health "
                  f"{t_health * 1000:.0f} ms ({health.status_code}), first authenticated GET /api/registrations "
                  f"{t_list * 1000:.0f} ms ({listing.status_code})" + ("" if ok else " UNEXPECTED STATUS"))


def run(options: argparse.Namespace) -> list[Result]:
    return [import_ratio(options.runs), first_response()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", type=int, default=11, help="alternating import runs of each (>= 9)")


if __name__ == "__main__":
    sys.exit(standalone(__doc__, add_arguments, run))
