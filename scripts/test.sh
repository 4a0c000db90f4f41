#!/usr/bin/env bash
# Installs dependencies, builds, and runs the fast test suite (everything but tests labelled long);
# then builds again with AddressSanitizer + UndefinedBehaviorSanitizer (-DLSB_SANITIZE=ON, g++) in
# build-sanitize and runs the unit tests there (docs/HARDENING.md). LSB_SKIP_SANITIZE=1 skips that part.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh
(cd build && ctest --output-on-failure -LE long -j1 --timeout 900)

if [[ "${LSB_SKIP_SANITIZE:-0}" != 1 ]]; then
  start=$(date +%s)
  cmake -S . -B build-sanitize -G Ninja -DCMAKE_BUILD_TYPE=Release -DLSB_SANITIZE=ON -DLSB_BUILD_BENCH=OFF >/dev/null
  ninja -C build-sanitize -j"$(nproc)" lsb lsb_tests
  # Whole-model tests that only repeat, 10x slower, what the fast suite already ran on the same
  # code paths are left out (see docs/HARDENING.md for the list and the reason).
  SLOW='EvalPerplexity.*:ModelBookworm.*:GgufLogits.*:GgufCli.*:GgufTokenizer.*'
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:detect_stack_use_after_return=1 \
  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    build-sanitize/tests/lsb_tests --gtest_filter="-${SLOW}" --gtest_brief=1
  echo "sanitizer build and tests: $(( $(date +%s) - start )) s"
fi
