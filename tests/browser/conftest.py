"""One headless Chromium (Debian's chromium and chromedriver, driven by selenium) and one loopback server for
the OHIF viewer's prebuilt dist/ per session. Missing pieces make the tests fail, never skip: `make test`
installs them (.ci/install-browser)."""
from __future__ import annotations

import base64
import hashlib
import http.server
import json
import logging
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pydicom import dcmread
from pydicom.data import get_testdata_file
from selenium.webdriver.common.by import By

from tests.support import (wait_for, api_client, api_token, arm_put, client_credentials_token, create, dicomweb,
                           secret_client, service, settings_override)

HERE = Path(__file__).resolve().parent
DIST = HERE / "node_modules" / "@ohif" / "app" / "dist"
ARTIFACTS = HERE / "artifacts"
CHROMIUM = os.environ.get("CHROMIUM_BINARY", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER_BINARY", "/usr/bin/chromedriver")
# What Chromium needs to run headless as root in a container, and nothing that reaches the network by itself.
DICOM_DATA_READER = "e89c7a3c-2f64-4fa1-a847-3e4c9ba4283a"
STUDY = get_testdata_file("CT_small.dcm")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,900"]


class Browser:
    """The driver, plus what the tests read off it: screenshots kept as artifacts, console errors and HTTP
    answers of 400 or more (from Chromium's performance log), each since the last `clear_logs`."""

    def __init__(self, driver: Any, artifacts: Path) -> None:
        self.driver, self.artifacts = driver, artifacts
        self.console: list[dict] = []
        self.responses: list[dict] = []

    def shot(self, name: str) -> Path:
        path = self.artifacts / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def collect(self) -> None:
        self.console += self.driver.get_log("browser")
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message.get("method") == "Network.responseReceived":
                response = message["params"]["response"]
                self.responses.append({"url": response["url"], "status": response["status"]})

    def clear_logs(self) -> None:
        self.collect()
        self.console, self.responses = [], []

    def errors(self) -> tuple[list[str], list[str]]:
        """(console errors, failed HTTP answers) since the last clear."""
        self.collect()
        console = [e["message"] for e in self.console if e["level"] == "SEVERE"]
        failed = [f"{r['status']} {r['url']}" for r in self.responses if r["status"] >= 400]
        return console, failed

    def reset(self) -> None:
        """A browser with no cookies or storage left from an earlier test (one Chromium per session)."""
        self.driver.execute_cdp_cmd("Network.clearBrowserCookies", {})
        self.driver.execute_cdp_cmd("Storage.clearDataForOrigin", {"origin": "*", "storageTypes": "all"})
        self.driver.get("about:blank")
        self.clear_logs()


def _spki_hash(cert_file: Path) -> str:
    """Chromium trusts exactly the local lt's server key (--ignore-certificate-errors-spki-list), so TLS to
    its origins is checked against that key instead of a CA the browser does not know."""
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@pytest.fixture(scope="package")
def lt() -> Iterator[Any]:
    """A tenant of the browser tests' own: the renewal test moves its clock past the access tokens' lifetime,
    which on the shared tenant would expire every token the session has cached."""
    from localtenant import LocalTenant

    with LocalTenant.start() as tenant:
        yield tenant


@pytest.fixture(scope="package")
def browser_api(host, lt) -> Iterator[Any]:
    """The API (the session's local host, which reads its settings per request) on this package's tenant, as
    its admin client; the shared tenant's settings come back after the package."""
    with settings_override(**lt.app_settings()), api_client(host, api_token(lt, lt.seed.admin_client)) as client:
        yield client


@pytest.fixture(scope="package")
def chromium(lt) -> Iterator[Browser]:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not (os.path.isfile(p) and os.access(p, os.X_OK))]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: run ./.ci/install-browser (make test does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    # selenium logs every WebDriver answer at DEBUG, and the performance log it fetches holds the browser's
    # request headers (the viewer's bearer tokens): keep the harness's own traffic out of the captured logs.
    logging.getLogger("selenium.webdriver.remote.remote_connection").setLevel(logging.INFO)

    profile = tempfile.mkdtemp(prefix="chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS + [f"--user-data-dir={profile}",
                         f"--ignore-certificate-errors-spki-list={_spki_hash(Path(lt.ca_file).parent / 'server.pem')}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    ARTIFACTS.mkdir(exist_ok=True)  # each step's screenshot is overwritten by the next run of its test
    try:
        yield Browser(driver, ARTIFACTS)
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


class Viewer:
    """The OHIF viewer's dist/ on a loopback origin, with `app-config.js` = `window.config = <config>;`, as its
    administrator deploys it; any other path that is not a file is the app (a single-page app's routes)."""

    def __init__(self) -> None:
        if not (DIST / "index.html").is_file():
            pytest.fail(f"the OHIF viewer is not installed at {DIST}: run ./.ci/install-browser (make test does)")
        self.app_config = b"window.config = {};"
        viewer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                              ".wasm": "application/wasm", ".js": "text/javascript"}

            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(DIST), **kwargs)

            def do_GET(self):
                path = self.path.split("?", 1)[0]
                if path == "/app-config.js":
                    return self._send(viewer.app_config, "text/javascript")
                if path != "/" and (DIST / path.lstrip("/")).is_file():
                    return super().do_GET()
                return self._send((DIST / "index.html").read_bytes(), "text/html; charset=utf-8")

            def _send(self, body: bytes, content_type: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://localhost:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def serve(self, config: dict[str, Any]) -> None:
        self.app_config = f"window.config = {json.dumps(config, indent=2)};\n".encode()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="package")
