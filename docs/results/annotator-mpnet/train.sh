#!/bin/bash
# The mpnet mention tagger (issue 32, raw text): 3 epochs on 2 cores (~33 min each), resumable.
set -euo pipefail
cd /work/main
OUT=var/tagger-mpnet
echo "$(date -u +%FT%TZ) start" >> var/tagger-mpnet.progress
.venv/bin/lmrc annotator train --encoder all-mpnet-base-v2 --encoder-lr 5e-5 --epochs 3 --threads 2 --out $OUT \
  $([ -f $OUT/checkpoint/checkpoint.pt ] && echo --resume) >> var/tagger-mpnet.log 2>&1
echo "$(date -u +%FT%TZ) done" >> var/tagger-mpnet.progress
