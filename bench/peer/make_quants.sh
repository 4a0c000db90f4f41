#!/usr/bin/env bash
# make_quants.sh — export the model to an F32 GGUF with `lsb convert`, check that llama.cpp reads
# it to the reference perplexity, compute an importance matrix on the calibration text, and
# quantize it to every peer type.
#
# Usage:  bench/peer/make_quants.sh                 (all settings via environment variables below)
#
# Variables (defaults in brackets):
#   LSB_PEER_DIR  the peer's work folder (build.sh)                   [$HOME/.cache/lsb-peer]
#   LLAMA_BUILD   llama.cpp build dir from build.sh                   [$LSB_PEER_DIR/llama.cpp/build]
#   LSB           the lsb binary                                      [<repo>/build/lsb]
#   MODEL         the Hugging Face model folder                       [<repo>/../shared/models/bookworm-27m]
#   CALIB         calibration text (imatrix only; never evaluated)    [<repo>/../shared/data/bookworm_calib.txt]
#   VALID         evaluation text (F32 sanity perplexity)             [<repo>/../shared/data/bookworm_valid.txt]
#   OUT           output folder                                       [$LSB_PEER_DIR/out]
#   NAME          file name stem                                      [bookworm]
#   EXPORTER      command template writing the F32 GGUF; {in} and {out} are replaced by the model
#                 folder and output path          ['$LSB convert {in} --to gguf -o {out}']
#   THREADS       threads for imatrix/perplexity/quantize             [2]
#   NICE          nice level for the heavy jobs                       [10]
#   REF_PPL       expected F32 perplexity (llama.cpp style, ctx 512)  [24.644]
#   REUSE         1 = keep an existing F32 GGUF / imatrix / quantized file instead of remaking it [0]
#   SYNTH         a shape for `lsb synth` (e.g. tinyllama-1.1b): make a SYNTHETIC model (random
#                 weights, seed 1) in $LSB_PEER_DIR/synth/SHAPE and quantize it for speed runs
#                 only: BF16 GGUF, no perplexity check, imatrix from one 512-token chunk of CALIB
#                 (the IQ types refuse to quantize without one; quality is not measured), types
#                 SYNTH_TYPES [IQ1_S IQ1_M IQ2_XXS IQ2_S Q4_0], all :pure; OUT=$LSB_PEER_DIR/synth
#
# Output in $OUT: $NAME-f32.gguf (-bf16 for SYNTH), imatrix.gguf, imatrix-uniform-embd.gguf, one
# $NAME-<TYPE>[-<variant>].gguf per entry of QUANTS, logs/ with every tool's output, and
# times.tsv (step, wall seconds).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
LSB_PEER_DIR=${LSB_PEER_DIR:-$HOME/.cache/lsb-peer}
LLAMA_BUILD=${LLAMA_BUILD:-$LSB_PEER_DIR/llama.cpp/build}
LSB=$(realpath "${LSB:-$ROOT/build/lsb}")
MODEL=${MODEL:-$ROOT/../shared/models/bookworm-27m}
CALIB=${CALIB:-$ROOT/../shared/data/bookworm_calib.txt}
VALID=${VALID:-$ROOT/../shared/data/bookworm_valid.txt}
OUT=${OUT:-$LSB_PEER_DIR/out}
NAME=${NAME:-bookworm}
# shellcheck disable=SC2016  # $LSB is replaced in the template below, not by the shell
EXPORTER=${EXPORTER:-'$LSB convert {in} --to gguf -o {out}'}
THREADS=${THREADS:-2}
NICE=${NICE:-10}
REF_PPL=${REF_PPL:-24.644}
REUSE=${REUSE:-0}
SYNTH=${SYNTH:-}
GGUF_TYPE=f32
if [[ -n $SYNTH ]]; then
  MODEL=$LSB_PEER_DIR/synth/$SYNTH
  OUT=$LSB_PEER_DIR/synth
  NAME=$SYNTH
  GGUF_TYPE=bf16   # the synthetic weights are bf16: nothing is lost, and half the size of F32
  # shellcheck disable=SC2016  # as above
  EXPORTER='$LSB convert {in} --to gguf --type bf16 -o {out}'
  if [[ ! -f $MODEL/config.json ]]; then
    mkdir -p "$OUT"
    nice -n "$NICE" "$LSB" synth --shape "$SYNTH" -o "$MODEL" --seed 1 -t "$THREADS"
  fi
