#!/usr/bin/env bash
# scripts/sweep.sh on two tiny configs x two seeds: --dry-run lists what
# would start and claims nothing; every run trains, writes eval.json of its
# last step and lands in its own seed directory; a second sweep skips them
# all; a longer --set train.steps resumes each from its checkpoint (appending,
# not restarting); runs without validation data (or with train.final_eval
# false) are finished without eval and skipped by the next sweep, while a run
# with validation data that lost its eval.json is resumed; bad input is one
# line and exit 2; a run with no --set and no seeds gets no empty argument;
# a run another moe-train holds is skipped, not failed;
# --slurm --dry-run lists the incomplete runs as one job array, with the
# resources of the configs' backend (tests/slurm/ submits to a real Slurm).
#   tests/scripts/sweep_test.sh BUILD_DIR
set -uo pipefail
build=$(cd "${1:?usage: sweep_test.sh BUILD_DIR}" && pwd)
repo=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
holder=""
trap '[ -z "$holder" ] || kill "$holder" 2>/dev/null; rm -rf "$tmp"' EXIT
cd "$tmp" || exit 1
export MOE_TRAIN="$build/moe-train" SWEEP_POLL=1
fail() { echo "FAIL: $*"; exit 1; }
expect() { grep -q -- "$2" "$1" || { cat "$1"; fail "$1 lacks '$2'"; }; }
step_of() { grep -o '"step": *[0-9]*' "$1" | grep -o '[0-9]*$'; }

python3 "$repo/tests/scripts/write_val_shard.py" val 2561 || fail "cannot write the validation shard"
for m in loss_free aux_loss; do
  cat > "$m.yaml" <<YAML
base: $repo/configs/tiny.yaml
balance: {method: $m}
train: {steps: 6, threads: 1}
data: {val_path: $tmp/val}
log: {interval: 2}
YAML
done

# A dry run names the runs it would start, runs nothing and claims nothing.
"$repo/scripts/sweep.sh" --dry-run --seeds 1,2 loss_free.yaml aux_loss.yaml > dry1.log 2>&1 ||
  { cat dry1.log; fail "the dry run failed"; }
expect dry1.log "\[1/4\] runs/loss_free/seed1: would start (.*moe-train --config loss_free.yaml --resume auto"
expect dry1.log "\[4/4\] runs/aux_loss/seed2: would start"
expect dry1.log "^sweep.sh: dry run: 4 run(s) would start, 0 finished; nothing was run$"
grep -q "complete" dry1.log && { cat dry1.log; fail "a dry run claimed a run complete"; }
[ -e runs ] && fail "a dry run wrote runs/"

"$repo/scripts/sweep.sh" --seeds 1,2 loss_free.yaml aux_loss.yaml > sweep1.log 2>&1 ||
  { cat sweep1.log; fail "the sweep failed"; }
for m in loss_free aux_loss; do
  for s in 1 2; do
    d="runs/$m/seed$s"
    [ -f "$d/eval.json" ] || { cat sweep1.log; fail "$d: no eval.json"; }
    [ "$(step_of "$d/eval.json")" = 6 ] || fail "$d/eval.json: not of step 6"
    expect "$d/config.yaml" "seed: $s"
    expect "$d/config.yaml" "method: $m"
    [ "$(wc -l < "$d/metrics.jsonl")" -eq 6 ] || fail "$d/metrics.jsonl: not 6 steps"
    [ -d "$d/checkpoints/step_00000006" ] || fail "$d: no final checkpoint"
  done
done
# The two seeds trained different models.
cmp -s runs/loss_free/seed1/eval.json runs/loss_free/seed2/eval.json && fail "seeds 1 and 2 gave one result"
expect sweep1.log "\[1/4\] runs/loss_free/seed1: start"
expect sweep1.log "\[4/4\] runs/aux_loss/seed2: done in .*val ppl [0-9.]*, MaxVio_global [0-9.]*.*ETA"
expect sweep1.log "all 4 run(s) complete"

# Complete runs are skipped: nothing is trained or moved aside.
"$repo/scripts/sweep.sh" --seeds 1,2 loss_free.yaml aux_loss.yaml > sweep2.log 2>&1 || fail "second sweep"
[ "$(grep -c "complete (eval.json of step 6), skipped" sweep2.log)" -eq 4 ] || { cat sweep2.log; fail "not all skipped"; }
[ -e runs/loss_free/seed1/metrics.1.jsonl ] && fail "a skipped run was restarted"
"$repo/scripts/sweep.sh" --dry-run --seeds 1,2 loss_free.yaml aux_loss.yaml > dry2.log 2>&1 ||
  fail "second dry run"
expect dry2.log "^sweep.sh: dry run: 0 run(s) would start, 4 finished; nothing was run$"

