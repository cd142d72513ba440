"""The function app's storage account, locally: Azurite's Table service (npm package `azurite`, pinned by
tools/azurite/package-lock.json, installed by `make` through .ci/install-azurite).

The registry (registrations/registry.py) keeps its table there. One Azurite process serves every temporary
tenant of a Python process (in memory, each tenant with its own table); a tenant with a state file gets its own,
persisting beside that file. Azurite listens on loopback only and is reached with its documented development
account (docs/local-tenant.md, "Storage"), through a connection string the app accepts only in Development.
"""
from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import httpx

from .server import end_process, free_port

ROOT = Path(__file__).resolve().parents[1]
AZURITE_DIR = ROOT / "tools" / "azurite"
# Azurite's well-known development account (Microsoft docs, "Use the Azurite emulator": connection strings).
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
INSTALL_HINT = ("Azurite is not installed: run `make azurite` (or ./.ci/install-azurite: npm ci in tools/azurite; "
                "make run and make test do it); the registry needs it")


class AzuriteMissing(RuntimeError):
    """tools/azurite has not been installed (npm ci)."""


def binary() -> str:
    found = os.environ.get("AZURITE_TABLE_BINARY") or str(AZURITE_DIR / "node_modules" / ".bin" / "azurite-table")
    if not Path(found).exists() or not shutil.which("node"):
        raise AzuriteMissing(INSTALL_HINT)
    return found


class Azurite:
    """One azurite-table process: in memory, or persisting in `directory`."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self.endpoint = ""

    def ensure(self, timeout: float = 30.0) -> str:
        """Start Azurite unless it runs; return its table endpoint. Raises AzuriteMissing or RuntimeError."""
        with self._lock:
            if self._process is not None and self._process.poll() is None:
                return self.endpoint
            command = binary()
            for _ in range(3):  # the free port may be taken between looking and binding: try another
                port = free_port()
                args = [command, "--tableHost", "127.0.0.1", "--tablePort", str(port), "--disableTelemetry",
                        "--silent"]
                if self.directory is None:
                    args.append("--inMemoryPersistence")
                else:
                    self.directory.mkdir(parents=True, exist_ok=True)
                    args += ["--location", str(self.directory)]
                self._process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                                 stderr=subprocess.DEVNULL, cwd=self.directory or AZURITE_DIR)
                self.endpoint = f"http://127.0.0.1:{port}/{ACCOUNT}"
                deadline = time.monotonic() + timeout
                while self._process.poll() is None and time.monotonic() < deadline:
                    try:
                        httpx.get(f"http://127.0.0.1:{port}/", timeout=1, trust_env=False)
                        return self.endpoint
                    except httpx.HTTPError:
                        time.sleep(0.05)
                self._stop_locked()
            raise RuntimeError("Azurite did not start (tools/azurite); run it by hand to see why")

    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
                f"TableEndpoint={self.ensure()};")

    def stop(self) -> None:
        with self._lock:
            self._stop_locked()

    def _stop_locked(self) -> None:
        process, self._process = self._process, None
        end_process(process)


_shared: dict[str, Azurite] = {}
_shared_lock = threading.Lock()


def for_tenant(directory: Path | None) -> Azurite:
    """The Azurite a tenant uses: the process-wide in-memory one, or its own persisting in `directory`."""
    key = str(directory or "")
    with _shared_lock:
        if key not in _shared:
            _shared[key] = Azurite(directory)
        return _shared[key]


@atexit.register
def _stop_all() -> None:
    for azurite in list(_shared.values()):
        azurite.stop()
