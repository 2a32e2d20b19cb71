"""Turning a failed input message into a DeadLetterEvent with a precise reason."""

from __future__ import annotations

import base64
import hashlib

from confluent_kafka import Message
from pydantic import ValidationError

from lmrc.contracts import DeadLetterEvent, ErrorDetail, MessageOrigin
from lmrc.contracts.events import MAX_ORIGIN_KEY_BYTES

#: Field errors kept in a dead letter (a document can have thousands; the first ones say enough).
MAX_ERROR_DETAILS = 50
#: Each detail's location and message are cut to this (a location can quote a user's dict key).
MAX_DETAIL_CHARS = 512


class UnprocessableMessageError(Exception):
    """A message that can never be processed (not a transient failure); it goes to the DLQ."""

    def __init__(self, error_class: str, message: str, details: list[ErrorDetail] | None = None):
        super().__init__(message)
        self.error_class = error_class
        self.details = details or []


def origin_of(message: Message, max_key_bytes: int = MAX_ORIGIN_KEY_BYTES) -> MessageOrigin:
    """Where the message came from. A key longer than ``max_key_bytes`` is cut (flagged, and named
    by its SHA-256): the key is the letter's own record key too, and a key is the one part of a
    message no payload cut can shrink, so an uncut one could make every letter too large to send."""
    key = message.key()
    if isinstance(key, str):
        key = key.encode("utf-8")
    timestamp_type, timestamp = message.timestamp()
    cut = key is not None and len(key) > max_key_bytes
    return MessageOrigin(
        topic=message.topic() or "",
        partition=message.partition() or 0,
        offset=message.offset() or 0,
        key=key[:max_key_bytes].decode("utf-8", errors="replace") if key is not None else None,
        key_truncated=cut,
        key_sha256=hashlib.sha256(key).hexdigest() if cut and key is not None else None,
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


def fitted_dead_letter(
    service: str,
    message: Message,
    rejection: UnprocessableMessageError,
    max_bytes: int,
    max_payload_bytes: int | None = None,
) -> tuple[DeadLetterEvent, bytes]:
    """The dead letter and its JSON, at most ``max_bytes`` long: the payload is cut (and flagged
    ``payload_truncated``) until the whole letter fits, since JSON escaping or base64 can make a
    payload grow and a letter the broker refuses would stall the partition."""
    raw = message.value() or b""
    keep = len(raw) if max_payload_bytes is None else min(len(raw), max_payload_bytes)
    # The key's share: small beside the limit whatever JSON escaping makes of it (up to 6 times).
    origin = origin_of(message, min(MAX_ORIGIN_KEY_BYTES, max_bytes // 16))
    while True:
        letter = _letter(service, origin, rejection, raw, raw[:keep])
        encoded = letter.model_dump_json().encode()
        if len(encoded) <= max_bytes:
            return letter, encoded
        if keep == 0:  # the reason alone is too long (a limit near its minimum): its summary only
            letter = letter.model_copy(update={"error_message": str(rejection)[:256], "error_details": []})
            return letter, letter.model_dump_json().encode()
        keep = min(keep - 1, keep * max_bytes // len(encoded) * 9 // 10)


def _letter(
    service: str, origin: MessageOrigin, rejection: UnprocessableMessageError, raw: bytes, kept: bytes
) -> DeadLetterEvent:
    try:
        payload, encoding = kept.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        payload, encoding = base64.b64encode(kept).decode("ascii"), "base64"
    return DeadLetterEvent(
        service=service,
        origin=origin,
        error_class=rejection.error_class,
        error_message=str(rejection)[:4096],
        error_details=[
            ErrorDetail(
                location=detail.location[:MAX_DETAIL_CHARS], message=detail.message[:MAX_DETAIL_CHARS]
            )
            for detail in rejection.details[:MAX_ERROR_DETAILS]
        ],
        payload=payload,
        payload_encoding=encoding,
        payload_truncated=len(kept) < len(raw),
    )
