"""`python -m devhost run`, what `make run` calls: the local tenant and the Functions host, wired together.

The tenant runs in this process on a background thread (its own servers, fixed ports from the base) and the
Functions host runs on the main thread, so one Ctrl-C stops uvicorn first and then the tenant, in that order.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shlex
import shutil
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator

import certifi
import httpx

from devhost._app import PROJECT_ROOT, api_base_url, build_app
from devhost._keys import HostKeys
from devhost._server import RunningServer, bind_socket, import_function_app, socket_url, uvicorn_server
from devhost._settings import apply_settings, write_settings

FUNCTIONS_PORT = 7071  # the port `func start` uses, so docs and tools written for it still apply
TENANT_BASE_PORT = 47400  # docs/local-tenant.md: fixed ports base+1 … base+7
# Entra takes seconds to show a new app, service principal or secret everywhere; `make run` shows that (the
# 202 path of verification, the retries) rather than a tenant kinder than Azure. Tests choose their own.
REPLICATION_DELAY_MS = 3000
# App-only reads of an updated application or service principal show the previous values this long
# (docs/local-tenant.md, "Fidelity: consistency and member users").
STALE_READS_MS = 3000
# Where `run` keeps the tenant's state, its CA and the host's keys; `env` and `reset` read the same place.
DEFAULT_LOCAL_DIR = Path(os.environ.get("DEVHOST_LOCAL_DIR") or PROJECT_ROOT / ".local")

StartTenant = Callable[..., ContextManager[Any]]  # (state path, base port, bare=…)


@dataclass(frozen=True)
class RunOptions:
    local_dir: Path = DEFAULT_LOCAL_DIR
    port: int = FUNCTIONS_PORT
    base_port: int = TENANT_BASE_PORT
    module_name: str = "function_app"
    check: bool = False
    bare: bool = False  # a tenant with no API registration and no grants: setup makes them, as an operator

    @property
    def lock_path(self) -> Path:
        return self.local_dir / "run.lock"

    @property
    def state_path(self) -> Path:
        return self.local_dir / "tenant.sqlite"

    @property
    def settings_path(self) -> Path:
        return self.local_dir / "local.settings.json"

    @property
    def keys_path(self) -> Path:
        return self.local_dir / "host-keys.json"


def start_local_tenant(state_path: Path, base_port: int, *, bare: bool = False) -> ContextManager[Any]:
    # Imported here: the tenant is a development tool and must never load with the function app itself.
    from localtenant import LocalTenant

    return LocalTenant.start(state_path=state_path, base_port=base_port,
                             faults={"replicationDelayMs": REPLICATION_DELAY_MS},
                             settings={"staleReadsMs": STALE_READS_MS}, bare=bare)


class PortTaken(RuntimeError):
    """A port `run` needs is in use: said in one line, with the make variable that moves it."""


class StillRunning(RuntimeError):
    """`reset` found a run still using its directory, or `run` found another one there."""


@contextlib.contextmanager
def _locked(options: RunOptions, refusal: str) -> Iterator[None]:
    """An exclusive lock on the run's own directory (the kernel drops it when the process ends, however it
    ends), or StillRunning(refusal) when a run holds it."""
    options.local_dir.mkdir(parents=True, exist_ok=True)
    with open(options.lock_path, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StillRunning(refusal) from None
        yield


def holding(options: RunOptions) -> ContextManager[None]:
    """Held for as long as the run lives: `reset` asks this lock, not a port, whether a run still uses the
    directory's state."""
    return _locked(options, f"another `make run` uses {options.local_dir}: stop it (Ctrl-C) first, or give this "
                            "one its own directory (DEVHOST_LOCAL_DIR)")


def _bind_host(options: RunOptions):
    try:
        return bind_socket("127.0.0.1", options.port)
    except OSError as error:
        if error.errno != errno.EADDRINUSE:
            raise
        raise PortTaken(f"port {options.port} on 127.0.0.1 is in use by another program; start the host on "
                        f"another one: make run PORT={options.port + 100} (python -m devhost run --port "
                        f"{options.port + 100})") from None


