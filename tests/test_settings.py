"""Settings that only work together are checked together, at start, with a clear reason."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from lmrc.classifier.service import ClassifierSettings
from lmrc.local.relay import RelaySettings
from tests.helpers import scaled


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


SERVICE_SECRETS = {
    "lmrc-classifier": {
        "CLASSIFIER_TGI_URL": "http://reader:url-s3cret@127.0.0.1:1",
        "CLASSIFIER_TGI_TIMEOUT_SECONDS": "-1",
        "CLASSIFIER_TGI_API_TOKEN": "token-s3cret",
    },
    "lmrc-sink": {
        "SINK_STORE_BACKEND": "falkordb",
        "SINK_FALKORDB_PASSWORD": "falkor-s3cret",
        "SINK_FALKORDB_PORT": "not-a-port",
        "KAFKA_SASL_PASSWORD": "kafka-s3cret",
    },
}


@pytest.mark.parametrize("service", sorted(SERVICE_SECRETS))
def test_a_configuration_error_names_the_setting_in_one_line_and_never_prints_a_secret(
    service: str, tmp_path: Path
) -> None:
    """pydantic's error printed the input dict: the FalkorDB password, a password inside the TGI
    URL and the API token in full. Now: exit 2, a line naming each bad variable, no value."""
    environment = {**os.environ, **SERVICE_SECRETS[service]}
    done = subprocess.run(
        [str(Path(sys.executable).parent / service)],
        env=environment,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=scaled(120),
    )
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "s3cret" not in output and "Traceback" not in output
    assert output.strip().count("\n") == 0 and output.startswith("error: invalid configuration:")
    invalid = {"lmrc-classifier": "CLASSIFIER_TGI_TIMEOUT_SECONDS", "lmrc-sink": "SINK_FALKORDB_PORT"}
    assert invalid[service] in output


def test_a_password_in_the_tgi_url_and_an_api_token_together_are_refused() -> None:
    """Both become the Authorization header: only Basic auth was sent, the token never arrived."""
    with pytest.raises(ValidationError, match="give one of them"):
        ClassifierSettings(tgi_url="http://user:pw@127.0.0.1:8080", tgi_api_token="token")
    ClassifierSettings(tgi_url="http://127.0.0.1:8080", tgi_api_token="token")  # one of them: fine
