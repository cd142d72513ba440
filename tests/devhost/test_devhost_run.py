"""Settings files, `python -m devhost serve` and `python -m devhost run --check` with a stand-in tenant."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

import devhost
from devhost._run import RunOptions, _banner, run

# A function app that reads a setting at import time, as the product does: it proves the order.
SAMPLE_MODULE = '''
import os
import azure.functions as func

SEEN_AT_IMPORT = os.environ.get("DEVHOST_SAMPLE_SETTING", "missing")
app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)

@app.route(route="health", methods=["GET"])
def health(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(SEEN_AT_IMPORT, status_code=200 if SEEN_AT_IMPORT != "missing" else 503)
'''


def restored_after_test(monkeypatch, *names):
    """Code under test writes os.environ directly; set-then-delete makes monkeypatch undo those writes."""
    for name in names:
        monkeypatch.setenv(name, "placeholder")
        monkeypatch.delenv(name)


@pytest.fixture
def sample_module(tmp_path, monkeypatch, request):
    name = f"devhost_sample_{request.node.name.split('[')[0]}"
    (tmp_path / f"{name}.py").write_text(SAMPLE_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    restored_after_test(monkeypatch, "DEVHOST_SAMPLE_SETTING")
    yield name
    sys.modules.pop(name, None)


def test_settings_round_trip_and_the_environment_wins_unless_overridden(tmp_path, monkeypatch):
    path = tmp_path / "local.settings.json"
    devhost.write_settings(path, {"DEVHOST_A": "from-file", "DEVHOST_B": "from-file"})
    assert json.loads(path.read_text())["IsEncrypted"] is False
    assert path.stat().st_mode & 0o077 == 0
    restored_after_test(monkeypatch, "DEVHOST_B")
    monkeypatch.setenv("DEVHOST_A", "from-shell")
    assert devhost.apply_settings(devhost.load_settings(path)) == ["DEVHOST_A"]
    assert (os.environ["DEVHOST_A"], os.environ["DEVHOST_B"]) == ("from-shell", "from-file")
    devhost.apply_settings(devhost.load_settings(path), override=True)
    assert os.environ["DEVHOST_A"] == "from-file"


def test_encrypted_settings_are_refused(tmp_path):
    path = tmp_path / "local.settings.json"
    path.write_text(json.dumps({"IsEncrypted": True, "Values": {}}))
    with pytest.raises(ValueError, match="encrypted"):
        devhost.load_settings(path)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_serve_command_loads_settings_before_import_and_stops_on_ctrl_c(tmp_path, sample_module):
    settings = tmp_path / "local.settings.json"
    devhost.write_settings(settings, {"DEVHOST_SAMPLE_SETTING": "loaded-first"})
    keys = tmp_path / "keys.json"
    port = free_port()
    command = [sys.executable, "-m", "devhost", "serve", "--settings", str(settings), "--port", str(port),
               "--keys", str(keys), "--app-module", sample_module]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(Path.cwd())])}
    process = subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        response = wait_for(f"http://127.0.0.1:{port}/api/health", json.loads(wait_for_file(keys))["function"])
        assert (response.status_code, response.text) == (200, "loaded-first")
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=15)
    assert process.returncode == 0, output.decode()


def wait_for_file(path: Path) -> str:
    deadline = time.monotonic() + 15
    while not path.exists() or not path.read_text():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)
    return path.read_text()


def wait_for(url: str, key: str) -> httpx.Response:
    deadline = time.monotonic() + 15
    while True:
        try:
            return httpx.get(url, headers={"x-functions-key": key}, trust_env=False)
        except httpx.TransportError:
            assert time.monotonic() < deadline, f"{url} never answered"
            time.sleep(0.05)


def fake_tenant(settings):
    """Only what `run` reads from a LocalTenant (docs/local-tenant.md), with no servers behind it."""
    seed = SimpleNamespace(
        admin_client=SimpleNamespace(app_id="admin-app-id", secret="admin-secret"),
        api=SimpleNamespace(identifier_uri="api://dicom-registrations"),
    )
    tenant = SimpleNamespace(
        app_settings=lambda: dict(settings), seed=seed, ca_file="/tmp/ca.pem",
        authority="https://127.0.0.1:9/tenant-id",  # port 9 (discard): the token fetch fails fast
    )
    started = []

    @contextlib.contextmanager
    def start(state_path, base_port):
        started.append((state_path, base_port))
        yield tenant

    return start, started


@pytest.mark.parametrize(("setting", "exit_code"), [("from-tenant", 0), (None, 1)])
def test_run_check_wires_tenant_settings_into_the_host(tmp_path, sample_module, capsys, setting, exit_code):
    settings = {"DEVHOST_SAMPLE_SETTING": setting} if setting else {}
    start, started = fake_tenant(settings)
    options = RunOptions(local_dir=tmp_path / ".local", port=0, module_name=sample_module, check=True)
    assert run(options, start_tenant=start) == exit_code
    assert started == [(tmp_path / ".local" / "tenant.sqlite", 47400)]
    assert devhost.load_settings(options.settings_path) == settings
    assert devhost.HostKeys.load_or_create(options.keys_path).function  # persisted for the next run
    assert "/api/health -> " + ("200" if exit_code == 0 else "503") in capsys.readouterr().out


def test_banner_says_how_to_call_the_host(tmp_path):
    start, _ = fake_tenant({})
    keys = devhost.HostKeys.from_mapping({"function": "the-function-key"})
    with start(None, None) as tenant:
        banner = _banner(RunOptions(local_dir=tmp_path), tenant, keys, "http://127.0.0.1:7071", "api")
    assert "http://127.0.0.1:7071/api" in banner
    assert "the-function-key" in banner
    assert "curl -s http://127.0.0.1:7071/api/health" in banner
    assert "-X POST http://127.0.0.1:7071/api/registrations" in banner
    assert "--cacert /tmp/ca.pem https://127.0.0.1:9/tenant-id/oauth2/v2.0/token" in banner
    assert "scope=api://dicom-registrations/.default" in banner
    assert "Ctrl-C" in banner
