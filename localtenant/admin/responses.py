"""`/_admin/*`: state, reset, faults, directory settings, stats, clock, federated assertion, signing key, the
open-source DICOM server's configuration. Not subject to injected faults or latency, so a test can always
repair what it broke."""
from __future__ import annotations

import json
from typing import Any, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..web import LOOPBACK


def _admin(core, handler: Callable[[Any, Any], Any]):
    async def endpoint(request: Request) -> Response:
        if (request.client.host if request.client else "") not in LOOPBACK:
            return JSONResponse({"error": {"code": "Forbidden", "message": "Admin endpoints are loopback only."}},
                                status_code=403)
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else {}
            result = handler(core, body)
        except (ValueError, TypeError, KeyError) as e:
            return JSONResponse({"error": {"code": "BadRequest", "message": str(e)}}, status_code=400)
        return Response(status_code=204) if result is None else JSONResponse(result)
    return endpoint


def _clock(core, body):
    core.clock.advance(float(body["advanceSeconds"]))
    return {"offsetSeconds": core.clock.offset, "now": core.clock.now()}


def _assertion(core, body):
    return {"assertion": core.federated_assertion(body["subject"],
                                                  body.get("audience") or "api://AzureADTokenExchange")}


def _dicom_oss(core, body):
    core.configure_oss_dicom(body)


def routes(core) -> list[Route]:
    table = [
        ("/_admin/state", ["GET"], lambda c, b: c.state()),
        ("/_admin/reset", ["POST"], lambda c, b: c.reset()),
        ("/_admin/faults", ["GET"], lambda c, b: c.faults.get()),
        ("/_admin/faults", ["PUT"], lambda c, b: c.faults.set(b)),
        ("/_admin/settings", ["GET"], lambda c, b: c.settings.get()),
        ("/_admin/settings", ["PUT"], lambda c, b: c.settings.set(b)),
        ("/_admin/stats", ["GET"], lambda c, b: c.stats.snapshot()),
        ("/_admin/clock", ["POST"], _clock),
        ("/_admin/federated-assertion", ["POST"], _assertion),
        ("/_admin/signing-key", ["POST"], lambda c, b: {"kid": c.rotate_signing_key()}),
        ("/_admin/app-management-policy", ["GET"], lambda c, b: c.graph.policies.default()),
        ("/_admin/app-management-policy", ["PUT"], lambda c, b: c.graph.policies.set_default(b)),
        ("/_admin/dicom-oss", ["GET"], lambda c, b: c.oss_dicom() or {}),
        ("/_admin/dicom-oss", ["PUT"], _dicom_oss),
    ]
    return [Route(path, _admin(core, fn), methods=methods) for path, methods, fn in table]
