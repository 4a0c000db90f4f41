#!/usr/bin/env bash
# compare.sh — lsb beside llama.cpp in one run: size (whole-file bits per weight), quality (KL
# divergence against the original model) and speed (prompt 128 / 512 and decode tokens/s, median
# and min–max over repetitions) at the same thread counts. Not part of CI (needs the llama.cpp
# peer built by bench/peer/build.sh and quantized by bench/peer/make_quants.sh).
#
# Usage:  bench/compare.sh [ITEM...]
#   ITEM is an existing .lsb file, or NAME:ARGS, which makes $WORK/NAME.lsb with
#   `lsb compress $MODEL -o $WORK/NAME.lsb ARGS` (ARGS split on spaces; may be empty), e.g.
#     bench/compare.sh 'lsb1:--scheme lsb1' 'default:' 'q21:--target-bpw 2.1 --calib bw.stats' x.lsb
#   Items can also be given in LSB_ITEMS (newline-separated), after the arguments.
#
# Variables (defaults in brackets):
#   LSB_PEER_DIR  the peer's work folder (build.sh, make_quants.sh)     [$HOME/.cache/lsb-peer]
#   LLAMA_BUILD   llama.cpp build folder                                [$LSB_PEER_DIR/llama.cpp/build]
#   PEER_OUT      folder with the quantized GGUF files ($NAME-TYPE.gguf) [$LSB_PEER_DIR/out]
#   LSB           the lsb binary                                        [./build/lsb]
#   MODEL         the original Hugging Face model                       [../shared/models/bookworm-27m]
#   NAME          stem of the GGUF files in PEER_OUT                    [bookworm]
#   VALID         evaluation text                                       [../shared/data/bookworm_valid.txt]
#   PEER_TYPES    llama.cpp files ($PEER_OUT/$NAME-TYPE.gguf)           [IQ1_S IQ1_M IQ2_XXS IQ2_S Q4_0]
#   THREADS       thread counts for the speed part                      [1 2]
#   REPS          repetitions of each speed test                        [5]
#   ROUNDS        N = run the speed tests in N rounds, the two tools' blocks alternating (llama.cpp
#                 first in odd rounds); each figure is then the median of the rounds' medians, its
#                 range the rounds' extremes. For a host whose speed drifts during the run [unset]
#   PROMPTS       prompt lengths for the speed part                     [128 512]
#   BENCH_ORIGINAL 1 = lsb bench also runs the original (bf16) model first [1; 0 with SYNTH]
#   KLD_THREADS   threads for the perplexity / KLD runs                 [2]
#   STEPS         any of: kld check speed (run in this order)            [kld check speed]
#   REUSE         1 = keep finished KLD / check results already in WORK (see step 1) [0]
#   SYNTH         a shape for `lsb synth` (e.g. tinyllama-1.1b): compare on that synthetic model
#                 instead of MODEL; speed only (its GGUF files are made here, see bench/peer/README.md)
#   WORK          this run's folder                                     [$LSB_PEER_DIR/compare/<name>-<UTC time>]
#   NICE          nice level of the KLD / conversion runs (speed runs are not niced) [10]
#   REF_PPL       expected perplexity of MODEL on VALID, ctx 512        [24.644]
#
# Output in $WORK: run.txt (date, machine, load averages, versions), check.txt, kld/*.json|log,
# speed/*.json, results.json, compare.md (the tables) and compare.svg (bpw on x; KLD and decode
# tokens/s), all printed at the end.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
LSB_PEER_DIR=${LSB_PEER_DIR:-$HOME/.cache/lsb-peer}
LLAMA_BUILD=${LLAMA_BUILD:-$LSB_PEER_DIR/llama.cpp/build}
PEER_OUT=${PEER_OUT:-$LSB_PEER_DIR/out}
LSB=$(realpath "${LSB:-./build/lsb}")
MODEL=${MODEL:-$ROOT/../shared/models/bookworm-27m}
NAME=${NAME:-bookworm}
VALID=${VALID:-$ROOT/../shared/data/bookworm_valid.txt}
read -r -a PEER_TYPES <<< "${PEER_TYPES:-IQ1_S IQ1_M IQ2_XXS IQ2_S Q4_0}"
read -r -a THREAD_LIST <<< "${THREADS:-1 2}"
REPS=${REPS:-5}
read -r -a PROMPTS <<< "${PROMPTS:-128 512}"
KLD_THREADS=${KLD_THREADS:-2}
STEPS=" ${STEPS:-kld check speed} "
SYNTH=${SYNTH:-}
NICE=${NICE:-10}
REF_PPL=${REF_PPL:-24.644}
BIN=$LLAMA_BUILD/bin
PEER_SCRIPTS=$ROOT/bench/peer

