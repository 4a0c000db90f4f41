#!/usr/bin/env bash
# Installs dependencies, builds, and runs the fast test suite (everything but tests labelled long).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh
cd build
ctest --output-on-failure -LE long -j1 --timeout 900
