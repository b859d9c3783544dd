#!/usr/bin/env bash
# Starts a multi-rank moe-lfb job with mpirun: one process per GPU (or CPU rank).
#   scripts/launch.sh [-n NP] [-H HOSTS] [--dry-run] -- PROGRAM [ARGS...]
#   scripts/launch.sh -n 4 -- build/moe-train --config configs/tiny.yaml --set parallel.ep_size=2
#     -n NP       number of ranks; default: the GPUs nvidia-smi lists, else 1
#     -H HOSTS    mpirun host list, e.g. node1:8,node2:8 (default: this machine)
#     --dry-run   print the mpirun command, do not run it
# Environment: MPIRUN (default mpirun), MPIRUN_ARGS (extra mpirun options, e.g.
# "--bind-to numa"), OMP_NUM_THREADS (default on one host: cores / NP).
# The full command is printed before it runs. A bare PROGRAM name that is not
# on PATH is looked up in build/ (so "-- moe-train ..." works from the repo).
set -euo pipefail

usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }

np="" hosts="" dry=0
while [ $# -gt 0 ]; do
  case "$1" in
    -n|--np) np="${2:?-n needs a number}"; shift 2 ;;
    -H|--hosts) hosts="${2:?-H needs a host list}"; shift 2 ;;
    --dry-run) dry=1; shift ;;
    -h|--help) usage 0 ;;
    --) shift; break ;;
    *) echo "launch.sh: unknown option '$1' (the program goes after --)" >&2; usage ;;
  esac
done
[ $# -gt 0 ] || { echo "launch.sh: no program given after --" >&2; usage; }

if [ -z "$np" ]; then
  np=$( (nvidia-smi -L 2>/dev/null || true) | grep -c '^GPU' || true)
  [ "$np" -gt 0 ] 2>/dev/null || np=1
fi
case "$np" in ''|*[!0-9]*|0) echo "launch.sh: -n: '$np' is not a positive number" >&2; exit 2 ;; esac

program="$1"; shift
repo="$(cd "$(dirname "$0")/.." && pwd)"
if [[ "$program" != */* ]] && ! command -v "$program" >/dev/null 2>&1 &&
   [ -x "$repo/build/$program" ]; then
  program="$repo/build/$program"
fi

cmd=("${MPIRUN:-mpirun}" -np "$np")
[ "$(id -u)" -eq 0 ] && cmd+=(--allow-run-as-root)
if [ -n "$hosts" ]; then
  cmd+=(-H "$hosts")
else
  cores=$(nproc)
  # A CPU job may want more ranks than cores; OpenMPI refuses that by default.
  [ "$np" -gt "$cores" ] && cmd+=(--oversubscribe)
  # Ranks share the cores: give each its share of OpenMP threads.
  if [ -z "${OMP_NUM_THREADS:-}" ]; then
    per=$((cores / np)); [ "$per" -ge 1 ] || per=1
    export OMP_NUM_THREADS=$per
  fi
fi
# No binding: each rank runs an OpenMP team (CPU) or feeds one GPU; pass
# MPIRUN_ARGS="--map-by numa --bind-to numa" to pin ranks to NUMA domains.
cmd+=(--bind-to none)
# Idle OpenMP threads must sleep, not spin, while their rank waits in MPI;
# OpenBLAS's workers sleep right after a GEMM instead of spinning ~0.1 s.
# (The programs would set both themselves and re-execute.)
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
export OPENBLAS_THREAD_TIMEOUT="${OPENBLAS_THREAD_TIMEOUT:-4}"
cmd+=(-x OMP_WAIT_POLICY -x OPENBLAS_THREAD_TIMEOUT)
for v in OMP_NUM_THREADS CUDA_VISIBLE_DEVICES LD_LIBRARY_PATH; do
  [ -n "${!v+x}" ] && cmd+=(-x "$v")
done
while IFS='=' read -r v _; do cmd+=(-x "$v"); done < <(env | grep -E '^(NCCL|MOE)_[A-Za-z0-9_]*=' || true)
if [ -n "${MPIRUN_ARGS:-}" ]; then
  read -r -a extra <<< "$MPIRUN_ARGS"
  cmd+=("${extra[@]}")
fi
cmd+=("$program" "$@")

# Printed as a command that can be pasted back (the -x variables first).
echo "launch.sh: OMP_WAIT_POLICY=$OMP_WAIT_POLICY OPENBLAS_THREAD_TIMEOUT=$OPENBLAS_THREAD_TIMEOUT${OMP_NUM_THREADS:+ OMP_NUM_THREADS=$OMP_NUM_THREADS} $(printf '%q ' "${cmd[@]}")" >&2
[ "$dry" -eq 1 ] && exit 0
exec "${cmd[@]}"
