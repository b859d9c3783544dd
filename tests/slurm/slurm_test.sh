#!/usr/bin/env bash
# scripts/sweep.sh --slurm and scripts/slurm_example.sbatch against a real
# Slurm: a one-node cluster of this machine (tests/slurm/local_cluster.sh),
# started for the case and stopped after it. Cases (ctest label slurm):
#   array     the sweep's job array end to end: a run with no --set and no
#             seeds (every task failed on an empty argument before the fix),
#             seeds, a --set value with a comma, a config name with a space,
#             in a directory whose path has a space and a comma; a second
#             submission skips the finished runs, and one whose run is gone
#             resubmits only that one
#   preempt   2 ranks, expert parallel: an uninterrupted reference run, then
#             (1) scontrol requeue mid-run, (2) the time-limit signal
#             (scancel --batch --signal=USR1, what --signal=B:USR1@120 sends;
#             the batch script checkpoints and requeues itself), (3) rank 1
#             killed (SIGKILL): the job fails naming task 1, the sweep
#             resubmits it and it resumes from its last checkpoint. Each ends
#             with the reference's losses (metrics.jsonl less its timings)
#             and final checkpoint, byte for byte (a requeued job waits
#             10 s, the cluster's cred_expire, before Slurm starts it again)
#   lock      two array tasks given the same run directory: one trains, the
#             other is refused by the run-directory lock (exit 2)
#   tests/slurm/slurm_test.sh BUILD_DIR CASE
# Exit 77 (skip) only when the cluster cannot start (local_cluster.sh says why).
set -euo pipefail
build=$(cd "${1:?usage: slurm_test.sh BUILD_DIR CASE}" && pwd)
case_name=${2:?usage: slurm_test.sh BUILD_DIR CASE}
repo=$(cd "$(dirname "$0")/../.." && pwd)
cluster="$repo/tests/slurm/local_cluster.sh"
tmp=$(mktemp -d)
cleanup() {
  local rc=$?
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 77 ] && [ -d "$tmp/cluster/log" ]; then
    echo "== the cluster's logs, last lines"
    tail -n 15 "$tmp/cluster/log/slurmctld.log" "$tmp/cluster/log/slurmd.log" "$tmp/cluster/log/jobcomp.log"
  fi
  "$cluster" stop "$tmp/cluster" || true
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
expect() { grep -q -- "$2" "$1" || { cat "$1"; fail "$1 lacks '$2'"; }; }

rc=0
env_line=$("$cluster" start "$tmp/cluster") || rc=$?
[ "$rc" -eq 0 ] || { [ "$rc" -eq 77 ] && exit 77; fail "local_cluster.sh start: exit $rc"; }
eval "$env_line"
export MOE_TRAIN="$build/moe-train" OMP_WAIT_POLICY=PASSIVE
jobcomp="$tmp/cluster/log/jobcomp.log"

# A directory whose path needs quoting: a space and a comma.
work="$tmp/a b,c"
mkdir -p "$work"
cd "$work"

# The array job id in the sweep's output ("Submitted batch job N").
job_of() { grep -o 'Submitted batch job [0-9]*' "$1" | grep -o '[0-9]*$'; }

# Waits until job A (every task) has left the queue (a requeued job stays in
# it, pending, until it runs again). The deadline only keeps a hang from
# blocking the suite.
wait_gone() {
  local i
  for ((i = 0; i < 1800; i++)); do
    [ -z "$(squeue -h -r -j "$1" -o %i 2>/dev/null)" ] && return 0
    sleep 0.1
  done
  squeue -r -j "$1" || true
  fail "job $1 still queued after 180 s"
}

# The final state of task T of array job A, from the job completion log.
state_of() {
  grep -E "(JobId=$1 .*ArrayTaskId=$2 |ArrayJobId=$1 ArrayTaskId=$2 )" "$jobcomp" | tail -n 1 |
    grep -o 'JobState=[A-Z_]*' | cut -d= -f2
}

# Waits until FILE has at least N lines (a run's metrics.jsonl: N steps).
wait_lines() {
  local i
  for ((i = 0; i < 1800; i++)); do
    [ -f "$1" ] && [ "$(wc -l < "$1")" -ge "$2" ] && return 0
    sleep 0.1
  done
  fail "$1: not $2 lines after 180 s"
}

