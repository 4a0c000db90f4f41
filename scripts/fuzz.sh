#!/usr/bin/env bash
# Builds the libFuzzer harnesses (clang, -fsanitize=fuzzer,address,undefined) in build-fuzz and
# runs them. Usage:
#   scripts/fuzz.sh build                  build only
#   scripts/fuzz.sh run SECONDS [TARGET..] run each target (default: all) for SECONDS, two at a
#                                          time, one job each, nice'd; logs in build-fuzz/logs/
#   scripts/fuzz.sh merge [TARGET..]       minimise the new inputs into fuzz/corpus/<target>/
#   scripts/fuzz.sh seeds                  (re)write the seed inputs with the project's own writers
#                                          (fuzz/make_seeds.cpp, built in ./build)
# Targets: safetensors config hf_index llama2c llama2c_tokenizer lsb gguf request. Findings (crash-*,
# leak-*, timeout-*, oom-*) are written to build-fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${LSB_FUZZ_BUILD:-build-fuzz}
ALL=(safetensors config hf_index llama2c llama2c_tokenizer lsb gguf request)

build() {
  CC=clang CXX=clang++ cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLSB_FUZZ=ON \
    -DLSB_BUILD_TESTS=OFF -DLSB_BUILD_BENCH=OFF >/dev/null
  ninja -C "$BUILD" -j"${JOBS:-2}" $(printf 'fuzz_%s ' "${ALL[@]}")
}

run_one() {  # target seconds
  local t=$1 secs=$2 root=$PWD
  local b="$root/$BUILD"
  mkdir -p "$b/logs/$t" "$b/artifacts/$t" "$b/work/$t"
  # New inputs go to work/<t> (the saved seeds are read, never written); -max_len bounds input
  # size. With -jobs libFuzzer logs to fuzz-0.log in the current directory: one directory per target.
  (cd "$b/logs/$t" && nice -n 10 "$b/fuzz/fuzz_$t" -max_total_time="$secs" -jobs=1 -workers=1 -max_len=65536 \
    -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$b/artifacts/$t/" \
    "$b/work/$t" "$root/fuzz/corpus/$t" >/dev/null 2>&1 || true)
}

case "${1:-}" in
  build) build ;;
  run)
    secs=${2:?seconds}; shift 2
    targets=("${@:-${ALL[@]}}"); [[ $# -eq 0 ]] && targets=("${ALL[@]}")
    i=0
    for t in "${targets[@]}"; do
      run_one "$t" "$secs" &
      i=$((i + 1))
      if ((i % 2 == 0)); then wait; fi
    done
    wait ;;
  merge)
    shift
    targets=("$@"); [[ $# -eq 0 ]] && targets=("${ALL[@]}")
    for t in "${targets[@]}"; do
      mkdir -p "$BUILD/merged/$t"
      rm -rf "$BUILD/merged/$t"/*
      "$BUILD/fuzz/fuzz_$t" -merge=1 -max_len=65536 "$BUILD/merged/$t" "fuzz/corpus/$t" "$BUILD/work/$t" \
        >"$BUILD/logs/$t.merge.log" 2>&1
      rm -f fuzz/corpus/"$t"/*
      cp "$BUILD/merged/$t"/* fuzz/corpus/"$t"/
      echo "$t: $(ls fuzz/corpus/$t | wc -l) inputs, $(du -sh fuzz/corpus/$t | cut -f1)"
    done ;;
  seeds)
    cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
    ninja -C build lsb_fuzz_seeds
    build/lsb_fuzz_seeds fuzz/corpus ../shared ;;
  *) sed -n 2,12p "$0"; exit 2 ;;
esac
