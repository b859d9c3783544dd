#!/usr/bin/env bash
# Runs a set of configs (x seeds) one after another, or submits them to Slurm
# as a job array. Every run resumes if interrupted and is skipped if complete.
#   scripts/sweep.sh [options] CONFIG...
#   scripts/sweep.sh --seeds 1,2,3 configs/repro/*.yaml
#   scripts/sweep.sh --slurm --ranks 16 configs/paper/1b_loss_free.yaml configs/paper/1b_aux_loss.yaml
#     --seeds S,S,...   train each config once per seed (train.seed); runs go to
#                       <log.out_dir>/seed<S> (default: one run per config, its own seed)
#     --ranks N         ranks per run: mpirun through scripts/launch.sh (default 1: no MPI);
#                       with --slurm, N Slurm tasks (srun), --ranks-per-node per node
#     --set k=v         passed to every run's moe-train (repeatable)
#     --slurm           submit one Slurm job array (scripts/slurm_example.sbatch) and exit
#     --sbatch-args A   extra sbatch options with --slurm, shell-quoted words, e.g.
#                       "--partition=gpu --time=48:00:00" (they override the sweep's own)
#     --gpus-per-node G with --slurm: GPUs (and ranks) per node; default by train.backend
#                       of the first config: cuda or auto 8, cpu 0 (a CPU partition)
#     --ranks-per-node R  with --slurm: default G with GPUs, else all N ranks on one node
#     --cpus-per-rank C with --slurm: CPUs (OpenMP threads) per rank; default: the batch
#                       script's 12 with GPUs, 1 without
#     --dry-run         print what would run, run nothing
# A run is complete when its log.out_dir holds eval.json of its last step
# (train.final_eval). A run with no validation data (or train.final_eval
# false) is finished, without eval, when its checkpoint.dir's newest
# checkpoint is of its last step. Complete and finished runs are skipped, and
# so is a run another moe-train is training (its log.out_dir's .moe.lock is
# held: a sweep launched twice); any other run starts with --resume auto.
# moe-train's output goes to
# <log.out_dir>/train.log; the sweep prints one line per run start and end,
# with the sweep's ETA, and the run's progress every SWEEP_POLL seconds
# (default 60). Exit: 0 when no run failed or stopped early (runs in use
# elsewhere are listed, not counted), 1 when some did (the others still run),
# 2 for bad arguments.
set -uo pipefail

usage() { sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }
die() { echo "sweep.sh: $*" >&2; exit 2; }

repo="$(cd "$(dirname "$0")/.." && pwd)"
MOE_TRAIN=${MOE_TRAIN:-$repo/build/moe-train}
seeds="" ranks=1 slurm=0 dry=0 sbatch_args="" gpus_per_node="" ranks_per_node="" cpus_per_rank=""
sets=() configs=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seeds) seeds="${2:?--seeds needs a list like 1,2,3}"; shift 2 ;;
    --ranks) ranks="${2:?--ranks needs a number}"; shift 2 ;;
    --set) sets+=(--set "${2:?--set needs key=value}"); shift 2 ;;
    --slurm) slurm=1; shift ;;
    --sbatch-args) sbatch_args="${2?--sbatch-args needs a string}"; shift 2 ;;
    --gpus-per-node) gpus_per_node="${2?--gpus-per-node needs a number}"; shift 2 ;;
    --ranks-per-node) ranks_per_node="${2?--ranks-per-node needs a number}"; shift 2 ;;
    --cpus-per-rank) cpus_per_rank="${2?--cpus-per-rank needs a number}"; shift 2 ;;
    --dry-run) dry=1; shift ;;
    -h|--help) usage 0 ;;
    -*) echo "sweep.sh: unknown option '$1'" >&2; usage ;;
    *) configs+=("$1"); shift ;;
  esac
