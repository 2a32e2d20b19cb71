#!/bin/bash
# After epoch 2 of the mpnet tagger: calibrate a copy, then the raw-text levers with it beside the shipped tagger.
set -euo pipefail
cd /work/main
E=var/tagger-mpnet-e2
mkdir -p $E && cp var/tagger-mpnet/tagger.json var/tagger-mpnet/tagger.safetensors var/tagger-mpnet/train_log.jsonl $E/
echo "$(date -u +%FT%TZ) calibrate" >> var/tagger-eval.progress
.venv/bin/lmrc annotator calibrate --tagger $E > var/tagger-eval-calibrate.log 2>&1
echo "$(date -u +%FT%TZ) levers" >> var/tagger-eval.progress
.venv/bin/lmrc annotator levers --other-tagger $E --out docs/results/annotator-levers.json > var/tagger-eval-levers.log 2>&1
echo "$(date -u +%FT%TZ) done" >> var/tagger-eval.progress
