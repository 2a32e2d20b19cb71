#!/bin/bash
# Self-training round three (issue 32) on a lent GPU: the teacher v2's pseudo-labels were made on the
# CPU machine (run.sh); here the same `lmrc train` as round two runs with --device cuda, then the
# weights are compressed to int4 deltas, the form that ships and that fits the way back.
# The pretrained encoder travels as fp16 parts (the device machine has no model hub); it is widened
# back to fp32 before training. Arguments: the folder that holds the parts, and where results go.
set -euo pipefail
PARTS=${1:?folder with p1..p4}
RESULTS=${2:?where the results go}
EPOCHS=${EPOCHS:-2}
DEVICE=${DEVICE:-cuda}  # cpu, with MAX_TRAIN_DOCS, for a dry run on the CPU machine
export PYTHONUNBUFFERED=1 LMRC_SHARED_DIR=/nonexistent TQDM_MININTERVAL=30
E=var/encoders/all-mpnet-base-v2
BUNDLE=var/bundles/selftrain3-mpnet
mkdir -p $E models/proposer "$RESULTS"
cp "$PARTS"/p1/*.json "$PARTS"/p1/vocab.txt $E/
cat "$PARTS"/p*/part.* > /tmp/model16.safetensors
echo "$(cut -d' ' -f1 "$PARTS"/p4/sha)  /tmp/model16.safetensors" | sha256sum -c
python3 - <<'PY'
from safetensors.torch import load_file, save_file
weights = load_file("/tmp/model16.safetensors")
widened = {k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in weights.items()}
save_file(widened, "var/encoders/all-mpnet-base-v2/model.safetensors")
PY
cp "$PARTS"/v2/proposer.safetensors models/proposer/
date -u +"started %FT%TZ" > "$RESULTS"/lmrc-train.log
python3 - "$EPOCHS" "$BUNDLE" "$DEVICE" ${MAX_TRAIN_DOCS:-} <<'PY' 2>&1 | tr "\r" "\n" | tee -a "$RESULTS"/lmrc-train.log
import sys

import lmrc.proposer.training.export as export

export.export_onnx = lambda *args, **kwargs: None  # ONNX is built on the CPU machine, from the int4 deltas
from lmrc.cli import main

epochs, out, device = sys.argv[1:4]
limit = ["--max-train-docs", sys.argv[4]] if len(sys.argv) > 4 else []
sys.exit(main(["train", "--data", "var/distil3/data", "--schema", "redocred", "--no-tagger", "--init-from",
               "models", "--encoder-lr", "2e-5", "--head-lr", "1e-4", "--epochs", epochs, "--device", device,
               "--out", out, *limit]))
PY
python3 -m lmrc proposer compress --artifact $BUNDLE/proposer --out /tmp/st3 | tee -a "$RESULTS"/lmrc-train.log
split -b 15M -d -a 1 /tmp/st3/proposer.safetensors "$RESULTS"/weights.
cp /tmp/st3/proposer.json $BUNDLE/proposer/train_log.jsonl $BUNDLE/bundle.json "$RESULTS"/
