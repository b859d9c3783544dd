#!/usr/bin/env bash
# compute-sanitizer over the gpu tests (ctest "gpu_sanitizer", label gpu):
# memcheck (out-of-bounds and misaligned accesses, leaks, API errors) on every
# kernel family and on one whole training step of a small model in fp32 and
# bf16; initcheck (reads of device memory never written) on that step;
# racecheck and synccheck (shared-memory races, bad barriers) on the kernel
# tests. Exits 77 (ctest: skipped) without a device or the tool.
#   tests/gpu/gpu_sanitizer_test.sh BUILD_DIR|BUNDLE_DIR
set -euo pipefail
build=${1:?usage: gpu_sanitizer_test.sh BUILD_DIR}
tool=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
if [ ! -x "$tool" ]; then echo "skipped: compute-sanitizer not found"; exit 77; fi
if [ ! -e /dev/nvidia0 ] && ! nvidia-smi -L >/dev/null 2>&1; then
  echo "skipped: no CUDA device visible"; exit 77
fi

# A build tree keeps the tests in tests/, an unpacked bundle (scripts/bundle.sh
# --with-tests) in bin/.
tests_dir=$build/tests
[ -d "$tests_dir" ] || tests_dir=$build/bin

run() {  # run TOOL TEST [gtest filter]
  local check=$1 test=$2 filter=${3:-*}
  echo "== compute-sanitizer --tool $check $test --gtest_filter=$filter"
  local extra=()
  if [ "$check" = memcheck ]; then extra=(--leak-check full); fi
  "$tool" --tool "$check" --error-exitcode 1 --print-limit 20 "${extra[@]}" \
    "$tests_dir/$test" --gtest_filter="$filter" --gtest_brief=1
}
for t in test_gpu_rmsnorm test_gpu_router test_gpu_attention test_gpu_dispatch test_gpu_elementwise \
         test_gpu_loss_optim; do
  run memcheck "$t"
  run racecheck "$t"
  run synccheck "$t"
done
for check in memcheck racecheck synccheck; do  # the small shapes (racecheck is slow)
  run "$check" test_gpu_attention_tc '*Small*:*Rejects*'
done
run memcheck test_gpu_bf16 '*'
run memcheck test_gpu_backend '*OneStep*'
run initcheck test_gpu_backend '*OneStep*'
echo "compute-sanitizer: clean"
