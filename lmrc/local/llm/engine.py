"""Text generation for the local TGI-compatible server: transformers on CPU, one request at a time.

What it shares with TGI: greedy or sampled decoding, ``grammar`` through outlines-core (the
reported log-probabilities are those of the grammar-masked distribution, as in TGI), stop
sequences, ``details`` with per-token log-probabilities, multi-LoRA by ``adapter_id`` (PEFT
adapters), and a prefix cache: the key/value cache of the previous prompt is reused for the
longest common token prefix, so the pairs of one document pay for the document once.
What it does not do: continuous batching, ``best_of``, ``top_n_tokens``, ``top_p``, ``typical_p``,
repetition and frequency penalties (accepted, ignored), watermarking.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.cache_utils import DynamicCache

from lmrc.contracts.tgi import Details, GenerateParameters, GenerateResponse, PrefillToken, Token
from lmrc.local.llm.grammar import GrammarCompiler, byte_level_vocabulary

log = logging.getLogger(__name__)

DEFAULT_MAX_NEW_TOKENS = 100


class InputValidationError(ValueError):
    """The request cannot be served as asked (TGI answers 422)."""


@dataclass
class _PrefixCache:
    adapter_id: str | None = None
    token_ids: list[int] = field(default_factory=list)
    cache: DynamicCache | None = None


@dataclass(frozen=True)
class GenerationStats:
    input_tokens: int
    generated_tokens: int
    reused_prefix_tokens: int
    inference_seconds: float


def _common_prefix(a: list[int], b: list[int]) -> int:
    length = min(len(a), len(b))
    for index in range(length):
        if a[index] != b[index]:
            return index
    return length


class GenerationEngine:
    def __init__(
        self,
        model_dir: Path,
        adapters: dict[str, Path] | None = None,
        max_input_tokens: int = 4096,
        max_total_tokens: int = 4608,
        threads: int | None = None,
    ) -> None:
        if threads:
            torch.set_num_threads(threads)
        self.model_dir = model_dir
        self.max_input_tokens = max_input_tokens
        self.max_total_tokens = max_total_tokens
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        self.adapter_ids: list[str] = []
        if adapters:
            from peft import PeftModel

            items = list(adapters.items())
            model = PeftModel.from_pretrained(model, items[0][1], adapter_name=items[0][0])
            for adapter_id, path in items[1:]:
                model.load_adapter(path, adapter_name=adapter_id)
            self.adapter_ids = [adapter_id for adapter_id, _ in items]
        self.model = model.eval()
        self.eos_token_id = int(self.tokenizer.eos_token_id)
        backend = self.tokenizer.backend_tokenizer
        special = {token.content for token in backend.get_added_tokens_decoder().values()}
        self.special_ids = {self.tokenizer.convert_tokens_to_ids(token) for token in special}
        self.grammars = GrammarCompiler(
            byte_level_vocabulary(backend.get_vocab(), special, self.eos_token_id)
        )
        self._prefix = _PrefixCache()

    # -- one request ---------------------------------------------------------------------------

    def generate(
        self, inputs: str, parameters: GenerateParameters
    ) -> tuple[GenerateResponse, GenerationStats]:
        started = time.perf_counter()
        prompt_ids = self._prompt_ids(inputs, parameters)
        max_new_tokens = parameters.max_new_tokens or DEFAULT_MAX_NEW_TOKENS
        if len(prompt_ids) + max_new_tokens > self.max_total_tokens:
            raise InputValidationError(
                f"`inputs` tokens + `max_new_tokens` must be <= {self.max_total_tokens}. "
                f"Given: {len(prompt_ids)} `inputs` tokens and {max_new_tokens} `max_new_tokens`"
            )
        guide = (
            self.grammars.guide(parameters.grammar.type, parameters.grammar.value)
            if parameters.grammar is not None
            else None
        )
        generator = torch.Generator().manual_seed(parameters.seed) if parameters.seed is not None else None
        with torch.inference_mode(), self._adapter(parameters.adapter_id):
            logits, cache, reused = self._prefill(prompt_ids, parameters.adapter_id)
            tokens: list[Token] = []
            generated: list[int] = []
            text = ""
            finish_reason = "length"
            for _ in range(max_new_tokens):
                token_id, logprob = self._choose(logits, parameters, guide, generator)
                special = token_id in self.special_ids
                if token_id == self.eos_token_id:
                    tokens.append(
                        Token(
                            id=token_id, text=self.tokenizer.decode([token_id]), logprob=logprob, special=True
                        )
                    )
                    finish_reason = "eos_token"
                    break
                generated.append(token_id)
                new_text = self.tokenizer.decode(generated, skip_special_tokens=True)
                tokens.append(
                    Token(id=token_id, text=new_text[len(text) :], logprob=logprob, special=special)
                )
                text = new_text
                if guide is not None:
                    guide.advance(token_id)
                if any(stop in text for stop in parameters.stop):
                    finish_reason = "stop_sequence"
                    break
                output = self.model(input_ids=torch.tensor([[token_id]]), cache=cache, use_cache=True)
                logits = output.logits[0, -1]
            self._keep_prefix(cache, prompt_ids, parameters.adapter_id)
        prefill = (
            [PrefillToken(id=i, text=self.tokenizer.decode([i]), logprob=None) for i in prompt_ids]
            if parameters.decoder_input_details
            else []
        )
        details = Details(
            finish_reason=finish_reason,
            generated_tokens=len(tokens),
            seed=parameters.seed,
            prefill=prefill,
            tokens=tokens,
        )
        generated_text = inputs + text if parameters.return_full_text else text
        stats = GenerationStats(len(prompt_ids), len(tokens), reused, time.perf_counter() - started)
        return GenerateResponse(
            generated_text=generated_text, details=details if parameters.details else None
        ), stats

    def tokenize(self, inputs: str) -> list[dict[str, Any]]:
        encoding = self.tokenizer(inputs, return_offsets_mapping=True)
        return [
            {"id": token_id, "text": inputs[start:stop], "start": start, "stop": stop}
            for token_id, (start, stop) in zip(encoding["input_ids"], encoding["offset_mapping"], strict=True)
        ]

    # -- internals -----------------------------------------------------------------------------

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

    def _adapter(self, adapter_id: str | None) -> Any:
        """The PEFT adapter for the request; the base model when none is asked for (as TGI)."""
        if not self.adapter_ids:
            return contextlib.nullcontext()
        if adapter_id is None:
            return self.model.disable_adapter()
        self.model.set_adapter(adapter_id)
        return contextlib.nullcontext()

    def _prefill(
        self, prompt_ids: list[int], adapter_id: str | None
    ) -> tuple[torch.Tensor, DynamicCache, int]:
        """Logits after the prompt, a cache to decode from, and how many tokens were reused.

        Requests are served one at a time, so the previous prompt's cache is reused in place
        (cropped to the common prefix) and no copy is made; :meth:`_keep_prefix` stores it back.
        """
        previous, self._prefix = self._prefix, _PrefixCache()
        reused = 0
        cache = DynamicCache(config=self.model.config)
        if previous.cache is not None and previous.adapter_id == adapter_id:
            reused = min(_common_prefix(previous.token_ids, prompt_ids), len(prompt_ids) - 1)
            if reused > 0:
                cache = previous.cache
                excess = cache.get_seq_length() - reused
                if excess > 0:
                    cache.crop(-excess)
        output = self.model(input_ids=torch.tensor([prompt_ids[reused:]]), cache=cache, use_cache=True)
        return output.logits[0, -1], cache, reused

    def _keep_prefix(self, cache: DynamicCache, prompt_ids: list[int], adapter_id: str | None) -> None:
        excess = cache.get_seq_length() - len(prompt_ids)
        if excess > 0:
            cache.crop(-excess)
        self._prefix = _PrefixCache(adapter_id, list(prompt_ids), cache)

    def _choose(
        self,
        logits: torch.Tensor,
        parameters: GenerateParameters,
        guide: Any,
        generator: torch.Generator | None,
    ) -> tuple[int, float]:
        logits = logits.float()
        if guide is not None:
            allowed = torch.tensor(guide.get_tokens(), dtype=torch.long)
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
