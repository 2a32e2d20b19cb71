"""Weight average ("model soup") of two proposers on one encoder (v2 continued from v1: one basin)."""

import sys
from pathlib import Path

import torch

from lmrc.proposer.training.torch_model import load_artifact, save_artifact

first, second, weight, out = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3]), Path(sys.argv[4])
model_a, config_a = load_artifact(first)
model_b, _ = load_artifact(second)
b = dict(model_b.named_parameters())
with torch.no_grad():
    for name, parameter in model_a.named_parameters():
        if parameter.requires_grad:
            parameter.mul_(weight).add_(b[name], alpha=1.0 - weight)
version = f"{config_a.version}-soup{int(weight * 100)}"
save_artifact(model_a, config_a.model_copy(update={"weights_format": "fp16", "version": version}), out)
print(out, version)
