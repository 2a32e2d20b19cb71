"""Packed shared-prefix attention: many requests that share a prompt prefix, no copies, no padding.

The pairs of one document share the document (about four fifths of each prompt) and differ in
their last ~90 tokens, whose lengths vary by a quarter. Batched the usual way, each row carries
its own copy of the prefix's keys and values, every row is padded to the longest, and attention
runs per row over prefix and suffix with a padding mask (PyTorch's slower CPU kernels). Here:

- the rows' new tokens are packed into one sequence (batch 1, no padding), so that every
  projection, norm and MLP of the model runs on real tokens only;
- the prefix's keys and values are held once; in each layer all packed queries attend to it in a
  single fused attention per key/value head (no mask: the whole prefix is visible to every row);
- each row's queries attend to that row's own earlier tokens (causal), gathered per row from the
  packed cache (this small part alone is padded);
- the two are merged with their log-sum-exps, which is exact (the softmax over the union).

Used through transformers' attention interface (``attn_implementation="lmrc_shared_prefix"``)
while :func:`packed_rows` holds a layout; otherwise it is plain SDPA.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

ATTENTION_IMPLEMENTATION = "lmrc_shared_prefix"

#: PyTorch's fused CPU attention kernel; unlike the public SDPA it also returns the log-sum-exp.
_flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu

_held = threading.local()


@dataclass(frozen=True)
class PackedLayout:
    """Where each packed token belongs, as index tensors built once per forward pass.

    ``query_index`` [A, Lq]: for each active row (one with new tokens) its new tokens' indices in
    the packed sequence, padded with N (a zero row appended). ``key_index`` [A, Lk]: each active
    row's own tokens (earlier and new) as indices into the packed cache, padded with 0.
    ``mask`` [A, 1, Lq, Lk]: key visible to query (same row, not later, not padding).
    ``output_index`` [N]: each packed token's place in the flattened [A * Lq] rows.
    """

    prefix: Sequence[tuple[torch.Tensor, torch.Tensor]]
    query_index: torch.Tensor
    key_index: torch.Tensor
    mask: torch.Tensor
    output_index: torch.Tensor

    @classmethod
    def build(
        cls,
        prefix: Sequence[tuple[torch.Tensor, torch.Tensor]],
        cache_length: int,
        cached: Sequence[Sequence[int]],
        new: Sequence[Sequence[int]],
    ) -> PackedLayout:
        """``cached[a]`` / ``new[a]``: the cache positions of active row ``a``'s earlier tokens, and
        the packed positions of its new ones; the cache (``cache_length`` before this pass) grows
        by the packed tokens, in order."""
        rows = len(new)
        total = sum(len(n) for n in new)
        query_width = max(len(n) for n in new)
        key_width = max(len(c) + len(n) for c, n in zip(cached, new, strict=True))
        query_index = torch.full((rows, query_width), total, dtype=torch.long)
        key_index = torch.zeros((rows, key_width), dtype=torch.long)
        visible = torch.zeros((rows, query_width, key_width), dtype=torch.bool)
        output_index = torch.empty(total, dtype=torch.long)
        for row, (earlier, fresh) in enumerate(zip(cached, new, strict=True)):
            count = len(fresh)
            query_index[row, :count] = torch.tensor(fresh, dtype=torch.long)
            keys = [*earlier, *(cache_length + index for index in fresh)]
            key_index[row, : len(keys)] = torch.tensor(keys, dtype=torch.long)
            visible[row, :count, : len(keys)] = torch.ones((count, len(keys)), dtype=torch.bool).tril(
                len(earlier)
            )
            output_index[torch.tensor(fresh, dtype=torch.long)] = row * query_width + torch.arange(count)
        visible[:, :, 0] |= ~visible.any(dim=-1)  # padding queries: one harmless key, never NaN
        return cls(prefix, query_index, key_index, visible.unsqueeze(1), output_index)

    def only(self, tokens: torch.Tensor) -> PackedLayout:
        """The same keys for the queries at packed ``tokens`` alone (one per row at most)."""
        width = self.query_index.shape[1]
        places = self.output_index[tokens]
        rows, slots = places // width, places % width
        count = tokens.shape[0]
        return PackedLayout(
            prefix=self.prefix,
            query_index=torch.arange(count).view(count, 1),
            key_index=self.key_index[rows],
            mask=self.mask[rows, :, slots].unsqueeze(2),
            output_index=torch.arange(count),
        )


@contextmanager
def packed_rows(layout: PackedLayout) -> Iterator[None]:
    previous = getattr(_held, "layout", None)
    _held.layout = layout
    _held.mask = None
    try:
        yield
    finally:
        _held.layout = previous
        _held.mask = None


def _additive_mask(layout: PackedLayout, group: int, dtype: torch.dtype) -> torch.Tensor:
    """The fused kernel's mask (0 or -inf) for grouped queries, built once per forward pass (the
    layout is the same object for every layer)."""
    memo = getattr(_held, "mask", None)
    if memo is not None and memo[0] is layout and memo[1].dtype == dtype:
        return memo[1]
    rows, _one, width, keys = layout.mask.shape
    additive = torch.zeros((rows, 1, width, keys), dtype=dtype).masked_fill(~layout.mask, float("-inf"))
    additive = additive.unsqueeze(2).expand(rows, 1, group, width, keys).reshape(rows, 1, group * width, keys)
    _held.mask = (layout, additive)
    return additive


def packed_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    layout: PackedLayout,
    layer: int,
    scaling: float | None,
) -> torch.Tensor:
    """query [H, N, D] (the packed new tokens), key and value [KVH, K, D] (the packed cache, new
    tokens last) -> the attention output [H, N, D] over the shared prefix and each row's own tokens."""
    heads, total, dim = query.shape
    kv_heads = key.shape[0]
    group = heads // kv_heads
    rows, width = layout.query_index.shape
    if rows == 1 and layout.key_index.shape[1] == width == key.shape[1] == total:
        # One row and nothing before it in the cache (a prefix being computed): plain causal.
        own_out, own_lse = _flash(
            query.unsqueeze(0),
            key.repeat_interleave(group, dim=0).unsqueeze(0),
            value.repeat_interleave(group, dim=0).unsqueeze(0),
            is_causal=True,
            scale=scaling,
        )
        own_out, own_lse = own_out[0], own_lse[0]
        if not layout.prefix:
            return own_out
        return _merge(query, own_out, own_lse, layout, layer, scaling)

    # Each active row's own part: its new queries against its own tokens, padded per row.
    padded = torch.cat([query, query.new_zeros((heads, 1, dim))], dim=1)[:, layout.query_index.reshape(-1)]
    grouped = (
        padded.reshape(heads, rows, width, dim).transpose(0, 1).reshape(rows, kv_heads, group * width, dim)
    )
    keys = key[:, layout.key_index.reshape(-1)].reshape(kv_heads, rows, -1, dim).transpose(0, 1)
    values = value[:, layout.key_index.reshape(-1)].reshape(kv_heads, rows, -1, dim).transpose(0, 1)
    own_out, own_lse = _flash(
        grouped, keys, values, attn_mask=_additive_mask(layout, group, query.dtype), scale=scaling
    )
    # back to packed order: [A, KVH, G*Lq, *] -> [H, A*Lq, *] -> [H, N, *]
    own_out = own_out.reshape(rows, heads, width, dim).transpose(0, 1).reshape(heads, rows * width, dim)
    own_out = own_out[:, layout.output_index]
    if not layout.prefix:
        return own_out
    own_lse = own_lse.reshape(rows, heads, width).transpose(0, 1).reshape(heads, rows * width)
    own_lse = own_lse[:, layout.output_index]
    return _merge(query, own_out, own_lse, layout, layer, scaling)


