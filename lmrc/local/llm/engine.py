"""Text generation for the local TGI-compatible server: transformers on CPU, requests in batches.

What it shares with TGI: greedy or sampled decoding, ``grammar`` through outlines-core (the
reported log-probabilities are those of the grammar-masked distribution, as in TGI), stop
sequences, ``details`` with per-token log-probabilities, multi-LoRA by ``adapter_id`` (PEFT
adapters). What it does not do: ``best_of``, ``top_n_tokens``, ``top_p``, ``typical_p``,
repetition and frequency penalties (accepted, ignored), watermarking.

:meth:`GenerationEngine.generate_batch` serves the requests in flight together, which is where
the speed on a CPU comes from (``docs/results/llm-serving-benchmark.json``):

- requests that share most of their prompt (the pairs of one document) form a group: the shared
  prefix is computed once (or taken from the prefix cache, which keeps the last few prefixes),
  copied for each request, and the rest of each prompt runs as one padded batch;
- only the last position's hidden state of each request goes through the vocabulary projection;
- tokens that the grammar forces (one allowed token: the newline after ``none``, the end of the
  answer) are appended without a forward pass (TGI's masked log-probability of such a token is 0);
- with a single adapter served, its LoRA weights are merged into the model (no per-layer LoRA
  products); the base model is loaded beside it only if a request asks for it;
- bf16 weights where the CPU multiplies bf16 natively (AMX or AVX-512 BF16), fp32 elsewhere.

:meth:`GenerationEngine.generate` is the reference: one request, token by token, the previous
prompt's cache reused for the common prefix. The benchmark measures the batch path against it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections import OrderedDict, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.cache_utils import DynamicCache

from lmrc.contracts.tgi import Details, GenerateParameters, GenerateResponse, PrefillToken, Token
from lmrc.local.llm import fused
from lmrc.local.llm.attention import ATTENTION_IMPLEMENTATION, PackedLayout, packed_rows
from lmrc.local.llm.fused import FusedDecoder
from lmrc.local.llm.grammar import Constraint, GrammarCompiler, GrammarError, byte_level_vocabulary

log = logging.getLogger(__name__)

DEFAULT_MAX_NEW_TOKENS = 100
#: A request joins a group when it shares at least this share of its prompt with the group's first.
MIN_SHARED_SHARE = 0.5
#: Rows of a group whose next tokens agree for at least this many compute them once (a second
#: level of sharing after the group's prefix: the pairs with the same head entity).
MIN_SEGMENT_TOKENS = 4
DType = Literal["auto", "float32", "bfloat16"]


class InputValidationError(ValueError):
    """The request cannot be served as asked (TGI answers 422)."""


@dataclass(frozen=True)
class EngineOptions:
    """How the engine computes; the defaults are the fast ones, ``reference()`` today's baseline."""

    dtype: DType = "auto"
    merge_single_adapter: bool = True
    max_batch_size: int = 32
    #: Upper bound on the key/value positions a batch holds (rows x their prompt + new tokens).
    max_batch_tokens: int = 32_768
    prefix_cache_bytes: int = 512 * 2**20
    #: The fused Llama/Qwen2 decoder for plain weights (``fused.py``) and its one-reduction RMSNorm in
    #: transformers' modules otherwise; off: transformers' own arithmetic throughout.
    fused_kernels: bool = True
    max_input_tokens: int = 4096
    max_total_tokens: int = 4608
    threads: int | None = None

    @classmethod
    def reference(cls, **overrides: Any) -> EngineOptions:
        """fp32, adapters unmerged: the engine as it was before batching (the benchmark's baseline)."""
        return cls(dtype="float32", merge_single_adapter=False, fused_kernels=False, **overrides)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (else bf16 is emulated and slower than fp32)."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_dtype(dtype: DType) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]


@dataclass(frozen=True)
class GenerationStats:
    input_tokens: int
    generated_tokens: int
    #: Prompt tokens not computed for this request alone: taken from the prefix cache, or
    #: computed once for the requests batched with it.
    reused_prefix_tokens: int
    inference_seconds: float


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    length = min(len(a), len(b))
    for index in range(length):
        if a[index] != b[index]:
            return index
    return length


