"""What every benchmark shares: result lines, the local tenant, the function app hosted in its own process,
an admin token, and checks of the tenant's state (duplicates, orphans).

The function app runs in a subprocess (`python -m devhost serve`, the same host `make run` uses) so that its
memory can be read from /proc and it does not share a GIL with the tenant and the load generators.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


# ------------------------------------------------------------------------------------------ results
@dataclass
class Result:
    """One printed line: `NAME: figure (goal ...) PASS|FAIL`, `NAME: figure (report)` without a goal, or
    PENDING for a goal whose benchmark is not built yet."""

    name: str
    figure: str
    goal: str | None = None
    ok: bool | None = None

    @property
    def verdict(self) -> str:
        return "PENDING" if self.ok is None else ("PASS" if self.ok else "FAIL")

    def line(self) -> str:
        if self.goal is None:
            return f"{self.name}: {self.figure} (report)"
        return f"{self.name}: {self.figure} (goal {self.goal}) {self.verdict}"


def emit(results: list[Result]) -> int:
    """Print the lines of a benchmark run on its own; exit status 1 when a goal was missed."""
    for result in results:
        print(result.line(), flush=True)
    return 1 if any(r.ok is False for r in results) else 0


def standalone(doc: str | None, add_arguments: Callable[[Any], None], run: Callable[[Any], list[Result]]) -> int:
    """`python -m bench.X`: parse that benchmark's options, run it, print its lines."""
    import argparse

    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return emit(run(parser.parse_args()))


def percentile(samples: list[float], share: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def median(samples: list[float]) -> float:
    return statistics.median(samples) if samples else float("nan")


# ------------------------------------------------------------------------------------------- tenant
@contextmanager
def local_tenant(**faults: Any) -> Iterator[Any]:
    from localtenant import LocalTenant

    with LocalTenant.start(faults=faults or None) as lt:
        yield lt


def lift_object_quota(lt: Any) -> dict[str, str]:
    """Load runs make more registrations than Entra lets a principal without a directory role create (250
    objects, two per registration, and a quarter of each for 30 days after a permanent delete): they run as
    if the identity held a directory role that lifts the limit. Returns the function app's setting for it."""
    lt.set_settings({"directoryObjectQuota": None})
    return {"DIRECTORY_OBJECT_QUOTA": "0"}


class CallLog:
    """Every remote call the tenant accepts or throttles, with the time it was decided.

    The tenant counts calls but keeps no timestamps, so this wraps its fault check (called once per call,
    after the injected latency and before the handler). It reaches into the tenant's private core: a public
    per-call log in the tenant would make this unnecessary.
    """

    def __init__(self, lt: Any) -> None:
        self._faults = lt._core.faults
        self._check = self._faults.check
        self._lock = threading.Lock()
        self.calls: list[tuple[float, str, str, int]] = []  # (time, service, operation, status 0=accepted)

        def check(service: str, operation: str) -> None:
            status = 0
            try:
                self._check(service, operation)
            except Exception as fault:
                status = getattr(fault, "status", 1)
                raise
            finally:
                with self._lock:
                    self.calls.append((time.monotonic(), service, operation, status))

        self._faults.check = check

    def since(self, start: float) -> list[tuple[float, str, str, int]]:
        with self._lock:
            return [c for c in self.calls if c[0] >= start]

    def clear(self) -> None:
        with self._lock:
            self.calls.clear()

    def close(self) -> None:
        self._faults.check = self._check


class TableLatency:
    """The registry's Table Storage (Azurite) behind a loopback proxy that goes through the tenant's fault check
    as service "table" for each call, so a CallLog records it. With `delay` on, a call to the registry costs the
    injected latency (`latencyMs`) as a call to Graph does, in the tenant's way: waited out before Azurite sees
    it, or, with `latencyIncludesHandling`, answered that long after it arrived with Azurite's work inside. Pass
    `settings()` to HostProcess. Like CallLog, it reaches into the tenant's private core."""

    def __init__(self, lt: Any) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import urlsplit

        faults, upstream = lt._core.faults, urlsplit(lt.storage.ensure())
        self._lt, self.delay = lt, False
        proxy = self

        class Forward(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # The status line and headers go out in one write and the body in another: with Nagle's algorithm on,
            # the body would wait for the client's delayed ACK (40 ms on Linux), time no real service adds.
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                import http.client

                arrived = time.monotonic()
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                delay = faults.latency("table") if proxy.delay else 0.0
                whole = faults.latency_includes_handling
                if not whole:
                    time.sleep(delay)
                faults.check("table", f"table.{self.command.lower()}")  # looked up now: CallLog wraps it
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                connection = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=60)
                try:
                    connection.request(self.command, self.path, body=body or None, headers=headers)
                    answer = connection.getresponse()
                    data = answer.read()
                finally:
                    connection.close()
                if whole:
                    time.sleep(max(0.0, arrived + delay - time.monotonic()))
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_MERGE = _forward

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Forward)
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}{upstream.path}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def settings(self) -> dict[str, str]:
        """The function app's registry settings, through the proxy."""
        settings = self._lt.app_settings()
        connection = settings["REGISTRY_CONNECTION_STRING"]
        parts = [p for p in connection.split(";") if p and not p.startswith("TableEndpoint=")]
        return {"REGISTRY_CONNECTION_STRING": ";".join(parts + [f"TableEndpoint={self.endpoint}"]) + ";",
                "REGISTRY_TABLE": settings["REGISTRY_TABLE"]}

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> TableLatency:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def sequential_depth(times: list[float], latency: float) -> int:
    """The longest chain of calls each of which began after the previous one had finished: with a fixed
    injected latency L dominating every call, a call decided at t started at t - L, so j follows i when
    t_j - L >= t_i (with a little slack for scheduling noise)."""
    ordered = sorted(times)
    depth = [1] * len(ordered)
    for j, tj in enumerate(ordered):
        for i in range(j):
            if tj - latency >= ordered[i] - latency * 0.25:
                depth[j] = max(depth[j], depth[i] + 1)
    return max(depth, default=0)


