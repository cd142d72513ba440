"""Critical path: with every remote call delayed by a fixed latency L, one provision per type should cost
about its dependency graph's depth in round trips, not its number of calls.

For each type: the wall time of POST /api/registrations (median of --repeats), the sequential depth measured
from the times of the tenant's calls, the depth read off registrations/service.py and provision.py, and the total number of
remote calls (what a naive sequential script would wait for). Then a service client's verification, whose
QIDO-RS search at the DICOM service (issue 13) may add at most one round trip to the path without it.

`python -m bench.critical_path [--latency-ms 100] [--repeats 3]`
"""

from __future__ import annotations

import argparse
import sys
import time

from bench._harness import (
    BODIES,
    OSS_RESOURCE,
    CallLog,
    HostProcess,
    Result,
    admin_token,
    api_client,
    local_tenant,
    median,
    sequential_depth,
    standalone,
)

GOAL = 1.05  # issue 10: the create path adds at most 5 % to its round trips
DATA_PLANE_HOPS = 1  # issue 13: the data-plane check costs at most one more round trip
# Read off registrations/service.py and provision.py: (GET app ‖ owned objects, for the quota ‖ resource lookup),
# create, (service principal → grant ‖ addPassword → Key Vault), mark ready. A resource has no lookup and no grant; a public client no secret.
EXPECTED_DEPTH = {"service/managed": 5, "service/oss": 5, "confidential": 5, "public": 5, "resource": 4}


def _provision(client, log: CallLog, body: dict, latency: float) -> tuple[float, int, int]:
    start = time.monotonic()
    started = time.perf_counter()
    response = client.post("/registrations", json=body)
    wall = time.perf_counter() - started
    if response.status_code != 201:
        raise RuntimeError(f"{body['type']} {body['name']}: {response.status_code} {response.text[:300]}")
    calls = log.since(start)
    return wall, sequential_depth([c[0] for c in calls], latency), len(calls)


def _verification(client, log: CallLog, latency: float, latency_ms: int) -> Result:
    """GET …/verification of a managed service client: its hops with the DICOM search and without it (the
    same calls minus the DICOM service's), and its wall time against the hops."""
    start = time.monotonic()
    started = time.perf_counter()
    response = client.get("/registrations/cp-service-managed-0/verification")
    wall = time.perf_counter() - started
    if response.status_code != 200 or response.json().get("dataPlane") != "ok":
        raise RuntimeError(f"verification: {response.status_code} {response.text[:300]}")
    calls = log.since(start)
    with_search = sequential_depth([c[0] for c in calls], latency)
    without = sequential_depth([c[0] for c in calls if c[1] != "dicom"], latency)
    extra = with_search - without
    return Result("verification with the data-plane check",
                  f"{with_search} hops with the QIDO-RS search, {without} without: +{extra}; "
                  f"{wall * 1000:.0f} ms = {wall / (with_search * latency):.2f} x ({with_search} x {latency_ms} ms)",
                  f"<= +{DATA_PLANE_HOPS} hop", extra <= DATA_PLANE_HOPS)


def run(options: argparse.Namespace) -> list[Result]:
    latency = options.latency_ms / 1000
    results = []
    with local_tenant() as lt, HostProcess(lt) as host, api_client(host, admin_token(lt)) as client:
        log = CallLog(lt)
        # Warm up: managed identity tokens, JWKS, the first-party DICOM principal and connections are
        # cached after the first provision, as on a warm worker.
        for name in ("warm-a", "warm-b"):
            client.post("/registrations", json=BODIES["service/managed"](name)).raise_for_status()
        lt.set_faults({"latencyMs": options.latency_ms})
        measured: dict[str, list[tuple[float, int, int]]] = {kind: [] for kind in EXPECTED_DEPTH}
        for i in range(options.repeats):
            for kind in ("resource", "service/managed", "service/oss", "confidential", "public"):
                if kind == "resource":
                    if i:  # the OSS target names one resource registration: remove it and time it again
                        # (its client from the last round first: a resource still in use is not deleted)
                        client.delete(f"/registrations/cp-service-oss-{i - 1}").raise_for_status()
                        client.delete(f"/registrations/{OSS_RESOURCE}").raise_for_status()
                    body = BODIES[kind](OSS_RESOURCE)
                else:
                    body = BODIES[kind](f"cp-{kind.replace('/', '-')}-{i}")
                measured[kind].append(_provision(client, log, body, latency))
        results.append(_verification(client, log, latency, options.latency_ms))
        log.close()
        for kind, samples in measured.items():
            wall = median([s[0] for s in samples])
            depth = max(s[1] for s in samples)
            calls = max(s[2] for s in samples)
            ratio = wall / (depth * latency)
            note = "" if depth == EXPECTED_DEPTH[kind] else f", code says {EXPECTED_DEPTH[kind]}"
            results.append(Result(
                f"critical path {kind}",
                f"{wall * 1000:.0f} ms / ({depth} hops{note} x {options.latency_ms} ms) = {ratio:.2f}; "
                f"naive sequential: {calls} calls = {calls * options.latency_ms} ms",
                f"<= {GOAL}", ratio <= GOAL))
    return results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--latency-ms", type=int, default=100, help="injected latency per remote call")
    parser.add_argument("--repeats", type=int, default=3, help="provisions per type (the median is kept)")


if __name__ == "__main__":
    sys.exit(standalone(__doc__, add_arguments, run))
