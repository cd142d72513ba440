"""Logs as an operator meets them: one structured line per request at the default level, the Azure SDK's
HTTP dumps only with LOG_LEVEL=DEBUG, and telemetry's import paid only when it is switched on."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
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
        ("get_registration_config", lambda h: api.get(f"/registrations/{name}/config", headers=h)),
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
