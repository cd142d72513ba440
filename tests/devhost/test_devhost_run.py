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
from devhost._run import RunOptions, StillRunning, _banner, fetch_admin_token, holding, run
from localtenant import LocalTenant
from tests.support import free_base_port, free_port

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


@pytest.fixture(autouse=True)
def isolated_environ():
    """`run` and `apply_settings` write os.environ directly (as they must); put it back after each test."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def sample_module(tmp_path, monkeypatch, request):
    name = f"devhost_sample_{request.node.name.split('[')[0]}"
    (tmp_path / f"{name}.py").write_text(SAMPLE_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    os.environ.pop("DEVHOST_SAMPLE_SETTING", None)
    yield name
    sys.modules.pop(name, None)


def test_settings_round_trip_and_the_environment_wins_unless_overridden(tmp_path, monkeypatch):
    path = tmp_path / "local.settings.json"
    devhost.write_settings(path, {"DEVHOST_A": "from-file", "DEVHOST_B": "from-file"})
    assert json.loads(path.read_text())["IsEncrypted"] is False
    assert path.stat().st_mode & 0o077 == 0
    os.environ.pop("DEVHOST_B", None)
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
        function_key = json.loads(wait_for_file(keys))["function"]
        response = wait_for(f"http://127.0.0.1:{port}/api/health", function_key)
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


LOCAL_CA = "-----BEGIN CERTIFICATE-----\nlocal tenant CA\n-----END CERTIFICATE-----\n"


def fake_tenant(settings, tmp_path):
    """Only what `run` reads from a LocalTenant (docs/local-tenant.md), with no servers behind it."""
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text(LOCAL_CA)
    seed = SimpleNamespace(
        admin_client=SimpleNamespace(app_id="admin-app-id", secret="admin-secret"),
        api=SimpleNamespace(identifier_uri="api://dicom-registrations"),
    )
    tenant = SimpleNamespace(
        app_settings=lambda: dict(settings), seed=seed, ca_file=str(ca_file),
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
    start, started = fake_tenant(settings, tmp_path)
    options = RunOptions(local_dir=tmp_path / ".local", port=0, module_name=sample_module, check=True)
    assert run(options, start_tenant=start) == exit_code
    assert started == [(tmp_path / ".local" / "tenant.sqlite", 47400)]
    bundle = options.local_dir / "ca-bundle.pem"
    assert devhost.load_settings(options.settings_path) == {**settings, "REQUESTS_CA_BUNDLE": str(bundle)}
    assert bundle.read_text().endswith(LOCAL_CA) and bundle.read_text().count("BEGIN CERTIFICATE") > 10
    assert devhost.HostKeys.load_or_create(options.keys_path).function  # persisted for the next run
    assert "/api/health -> " + ("200" if exit_code == 0 else "503") in capsys.readouterr().out


def test_banner_says_how_to_call_the_host(tmp_path):
    start, _ = fake_tenant({}, tmp_path)
    keys = devhost.HostKeys.from_mapping({"function": "the-function-key"})
    with start(None, None) as tenant:
        banner = _banner(RunOptions(local_dir=tmp_path), tenant, keys, "http://127.0.0.1:7071", "api")
    assert "http://127.0.0.1:7071/api" in banner
    assert "the-function-key" in banner
    assert "curl -s http://127.0.0.1:7071/api/health" in banner
    assert "-X POST http://127.0.0.1:7071/api/registrations" in banner
    assert f"--cacert {tenant.ca_file} https://127.0.0.1:9/tenant-id/oauth2/v2.0/token" in banner
    assert "scope=api://dicom-registrations/.default" in banner
    assert "Ctrl-C" in banner
    # The admin client's secret is never printed: the token command reads it from tenant.json.
    assert "admin-secret" not in banner and "tenant.json" in banner


def test_banner_for_a_log_holds_no_key_and_no_token(tmp_path):
    """Before: the banner, and so the host's log when stdout is a file, carried the admin client's secret.
    Where stdout is not a terminal, the function key and the token are left out too."""
    start, _ = fake_tenant({}, tmp_path)
    keys = devhost.HostKeys.from_mapping({"function": "the-function-key"})
    with start(None, None) as tenant:
        banner = _banner(RunOptions(local_dir=tmp_path), tenant, keys, "http://127.0.0.1:7071", "api",
                         with_secrets=False)
    assert "the-function-key" not in banner and "admin-secret" not in banner and "export TOKEN='" not in banner
    assert keys.master not in banner  # the sweep command reads the master key from the keys file too
    assert str(tmp_path / "host-keys.json") in banner  # where the key is, instead


def test_local_state_files_are_owner_only(tmp_path):
    """Before: tenant.json (seeded client secrets) and tenant.sqlite (the signing key) were world-readable."""
    state = tmp_path / "state" / "tenant.sqlite"
    with LocalTenant.start(state_path=state):
        pass
    for name in ("tenant.sqlite", "tenant.json", "server-key.pem"):
        mode = (tmp_path / "state" / name).stat().st_mode & 0o777
        assert mode == 0o600, (name, oct(mode))


def test_banner_says_how_to_run_the_sweep_and_reset(tmp_path):
    start, _ = fake_tenant({}, tmp_path)
    keys = devhost.HostKeys.from_mapping({"function": "the-function-key", "master": "the-master-key"})
    with start(None, None) as tenant:
        banner = _banner(RunOptions(local_dir=tmp_path), tenant, keys, "http://127.0.0.1:7071", "api")
    assert "curl -s -X POST http://127.0.0.1:7071/admin/functions/sweep_credentials" in banner
    assert "x-functions-key: the-master-key" in banner
    assert "make reset" in banner


def test_reset_forgets_the_tenant_and_keys_and_nothing_else(tmp_path, sample_module):
    """After a run, `python -m devhost reset` removes what the run left; a new run starts from new keys."""
    local = tmp_path / ".local"
    options = RunOptions(local_dir=local, port=0, module_name=sample_module, check=True)
    os.environ["DEVHOST_SAMPLE_SETTING"] = "x"
    assert run(options, start_tenant=lambda state, base: LocalTenant.start(state_path=state)) == 0
    first_key = devhost.HostKeys.load_or_create(options.keys_path).function
    left = {path.name for path in local.iterdir()}
    assert {"tenant.sqlite", "tenant.json", "ca.pem", "host-keys.json", "local.settings.json"} <= left
    (tmp_path / "mine.txt").write_text("not the tenant's")
    free = [free_port(), free_port()]
    command = [sys.executable, "-m", "devhost", "reset", "--local-dir", str(local), "--port", str(free[0]),
               "--base-port", str(free[1] - 1)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=Path.cwd(), timeout=60)
    assert done.returncode == 0, done.stderr
    assert not local.exists() and (tmp_path / "mine.txt").exists()
    assert devhost.HostKeys.load_or_create(options.keys_path).function != first_key


def test_reset_looks_at_its_own_state_not_at_a_port(tmp_path):
    """Before: reset refused whenever anything listened on 7071, even another program. Now it asks the run's
    lock on its own directory: another program on the port does not matter, a live run does."""
    local = tmp_path / ".local"
    options = RunOptions(local_dir=local)
    with holding(options):  # what a live `make run` holds on its directory
        (local / "tenant.sqlite").write_text("state")
        command = [sys.executable, "-m", "devhost", "reset", "--local-dir", str(local)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and "stop `make run`" in done.stderr, done.stderr
        assert (local / "tenant.sqlite").exists()
        with pytest.raises(StillRunning):  # and a second run on the same directory is refused too
            with holding(options):
                pass
    with socket.socket() as listening:  # another program on the host's port
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        done = subprocess.run(command + ["--port", str(listening.getsockname()[1])], capture_output=True,
                              text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert not local.exists()


def run_command(tmp_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "devhost", "run", "--check", "--local-dir", str(tmp_path / ".local"),
                           *args], capture_output=True, text=True, timeout=180, cwd=Path(__file__).resolve().parents[2])


def test_a_taken_port_is_one_clear_line_naming_the_variable_that_moves_it(tmp_path):
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        taken = listening.getsockname()[1]
        host = run_command(tmp_path, "--port", str(taken), "--base-port", str(free_port()))
        tenant = run_command(tmp_path, "--port", "0", "--base-port", str(taken - 1))
        # The same run on another port works while that one stays taken (make run PORT=7171 while 7071 is).
        elsewhere = run_command(tmp_path, "--port", str(free_port()), "--base-port", str(free_base_port()))
    assert elsewhere.returncode == 0 and "/api/health -> 200" in elsewhere.stdout, elsewhere.stdout + elsewhere.stderr
    assert host.returncode == 2 and f"port {taken} on 127.0.0.1 is in use" in host.stderr, host.stderr
    assert "make run PORT=" in host.stderr
    assert tenant.returncode == 2 and "make run BASE_PORT=" in tenant.stderr, tenant.stderr
    for done in (host, tenant):
        assert "Traceback" not in done.stdout + done.stderr


def test_make_run_passes_the_ports_and_bare_on():
    dry = subprocess.run(["make", "-n", "run", "PORT=7171", "BASE_PORT=47500", "BARE=1"], capture_output=True,
                         text=True, cwd=Path(__file__).resolve().parents[2], timeout=60)
    assert dry.returncode == 0, dry.stderr
    assert "-m devhost run --port 7171 --base-port 47500 --bare" in dry.stdout, dry.stdout
    plain = subprocess.run(["make", "-n", "run"], capture_output=True, text=True,
                           cwd=Path(__file__).resolve().parents[2], timeout=60)
    assert [line for line in plain.stdout.splitlines() if "devhost run" in line][0].rstrip().endswith("devhost run")


def test_a_bare_run_sets_up_the_tenant_as_an_operator_and_serves_with_what_setup_printed(tmp_path):
    done = run_command(tmp_path, "--bare", "--port", "0", "--base-port", str(free_base_port()))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "create the app registration dicom-registrations-api" in done.stdout
    assert "app role Registrations.Admin" in done.stdout and "/api/health -> 200" in done.stdout
    settings = devhost.load_settings(tmp_path / ".local" / "local.settings.json")
    assert settings["API_AUDIENCE"].endswith("/dicom-registrations-api") and settings["API_CLIENT_ID"] in done.stdout
    assert not (tmp_path / ".local" / "setup.settings.json").exists()


def test_make_reset_keeps_the_virtual_environment():
    dry = subprocess.run(["make", "-n", "reset"], capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2],
                         timeout=60)
    assert dry.returncode == 0, dry.stderr
    commands = [line for line in dry.stdout.splitlines() if "devhost reset" in line or "rm " in line]
    assert commands and all("devhost reset" in line for line in commands), dry.stdout


def test_env_prints_what_the_readme_scripts_need(tmp_path):
    with LocalTenant.start(state_path=tmp_path / ".local" / "tenant.sqlite") as tenant:
        command = [sys.executable, "-m", "devhost", "env", "--local-dir", str(tmp_path / ".local")]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    exported = dict(line.removeprefix("export ").split("=", 1) for line in done.stdout.splitlines())
    assert exported["AZURE_AUTHORITY_HOST"] == tenant.authority_host
    assert exported["AZURE_CLIENT_ID"] == tenant.seed.reader_client.app_id
    assert exported["WORKLOAD_OBJECT_ID"] == tenant.seed.reader_client.object_id
    assert exported["VIEWERS_GROUP_ID"] == tenant.seed.group.object_id
    assert exported["REQUESTS_CA_BUNDLE"].endswith("ca-bundle.pem")
    missing = subprocess.run([sys.executable, "-m", "devhost", "env", "--local-dir", str(tmp_path / "none")],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "start `make run` first" in missing.stderr


def test_run_check_against_the_real_local_tenant(tmp_path, sample_module, capsys):
    """The same wiring with the real tenant, on ephemeral ports so a running `make run` is left alone."""
    tokens = []

    @contextlib.contextmanager
    def start(state_path, base_port):
        with LocalTenant.start(state_path=state_path) as tenant:
            tokens.append(fetch_admin_token(tenant))
            yield tenant

    options = RunOptions(local_dir=tmp_path / ".local", port=0, module_name=sample_module, check=True)
    os.environ["DEVHOST_SAMPLE_SETTING"] = "real-tenant"  # the tenant's settings do not include this one
    assert run(options, start_tenant=start) == 0, capsys.readouterr().out
    assert (tmp_path / ".local" / "tenant.sqlite").exists()
    assert tokens[0].count(".") == 2  # a JWT from the tenant's token endpoint
    assert devhost.load_settings(options.settings_path)["AZURE_TENANT_ID"]


def test_make_run_tenant_has_replication_delay_and_stale_reads(tmp_path):
    """`make run` shows Entra's replication delay and its stale app-only reads (a few seconds each) by default;
    tests set their own."""
    from devhost._run import REPLICATION_DELAY_MS, STALE_READS_MS, start_local_tenant

    with start_local_tenant(tmp_path / "tenant.sqlite", 0) as tenant:
        assert 1000 <= tenant.faults()["replicationDelayMs"] == REPLICATION_DELAY_MS <= 10000
        assert 1000 <= tenant.settings()["staleReadsMs"] == STALE_READS_MS <= 10000
