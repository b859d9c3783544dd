#!/usr/bin/env bash
# Builds moe-lfb and trains the tiny CPU model (configs/tiny.yaml): about a
# minute on 2 cores. Metrics land in runs/tiny/.
#   scripts/quickstart.sh [--set key=value ...]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
exec build/moe-train --config configs/tiny.yaml "$@"
