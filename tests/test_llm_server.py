"""The local TGI-compatible server, checked against TGI's own OpenAPI description (real model)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import httpx
import jsonschema
import pytest

from lmrc import docred
from lmrc.classifier.artifact import DEFAULT_ADAPTER_DIR, load_config
from lmrc.classifier.prompt import (
    Option,
    answer_regex,
    build_prompt,
    docred_labels,
    document_prefix,
    parse_answer,
)
from lmrc.classifier.service import ClassifierHandler, ClassifierSettings
from lmrc.contracts import CandidatePair, CandidateSetEvent, DocumentEvent, ScoredRelation
from lmrc.contracts.tgi import GenerateRequest
from lmrc.local.llm.local_server import LocalTgiServer
from lmrc.paths import shared_dir
from tests.helpers import scaled

LABELS = docred_labels()
OPTIONS = [Option("P17", 0.91), Option("P131", 0.42), Option("P27", 0.08), Option("P150", 0.01)]


def _nullable_to_json_schema(node: Any) -> Any:
    """OpenAPI 3.0's ``nullable: true`` as JSON Schema's ``null`` type, recursively."""
    if isinstance(node, list):
        return [_nullable_to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: _nullable_to_json_schema(value) for key, value in node.items() if key != "nullable"}
    if node.get("nullable"):
        return {"anyOf": [converted, {"type": "null"}]}
    return converted


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    with open(shared_dir() / "tgi" / "openapi.json", encoding="utf-8") as handle:
        return json.load(handle)


def assert_valid(openapi: dict[str, Any], schema_name: str, instance: Any) -> None:
    schema = {
        "$ref": f"#/components/schemas/{schema_name}",
        "components": _nullable_to_json_schema(openapi["components"]),
    }
    jsonschema.validate(instance, schema)


@pytest.fixture(scope="module")
def document():
    return docred.to_document_event(docred.load_split("holdout")[0])


def _one_pair_request(
    handler: ClassifierHandler, document: DocumentEvent, head: int, tail: int
) -> GenerateRequest:
    """The request the handler builds for one candidate pair of ``document`` with OPTIONS."""
    shortlist = [ScoredRelation(relation_id=o.relation_id, probability=o.probability) for o in OPTIONS]
    pair = CandidatePair(head=head, tail=tail, score=0.5, shortlist=shortlist)
    candidates = CandidateSetEvent(
        event_id="e",
        doc_id=document.doc_id,
        pairs=[pair],
        pairs_scored=document.pair_count(),
        proposer_model_version="p",
        document=document,
    )
    return handler.request_for(candidates, pair, handler.options_for(pair))


def test_the_classifiers_request_is_a_valid_tgi_generate_request(openapi, document) -> None:
    with ClassifierHandler(
        ClassifierSettings(tgi_adapter_id="rc"), load_config(DEFAULT_ADAPTER_DIR)
    ) as handler:
        request = _one_pair_request(handler, document, head=0, tail=1)
        body = request.model_dump(mode="json", exclude_none=True, exclude={"stream"})
    assert_valid(openapi, "GenerateRequest", body)
    assert body["parameters"]["grammar"] == {"type": "regex", "value": answer_regex(4)}
    assert "A. country (0.91)" in body["inputs"]
    assert body["parameters"]["adapter_id"] == "rc" and body["parameters"]["do_sample"] is False
    with pytest.raises(jsonschema.ValidationError):  # the check itself can fail
        assert_valid(openapi, "GenerateRequest", {"parameters": {}})


def test_info_health_and_metrics(tgi_server: LocalTgiServer, openapi) -> None:
    info = httpx.get(f"{tgi_server.url}/info").json()
    assert_valid(openapi, "Info", info)
    assert info["max_input_tokens"] < info["max_total_tokens"]
    assert httpx.get(f"{tgi_server.url}/health").status_code == 200
    text = httpx.get(f"{tgi_server.url}/metrics").text
    for name in ("tgi_queue_size", "tgi_request_duration_bucket", "tgi_request_input_length_bucket"):
        assert name in text


@pytest.mark.parametrize("with_adapter", [True, False], ids=["adapter", "base-model"])
def test_grammar_makes_every_answer_a_valid_option_list(
    tgi_server: LocalTgiServer, openapi, document, with_adapter: bool
) -> None:
    adapter_id = load_config(DEFAULT_ADAPTER_DIR).version if with_adapter else None
    pairs = [(0, 1), (1, 0), (0, 2), (2, 0)]
    for head, tail in pairs:
        body = {
            "inputs": build_prompt(document, head, tail, OPTIONS, LABELS),
            "parameters": {
                "grammar": {"type": "regex", "value": answer_regex(len(OPTIONS))},
                "max_new_tokens": 16,
                "details": True,
                **({"adapter_id": adapter_id} if adapter_id else {}),
            },
        }
        answer = httpx.post(f"{tgi_server.url}/generate", json=body, timeout=scaled(120))
        assert answer.status_code == 200, answer.text
        payload = answer.json()
        assert_valid(openapi, "GenerateResponse", payload)
        assert payload["details"]["finish_reason"] == "eos_token"
        parse_answer(payload["generated_text"], len(OPTIONS))  # raises unless valid option letters
        assert all(token["logprob"] <= 1e-6 for token in payload["details"]["tokens"])
        assert int(answer.headers["x-prompt-tokens"]) > 300


def test_pairs_of_one_document_reuse_the_cached_prefix(tgi_server: LocalTgiServer, document) -> None:
    def reused() -> float:
        for line in httpx.get(f"{tgi_server.url}/metrics").text.splitlines():
            if line.startswith("tgi_request_prefix_reused_tokens_sum"):
                return float(line.split()[-1])
        return 0.0

    for head, tail in [(1, 2), (2, 1)]:
        before = reused()
        body = {
            "inputs": build_prompt(document, head, tail, OPTIONS, LABELS),
            "parameters": {"max_new_tokens": 2},
        }
        assert httpx.post(f"{tgi_server.url}/generate", json=body, timeout=scaled(120)).status_code == 200
    shared = len(  # what the two prompts share: the document prefix
        httpx.post(f"{tgi_server.url}/tokenize", json={"inputs": document_prefix(document)}).json()
    )
    assert reused() - before >= shared - 2  # the last token or two may merge across the boundary


def test_concurrent_requests_are_decoded_together(tgi_server: LocalTgiServer, document) -> None:
    """Requests in flight together form one batch (the pairs of a document, as the classifier sends
    them), and every answer is still a valid option list."""
    adapter_id = load_config(DEFAULT_ADAPTER_DIR).version
    bodies = [
        {
            "inputs": build_prompt(document, head, tail, OPTIONS, LABELS),
            "parameters": {
                "adapter_id": adapter_id,
                "grammar": {"type": "regex", "value": answer_regex(len(OPTIONS))},
                "max_new_tokens": 16,
            },
        }
        for head, tail in [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)]
    ]

    async def together() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=tgi_server.url, timeout=scaled(120)) as client:
            return list(await asyncio.gather(*(client.post("/generate", json=body) for body in bodies)))

    with httpx.Client(base_url=tgi_server.url) as metrics:
        before = (
            _counter(metrics, "tgi_batch_next_size_sum"),
            _counter(metrics, "tgi_batch_next_size_count"),
        )
        answers = asyncio.run(together())
        after = (_counter(metrics, "tgi_batch_next_size_sum"), _counter(metrics, "tgi_batch_next_size_count"))
    for answer in answers:
        assert answer.status_code == 200, answer.text
        parse_answer(answer.json()["generated_text"], len(OPTIONS))
    requests, batches = after[0] - before[0], after[1] - before[1]
    assert requests == len(bodies) and batches < len(bodies), (requests, batches)


def test_bad_requests_get_tgi_validation_errors(tgi_server: LocalTgiServer, openapi) -> None:
    bad = [
        {"inputs": "x", "parameters": {"max_new_tokens": -1}},
        {"inputs": "x", "parameters": {"grammar": {"type": "regex", "value": "(unclosed"}}},
        {"inputs": "x", "parameters": {"adapter_id": "no-such-adapter"}},
        {"inputs": "word " * 5000, "parameters": {"max_new_tokens": 4}},
        {"parameters": {}},
    ]
    for body in bad:
        answer = httpx.post(f"{tgi_server.url}/generate", json=body, timeout=scaled(60))
        assert answer.status_code == 422, (body, answer.text)
        assert_valid(openapi, "ErrorResponse", answer.json())
        assert answer.json()["error_type"] == "validation"


def test_more_requests_than_allowed_get_tgis_overloaded_answer(openapi, tmp_path) -> None:
    """TGI answers 429 beyond ``max_concurrent_requests``; the others are still served."""
    body = {"inputs": "Write a long story about a cat.", "parameters": {"max_new_tokens": 40}}

    async def burst(url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=scaled(120)) as client:
            return list(await asyncio.gather(*(client.post("/generate", json=body) for _ in range(4))))

    with LocalTgiServer(max_concurrent_requests=1, log_path=tmp_path / "server.log") as server:
        answers = asyncio.run(burst(server.url))
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses[0] == 200 and statuses[-1] == 429, statuses
    for answer in answers:
        if answer.status_code == 429:
            assert_valid(openapi, "ErrorResponse", answer.json())
            assert answer.json()["error_type"] == "overloaded"


def _counter(metrics: httpx.Client, sample: str) -> float:
    for line in metrics.get("/metrics").text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_request_whose_client_left_while_queued_is_dropped_not_computed(tmp_path) -> None:
    """A slow server used to compute every answer whose client had timed out, so retries piled up
    behind them and nothing got through. Now a request whose client left before its turn is
    dropped (counted as ``client_disconnected``); the one being computed still completes."""
    # A grammar that allows no early end: the long answer takes a while on any CPU.
    forced = {"type": "regex", "value": "(cat ){60}"}
    long = {"inputs": "Say cat.", "parameters": {"max_new_tokens": 200, "grammar": forced}}
    short = {"inputs": "Say yes.", "parameters": {"max_new_tokens": 2}}
    dropped = 'tgi_request_failure{err="client_disconnected"}'
    with (
        LocalTgiServer(log_path=tmp_path / "server.log") as server,  # the base model alone
        httpx.Client(base_url=server.url, timeout=scaled(120)) as client,
    ):
        answers: list[int] = []
        first = threading.Thread(
            target=lambda: answers.append(client.post("/generate", json=long).status_code)
        )
        first.start()
        deadline = time.monotonic() + scaled(30)
        while _counter(client, "tgi_batch_current_size") < 1:  # the long one is being computed
            assert time.monotonic() < deadline, "the long request was never computed"
        with pytest.raises(httpx.TimeoutException):  # waits behind it, then gives up and leaves
            httpx.post(f"{server.url}/generate", json=short, timeout=0.3)
        first.join(scaled(120))
        deadline = time.monotonic() + scaled(30)
        while _counter(client, dropped) < 1:
            assert time.monotonic() < deadline, "the abandoned request was not dropped"
        assert answers == [200]
        assert _counter(client, "tgi_request_success") == 1  # the long one; the short never computed
        assert _counter(client, "tgi_request_count") == 2


def test_a_zero_shot_folder_asks_the_served_qwen2_base_model_in_chatml_with_its_examples(
    tmp_path_factory: pytest.TempPathFactory, document
) -> None:
    """A classifier folder without an adapter (``lmrc classifier zero-shot``): requests name no
    adapter, are written in the model's chat format with the worked examples in the shared prefix,
    and the server running a Qwen2 checkpoint answers them within the grammar."""
    from lmrc.classifier.artifact import ClassifierConfig, has_adapter, save_config
    from lmrc.classifier.prompt import CHATML_OPENING, PROMPT_VERSION, worked_examples
    from lmrc.classifier.training.base_model import QWEN_05B, materialize
    from tests.helpers import write_tiny_qwen2

    folder = tmp_path_factory.mktemp("zero-shot")
    examples = worked_examples(document, [(0, 1, OPTIONS, [0]), (1, 0, OPTIONS, [])], LABELS)
    config = ClassifierConfig(
        version="rc-qwen2-4-shot",
        prompt_version=PROMPT_VERSION,
        base_model=QWEN_05B.model_id,
        prompt_format=QWEN_05B.prompt_format,
        prompt_examples=examples,
    )
    save_config(config, folder)
    assert not has_adapter(folder) and "Answer: A\n" in examples and "Answer: none\n" in examples
    model_dir = write_tiny_qwen2(tmp_path_factory.mktemp("tiny-qwen2"), materialize())
    log_path = tmp_path_factory.mktemp("tgi-qwen2") / "server.log"
    with (
        LocalTgiServer(model_dir=model_dir, log_path=log_path) as server,
        ClassifierHandler(ClassifierSettings(tgi_url=server.url, artifact_dir=folder), config) as handler,
    ):
        request = _one_pair_request(handler, document, head=2, tail=3)
        assert request.parameters.adapter_id is None
        assert request.inputs.startswith(CHATML_OPENING + "### Instruction\n")
        assert f"### Examples\n{examples}\n\n### Document\n" in request.inputs
        assert request.inputs.endswith("<|im_end|>\n<|im_start|>assistant\nAnswer: ")
        assert httpx.get(f"{server.url}/info").json()["model_id"] == model_dir.name
        body = request.model_dump(mode="json", exclude_none=True, exclude={"stream"})
        response = httpx.post(f"{server.url}/generate", json=body, timeout=scaled(60))
    assert response.status_code == 200, response.text
    parse_answer(response.json()["generated_text"], len(OPTIONS))  # within the grammar
