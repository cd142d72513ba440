"""Errors the adapters raise, matched on HTTP status and the service's error code, never on message text."""

from __future__ import annotations


CONCURRENCY_VIOLATION = "Directory_ConcurrencyViolation"
# Statuses Graph sends Directory_ConcurrencyViolation with: 409 (nais/azurerator issue 448) and 503
# (Azure/azure-cli issue 23081, on addPassword). Either way the write did nothing.
CONCURRENCY_STATUSES = (409, 503)


class UpstreamError(Exception):
    """A remote Azure call failed after the pipeline's own retries."""

    def __init__(self, service: str, operation: str, status: int | None, code: str | None, message: str,
                 details: tuple[str, ...] = ()) -> None:
        super().__init__(f"{service} {operation}: {status} {code}: {message}")
        self.service = service
        self.operation = operation
        self.status = status
        self.code = code
        # Graph's generic codes (Request_BadRequest) are refined in error.details[].code, e.g.
        # NoBackingApplicationObject: match on those, never on the message.
        self.details = details
        self.retry_after: float | None = None  # seconds, when the service said (429/503 Retry-After)

    @property
    def not_done(self) -> bool:
        """The service says it did nothing, so the call can simply be repeated later: throttled (429), or a
        credential write that overlapped another on the same application or came right after one
        (Directory_ConcurrencyViolation, as 409 or 503: "wait briefly and retry")."""
        return self.status == 429 or (self.status in CONCURRENCY_STATUSES and self.code == CONCURRENCY_VIOLATION)

    @property
    def transient(self) -> bool:
        return self.status is None or self.status in (408, 429, 500, 502, 503, 504)

    @property
    def unavailable(self) -> bool:
        """Throttled, down or unreachable: our caller should retry later (503), not give up (502)."""
        return self.status is None or self.status in (429, 503)

    def summary(self) -> dict[str, str | int | None]:
        """What a problem's `upstream` member says about this failure: never the message or a body."""
        return {"service": self.service, "operation": self.operation, "status": self.status, "code": self.code}


class NotFoundError(UpstreamError):
    pass


class ConflictError(UpstreamError):
    pass


# ------------------------------------------------------------------- Entra's and ARM's replication lag
# Which failures mean "not visible yet" right after a write, matched on status and error code (never text).
def lag_404(exc: UpstreamError) -> bool:
    """An object this request just created or changed is not found yet."""
    return exc.status == 404


def lag_new_application(exc: UpstreamError) -> bool:
    """POST /servicePrincipals right after the app was created: Graph has not replicated the app yet."""
    return exc.status == 404 or (exc.status == 400 and "NoBackingApplicationObject" in exc.details)


def lag_new_principal(exc: UpstreamError) -> bool:
    """A grant naming a service principal this request just created, before Graph or ARM can see it."""
    return exc.status == 404 or (exc.status == 400 and exc.code in (
        "Request_BadRequest", "Request_ResourceNotFound", "PrincipalNotFound"))


def lag_new_reader(exc: UpstreamError) -> bool:
    """A secret reader's role assignment while ARM cannot see the principal yet (often one just made)."""
    return exc.status in (400, 404) and exc.code in ("PrincipalNotFound", None)


# ------------------------------------------------------------------------------- "it is there already"
def conflict(exc: UpstreamError) -> bool:
    """The object (or one with its key) exists: what most create calls answer with 409."""
    return exc.status == 409


def name_taken(exc: UpstreamError) -> bool:
    """POST /applications with a uniqueName that a live or deleted application holds: Graph is evidenced
    answering 400 Request_BadRequest with no finer code (msgraph-bicep-types issues 137 and 202, byte5ai/omadia
    issue 916), and answers other alternate-key collisions with 409 Request_MultipleObjectsWithSameKeyValue:
    both mean "taken". Other bad requests share the 400's code (a refinement in `details` says what they are:
    not this), so whoever handles this reads who holds the name."""
    return (exc.status == 400 and exc.code == "Request_BadRequest" and not exc.details) or (
        exc.status == 409 and exc.code == "Request_MultipleObjectsWithSameKeyValue")


def quota_exceeded(exc: UpstreamError) -> bool:
    """The creating principal's directory object quota is used up (Directory_QuotaExceeded, 400)."""
    return exc.code == "Directory_QuotaExceeded"


def never(exc: UpstreamError) -> bool:
    """No failure of this call is replication lag."""
    return False


# ------------------------------------------------------------------------------------ no answer at all
def got_no_answer(exc: BaseException) -> bool:
    """A call that never got an answer: the connection refused or dropped, a timeout, a credential that could
    not reach its token endpoint. Whatever library raised it (azure-core, requests under msal, the socket
    itself), the caller is told to retry later (503), never that the API broke (500)."""
    import requests
    from azure.core.exceptions import AzureError

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, UpstreamError):
            return seen.status is None
        if isinstance(seen, AzureError) and getattr(seen, "response", None) is None:
            return True
        if isinstance(seen, (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError)):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
