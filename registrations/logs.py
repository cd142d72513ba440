"""Logging and telemetry: quiet by default, one structured line per request, counters when exported.

- `LOG_LEVEL` (DEBUG, INFO, WARNING, ERROR; default INFO) is the level of this product's loggers. The Azure
  SDK's loggers (azure-core's HTTP logging policy dumps every request's URL and headers at INFO, azure-identity
  logs every token it gets) stay at WARNING unless `LOG_LEVEL=DEBUG`.
- `request_line`: the one record each API request leaves (operation, status, duration, correlation id,
  caller); a write's goes to `registrations.audit` with its audit fields, any other to
  `registrations.request`.
- With `APPLICATIONINSIGHTS_CONNECTION_STRING` set, OpenTelemetry exports this product's logs and three
  counters to Application Insights through azure-monitor-opentelemetry, imported then and only then (it costs
  a second or more, which a cold start without it must not pay): `registrations.provisions` (by outcome),
  `registrations.throttled` (throttled answers from Azure, by service) and `registrations.credentials.expiring`
  (current credentials found within EXPIRY_WARNING_DAYS of their end, by each sweep).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Mapping
from typing import Any

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
PRODUCT_LOGGER = "registrations"
# The SDK loggers that write a line (or a dozen) for every call at INFO.
SDK_LOGGERS = ("azure", "msal")

log = logging.getLogger("registrations.logs")
request_log = logging.getLogger("registrations.request")
audit = logging.getLogger("registrations.audit")

_lock = threading.Lock()
_counters: dict[str, Any] = {}


def configure(env: Mapping[str, str] | None = None) -> None:
    """Set the levels and, when a connection string is set, start the export (once per process). The runtime
    calls it whenever it is built (never at import)."""
    env = os.environ if env is None else env
    raw = (env.get("LOG_LEVEL") or "INFO").strip().upper()
    level = raw if raw in LEVELS else "INFO"
    logging.getLogger(PRODUCT_LOGGER).setLevel(level)
    for name in SDK_LOGGERS:
        logging.getLogger(name).setLevel("DEBUG" if level == "DEBUG" else "WARNING")
    if raw != level:
        log.warning("LOG_LEVEL must be one of %s; using INFO", ", ".join(LEVELS))
    connection = env.get("APPLICATIONINSIGHTS_CONNECTION_STRING")
    with _lock:
        if connection and not _counters:
            _export(connection, env.get("APPLICATIONINSIGHTS_AUTHENTICATION_STRING") or "")


def _export(connection_string: str, authentication: str) -> None:
    from azure.monitor.opentelemetry import configure_azure_monitor
    from opentelemetry import metrics

    options: dict[str, Any] = {}
    # `Authorization=AAD` (optionally `;ClientId=…`): the resource refuses instrumentation keys
    # (infra/ turns local authentication off), so telemetry is sent with the app's managed identity.
    parts = dict(p.split("=", 1) for p in authentication.split(";") if "=" in p)
    if parts.get("Authorization", "").upper() == "AAD":
        from azure.identity import ManagedIdentityCredential

        options["credential"] = ManagedIdentityCredential(client_id=parts.get("ClientId") or None)
    # Only this product's records are exported (not the SDKs' nor the host's), and no live metrics stream.
    configure_azure_monitor(connection_string=connection_string, logger_name=PRODUCT_LOGGER,
                            enable_live_metrics=False, **options)
    meter = metrics.get_meter(PRODUCT_LOGGER)
    _counters.update(
        provisions=meter.create_counter("registrations.provisions", description="creates, by outcome"),
        throttled=meter.create_counter("registrations.throttled",
                                       description="429 answers from Azure, by service"),
        expiring=meter.create_counter("registrations.credentials.expiring",
                                      description="credentials ending within EXPIRY_WARNING_DAYS, per sweep"),
    )


def count(counter: str, amount: int = 1, **attributes: str) -> None:
    """Add to one of the counters above; nothing when telemetry is not exported."""
    instrument = _counters.get(counter)
    if instrument is not None and amount:
        instrument.add(amount, attributes)


def request_line(fields: dict[str, Any], *, write: bool) -> None:
    """The request's one record: a write's is its audit record."""
    (audit if write else request_log).info(json.dumps(fields))
