"""Logs as an operator meets them: one structured line per request at the default level, the Azure SDK's
HTTP dumps only with LOG_LEVEL=DEBUG, and telemetry's import paid only when it is switched on."""
from __future__ import annotations

import gzip
import json
import logging
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import uuid
from pathlib import Path

import httpx

from tests.support import settings_override

ROOT = Path(__file__).resolve().parents[2]

QUIET = ("httpx", "httpcore")  # the test's own HTTP client


def lines_at_info(caplog, *, wait_for: int = 1) -> list[logging.LogRecord]:
    """Records at INFO or above from anything but the test's client; the host writes its line after the
    response has gone, so wait a moment for it."""
    deadline = time.monotonic() + 2
    while True:
        found = [r for r in caplog.records if r.levelno >= logging.INFO and not r.name.startswith(QUIET)]
        if len(found) >= wait_for or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


def service(name: str) -> dict:
    return {"type": "service", "name": name, "displayName": name, "dicomService": "managed", "access": "reader"}


def test_every_request_leaves_exactly_one_line_at_the_default_level(api, tenant, caplog):
    name = f"log-{uuid.uuid4().hex[:8]}"
    requests = [
        ("create_registration", lambda h: api.post("/registrations", json=service(name), headers=h)),
        ("get_registration", lambda h: api.get(f"/registrations/{name}", headers=h)),
        ("get_registration_config", lambda h: api.get(f"/registrations/{name}/config/json", headers=h)),
        ("verify_registration", lambda h: api.get(f"/registrations/{name}/verification", headers=h)),
        ("list_registrations", lambda h: api.get("/registrations", headers=h)),
        ("get_registration", lambda h: api.get("/registrations/no-such-one", headers=h)),
        ("delete_registration", lambda h: api.delete(f"/registrations/{name}", headers=h)),
    ]
    for operation, send in requests:
        correlation = f"log-{uuid.uuid4()}"
        caplog.clear()
        response = send({"x-correlation-id": correlation})
        records = lines_at_info(caplog)
        assert len(records) == 1, [f"{r.name}: {r.getMessage()[:200]}" for r in records]
        line = json.loads(records[0].getMessage())
        assert line["operation"] == operation and line["status"] == response.status_code
        assert line["correlationId"] == correlation and line["durationMs"] >= 0
        assert line["caller"]["oid"] == tenant.seed.admin_client.object_id
        # writes are audited: the same line, on the audit logger
        assert records[0].name == ("registrations.audit" if operation.startswith(("create", "delete"))
                                   else "registrations.request")


def test_a_request_the_host_refuses_leaves_the_host_s_line_only(host, caplog):
    caplog.clear()
    response = httpx.get(f"{host.url}/api/registrations", trust_env=False)  # no function key
    assert response.status_code == 401
    [record] = lines_at_info(caplog)
    assert record.name == "devhost.access" and json.loads(record.getMessage())["status"] == 401


def test_the_sdk_http_log_needs_log_level_debug(api, caplog):
    api.get("/registrations")  # the runtime is built
    assert logging.getLogger("azure").getEffectiveLevel() == logging.WARNING
    assert logging.getLogger("azure.core.pipeline.policies.http_logging_policy").getEffectiveLevel() == \
        logging.WARNING
    with settings_override(LOG_LEVEL="DEBUG"):
        caplog.clear()
        assert api.get("/registrations").status_code == 200
        sdk = [r for r in caplog.records if r.name == "azure.core.pipeline.policies.http_logging_policy"]
        assert sdk, "with LOG_LEVEL=DEBUG azure-core's request log is there"
        assert logging.getLogger("registrations").getEffectiveLevel() == logging.DEBUG
    api.get("/registrations")  # rebuilt with the default
    assert logging.getLogger("azure").getEffectiveLevel() == logging.WARNING
    assert logging.getLogger("registrations").getEffectiveLevel() == logging.INFO


def test_telemetry_is_not_imported_at_start_nor_without_a_connection_string():
    """The worker imports function_app at start: OpenTelemetry must not come with it; and building the
    runtime without APPLICATIONINSIGHTS_CONNECTION_STRING must not import it either."""
    probe = (
        "import sys, function_app\n"
        "from registrations import logs\n"
        "logs.configure({'LOG_LEVEL': 'INFO'})\n"
        "print(sorted(m for m in sys.modules if m.startswith(('opentelemetry', 'azure.monitor'))))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


class _Ingestion(BaseHTTPRequestHandler):
    """Application Insights' ingestion endpoint on loopback: keeps every telemetry batch posted to it."""
    received: list[str] = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        if self.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        type(self).received.append(body.decode("utf-8", "replace"))
        answer = json.dumps({"itemsReceived": 1, "itemsAccepted": 1, "errors": []}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


def test_with_a_connection_string_the_counters_and_log_lines_reach_application_insights():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ingestion)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}/"
    probe = (
        "import logging\n"
        "from registrations import logs\n"
        "logs.configure()\n"
        "logs.count('provisions', outcome='succeeded')\n"
        "logs.count('throttled', service='graph')\n"
        "logs.count('expiring', 2)\n"
        "logging.getLogger('registrations.request').info('{\"operation\": \"probe-line\"}')\n"
        "from opentelemetry import _logs, metrics\n"
        "metrics.get_meter_provider().force_flush()\n"
        "_logs.get_logger_provider().force_flush()\n"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp",
           "APPLICATIONINSIGHTS_CONNECTION_STRING":
               f"InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint={endpoint}",
           # Nothing but loopback: no statsbeat to Microsoft, no Azure VM metadata probe.
           "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true", "APPLICATIONINSIGHTS_SDKSTATS_DISABLED": "true",
           "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS": "otel"}
    try:
        done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=120)
    finally:
        server.shutdown()
    assert done.returncode == 0, done.stderr[-3000:]
    sent = "\n".join(_Ingestion.received)
    for name in ("registrations.provisions", "registrations.throttled", "registrations.credentials.expiring",
                 "probe-line"):
        assert name in sent, f"{name} was not exported"
