"""What the API says about a registration: the Registration body read back from its application object, and
the configuration a client needs to call its DICOM service, rendered as JSON, env lines or MSAL arguments.

Pure rendering, no remote calls: a GET costs only the reads that found the application, and the same view
serves a create's answer, a GET, a list entry and the sweep's report. The configuration carries references
only: a client secret is named by its Key Vault URI, never included.
"""

from __future__ import annotations

import base64
import json
import shlex
from urllib.parse import urlsplit
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import manifest as mf
from .kinds import (MANAGED_DELEGATED_SCOPE, OSS_ACCESS_ROLES, OSS_DELEGATED_SCOPE, PLANS, REFRESH_TOKEN_LIFETIME,
                    REFRESH_TOKEN_LIFETIMES, oss_roles_json)
from .problems import NotReady, ValidationProblem
from .settings import ManagedTarget, OssTarget, Settings


def federated_reference(fic: dict) -> dict:
    """A federated identity credential as the Registration's `credential` shows it."""
    return {"kind": "federated", "keyId": fic.get("id"), "issuer": fic.get("issuer"),
            "subject": fic.get("subject"), "audience": (fic.get("audiences") or [None])[0]}


def config_of(view: dict, name: str) -> dict:
    """The client configuration of a view; a registration whose DICOM service left the settings has none."""
    if view.get("config") is None:
        raise NotReady(f"registration {name!r} names a DICOM service that is no longer configured")
    return view["config"]


class RegistrationViews:
    def __init__(self, settings: Settings, *, secret_uri: Callable[[str], str]) -> None:
        self.settings = settings
        self._secret_uri = secret_uri

    def view(self, app: dict, *, sp_id: str | None = None, credential: dict | None = None,
             with_config: bool = True) -> dict:
        """The Registration body. `credential` is what the caller just learned (a create's new secret, a
        federated credential read from Graph); without it the reference is rebuilt from the app."""
        tags = mf.tag_values(app)
        name = mf.registration_name(self.settings.name_prefix, app)
        fields = mf.stored_fields(app)
        reg_type = fields["type"]
        kind = tags.get("credential")
        if credential is None:
            credential = self._stored_reference(app, name, kind)
        required = app.get("requiredResourceAccess") or []
        view = {
            "name": name,
            "type": reg_type,
            "displayName": app.get("displayName"),
            "dicomService": fields["dicomService"],
            "state": tags.get("state", "provisioning"),
            "appId": app["appId"],
            "objectId": app["id"],
            "servicePrincipalId": sp_id or tags.get("sp"),
            "access": fields["access"],
            "platform": fields["platform"],
            "redirectUris": fields["redirectUris"],
            "identifierUri": fields["identifierUri"],
            # The Key Vault version is for the credential list; a Registration names the secret, not a version.
            "credential": {k: v for k, v in (credential or {}).items() if k != "keyVaultSecretVersion"} or None,
            "autoRotate": (tags.get("autorotate") == "true") if kind else None,
            "secretReaders": mf.tag_list(app, "reader"),
            "owners": fields["owners"],
            "signInGroups": mf.tag_list(app, "signin"),
            "requestedBy": tags.get("requester"),
            "notes": fields["notes"],
            "createdDateTime": app.get("createdDateTime"),
            "etag": mf.entity_tag(app),
        }
        if with_config:
            target = self.settings.target(view["dicomService"])
            if target is not None:
                view["config"] = client_config(self.settings, {
                    **view, "secret": view["credential"],
                    "resourceAppId": required[0]["resourceAppId"] if required else None,
                }, target)
        return view

    def _stored_reference(self, app: dict, name: str, kind: str | None) -> dict | None:
        """Where the newest secret or certificate lives, from the app's own credentials."""
        if kind == "federated":
            return {"kind": "federated"}
        if kind not in mf.STORED_KINDS:
            return None
        secret_name = mf.secret_name(self.settings.name_prefix, name, kind)
        reference: dict[str, Any] = {"kind": kind, "keyVaultSecretUri": self._secret_uri(secret_name),
                     "keyVaultSecretName": secret_name}
        ours = mf.our_credentials(app, kind)
        if ours:
            newest = max(ours, key=lambda c: c.get("startDateTime") or "")
            reference.update(keyId=newest["keyId"], endDateTime=newest.get("endDateTime"))
            if kind == "certificate" and newest.get("customKeyIdentifier"):
                # Graph keeps the certificate's SHA-1 thumbprint, base64, as customKeyIdentifier.
                reference["thumbprint"] = base64.b64decode(newest["customKeyIdentifier"]).hex().upper()
        return reference


