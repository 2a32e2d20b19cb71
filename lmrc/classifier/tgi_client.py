"""An asynchronous client for TGI's ``POST /generate`` (httpx), built to survive a busy server.

- bounded concurrency (a semaphore shared by all requests of the service);
- per-attempt timeout; retries with capped exponential backoff and full jitter on what may pass
  (429 overloaded, 503 and other 5xx, timeouts, connection errors);
- a circuit breaker: after ``failure_threshold`` consecutive failures no request is sent for
  ``reset_seconds``, then one trial request decides; callers get :class:`CircuitOpenError` and
  should pause rather than give up on their input;
- what an answer means decides what happens (TGI's ``error_type`` first, then the status):
  ``validation`` (422) and 413 are this request's fault (:class:`TgiRejectedError`, no retry);
  ``generation`` (424), ``overloaded`` (429), ``incomplete_generation`` and 5xx may pass (retried);
  401, 403, 404, any other 4xx and a 200 that is not a GenerateResponse mean the server is
  misconfigured or is not TGI (:class:`TgiMisconfiguredError`): no retry, but it counts towards the
  circuit and the caller pauses instead of blaming its input;
- credentials in the URL (``https://user:password@host``) are taken out of it and sent as HTTP
  basic auth, so that no log line, metric or error message (which reaches ``failed_pairs``)
  carries them.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx
from pydantic import ValidationError

from lmrc.classifier import metrics
from lmrc.contracts.tgi import GenerateRequest, GenerateResponse

RETRYABLE_STATUS = {424, 429, 500, 502, 503, 504}
#: Answers that are about the request itself: it would fail the same way on a healthy server.
REQUEST_FAULT_STATUS = {413, 422}
RETRYABLE_ERROR_TYPES = {"generation", "overloaded", "incomplete_generation"}


class TgiError(Exception):
    """A request TGI did not answer usefully; ``error_class`` names it in metrics and dead letters."""

    error_class = "TgiError"
    retryable = False


class TgiUnavailableError(TgiError):
    error_class = "TgiUnavailable"
    retryable = True


class TgiTimeoutError(TgiUnavailableError):
    error_class = "TgiTimeout"


class TgiRejectedError(TgiError):
    error_class = "TgiRejected"


class TgiMisconfiguredError(TgiError):
    """The server refuses every request alike (credentials, URL, not TGI): pause, do not blame input."""

    error_class = "TgiMisconfigured"


class CircuitOpenError(TgiError):
    error_class = "TgiCircuitOpen"


def split_credentials(url: str) -> tuple[str, httpx.BasicAuth | None]:
    """The URL without its user information, and that user information as basic auth."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    bare = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return bare, httpx.BasicAuth(parts.username or "", parts.password or "")


