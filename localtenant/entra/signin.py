"""The sign-in pages a browser meets at /authorize, and the sign-in session behind them.

What a person sees, as Entra shows it ("Sign-in experience", "User and admin consent", docs/local-tenant.md
"Fidelity: the browser"): an account to choose (the account already signed in in this browser, or another),
the account's password, a consent prompt for scopes nobody consented to yet (a user consents for themself,
"User and admin consent"; a scope only an administrator may consent to shows "Need admin approval",
AADSTS90094), and Entra's error page for a user the application is not assigned to (AADSTS50105). A signed-in
browser keeps a session cookie, so the next /authorize signs it in without a page (single sign-on) unless
`prompt=login` or `prompt=select_account`; `prompt=none` never shows a page (AADSTS50058 without a session).
The logout endpoint ends the session. Element ids are Entra's own (i0116 account, i0118 password, idSIButton9
next/accept, idBtn_Back cancel), so a browser test reads like one written against Entra.
"""
from __future__ import annotations

import html
import secrets
from typing import Any

from ..graph.objects import password_hash
from . import exceptions as ex

SESSIONS, FLOWS = "signInSessions", "signInFlows"
COOKIE = "ESTSAUTH"
SESSION_LIFETIME = 24 * 3600
FLOW_LIFETIME = 600


class SignIn:
    def __init__(self, core) -> None:
        self.core = core

    @property
    def directory(self):
        return self.core.graph

    # -- session -------------------------------------------------------------------------------------------
    def session_user(self, cookie: str | None) -> dict[str, Any] | None:
        record = self.core.store.get(SESSIONS, cookie) if cookie else None
        if record is None or record["exp"] <= self.directory.now():
            return None
        return self.directory.user(record["user_id"])

    def start_session(self, user: dict[str, Any]) -> str:
        cookie = secrets.token_urlsafe(32)
        self.core.store.put(SESSIONS, cookie, {"user_id": user["id"], "exp": self.directory.now() + SESSION_LIFETIME})
        return cookie

    def end_session(self, cookie: str | None) -> None:
        if cookie:
            self.core.store.delete(SESSIONS, cookie)

    # -- a sign-in in progress -----------------------------------------------------------------------------
    def new_flow(self, params: dict[str, str]) -> str:
        flow = secrets.token_urlsafe(24)
        self.core.store.put(FLOWS, flow, {"params": params, "exp": self.directory.now() + FLOW_LIFETIME})
        return flow

    def flow(self, flow: str | None) -> dict[str, str]:
        record = self.core.store.get(FLOWS, flow) if flow else None
        if record is None or record["exp"] <= self.directory.now():
            raise ex.EntraError(50089, "invalid_request", "Flow token expired: the sign-in took too long. Go back "
                                "to the application and sign in again.")
        return record["params"]

    def check_password(self, login: str, password: str) -> dict[str, Any]:
        user = self.directory.user(login) if login else None
        if user is None or not user.get("_hash") or password_hash(user["_salt"], password) != user["_hash"]:
            raise ex.bad_password()
        return user


# -- pages ---------------------------------------------------------------------------------------------------
_STYLE = ("body{font-family:'Segoe UI',sans-serif;background:#f2f2f2;margin:0}main{background:#fff;width:380px;"
          "margin:60px auto;padding:44px;box-shadow:0 2px 6px rgba(0,0,0,.2)}h1{font-size:24px;font-weight:600}"
          "input[type=email],input[type=password]{width:100%;padding:6px 0;border:0;border-bottom:1px solid #666;"
          "font-size:15px;margin:12px 0}button{background:#0067b8;color:#fff;border:0;padding:8px 24px;"
          "font-size:15px;cursor:pointer;margin-right:8px}button.secondary{background:#ccc;color:#000}"
          ".tile{display:block;width:100%;text-align:left;background:#fff;color:#000;border:1px solid #ccc;"
          "margin:8px 0}.error{color:#e81123}.code{color:#666;font-size:12px}li{margin:4px 0}")