# ----------------------------------------------------------------------------- the client configuration
def scopes_for(target: ManagedTarget | OssTarget, resource_app_id: str | None, *, app_only: bool) -> list[str]:
    """The scopes a client asks for: `.default` for client credentials, the delegated scope otherwise.

    For the open-source server the resource is named by its appId, which Entra accepts in place of the
    identifier URI and which the resource's v2 tokens carry as `aud`.
    """
    resource = target.audience if isinstance(target, ManagedTarget) else resource_app_id
    if app_only:
        return [f"{resource}/.default"]
    scope = MANAGED_DELEGATED_SCOPE if isinstance(target, ManagedTarget) else OSS_DELEGATED_SCOPE
    return [f"{resource}/{scope}"]


def client_config(settings: Settings, reg: dict[str, Any], target: ManagedTarget | OssTarget) -> dict[str, Any]:
    """``reg`` holds name, type, appId, redirectUris, identifierUri, resourceAppId and secret (a reference)."""
    authority = settings.authority
    plan = PLANS[reg["type"]]
    config: dict[str, Any] = {
        "registration": reg["name"],
        "type": reg["type"],
        "tenantId": settings.tenant_id,
        "clientId": reg["appId"],
        "authority": authority,
        "tokenEndpoint": f"{authority}/oauth2/v2.0/token",
        "dicomService": {
            "name": reg["dicomService"],
            "kind": target.kind,
            "baseUrl": target.base_url,
        },
    }
    if plan.exposes_api:
        return _resource_config(settings, reg, config)
    scopes = scopes_for(target, reg.get("resourceAppId"), app_only=plan.app_only)
    config["flow"] = plan.flow
    config["scopes"] = scopes
    if plan.flow != "client_credentials":
        config["authorizeEndpoint"] = f"{authority}/oauth2/v2.0/authorize"
        config["redirectUris"] = reg.get("redirectUris") or []
        # Entra gives every authorization-code client refresh tokens (with offline_access), public ones too.
        config["refreshTokens"] = True
        config["refreshTokenLifetime"] = REFRESH_TOKEN_LIFETIMES.get(reg.get("platform") or "",
                                                                     REFRESH_TOKEN_LIFETIME)
    if plan.flow == "authorization_code_pkce":
        config["pkce"] = {"codeChallengeMethod": "S256"}
        config["platform"] = reg.get("platform") or "spa"
    credential = reg.get("secret") or {}
    kind = credential.get("kind", "secret") if credential else None
    if kind in mf.STORED_KINDS:
        reference = {
            "keyVaultSecretUri": credential["keyVaultSecretUri"],
            "keyVaultSecretName": credential["keyVaultSecretName"],
            # Paste into a Function/App Service app setting to have the platform resolve it.
            "appSettingReference": f"@Microsoft.KeyVault(SecretUri={credential['keyVaultSecretUri']})",
        }
        if kind == "certificate":
            # Key Vault holds the private key and certificate as one PEM; msal signs a client assertion.
            reference.update(contentType="application/x-pem-file", thumbprint=credential.get("thumbprint"))
            config["clientCertificate"] = reference
        else:
            config["clientSecret"] = reference
    elif kind == "federated":
        config["federatedCredential"] = {
            k: credential.get(k) for k in ("issuer", "subject", "audience") if credential.get(k)}
    config["msal"] = _msal(plan.flow, reg["appId"], authority, scopes, kind, credential.get("thumbprint"))
    return config


# What to pass as msal's client_credential, per credential kind ("<...>" is read at run time).
_MSAL_CREDENTIAL: dict[str, Any] = {
    "secret": "<the Key Vault secret's value>",
    "certificate": {"private_key": "<the Key Vault secret's PEM>", "thumbprint": None},
    # A callable: msal asks it for a fresh token whenever it needs one (a token read once would expire).
    "federated": {"client_assertion": "<a function returning a fresh token from the trusted issuer for the subject>"},
}


