#!/usr/bin/env bash
# The project's test command (CI runs it through .ci/run):
#   1. the normal build (CUDA compiled when nvcc is present) and every ctest
#      label: cpu, mpi, and gpu (gpu tests skip when no device is visible);
#   2. an AddressSanitizer + UBSan build of the CPU tests (which replay the
#      fuzz corpus, fuzz_regression_*, under the sanitizers);
#   3. each libFuzzer target for a few seconds (scripts/fuzz.sh, clang).
# MOE_TEST_SKIP_ASAN=1 skips step 2, MOE_TEST_SKIP_FUZZ=1 step 3.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)

echo "== build (build/)"
scripts/build.sh
echo "== ctest (build/)"
ctest --test-dir build --output-on-failure -j "$jobs"

if [ "${MOE_TEST_SKIP_ASAN:-0}" != "1" ]; then
  echo "== AddressSanitizer + UBSan build of the CPU tests (build-asan/)"
  BUILD_DIR=build-asan scripts/build.sh -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMOE_SANITIZE=ON \
    -DMOE_CUDA=OFF
  echo "== ctest -L cpu (build-asan/)"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
    ctest --test-dir build-asan -L cpu --output-on-failure -j "$jobs"
fi

if [ "${MOE_TEST_SKIP_FUZZ:-0}" != "1" ]; then
  echo "== libFuzzer, 5 s per target (build-fuzz/)"
  scripts/fuzz.sh 5
fi
