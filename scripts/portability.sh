#!/usr/bin/env bash
# Runs the cpu and mpi ctest labels of an existing build under each OpenBLAS
# kernel (OPENBLAS_CORETYPE) and thread count, and prints one row per setting.
# Tests must hold on whatever x86 machine CI is given: a result that moves
# with the BLAS kernel or the thread count is a wrong tolerance or a
# comparison that is not bit-exact by construction (docs/design.md section 2,
# "Reproducibility").
#
#   scripts/portability.sh [--build DIR] [--labels 'cpu|mpi'] [--coretypes 'Haswell SkylakeX Zen']
#                          [--threads '1 2'] [--output FILE]
#
# Each setting is `OPENBLAS_CORETYPE=C OMP_NUM_THREADS=N ctest -L LABELS`
# (the mpi tests pin one thread per rank themselves); the default setting
# (nothing forced) runs first. A kernel the CPU cannot execute (SkylakeX
# without AVX-512, Haswell or Zen without AVX2 and FMA) is reported as
# skipped, since OpenBLAS does not check a forced kernel against the CPU.
# The table also goes to FILE (default BUILD/portability.md). Exit 1 when any
# setting had a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

build=build labels='cpu|mpi' coretypes='Haswell SkylakeX Zen' threads='1 2' output=''
die() { echo "portability.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --build|--labels|--coretypes|--threads|--output)
      [ $# -ge 2 ] || die "$1 needs a value (see --help)"
      case "$1" in
        --build) build=$2 ;; --labels) labels=$2 ;; --coretypes) coretypes=$2 ;;
        --threads) threads=$2 ;; --output) output=$2 ;;
      esac
      shift 2 ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
# OpenBLAS's x86 kernel names (an unknown one silently falls back to the default).
known=" Prescott Core2 Penryn Dunnington Nehalem Sandybridge Haswell SkylakeX Cooperlake"
known+=" SapphireRapids Atom Opteron Barcelona Bobcat Bulldozer Piledriver Steamroller Excavator Zen "
for ct in $coretypes; do
  [[ "$known" == *" $ct "* ]] || die "--coretypes: '$ct' is not an OpenBLAS x86 kernel name"
done
for nt in $threads; do
  [[ "$nt" =~ ^[1-9][0-9]*$ ]] || die "--threads: '$nt' is not a positive thread count"
done
if [ ! -f "$build/CTestTestfile.cmake" ]; then
  echo "portability.sh: $build is not a configured build directory (run scripts/build.sh first)" >&2
  exit 2
fi
output=${output:-$build/portability.md}
logdir=$build/portability
mkdir -p "$logdir"

flags=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || true)
has() { for f in "$@"; do [[ " $flags " == *" $f "* ]] || return 1; done; }
runnable() {
  case "$1" in
    '') return 0 ;;
    SkylakeX|Cooperlake|SapphireRapids) has avx512f avx512bw avx512vl avx512dq ;;
    Haswell|Zen) has avx2 fma ;;
    *) return 0 ;;
  esac
}

cpu=$(grep -m1 '^model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//' || true)
blas=$(dpkg-query -W -f='${Version}' libopenblas0-pthread 2>/dev/null || echo unknown)
rows=()
failed_any=0
run_setting() {  # coretype ('' = default) threads ('' = default)
  local ct=$1 nt=$2 name log start secs summary failures
  name="${ct:-default}${nt:+-t$nt}"
  log=$logdir/$name.log
  if ! runnable "$ct"; then
    rows+=("| ${ct:-(default)} | ${nt:-(default)} | skipped: this CPU cannot run the $ct kernel | | |")
    echo "portability: $name skipped (the CPU lacks the $ct kernel's instructions)"
    return
  fi
  echo "portability: $name: ctest -L '$labels' ..."
  start=$(date +%s)
  local env=()
  [ -n "$ct" ] && env+=("OPENBLAS_CORETYPE=$ct")
  [ -n "$nt" ] && env+=("OMP_NUM_THREADS=$nt")
  # The default setting runs with neither variable, whatever the caller set.
  if env -u OPENBLAS_CORETYPE -u OMP_NUM_THREADS "${env[@]}" \
       ctest --test-dir "$build" -L "$labels" --output-on-failure -j "$(nproc)" >"$log" 2>&1; then :
  else failed_any=1; fi
  secs=$(( $(date +%s) - start ))
  summary=$(grep -E 'tests passed, [0-9]+ tests? failed out of' "$log" | tail -1 || true)
  failures=$(sed -n '/The following tests FAILED:/,$p' "$log" | grep -E '^\s+[0-9]+ - ' \
               | sed -E 's/^\s+[0-9]+ - //; s/ \(.*//' | paste -sd, - || true)
  rows+=("| ${ct:-(default)} | ${nt:-(default)} | ${summary:-no ctest summary, see $log} | ${failures:-none} | ${secs} s |")
  echo "portability: $name: ${summary:-see $log} (${secs} s)${failures:+; failed: $failures}"
}

run_setting '' ''
for ct in $coretypes; do
  for nt in $threads; do run_setting "$ct" "$nt"; done
done

{
  echo "Portability of ctest -L '$labels' in $build ($(date -u +%Y-%m-%d), $(nproc) cores, ${cpu:-unknown CPU}, OpenBLAS $blas)"
  echo
  echo "| OPENBLAS_CORETYPE | OMP_NUM_THREADS | result | failed tests | time |"
  echo "|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
} | tee "$output"
echo "portability: logs in $logdir/, table in $output"
exit $failed_any
