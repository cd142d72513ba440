"""Orthanc, the DICOMweb server behind the local DICOM services: started on first use, stopped with the tenant.

Debian packages it as `orthanc` and `orthanc-dicomweb` (the DICOMweb plugin serves QIDO-RS, WADO-RS and
STOW-RS under `/dicom-web/`). It is configured to be reachable by the front alone:
- the DICOM port is off (`DicomServerEnabled: false`): DICOMweb over HTTPS through the front is the only way in;
- Orthanc 1.10 has no bind address setting, so `RemoteAccessAllowed: false` refuses any client that is not on
  loopback, and HTTP basic authentication with a password made at each start refuses other local processes;
- Lua scripts, REST writes to the file system and jobs that outlive the process are off.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import threading
import time
from pathlib import Path

import httpx

from ..server import end_process, free_port

BINARY_NAMES = ("Orthanc",)
BINARY_DIRS = ("/usr/sbin", "/usr/bin", "/usr/local/bin")
PLUGIN_PATHS = ("/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
                "/usr/lib/orthanc/plugins/libOrthancDicomWeb.so")
INSTALL_HINT = ("Orthanc is not installed: on Debian or Ubuntu run `apt-get install orthanc orthanc-dicomweb` "
                "(make run and .ci/run do it); elsewhere install Orthanc 1.10 or later with its DICOMweb plugin and "
                "put `Orthanc` on PATH, or set ORTHANC_BINARY and ORTHANC_DICOMWEB_PLUGIN")


class OrthancMissing(RuntimeError):
    """Orthanc or its DICOMweb plugin is not installed here."""


def locate() -> tuple[str, str]:
    """(binary, DICOMweb plugin) or raises OrthancMissing saying how to install them."""
    binary = os.environ.get("ORTHANC_BINARY") or next(
        (found for name in BINARY_NAMES for found in [shutil.which(name)] if found), None) or next(
        (str(Path(d) / n) for d in BINARY_DIRS for n in BINARY_NAMES if (Path(d) / n).exists()), None)
    plugin = os.environ.get("ORTHANC_DICOMWEB_PLUGIN") or next((p for p in PLUGIN_PATHS if Path(p).exists()), None)
    if not binary or not plugin or not Path(binary).exists() or not Path(plugin).exists():
        raise OrthancMissing(INSTALL_HINT)
    return binary, plugin


def available() -> bool:
    try:
        locate()
    except OrthancMissing:
        return False
    return True


class Orthanc:
    """One Orthanc process with its storage in `directory` (kept across restarts when the tenant has a state
    file; the tenant's `reset()` leaves stored DICOM data alone)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self.url = ""
        self.auth: tuple[str, str] = ("front", "")

    def ensure(self, timeout: float = 30.0) -> str:
        """Starts Orthanc unless it runs; returns its base URL. Raises OrthancMissing or RuntimeError."""
        with self._lock:
            if self._process is not None and self._process.poll() is None:
                return self.url
            binary, plugin = locate()
            port = free_port()
            password = secrets.token_urlsafe(24)
            storage = self.directory / "storage"
            storage.mkdir(parents=True, exist_ok=True)
            config = {
                "Name": "localtenant-dicom", "StorageDirectory": str(storage), "IndexDirectory": str(storage),
                "HttpServerEnabled": True, "HttpPort": port, "DicomServerEnabled": False,
                "RemoteAccessAllowed": False, "AuthenticationEnabled": True,
                "RegisteredUsers": {"front": password}, "ExecuteLuaEnabled": False,
                "RestApiWriteToFileSystemEnabled": False, "SaveJobs": False, "HttpThreadsCount": 8,
                "ConcurrentJobs": 1, "StableAge": 5, "Plugins": [plugin], "KeepAlive": False,
                "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
            }
            config_file = self.directory / "orthanc.json"
            config_file.touch(mode=0o600)
            config_file.write_text(json.dumps(config))
            log = open(self.directory / "orthanc.log", "ab")
            self._process = subprocess.Popen([binary, str(config_file)], stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, cwd=self.directory)
            log.close()
            self.url, self.auth = f"http://127.0.0.1:{port}", ("front", password)
            deadline = time.monotonic() + timeout
            while True:
                if self._process.poll() is not None:
                    raise RuntimeError(f"Orthanc exited with {self._process.returncode}; see "
                                       f"{self.directory / 'orthanc.log'}")
                try:
                    if httpx.get(f"{self.url}/system", auth=self.auth, timeout=1, trust_env=False).status_code == 200:
                        return self.url
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("Orthanc did not start in time")
                time.sleep(0.1)

    def stop(self) -> None:
        with self._lock:
            process, self._process = self._process, None
        end_process(process)
