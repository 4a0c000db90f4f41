#!/usr/bin/env bash
# Installs dependencies, builds, and runs the main job: generate text with bookworm-27m and print its
# perplexity on a slice of bookworm_valid.txt. Without ../shared, the same on a small synthetic
# checkpoint the project writes itself (its numbers mean nothing about real models).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh
LSB=./build/lsb
SHARED=../shared
if [[ -d "$SHARED/models/bookworm-27m" ]]; then
  MODEL="$SHARED/models/bookworm-27m"
  TEXT="$SHARED/data/bookworm_valid.txt"
  echo "== bookworm-27m: greedy generation"
  "$LSB" run "$MODEL" -p "It is a truth universally acknowledged" -n 64 --temp 0
  echo "== bookworm-27m: perplexity on the first 20 windows of $TEXT (ctx 512)"
  "$LSB" eval "$MODEL" --text "$TEXT" --ctx 512 --chunks 20
else
  echo "== $SHARED is absent: using a SYNTHETIC checkpoint (random weights; its output is noise)"
  MODEL=build/synthetic-tiny
  [[ -d "$MODEL" ]] || "$LSB" synth --shape tiny -o "$MODEL" --seed 1
  "$LSB" run "$MODEL" -p "Once upon a time" -n 32 --temp 0
  echo "== synthetic model: perplexity on docs/DESIGN.md (ctx 128)"
  "$LSB" eval "$MODEL" --text docs/DESIGN.md --ctx 128 --chunks 4
fi
