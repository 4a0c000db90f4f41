#!/usr/bin/env bash
# build.sh — build a reproducible llama.cpp "peer" (CPU backend only) for comparison with lsb.
#
# Source: the llama.cpp snapshot that node-llama-cpp ships inside its npm package
# (llama/gitRelease.bundle, a git bundle; llama/llama.cpp.info.json names its release tag).
#
# Usage:  bench/peer/build.sh [WORK_DIR]   (default: $LSB_PEER_DIR, else $HOME/.cache/lsb-peer;
#                                          outside the repository: the build is ~1 GB)
# Env:    NODE_LLAMA_CPP_VERSION  npm version spec to pack (default: latest; pin it to reproduce,
#                                 e.g. 3.22.1, which bundles llama.cpp v0.5.0 / de3ff815)
#         JOBS                    parallel build jobs (default 2)
#         NICE                    nice level for the compile (default 10)
#
# Result: $WORK_DIR/llama.cpp          (clone of the bundle, detached HEAD)
#         $WORK_DIR/llama.cpp/build/bin/{llama-perplexity,llama-quantize,llama-imatrix,
#                                         llama-bench,llama-simple,llama-completion,llama-gguf}
#         $WORK_DIR/llama.cpp/PEER_VERSION.txt  (npm version, tag, commit, flags, build time)
#
# AMX: this project's machines are virtual CPUs on which llama.cpp's AMX path gave wrong results,
# so AMX is switched off twice: GGML_AMX_* CMake options OFF, and -mno-amx-* compiler flags
# appended to C and C++ flags (GCC lets an explicit -mno-X override what -march=native implies).
set -euo pipefail

WORK_DIR=${1:-${LSB_PEER_DIR:-$HOME/.cache/lsb-peer}}
NODE_LLAMA_CPP_VERSION=${NODE_LLAMA_CPP_VERSION:-latest}
JOBS=${JOBS:-2}
NICE=${NICE:-10}
NO_AMX="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
TARGETS=(llama-perplexity llama-quantize llama-imatrix llama-bench llama-simple llama-completion llama-gguf)

mkdir -p "$WORK_DIR"
cd "$WORK_DIR"

# 1. Fetch the npm package (tarball only; nothing is installed or executed from it).
rm -rf package
TGZ=$(npm pack --silent "node-llama-cpp@${NODE_LLAMA_CPP_VERSION}" | tail -n1)
tar xzf "$TGZ"
NPM_VERSION=$(node -p 'require("./package/package.json").version')
LLAMA_TAG=$(node -p 'require("./package/llama/llama.cpp.info.json").tag')
echo "node-llama-cpp $NPM_VERSION bundles llama.cpp tag $LLAMA_TAG"

# 2. Clone the bundled llama.cpp source (a single squashed commit).
#    node-llama-cpp also ships patches (package/llama/patches/*.diff) that it applies for its own
#    addon build; we deliberately do NOT apply them: the peer is the plain bundled source.
rm -rf llama.cpp
git clone -q package/llama/gitRelease.bundle llama.cpp
COMMIT=$(git -C llama.cpp rev-parse HEAD)

# 3. Configure: Release, CPU only, native ISA minus AMX, no BLAS/CUDA/Vulkan/Metal/network.
CFLAGS_EXTRA="$NO_AMX"
cmake -S llama.cpp -B llama.cpp/build -G Ninja \
  -DCMAKE_BUILD_TYPE=Release -DCMAKE_EXPORT_COMPILE_COMMANDS=ON \
  -DCMAKE_C_FLAGS="$CFLAGS_EXTRA" -DCMAKE_CXX_FLAGS="$CFLAGS_EXTRA" \
  -DBUILD_SHARED_LIBS=OFF \
  -DGGML_NATIVE=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF \
  -DGGML_CUDA=OFF -DGGML_VULKAN=OFF -DGGML_METAL=OFF -DGGML_BLAS=OFF -DGGML_RPC=OFF \
  -DGGML_OPENMP=ON \
  -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_EXAMPLES=ON -DLLAMA_BUILD_TOOLS=ON

# 4. Build only the tools we need (llama-cli needs the server library; llama-simple and
#    llama-completion cover text generation).
T0=$(date +%s)
nice -n "$NICE" cmake --build llama.cpp/build -j "$JOBS" --target "${TARGETS[@]}"
T1=$(date +%s)

# 5. Check that no AMX code was compiled in (the ggml-cpu AMX kernels are guarded by __AMX_INT8__).
if grep -q -- '-mamx\|GGML_AMX' llama.cpp/build/compile_commands.json 2>/dev/null; then
  echo "ERROR: AMX flags/defines found in compile commands" >&2; exit 1
fi

{
  echo "node-llama-cpp: $NPM_VERSION"
  echo "llama.cpp tag:  $LLAMA_TAG"
  echo "llama.cpp commit: $COMMIT"
  echo "compiler: $(c++ --version | head -n1)"
  echo "extra C/C++ flags: $CFLAGS_EXTRA (+ -march=native from GGML_NATIVE)"
  echo "build seconds (-j$JOBS, ${#TARGETS[@]} targets): $((T1 - T0))"
} | tee llama.cpp/PEER_VERSION.txt
ls -l llama.cpp/build/bin/