# metrics.jsonl without its wall-clock fields, one line per step: a later
# line replaces an earlier one (a run resumed after a crash logs the steps
# after its last checkpoint again), as scripts/report.py reads it.
losses() {
  python3 -c '
import json, sys
rows = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    for k in ("elapsed_s", "step_s", "tokens_per_s", "mfu"):
        r.pop(k, None)
    rows[r["step"]] = json.dumps(r, sort_keys=True)
for s in sorted(rows):
    print(rows[s])' "$1"
}

# Run directory $1 is the reference $2's run: the same per-step metrics (losses,
# gradient norms, balance) and the same final checkpoint, bit for bit.
same_run() {
  local f
  losses "$1/metrics.jsonl" > "$tmp/got.txt"
  losses "$2/metrics.jsonl" > "$tmp/want.txt"
  cmp -s "$tmp/got.txt" "$tmp/want.txt" ||
    { diff "$tmp/got.txt" "$tmp/want.txt" | head -n 6; fail "$1: metrics differ from $2's"; }
  for f in model.safetensors optimizer.safetensors; do
    cmp "$1/checkpoints/step_$3/$f" "$2/checkpoints/step_$3/$f" ||
      fail "$1: final checkpoint's $f differs from $2's"
  done
}

sweep() { "$repo/scripts/sweep.sh" "$@"; }

case "$case_name" in
array)
  cat > "tiny run.yaml" <<YAML
base: $repo/configs/tiny.yaml
train: {steps: 8}
log: {interval: 4}
YAML
  # No --set, no seeds: the list line is just the config.
  sweep --slurm --ranks 2 --sbatch-args "--output=slurm-%A_%a.out" "tiny run.yaml" > plain.log 2>&1 ||
    { cat plain.log; fail "sweep --slurm without --set"; }
  expect plain.log "Submitted batch job"
  a=$(job_of plain.log)
  wait_gone "$a"
  [ "$(state_of "$a" 0)" = COMPLETED ] || { cat slurm-"$a"_0.out; fail "array task ${a}_0 (no --set): $(state_of "$a" 0)"; }
  [ -d "runs/tiny run/checkpoints/step_00000008" ] || { cat slurm-"$a"_0.out; fail "runs/tiny run: no final checkpoint"; }
  [ "$(wc -l < "runs/tiny run/metrics.jsonl")" -eq 8 ] || fail "runs/tiny run: not 8 steps"
  expect "slurm-${a}_0.out" "world 2 ranks"

  # Seeds and a --set value with a comma (a run directory "x,y").
  sweep --slurm --ranks 2 --seeds 1,2 --set "log.out_dir=runs/x,y" \
    --sbatch-args "--output=slurm-%A_%a.out --job-name='moe sweep'" "tiny run.yaml" > seeds.log 2>&1 ||
    { cat seeds.log; fail "sweep --slurm --seeds"; }
  a=$(job_of seeds.log)
  wait_gone "$a"
  for t in 0 1; do
    s=$((t + 1))
    [ "$(state_of "$a" "$t")" = COMPLETED ] || { cat "slurm-${a}_$t.out"; fail "array task ${a}_$t: $(state_of "$a" "$t")"; }
    d="runs/x,y/seed$s"
    [ -d "$d/checkpoints/step_00000008" ] || { cat "slurm-${a}_$t.out"; fail "$d: no final checkpoint"; }
    expect "$d/config.yaml" "seed: $s"
  done
  grep -q "Name=moe sweep " "$jobcomp" || fail "--sbatch-args: the quoted job name did not reach sbatch"
  cmp -s "runs/x,y/seed1/metrics.jsonl" "runs/x,y/seed2/metrics.jsonl" && fail "seeds 1 and 2 gave one run"

  # The batch script alone, on this CPU node: the command docs/parallel.md gives
  # for a CPU partition (its #SBATCH lines ask for GPUs; these override them).
  sed 's/steps: 8/steps: 4/' "tiny run.yaml" > direct.yaml
  CONFIG=direct.yaml sbatch --nodes=1 --ntasks-per-node=2 --gpus-per-node=0 --cpus-per-task=1 \
    --output=direct.out "$repo/scripts/slurm_example.sbatch" > direct.submit || fail "sbatch of the batch script"
  a=$(job_of direct.submit)
  wait_gone "$a"
  grep "JobId=$a " "$jobcomp" | grep -q "JobState=COMPLETED" || { cat direct.out; fail "the batch script alone failed"; }
  [ -d runs/direct/checkpoints/step_00000004 ] || { cat direct.out; fail "runs/direct: no final checkpoint"; }
  expect direct.out "world 2 ranks"
  grep -q "lacks support for cpu binding" direct.out && fail "srun warned about CPU binding"

  # Submitted again: every run is finished, nothing goes to Slurm.
  jobs_before=$(wc -l < "$jobcomp")
  sweep --slurm --ranks 2 --seeds 1,2 --set "log.out_dir=runs/x,y" "tiny run.yaml" > again.log 2>&1 ||
    { cat again.log; fail "second submission"; }
  [ "$(grep -c "finished (no eval: no validation split), not submitted" again.log)" -eq 2 ] ||
    { cat again.log; fail "finished runs not skipped"; }
  expect again.log "every run is finished, nothing to submit"
  grep -q "Submitted batch job" again.log && fail "a finished sweep submitted a job"
  # One run gone: only it is submitted (a one-task array), and it trains again.
  rm -r "runs/x,y/seed2"
  sweep --slurm --ranks 2 --seeds 1,2 --set "log.out_dir=runs/x,y" \
    --sbatch-args "--output=slurm-%A_%a.out" "tiny run.yaml" > third.log 2>&1 || { cat third.log; fail "third submission"; }
  expect third.log "runs/x,y/seed1: finished (no eval: no validation split), not submitted"
  expect third.log "sbatch --array=0-0 "
  a=$(job_of third.log)
  wait_gone "$a"
  [ "$(state_of "$a" 0)" = COMPLETED ] || fail "resubmitted task: $(state_of "$a" 0)"
  [ -d "runs/x,y/seed2/checkpoints/step_00000008" ] || fail "runs/x,y/seed2 not trained again"
  [ "$(wc -l < "$jobcomp")" -eq $((jobs_before + 1)) ] || fail "not exactly one job ran for the one missing run"
  ;;

