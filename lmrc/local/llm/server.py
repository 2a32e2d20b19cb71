"""A local server speaking TGI's HTTP API, for development and tests (a stand-in, not a replacement).

Routes as TGI 3.3: ``POST /generate``, ``POST /generate_stream`` (server-sent events, sent once the
whole answer is generated), ``POST /`` (either, by ``stream``), ``POST /tokenize``, ``GET /info``,
``GET /health``, ``GET /metrics`` (TGI's own metric names, ``tgi_*``). Errors are TGI's:
``{"error", "error_type"}`` with 422 (validation), 424 (generation) and 429 (overloaded: more than
``max_concurrent_requests`` in the house). Requests are served in batches: whatever is waiting
when the engine is free runs together (dynamic batching; the engine shares each document's
prefix across its pairs); a request whose client has disconnected by its turn is dropped, not
computed.

    lmrc llm serve --port 8080 --lora-adapters rc=models/classifier/rc-smollm2-135m-lora-v2
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric

from lmrc.contracts.tgi import ErrorResponse, GenerateRequest, GenerateResponse, Info
from lmrc.local.llm.engine import GenerationEngine, GenerationStats, InputValidationError
from lmrc.local.llm.grammar import GrammarError

log = logging.getLogger(__name__)

#: The batcher starts a batch once it holds the engine's batch size, or no request has arrived for
#: BATCH_GATHER_SECONDS (a client's requests, answered together, come back spread over tens of
#: milliseconds), or BATCH_GATHER_MAX_SECONDS after the first.
BATCH_GATHER_SECONDS = 0.05
BATCH_GATHER_MAX_SECONDS = 0.3
SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
TOKEN_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)


@dataclass(eq=False)  # registered as a collector: hashable by identity
class _Counters:
    """TGI's counters keep their bare names (``tgi_request_count``), as TGI exports them."""

    values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def inc(self, name: str, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        with self.lock:
            self.values[key] = self.values.get(key, 0.0) + 1

    def collect(self) -> Iterable[Metric]:
        with self.lock:
            items = sorted(self.values.items())
        families: dict[str, Metric] = {}
        for (name, labels), value in items:
            family = families.setdefault(name, Metric(name, f"TGI counter {name}.", "unknown"))
            family.add_sample(name, dict(labels), value)
        return list(families.values())


class TgiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.counters = _Counters()
        self.registry.register(self.counters)  # type: ignore[arg-type]
        histogram = {"registry": self.registry}
        self.queue_size = Gauge("tgi_queue_size", "Requests waiting.", **histogram)
        self.duration = Histogram(
            "tgi_request_duration", "Request seconds.", buckets=SECONDS_BUCKETS, **histogram
        )
        self.queue_duration = Histogram(
            "tgi_request_queue_duration", "Seconds queued.", buckets=SECONDS_BUCKETS, **histogram
        )
        self.inference_duration = Histogram(
            "tgi_request_inference_duration", "Inference seconds.", buckets=SECONDS_BUCKETS, **histogram
        )
        self.time_per_token = Histogram(
            "tgi_request_mean_time_per_token_duration",
            "Mean seconds per generated token.",
            buckets=SECONDS_BUCKETS,
            **histogram,
        )
        self.input_length = Histogram(
            "tgi_request_input_length", "Prompt tokens.", buckets=TOKEN_BUCKETS, **histogram
        )
        self.generated_tokens = Histogram(
            "tgi_request_generated_tokens", "Generated tokens.", buckets=TOKEN_BUCKETS, **histogram
        )
        self.prefix_reused = Histogram(
            "tgi_request_prefix_reused_tokens",
            "Prompt tokens not computed for the request alone: from the prefix cache, or shared with "
            "the requests batched with it (local server only).",
            buckets=TOKEN_BUCKETS,
            **histogram,
        )
        self.batch_size = Gauge(
            "tgi_batch_current_size", "Requests in the batch being computed.", **histogram
        )
        self.batch_sizes = Histogram(
            "tgi_batch_next_size", "Requests per batch.", buckets=BATCH_BUCKETS, **histogram
        )

    def observe(self, stats: GenerationStats, queued: float, total: float) -> None:
        self.counters.inc("tgi_request_success")
        self.duration.observe(total)
        self.queue_duration.observe(queued)
        self.inference_duration.observe(stats.inference_seconds)
        if stats.generated_tokens:
            self.time_per_token.observe(stats.inference_seconds / stats.generated_tokens)
        self.input_length.observe(stats.input_tokens)
        self.generated_tokens.observe(stats.generated_tokens)
        self.prefix_reused.observe(stats.reused_prefix_tokens)


def _error(status: int, error_type: str, message: str) -> JSONResponse:
    return JSONResponse(ErrorResponse(error=message, error_type=error_type).model_dump(), status_code=status)


@dataclass(eq=False)
class _Waiting:
    body: GenerateRequest
    request: Request
    outcome: asyncio.Future[Any]
    arrived: float


class GenerationWorker:
    """Runs the engine's batches on the thread that calls :meth:`run`: the main thread.

    PyTorch's OpenMP threads belong to the thread that first used them (model loading); a second
    computing thread gets a team of its own, and the idle one spins against it: measured here, a
    batch ran 20% slower from a worker thread than from the main thread. So the HTTP server runs
    in a thread of its own and hands batches to the main thread.
    """

    def __init__(self, engine: GenerationEngine, batching: bool = True) -> None:
        self.engine = engine
        self.batching = batching
        self._jobs: queue.Queue[tuple[list[tuple[str, Any]], asyncio.AbstractEventLoop, asyncio.Future[Any]]]
        self._jobs = queue.Queue()

    async def generate(self, requests: list[tuple[str, Any]]) -> list[Any]:
        """Each request's outcome: (response, stats), or the exception that failed it."""
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future[list[Any]] = loop.create_future()
        self._jobs.put((requests, loop, outcome))
        return await outcome

    def run(self, stop: threading.Event) -> None:
        generate = self.engine.generate_batch if self.batching else _one_at_a_time(self.engine)
        while not stop.is_set():
            try:
                requests, loop, outcome = self._jobs.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                outcomes: list[Any] = generate(requests)
            except Exception as error:  # the engine fails requests one by one; this is a defect
                log.exception("batch failed")
                outcomes = [error] * len(requests)
            loop.call_soon_threadsafe(_settle, outcome, outcomes)


def _settle(outcome: asyncio.Future[Any], value: Any) -> None:
    if not outcome.done():
        outcome.set_result(value)


def create_app(worker: GenerationWorker, model_id: str, max_concurrent_requests: int = 128) -> FastAPI:
    """The HTTP side; ``worker.run`` must run (on the main thread) for requests to be answered.
    A worker with ``batching=False`` serves one request at a time with
    :meth:`GenerationEngine.generate` (the server before batching: the benchmark's baseline)."""
    engine, batching = worker.engine, worker.batching
    metrics = TgiMetrics()
    waiting: asyncio.Queue[_Waiting] = asyncio.Queue()
    in_house = 0

    async def _serve_batches() -> None:
        """Forever: gather a batch, serve it. A defect fails that batch's requests (424), never
        the loop: a dead batcher would leave every later request waiting."""
        while True:
            taken = [await waiting.get()]
            try:
                await _gather(taken)
                await _serve(taken)
            except Exception as error:
                log.exception("batch failed")
                for item in taken:
                    _settle(item.outcome, (error, time.perf_counter()))

    async def _gather(taken: list[_Waiting]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + BATCH_GATHER_MAX_SECONDS
        enough = min(max_concurrent_requests, engine.options.max_batch_size)
        while batching and len(taken) < enough and loop.time() < deadline:
            # Wait for the rest of what clients are sending rather than decode the first alone.
            try:
                taken.append(await asyncio.wait_for(waiting.get(), BATCH_GATHER_SECONDS))
            except TimeoutError:
                break
        metrics.queue_size.dec(len(taken))

    async def _serve(taken: list[_Waiting]) -> None:
        """Drop what its client left, generate the rest together, hand out the outcomes."""
        live = []
        for item in taken:
            if item.outcome.done():  # its handler is gone
                continue
            if await item.request.is_disconnected():
                # Its client gave up (timed out) while it waited: computing it would only delay
                # the requests still waited for.
                metrics.counters.inc("tgi_request_failure", err="client_disconnected")
                item.outcome.set_result(_error(499, "client_disconnected", "the client left before its turn"))
                continue
            live.append(item)
        if not live:
            return
        started = time.perf_counter()
        metrics.batch_size.set(len(live))
        metrics.batch_sizes.observe(len(live))
        try:
            outcomes = await worker.generate([(item.body.inputs, item.body.parameters) for item in live])
        finally:
            metrics.batch_size.set(0)
        for item, outcome in zip(live, outcomes, strict=True):
            _settle(item.outcome, (outcome, started))

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(_serve_batches())
        try:
            yield
        finally:
            task.cancel()

    app = FastAPI(title="lmrc local TGI-compatible server", lifespan=lifespan)

    info = Info(
        model_id=model_id,
        max_concurrent_requests=max_concurrent_requests,
        max_input_tokens=engine.max_input_tokens,
        max_total_tokens=engine.max_total_tokens,
        version=f"lmrc-local-{metadata.version('lmrc-stream')}",
        model_pipeline_tag="text-generation",
    )

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, error: RequestValidationError) -> JSONResponse:
        metrics.counters.inc("tgi_request_failure", err="validation")
        return _error(422, "validation", f"Input validation error: {error.errors()[:3]}")

    async def _run(
        body: GenerateRequest, request: Request
    ) -> tuple[GenerateResponse, GenerationStats] | JSONResponse:
        nonlocal in_house
        metrics.counters.inc("tgi_request_count")
        if in_house >= max_concurrent_requests:
            metrics.counters.inc("tgi_request_failure", err="overloaded")
            return _error(429, "overloaded", "Model is overloaded")
        in_house += 1
        metrics.queue_size.inc()
        arrived = time.perf_counter()
        outcome: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        try:
            await waiting.put(_Waiting(body, request, outcome, arrived))
            result, started = await outcome
        finally:
            in_house -= 1
        if isinstance(result, JSONResponse):
            return result
        if isinstance(result, InputValidationError | GrammarError):
            metrics.counters.inc("tgi_request_failure", err="validation")
            return _error(422, "validation", str(result))
        if isinstance(result, Exception):
            metrics.counters.inc("tgi_request_failure", err="generation")
            return _error(424, "generation", f"Request failed during generation: {result}")
        response, stats = result
        metrics.observe(stats, started - arrived, time.perf_counter() - arrived)
        return response, stats

    @app.post("/generate", response_model=GenerateResponse, response_model_exclude_none=True)
    async def generate(body: GenerateRequest, request: Request) -> Any:
        result = await _run(body, request)
        if isinstance(result, JSONResponse):
            return result
        response, stats = result
        headers = {
            "x-compute-type": "cpu",
            "x-compute-time": f"{stats.inference_seconds:.3f}",
            "x-prompt-tokens": str(stats.input_tokens),
            "x-generated-tokens": str(stats.generated_tokens),
        }
        return JSONResponse(response.model_dump(exclude_none=True), headers=headers)

    @app.post("/generate_stream")
    async def generate_stream(body: GenerateRequest, request: Request) -> Any:
        result = await _run(body, request)
        if isinstance(result, JSONResponse):
            return result
        response, _stats = result
        return StreamingResponse(_events(response), media_type="text/event-stream")

    @app.post("/")
    async def compat(body: GenerateRequest, request: Request) -> Any:
        return await (generate_stream(body, request) if body.stream else generate(body, request))

    @app.post("/tokenize")
    async def tokenize(body: GenerateRequest) -> Any:
        return engine.tokenize(body.inputs)

    @app.get("/info")
    async def get_info() -> Any:
        return info.model_dump()

    @app.get("/health")
    async def health() -> Any:
        return JSONResponse(None, status_code=200)

    @app.get("/metrics")
    async def prometheus_metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(metrics.registry), media_type="text/plain; version=0.0.4")

    app.state.metrics = metrics
    return app


