"""A local server speaking TGI's HTTP API, for development and tests (a stand-in, not a replacement).

Routes as TGI 3.3: ``POST /generate``, ``POST /generate_stream`` (server-sent events, sent once the
whole answer is generated), ``POST /`` (either, by ``stream``), ``POST /tokenize``, ``GET /info``,
``GET /health``, ``GET /metrics`` (TGI's own metric names, ``tgi_*``). Errors are TGI's:
``{"error", "error_type"}`` with 422 (validation), 424 (generation) and 429 (overloaded: more than
``max_concurrent_requests`` in the house). One request runs at a time; others queue, and one
whose client has disconnected by its turn is dropped, not computed.

    lmrc llm serve --port 8080 --lora-adapters rc=models/classifier/rc-smollm2-135m-lora-v2
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterable
from concurrent.futures import ThreadPoolExecutor
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

SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
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
            "Prompt tokens served from the prefix cache (local server only).",
            buckets=TOKEN_BUCKETS,
            **histogram,
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


def create_app(engine: GenerationEngine, model_id: str, max_concurrent_requests: int = 128) -> FastAPI:
    app = FastAPI(title="lmrc local TGI-compatible server")
    metrics = TgiMetrics()
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generation")
    in_house = 0

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

    turn = asyncio.Lock()  # one generation at a time; the others wait here, not in the executor

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
        queued = True
        try:
            async with turn:
                metrics.queue_size.dec()
                queued = False
                if await request.is_disconnected():
                    # Its client gave up (timed out) while it waited: computing it would only
                    # delay the requests still waited for.
                    metrics.counters.inc("tgi_request_failure", err="client_disconnected")
                    return _error(499, "client_disconnected", "the client left before its turn")
                started = time.perf_counter()
                response, stats = await asyncio.get_running_loop().run_in_executor(
                    worker, engine.generate, body.inputs, body.parameters
                )
        except (InputValidationError, GrammarError) as error:
            metrics.counters.inc("tgi_request_failure", err="validation")
            return _error(422, "validation", str(error))
        except Exception as error:
            log.exception("generation failed")
            metrics.counters.inc("tgi_request_failure", err="generation")
            return _error(424, "generation", f"Request failed during generation: {error}")
        finally:
            in_house -= 1
            if queued:  # cancelled while waiting for its turn
                metrics.queue_size.dec()
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
