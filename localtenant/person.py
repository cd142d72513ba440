"""A person at the local tenant's sign-in pages, over plain HTTPS: what a test or a script that has no browser
does with an authorize URL. It reads each page's form and posts it as a browser would (account, password,
consent when asked), keeps the session cookie, and stops where the browser would leave the login origin (the
redirect to the client, with its code or error) or at a page a person must read (an error, or a consent
prompt it was not told how to answer)."""
from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from html import unescape
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx

_MAIN = re.compile(r"<main id='([^']+)'")
_FORM = re.compile(r"<form method='post' action='([^']+)'[^>]*id='(signin|consent)'>(.*?)</form>", re.S)
_HIDDEN = re.compile(r"<input type='hidden' name='([^']+)' value='([^']*)'>")
_ERROR = re.compile(r"id='error-code'>AADSTS(\d+)<")


@dataclass
class SignInResult:
    landing: str | None  # where the browser was sent back to the client (its redirect URI), if it was
    page: str | None  # else the page it stopped at: "consent", "error", "signin-password" (wrong password)
    error_code: int | None
    html: str

    @property
    def query(self) -> dict[str, str]:
        """The landing address's query (code and state, or error and error_description)."""
        assert self.landing is not None, f"the sign-in stopped at the {self.page} page: {self.html[:500]}"
        return {k: v[0] for k, v in parse_qs(urlsplit(self.landing).query).items()}


def sign_in(auth_uri: str, *, ca_file: str, user: str, password: str, consent: bool | None = None,
            client: httpx.Client | None = None) -> SignInResult:
    """Follow `auth_uri` as `user`. `consent`: True accepts a consent prompt, False cancels it, None stops
    there. Pass `client` to keep its cookies (a browser already signed in)."""
    own = client is None
    browser = client or httpx.Client(verify=ssl.create_default_context(cafile=ca_file), trust_env=False)
    login_origin = _origin(auth_uri)
    try:
        response = browser.get(auth_uri, headers={"Accept": "text/html"})
        for _ in range(10):
            if response.status_code in (301, 302, 303):
                location = urljoin(str(response.url), response.headers["location"])
                if _origin(location) != login_origin:
                    return SignInResult(location, None, None, "")
                response = browser.get(location, headers={"Accept": "text/html"})
                continue
            text = response.text
            found = _MAIN.search(text)
            page = found.group(1) if found else None
            if page == "error" or page is None:
                code = _ERROR.search(text)
                return SignInResult(None, page or "unknown", int(code.group(1)) if code else None, text)
            form = _FORM.search(text)
            fields: dict[str, Any] = dict(_HIDDEN.findall(form.group(3))) if form else {}
            fields = {k: unescape(v) for k, v in fields.items()}
            if page == "signin-account":
                fields["login"] = user
            elif page == "signin-password":
                if response.status_code != 200:  # the password was refused
                    return SignInResult(None, page, 50126, text)
                fields["passwd"] = password
            elif page == "consent":
                if consent is None:
                    return SignInResult(None, page, None, text)
                fields["accept"] = "true" if consent else "false"
            else:
                return SignInResult(None, page, None, text)
            response = browser.post(urljoin(str(response.url), unescape(form.group(1))), data=fields,
                                    headers={"Accept": "text/html"})
        raise AssertionError("the sign-in pages went round in circles")
    finally:
        if own:
            browser.close()


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