@dataclass
class _Request:
    """One request on its way through a batch."""

    position: int
    inputs: str
    parameters: GenerateParameters
    prompt_ids: list[int]
    max_new_tokens: int
    constraint: Constraint | None
    generator: torch.Generator | None
    tokens: list[Token] = field(default_factory=list)
    generated: list[int] = field(default_factory=list)
    text: str = ""
    unfed: list[int] = field(default_factory=list)  # chosen, not yet run through the model
    finish_reason: str | None = None
    reused: int = 0


@dataclass
class _CachedPrefix:
    token_ids: list[int]
    layers: list[tuple[torch.Tensor, torch.Tensor]]
    nbytes: int


def _fused_rms_norm(module: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    return fused.rms_norm(hidden, module.weight, module.variance_epsilon)


class _Model:
    """One set of weights and the way to run its decoder and vocabulary projection apart."""

    def __init__(self, model: Any, fused_kernels: bool) -> None:
        self.model = model
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        if fused_kernels:
            for module in inner.modules():
                if type(module).__name__.endswith("RMSNorm") and hasattr(module, "variance_epsilon"):
                    module.forward = functools.partial(_fused_rms_norm, module)
        inner.set_attn_implementation(ATTENTION_IMPLEMENTATION)  # SDPA unless a prefix is held
        self.decoder = inner.get_decoder()
        # Only plain weights (a merged adapter or none): the fused decoder knows nothing of LoRA.
        plain = inner is model
        self.fused = FusedDecoder(inner) if fused_kernels and plain and fused.supports(inner) else None
        self.lm_head = inner.get_output_embeddings()
        self.config = inner.config


class _Batch:
    """Rows decoded together: their shared prefix held once, their own tokens packed into one
    sequence per forward pass (no padding) over one cache that grows by the packed tokens."""

    def __init__(
        self,
        model: _Model,
        prefix: list[tuple[torch.Tensor, torch.Tensor]],
        prefix_length: int,
        rows: int,
    ) -> None:
        self.model = model
        self.prefix = prefix
        self.cache = DynamicCache(config=model.config)
        self.fused_cache = model.fused.new_cache() if model.fused is not None else []
        self.cache_length = 0
        self.cached: list[list[int]] = [[] for _ in range(rows)]  # each row's own tokens' cache positions
        self.next_position = [prefix_length] * rows

    def extend(self, chunks: Sequence[Sequence[int]]) -> dict[int, torch.Tensor]:
        """Run each row's tokens (none for a finished row): logits after each active row's last."""
        active = [row for row, chunk in enumerate(chunks) if chunk]
        hidden, fresh = self._forward(
            [(self.cached[row], chunks[row], self.next_position[row]) for row in active],
            outputs=[True] * len(active),
        )
        for row, packed in zip(active, fresh, strict=True):
            self.cached[row].extend(packed)
            self.next_position[row] += len(packed)
        logits = self.model.lm_head(hidden).float()
        return dict(zip(active, logits, strict=True))

    def start(
        self, rests: Sequence[Sequence[int]], segments: Sequence[tuple[Sequence[int], Sequence[int]]]
    ) -> dict[int, torch.Tensor]:
        """The first pass: each segment of tokens that several rows have next (the pair's head
        entity, say) once, and every row's remaining tokens after its segment, which see the
        segment as their own earlier tokens; logits after each row's last token."""
        base = self.cache_length
        segment_of: dict[int, int] = {}
        segment_positions: list[list[int]] = []
        offset = 0
        for index, (tokens, members) in enumerate(segments):
            segment_positions.append(list(range(base + offset, base + offset + len(tokens))))
            offset += len(tokens)
            segment_of.update(dict.fromkeys(members, index))
        entries = [
            (self.cached[members[0]], tokens, self.next_position[members[0]]) for tokens, members in segments
        ]
        for row, rest in enumerate(rests):
            shared = segment_positions[segment_of[row]] if row in segment_of else []
            self.cached[row] = [*self.cached[row], *shared]
            self.next_position[row] += len(shared)
            entries.append((self.cached[row], rest[len(shared) :], self.next_position[row]))
        hidden, fresh = self._forward(entries, outputs=[False] * len(segments) + [True] * len(rests))
        for row, packed in enumerate(fresh[len(segments) :]):
            self.cached[row].extend(packed)
            self.next_position[row] += len(packed)
        logits = self.model.lm_head(hidden).float()
        return dict(enumerate(logits))

    def _forward(
        self, entries: Sequence[tuple[Sequence[int], Sequence[int], int]], outputs: Sequence[bool]
    ) -> tuple[torch.Tensor, list[list[int]]]:
        """One pass over packed entries (positions of the earlier tokens each sees, in the cache as
        it will be after this pass; its tokens; its first position): the hidden states after the
        last token of each entry flagged in ``outputs``, and each entry's cache positions (the
        cache grows by the packed tokens, in order)."""
        ids: list[int] = []
        positions: list[int] = []
        fresh: list[list[int]] = []
        for _earlier, tokens, start in entries:
            fresh.append(list(range(len(ids), len(ids) + len(tokens))))
            ids.extend(tokens)
            positions.extend(range(start, start + len(tokens)))
        layout = PackedLayout.build(self.prefix, self.cache_length, [e[0] for e in entries], fresh)
        last = torch.tensor(
            [packed[-1] for packed, wanted in zip(fresh, outputs, strict=True) if wanted], dtype=torch.long
        )
        if self.model.fused is not None:
            hidden = self.model.fused.forward(
                torch.tensor(ids), torch.tensor(positions), layout, self.fused_cache, last
            )
        else:
            with packed_rows(layout):
                hidden = self.model.decoder(
                    input_ids=torch.tensor([ids]),
                    position_ids=torch.tensor([positions]),
                    cache=self.cache,
                    use_cache=True,
                ).last_hidden_state[0][last]
        cache_positions = [[self.cache_length + index for index in packed] for packed in fresh]
        self.cache_length += len(ids)
        return hidden, cache_positions


def _segments(rests: Sequence[Sequence[int]], minimum: int) -> list[tuple[list[int], list[int]]]:
    """Runs of consecutive (sorted) rows whose remaining tokens begin alike, for at least
    ``minimum`` tokens: (those tokens, the rows). Each row keeps at least one token of its own."""
    segments: list[tuple[list[int], list[int]]] = []
    first = 0
    while first < len(rests):
        common = len(rests[first]) - 1
        last = first + 1
        while last < len(rests):
            candidate = min(common, _common_prefix(rests[first], rests[last]), len(rests[last]) - 1)
            if candidate < minimum:
                break
            common = candidate
            last += 1
        if last - first > 1:
            segments.append((list(rests[first][:common]), list(range(first, last))))
        first = last
    return segments


class GenerationEngine:
    def __init__(
        self,
        model_dir: Path,
        adapters: dict[str, Path] | None = None,
        options: EngineOptions | None = None,
    ) -> None:
        self.options = options = options or EngineOptions()
        if options.threads:
            torch.set_num_threads(options.threads)
        self.model_dir = model_dir
        self.max_input_tokens = options.max_input_tokens
        self.max_total_tokens = options.max_total_tokens
        self.dtype = resolve_dtype(options.dtype)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.adapters = dict(adapters or {})
        self.adapter_ids = list(self.adapters)
        self.merged = bool(self.adapters) and len(self.adapters) == 1 and options.merge_single_adapter
        self._models: dict[str | None, _Model] = {}
        self._models_lock = threading.Lock()
        if self.adapters:
            self._models[self.adapter_ids[0] if self.merged else None] = self._load_adapters()
        else:
            self._models[None] = _Model(self._load_base(), options.fused_kernels)
        self.eos_token_id = int(self.tokenizer.eos_token_id)
        self.pad_token_id = (
            self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_token_id
        )
        backend = self.tokenizer.backend_tokenizer
        special = {token.content for token in backend.get_added_tokens_decoder().values()}
        self.special_ids = {self.tokenizer.convert_tokens_to_ids(token) for token in special}
        self.grammars = GrammarCompiler(
            byte_level_vocabulary(backend.get_vocab(), special, self.eos_token_id)
        )
        self._prefixes: OrderedDict[tuple[str | None, tuple[int, ...]], _CachedPrefix] = OrderedDict()
        self._prefix_bytes = 0
        self._previous: tuple[str | None, list[int], DynamicCache] | None = None  # for generate()

    # -- models ----------------------------------------------------------------------------------

    def _load_base(self) -> Any:
        model = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=torch.float32)
        return model.to(self.dtype).eval()

    def _load_adapters(self) -> _Model:
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=torch.float32)
        items = list(self.adapters.items())
        model = PeftModel.from_pretrained(base, items[0][1], adapter_name=items[0][0])
        if self.merged:  # merged in fp32, then cast: as exact as the unmerged fp32 product
            return _Model(model.merge_and_unload().to(self.dtype).eval(), self.options.fused_kernels)
        for adapter_id, path in items[1:]:
            model.load_adapter(path, adapter_name=adapter_id)
        return _Model(model.to(self.dtype).eval(), self.options.fused_kernels)

    def _model_for(self, adapter_id: str | None) -> _Model:
        if not self.adapters or not self.merged:
            return next(iter(self._models.values()))
        with self._models_lock:
            if adapter_id not in self._models:  # the base model beside a merged adapter, on demand
                log.info("loading the base model for requests without an adapter")
                self._models[adapter_id] = _Model(self._load_base(), self.options.fused_kernels)
            return self._models[adapter_id]

    def _adapter(self, adapter_id: str | None) -> Any:
        """The PEFT adapter for the request; the base model when none is asked for (as TGI)."""
        if not self.adapters or self.merged:
            return contextlib.nullcontext()
        model = self._models[None].model
        if adapter_id is None:
            return model.disable_adapter()
        model.set_adapter(adapter_id)
        return contextlib.nullcontext()

    # -- requests in batches ---------------------------------------------------------------------

    def generate_batch(
        self, requests: Sequence[tuple[str, GenerateParameters]]
    ) -> list[tuple[GenerateResponse, GenerationStats] | Exception]:
        """Each request's answer, or the exception that fails it (validation, grammar, generation)."""
        started = time.perf_counter()
        outcomes: list[tuple[GenerateResponse, GenerationStats] | Exception | None] = [None] * len(requests)
        by_adapter: dict[str | None, list[_Request]] = defaultdict(list)
        for position, (inputs, parameters) in enumerate(requests):
            try:
                request = self._prepare(position, inputs, parameters)
            except (InputValidationError, GrammarError) as error:
                outcomes[position] = error
                continue
            by_adapter[parameters.adapter_id].append(request)
        for adapter_id, group in by_adapter.items():
            model = self._model_for(adapter_id)
            for rows in self._groups(group):
                try:
                    with torch.inference_mode(), self._adapter(adapter_id):
                        self._decode_together(model, adapter_id, rows)
                except Exception as error:  # fails this group's requests, not the whole batch
                    log.exception("generation failed")
                    for row in rows:
                        outcomes[row.position] = error
        seconds = time.perf_counter() - started
        for rows in by_adapter.values():
            for row in rows:
                if outcomes[row.position] is None:
                    outcomes[row.position] = self._response(row, seconds)
        return [
            outcome if outcome is not None else RuntimeError("the request was not served")
            for outcome in outcomes
        ]

    def _prepare(self, position: int, inputs: str, parameters: GenerateParameters) -> _Request:
        prompt_ids = self._prompt_ids(inputs, parameters)
        max_new_tokens = self._max_new_tokens(prompt_ids, parameters)
        constraint = (
            self.grammars.constraint(parameters.grammar.type, parameters.grammar.value)
            if parameters.grammar is not None
            else None
        )
        generator = torch.Generator().manual_seed(parameters.seed) if parameters.seed is not None else None
        return _Request(position, inputs, parameters, prompt_ids, max_new_tokens, constraint, generator)

    def _groups(self, requests: list[_Request]) -> Iterator[list[_Request]]:
        """Requests that share most of their prompt, within the batch's size and token bounds."""
        ordered = sorted(requests, key=lambda request: request.prompt_ids)
        group: list[_Request] = []
        for request in ordered:
            if group:
                shared = _common_prefix(group[0].prompt_ids, request.prompt_ids)
                positions = (len(group) + 1) * max(
                    len(r.prompt_ids) + r.max_new_tokens for r in [*group, request]
                )
                if (
                    shared < MIN_SHARED_SHARE * len(request.prompt_ids)
                    or len(group) >= self.options.max_batch_size
                    or positions > self.options.max_batch_tokens
                ):
                    yield group
                    group = []
            group.append(request)
        if group:
            yield group

    def _decode_together(self, model: _Model, adapter_id: str | None, rows: list[_Request]) -> None:
        shared = min(
            min(_common_prefix(rows[0].prompt_ids, row.prompt_ids) for row in rows),
            min(len(row.prompt_ids) for row in rows) - 1,  # every row keeps a token to query with
        )
        prefix, from_cache = self._prefix_cache(model, adapter_id, rows[0].prompt_ids[:shared])
        for row in rows:
            row.reused = shared if len(rows) > 1 else from_cache
        batch = _Batch(model, prefix, shared, len(rows))
        rests = [row.prompt_ids[shared:] for row in rows]
        logits = batch.start(rests, _segments(rests, MIN_SEGMENT_TOKENS))
        while logits:
            for index, row_logits in logits.items():
                self._advance(rows[index], row_logits)
            chunks = [row.unfed if row.finish_reason is None else [] for row in rows]
            for row in rows:
                row.unfed = []
            logits = batch.extend(chunks) if any(chunks) else {}

    def _advance(self, row: _Request, logits: torch.Tensor) -> None:
        """Choose the next token, then append the tokens the grammar forces without a forward pass."""
        token_id, logprob = self._choose(logits, row.parameters, row.constraint, row.generator)
        self._append(row, token_id, logprob)
        while row.finish_reason is None and row.constraint is not None:
            allowed = row.constraint.allowed()
            if allowed.numel() != 1:
                return
            self._append(row, int(allowed[0]), 0.0)  # the masked distribution's only token

    def _append(self, row: _Request, token_id: int, logprob: float) -> None:
        if token_id == self.eos_token_id:
            row.tokens.append(
                Token(id=token_id, text=self.tokenizer.decode([token_id]), logprob=logprob, special=True)
            )
            row.finish_reason = "eos_token"
            return
        row.generated.append(token_id)
        row.unfed.append(token_id)
        text = self.tokenizer.decode(row.generated, skip_special_tokens=True)
        row.tokens.append(
            Token(
                id=token_id,
                text=text[len(row.text) :],
                logprob=logprob,
                special=token_id in self.special_ids,
            )
        )
        row.text = text
        if row.constraint is not None:
            row.constraint.advance(token_id)
        if any(stop in text for stop in row.parameters.stop):
            row.finish_reason = "stop_sequence"
        elif len(row.tokens) >= row.max_new_tokens:
            row.finish_reason = "length"

    def _response(self, row: _Request, seconds: float) -> tuple[GenerateResponse, GenerationStats]:
        parameters = row.parameters
        details = Details(
            finish_reason=row.finish_reason or "length",
            generated_tokens=len(row.tokens),
            seed=parameters.seed,
            prefill=self._prefill_details(row.prompt_ids, parameters),
            tokens=row.tokens,
        )
        text = row.inputs + row.text if parameters.return_full_text else row.text
        stats = GenerationStats(len(row.prompt_ids), len(row.tokens), row.reused, seconds)
        return GenerateResponse(generated_text=text, details=details if parameters.details else None), stats

    def _prefix_cache(
        self, model: _Model, adapter_id: str | None, token_ids: list[int]
    ) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], int]:
        """Keys and values of ``token_ids`` per layer (one row), and how many were already cached."""
        best: _CachedPrefix | None = None
        reused = 0
        for (entry_adapter, _ids), entry in self._prefixes.items():
            if entry_adapter == adapter_id:
                common = _common_prefix(entry.token_ids, token_ids)
                if common > reused:
                    best, reused = entry, common
        layers = (
            [(keys[:, :, :reused], values[:, :, :reused]) for keys, values in best.layers] if best else []
        )
        if best is not None:
            self._prefixes.move_to_end((adapter_id, tuple(best.token_ids)))
        if reused < len(token_ids):
            layers = self._extend_prefix(model, layers, token_ids[reused:], reused)
            self._remember(adapter_id, token_ids, layers)
        return layers, reused

    @staticmethod
    def _extend_prefix(
        model: _Model, layers: list[tuple[torch.Tensor, torch.Tensor]], token_ids: list[int], start: int
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``layers`` (keys and values [1, kv heads, start, dim] per layer) followed by ``token_ids``."""
        if model.fused is not None:  # one packed row that holds the cached part as its prefix
            cache = model.fused.new_cache()
            layout = PackedLayout.build(layers, 0, [[]], [list(range(len(token_ids)))])
            positions = torch.arange(start, start + len(token_ids))
            model.fused.forward(
                torch.tensor(token_ids), positions, layout, cache, torch.empty(0, dtype=torch.long)
            )
            fresh = [(keys.unsqueeze(0), values.unsqueeze(0)) for keys, values in cache]
            if not layers:
                return fresh
            return [
                (torch.cat([k, nk], dim=2), torch.cat([v, nv], dim=2))
                for (k, v), (nk, nv) in zip(layers, fresh, strict=True)
            ]
        cache = DynamicCache(ddp_cache_data=layers or None, config=model.config)
        model.decoder(input_ids=torch.tensor([token_ids]), cache=cache, use_cache=True)
        return [(layer.keys, layer.values) for layer in cache.layers]

    def _remember(
        self, adapter_id: str | None, token_ids: list[int], layers: list[tuple[torch.Tensor, torch.Tensor]]
    ) -> None:
        nbytes = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in layers)
        if nbytes > self.options.prefix_cache_bytes:
            return
        key = (adapter_id, tuple(token_ids))
        if key in self._prefixes:
            self._prefix_bytes -= self._prefixes.pop(key).nbytes
        self._prefixes[key] = _CachedPrefix(list(token_ids), layers, nbytes)
        self._prefix_bytes += nbytes
        while self._prefix_bytes > self.options.prefix_cache_bytes:
            _key, evicted = self._prefixes.popitem(last=False)
            self._prefix_bytes -= evicted.nbytes

    # -- one request at a time (the reference) ---------------------------------------------------

    def generate(
        self, inputs: str, parameters: GenerateParameters
    ) -> tuple[GenerateResponse, GenerationStats]:
        """One request, one forward pass per token, the previous prompt's cache reused in place."""
        started = time.perf_counter()
        row = self._prepare(0, inputs, parameters)
        model = self._model_for(parameters.adapter_id)
        with torch.inference_mode(), self._adapter(parameters.adapter_id):
            logits, cache, row.reused = self._prefill(model, row.prompt_ids, parameters.adapter_id)
            while row.finish_reason is None:
                token_id, logprob = self._choose(logits, parameters, row.constraint, row.generator)
                self._append(row, token_id, logprob)
                if row.finish_reason is None:
                    output = model.model(input_ids=torch.tensor([[token_id]]), cache=cache, use_cache=True)
                    logits = output.logits[0, -1]
            excess = cache.get_seq_length() - len(row.prompt_ids)
            if excess > 0:
                cache.crop(-excess)
            self._previous = (parameters.adapter_id, list(row.prompt_ids), cache)
        return self._response(row, time.perf_counter() - started)

    def _prefill(
        self, model: _Model, prompt_ids: list[int], adapter_id: str | None
    ) -> tuple[torch.Tensor, DynamicCache, int]:
        previous, self._previous = self._previous, None
        reused = 0
        cache = DynamicCache(config=model.config)
        if previous is not None and previous[0] == adapter_id:
            reused = min(_common_prefix(previous[1], prompt_ids), len(prompt_ids) - 1)
            if reused > 0:
                cache = previous[2]
                excess = cache.get_seq_length() - reused
                if excess > 0:
                    cache.crop(-excess)
        output = model.model(input_ids=torch.tensor([prompt_ids[reused:]]), cache=cache, use_cache=True)
        return output.logits[0, -1], cache, reused

    # -- shared ----------------------------------------------------------------------------------

    def tokenize(self, inputs: str) -> list[dict[str, Any]]:
        encoding = self.tokenizer(inputs, return_offsets_mapping=True)
        return [
            {"id": token_id, "text": inputs[start:stop], "start": start, "stop": stop}
            for token_id, (start, stop) in zip(encoding["input_ids"], encoding["offset_mapping"], strict=True)
        ]

    def _prompt_ids(self, inputs: str, parameters: GenerateParameters) -> list[int]:
        if not inputs:
            raise InputValidationError("`inputs` cannot be empty")
        if parameters.adapter_id is not None and parameters.adapter_id not in self.adapter_ids:
            raise InputValidationError(
                f"adapter {parameters.adapter_id!r} is not loaded ({self.adapter_ids})"
            )
        ids = self.tokenizer(inputs)["input_ids"]
        if parameters.truncate:
            ids = ids[-parameters.truncate :]
        if len(ids) > self.max_input_tokens:
            raise InputValidationError(
                f"`inputs` must have less than {self.max_input_tokens} tokens. Given: {len(ids)}"
            )
        return ids

    def _max_new_tokens(self, prompt_ids: list[int], parameters: GenerateParameters) -> int:
        max_new_tokens = parameters.max_new_tokens or DEFAULT_MAX_NEW_TOKENS
        if len(prompt_ids) + max_new_tokens > self.max_total_tokens:
            raise InputValidationError(
                f"`inputs` tokens + `max_new_tokens` must be <= {self.max_total_tokens}. "
                f"Given: {len(prompt_ids)} `inputs` tokens and {max_new_tokens} `max_new_tokens`"
            )
        return max_new_tokens

    def _prefill_details(self, prompt_ids: list[int], parameters: GenerateParameters) -> list[PrefillToken]:
        if not parameters.decoder_input_details:
            return []
        return [PrefillToken(id=i, text=self.tokenizer.decode([i]), logprob=None) for i in prompt_ids]

    def _choose(
        self,
        logits: torch.Tensor,
        parameters: GenerateParameters,
        constraint: Constraint | None,
        generator: torch.Generator | None,
    ) -> tuple[int, float]:
        logits = logits.float()
        if constraint is not None:
            allowed = constraint.allowed()
            masked = torch.full_like(logits, float("-inf"))
            masked[allowed] = logits[allowed]
            logits = masked
        if parameters.do_sample or (parameters.temperature and parameters.temperature != 1.0):
            logits = logits / (parameters.temperature or 1.0)
        logprobs = torch.log_softmax(logits, dim=-1)
        if parameters.do_sample:
            probabilities = logprobs.exp()
            if parameters.top_k:
                kth = torch.topk(probabilities, min(parameters.top_k, probabilities.numel())).values[-1]
                probabilities = torch.where(probabilities >= kth, probabilities, 0.0)
            token_id = int(torch.multinomial(probabilities / probabilities.sum(), 1, generator=generator))
        else:
            token_id = int(torch.argmax(logprobs))
        return token_id, float(logprobs[token_id])
