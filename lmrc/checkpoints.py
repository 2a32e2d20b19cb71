"""Per-epoch training checkpoints, shared by the tagger's, the proposer's and the LLM adapter's training.

A checkpoint holds everything an interrupted run needs to go on as if it had not stopped: the
model's and the optimiser's state, the learning-rate schedule, the random generators, the epoch
it ended and what the training loop keeps across epochs (the best score so far). It is written
to a temporary file and renamed, so a run killed while saving leaves the previous one intact.
The options a run was started with are stored too: resuming with different ones is refused.
"""

from __future__ import annotations

import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

#: The folder, inside a training run's output, holding its checkpoint (removed once it finishes).
CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_FILE = "checkpoint.pt"
#: Options a run may be resumed with changed: where it writes, its budget, what it runs on.
NOT_COMPARED = frozenset({"out", "max_minutes", "threads", "device", "resume"})


class CheckpointMismatchError(ValueError):
    """A checkpoint written with options other than the ones given to resume it."""


@dataclass
class TrainingState:
    """What the loop keeps across epochs besides the weights."""

    epoch: int = 0
    best_score: float = float("-inf")
    best_epoch: int = 0
    elapsed_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def has_checkpoint(out: Path) -> bool:
    """Whether a training run's output holds a checkpoint to resume from (an unfinished run)."""
    return (out / CHECKPOINT_DIR / CHECKPOINT_FILE).exists()


def resumable_options(options: Any, **identity: object) -> dict[str, Any]:
    """What a checkpoint must have been written with to be resumed: the run's options (a
    dataclass) but those in NOT_COMPARED, and what identifies its data (``identity``)."""
    kept = {key: str(value) for key, value in asdict(options).items() if key not in NOT_COMPARED}
    return {**kept, **identity}


def save_checkpoint(
    directory: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: TrainingState,
    options: dict[str, Any],
    trainable_only: bool = False,
) -> Path:
    """``trainable_only``: the weights training changes, not the frozen rest (a LoRA adapter's
    few MB instead of its base model's hundreds)."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / CHECKPOINT_FILE
    partial = target.with_suffix(".partial")
    trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    torch.save(
        {
            "model": {
                name: tensor
                for name, tensor in model.state_dict().items()
                if not trainable_only or name in trainable
            },
            "trainable_only": trainable_only,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "state": state.__dict__,
            "options": options,
            "random": {
                "python": random.getstate(),
                "numpy": np.random.get_state(),
                "torch": torch.get_rng_state(),
            },
        },
        partial,
    )
    os.replace(partial, target)
    return target


def load_checkpoint(
    directory: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    options: dict[str, Any],
) -> TrainingState:
    """Restore a run from ``directory``; refuses one started with other options."""
    path = directory / CHECKPOINT_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: no checkpoint to resume from")
    saved = torch.load(path, map_location="cpu", weights_only=False)
    keys = options.keys() | saved["options"].keys()
    differing = sorted(key for key in keys if options.get(key) != saved["options"].get(key))
    if differing:
        raise CheckpointMismatchError(
            f"{path}: written with other options ({', '.join(differing)}); resume with the same ones "
            "or start afresh without --resume"
        )
    if saved.get("trainable_only"):
        unexpected = model.load_state_dict(saved["model"], strict=False).unexpected_keys
        if unexpected:
            raise CheckpointMismatchError(f"{path}: weights of another model ({unexpected[0]}...)")
    else:
        model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    random.setstate(saved["random"]["python"])
    np.random.set_state(saved["random"]["numpy"])
    torch.set_rng_state(saved["random"]["torch"])
    return TrainingState(**saved["state"])


def remove_checkpoint(directory: Path) -> None:
    (directory / CHECKPOINT_FILE).unlink(missing_ok=True)