preempt)
  steps=200
  cat > ep.yaml <<YAML
base: $repo/configs/tiny.yaml
train: {steps: $steps}
parallel: {ep_size: 2}
checkpoint: {interval: 20}
log: {interval: 10}
YAML
  last=$(printf '%08d' "$steps")
  submit() {  # OUT_DIR: the sweep of ep.yaml into OUT_DIR; prints the array job id
    sweep --slurm --ranks 2 --set "log.out_dir=$1" --sbatch-args "--output=$1.out" ep.yaml > "$1.submit" 2>&1 ||
      { cat "$1.submit"; fail "sweep --slurm into $1"; }
    job_of "$1.submit"
  }

  a=$(submit ref)
  wait_gone "$a"
  [ "$(state_of "$a" 0)" = COMPLETED ] || { cat ref.out; fail "the reference run: $(state_of "$a" 0)"; }
  [ -d "ref/checkpoints/step_$last" ] || { cat ref.out; fail "the reference run has no final checkpoint"; }

  # (1) Preemption: Slurm signals every rank (SIGTERM), they checkpoint, the
  # job goes back to the queue and --resume auto continues.
  a=$(submit requeue)
  wait_lines requeue/metrics.jsonl 60
  scontrol requeue "$a"
  wait_gone "$a"
  [ "$(state_of "$a" 0)" = COMPLETED ] || { cat requeue.out; fail "requeued run: $(state_of "$a" 0)"; }
  expect requeue.out "rank 1: stop requested (SIGTERM)"
  expect requeue.out "resumed from .*step_[0-9]* at step"
  at=$(grep -o 'resumed from .* at step [0-9]*' requeue.out | grep -o '[0-9]*$' || true)
  if [ -z "$at" ] || [ "$at" -le 0 ] || [ "$at" -ge "$steps" ]; then fail "requeue: resumed at step '$at', not mid-run"; fi
  same_run requeue ref "$last"
  echo "slurm_test: requeue: stopped at step $at of $steps, resumed, bit-identical"

  # (2) The time limit: the signal --signal=B:USR1@120 sends to the batch shell
  # 120 s before the limit, sent now; the script's trap stops the ranks
  # (checkpoint) and requeues the job.
  a=$(submit timelimit)
  wait_lines timelimit/metrics.jsonl 60
  scancel --batch --signal=USR1 "$a"
  wait_gone "$a"
  [ "$(state_of "$a" 0)" = COMPLETED ] || { cat timelimit.out; fail "time-limit run: $(state_of "$a" 0)"; }
  expect timelimit.out "slurm_example: time limit near"
  expect timelimit.out "slurm_example: checkpoint written; requeueing job"
  expect timelimit.out "rank 0: stop requested (SIGTERM)"
  at=$(grep -o 'resumed from .* at step [0-9]*' timelimit.out | grep -o '[0-9]*$' || true)
  if [ -z "$at" ] || [ "$at" -le 0 ] || [ "$at" -ge "$steps" ]; then fail "time limit: resumed at step '$at', not mid-run"; fi
  same_run timelimit ref "$last"
  echo "slurm_test: time limit: stopped at step $at of $steps, requeued, resumed, bit-identical"

  # (3) Rank 1 killed (SIGKILL, as the OOM killer would): srun ends the step,
  # the job fails naming the task; the checkpoints written so far are intact:
  # the next sweep resumes from the newest and finishes the reference's run.
  a=$(submit killed)
  wait_lines killed/metrics.jsonl 50
  pid=""
  for ((i = 0; i < 100; i++)); do
    # scontrol listpids: PID JOBID STEPID LOCALID GLOBALID; rank 1 of step 0.
    pid=$(scontrol listpids "$a.0" 2>/dev/null | awk '$3 == "0" && $5 == "1" { print $1 }' | head -n 1)
    [ -z "$pid" ] || break
    sleep 0.1
  done
  [ -n "$pid" ] || fail "no PID for rank 1 of job $a"
  kill -KILL "$pid"
  wait_gone "$a"
  [ "$(state_of "$a" 0)" = FAILED ] || { cat killed.out; fail "killed rank: job $(state_of "$a" 0), not FAILED"; }
  expect killed.out "task 1: Killed"
  ck=$(cat killed/checkpoints/latest)
  [ "$ck" != "step_$last" ] || fail "the killed run reached its last step"
  a=$(submit killed)
  wait_gone "$a"
  [ "$(state_of "$a" 0)" = COMPLETED ] || { cat killed.out; fail "resubmitted run: $(state_of "$a" 0)"; }
  expect killed.out "resumed from .*$ck at step"
  same_run killed ref "$last"
  echo "slurm_test: killed rank: failed naming task 1, resumed from $ck, bit-identical"
  ;;