# Longer runs resume from their checkpoints: 2 more steps appended to 6.
"$repo/scripts/sweep.sh" --seeds 1 loss_free.yaml --set train.steps=8 > sweep3.log 2>&1 ||
  { cat sweep3.log; fail "resumed sweep"; }
d=runs/loss_free/seed1
[ "$(step_of "$d/eval.json")" = 8 ] || fail "$d/eval.json: not of step 8 after the resume"
[ "$(wc -l < "$d/metrics.jsonl")" -eq 8 ] || fail "$d/metrics.jsonl: not 6 + 2 lines"
[ -e "$d/metrics.1.jsonl" ] && fail "the resumed run started fresh"
expect "$d/train.log" "resumed from .*step_00000006 at step 6"

# Runs that write no eval.json: no validation data (tiny.yaml's synthetic
# data), or train.final_eval false. Once trained to their last step they are
# finished without eval, and a second sweep skips them, training nothing.
cat > noval.yaml <<YAML
base: $repo/configs/tiny.yaml
train: {steps: 4, threads: 1}
log: {interval: 2}
YAML
cat > nofinal.yaml <<YAML
base: $tmp/loss_free.yaml
train: {steps: 4, final_eval: false}
YAML
"$repo/scripts/sweep.sh" --seeds 1,2 noval.yaml nofinal.yaml > noeval1.log 2>&1 ||
  { cat noeval1.log; fail "the sweep without eval failed"; }
expect noeval1.log "\[1/4\] runs/noval/seed1: finished (no eval: no validation split) in "
expect noeval1.log "\[4/4\] runs/nofinal/seed2: finished (no eval: train.final_eval false) in "
expect noeval1.log "^sweep.sh: 4 run(s): 0 finished with eval.json, 4 finished without eval$"
grep -q "all 4 run(s) complete" noeval1.log && fail "runs without eval.json reported complete"
"$repo/scripts/sweep.sh" --seeds 1,2 noval.yaml nofinal.yaml > noeval2.log 2>&1 ||
  { cat noeval2.log; fail "the second sweep without eval failed"; }
[ "$(grep -c "finished (no eval: no validation split), skipped" noeval2.log)" -eq 2 ] ||
  { cat noeval2.log; fail "runs without validation data not skipped"; }
[ "$(grep -c "finished (no eval: train.final_eval false), skipped" noeval2.log)" -eq 2 ] ||
  { cat noeval2.log; fail "runs with train.final_eval false not skipped"; }
grep -q ": start (" noeval2.log && { cat noeval2.log; fail "a finished run was trained again"; }
[ "$(grep -c "resumed from\|resume auto" runs/noval/seed1/train.log)" -eq 1 ] ||
  fail "runs/noval/seed1 ran twice"
# A run with validation data whose eval.json of the last step is missing is
# not finished: the sweep resumes it (no step to train) and it evaluates.
rm runs/aux_loss/seed1/eval.json
"$repo/scripts/sweep.sh" --seeds 1 aux_loss.yaml > reeval.log 2>&1 || { cat reeval.log; fail "re-eval"; }
expect reeval.log "\[1/1\] runs/aux_loss/seed1: start"
[ "$(step_of runs/aux_loss/seed1/eval.json)" = 6 ] || fail "runs/aux_loss/seed1: eval.json not rewritten"
[ "$(wc -l < runs/aux_loss/seed1/metrics.jsonl)" -eq 6 ] || fail "re-eval trained steps"

# A run whose directory another moe-train holds (a sweep launched twice) is
# skipped, its train.log untouched; the sweep does not call it failed.
rm -rf runs/aux_loss/seed1/eval.json
cp runs/aux_loss/seed1/train.log held_train.log
( exec 9> runs/aux_loss/seed1/.moe.lock && flock 9 && touch held.ready &&
  for _ in $(seq 600); do [ -e release ] && break; sleep 0.1; done ) > /dev/null 2>&1 &  # <= 60 s
holder=$!
while [ ! -e held.ready ]; do sleep 0.1; done
"$repo/scripts/sweep.sh" --seeds 1 aux_loss.yaml > held.log 2>&1 || { cat held.log; fail "held run"; }
touch release; wait "$holder"
expect held.log "\[1/1\] runs/aux_loss/seed1: in use by another moe-train (its .moe.lock is held), skipped"
expect held.log "1 in use by another moe-train: runs/aux_loss/seed1"
cmp -s held_train.log runs/aux_loss/seed1/train.log || fail "a held run's train.log was written"
"$repo/scripts/sweep.sh" --seeds 1 aux_loss.yaml > unheld.log 2>&1 || { cat unheld.log; fail "unheld"; }
[ -f runs/aux_loss/seed1/eval.json ] || { cat unheld.log; fail "the run was not resumed once free"; }

