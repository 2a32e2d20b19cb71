"""The local server's batching engine against its one-request-at-a-time reference (real model).

The batch path shares each document's prefix across its pairs (held once), packs the pairs' own
tokens into one sequence, computes tokens shared by consecutive pairs (the head entity) once,
merges the adapter and appends grammar-forced tokens without a forward pass. In fp32 all of that
must give the reference's answers and log-probabilities, on both of its model paths: the fused
decoder (one adapter, merged) and transformers' modules with the packed attention (several
adapters, unmerged).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lmrc import docred
from lmrc.classifier.artifact import DEFAULT_ADAPTER_DIR
from lmrc.classifier.prompt import Option, answer_regex, build_prompt, docred_labels, document_prefix
from lmrc.classifier.training.base_model import materialize
from lmrc.contracts.tgi import GenerateParameters, Grammar
from lmrc.local.llm.engine import EngineOptions, GenerationEngine, InputValidationError
from tests.helpers import write_tiny_qwen2

LABELS = docred_labels()
OPTIONS = [Option("P17", 0.91), Option("P131", 0.42), Option("P27", 0.08), Option("P150", 0.01)]


def _grammar_parameters(adapter_id: str | None) -> GenerateParameters:
    return GenerateParameters(
        adapter_id=adapter_id,
        grammar=Grammar(type="regex", value=answer_regex(len(OPTIONS))),
        max_new_tokens=16,
        details=True,
    )


def _requests(adapter_id: str | None) -> list[tuple[str, GenerateParameters]]:
    """Pairs of two documents (heads repeated, so that pairs share more than the document), one
    request without a grammar (several free decoding steps) and one stopped by a stop sequence."""
    first, second = (docred.to_document_event(raw) for raw in docred.load_split("holdout")[:2])
    pairs = [(0, 1), (0, 2), (0, 3), (1, 0), (1, 2), (2, 0), (3, 1), (3, 2)]
    requests = [
        (build_prompt(first, head, tail, OPTIONS, LABELS), _grammar_parameters(adapter_id))
        for head, tail in pairs
    ]
    requests += [
        (build_prompt(second, head, tail, OPTIONS, LABELS), _grammar_parameters(adapter_id))
        for head, tail in pairs[:3]
    ]
    free = GenerateParameters(adapter_id=adapter_id, max_new_tokens=6, details=True)
    requests.append((build_prompt(first, 2, 3, OPTIONS, LABELS), free))
    stopped = GenerateParameters(adapter_id=adapter_id, max_new_tokens=12, details=True, stop=["\n"])
    requests.append((build_prompt(second, 1, 0, OPTIONS, LABELS), stopped))
    return requests


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return materialize(None)


@pytest.fixture(scope="module")
def reference_answers(model_dir: Path) -> dict[str | None, list]:
    engine = GenerationEngine(model_dir, {"rc": DEFAULT_ADAPTER_DIR}, EngineOptions.reference())
    return {
        adapter_id: [engine.generate(inputs, parameters)[0] for inputs, parameters in _requests(adapter_id)]
        for adapter_id in ("rc", None)
    }


@pytest.mark.parametrize(
    "adapters",
    [{"rc": DEFAULT_ADAPTER_DIR}, {"rc": DEFAULT_ADAPTER_DIR, "other": DEFAULT_ADAPTER_DIR}],
    ids=["one-adapter-merged-fused-decoder", "two-adapters-unmerged-transformers"],
)
def test_batched_answers_are_the_references_in_fp32(
    model_dir: Path, reference_answers: dict[str | None, list], adapters: dict[str, Path]
) -> None:
    engine = GenerationEngine(model_dir, adapters, EngineOptions(dtype="float32"))
    assert (engine._model_for("rc").fused is not None) == (len(adapters) == 1)
    for adapter_id in ("rc", None):  # None: the base model (loaded beside a merged adapter)
        requests = _requests(adapter_id)
        outcomes = engine.generate_batch(requests)
        for (inputs, _parameters), outcome, expected in zip(
            requests, outcomes, reference_answers[adapter_id], strict=True
        ):
            assert not isinstance(outcome, Exception), outcome
            response, stats = outcome
            assert response.generated_text == expected.generated_text, inputs[-200:]
            assert response.details.finish_reason == expected.details.finish_reason
            got = [token.logprob for token in response.details.tokens]
            want = [token.logprob for token in expected.details.tokens]
            assert got == pytest.approx(want, abs=1e-3)
            assert stats.generated_tokens == len(want)


def test_pairs_of_a_document_in_one_batch_share_its_prefix(model_dir: Path) -> None:
    engine = GenerationEngine(model_dir, {"rc": DEFAULT_ADAPTER_DIR}, EngineOptions(dtype="float32"))
    document = docred.to_document_event(docred.load_split("holdout")[0])
    prefix_tokens = len(engine.tokenizer(document_prefix(document))["input_ids"])
    requests = [
        (build_prompt(document, head, tail, OPTIONS, LABELS), _grammar_parameters("rc"))
        for head, tail in [(0, 1), (1, 0), (2, 3)]
    ]
    for outcome in engine.generate_batch(requests):
        assert not isinstance(outcome, Exception)
        assert outcome[1].reused_prefix_tokens >= prefix_tokens - 2  # may merge across the boundary


def test_a_bad_request_fails_alone_in_its_batch(model_dir: Path) -> None:
    engine = GenerationEngine(model_dir, {"rc": DEFAULT_ADAPTER_DIR}, EngineOptions())
    good = _requests("rc")[:2]
    bad = [(good[0][0], _grammar_parameters("no-such-adapter")), ("", _grammar_parameters("rc"))]
    outcomes = engine.generate_batch([good[0], bad[0], good[1], bad[1]])
    assert isinstance(outcomes[1], InputValidationError) and "no-such-adapter" in str(outcomes[1])
    assert isinstance(outcomes[3], InputValidationError)
    for outcome in (outcomes[0], outcomes[2]):
        assert not isinstance(outcome, Exception)
        assert outcome[0].details.finish_reason == "eos_token"


@pytest.fixture(scope="module")
def tiny_qwen2_dir(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_qwen2(tmp_path_factory.mktemp("tiny-qwen2"), model_dir)


@pytest.mark.parametrize("fused_kernels", [True, False], ids=["fused-decoder", "transformers-modules"])
def test_qwen2_batched_answers_are_the_references_in_fp32(tiny_qwen2_dir: Path, fused_kernels: bool) -> None:
    """Qwen2 (biases on the attention projections) through both batch paths, as the reference."""
    reference = GenerationEngine(tiny_qwen2_dir, {}, EngineOptions.reference())
    engine = GenerationEngine(tiny_qwen2_dir, {}, EngineOptions(dtype="float32", fused_kernels=fused_kernels))
    assert (engine._model_for(None).fused is not None) == fused_kernels
    requests = _requests(None)
    outcomes = engine.generate_batch(requests)
    for (inputs, parameters), outcome in zip(requests, outcomes, strict=True):
        expected = reference.generate(inputs, parameters)[0]
        assert not isinstance(outcome, Exception), outcome
        response = outcome[0]
        assert response.generated_text == expected.generated_text, inputs[-200:]
        assert response.details.finish_reason == expected.details.finish_reason
        got = [token.logprob for token in response.details.tokens]
        assert got == pytest.approx([token.logprob for token in expected.details.tokens], abs=1e-3)