done
[ ${#configs[@]} -gt 0 ] || { echo "sweep.sh: no config given" >&2; usage; }
case "$ranks" in ''|*[!0-9]*|0) die "--ranks: '$ranks' is not a positive number" ;; esac
case "$gpus_per_node" in *[!0-9]*) die "--gpus-per-node: '$gpus_per_node' is not a number" ;; esac
case "$ranks_per_node" in 0|*[!0-9]*) die "--ranks-per-node: '$ranks_per_node' is not a positive number" ;; esac
case "$cpus_per_rank" in 0|*[!0-9]*) die "--cpus-per-rank: '$cpus_per_rank' is not a positive number" ;; esac
# sbatch's extra options as shell words (quotes respected, nothing executed).
more=()
if [ -n "$sbatch_args" ]; then
  xargs printf '%s\0' <<< "$sbatch_args" > /dev/null 2>&1 ||
    die "--sbatch-args: cannot split '$sbatch_args' into words (unbalanced quote?)"
  mapfile -d '' more < <(xargs printf '%s\0' <<< "$sbatch_args")
fi
seed_list=()
if [ -n "$seeds" ]; then
  IFS=',' read -r -a seed_list <<< "$seeds"
  for s in "${seed_list[@]}"; do
    case "$s" in ''|*[!0-9]*) die "--seeds: '$s' is not a non-negative integer (expected e.g. 1,2,3)" ;; esac
  done
fi
[ -x "$MOE_TRAIN" ] || die "$MOE_TRAIN: not built (run scripts/build.sh, or set MOE_TRAIN)"
for c in "${configs[@]}"; do [ -f "$c" ] || die "$c: no such config file"; done

# The value of section.key in a resolved config (moe-train --print-config).
yaml_get() {
  awk -v sec="$2" -v key="$3" '
    /^[^ ]/ { cur = $0; sub(/:.*/, "", cur) }
    cur == sec && $1 == key ":" { v = $0; sub(/^[^:]*: */, "", v); gsub(/^"|"$/, "", v); print v; exit }
  ' <<< "$1"
}

# The step of a run's eval.json, or nothing.
eval_step() {
  [ -f "$1/eval.json" ] && grep -o '"step": *[0-9]*' "$1/eval.json" | grep -o '[0-9]*$'
}

# Whether run i is complete: eval.json of its last step (or later).
complete() {
  local step
  step=$(eval_step "${run_dir[$1]}")
  [ -n "$step" ] && [ "$step" -ge "${run_steps[$1]}" ]
}

