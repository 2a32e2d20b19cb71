"""The part of TGI's HTTP API the project uses, as pydantic models (TGI 3.3 OpenAPI description).

Shared by the classifier's client and the local TGI-compatible server, and checked against TGI's
own ``openapi.json`` in the tests, so neither side can drift from the real wire format.
Unknown fields are ignored on input (TGI adds fields between versions), never sent on output.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Grammar(_Wire):
    """``{"type": "regex", "value": "..."}`` or ``{"type": "json", "value": <JSON Schema>}``."""

    type: Literal["regex", "json"]
    value: Any


class GenerateParameters(_Wire):
    adapter_id: str | None = None
    decoder_input_details: bool = False
    details: bool = True
    do_sample: bool = False
    grammar: Grammar | None = None
    max_new_tokens: int | None = Field(default=None, ge=0)
    repetition_penalty: float | None = Field(default=None, gt=0)
    return_full_text: bool | None = None
    seed: int | None = Field(default=None, ge=0)
    stop: list[str] = Field(default_factory=list, max_length=4)
    temperature: float | None = Field(default=None, gt=0)
    top_k: int | None = Field(default=None, gt=0)
    top_n_tokens: int | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, gt=0, le=1)
    truncate: int | None = Field(default=None, ge=0)


class GenerateRequest(_Wire):
    inputs: str
    parameters: GenerateParameters = Field(default_factory=GenerateParameters)
    stream: bool = False


class Token(_Wire):
    id: int
    text: str
    logprob: float | None = None
    special: bool = False


class PrefillToken(_Wire):
    id: int
    text: str
    logprob: float | None = None


FinishReason = Literal["length", "eos_token", "stop_sequence"]


class Details(_Wire):
    finish_reason: FinishReason
    generated_tokens: int
    seed: int | None = None
    prefill: list[PrefillToken] = Field(default_factory=list)
    tokens: list[Token] = Field(default_factory=list)


class GenerateResponse(_Wire):
    generated_text: str
    details: Details | None = None


class ErrorResponse(_Wire):
    error: str
    error_type: str


class Info(_Wire):
    model_id: str
    model_sha: str | None = None
    model_pipeline_tag: str | None = "text-generation"
    max_concurrent_requests: int
    max_best_of: int = 1
    max_stop_sequences: int = 4
    max_input_tokens: int
    max_total_tokens: int
    validation_workers: int = 1
    max_client_batch_size: int = 1
    router: str = "text-generation-router"
    version: str
    sha: str | None = None
    docker_label: str | None = None
