"""Requests/s and tokens/s of the RC traffic against a TGI server, with and without prefix sharing.

The same requests (gold pairs of validation documents, each with four options: its gold relations
first, then frequent relations, as a stand-in for the proposer's shortlist) are sent twice:
grouped by document, as the classifier sends them, and interleaved across documents, so that no
request shares its document prefix with the one before. The ratio is what the prompt layout buys
on a server with a prefix cache (TGI's, or the local server's).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass

from lmrc import docred
from lmrc.classifier.prompt import Option, answer_regex, build_prompt, docred_labels
from lmrc.classifier.tgi_client import TgiClient
from lmrc.contracts.tgi import GenerateParameters, GenerateRequest, Grammar

OPTIONS = 4
FREQUENT = ["P17", "P131", "P27", "P150", "P577"]  # country, located in, citizenship, contains, date


def _options(gold: set[str]) -> list[Option]:
    ranked = list(dict.fromkeys([*sorted(gold), *FREQUENT]))[:OPTIONS]
    return [Option(relation_id, round(1.0 - 0.2 * rank, 2)) for rank, relation_id in enumerate(ranked)]


@dataclass(frozen=True)
class BenchmarkRow:
    order: str
    requests: int
    seconds: float
    requests_per_second: float
    prompt_tokens_per_second: float
    generated_tokens_per_second: float
    p50_seconds: float
    p99_seconds: float


def _requests(
    split: str, documents: int, pairs_per_document: int, adapter_id: str | None
) -> list[list[GenerateRequest]]:
    labels = docred_labels()
    grammar = Grammar(type="regex", value=answer_regex(OPTIONS))
    grouped = []
    for raw in docred.load_split(split)[:documents]:  # type: ignore[arg-type]
        document = docred.to_document_event(raw)
        relations = docred.relations_by_pair(raw)
        pairs = sorted(relations)[:pairs_per_document]
        grouped.append(
            [
                GenerateRequest(
                    inputs=build_prompt(document, h, t, _options(relations[(h, t)]), labels),
                    parameters=GenerateParameters(
                        adapter_id=adapter_id, grammar=grammar, max_new_tokens=16, details=True
                    ),
                )
                for h, t in pairs
            ]
        )
    return grouped


async def _send(url: str, order: str, requests: list[GenerateRequest], concurrency: int) -> BenchmarkRow:
    latencies: list[float] = []
    prompt_tokens = generated = 0
    async with TgiClient(url, "benchmark", max_concurrency=concurrency, timeout_seconds=300) as client:
        import httpx

        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            for request in requests:  # prompt sizes, from the server's own tokenizer
                prompt_tokens += len((await http.post("/tokenize", json={"inputs": request.inputs})).json())
        started = time.perf_counter()

        async def one(request: GenerateRequest) -> None:
            nonlocal generated
            begin = time.perf_counter()
            response = await client.generate(request)
            latencies.append(time.perf_counter() - begin)
            generated += response.details.generated_tokens if response.details else 0

        await asyncio.gather(*(one(r) for r in requests))
        seconds = time.perf_counter() - started
    latencies.sort()
    return BenchmarkRow(
        order=order,
        requests=len(requests),
        seconds=round(seconds, 2),
        requests_per_second=round(len(requests) / seconds, 3),
        prompt_tokens_per_second=round(prompt_tokens / seconds, 1),
        generated_tokens_per_second=round(generated / seconds, 2),
        p50_seconds=round(statistics.median(latencies), 3),
        p99_seconds=round(latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 3),
    )


def run_benchmark(
    url: str,
    adapter_id: str | None,
    split: str = "validation",
    documents: int = 4,
    pairs_per_document: int = 8,
    concurrency: int = 4,
) -> list[BenchmarkRow]:
    grouped = _requests(split, documents, pairs_per_document, adapter_id)
    in_document_order = [request for group in grouped for request in group]
    interleaved = [group[i] for i in range(max(map(len, grouped))) for group in grouped if i < len(group)]
    return [
        asyncio.run(_send(url, "grouped by document", in_document_order, concurrency)),
        asyncio.run(_send(url, "interleaved", interleaved, concurrency)),
    ]


def format_rows(rows: list[BenchmarkRow]) -> str:
    header = (
        f"{'order':<22} {'requests':>8} {'req/s':>7} {'prompt tok/s':>13} {'gen tok/s':>10} "
        f"{'p50 s':>7} {'p99 s':>7}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(
            f"{row.order:<22} {row.requests:>8} {row.requests_per_second:>7.2f} "
            f"{row.prompt_tokens_per_second:>13.0f} {row.generated_tokens_per_second:>10.1f} "
            f"{row.p50_seconds:>7.2f} {row.p99_seconds:>7.2f}"
        )
    if len(rows) == 2 and rows[1].requests_per_second:
        lines.append(
            f"prefix sharing speed-up: {rows[0].requests_per_second / rows[1].requests_per_second:.2f}x"
        )
    return "\n".join(lines)