# The step of the newest checkpoint under a checkpoint.dir (its `latest`, else
# the highest step_N directory, as moe-train --resume auto finds it), or nothing.
checkpoint_step() {
  local name="" d best=""
  [ -n "$1" ] && [ -d "$1" ] || return 0
  [ -f "$1/latest" ] && read -r name < "$1/latest"
  if [[ "$name" =~ ^step_[0-9]+$ ]] && [ -d "$1/$name" ]; then
    echo $((10#${name#step_}))
    return 0
  fi
  for d in "$1"/step_*; do
    d=${d##*/}
    [[ "$d" =~ ^step_[0-9]+$ ]] && [ -d "$1/$d" ] || continue
    d=$((10#${d#step_}))
    [ -z "$best" ] || [ "$d" -gt "$best" ] && best=$d
  done
  [ -z "$best" ] || echo "$best"
}

# Why run i writes no eval.json, or nothing when it writes one: no validation
# data (no data.val_path and no val_*.bin in a data.path directory, moe-train's
# rule) or train.final_eval false.
no_eval_reason() {
  [ "${run_final_eval[$1]}" = true ] || { echo "train.final_eval false"; return; }
  [ "${run_has_val[$1]}" -eq 1 ] || echo "no validation split"
}

# Whether run i is finished without eval: a run that writes no eval.json whose
# newest checkpoint is of its last step. A run with validation data is
# finished only with its eval.json (complete).
finished_no_eval() {
  local step
  [ -n "$(no_eval_reason "$1")" ] || return 1
  step=$(checkpoint_step "${run_ckpt[$1]}")
  [ -n "$step" ] && [ "$step" -ge "${run_steps[$1]}" ]
}

# Whether run i needs no training: complete, or finished without eval.
finished() { complete "$1" || finished_no_eval "$1"; }

# How a finished run i ended, for the sweep's lines.
finished_what() {
  if complete "$1"; then echo "complete (eval.json of step $(eval_step "${run_dir[$1]}"))"
  else echo "finished (no eval: $(no_eval_reason "$1"))"; fi
}

# One number of a run's eval.json, printed with an awk format.
eval_value() {
  grep -o "\"$2\": *[0-9.eE+-]*" "$1/eval.json" | head -n 1 | sed 's/.*: *//' |
    awk -v f="$3" '{ printf f, $1 }'
}

fmt_duration() {
  local s=$1
  if [ "$s" -ge 3600 ]; then printf '%dh%02dm' $((s / 3600)) $((s % 3600 / 60))
  elif [ "$s" -ge 60 ]; then printf '%dm%02ds' $((s / 60)) $((s % 60))
  else printf '%ds' "$s"; fi
}

# Plan every run: its config, its extra --set arguments, its directory, steps,
# checkpoint.dir, train.final_eval and whether it has validation data.
run_cfg=() run_args=() run_dir=() run_steps=() run_ckpt=() run_final_eval=() run_has_val=()
run_backend=()
for c in "${configs[@]}"; do
  for s in "${seed_list[@]:-}"; do
    extra=("${sets[@]}")
    resolved=$("$MOE_TRAIN" --config "$c" "${extra[@]}" --print-config --world-size "$ranks" 2>&1) ||
      die "$c: $(tail -n 1 <<< "$resolved")"
    out=$(yaml_get "$resolved" log out_dir)
    if [ -n "$s" ]; then
      ckpt=$(yaml_get "$resolved" checkpoint dir)
      if [ -z "$ckpt" ] || [ "$ckpt" = "$out/checkpoints" ]; then
        [ -z "$ckpt" ] || ckpt="$out/seed$s/checkpoints"
      else
        ckpt="$ckpt/seed$s"
      fi
      out="$out/seed$s"
      extra+=(--set "train.seed=$s" --set "log.out_dir=$out" --set "checkpoint.dir=$ckpt")
      resolved=$("$MOE_TRAIN" --config "$c" "${extra[@]}" --print-config --world-size "$ranks" 2>&1) ||
        die "$c: $(tail -n 1 <<< "$resolved")"
    fi
    for ((i = 0; i < ${#run_dir[@]}; i++)); do
      [ "${run_dir[$i]}" != "$out" ] ||
        die "$c${s:+ seed $s} and ${run_cfg[$i]} would both write to $out (set log.out_dir apart)"
    done
    run_cfg+=("$c")
    # Shell-quoted for eval (here and in the Slurm list); no arguments is the
    # empty string: printf '%q' of nothing would be '' (an empty argument).
    if [ ${#extra[@]} -gt 0 ]; then run_args+=("$(printf '%q ' "${extra[@]}")"); else run_args+=(""); fi
    run_dir+=("$out")
    run_steps+=("$(yaml_get "$resolved" train steps)")
    run_ckpt+=("$(yaml_get "$resolved" checkpoint dir)")
    run_final_eval+=("$(yaml_get "$resolved" train final_eval)")
    run_backend+=("$(yaml_get "$resolved" train backend)")
    has_val=0 data_path=$(yaml_get "$resolved" data path)
    if [ -n "$(yaml_get "$resolved" data val_path)" ]; then has_val=1
    elif [ "$(yaml_get "$resolved" data source)" = shards ] && [ -d "$data_path" ] &&
         compgen -G "$data_path/val_?*.bin" > /dev/null; then has_val=1
    fi
    run_has_val+=("$has_val")
  done
done
n=${#run_cfg[@]}

if [ "$slurm" -eq 1 ]; then
  # Resources per task from the configs' train.backend (or the options):
  # a GPU per rank for cuda and auto, none for cpu. Every value is passed, so
  # the batch script's #SBATCH defaults (8 GPUs per node) never apply half.
  if [ -z "$gpus_per_node" ]; then
    backend=${run_backend[0]}
    for b in "${run_backend[@]}"; do
      [ "$b" = "$backend" ] ||
        die "the configs mix train.backend $backend and $b: one job array asks for one kind of node (--gpus-per-node picks)"
    done
    if [ "$backend" = cpu ]; then gpus_per_node=0; else gpus_per_node=8; fi
  fi
  if [ -z "$ranks_per_node" ]; then
    if [ "$gpus_per_node" -gt 0 ]; then ranks_per_node=$gpus_per_node; else ranks_per_node=$ranks; fi
  fi
  [ "$ranks_per_node" -le "$ranks" ] || ranks_per_node=$ranks
  [ "$gpus_per_node" -eq 0 ] || [ "$ranks_per_node" -le "$gpus_per_node" ] ||
    die "--ranks-per-node $ranks_per_node is more than --gpus-per-node $gpus_per_node (one GPU per rank)"
  [ $((ranks % ranks_per_node)) -eq 0 ] ||
    die "--ranks $ranks is not a multiple of $ranks_per_node ranks per node"
  nodes=$((ranks / ranks_per_node))
  [ -n "$cpus_per_rank" ] || [ "$gpus_per_node" -gt 0 ] || cpus_per_rank=1
  # One array task per incomplete run; the batch script reads its line of the
  # list (CONFIG then moe-train arguments) and resumes it with srun.
  lines="" todo=0
  for ((i = 0; i < n; i++)); do
    if finished "$i"; then
      echo "sweep.sh: [$((i + 1))/$n] ${run_dir[$i]}: $(finished_what "$i"), not submitted"
      continue
    fi
    lines+="$(printf '%q %s' "${run_cfg[$i]}" "${run_args[$i]}")"$'\n'
    todo=$((todo + 1))
  done
  [ "$todo" -gt 0 ] || { echo "sweep.sh: every run is finished, nothing to submit"; exit 0; }
  # A unique name: two sweeps submitted in one second keep their own lists.
  list="$PWD/runs/sweep-$(date +%Y%m%d-%H%M%S)-XXXXXX.list"
  if [ "$dry" -eq 0 ]; then
    mkdir -p runs && list=$(mktemp --suffix=.list "${list%.list}") &&
      printf '%s' "$lines" > "$list" || die "cannot write $list"
  else
    printf '%s' "$lines"
  fi
  # SWEEP_LIST and MOE_TRAIN reach the job through the environment
  # (--export=ALL): inside --export=A=x,B=y a comma in a path would split it.
  cmd=(env "SWEEP_LIST=$list" "MOE_TRAIN=$MOE_TRAIN"
       sbatch --array="0-$((todo - 1))" --job-name=moe-sweep --nodes="$nodes"
       --ntasks-per-node="$ranks_per_node" --gpus-per-node="$gpus_per_node"
       ${cpus_per_rank:+--cpus-per-task="$cpus_per_rank"} --export=ALL)
  cmd+=("${more[@]}")
  cmd+=("$repo/scripts/slurm_example.sbatch")
  if [ "$dry" -eq 1 ]; then
    echo "sweep.sh: dry run: would list $todo run(s) in $list and submit: $(printf '%q ' "${cmd[@]}")"
    exit 0
  fi
  echo "sweep.sh: $todo run(s) listed in $list; $(printf '%q ' "${cmd[@]}")"
  exec "${cmd[@]}"
fi

poll=${SWEEP_POLL:-60}
t_start=$(date +%s) ran=0 ran_seconds=0
failed=() unfinished=() elsewhere=() would_start=0
for ((i = 0; i < n; i++)); do
  tag="[$((i + 1))/$n] ${run_dir[$i]}"
  if finished "$i"; then
    echo "sweep.sh: $tag: $(finished_what "$i"), skipped"
    continue
  fi
  eval "extra=(${run_args[$i]})"
  cmd=("$MOE_TRAIN" --config "${run_cfg[$i]}" --resume auto "${extra[@]}")
  [ "$ranks" -gt 1 ] && cmd=("$repo/scripts/launch.sh" -n "$ranks" -- "${cmd[@]}")
  if [ "$dry" -eq 1 ]; then
    echo "sweep.sh: $tag: would start ($(printf '%q ' "${cmd[@]}"))"
    would_start=$((would_start + 1))
    continue
  fi
  mkdir -p "${run_dir[$i]}"
  log="${run_dir[$i]}/train.log"
  # Another moe-train (a sweep launched twice) holds the run's lock
  # (docs/reliability.md): leave the run, and its train.log, to it.
  if ! flock -n "${run_dir[$i]}/.moe.lock" true 2>/dev/null; then
    elsewhere+=("${run_dir[$i]}")
    echo "sweep.sh: $tag: in use by another moe-train (its .moe.lock is held), skipped"
    continue
  fi
  echo "sweep.sh: $tag: start ($(printf '%q ' "${cmd[@]}"))"
  t0=$(date +%s)
  "${cmd[@]}" >> "$log" 2>&1 &
  pid=$!
  last=""
  while kill -0 "$pid" 2>/dev/null; do
    for ((w = 0; w < poll; w++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 1
    done
    kill -0 "$pid" 2>/dev/null || break
    line=$(grep -o 'step *[0-9]*/[0-9]* .*' "$log" | tail -n 1)
    if [ -n "$line" ] && [ "$line" != "$last" ]; then echo "sweep.sh: $tag: $line"; last=$line; fi
  done
  wait "$pid"
  rc=$?
  dt=$(( $(date +%s) - t0 ))
  ran=$((ran + 1)) ran_seconds=$((ran_seconds + dt))
  left=0
  for ((j = i + 1; j < n; j++)); do
    finished "$j" || left=$((left + 1))
  done
  eta=$(fmt_duration $(( ran_seconds / ran * left )))
  elapsed=$(fmt_duration $(( $(date +%s) - t_start )))
  if [ "$rc" -eq 2 ] && tail -n 1 "$log" | grep -q "is in use by another moe-train"; then
    elsewhere+=("${run_dir[$i]}")  # taken between the check above and the start
    echo "sweep.sh: $tag: in use by another moe-train, skipped | sweep $elapsed, ETA $eta"
  elif [ "$rc" -ne 0 ]; then
    failed+=("${run_dir[$i]}")
    echo "sweep.sh: $tag: FAILED (exit $rc) after $(fmt_duration "$dt"): $(tail -n 1 "$log"); log $log | sweep $elapsed, ETA $eta"
  elif complete "$i"; then
    res=$(eval_value "${run_dir[$i]}" perplexity "val ppl %.3f"), res+=$(eval_value "${run_dir[$i]}" maxvio_global " MaxVio_global %.4f")
    echo "sweep.sh: $tag: done in $(fmt_duration "$dt") ($res) | sweep $elapsed, ETA $eta"
  elif finished_no_eval "$i"; then
    echo "sweep.sh: $tag: $(finished_what "$i") in $(fmt_duration "$dt") | sweep $elapsed, ETA $eta"
  else
    # Exit 0 short of the last step or of eval.json: a stop signal ended it.
    unfinished+=("${run_dir[$i]}")
    echo "sweep.sh: $tag: ended after $(fmt_duration "$dt") before its last step or eval.json ($(tail -n 1 "$log")); the next sweep resumes it | sweep $elapsed, ETA $eta"
  fi
done
if [ "$dry" -eq 1 ]; then
  echo "sweep.sh: dry run: $would_start run(s) would start, $((n - would_start)) finished; nothing was run"
  exit 0
fi
with_eval=0 without_eval=0
for ((i = 0; i < n; i++)); do
  if complete "$i"; then with_eval=$((with_eval + 1))
  elif finished_no_eval "$i"; then without_eval=$((without_eval + 1)); fi
done
if [ "$with_eval" -eq "$n" ]; then
  echo "sweep.sh: all $n run(s) complete"
else
  summary="$with_eval finished with eval.json, $without_eval finished without eval"
  [ ${#failed[@]} -eq 0 ] || summary+=", ${#failed[@]} failed: ${failed[*]}"
  [ ${#unfinished[@]} -eq 0 ] || summary+=", ${#unfinished[@]} stopped early: ${unfinished[*]}"
  [ ${#elsewhere[@]} -eq 0 ] || summary+=", ${#elsewhere[@]} in use by another moe-train: ${elsewhere[*]}"
  echo "sweep.sh: $n run(s): $summary"
fi
[ ${#failed[@]} -eq 0 ] && [ ${#unfinished[@]} -eq 0 ] || exit 1
