"""LLM serving benchmark (a script, not a test): the local server's engines side by side, one run.

The same requests for every engine: the classifier's own requests (prompt ``lmrc-rc-v2``, grammar,
adapter) for the shipped proposer's candidate pairs of the first holdout documents, sent as the
classifier sends them (one document at a time, its pairs concurrently, through the classifier's
TGI client). Each engine runs in its own server process, started fresh, warmed up with one request.

Reported per engine: pairs/s, generated tokens/s, p50/p99 document latency, peak resident memory
of the server process (``VmHWM``), and agreement: the share of pairs whose answer text is
identical to the reference engine's (fp32, one request at a time: the engine before batching).

Not measured: llama.cpp. ``llama-cpp-python`` ships only as source, so it would compile llama.cpp
at install (15-50 minutes on two cores, design notes): by itself more than the ten-minute install
the project aims at; the batching engine keeps the install to wheels.
"""

from __future__ import annotations

import asyncio
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from lmrc import docred
from lmrc.classifier.artifact import DEFAULT_ADAPTER_DIR, load_config
from lmrc.classifier.service import ClassifierHandler, ClassifierSettings
from lmrc.classifier.tgi_client import TgiClient
from lmrc.classifier.training.evaluate import candidate_set
from lmrc.contracts.tgi import GenerateRequest
from lmrc.local.llm.local_server import LocalTgiServer
from lmrc.proposer.artifact import DEFAULT_ARTIFACT_DIR
from lmrc.proposer.artifact import load_config as load_proposer_config
from lmrc.proposer.training.candidates import score_candidates


@dataclass(frozen=True)
class Engine:
    name: str
    arguments: tuple[str, ...]
    description: str


REFERENCE = Engine(
    "reference",
    ("--engine", "reference"),
    "one request at a time, fp32, adapter unmerged: the local server before batching",
)
ENGINES = (
    REFERENCE,
    Engine(
        "batching-fp32",
        ("--engine", "batching", "--dtype", "float32"),
        "requests in flight together, shared document prefix, packed rows, adapter merged, fp32",
    ),
    Engine(
        "batching",
        ("--engine", "batching"),
        "the default: as batching-fp32, in bf16 where the CPU multiplies bf16 natively",
    ),
)


@dataclass(frozen=True)
class EngineResult:
    engine: str
    description: str
    pairs: int
    seconds: float
    pairs_per_second: float
    generated_tokens_per_second: float
    document_latency_p50_seconds: float
    document_latency_p99_seconds: float
    peak_rss_mib: float
    mean_batch_size: float
    agreement: float
    failed_pairs: int


def _peak_rss_mib(pid: int) -> float:
    """The process's peak resident set (Linux ``VmHWM``; the current RSS elsewhere)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text(encoding="utf-8").splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(psutil.Process(pid).memory_info().rss / 2**20, 1)


def _batch_sizes(url: str) -> tuple[float, float]:
    """(requests, batches) from the server's ``tgi_batch_next_size`` histogram (0, 0 if absent)."""
    values = {"tgi_batch_next_size_sum": 0.0, "tgi_batch_next_size_count": 0.0}
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        name, _, value = line.partition(" ")
        if name in values:
            values[name] = float(value)
    return values["tgi_batch_next_size_sum"], values["tgi_batch_next_size_count"]


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def _send(
    url: str, documents: list[list[GenerateRequest]], concurrency: int
) -> tuple[list[list[str | None]], list[float], int, float]:
    """Per document its answers (None: failed), per document its latency, generated tokens, seconds."""
    answers: list[list[str | None]] = []
    latencies: list[float] = []
    generated = 0
    async with TgiClient(url, "benchmark", max_concurrency=concurrency, timeout_seconds=600) as client:
        await client.generate(documents[0][0])  # warm-up: first request pays one-off costs
        started = time.perf_counter()
        for requests in documents:
            begin = time.perf_counter()
            responses = await asyncio.gather(
                *(client.generate(request) for request in requests), return_exceptions=True
            )
            latencies.append(time.perf_counter() - begin)
            texts: list[str | None] = []
            for response in responses:
                if isinstance(response, BaseException):
                    texts.append(None)
                    continue
                texts.append(response.generated_text)
                generated += response.details.generated_tokens if response.details else 0
            answers.append(texts)
        seconds = time.perf_counter() - started
    return answers, latencies, generated, seconds


