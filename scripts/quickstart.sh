#!/usr/bin/env bash
# Builds moe-lfb (a few minutes the first time) and trains the tiny CPU
# model (configs/tiny.yaml): 10-20 s on 2 cores. Metrics land in runs/tiny/.
#   scripts/quickstart.sh [--set key=value ...]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
exec build/moe-train --config configs/tiny.yaml "$@"
