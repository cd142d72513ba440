"""Route templates compiled the way the Functions host reads them."""

from devhost._routing import RouteTable, compile_template


def matched(prefix, route, path):
    found = compile_template(prefix, route).pattern.match(path)
    return None if found is None else {k: v for k, v in found.groupdict().items() if v is not None}


def test_literal_route_under_prefix_ignores_case_and_one_trailing_slash():
    assert matched("api", "health", "/api/health") == {}
    assert matched("api", "health", "/API/Health/") == {}
    assert matched("api", "health", "/health") is None


def test_empty_prefix_serves_routes_at_the_root():
    assert matched("", "health", "/health") == {}


def test_parameters_optional_parameters_and_constraints():
    assert matched("api", "registrations/{name}", "/api/registrations/web-viewer") == {"name": "web-viewer"}
    assert matched("api", "registrations/{name}", "/api/registrations/a/b") is None
    assert matched("api", "items/{id:int}/{label:alpha?}", "/api/items/7") == {"id": "7"}
    assert matched("api", "items/{id:int}/{label:alpha?}", "/api/items/7/abc") == {"id": "7", "label": "abc"}
    assert matched("api", "items/{id:int}", "/api/items/seven") is None
    assert matched("api", "files/{name:regex(^x$)}", "/api/files/anything") == {"name": "anything"}


def test_catch_all_takes_the_rest_of_the_path():
    assert matched("api", "proxy/{*rest}", "/api/proxy/a/b/c") == {"rest": "a/b/c"}


def test_literal_segments_win_over_parameters_whatever_the_order_of_registration():
    table = RouteTable()
    table.add(compile_template("api", "registrations/{name}"), None, "by-name")
    table.add(compile_template("api", "registrations/export"), None, "export")
    assert table.match("GET", "/api/registrations/export").target == "export"
    assert table.match("GET", "/api/registrations/other").target == "by-name"


def test_a_path_known_under_other_methods_is_method_not_allowed():
    table = RouteTable()
    table.add(compile_template("api", "registrations"), frozenset({"POST"}), "create")
    match = table.match("GET", "/api/registrations")
    assert match.method_not_allowed and match.allowed_methods == {"POST"}
    assert not table.match("GET", "/api/nothing").method_not_allowed


def test_a_trigger_bound_to_a_missing_parameter_is_refused_at_start():
    import azure.functions as func
    import pytest

    from devhost import build_app
    from devhost._functions import FunctionIndexError

    app = func.FunctionApp()

    @app.route(route="x")
    def handler(request: func.HttpRequest) -> func.HttpResponse:  # the trigger binds `req`
        return func.HttpResponse("x")

    with pytest.raises(FunctionIndexError, match="'req'"):
        build_app(app)