def run_benchmark(
    documents: int = 8,
    split: str = "holdout",
    concurrency: int = 32,
    adapter_dir: Path = DEFAULT_ADAPTER_DIR,
    engines: tuple[Engine, ...] = ENGINES,
    log_dir: Path | None = None,
    progress: Any = print,
) -> dict[str, Any]:
    """Every engine on the same requests; the reference first (agreement is measured against it)."""
    if engines[0] != REFERENCE:
        engines = (REFERENCE, *(engine for engine in engines if engine != REFERENCE))
    config = load_config(adapter_dir)
    adapter_id = config.version
    raws = docred.load_split(split)[:documents]  # type: ignore[arg-type]
    proposer = load_proposer_config(DEFAULT_ARTIFACT_DIR).version
    found = score_candidates(DEFAULT_ARTIFACT_DIR, raws, config.training.get("shortlist_size", 4))
    with ClassifierHandler(ClassifierSettings(tgi_adapter_id=adapter_id), config) as handler:
        requests = []
        for raw, candidates in zip(raws, found, strict=True):
            event = candidate_set(raw, candidates, proposer)
            requests.append(
                [
                    handler.request_for(event, pair, handler.options_for(pair))
                    for pair in event.pairs
                    if handler.options_for(pair)
                ]
            )
    pairs = sum(len(r) for r in requests)
    results: list[EngineResult] = []
    reference_answers: list[str | None] = []
    for engine in engines:
        progress(f"{engine.name}: {pairs} pairs of {len(requests)} documents ...")
        log_path = log_dir / f"llm-benchmark-{engine.name}.log" if log_dir else None
        with LocalTgiServer(
            {adapter_id: adapter_dir}, log_path=log_path, extra_arguments=list(engine.arguments)
        ) as server:
            answers, latencies, generated, seconds = asyncio.run(_send(server.url, requests, concurrency))
            pid = server.pid
            peak = _peak_rss_mib(pid) if pid else 0.0
            batches = _batch_sizes(server.url)
        flat = [answer for document in answers for answer in document]
        if engine == REFERENCE:
            reference_answers = flat
        agreeing = sum(a is not None and a == b for a, b in zip(flat, reference_answers, strict=True))
        result = EngineResult(
            engine=engine.name,
            description=engine.description,
            pairs=pairs,
            seconds=round(seconds, 2),
            pairs_per_second=round(pairs / seconds, 3),
            generated_tokens_per_second=round(generated / seconds, 2),
            document_latency_p50_seconds=round(statistics.median(latencies), 3),
            document_latency_p99_seconds=round(_percentile(latencies, 0.99), 3),
            peak_rss_mib=peak,
            mean_batch_size=round(batches[0] / batches[1], 2) if batches[1] else 1.0,
            agreement=round(agreeing / pairs, 4),
            failed_pairs=sum(answer is None for answer in flat),
        )
        progress(format_row(result))
        results.append(result)
    baseline, default = results[0], results[-1]
    return {
        "benchmark": "lmrc classifier benchmark",
        "date": time.strftime("%Y-%m-%d"),
        "machine": {
            "processor": _processor(),
            "logical_cpus": psutil.cpu_count(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(),
        },
        "split": split,
        "documents": len(requests),
        "pairs": pairs,
        "client_concurrency": concurrency,
        "adapter": adapter_id,
        "proposer": proposer,
        "default_engine": default.engine,
        "baseline_engine": baseline.engine,
        "baseline_pairs_per_second": baseline.pairs_per_second,
        "pairs_per_second": default.pairs_per_second,
        "speedup": round(default.pairs_per_second / baseline.pairs_per_second, 2),
        "agreement": default.agreement,
        "engines": [asdict(result) for result in results],
        "not_measured": {
            "llama.cpp": "llama-cpp-python ships only as source: installing it compiles llama.cpp "
            "(15-50 min on 2 cores), more than the whole install budget; not a contender here",
        },
    }


def _processor() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def format_row(result: EngineResult) -> str:
    return (
        f"{result.engine:<14} {result.pairs_per_second:>7.2f} pairs/s "
        f"{result.generated_tokens_per_second:>7.1f} tok/s  "
        f"doc p50 {result.document_latency_p50_seconds:>6.2f} s p99 "
        f"{result.document_latency_p99_seconds:>6.2f} s  peak RSS {result.peak_rss_mib:>7.1f} MiB  "
        f"batch {result.mean_batch_size:>5.1f}  "
        f"agreement {result.agreement:.4f}  failed {result.failed_pairs}"
    )