@contextlib.contextmanager
def _tenant(options: RunOptions, start_tenant: StartTenant) -> Iterator[Any]:
    try:
        started = start_tenant(options.state_path, options.base_port, **({"bare": True} if options.bare else {}))
        tenant = started.__enter__()
    except OSError as error:
        if error.errno != errno.EADDRINUSE:
            raise
        first, last = options.base_port + 1, options.base_port + 7
        raise PortTaken(f"a port of the local tenant ({first}-{last} on 127.0.0.1) is in use by another "
                        f"program; move them all: make run BASE_PORT={options.base_port + 100} (python -m devhost "
                        f"run --base-port {options.base_port + 100})") from None
    try:
        yield tenant
    except BaseException:
        if not started.__exit__(*sys.exc_info()):
            raise
    else:
        started.__exit__(None, None, None)


def run(options: RunOptions, *, start_tenant: StartTenant = start_local_tenant) -> int:
    """Serve until Ctrl-C (exit 0), or with `check` call GET /api/health once and exit 0 or 1."""
    sock = _bind_host(options)  # a busy port fails now, before the tenant starts
    with contextlib.closing(sock), holding(options), _tenant(options, start_tenant) as tenant:
        settings = {**tenant.app_settings(), **_ca_bundle_settings(options, tenant)}
        if options.bare:
            settings.update(operator_setup(options, tenant, settings))
        write_settings(options.settings_path, settings)
        # These settings point at the local tenant; a stray AZURE_* variable in the shell must not win here.
        apply_settings(settings, override=True)
        keys = HostKeys.load_or_create(options.keys_path)
        app = build_app(import_function_app(options.module_name), keys=keys)
        if options.check:
            return _check_health(RunningServer(app, sock), keys, app.state.route_prefix)
        server = uvicorn_server(app)
        # The function key and a bearer token go to a terminal only: when stdout is a pipe or a file (a log),
        # the banner says where to find them instead.
        banner = _banner(options, tenant, keys, socket_url(sock), app.state.route_prefix,
                         with_secrets=sys.stdout.isatty(), audience=settings.get("API_AUDIENCE"))
        threading.Thread(target=_print_when_started, args=(server, banner), daemon=True).start()
        server.run(sockets=[sock])
    return 0