def redact_url(url: str) -> str:
    """For logs: the URL with any user information replaced by ``***``."""
    bare, auth = split_credentials(url)
    if auth is None:
        return url
    parts = urlsplit(bare)
    return urlunsplit((parts.scheme, f"***@{parts.netloc}", parts.path, parts.query, parts.fragment))


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 4
    backoff_initial_seconds: float = 0.5
    backoff_max_seconds: float = 8.0

    def delay(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, initial * 2**(attempt-1))]."""
        return random.uniform(
            0, min(self.backoff_max_seconds, self.backoff_initial_seconds * 2 ** (attempt - 1))
        )


class CircuitBreaker:
    def __init__(self, failure_threshold: int, reset_seconds: float, service: str) -> None:
        self.failure_threshold = failure_threshold
        self.reset_seconds = reset_seconds
        self.service = service
        self.consecutive_failures = 0
        self.opened_at: float | None = None

    def allow(self) -> bool:
        if self.opened_at is None:
            return True
        if time.monotonic() - self.opened_at >= self.reset_seconds:
            self.opened_at = time.monotonic()  # half-open: let this one through, hold the others
            return True
        return False

    def record_success(self) -> None:
        self.consecutive_failures = 0
        if self.opened_at is not None:
            self.opened_at = None
            metrics.CIRCUIT_OPEN.labels(self.service).set(0)

    def record_failure(self) -> None:
        self.consecutive_failures += 1
        if self.consecutive_failures >= self.failure_threshold and self.opened_at is None:
            self.opened_at = time.monotonic()
            metrics.CIRCUIT_OPEN.labels(self.service).set(1)

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None


class TgiClient:
    def __init__(
        self,
        base_url: str,
        service: str,
        timeout_seconds: float = 30.0,
        max_concurrency: int = 8,
        retry: RetryPolicy | None = None,
        breaker: CircuitBreaker | None = None,
        api_token: str | None = None,
    ) -> None:
        self.base_url, self.auth = split_credentials(base_url.rstrip("/"))
        self.service = service
        self.timeout_seconds = timeout_seconds
        self.max_concurrency = max_concurrency
        self.retry = retry or RetryPolicy()
        self.breaker = breaker or CircuitBreaker(10, 15.0, service)
        self.headers = {"Authorization": f"Bearer {api_token}"} if api_token else {}
        self._http: httpx.AsyncClient | None = None
        self._semaphore: asyncio.Semaphore | None = None
        errors = (TgiUnavailableError, TgiTimeoutError, TgiRejectedError, TgiMisconfiguredError)
        metrics.initialize_client(
            service,
            error_classes=tuple(e.error_class for e in errors),
            retry_reasons=tuple(e.error_class for e in errors if e.retryable),
        )

    async def open(self) -> None:
        """Open the connection pool on the running event loop."""
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=self.headers,
            auth=self.auth,
            timeout=httpx.Timeout(self.timeout_seconds),
            limits=httpx.Limits(max_connections=self.max_concurrency),
        )
        self._semaphore = asyncio.Semaphore(self.max_concurrency)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
        self._http = None

    async def __aenter__(self) -> TgiClient:
        await self.open()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def generate(self, request: GenerateRequest) -> GenerateResponse:
        """One answer, after up to ``max_attempts`` tries; raises a :class:`TgiError` otherwise."""
        attempt = 0
        while True:
            attempt += 1
            if not self.breaker.allow():
                raise CircuitOpenError(f"circuit open after {self.breaker.consecutive_failures} failures")
            try:
                response = await self._attempt(request)
            except TgiError as error:
                metrics.TGI_REQUESTS.labels(self.service, error.error_class).inc()
                if isinstance(error, TgiMisconfiguredError):
                    self.breaker.record_failure()
                    raise
                if not error.retryable:
                    raise
                self.breaker.record_failure()
                if attempt >= self.retry.max_attempts:
                    raise
                metrics.TGI_RETRIES.labels(self.service, error.error_class).inc()
                await asyncio.sleep(self.retry.delay(attempt))
                continue
            self.breaker.record_success()
            metrics.TGI_REQUESTS.labels(self.service, "ok").inc()
            return response

    async def _attempt(self, request: GenerateRequest) -> GenerateResponse:
        assert self._http is not None and self._semaphore is not None, "use `async with TgiClient(...)`"
        body = request.model_dump(mode="json", exclude_none=True, exclude={"stream"})
        async with self._semaphore:
            started = time.perf_counter()
            try:
                answer = await self._http.post("/generate", json=body)
            except httpx.TimeoutException as error:
                raise TgiTimeoutError(f"no answer from {self.base_url} in {self.timeout_seconds}s") from error
            except httpx.TransportError as error:
                raise TgiUnavailableError(f"cannot reach {self.base_url}: {error!r}") from error
            finally:
                metrics.TGI_REQUEST_SECONDS.labels(self.service).observe(time.perf_counter() - started)
        if answer.status_code != 200:
            raise classify_answer(answer)
        try:
            parsed = GenerateResponse.model_validate_json(answer.content)
        except ValidationError as error:
            raise TgiMisconfiguredError(
                f"{self.base_url} answered 200 with something that is not a GenerateResponse "
                f"(is it TGI?): {answer.text[:200]!r}"
            ) from error
        details = parsed.details
        prompt_tokens = answer.headers.get("x-prompt-tokens")
        if prompt_tokens and prompt_tokens.isdigit():
            metrics.TGI_TOKENS.labels(self.service, "input").inc(int(prompt_tokens))
        if details is not None:
            metrics.TGI_TOKENS.labels(self.service, "output").inc(details.generated_tokens)
        return parsed


def classify_answer(answer: httpx.Response) -> TgiError:
    """What a non-200 answer means: TGI's ``error_type`` when it gives one, else the status."""
    status = answer.status_code
    error_type = None
    try:
        payload = answer.json()
    except ValueError:
        payload = None
    if isinstance(payload, dict) and "error" in payload:
        error_type = payload.get("error_type")
        message = f"TGI answered {status}: {error_type or 'error'}: {payload['error']}"[:500]
    else:
        message = f"TGI answered {status}: {answer.text[:300]}"
    if error_type == "validation" or status in REQUEST_FAULT_STATUS:
        return TgiRejectedError(message)
    if error_type in RETRYABLE_ERROR_TYPES or status in RETRYABLE_STATUS or status >= 500:
        return TgiUnavailableError(message)
    hint = {401: "credentials", 403: "credentials", 404: "URL or adapter"}.get(status, "server")
    return TgiMisconfiguredError(f"{message} (check the {hint})")
