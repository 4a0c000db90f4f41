#!/usr/bin/env bash
# Installs the Debian 12 packages lsb needs to build and test (run as root).
set -euo pipefail
PKGS=(build-essential cmake ninja-build pkg-config time
      nlohmann-json3-dev libcli11-dev libfmt-dev libsentencepiece-dev libhwy-dev libxxhash-dev
      libgtest-dev libgmock-dev libbenchmark-dev libeigen3-dev libopenblas-openmp-dev libcpp-httplib-dev)
missing=()
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
