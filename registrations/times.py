"""Times as Graph, Key Vault tags and our responses write them: ISO 8601 in UTC, whole seconds, with a Z."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime(_FORMAT)


def iso_from_epoch(epoch: Any) -> str | None:
    """A JWT's `exp` (seconds since the epoch) as ISO 8601; None when the claim is not a number."""
    if not isinstance(epoch, (int, float)):
        return None
    return datetime.fromtimestamp(epoch, timezone.utc).strftime(_FORMAT)


def parse_time(value: str | None) -> datetime | None:
    """An ISO 8601 time (Graph writes up to seven fractional digits and a Z); None when absent or unreadable,
    so callers treat an odd value as unknown rather than fail. A time without an offset is UTC."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