fi
LLAMA_SRC=$(cd "$LLAMA_BUILD/.." && pwd)

# Quantizations, TYPE:MODE. MODE is one of
#   pure     --pure: every matrix (output.weight and token_embd.weight included) is stored in TYPE,
#            quantized with importance weights: the calibration imatrix for every matrix product,
#            and a UNIFORM entry (all columns weight 1, tools/imatrix_add_uniform) for
#            token_embd.weight, which llama-imatrix never collects (the embedding is a row lookup,
#            not a matrix product). Without any entry llama-quantize aborts on token_embd for
#            IQ1_S / IQ2_XXS / IQ2_XS (GGML_ASSERT(imatrix != NULL) in ggml_quantize_chunk) and
#            quantizes it with the types' unweighted fallback for the others. This is the main
#            variant; it reproduces an earlier measurement of these types on this model.
#   stock    --pure with the calibration imatrix alone (types that allow it: IQ1_M, IQ2_S, Q4_0):
#            token_embd falls back to the unweighted quantizer.
#   embQ2K   --pure with the calibration imatrix alone and --token-embedding-type Q2_K, the stock
#            way out for IQ1_S / IQ2_XXS / IQ2_XS (Q2_K is what llama.cpp's own recipe gives
#            token_embd for these file types).
#   mix      llama-quantize's own mixed recipe for that file type (no --pure), calibration imatrix.
# For the --pure modes, --tensor-type weight=TYPE (a regex matching every weight name) forces
# TYPE on every matrix: plain --pure uses the file type's BASE tensor type, and for file type
# IQ2_S that is IQ2_XS (llama-quant.cpp: LLAMA_FTYPE_MOSTLY_IQ2_S -> GGML_TYPE_IQ2_XS), so
# `--pure ... IQ2_S` alone silently writes an all-IQ2_XS file. Norms stay F32 in every mode.
# Output names: $NAME-TYPE.gguf for pure and mix, $NAME-TYPE-MODE.gguf for the others.
QUANTS=(IQ1_S:pure IQ1_S:embQ2K IQ1_M:pure IQ1_M:stock IQ2_XXS:pure IQ2_XXS:embQ2K
        IQ2_XS:pure IQ2_XS:embQ2K IQ2_S:pure IQ2_S:stock Q2_K:mix Q4_0:pure Q4_0:stock)
if [[ -n $SYNTH ]]; then
  QUANTS=()
  for t in ${SYNTH_TYPES:-IQ1_S IQ1_M IQ2_XXS IQ2_S Q4_0}; do QUANTS+=("$t:pure"); done
fi

BIN=$LLAMA_BUILD/bin
mkdir -p "$OUT/logs"
cd "$OUT"
F32=$NAME-$GGUF_TYPE.gguf
: > times.tsv
timed() {  # timed STEP LOGFILE CMD...   run CMD niced, log its output, record its wall time
  local step=$1 log=$2; shift 2
  local t0 t1; t0=$(date +%s.%N)
  if ! nice -n "$NICE" "$@" > "logs/$log" 2>&1; then
    echo "FAILED: $step (see $OUT/logs/$log)" >&2; tail -n 20 "logs/$log" >&2; exit 1
  fi
  t1=$(date +%s.%N)
  awk -v s="$step" -v a="$t0" -v b="$t1" 'BEGIN { printf "%s\t%.1f\n", s, b - a }' | tee -a times.tsv
}

