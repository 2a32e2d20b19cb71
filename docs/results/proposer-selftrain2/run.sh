#!/bin/bash
# Self-training round: the shipped teacher labels 1,199 documents, then two epochs from the shipped proposer.
set -euo pipefail
cd /work/main
L=var/distil/progress.log
echo "$(date -u +%FT%TZ) pseudo-label start" >> $L
[ -f var/distil/pseudo.json ] || .venv/bin/lmrc proposer pseudo-label --input ../shared/data/docred/train_annotated_first200.json \
  --input ../shared/data/docred/test_unlabeled.json --out var/distil/pseudo.json > var/distil/pseudo-label.log 2>&1
echo "$(date -u +%FT%TZ) split" >> $L
.venv/bin/lmrc split --out var/distil/split > var/distil/split.log 2>&1
mkdir -p var/distil/data
.venv/bin/python - <<'PY'
import json
split = "var/distil/split"
train = json.load(open(f"{split}/train.json")) + json.load(open("var/distil/pseudo.json"))
json.dump(train, open("var/distil/data/train.json", "w"))
json.dump(json.load(open(f"{split}/validation.json")), open("var/distil/data/validation.json", "w"))
json.dump(json.load(open(f"{split}/holdout.json")), open("var/distil/data/dev.json", "w"))
print(len(train))
PY
echo "$(date -u +%FT%TZ) train start" >> $L
.venv/bin/lmrc train --data var/distil/data --schema redocred --no-tagger --init-from models --encoder-lr 2e-5 \
  --head-lr 1e-4 --epochs 2 --out var/bundles/selftrain2-mpnet $([ -d var/bundles/selftrain2-mpnet/proposer/checkpoint ] && echo --resume) > var/distil/lmrc-train.log 2>&1
echo "$(date -u +%FT%TZ) train done" >> $L
