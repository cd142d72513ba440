"""A FunctionApp built here, shaped like the product's: anonymous health, keyed routes, a timer.

A module with its own name rather than conftest: tests/conftest.py is another `conftest`."""

from __future__ import annotations

import json

import azure.functions as func

import devhost

MASTER_KEY = "master-key-for-tests"
FUNCTION_KEY = "function-key-for-tests"


def make_sample_app() -> func.FunctionApp:
    app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
    app.timer_calls = []  # what the timer saw, for assertions

    @app.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
    async def health(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse(json.dumps({"status": "ok"}), mimetype="application/json")

    @app.route(route="registrations/{name}", methods=["GET", "DELETE"])
    def get_registration(req: func.HttpRequest) -> func.HttpResponse:
        # Echo back what the host handed over, so tests can check the conversion.
        echoed = {
            "method": req.method,
            "url": req.url,
            "route": dict(req.route_params),
            "params": dict(req.params),
            "header": req.headers.get("x-test-header"),
            "identityHeaders": sorted(k.lower() for k in req.headers.keys()
                                      if k.lower().startswith(("x-ms-client-principal", "x-ms-token-"))),
        }
        return func.HttpResponse(json.dumps(echoed), mimetype="application/json", headers={"X-Echo": "yes"})

    @app.route(route="registrations/export", methods=["GET"])
    def export(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("export")

    @app.route(route="registrations", methods=["POST"])
    def create_registration(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse(req.get_body(), status_code=201, mimetype="application/octet-stream")

    @app.route(route="items/{id:int}/{label:alpha?}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
    def item(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse(json.dumps(dict(req.route_params)), mimetype="application/json")

    @app.route(route="boom", auth_level=func.AuthLevel.ANONYMOUS)
    def boom(req: func.HttpRequest) -> func.HttpResponse:
        raise RuntimeError("secret-ish internals: password=hunter2")

    @app.route(route="admin-only", auth_level=func.AuthLevel.ADMIN)
    def admin_only(req: func.HttpRequest) -> str:
        return "admin"

    @app.timer_trigger(schedule="0 */5 * * * *", arg_name="timer", run_on_startup=False)
    def sweep(timer: func.TimerRequest) -> None:
        app.timer_calls.append(timer.past_due)

    return app


def build_sample_host(**options):
    keys = {"master": MASTER_KEY, "function": FUNCTION_KEY}
    options.setdefault("host_json_path", "/nonexistent/host.json")
    function_app = make_sample_app()
    host = devhost.build_app(function_app, keys=keys, **options)
    host.state.sample_app = function_app  # lets tests see what the timer recorded
    return host
