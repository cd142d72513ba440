"""The real OHIF viewer (npm @ohif/app 3.13.2, its prebuilt dist/) in headless Chromium, configured with nothing
but what `GET …/config/ohif` returned: a person signs in on the local lt's pages, sees a study stored
beforehand in the study list, opens it and sees the image; the session outlives its access token; sign-out
ends it. Screenshots of each step land in tests/browser/artifacts/."""
from __future__ import annotations

import io
import uuid

import pytest
from PIL import Image
from pydicom import dcmread
from selenium.common.exceptions import ElementClickInterceptedException, StaleElementReferenceException
from selenium.webdriver.common.by import By

from tests.browser.conftest import STUDY, sign_in_on_the_page, wait_for
from tests.support import allow_origin, create, settings_override

# One Chromium and one tenant for every browser test (package fixtures in conftest.py): on one worker, made once.
pytestmark = pytest.mark.one_worker("chromium")

# What OHIF 3.x reads from its app configuration and does not run without (found by running @ohif/app 3.13.2:
# appInit iterates extensions and modes; without showStudyList there is no route at /), and the OIDC client's
# settings that keep a session alive and let it end against Entra.
OHIF_NEEDS = ("routerBasename", "extensions", "modes", "showStudyList", "oidc", "defaultDataSourceName", "dataSources")
OIDC_NEEDS = ("authority", "client_id", "redirect_uri", "response_type", "scope", "revokeAccessTokenOnSignout",
              "loadUserInfo", "post_logout_redirect_uri")
LIFETIME = 62  # seconds: oidc-client renews 60 s before expiry, so every 2 s here


@pytest.fixture(scope="module")
def ohif_config(browser_api, lt, viewer, user_reads_dicom) -> dict:
    """A public SPA registration for the viewer's origin (its callback, and where to come back after
    sign-out), the signed-in user's DICOM Data Reader role and the origin in the service's CORS, as an
    administrator sets them up; the config as the API returns it."""
    with settings_override(ALLOWED_REDIRECT_HOSTS="localhost"):
        name = f"browser-ohif-{uuid.uuid4().hex[:6]}"  # fresh each time the fixture is made (xdist may remake it)
        create(browser_api, {"type": "public", "name": name, "displayName": "OHIF viewer", "dicomService": "managed",
                     "platform": "spa", "redirectUris": [f"{viewer.origin}/callback", f"{viewer.origin}/"],
                     "signInGroups": [lt.seed.group.object_id]})
    response = browser_api.get(f"/registrations/{name}/config/ohif")
    assert response.status_code == 200, response.text
    config = response.json()
    allow_origin(lt, config["corsOrigin"])
    return config


def test_the_config_has_every_field_ohif_needs(ohif_config):
    missing = [key for key in OHIF_NEEDS if key not in ohif_config]
    missing += [f"oidc.{key}" for key in OIDC_NEEDS if key not in ohif_config["oidc"][0]]
    assert not missing, f"/config/ohif lost {missing}: OHIF 3.x does not run as given without them"
    assert ohif_config["extensions"] == [] and ohif_config["modes"] == [] and ohif_config["showStudyList"] is True
    oidc = ohif_config["oidc"][0]
    assert "offline_access" in oidc["scope"].split() and oidc["revokeAccessTokenOnSignout"] is False
    assert oidc["loadUserInfo"] is False and oidc["post_logout_redirect_uri"] == ohif_config["corsOrigin"] + "/"


def _image_rendered(chromium) -> bool:
    """The viewport's largest canvas shows an image: many distinct grey levels where it is drawn. (The
    viewer redraws its canvases as it loads: a canvas gone meanwhile is looked up again.)"""
    try:
        canvases = [c for c in chromium.driver.find_elements(By.CSS_SELECTOR, "canvas") if c.size["width"] > 200]
        if not canvases:
            return False
        canvas = max(canvases, key=lambda c: c.size["width"] * c.size["height"])
        grey = Image.open(io.BytesIO(canvas.screenshot_as_png)).convert("L")
    except StaleElementReferenceException:
        return False
    return len(grey.getcolors(maxcolors=256) or []) > 32


