"""What the API says about a registration: the Registration body read back from its application object, and
the client configuration inside it.

Pure rendering, no remote calls: a GET costs only the reads that found the application, and the same view
serves a create's answer, a GET, a list entry and the sweep's report.
"""

from __future__ import annotations

import base64
from collections.abc import Callable

from . import manifest as mf
from .dicom import client_config
from .problems import NotReady
from .settings import Settings


def registration_name(prefix: str, app: dict) -> str:
    """The name a caller used: the application's uniqueName without this API's prefix."""
    unique = app.get("uniqueName") or ""
    return unique[len(prefix) + 1:] if unique.startswith(prefix + "-") else unique


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

    def name_of(self, app: dict) -> str:
        return registration_name(self.settings.name_prefix, app)

    def view(self, app: dict, *, sp_id: str | None = None, credential: dict | None = None,
             with_config: bool = True) -> dict:
        """The Registration body. `credential` is what the caller just learned (a create's new secret, a
        federated credential read from Graph); without it the reference is rebuilt from the app."""
        tags = mf.tag_values(app)
        name = self.name_of(app)
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
            "platform": fields["platform"] or ("web" if reg_type == "confidential" else None),
            "redirectUris": fields["redirectUris"],
            "identifierUri": fields["identifierUri"],
            # The Key Vault version is for the credential list; a Registration names the secret, not a version.
            "credential": {k: v for k, v in (credential or {}).items() if k != "keyVaultSecretVersion"} or None,
            "autoRotate": (tags.get("autorotate") == "true") if kind else None,
            "secretReaders": mf.tag_list(app, "reader"),
            "requestedBy": tags.get("requester"),
            "notes": fields["notes"],
            "createdDateTime": app.get("createdDateTime"),
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
        reference = {"kind": kind, "keyVaultSecretUri": self._secret_uri(secret_name),
                     "keyVaultSecretName": secret_name}
        ours = mf.our_credentials(app, kind)
        if ours:
            newest = max(ours, key=lambda c: c.get("startDateTime") or "")
            reference.update(keyId=newest["keyId"], endDateTime=newest.get("endDateTime"))
            if kind == "certificate" and newest.get("customKeyIdentifier"):
                # Graph keeps the certificate's SHA-1 thumbprint, base64, as customKeyIdentifier.
                reference["thumbprint"] = base64.b64decode(newest["customKeyIdentifier"]).hex().upper()
        return reference