# Bad input: one line naming the problem, exit 2.
"$repo/scripts/sweep.sh" nowhere.yaml > bad1.log 2>&1; rc=$?
[ "$rc" -eq 2 ] || fail "missing config: exit $rc"
expect bad1.log "sweep.sh: nowhere.yaml: no such config file"
"$repo/scripts/sweep.sh" --seeds 1,x loss_free.yaml > bad2.log 2>&1; rc=$?
[ "$rc" -eq 2 ] || fail "bad seed: exit $rc"
expect bad2.log "'x' is not a non-negative integer"
"$repo/scripts/sweep.sh" loss_free.yaml --set train.bogus=1 > bad3.log 2>&1; rc=$?
[ "$rc" -eq 2 ] || fail "bad --set: exit $rc"
expect bad3.log "sweep.sh: loss_free.yaml: moe-train: error: config: train.bogus: unknown key"

# No --set and no seeds: moe-train gets no empty argument (it refused one).
"$repo/scripts/sweep.sh" noval.yaml > plain.log 2>&1 || { cat plain.log; fail "sweep without --set or seeds"; }
expect plain.log "runs/noval: start (.*moe-train --config noval.yaml --resume auto )$"
expect plain.log "runs/noval: finished (no eval: no validation split) in "

# Slurm: the incomplete runs (seed 3) as one array, nothing written. GPUs
# per node given: 2 ranks on 2 nodes of 1.
"$repo/scripts/sweep.sh" --slurm --dry-run --ranks 2 --gpus-per-node 1 --seeds 1,3 loss_free.yaml aux_loss.yaml > slurm.log 2>&1 ||
  { cat slurm.log; fail "slurm dry run"; }
expect slurm.log "runs/loss_free/seed1: complete (eval.json of step 8), not submitted"
expect slurm.log "^loss_free.yaml --set train.seed=3 --set log.out_dir=runs/loss_free/seed3"
expect slurm.log "sbatch --array=0-1 .*--nodes=2 --ntasks-per-node=1 --gpus-per-node=1 --export=ALL .*slurm_example.sbatch"
ls runs/sweep-*.list > /dev/null 2>&1 && fail "a dry run wrote a list"
# The configs' train.backend picks the resources: cpu, no GPUs and one CPU per
# rank, the ranks on one node; cuda, 8 GPUs (ranks) per node.
cp noval.yaml fresh.yaml
"$repo/scripts/sweep.sh" --slurm --dry-run --ranks 2 fresh.yaml > slurm_cpu.log 2>&1 || { cat slurm_cpu.log; fail "cpu"; }
expect slurm_cpu.log "^fresh.yaml $"
expect slurm_cpu.log "sbatch --array=0-0 .*--nodes=1 --ntasks-per-node=2 --gpus-per-node=0 --cpus-per-task=1 --export=ALL "
"$repo/scripts/sweep.sh" --slurm --dry-run --ranks 16 --set train.backend=cuda --set train.global_batch=128 \
  fresh.yaml > slurm_gpu.log 2>&1 ||
  { cat slurm_gpu.log; fail "cuda"; }
expect slurm_gpu.log "sbatch --array=0-0 .*--nodes=2 --ntasks-per-node=8 --gpus-per-node=8 --export=ALL "
"$repo/scripts/sweep.sh" --slurm --dry-run --ranks 12 --set train.backend=cuda --set train.global_batch=96 \
  fresh.yaml > bad4.log 2>&1; rc=$?
[ "$rc" -eq 2 ] || fail "12 ranks on 8-GPU nodes: exit $rc"
expect bad4.log "^sweep.sh: --ranks 12 is not a multiple of 8 ranks per node$"
# docs/reproduction.md's paper-scale command (cuda presets): 2 nodes of 8 GPUs per run.
"$repo/scripts/sweep.sh" --slurm --dry-run --ranks 16 --sbatch-args "--partition=gpu --time=24:00:00" \
  "$repo/configs/paper/1b_loss_free.yaml" "$repo/configs/paper/1b_aux_loss.yaml" > paper.log 2>&1 ||
  { cat paper.log; fail "reproduction.md's Slurm command"; }
expect paper.log "sbatch --array=0-1 .*--nodes=2 --ntasks-per-node=8 --gpus-per-node=8 --export=ALL --partition=gpu --time=24:00:00 "
# Each run is checked as it would run on --ranks ranks (here 4 x 8 > 16).
"$repo/scripts/sweep.sh" --slurm --dry-run --ranks 4 fresh.yaml > bad6.log 2>&1; rc=$?
[ "$rc" -eq 2 ] || fail "a batch 4 ranks cannot split: exit $rc"
expect bad6.log "fresh.yaml: moe-train: error: config: train.global_batch: 16 is not a multiple of"
"$repo/scripts/sweep.sh" --slurm --dry-run --sbatch-args "--comment='a" fresh.yaml > bad5.log 2>&1; rc=$?
[ "$rc" -eq 2 ] || fail "unbalanced quote: exit $rc"
expect bad5.log "^sweep.sh: --sbatch-args: cannot split"
echo "sweep_test: ok"