def operator_setup(options: RunOptions, tenant: Any, settings: dict[str, str]) -> dict[str, str]:
    """`make run BARE=1`: what a real deployment starts from. The tenant has no API registration and the
    function app's identity no grant; an operator (the bare tenant's seeded service principal) runs
    `python -m registrations.setup` with the host's settings, exactly as docs/deploying.md says, giving the
    seeded callers their app roles; the host then starts with the two settings setup printed."""
    seed = tenant.seed
    settings_file = options.local_dir / "setup.settings.json"
    settings_file.write_text(json.dumps({k: v for k, v in settings.items() if not k.startswith("IDENTITY_")}))
    settings_file.chmod(0o600)
    roles = [("--admin", "admin_client"), ("--requester", "requester_client"), ("--requester", "requester_client_b"),
             ("--broker", "broker_client")]

    command = [sys.executable, "-m", "registrations.setup", "--principal-id", seed.product.object_id,
               "--settings", str(settings_file),
               *[arg for flag, name in roles if name in seed for arg in (flag, seed[name]["object_id"])],
               # the local user asks through the local portal, as a person would through a company's form
               "--requester", seed.user.object_id, "--front-end", seed.portal_client.app_id]
    # The operator's own sign-in, for DefaultAzureCredential in the setup process only (never the host's).
    environment = {**os.environ, "AZURE_TENANT_ID": tenant.tenant_id, "AZURE_CLIENT_ID": seed.operator.app_id,
                   "AZURE_CLIENT_SECRET": seed.operator.secret, "REQUESTS_CA_BUNDLE": settings["REQUESTS_CA_BUNDLE"]}
    for name in ("IDENTITY_ENDPOINT", "IDENTITY_HEADER", "MSI_ENDPOINT"):
        environment.pop(name, None)
    print("Setting up the bare tenant as an operator: " + " ".join(command[1:3]) + " …", flush=True)
    done = subprocess.run(command, env=environment, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    print(done.stdout, end="", flush=True)
    settings_file.unlink(missing_ok=True)
    if done.returncode != 0:
        raise SetupFailed(f"setup failed ({done.returncode}): {done.stderr.strip()}")
    printed = dict(re.findall(r"^(API_CLIENT_ID|API_AUDIENCE)=(\S+)$", done.stdout, re.MULTILINE))
    if set(printed) != {"API_CLIENT_ID", "API_AUDIENCE"}:
        raise SetupFailed("setup printed no API_CLIENT_ID and API_AUDIENCE")
    return printed


class SetupFailed(RuntimeError):
    """`make run BARE=1`: the operator's setup run did not finish."""


def _ca_bundle_settings(options: RunOptions, tenant: Any) -> dict[str, str]:
    """`requests` lets REQUESTS_CA_BUNDLE replace a session's own `verify` (its merge_environment_settings,
    whenever trust_env is on), so a CA file handed to msal or azure-core would be ignored. Locally, the bundle it names is
    made to hold the public CAs plus the tenant's CA; in Azure the variable is simply not set."""
    bundle = options.local_dir / "ca-bundle.pem"
    bundle.parent.mkdir(parents=True, exist_ok=True)
    public = Path(certifi.where()).read_text()
    bundle.write_text(public.rstrip("\n") + "\n" + Path(tenant.ca_file).read_text())
    return {"REQUESTS_CA_BUNDLE": str(bundle)}


# What `run` leaves in its directory: the tenant's state, CA and server certificate, tenant.json, the local
# DICOM services' storage, and the host's settings, keys and CA bundle (docs/local-tenant.md; RunOptions).
LOCAL_FILES = ("tenant.sqlite", "tenant.sqlite-wal", "tenant.sqlite-shm", "tenant.json", "ca.pem", "server.pem",
               "server-key.pem", "local.settings.json", "host-keys.json", "ca-bundle.pem", "run.lock")
LOCAL_DIRS = ("orthanc", "azurite")  # the local DICOM services' storage; the registry's Azurite


def reset(options: RunOptions) -> list[Path]:
    """Forget the local tenant and the host's keys (the virtual environment stays): the next `run` starts
    from the seed. Refused while a run still holds this directory's lock (its state would be pulled away);
    whatever else listens on any port does not matter."""
    if options.lock_path.exists():
        with _locked(options, f"a `make run` still uses {options.local_dir}: stop `make run` (Ctrl-C) first"):
            pass
    removed = []
    for name in LOCAL_FILES:
        path = options.local_dir / name
        if path.exists():
            path.unlink()
            removed.append(path)
    for name in LOCAL_DIRS:
        path = options.local_dir / name
        if path.is_dir():
            shutil.rmtree(path)
            removed.append(path)
    with contextlib.suppress(OSError):
        options.local_dir.rmdir()  # only when nothing else is in it
    return removed


def client_environment(options: RunOptions) -> dict[str, str]:
    """What the "Use the registration" scripts (docs/use-the-registration.md) need locally, from the running tenant's tenant.json: the
    CA bundle, a principal of the local tenant to read secrets as, and the group that may sign in. The seeded reader client stands in for
    a workload's own identity (name its object id in secretReaders); DefaultAzureCredential reads it from
    AZURE_CLIENT_ID/AZURE_CLIENT_SECRET/AZURE_TENANT_ID, at AZURE_AUTHORITY_HOST."""
    described = json.loads((options.local_dir / "tenant.json").read_text())
    workload = described["seed"]["reader_client"]
    return {
        "REQUESTS_CA_BUNDLE": str(options.local_dir.resolve() / "ca-bundle.pem"),
        "AZURE_TENANT_ID": described["tenant_id"],
        "AZURE_AUTHORITY_HOST": described["authority_host"],
        "AZURE_CLIENT_ID": workload["app_id"],
        "AZURE_CLIENT_SECRET": workload["secret"],
        "WORKLOAD_OBJECT_ID": workload["object_id"],
        # The seeded group whose one member is the user /authorize signs in: name it in a public or
        # confidential client's signInGroups, or nobody may sign in through that client.
        "VIEWERS_GROUP_ID": described["seed"]["group"]["object_id"],
    }


def _check_health(server: RunningServer, keys: HostKeys, prefix: str) -> int:
    with server.start():
        url = f"{api_base_url(server.url, prefix)}/health"
        response = httpx.get(url, headers={"x-functions-key": keys.function}, trust_env=False, timeout=30)
    print(f"GET {url} -> {response.status_code}")
    print(response.text)
    return 0 if response.status_code == 200 else 1


def _print_when_started(server: Any, banner: str) -> None:
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    if server.started:
        print(banner, flush=True)


def fetch_admin_token(tenant: Any, audience: str | None = None) -> str:
    """A token for the seeded admin client, from the tenant's own token endpoint, as a caller would get it."""
    seed = tenant.seed
    tls = ssl.create_default_context(cafile=str(tenant.ca_file))
    response = httpx.post(
        f"{tenant.authority}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": seed.admin_client.app_id,
            "client_secret": seed.admin_client.secret,
            "scope": f"{audience or seed.api.identifier_uri}/.default",
        },
        verify=tls,
        trust_env=False,  # REQUESTS_CA_BUNDLE and friends must not replace the local CA
        timeout=30,
    )
    response.raise_for_status()
    return response.json()["access_token"]