def viewer() -> Iterator[Viewer]:
    served = Viewer()
    try:
        yield served
    finally:
        served.close()


def sign_in_on_the_page(chromium: Browser, lt: Any, prefix: str) -> None:
    """A person on the local lt's pages: the account, its password, Accept if asked to consent."""
    d = chromium.driver
    wait_for(lambda: d.find_elements(By.ID, "i0116"), 30, "the lt's sign-in page")
    chromium.shot(f"{prefix}-01-sign-in")
    d.find_element(By.ID, "i0116").send_keys(lt.seed.user.upn)
    d.find_element(By.ID, "idSIButton9").click()
    wait_for(lambda: d.find_elements(By.ID, "i0118"), 10, "the password page")
    d.find_element(By.ID, "i0118").send_keys(lt.seed.user.password)
    chromium.shot(f"{prefix}-02-password")
    d.find_element(By.ID, "idSIButton9").click()
    if wait_for(lambda: d.find_elements(By.ID, "consent") or not d.current_url.startswith(lt.authority_host),
                15, "the consent prompt or the viewer") is not True and d.find_elements(By.ID, "consent"):
        chromium.shot(f"{prefix}-03-consent")
        d.find_element(By.ID, "idSIButton9").click()


@pytest.fixture(scope="package")
def stored_study(browser_api, lt) -> str:
    """CT_small.dcm stored in the managed DICOM service by a writer service client, before anyone signs in."""
    # a fresh name each time the fixture is made (xdist may tear a package's fixtures down and make them again)
    made = create(browser_api, service(f"browser-study-writer-{uuid.uuid4().hex[:6]}", access="writer"))
    config = made["config"]
    secret = secret_client(lt).get_secret(config["clientSecret"]["keyVaultSecretName"]).value
    token = client_credentials_token(lt, config["clientId"], secret, config["scopes"][0])
    ds = dcmread(STUDY)
    dicomweb(config["dicomService"]["baseUrl"], token, lt.ca_file).store_instances([ds])
    return ds.StudyInstanceUID


@pytest.fixture(scope="package")
def user_reads_dicom(browser_api, lt) -> None:
    """The seeded user holds DICOM Data Reader on the managed service, as an administrator assigns it."""
    arm_put(lt, f"{lt.seed.dicom_resource_id}/providers/Microsoft.Authorization/roleAssignments/{uuid.uuid4()}",
             {"properties": {"roleDefinitionId": f"/subscriptions/{lt.seed.subscription_id}/providers/"
                                                 f"Microsoft.Authorization/roleDefinitions/{DICOM_DATA_READER}",
                             "principalId": lt.seed.user.object_id, "principalType": "User"}})


def pytest_runtest_setup(item) -> None:
    (ARTIFACTS / f"failed-{item.name}.png").unlink(missing_ok=True)  # a failure's screenshot is this run's


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed browser test leaves a screenshot of where the browser was, and its address."""
    outcome = yield
    report = outcome.get_result()
    browser = item.funcargs.get("chromium") if hasattr(item, "funcargs") else None
    if report.when == "call" and report.failed and browser is not None:
        path = browser.shot(f"failed-{item.name}")
        report.sections.append(("browser", f"at {browser.driver.current_url}; screenshot {path}"))
