"""The trained classifier on disk: a PEFT LoRA adapter (what TGI loads) plus ``classifier.json``.

A folder with ``classifier.json`` alone is the base model prompted as it is (zero-shot): TGI serves
the base model and requests name no adapter."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from lmrc.classifier.prompt import PromptFormat, PromptStyle
from lmrc.paths import REPO_ROOT

DEFAULT_ADAPTER_DIR = REPO_ROOT / "models" / "classifier" / "rc-smollm2-135m-lora-v2"
CONFIG_FILE = "classifier.json"


class Decision(BaseModel):
    """How the LLM's answer and the encoder's probabilities make a pair's relations (tuned on the
    validation split by ``lmrc classifier tune``): an option is kept when the LLM chose it and the
    encoder gives it at least ``llm_min_probability``, or when the encoder alone gives it at least
    ``encoder_keep_probability`` (None: never). The default is the LLM's answer alone."""

    encoder_keep_probability: float | None = Field(default=None, ge=0.0, le=1.0)
    llm_min_probability: float = Field(default=0.0, ge=0.0, le=1.0)
    validation: dict[str, Any] = Field(default_factory=dict, description="What the tuning measured.")

    def keep(self, chosen_by_llm: bool, probability: float) -> bool:
        if chosen_by_llm and probability >= self.llm_min_probability:
            return True
        return self.encoder_keep_probability is not None and probability >= self.encoder_keep_probability


class ClassifierConfig(BaseModel):
    version: str
    prompt_version: str
    base_model: str = Field(description="What the adapter was trained on; TGI must serve this model.")
    prompt_format: PromptFormat = Field(
        default="plain", description="plain text, or the base model's ChatML turns (Qwen2.5)."
    )
    prompt_examples: str = Field(
        default="", description="Worked examples shown after the instruction in every prompt (few-shot)."
    )
    decision: Decision = Field(default_factory=Decision)
    training: dict[str, Any] = Field(default_factory=dict)
    evaluation: dict[str, Any] = Field(default_factory=dict)

    def prompt_style(self) -> PromptStyle:
        return PromptStyle(self.prompt_format, self.prompt_examples)


def has_adapter(directory: str | Path) -> bool:
    """Whether the folder holds LoRA weights, or only classifier.json (the base model, zero-shot)."""
    return (Path(directory) / "adapter_config.json").exists()


def served_adapter_id(directory: str | Path) -> str | None:
    """The adapter id requests name for this folder (its version), None for a base model as it is."""
    return load_config(directory).version if has_adapter(directory) else None


def load_config(directory: str | Path = DEFAULT_ADAPTER_DIR) -> ClassifierConfig:
    return ClassifierConfig.model_validate_json((Path(directory) / CONFIG_FILE).read_text(encoding="utf-8"))


def save_config(config: ClassifierConfig, directory: str | Path) -> None:
    path = Path(directory) / CONFIG_FILE
    path.write_text(json.dumps(config.model_dump(mode="json"), indent=1) + "\n", encoding="utf-8")