def _read_json(subscript: str, path: Path) -> str:
    """A shell command printing one value of a JSON file (the value never appears in the banner itself)."""
    return f"python3 -c 'import json,sys; print(json.load(open(sys.argv[1])){subscript})' {shlex.quote(str(path))}"


def _banner(options: RunOptions, tenant: Any, keys: HostKeys, base_url: str, prefix: str, *,
            with_secrets: bool = True, audience: str | None = None) -> str:
    """What `make run` prints. The admin client's secret is never in it: the token command reads it from the
    tenant's tenant.json (owner-only). `with_secrets` adds the function key and a ready token (terminal only)."""
    api = api_base_url(base_url, prefix)
    seed = tenant.seed
    settings = tenant.app_settings()
    described = options.state_path.parent / "tenant.json"
    if with_secrets:
        try:
            token_line = f"export TOKEN='{fetch_admin_token(tenant, audience)}'"
        except (httpx.HTTPError, OSError, KeyError, ValueError) as error:
            token_line = f"# could not get a token now ({type(error).__name__}); use the command below"
        key_lines = [f"  export KEY='{keys.function}'", f"  {token_line}"]
    else:
        read_key = _read_json('["function"]', options.keys_path)
        key_lines = ["  (not printed: this output is not a terminal and may be kept in a log)",
                     f"  export KEY=$({read_key})",
                     "  export TOKEN=... (the command below)"]
    read_secret = _read_json('["seed"]["admin_client"]["secret"]', described)
    # for the tenant's sign-in page (local only, like the seeded secrets: read from tenant.json, never printed)
    read_user, read_password = (_read_json(f'["seed"]["user"]["{key}"]', described) for key in ("upn", "password"))
    master_key = keys.master if with_secrets else "$(" + _read_json('["master"]', options.keys_path) + ")"
    token_command = (
        f"curl -s --cacert {tenant.ca_file} {tenant.authority}/oauth2/v2.0/token"
        f" -d grant_type=client_credentials -d client_id={seed.admin_client.app_id}"
        f" -d client_secret=\"$({read_secret})\" -d scope={audience or seed.api.identifier_uri}/.default"
    )
    create_body = (
        '{"type": "service", "name": "demo-service", "displayName": "Demo service", '
        '"dicomService": "managed", "access": "reader"}'
    )
    return "\n".join(
        [
            "",
            f"Functions host  {api}   (plain HTTP on loopback, like func start)",
            f"Function key    header x-functions-key; kept in {options.keys_path} (owner-only)",
            f"Local tenant    {tenant.authority}   (state {options.state_path})",
            f"CA file         {tenant.ca_file}   (for HTTPS calls to the local tenant)",
            f"Sign-in page    the seeded user $({read_user}), password $({read_password})",
            f"Settings        {options.settings_path}",
            "",
            "Paste these two lines into your shell (the README's tour uses $KEY and $TOKEN):",
            *key_lines,
            "(TOKEN is for the seeded admin client, Registrations.Admin, and lasts about an hour.)",
            "A fresh one, any time:",
            f"  export TOKEN=$({token_command} \\",
            "    | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"access_token\"])')",
            "",
            "For the tour's last step (a DICOM script reads its secret as the local managed identity):",
            f"  export IDENTITY_ENDPOINT='{settings.get('IDENTITY_ENDPOINT', '')}'",
            f"  export IDENTITY_HEADER='{settings.get('IDENTITY_HEADER', '')}'",
            f"  export REQUESTS_CA_BUNDLE='{options.local_dir / 'ca-bundle.pem'}'",
            "",
            "Try:",
            f"  curl -s {api}/health",
            f"  curl -s -X POST {api}/registrations -H \"x-functions-key: $KEY\" \\",
            "       -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' \\",
            f"       -d '{create_body}'",
            "",
            "Run the daily credential sweep now (the host's admin API takes the master key only):",
            f"  curl -s -X POST {base_url.rstrip('/')}/admin/functions/sweep_credentials \\",
            f"       -H \"x-functions-key: {master_key}\" -H 'Content-Type: application/json' -d '{{}}'",
            "",
            "Ctrl-C stops the host and the local tenant; `make reset` (python -m devhost reset) then starts",
            f"the next run from the seed (it clears {options.local_dir}: tenant state, CA and keys).",
        ]
    )
