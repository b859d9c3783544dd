#!/usr/bin/env bash
# Validates the CUDA backend on a GPU machine in one command: every `gpu`
# test (kernels, bf16 matmuls, whole model vs the CPU, the programs on CUDA),
# compute-sanitizer, HMMA in the tensor-core attention's SASS (cuobjdump),
# and moe-bench on the tiny and the paper's 1B preset (and --op attention).
# Writes a report (device, results, the 1B numbers) to OUT/report.txt and the
# bench JSON beside it; exits 1 if any check failed.
#   scripts/gpu_check.sh [--dir BUILD_OR_BUNDLE] [--out DIR] [--skip-sanitizer] [--skip-1b]
#     --dir     a build tree (default: build) or an unpacked bundle made with
#               scripts/bundle.sh --with-tests (programs and tests in bin/)
#     --out     where the report goes (default: gpu_check/)
#     --skip-sanitizer, --skip-1b   leave out the slow parts
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)

usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0; }

dir=build out=gpu_check sanitizer=1 big=1
while [ $# -gt 0 ]; do
  case "$1" in
    --dir|--out)
      [ $# -ge 2 ] || { echo "gpu_check.sh: $1 needs a directory" >&2; exit 2; }
      if [ "$1" = --dir ]; then dir=$2; else out=$2; fi
      shift 2 ;;
    --skip-sanitizer) sanitizer=0; shift ;;
    --skip-1b) big=0; shift ;;
    -h|--help) usage ;;
    *) echo "gpu_check.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done

if [ -x "$dir/moe-bench" ]; then bin=$dir; tests=$dir/tests; configs=$here/configs
elif [ -x "$dir/bin/moe-bench" ]; then bin=$dir/bin; tests=$dir/bin; configs=$dir/configs
else echo "gpu_check.sh: no moe-bench in $dir or $dir/bin (build with CUDA, or unpack a bundle)" >&2; exit 2
fi
if ! ls "$tests"/test_gpu_* >/dev/null 2>&1; then
  echo "gpu_check.sh: no test_gpu_* programs in $tests (bundles need --with-tests)" >&2; exit 2
fi
mkdir -p "$out" || exit 2
report=$out/report.txt
: > "$report"
say() { echo "$*" | tee -a "$report"; }
failed=0
check() {  # check NAME COMMAND...: runs it, logs to OUT/NAME.log, records PASS/FAIL
  local name=$1; shift
  local t0=$SECONDS rc=0
  "$@" > "$out/$name.log" 2>&1 || rc=$?
  case $rc in
    0) say "PASS  $name ($((SECONDS - t0)) s)" ;;
    77) say "SKIP  $name: $(tail -1 "$out/$name.log")" ;;
    *) say "FAIL  $name ($((SECONDS - t0)) s, exit $rc): see $out/$name.log"; failed=1 ;;
  esac
}

say "gpu_check $(date -u +%FT%TZ) on $(hostname)"
say "$( (nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null) || echo 'nvidia-smi: not available')"
say "moe-lfb $("$bin/moe-train" --version 2>/dev/null)"
say ""

for t in "$tests"/test_gpu_*; do
  [ -x "$t" ] || continue
  filter=()  # --skip-1b also leaves out the 1B preset's one-step test (a minute of CPU)
  if [ "$big" = 0 ]; then filter=(--gtest_filter=-*OneBillion*); fi
  check "$(basename "$t")" "$t" --gtest_brief=1 "${filter[@]}"
  # A test binary that skipped everything means no device was visible.
  if grep -q "no CUDA device visible" "$out/$(basename "$t").log"; then
    say "FAIL  no CUDA device visible to $(basename "$t")"; failed=1; break
  fi
done
if [ "$sanitizer" = 1 ]; then
  check compute-sanitizer bash "$here/tests/gpu/gpu_sanitizer_test.sh" "$(dirname "$tests")"
fi
# The tensor-core attention kernels hold HMMA instructions (SKIP without cuobjdump).
if [ -x "$tests/test_gpu_attention_tc" ]; then
  check attention_tc_sass bash "$here/tests/scripts/attention_tc_ptx_test.sh" --sass "$tests/test_gpu_attention_tc"
fi

bench() {  # bench NAME CONFIG [ARGS...]
  local name=$1 config=$2; shift 2
  check "$name" "$bin/moe-bench" --config "$config" --json "$out/$name.json" "$@"
  [ -f "$out/$name.log" ] && sed -n '/tokens\/s/,$p' "$out/$name.log" | tee -a "$report"
}
say ""
bench bench_tiny "$configs/bench/tiny.yaml" --backend cuda --set train.precision=bfloat16 --steps 5
if [ "$big" = 1 ]; then
  bench bench_1b "$configs/bench/1b.yaml" --backend cuda --steps 10
  # The tensor-core attention alone at the 1B shape (B 8, S 2048, H 8, hd 128).
  check bench_attention "$bin/moe-bench" --config "$configs/bench/1b.yaml" --op attention \
    --json "$out/bench_attention.json"
  [ -f "$out/bench_attention.log" ] && sed -n '/shape/,$p' "$out/bench_attention.log" | tee -a "$report"
fi

say ""
if [ "$failed" = 0 ]; then say "gpu_check: all passed"; else say "gpu_check: FAILED (logs in $out/)"; fi
exit "$failed"
