"""A Llama/Qwen2 decoder for packed rows on CPU: transformers' arithmetic, laid out for speed.

With the shared prefix held once and the rows' tokens packed (:mod:`lmrc.local.llm.attention`),
a forward pass over ~3,000 tokens spends more time in element-wise steps on strided views than in
matrix products (profiled: rotary embedding on transposed heads, three query/key/value and two
gate/up products, norms). This decoder runs the same model with

- one product for query, key and value, and one for gate and up (weights concatenated once);
- rotary embedding on the packed [tokens, heads, dim] layout, from one cos/sin table per pass;
- RMSNorm as one fused reduction (the vector norm, accumulated in fp32) and one scaling pass;
- the key/value cache per layer as [kv heads, tokens, dim], grown by each pass's packed tokens.

It serves plain Llama checkpoints (SmolLM2) and Qwen2 ones (Qwen2.5: the same decoder with biases
on the query, key and value projections) with any adapter merged; anything else (several adapters
unmerged, another architecture, Qwen2's sliding window) runs through transformers with the same
attention.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional

from lmrc.local.llm.attention import PackedLayout, packed_attention


def rms_norm(hidden: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x / sqrt(mean(x^2) + eps) * weight: the mean from one fused fp32-accumulated norm (PyTorch's
    RMSNorm on CPU runs as seven element-wise passes; this is two and a reduction)."""
    norm = torch.linalg.vector_norm(hidden, dim=-1, keepdim=True, dtype=torch.float32)
    scale = torch.rsqrt(norm.square_().div_(hidden.shape[-1]).add_(eps))
    return (hidden * scale.to(hidden.dtype)) * weight


def supports(model: Any) -> bool:
    """Whether ``model`` is a plain Llama or Qwen2 causal LM this decoder reproduces exactly."""
    config = getattr(model, "config", None)
    if config is None or type(model).__name__ not in ("LlamaForCausalLM", "Qwen2ForCausalLM"):
        return False
    layers = model.model.layers
    unbiased = [module for layer in layers for module in (layer.self_attn.o_proj, *layer.mlp.children())]
    return (
        config.hidden_act == "silu"
        and not getattr(config, "use_sliding_window", False)
        and all(getattr(module, "bias", None) is None for module in unbiased)
        and (config.rope_parameters or {}).get("rope_type", "default") == "default"
    )


def _qkv_bias(attention: Any) -> torch.Tensor | None:
    """The query, key and value biases as one vector (Qwen2), or None (Llama)."""
    biases = [attention.q_proj.bias, attention.k_proj.bias, attention.v_proj.bias]
    if all(bias is None for bias in biases):
        return None
    return torch.cat(
        [
            bias if bias is not None else projection.weight.new_zeros(projection.weight.shape[0])
            for bias, projection in zip(
                biases, (attention.q_proj, attention.k_proj, attention.v_proj), strict=True
            )
        ]
    )


@dataclass(frozen=True)
class _Layer:
    input_norm: torch.Tensor
    qkv: torch.Tensor
    qkv_bias: torch.Tensor | None
    output: torch.Tensor
    post_norm: torch.Tensor
    gate_up: torch.Tensor
    down: torch.Tensor


class FusedDecoder:
    def __init__(self, model: Any) -> None:
        config = model.config
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.intermediate = config.intermediate_size
        self.eps = config.rms_norm_eps
        self.scaling = self.head_dim**-0.5
        inner = model.model
        self.embed = inner.embed_tokens.weight
        self.norm = inner.norm.weight
        self.inv_freq = inner.rotary_emb.inv_freq.float()
        self.rope_scaling = float(inner.rotary_emb.attention_scaling)
        self.layers = [
            _Layer(
                input_norm=layer.input_layernorm.weight,
                qkv=torch.cat(
                    [
                        layer.self_attn.q_proj.weight,
                        layer.self_attn.k_proj.weight,
                        layer.self_attn.v_proj.weight,
                    ]
                ),
                qkv_bias=_qkv_bias(layer.self_attn),
                output=layer.self_attn.o_proj.weight,
                post_norm=layer.post_attention_layernorm.weight,
                gate_up=torch.cat([layer.mlp.gate_proj.weight, layer.mlp.up_proj.weight]),
                down=layer.mlp.down_proj.weight,
            )
            for layer in inner.layers
        ]

    def new_cache(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        empty = self.embed.new_zeros((self.kv_heads, 0, self.head_dim))
        return [(empty, empty) for _ in self.layers]

    def _rotary(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin [N, 1, D/2], as transformers computes them (fp32, then the model's dtype)."""
        freqs = positions[:, None].float() * self.inv_freq[None, :]
        cos = (freqs.cos() * self.rope_scaling).to(dtype)
        sin = (freqs.sin() * self.rope_scaling).to(dtype)
        return cos[:, None, :], sin[:, None, :]

    @staticmethod
    def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """x * cos + rotate_half(x) * sin, on [N, heads, D] with cos/sin for one half."""
        half = x.shape[-1] // 2
        first, second = x[..., :half], x[..., half:]
        return torch.cat([first * cos - second * sin, second * cos + first * sin], dim=-1)

    def forward(
        self,
        token_ids: torch.Tensor,
        positions: torch.Tensor,
        layout: PackedLayout,
        cache: list[tuple[torch.Tensor, torch.Tensor]],
        outputs: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Hidden states after the final norm: [N, hidden], or [len(outputs), hidden] for the packed
        tokens ``outputs`` only. ``cache`` grows by the N tokens."""
        total = token_ids.shape[0]
        q_size, kv_size = self.heads * self.head_dim, self.kv_heads * self.head_dim
        dtype = self.embed.dtype
        # The residual stream in fp32 (the products in the weights' dtype): rounding it to bf16 at
        # each of the 60 additions is what moves bf16 answers away from fp32 ones.
        hidden = functional.embedding(token_ids, self.embed).float()
        cos, sin = self._rotary(positions, dtype)
        heads = self.heads + self.kv_heads
        last_layer = len(self.layers) - 1
        for index, layer in enumerate(self.layers):
            normed = rms_norm(hidden, layer.input_norm, self.eps).to(dtype)
            qkv = functional.linear(normed, layer.qkv, layer.qkv_bias)
            query_key = self._rotate(qkv[:, : q_size + kv_size].view(total, heads, self.head_dim), cos, sin)
            query, key = query_key[:, : self.heads], query_key[:, self.heads :]
            value = qkv[:, q_size + kv_size :].view(total, self.kv_heads, self.head_dim)
            cached_keys, cached_values = cache[index]
            keys = torch.cat([cached_keys, key.transpose(0, 1)], dim=1)
            values = torch.cat([cached_values, value.transpose(0, 1)], dim=1)
            cache[index] = (keys, values)
            if index == last_layer and outputs is not None:
                if outputs.numel() == 0:
                    return hidden[:0]
                # Only the rows' last tokens are read after the last layer; the others' keys and
                # values (above) are all that later tokens need of them.
                hidden, query, layout = hidden[outputs], query[outputs], layout.only(outputs)
                total = hidden.shape[0]
            attended = packed_attention(query.transpose(0, 1), keys, values, layout, index, self.scaling)
            hidden = hidden + functional.linear(attended.transpose(0, 1).reshape(total, q_size), layer.output)
            normed = rms_norm(hidden, layer.post_norm, self.eps).to(dtype)
            gate, up = functional.linear(normed, layer.gate_up).split(self.intermediate, dim=-1)
            hidden = hidden + functional.linear(functional.silu(gate).mul_(up), layer.down)
        return rms_norm(hidden, self.norm, self.eps).to(dtype)
