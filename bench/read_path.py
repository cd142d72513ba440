"""Read path: GET /api/registrations/{name}/config/json under concurrent clients, and where a request's time goes.

Under load (no injected latency): p50, p99, requests/s, the function app's CPU per request and the remote
calls per request. Then, one request at a time: the median request next to the median round trip of the same
remote call made directly (what the request waits for outside our process), which gives the share of a
request spent in our code (host, auth, rendering, the SDK pipeline) versus in remote calls.

`python -m bench.read_path [--read-seconds 20] [--read-concurrency 32]`
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections import Counter

import requests

from bench._harness import (
    BODIES,
    CallLog,
    HostProcess,
    Result,
    admin_token,
    api_client,
    local_tenant,
    median,
    percentile,
    run_threads,
    standalone,
)

NAMES = [f"rp-{i}" for i in range(8)]
PROBES = 200


def _load(client, seconds: float, concurrency: int) -> tuple[list[float], Counter[int], float]:
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def worker(i: int) -> None:
        mine, codes, n = [], Counter(), i
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            response = client.get(f"/registrations/{NAMES[n % len(NAMES)]}/config/json")
            mine.append(time.perf_counter() - started)
            codes[response.status_code] += 1
            n += 1
        with lock:
            latencies.extend(mine)
            statuses.update(codes)

    started = time.monotonic()
    run_threads(concurrency, worker)
    return latencies, statuses, time.monotonic() - started


def _remote_round_trip(lt, unique_name: str) -> float:
    """The median round trip of the Graph call the read path makes, made directly from here."""
    session = requests.Session()
    session.trust_env = False
    session.verify = lt.ca_file
    token = session.get(lt.identity_endpoint, headers={"X-IDENTITY-HEADER": lt.identity_header},
                        params={"api-version": "2019-08-01", "resource": "https://graph.microsoft.com"}
                        ).json()["access_token"]
    url = f"{lt.graph_endpoint}/v1.0/applications(uniqueName='{unique_name}')"
    headers = {"Authorization": f"Bearer {token}"}
    samples = []
    for _ in range(PROBES + 10):
        started = time.perf_counter()
        session.get(url, headers=headers).raise_for_status()
        samples.append(time.perf_counter() - started)
    return median(samples[10:])


def run(options: argparse.Namespace) -> list[Result]:
    with local_tenant() as lt, HostProcess(lt) as host, api_client(host, admin_token(lt)) as client:
        for name in NAMES:
            client.post("/registrations", json=BODIES["service/managed"](name)).raise_for_status()
        _load(client, 2, options.concurrency)  # warm up connections on both sides
        log = CallLog(lt)
        start, cpu0 = time.monotonic(), host.cpu_seconds()
        latencies, statuses, elapsed = _load(client, options.seconds, options.concurrency)
        cpu = host.cpu_seconds() - cpu0
        remote_per_request = Counter(c[2] for c in log.since(start))
        log.close()
        served = len(latencies)
        sequential = []
        for i in range(PROBES):
            started = time.perf_counter()
            client.get(f"/registrations/{NAMES[i % len(NAMES)]}/config/json").raise_for_status()
            sequential.append(time.perf_counter() - started)
        remote = _remote_round_trip(lt, f"dicomreg-{NAMES[0]}")
    one = median(sequential)
    calls = sum(remote_per_request.values()) / served
    remote_share = min(1.0, calls * remote / one)
    per_op = {op: round(n / served, 2) for op, n in sorted(remote_per_request.items())}
    ok = statuses[200] == served
    return [
        Result(f"read path under {options.concurrency} clients",
               f"p50 {percentile(latencies, 0.5) * 1000:.1f} ms, p99 {percentile(latencies, 0.99) * 1000:.1f} ms, "
               f"{served / elapsed:.0f} req/s over {elapsed:.0f} s ({dict(statuses)}"
               f"{'' if ok else ' UNEXPECTED STATUS'}); function app CPU {cpu / served * 1000:.2f} ms/request; "
               f"remote calls per request {calls:.2f} {per_op}"),
        Result("read path time split",
               f"one request at a time: {one * 1000:.2f} ms per request, of which remote calls "
               f"{calls:.2f} x {remote * 1000:.2f} ms = {remote_share:.0%}, our process {1 - remote_share:.0%} "
               f"(host, token validation, SDK pipeline, rendering)"),
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--read-seconds", dest="seconds", type=float, default=20.0, help="length of the load")
    parser.add_argument("--read-concurrency", dest="concurrency", type=int, default=32, help="client threads")


if __name__ == "__main__":
    sys.exit(standalone(__doc__, add_arguments, run))
