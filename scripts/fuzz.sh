#!/usr/bin/env bash
# Builds the fuzz targets with clang's libFuzzer, AddressSanitizer and UBSan
# (build-fuzz/, CPU only) and runs each for SECONDS, starting from its corpus
# fuzz/corpus/<target>/ (docs/reliability.md).
#   scripts/fuzz.sh [SECONDS] [TARGET...]     (default: 60 seconds, every target)
# Targets: config shard safetensors trainer_state corpus. Up to FUZZ_JOBS
# (default: the cores) run at once. New coverage-increasing inputs go to
# build-fuzz/corpus/<target>/ (the repository's corpus is only read); a
# failing input goes to build-fuzz/crashes/<target>/ and makes the script
# exit 1: fix the bug, then add the input to fuzz/corpus/<target>/ so that
# every build's ctest (fuzz_regression_<target>) replays it.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; }
all_targets=(config shard safetensors trainer_state corpus)
seconds=60
if [ $# -gt 0 ]; then
  case "$1" in
    -h|--help) usage; exit 0 ;;
    *[!0-9]*|'') echo "fuzz.sh: SECONDS must be a whole number, got '$1' (see --help)" >&2; exit 2 ;;
    *) seconds=$1; shift ;;
  esac
fi
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all_targets[@]}")
for t in "${targets[@]}"; do
  [ -d "fuzz/corpus/$t" ] || { echo "fuzz.sh: unknown target '$t' (one of: ${all_targets[*]})" >&2; exit 2; }
done
command -v clang++ >/dev/null || { echo "fuzz.sh: clang++ not found: run scripts/setup.sh" >&2; exit 2; }

build=build-fuzz
generator=()
if command -v ninja >/dev/null 2>&1; then generator=(-G Ninja); fi
if [ ! -f "$build/CMakeCache.txt" ]; then
  mkdir -p "$build"
  CC=clang CXX=clang++ cmake -S . -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DMOE_FUZZ=ON -DMOE_CUDA=OFF -DMOE_BUILD_TESTS=OFF > "$build/configure.log" 2>&1 ||
    { cat "$build/configure.log" >&2; echo "fuzz.sh: cmake failed" >&2; exit 1; }
fi
echo "fuzz.sh: building ${targets[*]} in $build/"
cmake --build "$build" -j "$(nproc)" --target $(printf 'fuzz_%s ' "${targets[@]}")

jobs=${FUZZ_JOBS:-$(nproc)}
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:allocator_may_return_null=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
run_one() {
  local t=$1 out="$build/corpus/$1" crashes="$build/crashes/$1"
  mkdir -p "$out" "$crashes"
  local dict=()
  [ -f "fuzz/$t.dict" ] && dict=(-dict="fuzz/$t.dict")
  "$build/fuzz/fuzz_$t" "$out" "fuzz/corpus/$t" "${dict[@]}" -max_total_time="$seconds" \
    -timeout=10 -rss_limit_mb=4096 -max_len=65536 -print_final_stats=1 \
    -artifact_prefix="$crashes/" > "$build/fuzz_$t.log" 2>&1
}
echo "fuzz.sh: ${#targets[@]} target(s), $seconds s each, $jobs at a time; logs in $build/fuzz_<target>.log"
pids=() failed=()
for t in "${targets[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do sleep 1; done
  run_one "$t" & pids+=("$!:$t")
done
for p in "${pids[@]}"; do wait "${p%%:*}" || failed+=("${p#*:}"); done

printf '%-15s %12s %10s %8s %8s  %s\n' target executions exec/s corpus cov result
for t in "${targets[@]}"; do
  log="$build/fuzz_$t.log"
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(sed -n 's/.* cov: \([0-9]*\) .*/\1/p' "$log" | tail -1)
  n=$(find "$build/corpus/$t" "fuzz/corpus/$t" -type f | wc -l)
  result=ok
  for f in "${failed[@]}"; do [ "$f" = "$t" ] && result="FAILED: $(ls "$build/crashes/$t" | head -1) (see $log)"; done
  printf '%-15s %12s %10s %8s %8s  %s\n' "$t" "${runs:-?}" "${rate:-?}" "$n" "${cov:-?}" "$result"
done
[ ${#failed[@]} -eq 0 ] || exit 1
