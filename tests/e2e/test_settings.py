"""Settings are read and checked in one place, settings.load(): a bad value names its setting."""

from __future__ import annotations

import pytest

from registrations.problems import Misconfigured
from registrations.settings import load


def test_verify_propagation_seconds_is_a_checked_setting(app_settings):
    base = {k: v for k, v in app_settings.items() if k != "VERIFY_PROPAGATION_SECONDS"}
    assert load(base).verify_propagation_seconds == 600
    assert load({**base, "VERIFY_PROPAGATION_SECONDS": "0"}).verify_propagation_seconds == 0
    assert load({**base, "VERIFY_PROPAGATION_SECONDS": "86400"}).verify_propagation_seconds == 86_400
    for bad in ("-1", "86401", "ten"):
        with pytest.raises(Misconfigured, match="VERIFY_PROPAGATION_SECONDS"):
            load({**base, "VERIFY_PROPAGATION_SECONDS": bad})

