"""A confidential web app (tests/browser/webapp.py, msal's web-app pattern in Flask) signs a person in, in
Chromium, with nothing but the registration's `confidential` config and its Key Vault secret, and lists the
DICOM service's studies (QIDO-RS) as that user."""
from __future__ import annotations

import threading
import uuid

import pytest
from pydicom import dcmread
from selenium.webdriver.common.by import By
from werkzeug.serving import make_server

from tests.browser.conftest import STUDY, sign_in_on_the_page, wait_for
from tests.browser.webapp import make_app
from tests.support import ca_session, claims, create, secret_client, settings_override

# One Chromium and one tenant for every browser test (package fixtures in conftest.py): on one worker, made once.
pytestmark = pytest.mark.one_worker("chromium")


def test_a_web_app_signs_a_user_in_and_searches_as_that_user(chromium, browser_api, lt, stored_study,
                                                             user_reads_dicom):
    holder: dict = {}
    server = make_server("127.0.0.1", 0, lambda environ, start: holder["app"](environ, start), threaded=True)
    origin = f"http://localhost:{server.server_port}"
    with settings_override(ALLOWED_REDIRECT_HOSTS="localhost"):
        made = create(browser_api, {"type": "confidential", "name": f"browser-web-app-{uuid.uuid4().hex[:6]}", "displayName": "Study portal",
                            "dicomService": "managed", "redirectUris": [f"{origin}/signin-oidc"],
                            "signInGroups": [lt.seed.group.object_id]})
    config = made["config"]
    secret = secret_client(lt).get_secret(config["clientSecret"]["keyVaultSecretName"]).value
    http = ca_session(lt.ca_file)
    holder["app"] = make_app(config, secret, http=http)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    d = chromium.driver
    chromium.reset()
    try:
        d.get(f"{origin}/")
        sign_in_on_the_page(chromium, lt, "webapp")
        wait_for(lambda: d.find_elements(By.ID, "studies") or d.find_elements(By.ID, "error"), 30,
                 "the web app's study list")
        chromium.shot("webapp-04-studies")
        assert not d.find_elements(By.ID, "error"), d.find_element(By.TAG_NAME, "body").text
        assert d.find_element(By.ID, "user").text == f"Signed in as {lt.seed.user.upn}"
        assert str(dcmread(STUDY).PatientName) in d.find_element(By.ID, "studies").text
        console, failed = chromium.errors()
        assert not failed and not console, (failed, console)
        # the token the app searched with is the user's, for the DICOM service, from a confidential client
        issued = [claims(t) for t in lt.issued()["accessTokens"]]
        mine = [c for c in issued if c.get("appid") == config["clientId"]]
        assert mine and mine[-1]["oid"] == lt.seed.user.object_id and mine[-1]["appidacr"] == "1"
    finally:
        server.shutdown()
        http.close()
