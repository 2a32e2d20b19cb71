"""Loading and saving the torch model of an artifact (training, export, parity, benchmark)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from lmrc import weights
from lmrc.paths import encoder_dir
from lmrc.proposer.artifact import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    ProposerConfig,
    load_config,
    save_config,
    sigmoid,
)
from lmrc.proposer.features import INPUT_NAMES, DocumentFeatures
from lmrc.proposer.training.model import PairScorer


def build_model(config: ProposerConfig) -> PairScorer:
    model = PairScorer.from_encoder_dir(
        encoder_dir(config.encoder),
        config.emb_size,
        config.block_size,
        config.type_size,
        config.relation_classes,
        relation_threshold_class=config.relation_loss == "atlop",
        type_count=len(config.entity_types) + 1,
    )
    model.freeze_lower_layers(config.frozen_layers)
    return model


def save_artifact(model: PairScorer, config: ProposerConfig, directory: str | Path) -> None:
    """The trainable parameters (fp16, or int4 deltas from the pretrained encoder), and the config."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    trained = {name: parameter for name, parameter in model.named_parameters() if parameter.requires_grad}
    save_file(
        weights.stored_form(trained, config.weights_format, config.encoder), str(directory / WEIGHTS_FILE)
    )
    save_config(config, directory)


def load_artifact(directory: str | Path) -> tuple[PairScorer, ProposerConfig]:
    config = load_config(directory)
    model = build_model(config)
    stored = load_file(str(Path(directory) / WEIGHTS_FILE))
    trained = weights.trained_form(stored, config.weights_format, config.encoder)
    expected = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    if set(trained) != expected:
        raise ValueError(
            f"{directory}: weights do not match {CONFIG_FILE} "
            f"(missing {sorted(expected - set(trained))[:3]}, "
            f"unexpected {sorted(set(trained) - expected)[:3]})"
        )
    model.load_state_dict(trained, strict=False)
    model.eval()
    return model, config


def torch_inputs(features: DocumentFeatures, device: str = "cpu") -> dict[str, torch.Tensor]:
    return {name: torch.from_numpy(value).to(device) for name, value in features.as_inputs().items()}


@torch.no_grad()
def torch_scores(model: PairScorer, features: DocumentFeatures, device: str = "cpu") -> np.ndarray:
    """Pair probabilities, in the order of ``features.pair_heads`` / ``pair_tails``."""
    if len(features.pair_heads) == 0:
        return np.zeros(0)
    inputs = torch_inputs(features, device)
    pair_logits = model.bilinear(model.pair_representations(*(inputs[name] for name in INPUT_NAMES)))
    return sigmoid(pair_logits.squeeze(-1).float().cpu().numpy())


@torch.no_grad()
def torch_pair_and_relation_logits(
    model: PairScorer, features: DocumentFeatures, device: str = "cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """Pair logits [pairs] and relation logits [pairs, outputs] in one encoder pass."""
    inputs = torch_inputs(features, device)
    pairs = model.pair_representations(*(inputs[name] for name in INPUT_NAMES))
    pair_logits = model.bilinear(pairs).squeeze(-1)
    if model.relation_classifier is None:
        raise ValueError("this proposer has no relation head")
    return pair_logits.float().cpu().numpy(), model.relation_classifier(pairs).float().cpu().numpy()


@torch.no_grad()
def torch_pair_attention(model: PairScorer, features: DocumentFeatures, device: str = "cpu") -> np.ndarray:
    """The pairs' context attention over word pieces [pairs, tokens]."""
    inputs = torch_inputs(features, device)
    _pairs, attention = model.pair_representations_with_attention(*(inputs[name] for name in INPUT_NAMES))
    return attention.float().cpu().numpy()