# ---------------------------------------------------------------------------------- the function app
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def host_env(lt: Any, workdir: Path) -> dict[str, str]:
    """The environment of a process that runs the function app: the tenant's settings win over anything
    in this shell, and REQUESTS_CA_BUNDLE (set on these machines) names public CAs plus the tenant's CA,
    as `make run` does."""
    import certifi

    bundle = workdir / "ca-bundle.pem"
    bundle.write_text(Path(certifi.where()).read_text().rstrip("\n") + "\n" + Path(lt.ca_file).read_text())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "IDENTITY_", "MSI_"))}
    env.update(lt.app_settings())
    env.update(REQUESTS_CA_BUNDLE=str(bundle), PYTHONPATH=str(ROOT), PYTHONDONTWRITEBYTECODE="1")
    return env


class HostProcess:
    """`python -m devhost serve` for function_app in a subprocess, with the tenant's settings (and `settings`
    on top)."""

    def __init__(self, lt: Any, *, ready_timeout: float = 60.0, settings: dict[str, str] | None = None) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="bench-host-"))
        keys_path = self._dir / "host-keys.json"
        keys_path.write_text(json.dumps({"master": "bench-master-key", "function": "bench-function-key"}))
        self.function_key = "bench-function-key"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api = f"{self.url}/api"
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [PY, "-m", "devhost", "serve", "--port", str(self.port), "--keys", str(keys_path)],
            cwd=ROOT, env={**host_env(lt, self._dir), **(settings or {})}, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        threading.Thread(target=self._drain, daemon=True).start()  # a full stderr pipe would stall it
        self.ready_after = self._wait_ready(ready_timeout)

    def _drain(self) -> None:
        self.stderr_tail: list[bytes] = []
        for line in self.proc.stderr:  # type: ignore[union-attr]
            self.stderr_tail = (self.stderr_tail + [line])[-40:]

    def _wait_ready(self, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the host exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return time.perf_counter() - self.started
            except OSError:
                time.sleep(0.01)
        raise RuntimeError("the host did not start listening")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def cpu_seconds(self) -> float:
        """utime + stime of the host process, from /proc/PID/stat."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> HostProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def admin_token(lt: Any) -> str:
    """A token for the seeded admin client from the tenant's token endpoint, as a caller gets it."""
    seed = lt.seed
    response = httpx.post(
        f"{lt.authority}/oauth2/v2.0/token",
        data={"grant_type": "client_credentials", "client_id": seed.admin_client.app_id,
              "client_secret": seed.admin_client.secret, "scope": f"{seed.api.identifier_uri}/.default"},
        verify=ssl.create_default_context(cafile=lt.ca_file), trust_env=False, timeout=30,
    )
    response.raise_for_status()
    return response.json()["access_token"]


def api_client(host: HostProcess, token: str, *, connections: int = 64) -> httpx.Client:
    """One client shared by every load thread (httpx.Client is thread-safe); keep-alive connections."""
    return httpx.Client(
        base_url=host.api, trust_env=False, timeout=180,
        headers={"x-functions-key": host.function_key, "Authorization": f"Bearer {token}"},
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
    )


# ------------------------------------------------------------------------------------------ requests
def service_body(name: str, target: str = "managed", access: str = "reader") -> dict[str, Any]:
    return {"type": "service", "name": name, "displayName": f"bench {name}", "dicomService": target,
            "access": access}


BODIES: dict[str, Callable[[str], dict[str, Any]]] = {
    "service/managed": lambda name: service_body(name),
    "service/oss": lambda name: service_body(name, "oss", "writer"),
    "confidential": lambda name: {"type": "confidential", "name": name, "displayName": f"bench {name}",
                                  "dicomService": "managed", "redirectUris": [f"https://{name}.example.org/cb"]},
    "public": lambda name: {"type": "public", "name": name, "displayName": f"bench {name}",
                            "dicomService": "managed", "platform": "spa",
                            "redirectUris": [f"https://{name}.example.org/auth"]},
    "resource": lambda name: {"type": "resource", "name": name, "displayName": f"bench {name}",
                              "dicomService": "oss"},
}
OSS_RESOURCE = "dicom-oss-api"  # the resource registration the tenant's `oss` target names


def run_threads(count: int, work: Callable[[int], None]) -> None:
    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


# ------------------------------------------------------------------------------------ state checks
PREFIX = "dicomreg-"


def recorded(lt: Any) -> dict[str, dict[str, Any]]:
    """The registry's rows (name -> row) in the tenant's Table Storage: the registry, not the application's
    labels, says whether a registration is ready."""
    from azure.data.tables import TableClient

    settings = lt.app_settings()
    with TableClient.from_connection_string(settings["REGISTRY_CONNECTION_STRING"],
                                            settings["REGISTRY_TABLE"]) as table:
        return {row["RowKey"][len("reg:"):]: dict(row) for row in table.query_entities("PartitionKey eq 'registry'")
                if row["RowKey"].startswith("reg:")}


def audit(state: dict[str, Any], names: set[str] | None = None, *,
          records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Duplicates and orphans among the registrations this API made (optionally only `names`); `records` is
    the registry's rows (`recorded`).

    complete: the registry records the app ready, it has exactly one service principal, and for types with a secret
    at least one password, every password's value in a Key Vault version, the current version one of them. An orphan is anything else: an app
    not complete, or a service principal, role assignment or live secret whose app is gone.
    """
    apps = [a for a in state["applications"] if (a.get("uniqueName") or "").startswith(PREFIX)]
    if names is not None:
        apps = [a for a in apps if a["uniqueName"][len(PREFIX):] in names]
    per_name = Counter(a["uniqueName"] for a in apps)
    app_ids = {a["appId"] for a in apps}
    all_app_ids = {a["appId"] for a in state["applications"]}
    sps = Counter(s["appId"] for s in state["servicePrincipals"])
    sp_ids = {s["id"] for s in state["servicePrincipals"]}
    live_secrets = {s["name"]: s for s in state["secrets"] if not s["deleted"]}
    duplicates = {n: c for n, c in per_name.items() if c > 1}
    incomplete = []
    for app in apps:
        name = app["uniqueName"][len(PREFIX):]
        record = records.get(name) or {}
        tags = list(app.get("tags") or []) + json.loads(record.get("tags") or "[]")
        problems = []
        if record.get("state") != "ready" or record.get("app_object_id") != app["id"]:
            problems.append(f"not recorded ready ({record.get('state', 'no row')})")
        if sps[app["appId"]] != 1:
            problems.append(f"{sps[app['appId']]} service principals")
        if any(t in ("dicom-type:service", "dicom-type:confidential") for t in tags):
            # Rotation keeps earlier passwords through an overlap, each with its own Key Vault version.
            passwords = {p["keyId"] for p in app.get("passwordCredentials") or []}
            secret = live_secrets.get(f"dicomreg--{name}--secret")
            versions = [v for v in (secret or {}).get("versions", [])
                        if (v.get("attributes") or {}).get("enabled", True)]
            stored = {(v.get("tags") or {}).get("keyId") for v in versions}
            if not passwords:
                problems.append("no password")
            if not versions or (versions[-1].get("tags") or {}).get("keyId") not in passwords:
                problems.append("the current Key Vault version holds no password of the app")
            if passwords - stored:
                problems.append(f"{len(passwords - stored)} passwords whose value is in no Key Vault version")
        if problems:
            incomplete.append((name, problems))
    stray_sps = [s["id"] for s in state["servicePrincipals"]
                 if "dicom-registration" in (s.get("tags") or []) and s["appId"] not in all_app_ids]
    stray_roles = [r["id"] for r in state["roleAssignments"]
                   if r["properties"]["principalId"] not in sp_ids]
    named = {f"dicomreg--{a['uniqueName'][len(PREFIX):]}--secret" for a in state["applications"]
             if (a.get("uniqueName") or "").startswith(PREFIX)}
    stray_secrets = [n for n in live_secrets if n.startswith("dicomreg--") and n not in named]
    return {"apps": len(apps), "appIds": app_ids, "duplicates": duplicates, "incomplete": incomplete,
            "orphans": len(incomplete) + len(stray_sps) + len(stray_roles) + len(stray_secrets),
            "straySps": stray_sps, "strayRoleAssignments": stray_roles, "straySecrets": stray_secrets}