lock)
  cat > long.yaml <<YAML
base: $repo/configs/tiny.yaml
train: {steps: 120}
log: {interval: 20, out_dir: shared}
YAML
  # The list sweep.sh would write if it allowed one run directory twice: two
  # array tasks, one rank each, running at once on the node's two CPUs.
  printf 'long.yaml \nlong.yaml \n' > twice.list
  SWEEP_LIST="$work/twice.list" sbatch --array=0-1 --nodes=1 --ntasks-per-node=1 --gpus-per-node=0 \
    --cpus-per-task=1 --export=ALL --output=lock-%a.out "$repo/scripts/slurm_example.sbatch" > submit.log ||
    { cat submit.log; fail "sbatch"; }
  a=$(job_of submit.log)
  wait_gone "$a"
  states="$(state_of "$a" 0) $(state_of "$a" 1)"
  case "$states" in
    "COMPLETED FAILED") winner=0 loser=1 ;;
    "FAILED COMPLETED") winner=1 loser=0 ;;
    *) cat lock-0.out lock-1.out; fail "tasks ended $states, not one COMPLETED and one FAILED" ;;
  esac
  expect "lock-$loser.out" "moe-train: error: .*shared.* is in use by another moe-train"
  grep -q "step  *1/120" "lock-$loser.out" && fail "the refused task trained"
  [ "$(wc -l < shared/metrics.jsonl)" -eq 120 ] || fail "shared/metrics.jsonl: not one run's 120 steps"
  [ "$(grep -c 'starting fresh' "lock-$winner.out")" -eq 1 ] || fail "the winner did not train from the start"
  grep -E "ArrayJobId=$a ArrayTaskId=$loser |JobId=$a .*ArrayTaskId=$loser " "$jobcomp" | grep -q 'ExitCode=2:0' ||
    fail "the refused task did not exit 2"
  ;;

*) fail "unknown case '$case_name' (array, preempt, lock)" ;;
esac
echo "slurm_test: $case_name: ok"
