#!/bin/bash
# Self-training round three (issue 32), the CPU machine's part: the shipped teacher v2 labels the
# same 1,199 documents as round two; they join the 400 gold train documents. Training ran on a lent
# GPU (device.sh); the ONNX export, the levers and the live runs ran here.
set -euo pipefail
cd /work/main
D=var/distil3
mkdir -p $D
[ -f $D/pseudo.json ] || .venv/bin/lmrc proposer pseudo-label --input ../shared/data/docred/train_annotated_first200.json \
  --input ../shared/data/docred/test_unlabeled.json --out $D/pseudo.json > $D/pseudo-label.log 2>&1
.venv/bin/lmrc split --out $D/split > $D/split.log 2>&1
mkdir -p $D/data
.venv/bin/python - <<'PY'
import json
split = "var/distil3/split"
train = json.load(open(f"{split}/train.json")) + json.load(open("var/distil3/pseudo.json"))
json.dump(train, open("var/distil3/data/train.json", "w"))
json.dump(json.load(open(f"{split}/validation.json")), open("var/distil3/data/validation.json", "w"))
json.dump(json.load(open(f"{split}/holdout.json")), open("var/distil3/data/dev.json", "w"))
print(len(train))
PY
