#!/usr/bin/env bash
# The project's test command (CI runs it through .ci/run):
#   1. the normal build (CUDA compiled when nvcc is present) and every ctest
#      label: cpu, mpi, gpu (gpu tests skip when no device is visible) and
#      slurm (a real one-node Slurm, tests/slurm/; skips where its daemons
#      cannot start: not root, or the packages of scripts/setup.sh missing);
#   2. the cpu label again with OPENBLAS_CORETYPE=Haswell (or unset, when the
#      environment already forces Haswell): the AVX2 kernel that many hosts
#      force, whose roundings differ from the AVX-512 one's and, for sgemm,
#      with the thread count; no test may depend on a BLAS kernel's last bits;
#   3. the emulated-device build (build-emu/, -DMOE_CUDA=EMULATED): the CUDA
#      backend, kernels, cuBLAS/cuBLASLt/NCCL glue and every gpu test run on
#      emu/'s CPU emulation of the device (ctest label emu; docs/cuda.md,
#      "Testing without a GPU");
#   4. an AddressSanitizer + UBSan build of the CPU tests (which replay the
#      fuzz corpus, fuzz_regression_*, under the sanitizers);
#   5. each libFuzzer target for a few seconds (scripts/fuzz.sh, clang).
# MOE_TEST_SKIP_EMU=1 skips step 3, MOE_TEST_SKIP_ASAN=1 step 4,
# MOE_TEST_SKIP_FUZZ=1 step 5.
#
#   scripts/test.sh --portability [portability.sh options]
# builds, then runs only the cpu and mpi labels under every OpenBLAS kernel
# and thread count (scripts/portability.sh) and prints the table.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)

echo "== build (build/)"
scripts/build.sh
if [ "${1:-}" = "--portability" ]; then
  shift
  exec scripts/portability.sh "$@"
fi
echo "== ctest (build/)"
ctest --test-dir build --output-on-failure -j "$jobs"
if [ "${OPENBLAS_CORETYPE:-}" = "Haswell" ]; then
  # The first run already forced Haswell: the second takes the CPU's own kernel.
  echo "== ctest -L cpu with OPENBLAS_CORETYPE unset (build/)"
  env -u OPENBLAS_CORETYPE ctest --test-dir build -L cpu --output-on-failure -j "$jobs"
elif grep -qw avx2 /proc/cpuinfo 2>/dev/null; then
  echo "== ctest -L cpu with OPENBLAS_CORETYPE=Haswell (build/)"
  OPENBLAS_CORETYPE=Haswell ctest --test-dir build -L cpu --output-on-failure -j "$jobs"
else
  echo "== no AVX2 on this CPU: the OPENBLAS_CORETYPE=Haswell run is skipped"
fi

if [ "${MOE_TEST_SKIP_EMU:-0}" != "1" ]; then
  echo "== emulated-device build of the gpu tests (build-emu/)"
  BUILD_DIR=build-emu scripts/build.sh -DMOE_CUDA=EMULATED
  echo "== ctest -L emu (build-emu/)"
  ctest --test-dir build-emu -L emu --output-on-failure -j "$jobs"
fi

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
