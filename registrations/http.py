"""The HTTP functions: one line each, handing the request to ``api.serve`` under the function's own name (the
key of its operation in ``api.ENDPOINTS`` and ``openapi.OPERATIONS``). Parsing, authorization, rendering and
errors live in ``api``, which is imported on the first request so that a cold start pays only for
azure-functions."""

from __future__ import annotations

import azure.functions as func

bp = func.Blueprint()


def _api():
    from . import api

    return api


@bp.route(route="registrations", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def create_registration(req: func.HttpRequest) -> func.HttpResponse:
    return _api().serve(req, "create_registration")


@bp.route(route="registrations", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def list_registrations(req: func.HttpRequest) -> func.HttpResponse:
    return _api().serve(req, "list_registrations")


@bp.route(route="registrations/{name}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def get_registration(req: func.HttpRequest) -> func.HttpResponse:
    return _api().serve(req, "get_registration")


@bp.route(route="registrations/{name}/config/{format}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def get_registration_config(req: func.HttpRequest) -> func.HttpResponse:
    return _api().serve(req, "get_registration_config")


@bp.route(route="registrations/{name}/verification", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def verify_registration(req: func.HttpRequest) -> func.HttpResponse:
    return _api().serve(req, "verify_registration")


@bp.route(route="registrations/{name}", methods=["PUT"], auth_level=func.AuthLevel.FUNCTION)
def put_registration(req: func.HttpRequest) -> func.HttpResponse:
    return _api().serve(req, "put_registration")


@bp.route(route="registrations/{name}", methods=["PATCH"], auth_level=func.AuthLevel.FUNCTION)
def patch_registration(req: func.HttpRequest) -> func.HttpResponse:
    return _api().serve(req, "patch_registration")


@bp.route(route="registrations/{name}", methods=["DELETE"], auth_level=func.AuthLevel.FUNCTION)
def delete_registration(req: func.HttpRequest) -> func.HttpResponse:
    return _api().serve(req, "delete_registration")


@bp.route(route="registrations/{name}/adopt", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def adopt_registration(req: func.HttpRequest) -> func.HttpResponse:
    return _api().serve(req, "adopt_registration")


@bp.route(route="registrations/{name}/credentials", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def rotate_credential(req: func.HttpRequest) -> func.HttpResponse:
    return _api().serve(req, "rotate_credential")


@bp.route(route="registrations/{name}/credentials", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def list_credentials(req: func.HttpRequest) -> func.HttpResponse:
    return _api().serve(req, "list_credentials")


@bp.route(route="reports/expiring", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def expiring_report(req: func.HttpRequest) -> func.HttpResponse:
    return _api().serve(req, "expiring_report")


@bp.route(route="reports/capacity", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def capacity_report(req: func.HttpRequest) -> func.HttpResponse:
    return _api().serve(req, "capacity_report")


@bp.timer_trigger(schedule="%SWEEP_SCHEDULE%", arg_name="timer", run_on_startup=False)
def sweep_credentials(timer: func.TimerRequest) -> None:
    _api().sweep()


@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    return _api().health(req)


def _openapi():
    from . import openapi

    return openapi


@bp.route(route="openapi.json", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def openapi_v2(req: func.HttpRequest) -> func.HttpResponse:
    return _openapi().respond(req, "2.0")


@bp.route(route="openapi3.json", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def openapi_v3(req: func.HttpRequest) -> func.HttpResponse:
    return _openapi().respond(req, "3.0")