def _one_at_a_time(engine: GenerationEngine) -> Any:
    def generate(requests: list[tuple[str, Any]]) -> list[Any]:
        outcomes: list[Any] = []
        for inputs, parameters in requests:
            try:
                outcomes.append(engine.generate(inputs, parameters))
            except Exception as error:  # as generate_batch: the request's outcome, not the server's
                if not isinstance(error, InputValidationError | GrammarError):
                    log.exception("generation failed")
                outcomes.append(error)
        return outcomes

    return generate


async def _events(response: GenerateResponse) -> AsyncIterator[bytes]:
    """TGI's stream events: one per token, the last one carrying the text and the details."""
    details = response.details
    tokens = details.tokens if details else []
    for index, token in enumerate(tokens):
        last = index == len(tokens) - 1
        event: dict[str, Any] = {
            "index": index + 1,
            "token": token.model_dump(),
            "top_tokens": None,
            "generated_text": response.generated_text if last else None,
            "details": (
                {
                    "finish_reason": details.finish_reason,
                    "generated_tokens": details.generated_tokens,
                    "seed": details.seed,
                }
                if last and details
                else None
            ),
        }
        yield f"data:{json.dumps(event)}\n\n".encode()


def parse_adapters(spec: str | None) -> dict[str, Path]:
    """``id=path,id2=path2`` (TGI's ``LORA_ADAPTERS`` takes ids or ``id=path``)."""
    adapters: dict[str, Path] = {}
    for item in filter(None, (part.strip() for part in (spec or "").split(","))):
        adapter_id, _, path = item.partition("=")
        adapters[adapter_id] = Path(path or adapter_id)
    return adapters
