"""Settings that only work together are checked together, at start, with a clear reason."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from lmrc.classifier.service import ClassifierSettings
from lmrc.local.relay import RelaySettings


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"session_timeout_ms": 30_000, "max_poll_interval_ms": 10_000}, "at least session_timeout_ms"),
        ({"session_timeout_ms": 2000, "max_poll_interval_ms": 2000}, "max_poll_interval_ms must be at least"),
        ({"liveness_timeout_seconds": 1.0}, "liveness_timeout_seconds must be at least"),
    ],
)
def test_inconsistent_consumer_timeouts_are_refused(overrides: dict[str, object], reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        RelaySettings(**overrides)


def test_a_pairs_worst_case_must_fit_well_inside_a_batchs_liveness_bound() -> None:
    ClassifierSettings()  # the defaults hold together
    with pytest.raises(ValidationError, match="at most half of max_batch_seconds"):
        ClassifierSettings(tgi_timeout_seconds=600, tgi_max_attempts=4)
    ClassifierSettings(tgi_timeout_seconds=600, tgi_max_attempts=4, max_batch_seconds=6000)
