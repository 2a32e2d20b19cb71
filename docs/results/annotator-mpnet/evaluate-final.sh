#!/bin/bash
# After the mpnet tagger's 3 epochs (epoch 2 kept, the best on validation; training calibrated it):
# the raw-text levers with it beside the shipped tagger, alone and with name propagation.
set -euo pipefail
cd /work/main
E=var/tagger-mpnet-final
mkdir -p $E && cp var/tagger-mpnet/tagger.json var/tagger-mpnet/tagger.safetensors var/tagger-mpnet/train_log.jsonl $E/
.venv/bin/lmrc annotator levers --other-tagger $E --out docs/results/annotator-levers.json
