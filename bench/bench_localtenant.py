"""The local tenant's own overhead per call next to the latency it injects.

Runs `python bench/bench_localtenant.py`; prints one line and exits non-zero when the goal is missed.
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import requests  # noqa: E402

from localtenant import LocalTenant  # noqa: E402

INJECTED_MS = 50
CALLS = 60
GOAL = 0.2


def _median_ms(session: requests.Session, url: str, headers: dict[str, str]) -> float:
    samples = []
    for _ in range(CALLS):
        started = time.perf_counter()
        session.get(url, headers=headers).raise_for_status()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def main() -> int:
    with LocalTenant.start() as lt:
        s = requests.Session()
        s.trust_env = False
        s.verify = lt.ca_file
        token = s.get(lt.identity_endpoint, params={"api-version": "2019-08-01",
                                                   "resource": "https://graph.microsoft.com"},
                      headers={"X-IDENTITY-HEADER": lt.identity_header}).json()["access_token"]
        url = f"{lt.graph_endpoint}/v1.0/servicePrincipals(appId='00000003-0000-0000-c000-000000000000')"
        headers = {"Authorization": f"Bearer {token}"}
        _median_ms(s, url, headers)  # warm up connections and caches
        base = _median_ms(s, url, headers)
        lt.set_faults({"latencyMs": INJECTED_MS})
        slowed = _median_ms(s, url, headers)
    overhead = max(base, slowed - INJECTED_MS)
    ratio = overhead / INJECTED_MS
    verdict = "PASS" if ratio <= GOAL else "FAIL"
    print(f"localtenant overhead: median {overhead:.2f} ms per call vs {INJECTED_MS} ms injected "
          f"(ratio {ratio:.3f}) {verdict}")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
