"""What each TGI answer means for the pipeline: the request's fault, a passing trouble, or a sick or
misconfigured server (the classifier pauses rather than blaming its input)."""

from __future__ import annotations

import json

import httpx
import pytest

from lmrc.classifier.tgi_client import (
    TgiMisconfiguredError,
    TgiRejectedError,
    TgiUnavailableError,
    classify_answer,
)


def answer(status: int, error_type: str | None = None, text: str | None = None) -> httpx.Response:
    body = text if text is not None else json.dumps({"error": "boom", "error_type": error_type})
    return httpx.Response(status, content=body.encode(), request=httpx.Request("POST", "http://tgi/generate"))


@pytest.mark.parametrize(
    ("status", "error_type", "expected"),
    [
        (422, "validation", TgiRejectedError),  # this prompt is too long, say
        (413, None, TgiRejectedError),
        (424, "generation", TgiUnavailableError),
        (429, "overloaded", TgiUnavailableError),
        (500, "incomplete_generation", TgiUnavailableError),
        (503, None, TgiUnavailableError),
        (401, None, TgiMisconfiguredError),
        (403, None, TgiMisconfiguredError),
        (404, None, TgiMisconfiguredError),
        (400, None, TgiMisconfiguredError),
    ],
)
def test_answers_are_classified_by_error_type_then_status(
    status: int, error_type: str | None, expected: type[Exception]
) -> None:
    error = classify_answer(answer(status, error_type))
    assert type(error) is expected
    assert f"TGI answered {status}" in str(error)


def test_a_proxy_page_is_not_mistaken_for_a_request_fault() -> None:
    error = classify_answer(answer(404, text="<html>Not Found</html>"))
    assert isinstance(error, TgiMisconfiguredError) and "URL or adapter" in str(error)
