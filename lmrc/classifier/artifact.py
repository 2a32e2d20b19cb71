"""The trained classifier on disk: a PEFT LoRA adapter (what TGI loads) plus ``classifier.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from lmrc.paths import REPO_ROOT

DEFAULT_ADAPTER_DIR = REPO_ROOT / "models" / "classifier" / "rc-smollm2-135m-lora-v1"
CONFIG_FILE = "classifier.json"


class ClassifierConfig(BaseModel):
    version: str
    prompt_version: str
    base_model: str = Field(description="What the adapter was trained on; TGI must serve this model.")
    training: dict[str, Any] = Field(default_factory=dict)
    evaluation: dict[str, Any] = Field(default_factory=dict)


def load_config(directory: str | Path = DEFAULT_ADAPTER_DIR) -> ClassifierConfig:
    return ClassifierConfig.model_validate_json((Path(directory) / CONFIG_FILE).read_text(encoding="utf-8"))


def save_config(config: ClassifierConfig, directory: str | Path) -> None:
    path = Path(directory) / CONFIG_FILE
    path.write_text(json.dumps(config.model_dump(mode="json"), indent=1) + "\n", encoding="utf-8")
