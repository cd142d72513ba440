"""Soak: mixed create / read / rotate / delete at moderate concurrency with faults injected, for a bounded
time, loopback only. The function app's memory must stay flat after warm-up, and at the end every
registration the run made is either gone or complete.

Faults: a fixed latency on every remote call, a Graph token bucket that answers some 429s, and every
--fault-every seconds a single 503 on the next call of one operation (in turn: addPassword, Key Vault set,
role assignment, service principal, application update). Rotation (POST /registrations/{name}/credentials)
is tried once and skipped for the rest of the run when the API answers 404 or 405.

`python -m bench.soak [--soak-seconds 600] [--soak-concurrency 8]`
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from collections import Counter

from bench._harness import (BODIES, CallLog, HostProcess, Result, admin_token, api_client, audit, lift_object_quota,
                            local_tenant, recorded, standalone)

GOAL_MB_PER_MIN = 1.0
SAMPLE_SECONDS = 2.0
LIVE_PER_WORKER = 6
ONE_OFF_FAILURES = ["graph.addPassword", "keyvault.setSecret", "arm.createRoleAssignment",
                    "graph.createServicePrincipal", "graph.updateApplication"]
BASE_FAULTS = {"latencyMs": 20, "throttle": {"ratePerSecond": 40, "burst": 20, "services": ["graph"]}}


def slope_mb_per_min(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB) samples, in MB per minute."""
    n = len(samples)
    if n < 2:
        return float("nan")
    mt = sum(t for t, _ in samples) / n
    mm = sum(m for _, m in samples) / n
    var = sum((t - mt) ** 2 for t, _ in samples)
    return 60 * sum((t - mt) * (m - mm) for t, m in samples) / var if var else float("nan")


class Mix:
    """What the workers do, and what they saw."""

    def __init__(self, client, stop_at: float) -> None:
        self.client, self.stop_at = client, stop_at
        self.lock = threading.Lock()
        self.outcomes: Counter[tuple[str, int]] = Counter()
        self.created: set[str] = set()
        self.rotate = True

    def worker(self, i: int) -> None:
        rng = random.Random(i)
        live: list[str] = []
        secretless: set[str] = set()
        serial = 0
        while time.monotonic() < self.stop_at:
            roll = rng.random()
            if len(live) < 2 or (roll < 0.3 and len(live) < LIVE_PER_WORKER):
                serial += 1
                name = f"soak-{i}-{serial}"
                kind = rng.choice(["service/managed", "confidential", "public"])
                with self.lock:
                    self.created.add(name)
                if self._do("create", "post", "/registrations", json=BODIES[kind](name)) in (200, 201):
                    live.append(name)
                    if kind == "public":
                        secretless.add(name)
            elif roll < 0.85 or not live:
                self._do("read", "get", f"/registrations/{rng.choice(live)}/config/json")
            elif roll < 0.9 and self.rotate and set(live) - secretless:
                name = rng.choice(sorted(set(live) - secretless))
                status = self._do("rotate", "post", f"/registrations/{name}/credentials")
                if status in (404, 405):
                    self.rotate = False  # the API has no rotation yet
            else:
                name = live.pop(rng.randrange(len(live)))
                if self._do("delete", "delete", f"/registrations/{name}") not in (200, 204, 404):
                    live.append(name)

    def _do(self, action: str, method: str, path: str, **kwargs) -> int:
        try:
            status = getattr(self.client, method)(path, **kwargs).status_code
        except Exception:  # a timeout or a dropped connection is an outcome too
            status = 0
        with self.lock:
            self.outcomes[(action, status)] += 1
        return status


def run(options: argparse.Namespace) -> list[Result]:
    seconds = options.soak_seconds
    warm_up = min(120.0, seconds / 4)
    samples: list[tuple[float, float]] = []
    with local_tenant() as lt, HostProcess(lt, settings=lift_object_quota(lt)) as host, \
            api_client(host, admin_token(lt)) as client:
        lt.set_faults(BASE_FAULTS)
        log = CallLog(lt)
        start = time.monotonic()
        mix = Mix(client, start + seconds)
        threads = [threading.Thread(target=mix.worker, args=(i,), daemon=True) for i in range(options.concurrency)]
        for t in threads:
            t.start()
        next_fault = 0
        while any(t.is_alive() for t in threads):
            now = time.monotonic() - start
            samples.append((now, host.rss_mb()))
            if now >= next_fault * options.fault_every:
                operation = ONE_OFF_FAILURES[next_fault % len(ONE_OFF_FAILURES)]
                lt.set_faults({**BASE_FAULTS, "failures": [{"operation": operation, "nth": 1, "status": 503,
                                                            "times": 1}]})
                next_fault += 1
            time.sleep(SAMPLE_SECONDS)
        lt.set_faults({})
        injected = Counter(c[3] for c in log.since(start))
        log.close()
        report = audit(lt.state(), mix.created, records=recorded(lt))
        remaining = report["apps"]
    after = [(t, m) for t, m in samples if t >= warm_up]
    slope = slope_mb_per_min(after)
    requests = sum(mix.outcomes.values())
    outcomes = ", ".join(f"{a} {s}: {n}" for (a, s), n in sorted(mix.outcomes.items()))
    return [
        Result("soak memory slope",
               f"{slope:+.2f} MB/min after {warm_up:.0f} s warm-up (RSS {samples[0][1]:.0f} -> "
               f"{after[0][1] if after else float('nan'):.0f} -> {samples[-1][1]:.0f} MB over {seconds:.0f} s; "
               f"{requests} requests: {outcomes}; remote calls {sum(injected.values())}, injected 429s "
               f"{injected[429]}, 503s {injected[503]}; rotation {'tried' if mix.rotate else 'not available (skipped)'})",
               f"<= {GOAL_MB_PER_MIN} MB/min", slope <= GOAL_MB_PER_MIN),
        Result("soak orphans",
               f"{report['orphans']} orphans among {len(mix.created)} names created ({remaining} complete "
               f"registrations remain, {len(report['duplicates'])} duplicates; incomplete: "
               f"{report['incomplete'][:3]})",
               "= 0", report["orphans"] == 0 and not report["duplicates"]),
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--soak-seconds", type=float, default=600.0, help="length of the soak")
    parser.add_argument("--soak-concurrency", dest="concurrency", type=int, default=8, help="client threads")
    parser.add_argument("--fault-every", type=float, default=20.0, help="seconds between one-off 503s")


if __name__ == "__main__":
    sys.exit(standalone(__doc__, add_arguments, run))