if [[ -n $SYNTH ]]; then
  # Synthetic model: random weights at a real shape. Speed only; the GGUF files come from
  # make_quants.sh in its SYNTH mode (uniform importance, no KLD, no perplexity check).
  MODEL=$LSB_PEER_DIR/synth/$SYNTH
  NAME=$SYNTH
  PEER_OUT=$LSB_PEER_DIR/synth
  STEPS=" speed "
  BENCH_ORIGINAL=${BENCH_ORIGINAL:-0}
  [[ -f $MODEL/config.json ]] || SYNTH=$SYNTH "$PEER_SCRIPTS/make_quants.sh"
fi
BENCH_ORIGINAL=${BENCH_ORIGINAL:-1}
WORK=${WORK:-$LSB_PEER_DIR/compare/$NAME-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$WORK"/{kld,speed,lsb}
WORK=$(cd "$WORK" && pwd)
for b in llama-bench llama-perplexity; do
  [[ -x $BIN/$b ]] || { echo "compare.sh: $BIN/$b missing (run bench/peer/build.sh)" >&2; exit 1; }
done
[[ -x $LSB ]] || { echo "compare.sh: $LSB missing (build the project)" >&2; exit 1; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# ---- the files ------------------------------------------------------------------------------
ITEMS=("$@")
if [[ -n ${LSB_ITEMS:-} ]]; then mapfile -t more <<< "$LSB_ITEMS"; ITEMS+=("${more[@]}"); fi
LSB_FILES=()   # name<TAB>path<TAB>how it was made
for it in "${ITEMS[@]}"; do
  [[ -z $it ]] && continue
  if [[ -f $it ]]; then
    LSB_FILES+=("$(basename "$it" .lsb)"$'\t'"$(realpath "$it")"$'\t'"given")
  elif [[ $it == *:* ]]; then
    n=${it%%:*} args=${it#*:} f=$WORK/lsb/${it%%:*}.lsb
    if [[ ${REUSE:-0} == 1 && -s $f && -s $WORK/lsb/$n.compress.json ]]; then
      echo "== $f: reused"
    else
      echo "== lsb compress $MODEL -o $f $args"
      # shellcheck disable=SC2086  # ARGS are split into words on purpose
      nice -n "$NICE" "$LSB" compress "$MODEL" -o "$f" $args --json > "$WORK/lsb/$n.compress.json"
    fi
    LSB_FILES+=("$n"$'\t'"$f"$'\t'"lsb compress ${args:-(default recipe)}")
  else
    echo "compare.sh: '$it' is neither a file nor NAME:ARGS" >&2; exit 2
  fi
done
PEER_FILES=()  # name<TAB>path
for t in "${PEER_TYPES[@]}"; do
  f=$PEER_OUT/$NAME-$t.gguf
  [[ -f $f ]] || { echo "compare.sh: $f missing (run bench/peer/make_quants.sh)" >&2; exit 1; }
  PEER_FILES+=("$t"$'\t'"$f")
done

# With REUSE=1 the earlier invocations' lines stay in run.txt (this one's steps are named).
RUN_TEE=(tee "$WORK/run.txt")
[[ ${REUSE:-0} == 1 && -s $WORK/run.txt ]] && RUN_TEE=(tee -a "$WORK/run.txt")
{
  [[ ${RUN_TEE[1]} == -a ]] && echo "another invocation, steps:$STEPS"
  echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
  echo "load average at start: $(loadavg)"
  echo "lsb: $("$LSB" --version) ($LSB, git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'))"
  sed 's/^/peer: /' "$LLAMA_BUILD/../PEER_VERSION.txt" 2>/dev/null || echo "peer: $LLAMA_BUILD"
  echo "model: $MODEL${SYNTH:+ (SYNTHETIC, random weights)}"
  echo "threads: ${THREAD_LIST[*]} (speed), $KLD_THREADS (KLD); reps: $REPS"
  # (an `if`: a false `[[ ]] && echo` as the group's last command failed the pipeline, and set -e
  # ended every run without REUSE=1 here)
  if [[ ${REUSE:-0} == 1 ]]; then
    echo "REUSE=1: finished KLD results and .lsb files already in $WORK are kept (their times: ls -l $WORK/kld)"
  fi
} | "${RUN_TEE[@]}"

# ---- 1. KLD against the original, each tool measured its own way on the same text ----------
# llama.cpp: the original's log-probabilities come from $PEER_OUT/$NAME-f32.gguf, the file the
# peer types were quantized from; lsb: `lsb eval --ref` runs the original beside each file.
# REUSE=1 keeps a finished result in $WORK/kld that is newer than its file (KLD is deterministic;
# the speed part is never reused).
BASE_KLD=$WORK/kld/base.kld
F32_GGUF=$PEER_OUT/$NAME-f32.gguf
done_log() { [[ ${REUSE:-0} == 1 && -s $1 && $1 -nt $2 ]] && grep -q "$3" "$1"; }
if [[ $STEPS == *" kld "* ]]; then
  base() {  # the original's perplexity and log-probabilities, when something needs them
    if ! done_log "$WORK/kld/llama_f32.log" "$F32_GGUF" "Final estimate" || [[ ! -s $BASE_KLD ]]; then
      echo "== llama.cpp: PPL and log-probabilities of $F32_GGUF"
      nice -n "$NICE" "$BIN/llama-perplexity" -m "$F32_GGUF" -f "$VALID" -c 512 -t "$KLD_THREADS" \
        --kl-divergence-base "$BASE_KLD" > "$WORK/kld/llama_f32.log" 2>&1
    fi
  }
  done_log "$WORK/kld/llama_f32.log" "$F32_GGUF" "Final estimate" || base
  for e in "${PEER_FILES[@]}"; do
    IFS=$'\t' read -r n f <<< "$e"
    done_log "$WORK/kld/peer_$n.log" "$f" "Same top p" && { echo "== KLD llama.cpp $n: reused"; continue; }
    base
    echo "== KLD llama.cpp $n"
    nice -n "$NICE" "$BIN/llama-perplexity" -m "$f" --kl-divergence-base "$BASE_KLD" --kl-divergence \
      -c 512 -t "$KLD_THREADS" > "$WORK/kld/peer_$n.log" 2>&1
  done
  for e in "${LSB_FILES[@]}"; do
    IFS=$'\t' read -r n f _ <<< "$e"
    done_log "$WORK/kld/lsb_$n.json" "$f" "kld_mean" && { echo "== KLD lsb $n: reused"; continue; }
    echo "== KLD lsb $n"
    nice -n "$NICE" "$LSB" eval "$f" --ref "$MODEL" --text "$VALID" --ctx 512 -t "$KLD_THREADS" --json \
      > "$WORK/kld/lsb_$n.json"
  done
fi

# ---- 2. our GGUF export read by llama.cpp: the same perplexity as our own reader -------------
if [[ $STEPS == *" check "* ]]; then
  echo "== check: lsb convert -> llama-perplexity, beside lsb eval on the original (ctx 512)"
  nice -n "$NICE" "$LSB" convert "$MODEL" --to gguf -o "$WORK/$NAME-f32.gguf" > "$WORK/kld/convert.log"
  if cmp -s "$WORK/$NAME-f32.gguf" "$F32_GGUF" && [[ -s $WORK/kld/llama_f32.log ]]; then
    # The same bytes as the file llama.cpp already read in step 1: its perplexity is this file's.
    how="byte-identical to $F32_GGUF, read by llama-perplexity in the KLD step"
    llama_log=$WORK/kld/llama_f32.log
  else
    how="read by llama-perplexity now"
    llama_log=$WORK/kld/llama_convert.log
    nice -n "$NICE" "$BIN/llama-perplexity" -m "$WORK/$NAME-f32.gguf" -f "$VALID" -c 512 -t "$KLD_THREADS" \
      > "$llama_log" 2>&1
  fi
  llama_ppl=$(sed -n 's/.*Final estimate: PPL = \([0-9.]*\) +\/- \([0-9.]*\).*/\1 \2/p' "$llama_log")
  done_log "$WORK/kld/lsb_ref.json" "$MODEL/config.json" '"ppl"' ||
    nice -n "$NICE" "$LSB" eval "$MODEL" --text "$VALID" --ctx 512 -t "$KLD_THREADS" --json > "$WORK/kld/lsb_ref.json"
  lsb_ppl=$(python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print("%.4f %.5f" % (j["ppl"], j["ppl_stderr"]))' "$WORK/kld/lsb_ref.json")
  {
    echo "export: lsb convert $(basename "$MODEL") --to gguf -o $NAME-f32.gguf ($(stat -c%s "$WORK/$NAME-f32.gguf") bytes; $how)"
    echo "llama.cpp llama-perplexity -c 512 on the export: PPL = ${llama_ppl% *} +/- ${llama_ppl#* }"
    echo "lsb eval --ctx 512 on the Hugging Face folder:   PPL = ${lsb_ppl% *} +/- ${lsb_ppl#* }"
    echo "reference (issue):                               PPL = $REF_PPL"
  } | tee "$WORK/check.txt"
  if python3 -c 'import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); sys.exit(abs(a - b) > 1e-4 * b)' \
       "${llama_ppl% *}" "${lsb_ppl% *}"; then
    echo "check: PASS (the two agree within 1e-4 relative)" | tee -a "$WORK/check.txt"
  else
    echo "check: FAIL (llama.cpp and lsb disagree by more than 1e-4 relative)" | tee -a "$WORK/check.txt"; exit 1
  fi
  rm -f "$WORK/$NAME-f32.gguf"
fi

# ---- 3. speed: both tools, each thread count, interleaved in one run -------------------------
if [[ $STEPS == *" speed "* ]]; then
  : > "$WORK/speed/loads.tsv"
  peer_args=(); for e in "${PEER_FILES[@]}"; do peer_args+=(-m "${e#*$'\t'}"); done
  lsb_args=(); [[ $BENCH_ORIGINAL == 1 ]] && lsb_args=("$MODEL")
  for e in "${LSB_FILES[@]}"; do IFS=$'\t' read -r _ f _ <<< "$e"; lsb_args+=("$f"); done
  run_peer() {  # run_peer THREADS SUFFIX
    before=$(loadavg)
    "$BIN/llama-bench" "${peer_args[@]}" -p "$plist" -n 64 -r "$REPS" -t "$1" -o json \
      > "$WORK/speed/peer_t$1$2.json" 2> "$WORK/speed/peer_t$1$2.log"
    printf 'llama-bench%s\t%s\t%s\t%s\n' "$2" "$1" "$before" "$(loadavg)" >> "$WORK/speed/loads.tsv"
  }
  run_lsb() {  # run_lsb THREADS SUFFIX
    for p in "${PROMPTS[@]}"; do
      (( ${#lsb_args[@]} )) || break
      before=$(loadavg)
      "$LSB" bench "${lsb_args[@]}" --prompt-tokens "$p" --decode-tokens 64 --reps "$REPS" -t "$1" --json \
        > "$WORK/speed/lsb_t$1_p$p$2.json"
      printf 'lsb bench p%s%s\t%s\t%s\t%s\n' "$p" "$2" "$1" "$before" "$(loadavg)" >> "$WORK/speed/loads.tsv"
    done
  }
  plist=$(IFS=,; echo "${PROMPTS[*]}")
  for t in "${THREAD_LIST[@]}"; do
    echo "== speed, $t thread(s): llama-bench -p $plist -n 64 -r $REPS; lsb bench --reps $REPS (prompt ${PROMPTS[*]})${ROUNDS:+; $ROUNDS rounds}"
    if [[ -z ${ROUNDS:-} ]]; then
      run_peer "$t" ""
      run_lsb "$t" ""
    else
      # Rounds: the two tools' blocks alternate, llama.cpp first in odd rounds and lsb first in
      # even ones, so that a slow stretch of the host falls on both; report.py takes the median
      # over the rounds of each round's median.
      for ((k = 1; k <= ROUNDS; k++)); do
        if (( k % 2 )); then run_peer "$t" "_r$k"; run_lsb "$t" "_r$k"; else run_lsb "$t" "_r$k"; run_peer "$t" "_r$k"; fi
      done
    fi
  done
fi

# ---- 4. tables and plot ---------------------------------------------------------------------
printf '%s\n' "${PEER_FILES[@]}" > "$WORK/peer_files.tsv"
printf '%s\n' "${LSB_FILES[@]}" > "$WORK/lsb_files.tsv"
echo "load average at end: $(loadavg)" >> "$WORK/run.txt"
python3 "$PEER_SCRIPTS/report.py" "$WORK" "$MODEL" "${SYNTH:+synthetic}"
echo "== written: $WORK/compare.md, $WORK/compare.svg"