def _page(title: str, body: str, *, page_id: str) -> str:
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><link rel='icon' href='data:,'><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body><main id='{page_id}'><p class='code'>Local tenant</p>"
            f"<h1>{html.escape(title)}</h1>{body}</main></body></html>")


def _hidden(flow: str, **extra: str) -> str:
    fields = {"flow": flow, **extra}
    return "".join(f"<input type='hidden' name='{k}' value='{html.escape(v, quote=True)}'>" for k, v in fields.items())


def account_page(tenant: str, flow: str, *, hint: str = "", accounts: list[dict[str, Any]] = (),
                 error: str = "") -> str:
    """Pick an account: the one signed in in this browser, or type another."""
    tiles = "".join(f"<button class='tile' type='submit' name='account' value='{html.escape(a['userPrincipalName'], True)}'"
                    f" data-test-id='{html.escape(a['userPrincipalName'], True)}'>{html.escape(a.get('displayName') or '')}"
                    f"<br>{html.escape(a['userPrincipalName'])}<br><span class='code'>Signed in</span></button>"
                    for a in accounts)
    picker = (f"<p>Pick an account</p><form method='post' action='/{tenant}/login'>{_hidden(flow)}{tiles}</form>"
              "<p>Or use another account:</p>") if accounts else ""
    problem = f"<p class='error' id='usernameError'>{html.escape(error)}</p>" if error else ""
    return _page("Sign in", f"{picker}{problem}<form method='post' action='/{tenant}/login' id='signin'>"
                 f"{_hidden(flow)}<input type='email' name='login' id='i0116' placeholder='Email, phone, or Skype' "
                 f"value='{html.escape(hint, True)}' autocomplete='username' required>"
                 "<button type='submit' id='idSIButton9'>Next</button></form>", page_id="signin-account")


def password_page(tenant: str, flow: str, login: str, *, error: str = "") -> str:
    problem = f"<p class='error' id='passwordError'>{html.escape(error)}</p>" if error else ""
    return _page("Enter password", f"<p id='displayName'>{html.escape(login)}</p>{problem}"
                 f"<form method='post' action='/{tenant}/login' id='signin'>{_hidden(flow, login=login)}"
                 "<input type='password' name='passwd' id='i0118' placeholder='Password' "
                 "autocomplete='current-password' required>"
                 "<button type='submit' id='idSIButton9'>Sign in</button></form>", page_id="signin-password")


def consent_page(tenant: str, flow: str, missing: dict[str, Any]) -> str:
    by_value = {s["value"]: s for s in missing["resource"].get("oauth2PermissionScopes", [])}
    items = "".join(f"<li data-scope='{html.escape(v, True)}'>"
                    f"{html.escape(by_value.get(v, {}).get('userConsentDisplayName') or v)}</li>"
                    for v in missing["scopes"])
    app = missing["app"]
    return _page("Permissions requested",
                 f"<p><b id='appName'>{html.escape(app.get('displayName') or app['appId'])}</b> (unverified) "
                 f"would like to access {html.escape(missing['resource'].get('displayName') or '')}:</p>"
                 f"<ul id='scopes'>{items}</ul><p>Accepting lets this app use your data as its terms say. "
                 f"Only you consent: nobody else in the organization is affected.</p>"
                 f"<form method='post' action='/{tenant}/consent' id='consent'>{_hidden(flow)}"
                 "<button type='submit' name='accept' value='true' id='idSIButton9'>Accept</button>"
                 "<button type='submit' name='accept' value='false' id='idBtn_Back' class='secondary'>Cancel"
                 "</button></form>", page_id="consent")


def error_page(err: ex.EntraError) -> str:
    return _page("Sign in", f"<p>Sorry, but we’re having trouble signing you in.</p>"
                 f"<p class='error' id='error-code'>AADSTS{err.code}</p>"
                 f"<p id='error-message'>{html.escape(err.description)}</p>", page_id="error")


def signed_out_page(note: str = "") -> str:
    return _page("You signed out of your account", "<p>It’s a good idea to close all browser windows.</p>"
                 + (f"<p class='code' id='note'>{html.escape(note)}</p>" if note else ""), page_id="signed-out")
