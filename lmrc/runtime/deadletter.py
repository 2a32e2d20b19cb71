"""Turning a failed input message into a DeadLetterEvent with a precise reason."""

from __future__ import annotations

import base64

from confluent_kafka import Message
from pydantic import ValidationError

from lmrc.contracts import DeadLetterEvent, ErrorDetail, MessageOrigin


class UnprocessableMessageError(Exception):
    """A message that can never be processed (not a transient failure); it goes to the DLQ."""

    def __init__(self, error_class: str, message: str, details: list[ErrorDetail] | None = None):
        super().__init__(message)
        self.error_class = error_class
        self.details = details or []


def origin_of(message: Message) -> MessageOrigin:
    key = message.key()
    timestamp_type, timestamp = message.timestamp()
    return MessageOrigin(
        topic=message.topic() or "",
        partition=message.partition() or 0,
        offset=message.offset() or 0,
        key=key.decode("utf-8", errors="replace") if isinstance(key, bytes) else key,
        timestamp_ms=timestamp if timestamp_type else None,
    )


def _location(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(document)"


def rejection_from_validation(
    error: ValidationError, expected_version: int | None = None
) -> UnprocessableMessageError:
    """Malformed JSON and schema violations, with every failing field's path.

    An event of another ``schema_version`` than the one the service reads (``expected_version``)
    is reported as that alone: its other differences follow from the version.
    """
    errors = error.errors(include_url=False)
    if errors and errors[0]["type"] == "json_invalid":
        return UnprocessableMessageError("MalformedJSON", f"invalid JSON: {errors[0]['msg']}")
    for problem in errors:
        if problem["loc"] == ("schema_version",) and problem["type"] == "literal_error":
            return UnprocessableMessageError(
                "UnsupportedSchemaVersion",
                f"{error.title}: unsupported schema_version {problem['input']!r}; "
                f"this service reads version {expected_version}",
            )
    details = [ErrorDetail(location=_location(e["loc"]), message=e["msg"]) for e in errors]
    summary = "; ".join(f"{d.location}: {d.message}" for d in details[:5])
    more = f" (+{len(details) - 5} more)" if len(details) > 5 else ""
    return UnprocessableMessageError(
        "SchemaValidationError",
        f"{error.title}: {len(details)} validation error(s): {summary}{more}",
        details,
    )


def dead_letter_event(
    service: str, message: Message, rejection: UnprocessableMessageError, max_payload_bytes: int
) -> DeadLetterEvent:
    raw = message.value() or b""
    kept = raw[:max_payload_bytes]
    try:
        payload, encoding = kept.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        payload, encoding = base64.b64encode(kept).decode("ascii"), "base64"
    return DeadLetterEvent(
        service=service,
        origin=origin_of(message),
        error_class=rejection.error_class,
        error_message=str(rejection)[:65536],
        error_details=rejection.details,
        payload=payload,
        payload_encoding=encoding,
        payload_truncated=len(kept) < len(raw),
    )