def _dismiss_notices(d) -> None:
    """The viewer's first-run tour and its investigational-use banner cover the page: close them as a person
    would."""
    for label in ("Skip all", "Confirm and hide"):
        for element in d.find_elements(By.XPATH, f"//*[normalize-space()='{label}']"):
            try:
                if element.is_displayed():
                    element.click()
            except (StaleElementReferenceException, ElementClickInterceptedException):
                pass


@pytest.mark.slow(12)
def test_sign_in_list_open_renew_and_sign_out(chromium, viewer, lt, ohif_config, stored_study):
    d = chromium.driver
    viewer.serve(ohif_config)
    lt.set_settings({"accessTokenLifetimeSeconds": LIFETIME})
    chromium.reset()
    try:
        d.get(f"{viewer.origin}/")
        sign_in_on_the_page(chromium, lt, "ohif")
        patient = str(dcmread(STUDY).PatientName)
        wait_for(lambda: patient.split("^")[0] in d.find_element(By.TAG_NAME, "body").text, 60,
                 f"the study list to show {patient}")
        chromium.shot("ohif-04-study-list")
        console, failed = chromium.errors()
        assert not failed and not console, (failed, console)

        d.find_element(By.XPATH, f"//td[contains(., '{patient.split('^')[0]}')]").click()
        wait_for(lambda: d.find_elements(By.XPATH, "//button[normalize-space()='Basic Viewer']"), 10,
                 "the study's workflows")
        d.find_element(By.XPATH, "//button[normalize-space()='Basic Viewer']").click()
        wait_for(lambda: _image_rendered(chromium), 60, "the CT image in the viewport")
        chromium.shot("ohif-05-image")
        console, failed = chromium.errors()
        assert not failed and not console, (failed, console)

        # The access token expires (the lt's clock jumps past its lifetime, so the DICOM service refuses
        # every token issued so far); the viewer renews with its refresh token, without a reload, and the
        # study list (QIDO-RS with the renewed token) still loads.
        calls = lambda name: lt.stats()["calls"].get(name, 0)  # noqa: E731
        renewals, authorizations = calls("entra.token"), calls("entra.authorize")
        wait_for(lambda: calls("entra.token") > renewals, 15, "a renewal")
        lt.advance_clock(LIFETIME + 1)
        after = calls("entra.token")
        wait_for(lambda: calls("entra.token") > after, 15, "a renewal after expiry")
        assert calls("entra.authorize") == authorizations  # renewed with the refresh token, not a hidden iframe
        chromium.clear_logs()
        d.execute_script("window.history.back()")
        wait_for(lambda: d.find_elements(By.XPATH, f"//td[contains(., '{patient.split('^')[0]}')]"), 30,
                 "the study list after the token expired")
        chromium.shot("ohif-06-renewed")
        console, failed = chromium.errors()
        assert not failed and not console, (failed, console)

        _dismiss_notices(d)
        d.find_element(By.XPATH, "//button[@aria-label='Open settings']").click()
        wait_for(lambda: d.find_elements(By.XPATH, "//*[normalize-space()='Logout']"), 10, "the Logout entry")
        chromium.shot("ohif-07-menu")
        d.find_element(By.XPATH, "//*[normalize-space()='Logout']").click()
        # The lt ends its session and returns the browser to the registered post-logout URI; the viewer,
        # signed out, sends it to sign in again, and with no session left the lt asks for the account.
        wait_for(lambda: calls("entra.logout") == 1, 15, "the logout request")
        wait_for(lambda: d.find_elements(By.ID, "i0116"), 30, "the sign-in page after sign-out")
        chromium.shot("ohif-08-signed-out")
        assert d.current_url.startswith(f"{lt.authority}/oauth2/v2.0/authorize")
        assert not d.find_elements(By.XPATH, "//*[normalize-space()='Pick an account']")
        console, failed = chromium.errors()
        assert not failed and not console, (failed, console)
    finally:
        lt.set_settings({})
