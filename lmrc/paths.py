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