# Entra ID's sign-in hosts in Microsoft's clouds (the national clouds page of the identity platform docs; msal
# keeps the same list as its well-known authority hosts). msal checks any other host with "instance
# discovery" at login.microsoftonline.com unless told not to (its `instance_discovery` parameter).
MICROSOFT_LOGIN_HOSTS = frozenset({
    "login.microsoftonline.com", "login.microsoft.com", "login.windows.net", "sts.windows.net",
    "login.microsoftonline.us", "login.usgovcloudapi.net", "login-us.microsoftonline.com",
    "login.chinacloudapi.cn", "login.partner.microsoftonline.cn", "login.microsoftonline.de",
})


def _msal(flow: str | None, client_id: str, authority: str, scopes: list[str], kind: str | None,
          thumbprint: str | None = None) -> dict[str, Any]:
    confidential = flow != "authorization_code_pkce"
    kwargs: dict[str, Any] = {"client_id": client_id, "authority": authority}
    if urlsplit(authority).hostname not in MICROSOFT_LOGIN_HOSTS:
        # Another host (the local tenant, say) is not one Microsoft's discovery endpoint knows, and may not
        # reach it at all: msal must use the authority as given.
        kwargs["instance_discovery"] = False
    msal: dict[str, Any] = {
        "application": "ConfidentialClientApplication" if confidential else "PublicClientApplication",
        "kwargs": kwargs,
        "scopes": scopes,
        "acquire": "acquire_token_for_client" if flow == "client_credentials" else "initiate_auth_code_flow",
    }
    if kind:
        msal["clientCredential"] = dict(_MSAL_CREDENTIAL[kind], thumbprint=thumbprint) if kind == "certificate" \
            else _MSAL_CREDENTIAL[kind]
        msal["clientCredentialFromKeyVault"] = kind != "federated"
    return msal


