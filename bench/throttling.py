"""Throughput under throttling: many service-client provisions at once against a Graph 429 token bucket.

Every provision must succeed (201) with no duplicate and no orphan, and the Graph calls the bucket accepted
per second must reach 0.9 x its rate: the retry policy should keep the bucket busy without wasting it.

`python -m bench.throttling [--provisions 200] [--concurrency 16] [--rate 10] [--burst 10]`
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections import Counter

from bench._harness import (
    BODIES,
    CallLog,
    HostProcess,
    Result,
    admin_token,
    api_client,
    audit,
    lift_object_quota,
    local_tenant,
    median,
    recorded,
    run_threads,
    standalone,
)

GOAL = 0.9


def run(options: argparse.Namespace) -> list[Result]:
    names = [f"tp-{i:04d}" for i in range(options.provisions)]
    statuses: Counter[int] = Counter()
    errors: list[str] = []
    latencies: list[float] = []
    lock = threading.Lock()
    with local_tenant() as lt, HostProcess(lt, settings=lift_object_quota(lt)) as host, \
            api_client(host, admin_token(lt)) as client:
        client.post("/registrations", json=BODIES["service/managed"]("tp-warm-0")).raise_for_status()
        log = CallLog(lt)
        # What one warm provision needs from Graph when nothing is throttled: the useful work per provision.
        client.post("/registrations", json=BODIES["service/managed"]("tp-warm-1")).raise_for_status()
        needed = sum(1 for c in log.since(0) if c[1] == "graph")
        lt.set_faults({"throttle": {"ratePerSecond": options.rate, "burst": options.burst, "services": ["graph"]}})
        queue = iter(names)

        def worker(_: int) -> None:
            while True:
                with lock:
                    name = next(queue, None)
                if name is None:
                    return
                started = time.perf_counter()
                response = client.post("/registrations", json=BODIES["service/managed"](name))
                with lock:
                    latencies.append(time.perf_counter() - started)
                    statuses[response.status_code] += 1
                    if response.status_code != 201 and len(errors) < 3:
                        errors.append(f"{response.status_code} {response.text[:240]}")

        start = time.monotonic()
        run_threads(options.concurrency, worker)
        elapsed = time.monotonic() - start
        lt.set_faults({})
        calls = log.since(start)
        log.close()
        report = audit(lt.state(), set(names), records=recorded(lt))
    graph = [c for c in calls if c[1] == "graph"]
    accepted = sum(1 for c in graph if c[3] == 0)
    throttled = sum(1 for c in graph if c[3] == 429)
    ok_count = statuses[201]
    useful = ok_count * needed / elapsed
    ratio = useful / options.rate
    writes = Counter(c[2] for c in graph if c[3] == 0)
    results = [
        Result("throttling all succeed", f"{ok_count}/{options.provisions} answered 201 "
               f"({dict(sorted(statuses.items()))}){'; first errors: ' + ' | '.join(errors) if errors else ''}",
               f"= {options.provisions}", ok_count == options.provisions),
        Result("throttling duplicates and orphans",
               f"{len(report['duplicates'])} duplicate names, {report['orphans']} orphans "
               f"({len(report['incomplete'])} incomplete apps, {len(report['straySps'])} stray SPs, "
               f"{len(report['strayRoleAssignments'])} stray role assignments, "
               f"{len(report['straySecrets'])} stray secrets)",
               "= 0 and 0", not report["duplicates"] and report["orphans"] == 0),
        Result("throttling graph rate",
               f"{ok_count} provisions x {needed} Graph calls each in {elapsed:.1f} s = {useful:.2f} useful "
               f"calls/s vs bucket {options.rate:g}/s = {ratio:.2f} (the bucket accepted {accepted} calls = "
               f"{accepted / elapsed:.2f}/s, {accepted - ok_count * needed} of them wasted on failed or repeated "
               f"work; {throttled} answered 429; {ok_count / elapsed:.2f} provisions/s; latency p50 "
               f"{median(latencies):.1f} s, max {max(latencies):.1f} s; accepted per op {dict(sorted(writes.items()))})",
               f">= {GOAL}", ratio >= GOAL),
    ]
    return results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--provisions", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16, help="client threads")
    parser.add_argument("--rate", type=float, default=10.0, help="Graph token bucket: tokens per second")
    parser.add_argument("--burst", type=float, default=10.0, help="Graph token bucket: capacity")


if __name__ == "__main__":
    sys.exit(standalone(__doc__, add_arguments, run))
