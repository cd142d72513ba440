"""Critical path: with every remote call delayed by a fixed latency L, one provision per type should cost
about its dependency graph's depth in round trips, not its number of calls.

Every remote call means Graph, ARM, Key Vault, the DICOM service and the registry's Table Storage alike (the
function app reaches Azurite through a loopback proxy, TableLatency, so a round trip to the registry costs
what one to Graph does and the depth counts it), and each is answered L after it arrived, the stand-in's own
work inside (`latencyIncludesHandling`), as a real service's is inside its round trip: what a create adds to
its round trips is then the function app's own work, the goal's subject. What the stand-ins cost per call is
the `localtenant overhead` line's.

For each type: the wall time of POST /api/registrations (median of --repeats), the sequential depth measured
from the times of the calls, the depth read off registrations/service.py and provision.py, and the total number
of remote calls (what a naive sequential script would wait for). Then a service client's verification, whose
QIDO-RS search at the DICOM service (issue 13) may add at most one round trip to the path without it, and whose
wall time is at most 1.10 x its round trips; and the Graph writes of one service registration.

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
    TableLatency,
    admin_token,
    api_client,
    local_tenant,
    median,
    sequential_depth,
    standalone,
)

GOAL = 1.05  # issue 10: the create path adds at most 5 % to its round trips
DATA_PLANE_HOPS = 1  # issue 13: the data-plane check costs at most one more round trip
VERIFICATION_GOAL = 1.10  # issue 25: a verification adds at most 10 % to its round trips
# Graph writes a service registration cannot do without (issue 25): the application, its service principal and
# its password (Graph takes none at creation: addPassword makes it). The registry, not the application's tags,
# records that it is ready, so no fourth write labels it. A Graph write is a call whose operation creates,
# adds, updates, sets or removes.
MIN_GRAPH_WRITES = 3
_WRITE_VERBS = ("create", "add", "update", "upsert", "set", "patch", "remove", "delete")
# Read off registrations/service.py and provision.py, as (round trips in all, of them the registry's):
#   1. what the identity owns (the quota's count; the tenant's credential policy is kept per worker, read by the
#      first create only) ‖ the registry row inserted and counted (one transaction: the worker knows the
#      requester's counter after its first create)
#   2. create the application
#   3. service principal ‖ addPassword ‖ the application's ids recorded ‖ (a resource) its identifier URI
#   4. the principal's grant ‖ the password into Key Vault (a resource has neither; a public client no secret)
#   5. the registry row recorded ready (registry)
# A client of the open-source server finds its resource in 1. by two reads in turn: the resource registration's
# row, then its service principal by the appId the row recorded (never by a tag), so it takes one more.
EXPECTED_DEPTH = {"service/managed": (5, 1), "service/oss": (6, 1), "confidential": (5, 1), "public": (5, 1),
                  "resource": (4, 1)}


def _provision(client, log: CallLog, body: dict, latency: float) -> tuple[float, int, int, int, int]:
    """(wall time, depth, depth of the calls that are not the registry's, calls, calls to the registry)"""
    start = time.monotonic()
    started = time.perf_counter()
    response = client.post("/registrations", json=body)
    wall = time.perf_counter() - started
    if response.status_code != 201:
        raise RuntimeError(f"{body['type']} {body['name']}: {response.status_code} {response.text[:300]}")
    calls = log.since(start)
    elsewhere = [c[0] for c in calls if c[1] != "table"]
    depth = sequential_depth([c[0] for c in calls], latency)
    return wall, depth, sequential_depth(elsewhere, latency), len(calls), len(calls) - len(elsewhere)


def _verification(client, log: CallLog, latency: float, latency_ms: int, repeats: int) -> list[Result]:
    """GET …/verification of a managed service client (median of `repeats`): its hops with the DICOM search
    and without it (the same calls minus the DICOM service's), and its wall time against the hops."""
    samples = []
    for _ in range(repeats):
        start = time.monotonic()
        started = time.perf_counter()
        response = client.get("/registrations/cp-service-managed-0/verification")
        wall = time.perf_counter() - started
        if response.status_code != 200 or response.json().get("dataPlane") != "ok":
            raise RuntimeError(f"verification: {response.status_code} {response.text[:300]}")
        calls = log.since(start)
        samples.append((wall, sequential_depth([c[0] for c in calls], latency),
                        sequential_depth([c[0] for c in calls if c[1] != "dicom"], latency)))
    wall = median([s[0] for s in samples])
    with_search, without = max(s[1] for s in samples), max(s[2] for s in samples)
    extra, ratio = with_search - without, wall / (with_search * latency)
    return [Result("verification with the data-plane check",
                   f"{with_search} hops with the QIDO-RS search, {without} without: +{extra}",
                   f"<= +{DATA_PLANE_HOPS} hop", extra <= DATA_PLANE_HOPS),
            Result("verification time", f"{wall * 1000:.0f} ms (median of {repeats}) = {ratio:.2f} x "
                   f"({with_search} hops x {latency_ms} ms)", f"<= {VERIFICATION_GOAL:.2f}", ratio <= VERIFICATION_GOAL)]


def _graph_writes(client, log: CallLog) -> Result:
    """The Graph writes of one service registration's create, by operation."""
    start = time.monotonic()
    client.post("/registrations", json=BODIES["service/managed"]("cp-writes")).raise_for_status()
    writes = sorted(c[2] for c in log.since(start)
                    if c[1] == "graph" and c[2].split(".", 1)[1].startswith(_WRITE_VERBS))
    return Result("graph writes per service registration", f"{len(writes)} ({', '.join(writes)})",
                  f"= {MIN_GRAPH_WRITES}: the application, its principal, its password",
                  len(writes) == MIN_GRAPH_WRITES)


def run(options: argparse.Namespace) -> list[Result]:
    latency = options.latency_ms / 1000
    results = []
    with local_tenant() as lt, TableLatency(lt) as table, HostProcess(lt, settings=table.settings()) as host, \
            api_client(host, admin_token(lt)) as client:
        log = CallLog(lt)
        # Warm up: managed identity tokens, JWKS, the first-party DICOM principal, the requester's counter and
        # connections are kept after the first provision, as on a warm worker.
        for name in ("warm-a", "warm-b"):
            client.post("/registrations", json=BODIES["service/managed"](name)).raise_for_status()
        # ... and so are the verification's (its token client, the DICOM client's session).
        client.get("/registrations/warm-a/verification").raise_for_status()
        results.append(_graph_writes(client, log))
        lt.set_faults({"latencyMs": options.latency_ms, "latencyIncludesHandling": True})
        table.delay = True
        measured: dict[str, list[tuple[float, int, int, int, int]]] = {kind: [] for kind in EXPECTED_DEPTH}
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
        results += _verification(client, log, latency, options.latency_ms, options.repeats)
        log.close()
        for kind, samples in measured.items():
            wall = median([s[0] for s in samples])
            depth, elsewhere = max(s[1] for s in samples), max(s[2] for s in samples)
            calls, on_table = max(s[3] for s in samples), max(s[4] for s in samples)
            expected, registry = EXPECTED_DEPTH[kind]
            ratio = wall / (depth * latency)
            note = "" if (depth, elsewhere) == (expected, expected - registry) else \
                f", code says {expected} of which {registry} the registry's"
            results.append(Result(
                f"critical path {kind}",
                f"{wall * 1000:.0f} ms / ({depth} hops x {options.latency_ms} ms) = {ratio:.3f}; "
                f"{elsewhere} hops "
                f"without the registry's{note}; naive sequential: {calls} calls ({on_table} to the registry) = "
                f"{calls * options.latency_ms} ms", f"<= {GOAL}, and at most the code's hops",
                ratio <= GOAL and depth <= expected))
    return results

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--latency-ms", type=int, default=100, help="injected latency per remote call")
    parser.add_argument("--repeats", type=int, default=3, help="provisions per type (the median is kept)")


if __name__ == "__main__":
    sys.exit(standalone(__doc__, add_arguments, run))
