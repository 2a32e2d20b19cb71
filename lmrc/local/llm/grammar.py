"""Grammar-constrained decoding with outlines-core, the engine TGI itself uses for ``grammar``.

A grammar (regex, or JSON Schema turned into a regex) is compiled once against the tokenizer's
vocabulary into an index of allowed tokens per state; compiled indexes are cached, since a
client sends the same grammar with every request, and so are the allowed-token tensors of each
state (one per state of a grammar, not one per request and step).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from typing import Any

import torch
from outlines_core import Guide, Index, Vocabulary
from outlines_core.json_schema import build_regex_from_schema


class GrammarError(ValueError):
    """The grammar cannot be compiled (bad regex or schema): a validation error for the client."""


def _byte_decoder() -> dict[str, int]:
    """GPT-2 byte-level BPE: the printable character standing for each byte, reversed."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    characters = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            characters.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, characters, strict=True)}


def byte_level_vocabulary(vocab: dict[str, int], special: set[str], eos_token_id: int) -> Vocabulary:
    """outlines-core's vocabulary (token bytes -> ids) from a byte-level BPE tokenizer's vocab."""
    decoder = _byte_decoder()
    tokens: dict[bytes, list[int]] = {}
    for token, token_id in vocab.items():
        if token in special or token_id == eos_token_id:
            continue
        try:
            raw = bytes(decoder[character] for character in token)
        except KeyError:  # not a byte-level token (e.g. a plain added token): its UTF-8 text
            raw = token.encode("utf-8")
        tokens.setdefault(raw, []).append(token_id)
    return Vocabulary(eos_token_id, tokens)


def grammar_regex(kind: str, value: Any) -> str:
    if kind == "regex":
        if not isinstance(value, str):
            raise GrammarError("a regex grammar's value must be a string")
        return value
    if kind == "json":
        schema = value if isinstance(value, str) else json.dumps(value)
        try:
            return build_regex_from_schema(schema)
        except Exception as error:  # outlines-core raises plain exceptions on bad schemas
            raise GrammarError(f"invalid JSON Schema: {error}") from error
    raise GrammarError(f"unknown grammar type {kind!r}")


class Constraint:
    """One request's walk through its grammar: the tokens allowed now, and the step taken."""

    def __init__(self, compiler: GrammarCompiler, regex: str, guide: Guide) -> None:
        self._compiler = compiler
        self._regex = regex
        self._guide = guide

    def allowed(self) -> torch.Tensor:
        """Token ids allowed in the current state (shared, read-only)."""
        return self._compiler.allowed(self._regex, self._guide)

    def advance(self, token_id: int) -> None:
        self._guide.advance(token_id)


class GrammarCompiler:
    def __init__(self, vocabulary: Vocabulary, cache_size: int = 32, state_cache_size: int = 4096) -> None:
        self.vocabulary = vocabulary
        self.cache_size = cache_size
        self.state_cache_size = state_cache_size
        self._indexes: OrderedDict[str, Index] = OrderedDict()
        self._allowed: OrderedDict[tuple[str, int], torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()

    def constraint(self, kind: str, value: Any) -> Constraint:
        regex = grammar_regex(kind, value)
        return Constraint(self, regex, self.guide(kind, value))

    def allowed(self, regex: str, guide: Guide) -> torch.Tensor:
        key = (regex, guide.get_state())
        with self._lock:
            tokens = self._allowed.get(key)
            if tokens is not None:
                self._allowed.move_to_end(key)
                return tokens
        tokens = torch.tensor(guide.get_tokens(), dtype=torch.long)
        with self._lock:
            self._allowed[key] = tokens
            if len(self._allowed) > self.state_cache_size:
                self._allowed.popitem(last=False)
        return tokens

    def guide(self, kind: str, value: Any) -> Guide:
        regex = grammar_regex(kind, value)
        with self._lock:
            index = self._indexes.get(regex)
            if index is None:
                try:
                    index = Index(regex, self.vocabulary)
                except Exception as error:
                    raise GrammarError(f"cannot compile grammar: {error}") from error
                self._indexes[regex] = index
                if len(self._indexes) > self.cache_size:
                    self._indexes.popitem(last=False)
            else:
                self._indexes.move_to_end(regex)
        return Guide(index)