def _resource_config(settings: Settings, reg: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    issuer_authority = f"{settings.authority}/v2.0"
    config.update(
        identifierUri=reg.get("identifierUri"),
        # The resource asks for v2 tokens: aud is its appId and iss is the v2 issuer.
        audience=reg["appId"],
        issuer=issuer_authority,
        appRoles=list(OSS_ACCESS_ROLES.values()),
        # The server's roles.json must define these roles (the shipped file lacks globalWriter).
        rolesJson=oss_roles_json(),
        scopes=[f"{reg['appId']}/{OSS_DELEGATED_SCOPE}", f"{reg['appId']}/.default"],
        dicomServerSettings={
            "DicomServer__Security__Enabled": "true",
            "DicomServer__Security__Authentication__Audience": reg["appId"],
            "DicomServer__Security__Authentication__Authority": issuer_authority,
            "DicomServer__Security__Authorization__Enabled": "true",
        },
    )
    return config


@dataclass(frozen=True)
class Format:
    """One way to render a client configuration. Each format is its own route segment and its own operation in
    the OpenAPI documents (one content type per response, which generated clients need)."""

    content_type: str
    title: str  # the operation's summary ends "… as {title}"
    render: Callable[[dict[str, Any]], str]

    @property
    def is_json(self) -> bool:
        return self.content_type.split(";")[0] == "application/json"


# The one list of configuration formats: the route, the handler and both OpenAPI documents read it.
FORMATS: dict[str, Format] = {
    "json": Format("application/json", "JSON", lambda config: json.dumps(config, indent=2)),
    "env": Format("text/plain; charset=utf-8", "environment lines", lambda config: _env_lines(config)),
    "msal": Format("application/json", "MSAL arguments", lambda config: json.dumps(config.get("msal") or {}, indent=2)),
    "dicomweb-client": Format("application/json", "a DICOMweb client script",
                              lambda config: json.dumps(dicomweb_client_config(config), indent=2)),
    "ohif": Format("application/json", "an OHIF viewer configuration",
                   lambda config: json.dumps(ohif_config(config), indent=2)),
}


def render(config: dict[str, Any], fmt: str) -> tuple[str, str]:
    """Return (body, content type) in the asked-for format (a key of FORMATS); a format that does not apply to
    the registration's type is a 422 naming the ones that do."""
    formats = PLANS[config["type"]].formats
    if fmt not in formats:
        raise ValidationProblem(
            f"format {fmt!r} does not apply to a {config['type']} registration; use {', '.join(formats)}",
            errors=[{"loc": ["path", "format"], "msg": f"must be one of {', '.join(formats)} for this type"}],
            allowedFormats=list(formats))
    found = FORMATS[fmt]
    return found.render(config), found.content_type


def dicomweb_client_config(config: dict[str, Any]) -> dict[str, Any]:
    """What dicomweb-client needs (its DICOMwebClient takes the service's base URL and a requests session that
    carries the bearer token), and a Python script that gets the token with msal the way this registration
    signs in: client credentials with its Key Vault secret or certificate, or its federated assertion (service
    clients), or interactively with PKCE (public clients). Run with a DICOM file's path, it stores it (STOW-RS)
    and reads it back (WADO-RS); without, it searches (QIDO-RS)."""
    base, scopes, authority = config["dicomService"]["baseUrl"], config["scopes"], config["authority"]
    # msal and azure-identity check an authority they do not know against Microsoft's instance discovery
    # (at login.microsoftonline.com); one that is not Microsoft's (the local tenant) is not there, so both
    # are told not to ask, whoever runs the script: the API's own identity or the workload's secret.
    foreign = urlsplit(authority).hostname not in MICROSOFT_LOGIN_HOSTS
    msal_extra = ", instance_discovery=False" if foreign else ""
    identity_args = "disable_instance_discovery=True" if foreign else ""
    lines = ["import sys", "", "import msal", "import pydicom", "import requests",
             "from dicomweb_client.api import DICOMwebClient", ""]
    if config["flow"] == "client_credentials":
        reference = config.get("clientSecret") or config.get("clientCertificate")
        if reference:
            vault = "/".join(reference["keyVaultSecretUri"].split("/", 3)[:3])
            lines[5:5] = ["from azure.identity import DefaultAzureCredential",
                          "from azure.keyvault.secrets import SecretClient"]
            # SecretClient checks that the vault's challenge names the vault's own host: not so on loopback
            check = ", verify_challenge_resource=False" if _loopback(vault) else ""
            lines += [f"stored = SecretClient({vault!r}, DefaultAzureCredential({identity_args}){check})"
                      f".get_secret({reference['keyVaultSecretName']!r}).value"]
            credential = "stored" if "clientSecret" in config else \
                f"{{'private_key': stored, 'thumbprint': {reference.get('thumbprint')!r}}}"
        else:  # federated: the workload's token from its issuer (AKS workload identity writes it to a file and
            # renews it there), read afresh whenever msal needs an assertion: a token read once expires
            lines[:0] = ["import os"]
            lines += ["def assertion():", "    with open(os.getenv('AZURE_FEDERATED_TOKEN_FILE', '')) as token:",
                      "        return token.read()"]
            credential = "{'client_assertion': assertion}"
        lines += [f"app = msal.ConfidentialClientApplication({config['clientId']!r}, client_credential={credential}, "
                  f"authority={authority!r}{msal_extra})",
                  f"result = app.acquire_token_for_client(scopes={scopes!r})"]
    else:
        lines += [f"app = msal.PublicClientApplication({config['clientId']!r}, authority={authority!r}{msal_extra})",
                  f"result = app.acquire_token_interactive(scopes={scopes!r})  # authorization code + PKCE (S256)"]
    lines += ["session = requests.Session()", "session.headers['Authorization'] = 'Bearer ' + result['access_token']",
              f"client = DICOMwebClient(url={base!r}, session=session)",
              "if len(sys.argv) > 1:  # store a DICOM file (STOW-RS) and read it back (WADO-RS)",
              "    ds = pydicom.dcmread(sys.argv[1])",
              "    client.store_instances([ds])",
              "    back = client.retrieve_instance(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)",
              "    print('stored and read back', back.SOPInstanceUID, 'same pixels:', back.PixelData == ds.PixelData)",
              "else:  # search (QIDO-RS)",
              "    print(client.search_for_studies(limit=1))", ""]
    return {"library": "dicomweb-client", "url": base, "tokenScopes": scopes, "clientId": config["clientId"],
            "authority": authority, "python": "\n".join(lines)}


def _loopback(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return host == "localhost" or host.startswith("127.") or host == "::1"


def ohif_config(config: dict[str, Any]) -> dict[str, Any]:
    """The OHIF viewer (3.x; `loadUserInfo: false` is honoured from 3.10, tested with 3.13.2) app configuration
    for a public SPA registration, to be served as the viewer's `app-config.js` (`window.config = <this>;`):
    its OpenID Connect client (authorization code with PKCE, response_type code; OHIF's Azure guide shows the
    implicit flow, which the registration does not allow) and a DICOMweb data source on the DICOM service
    ("Microsoft Azure" in OHIF's deployment docs). `offline_access` gives a refresh token, so the viewer renews
    its access token without a hidden iframe (whose silent-refresh.html would need registering); Entra's
    metadata has no revocation endpoint, so sign-out must not revoke; Entra's v2 userinfo is Graph's, which a
    DICOM-scoped token cannot read, so no userinfo. OHIF's Logout sends the browser back to the viewer's root
    (`{origin}/`, whatever the config says) and Entra returns it only to a registered redirect URI: so the
    root is named as post_logout_redirect_uri when the registration holds it (register it beside the
    callback); without, the browser stays on Entra's signed-out page. The DICOM service must allow the
    viewer's origin in its CORS configuration."""
    if config.get("platform") != "spa":  # the plan allows ohif for public clients: the SPA ones among them
        raise ValidationProblem("format 'ohif' is for public clients on the spa platform; this one is "
                                f"{config.get('platform')}", allowedFormats=["json", "env", "msal", "dicomweb-client"],
                                errors=[{"loc": ["query", "format"], "msg": "ohif is for spa clients"}])
    base = config["dicomService"]["baseUrl"]
    redirect = config["redirectUris"][0]
    origin = "/".join(redirect.split("/", 3)[:3])
    after_logout = origin + "/" if origin + "/" in config["redirectUris"] else None
    oidc = {
        "authority": f"{config['authority']}/v2.0/",
        "client_id": config["clientId"],
        "redirect_uri": redirect,
        "response_type": "code",
        "scope": " ".join(["openid", "offline_access", *config["scopes"]]),
        "automaticSilentRenew": True,
        "revokeAccessTokenOnSignout": False,
        "loadUserInfo": False,
    }
    if after_logout:
        oidc["post_logout_redirect_uri"] = after_logout
    return {
        "routerBasename": "/",
        "extensions": [],
        "modes": [],
        "showStudyList": True,
        "oidc": [oidc],
        "defaultDataSourceName": "dicomweb",
        "dataSources": [{
            "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
            "sourceName": "dicomweb",
            "configuration": {
                "friendlyName": f"DICOM service {config['dicomService']['name']}",
                "name": config["dicomService"]["name"],
                "qidoRoot": base, "wadoRoot": base, "wadoUriRoot": base,
                "imageRendering": "wadors", "thumbnailRendering": "wadors",
                "enableStudyLazyLoad": True, "supportsFuzzyMatching": False, "supportsWildcard": True,
                "supportsStow": True, "singlepart": "bulkdata,pdf,video",
            },
        }],
        "corsOrigin": origin,
    }


def _env_lines(config: dict[str, Any]) -> str:
    if "dicomServerSettings" in config:  # a DICOM server's own registration: what the server is configured with
        pairs = dict(config["dicomServerSettings"])
    else:
        pairs = {
            "DICOM_TENANT_ID": config["tenantId"],
            "DICOM_CLIENT_ID": config["clientId"],
            "DICOM_AUTHORITY": config["authority"],
            "DICOM_TOKEN_ENDPOINT": config["tokenEndpoint"],
            "DICOM_SCOPES": " ".join(config["scopes"]),
            "DICOM_BASE_URL": config["dicomService"]["baseUrl"],
        }
        if "authorizeEndpoint" in config:
            pairs["DICOM_AUTHORIZE_ENDPOINT"] = config["authorizeEndpoint"]
            pairs["DICOM_REDIRECT_URI"] = (config["redirectUris"] or [""])[0]
        if "clientSecret" in config:
            pairs["DICOM_CLIENT_SECRET_KEYVAULT_URI"] = config["clientSecret"]["keyVaultSecretUri"]
        if "clientCertificate" in config:
            pairs["DICOM_CLIENT_CERTIFICATE_KEYVAULT_URI"] = config["clientCertificate"]["keyVaultSecretUri"]
            pairs["DICOM_CLIENT_CERTIFICATE_THUMBPRINT"] = config["clientCertificate"]["thumbprint"] or ""
        if "federatedCredential" in config:
            pairs["DICOM_FEDERATED_ISSUER"] = config["federatedCredential"].get("issuer", "")
            pairs["DICOM_FEDERATED_SUBJECT"] = config["federatedCredential"].get("subject", "")
    return "".join(f"{key}={shlex.quote(str(value))}\n" for key, value in pairs.items())
