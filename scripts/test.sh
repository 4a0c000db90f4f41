#!/usr/bin/env bash
# Installs dependencies, builds, and runs the fast test suite (everything but tests labelled long);
# then builds again with AddressSanitizer + UndefinedBehaviorSanitizer (-DLSB_SANITIZE=ON, g++) in
# build-sanitize and runs the unit tests there (docs/HARDENING.md), and with ThreadSanitizer in
# build-tsan for the streaming tests (the reader, builder and compute threads). LSB_SKIP_SANITIZE=1
# skips both sanitizer stages.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
# Benchmarks and the long tests are left out here (bash scripts/build.sh builds them): CI time
# goes to the tests it runs.
bash scripts/build.sh -DLSB_BUILD_BENCH=OFF -DLSB_BUILD_LONG_TESTS=OFF
(cd build && ctest --output-on-failure -LE long -j1 --timeout 900)

if [[ "${LSB_SKIP_SANITIZE:-0}" != 1 ]]; then
  start=$(date +%s)
  # The test sources are not instrumented (only the library is), so the normal build's test
  # objects are linked instead of compiled again (LSB_TEST_OBJECTS_FROM, tests/CMakeLists.txt).
  cmake -S . -B build-sanitize -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS_RELEASE="-O1 -DNDEBUG" -DLSB_SANITIZE=ON -DLSB_BUILD_BENCH=OFF -DLSB_BUILD_LONG_TESTS=OFF \
    -DLSB_TEST_OBJECTS_FROM="$PWD/build" >/dev/null
  # The tests call the normal build's CLI (LSB_TEST_EXE): the library code they run in-process
  # is what is sanitized here; a sanitized CLI took a quarter of this stage's build time.
  ninja -C build-sanitize -j"$(nproc)" lsb_tests lsb_streaming_tests
  # Left out (docs/HARDENING.md): whole-model tests that only repeat, several times slower, what
  # the fast suite already ran on the same code paths, and tests asserting peak-RSS budgets,
  # which ASan's shadow memory and quarantine make meaningless.
  SLOW='EvalPerplexity.*:ModelBookworm.*:GgufLogits.*:GgufCli.*:GgufTokenizer.*:FormatPassthrough.*'
  SLOW+=':CompressBookworm.*:CompareCli.*:SynthModel.StreamsWithSmallMemory'
  # lsb serve / lsb chat as processes on bookworm-27m: the server's code runs here in-process
  # (ServeHttp.*); the CLI tests would load the model in a sanitized child each time.
  SLOW+=':ServeCli.*'
  # The fault tests run the CLI with a preloaded shim (its library paths, the streamer's reads,
  # run here through Streaming.*); the allocator end to end and the fast-vs-reference sweep over
  # GPT-2's matrices repeat, ten times slower, what their smaller siblings here already cover.
  SLOW+=':Faults*:Allocate.TargetBpwOnStories:QuantFastVsReference.Gpt2AttentionProjections'
  # Streaming's budget tests measure RSS (or run lsb under a budget); its equality tests run here,
  # so the reader and builder threads are exercised under the sanitizers.
  SLOW+=':Streaming.TooSmallBudgetIsRefusedWithTheMinimum:Streaming.PeakRssStaysWithinBudgetAndTextMatches'
  SLOW+=':Streaming.OpenMpSpinIsBoundedUnlessTheUserChose:StreamingBudget.*'
  # lsb_tests in two shards side by side (one per core), then the streaming tests.
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:detect_stack_use_after_return=1
  export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
  export LSB_TEST_EXE="$PWD/build/lsb"
  pids=()
  for shard in 0 1; do
    GTEST_TOTAL_SHARDS=2 GTEST_SHARD_INDEX=$shard \
      build-sanitize/tests/lsb_tests --gtest_filter="-${SLOW}" --gtest_brief=1 > "build-sanitize/shard$shard.log" 2>&1 &
    pids+=($!)
  done
  failed=0
  for i in 0 1; do
    wait "${pids[$i]}" || failed=1
    cat "build-sanitize/shard$i.log"
  done
  [[ $failed == 0 ]] || { echo "sanitizer stage: lsb_tests failed" >&2; exit 1; }
  build-sanitize/tests/lsb_streaming_tests --gtest_filter="-${SLOW}" --gtest_brief=1
  unset ASAN_OPTIONS UBSAN_OPTIONS LSB_TEST_EXE
  echo "sanitizer build and tests: $(( $(date +%s) - start )) s"

  # ThreadSanitizer on the streaming pipeline: only the streaming tests' binary is built with it;
  # the CLI they call for compressing comes from the normal build (LSB_TEST_EXE). libgomp is not
  # instrumented, so the OpenMP team is limited to one thread (OMP_THREAD_LIMIT): what is checked
  # is the reader and builder threads against the compute thread.
  # -g1: line tables for the reports' stacks, without the rest of the debug information, which
  # was a quarter of this build's compile time. Without the precompiled headers (they gained this
  # small build nothing: 133 s without, 148 s with in CI's run before): the other builds force
  # json, fmt and the standard headers into every source, so this one is what catches a source
  # that forgot an include (the floors up to pipeline and the streaming tests).
  start=$(date +%s)
  cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS_RELEASE="-O1 -g1 -DNDEBUG" -DLSB_TSAN=ON -DLSB_BUILD_BENCH=OFF -DLSB_BUILD_LONG_TESTS=OFF \
    -DCMAKE_DISABLE_PRECOMPILE_HEADERS=ON >/dev/null
  ninja -C build-tsan -j"$(nproc)" lsb_streaming_tests
  TSAN='Streaming.SameLogitsAsResidentBitForBit:Streaming.DefaultRecipeFitsItsArenasAndMatchesResident'
  TSAN+=':Streaming.EvalIsIdenticalToResidentAndReadsEachLayerOncePerWindow'
  OMP_THREAD_LIMIT=1 LSB_TEST_EXE="$PWD/build/lsb" TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
    build-tsan/tests/lsb_streaming_tests --gtest_filter="${TSAN}" --gtest_brief=1
  echo "thread sanitizer build and tests: $(( $(date +%s) - start )) s"
fi