def _merge(
    query: torch.Tensor,
    own_out: torch.Tensor,
    own_lse: torch.Tensor,
    layout: PackedLayout,
    layer: int,
    scaling: float | None,
) -> torch.Tensor:
    """Attend all packed queries to the held prefix and merge with their own part ([H, N, *])."""
    heads, total, dim = query.shape
    kv_heads = layout.prefix[layer][0].shape[-3]
    group = heads // kv_heads
    # All packed queries against the one prefix: one fused attention per key/value head.
    prefix_keys, prefix_values = layout.prefix[layer]
    stacked = query.reshape(1, kv_heads, group * total, dim)
    prefix_out, prefix_lse = _flash(
        stacked,
        prefix_keys.reshape(1, kv_heads, -1, dim),
        prefix_values.reshape(1, kv_heads, -1, dim),
        scale=scaling,
    )
    prefix_out = prefix_out.reshape(heads, total, dim)
    prefix_lse = prefix_lse.reshape(heads, total)

    # The softmax over both parts: the prefix's share of the weight is sigmoid(lse_p - lse_own).
    share = torch.sigmoid(prefix_lse - own_lse).unsqueeze(-1).to(query.dtype)
    return torch.lerp(own_out, prefix_out, share)


def shared_prefix_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' attention interface: [1, H, N, D] queries, [1, KVH, K, D] cache -> [1, N, H, D]."""
    layout: PackedLayout | None = getattr(_held, "layout", None)
    if layout is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs
        )
    out = packed_attention(query[0], key[0], value[0], layout, module.layer_idx, scaling)
    return out.unsqueeze(0).transpose(1, 2).contiguous(), None


AttentionInterface.register(ATTENTION_IMPLEMENTATION, shared_prefix_attention)
AttentionMaskInterface.register(ATTENTION_IMPLEMENTATION, sdpa_mask)
