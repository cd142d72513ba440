"""RFC 7807 problem details: every error the API returns is one of these.

Each kind of problem has a stable ``type`` URI that callers (Logic Apps conditions, scripts) can match on;
``title`` is the same for every instance of a kind, ``detail`` says what happened this time.
Nothing in this module may ever carry secret material.
"""

from __future__ import annotations

import math
from typing import Any, TypeVar

from .adapters.errors import UpstreamError, got_no_answer

PROBLEM_BASE = "urn:dicom-registrations:problem:"
PROBLEM_CONTENT_TYPE = "application/problem+json"


class Problem(Exception):
    """An error that becomes a problem+json response."""

    status = 500
    slug = "internal"
    title = "Internal error"

    def __init__(self, detail: str, **extensions: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extensions = extensions
        self.headers: dict[str, str] = {}

    @property
    def type(self) -> str:
        return PROBLEM_BASE + self.slug

    def to_dict(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": self.type,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        body.update(self.extensions)
        return body


class ValidationProblem(Problem):
    status, slug, title = 422, "validation", "The request is not valid"


class MalformedRequest(Problem):
    status, slug, title = 400, "malformed-request", "The request could not be read"


class PayloadTooLarge(Problem):
    status, slug, title = 413, "payload-too-large", "The request body is too large"


class Unauthenticated(Problem):
    status, slug, title = 401, "unauthenticated", "A valid bearer token is required"


class Forbidden(Problem):
    status, slug, title = 403, "forbidden", "The caller may not do this"


class PolicyViolation(Problem):
    """The caller may create registrations, but not this one (a platform policy says no)."""

    status, slug, title = 403, "policy", "The request is outside the policy for this caller"


class NotFound(Problem):
    status, slug, title = 404, "not-found", "No such registration"


class Conflict(Problem):
    status, slug, title = 409, "conflict", "The request conflicts with the current state"


class PreconditionFailed(Problem):
    """If-Match named another state of the registration than the current one (someone changed it since)."""

    status, slug, title = 412, "precondition-failed", "The registration changed since it was read"


class UnsupportedMediaType(Problem):
    status, slug, title = 415, "unsupported-media-type", "The body's media type is not accepted here"


class QuotaExceeded(Problem):
    """The API's identity cannot create the directory objects a registration needs (quota.py). Nothing was
    written; the detail says what frees room."""

    status, slug, title = 409, "quota-exceeded", "The API's identity has used up its directory object quota"


class NotReady(Problem):
    """A dependency the request needs does not exist yet (for example an OSS target's resource app)."""

    status, slug, title = 409, "dependency-missing", "A registration this request depends on is missing"


class UpstreamFailure(Problem):
    """An Azure service failed for good (after retries). Carries its error code, never its body."""

    status, slug, title = 502, "upstream-failure", "An Azure service call failed"


class UpstreamUnavailable(Problem):
    status, slug, title = 503, "upstream-unavailable", "An Azure service is unavailable or throttling"


class ProvisioningFailed(Problem):
    """A create failed at one step; the completed steps were undone."""

    status, slug, title = 502, "provisioning-failed", "Provisioning failed and was rolled back"


class RotationFailed(Problem):
    """A rotation failed at one step for a reason other than an Azure service's answer; the completed steps
    were undone, so the previous credential is still the current one."""

    status, slug, title = 502, "rotation-failed", "Rotation failed and was rolled back"


class VerificationFailed(Problem):
    """The registration exists but does not work: its credential is refused or a grant it needs is missing.
    ``checks`` lists what was checked; ``aadsts`` carries Entra's error code when the token request failed."""

    status, slug, title = 409, "verification-failed", "The registration does not work as configured"


class Misconfigured(Problem):
    status, slug, title = 500, "misconfigured", "The service is not configured correctly"


class InProgress(UpstreamUnavailable):
    """Another attempt holds the provisioning lease on this registration: retry after Retry-After."""

    slug, title = "in-progress", "The registration is being provisioned by another request"


P = TypeVar("P", bound=Problem)
DEFAULT_RETRY_AFTER_SECONDS = 10
MAX_RETRY_AFTER_SECONDS = 30


def retry_later(problem: P, seconds: float | None) -> P:
    """Tell the caller when to try again: what Azure said (whole seconds, rounded up, capped, so a confused
    upstream cannot park a Logic App for an hour), or a default when it said nothing."""
    wait = DEFAULT_RETRY_AFTER_SECONDS if seconds is None else min(max(math.ceil(seconds), 1),
                                                                      MAX_RETRY_AFTER_SECONDS)
    problem.headers["Retry-After"] = str(wait)
    return problem


def upstream_problem(exc: UpstreamError) -> UpstreamFailure | UpstreamUnavailable:
    """An Azure call that failed for good: 503 with Retry-After when it was throttled or unavailable (the
    caller should come back), else 502. Names the service, operation, status and code, never the message."""
    detail = f"{exc.service} {exc.operation} failed: {exc.status} {exc.code or ''}".strip()
    if exc.unavailable:
        return retry_later(UpstreamUnavailable(detail, upstream=exc.summary()), exc.retry_after)
    return UpstreamFailure(detail, upstream=exc.summary())


def unanswered_problem(exc: BaseException) -> UpstreamUnavailable | None:
    """An exception no adapter translated that is a call without an answer (`got_no_answer`): 503
    upstream-unavailable with Retry-After, never a 500."""
    if not got_no_answer(exc):
        return None
    return retry_later(UpstreamUnavailable(f"an Azure service did not answer ({type(exc).__name__}); retry later"),
                       None)


ALL_PROBLEMS: tuple[type[Problem], ...] = (
    ValidationProblem,
    MalformedRequest,
    PayloadTooLarge,
    Unauthenticated,
    Forbidden,
    PolicyViolation,
    NotFound,
    Conflict,
    PreconditionFailed,
    UnsupportedMediaType,
    QuotaExceeded,
    NotReady,
    UpstreamFailure,
    UpstreamUnavailable,
    InProgress,
    ProvisioningFailed,
    RotationFailed,
    VerificationFailed,
    Misconfigured,
    Problem,
)
