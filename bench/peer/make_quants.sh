#!/usr/bin/env bash
# make_quants.sh — export the model to an F32 GGUF, check it against the reference perplexity,
# compute an importance matrix on the calibration text, and quantize it to every peer type.
#
# Usage:  scripts/make_quants.sh                 (all settings via environment variables below)
#
# Variables (defaults in brackets):
#   LLAMA_BUILD   llama.cpp build dir from build.sh               [/work/peer/llama.cpp/build]
#   LSB           the lsb binary (for a future `lsb convert --to gguf`) [/work/main/build/lsb]
#   MODEL         the Hugging Face model folder                   [/work/shared/models/bookworm-27m]
#   CALIB         calibration text (imatrix only; never evaluated) [/work/shared/data/bookworm_calib.txt]
#   VALID         evaluation text (F32 sanity perplexity)         [/work/shared/data/bookworm_valid.txt]
#   OUT           output folder                                   [/work/peer/out]
#   NAME          file name stem                                  [bookworm]
#   EXPORTER      command template writing the F32 GGUF; {in} and {out} are replaced by the model
#                 folder and output path. Default: the stand-in tool tools/export_gguf (built from
#                 the lsb snapshot LSB_SNAP if missing). Later, with lsb's converter, e.g.:
#                 EXPORTER='$LSB convert --to gguf {in} -o {out}'   (check its real syntax)
#   LSB_SNAP      lsb source tree + build with liblsbcore.a, for building export_gguf [/work/snap]
#   THREADS       threads for imatrix/perplexity/quantize         [2]
#   NICE          nice level for the heavy jobs                   [10]
#   REF_PPL       expected F32 perplexity (llama.cpp style, ctx 512) [24.644]
#   REUSE         1 = keep an existing F32 GGUF / imatrix instead of recomputing them [0]
#
# Output in $OUT: $NAME-f32.gguf, imatrix.gguf, imatrix-uniform-embd.gguf, one
# $NAME-<TYPE>[-<variant>].gguf per entry of QUANTS, logs/ with every tool's output, and
# times.tsv (step, wall seconds).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PEER=$(dirname "$HERE")
LLAMA_BUILD=${LLAMA_BUILD:-/work/peer/llama.cpp/build}
LSB=${LSB:-/work/main/build/lsb}
MODEL=${MODEL:-/work/shared/models/bookworm-27m}
CALIB=${CALIB:-/work/shared/data/bookworm_calib.txt}
VALID=${VALID:-/work/shared/data/bookworm_valid.txt}
OUT=${OUT:-/work/peer/out}
NAME=${NAME:-bookworm}
LSB_SNAP=${LSB_SNAP:-/work/snap}
EXPORT_TOOL=${EXPORT_TOOL:-$PEER/tools/export_gguf}
DEFAULT_EXPORTER="$EXPORT_TOOL {in} {out} f32"
EXPORTER=${EXPORTER:-$DEFAULT_EXPORTER}
THREADS=${THREADS:-2}
NICE=${NICE:-10}
REF_PPL=${REF_PPL:-24.644}
REUSE=${REUSE:-0}
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

BIN=$LLAMA_BUILD/bin
mkdir -p "$OUT/logs"
cd "$OUT"
F32=$NAME-f32.gguf
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

# 1. Helper tools: the exporter stand-in (built against the lsb snapshot, when it is the one in
#    use) and the imatrix patcher (built against llama.cpp's ggml-base).
if [[ $EXPORTER == "$EXPORT_TOOL "* && ! -x $EXPORT_TOOL ]]; then
  g++ -std=c++20 -O2 -I"$LSB_SNAP/include" -I"$LSB_SNAP/src" "$PEER/tools/export_gguf.cpp" \
      -o "$EXPORT_TOOL" "$LSB_SNAP/build/liblsbcore.a" -lfmt -lsentencepiece -lxxhash -lhwy -fopenmp
fi
PATCHER=$PEER/tools/imatrix_add_uniform
if [[ ! -x $PATCHER ]]; then
  g++ -std=c++17 -O2 -I"$LLAMA_SRC/ggml/include" "$PEER/tools/imatrix_add_uniform.cpp" -o "$PATCHER" \
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
timed ppl_f32 ppl_f32.log "$BIN/llama-perplexity" -m "$F32" -f "$VALID" -c 512 -t "$THREADS"
ppl=$(sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p' logs/ppl_f32.log)
echo "F32 GGUF perplexity: $ppl (reference $REF_PPL)"
if ! awk -v a="$ppl" -v b="$REF_PPL" 'BEGIN { exit !(a - b < 0.01 && b - a < 0.01) }'; then
  echo "ERROR: F32 perplexity $ppl differs from the reference $REF_PPL" >&2; exit 1
fi

# 4. Importance matrix from the calibration text only (output.weight included).
#    This llama.cpp writes the GGUF imatrix format by default.
if [[ $REUSE == 1 && -s imatrix.gguf ]]; then
  echo "reusing $OUT/imatrix.gguf"
else
  timed imatrix imatrix.log "$BIN/llama-imatrix" -m "$F32" -f "$CALIB" --process-output \
    -c 512 -t "$THREADS" -o imatrix.gguf
fi
# The same plus a uniform entry for the token embeddings (width = hidden size), for MODE pure.
hidden=$(node -p "require('$MODEL/config.json').hidden_size")
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
  timed "quantize_$tag" "quantize_$tag.log" \
    "$BIN/llama-quantize" "${flags[@]}" "$F32" "$NAME-$tag.gguf" "$type" "$THREADS"
done

ls -l "$OUT"/*.gguf
