"""Key Vault errors: `{"error": {"code", "message", "innererror"?}}` ("Azure Key Vault REST API reference",
common error codes), with its one serializer."""
from __future__ import annotations

from starlette.responses import JSONResponse

from ..runtime import InjectedFault


class KeyVaultError(Exception):
    def __init__(self, status: int, code: str, message: str, *, inner: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.inner, self.headers = status, code, message, inner, headers or {}


def not_found(name: str, what: str = "secret") -> KeyVaultError:
    code = "SecretNotFound" if what == "secret" else "DeletedSecretNotFound" if what == "deleted" else "NotFound"
    noun = "Deleted Secret" if what == "deleted" else "A secret with (name/id)"
    return KeyVaultError(404, code, f"{noun} {name} was not found in this key vault. If you recently deleted "
                         "this secret you may be able to recover it using the correct recovery command. For help "
                         "resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182")


def bad_parameter(message: str) -> KeyVaultError:
    return KeyVaultError(400, "BadParameter", message)


def from_fault(fault: InjectedFault) -> KeyVaultError:
    headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after else {}
    if fault.status == 429:
        # Key Vault throttling: 429 with Retry-After ("Azure Key Vault throttling guidance").
        return KeyVaultError(429, "Throttled", "Rate limit is exceeded. Try again in "
                             f"{fault.retry_after} seconds.", headers=headers)
    return KeyVaultError(fault.status, "ServiceUnavailable" if fault.status == 503 else "InternalServerError",
                         "Injected failure.", headers=headers)


def render(err: KeyVaultError, req) -> JSONResponse:
    error: dict = {"code": err.code, "message": err.message}
    if err.inner:
        error["innererror"] = {"code": err.inner}
    headers = {"x-ms-request-id": req.request_id, "x-ms-keyvault-service-version": "1.9.0.0", **err.headers}
    return JSONResponse({"error": error}, status_code=err.status, headers=headers)