# 1. Helper tool: the imatrix patcher (built against llama.cpp's ggml-base, into the work folder).
PATCHER=$LSB_PEER_DIR/bin/imatrix_add_uniform
if [[ ! -x $PATCHER || $PATCHER -ot $HERE/imatrix_add_uniform.cpp ]]; then
  mkdir -p "$(dirname "$PATCHER")"
  g++ -std=c++17 -O2 -I"$LLAMA_SRC/ggml/include" "$HERE/imatrix_add_uniform.cpp" -o "$PATCHER" \
      "$LLAMA_BUILD/ggml/src/libggml-base.a" -fopenmp -lpthread -lm
fi

# 2. F32 GGUF (norms F32, q/k permuted for llama.cpp's RoPE, SentencePiece vocabulary embedded).
if [[ $REUSE == 1 && -s $F32 ]]; then
  echo "reusing $OUT/$F32"
else
  cmd=${EXPORTER//\{in\}/$MODEL}; cmd=${cmd//\{out\}/$F32}; cmd=${cmd//\$LSB/$LSB}
  # shellcheck disable=SC2086  # the template is split into words on purpose
  timed export export.log $cmd
fi

# 3. Sanity check: llama.cpp must reproduce the reference perplexity of the F32 model.
#    (bench/compare.sh runs it again beside lsb eval.) Not for a synthetic model.
if [[ -z $SYNTH ]]; then
timed ppl_f32 ppl_f32.log "$BIN/llama-perplexity" -m "$F32" -f "$VALID" -c 512 -t "$THREADS"
ppl=$(sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p' logs/ppl_f32.log)
echo "F32 GGUF perplexity: $ppl (reference $REF_PPL)"
if ! awk -v a="$ppl" -v b="$REF_PPL" 'BEGIN { exit !(a - b < 0.01 && b - a < 0.01) }'; then
  echo "ERROR: F32 perplexity $ppl differs from the reference $REF_PPL" >&2; exit 1
fi
fi

# 4. Importance matrix from the calibration text only (output.weight included).
#    This llama.cpp writes the GGUF imatrix format by default.
if [[ $REUSE == 1 && -s imatrix.gguf ]]; then
  echo "reusing $OUT/imatrix.gguf"
else
  chunks=(); [[ -n $SYNTH ]] && chunks=(--chunks 1)
  timed imatrix imatrix.log "$BIN/llama-imatrix" -m "$F32" -f "$CALIB" --process-output \
    -c 512 "${chunks[@]}" -t "$THREADS" -o imatrix.gguf
fi
# The same plus a uniform entry for the token embeddings (width = hidden size), for MODE pure.
hidden=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["hidden_size"])' "$MODEL/config.json")
"$PATCHER" imatrix.gguf imatrix-uniform-embd.gguf token_embd.weight "$hidden" 2> logs/imatrix_patch.log

# 5. Quantize (multi-threaded quantization is row-partitioned, hence deterministic).
for q in "${QUANTS[@]}"; do
  type=${q%%:*} mode=${q##*:}
  case $mode in
    pure)   tag=$type;        flags=(--pure --tensor-type "weight=$type" --imatrix imatrix-uniform-embd.gguf) ;;
    stock)  tag=$type-stock;  flags=(--pure --tensor-type "weight=$type" --imatrix imatrix.gguf) ;;
    embQ2K) tag=$type-embQ2K; flags=(--pure --tensor-type "weight=$type" --imatrix imatrix.gguf
                                     --token-embedding-type Q2_K) ;;
    mix)    tag=$type;        flags=(--imatrix imatrix.gguf) ;;
    *) echo "unknown mode $mode" >&2; exit 1 ;;
  esac
  if [[ $REUSE == 1 && -s $NAME-$tag.gguf ]]; then echo "reusing $OUT/$NAME-$tag.gguf"; continue; fi
  timed "quantize_$tag" "quantize_$tag.log" \
    "$BIN/llama-quantize" "${flags[@]}" "$F32" "$NAME-$tag.gguf" "$type" "$THREADS"
done

ls -l "$OUT"/*.gguf
