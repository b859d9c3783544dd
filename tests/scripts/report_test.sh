#!/usr/bin/env bash
# ctest "report": scripts/report.py on real moe-train runs. Five short runs of
# the tiny model with in-training evaluation (Loss-Free at two seeds, aux loss,
# no balancing, Loss-Free with DeepSeek-V3's additions), then the report: its pages and figures exist, and the tables
# hold the runs' numbers (tests/scripts/report_check.py recomputes them from the run
# files); the grouping follows moe-train's key metadata (--print-config
# --with-meta, or a saved copy of it); docs/paper.md holds the numbers of
# docs/paper_numbers.yaml; bad input is one line and exit 2.
#   tests/scripts/report_test.sh BUILD_DIR
# Exit 0 passed, 1 failed, 77 skipped (sanitizer build).
set -euo pipefail

build=${1:?usage: report_test.sh BUILD_DIR}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
report="$repo/scripts/report.py"
fail() { echo "FAIL: $*" >&2; exit 1; }

if grep -qs '^MOE_SANITIZE:BOOL=ON' "$build/CMakeCache.txt"; then
  echo "SKIP: $build is a sanitizer build; report.py is Python and the normal build tests it"
  exit 77
fi
[ -x "$build/moe-train" ] || fail "no $build/moe-train"

# An interpreter with PyYAML, numpy and matplotlib: $PYTHON, python3 on PATH, or Debian's.
py=""
for cand in ${PYTHON:-} python3 /usr/bin/python3; do
  if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import yaml, numpy, matplotlib' >/dev/null 2>&1; then
    py=$cand
    break
  fi
done
[ -n "$py" ] || fail "python3 lacks yaml/numpy/matplotlib (needed by scripts/report.py): run scripts/setup.sh (python3-yaml, python3-numpy, python3-matplotlib)"

ms() { echo $(( $(date +%s%N) / 1000000 )); }
start=$(ms)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/moe-report-test.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# A validation split (one shard of a fixed token pattern in the tiny vocab), so
# the runs evaluate: the tiny config trains on synthetic tokens.
"$py" "$repo/tests/scripts/write_val_shard.py" "$tmp" 4096

# 16 steps of 8 sequences in two micro-batches; loads every 4 steps; two evals.
train() {
  local name=$1; shift
  "$build/moe-train" --config "$repo/configs/tiny.yaml" \
    --set train.steps=16 --set train.global_batch=8 --set train.micro_batch=4 \
    --set train.warmup_steps=4 --set train.threads=1 \
    --set train.eval_interval=8 --set train.eval_max_tokens=1024 \
    --set data.val_path="$tmp/val_00000.bin" \
    --set log.out_dir="$tmp/runs/$name" --set log.expert_load_interval=4 --set log.level=warn \
    --set checkpoint.dir= "$@" >"$tmp/$name.log" 2>&1 ||
    { tail -n 20 "$tmp/$name.log"; fail "moe-train ($name) exited non-zero"; }
}
# Two at a time, one thread each.
train lf & p1=$!
train lf_seed7 --set train.seed=7 & p2=$!
wait $p1 || exit 1
wait $p2 || exit 1
train aux --set balance.method=aux_loss & p1=$!
train none --set balance.method=none & p2=$!
wait $p1 || exit 1
wait $p2 || exit 1
# DeepSeek-V3's additions to Loss-Free: a row below Table 1's, in no other table.
train v3 --set balance.seq_aux_alpha=1e-4 --set moe.n_group=4 --set moe.topk_group=2 \
  --set moe.normalize_gates=true || exit 1
runs_ms=$(( $(ms) - start ))

# The "none" run stands for a run of an older moe-train: no maxvio_compute, no
# bias, no eval.json, and only its last expert-load record. The report must
# handle the mix.
"$py" - "$tmp/runs/none" <<'EOF'
import json, os, sys
d = sys.argv[1]
for name, drop in (("metrics.jsonl", ("maxvio_compute", "maxvio_compute_layers")), ("expert_loads.jsonl", ("bias",))):
    rows = [json.loads(l) for l in open(os.path.join(d, name))]
    if name == "expert_loads.jsonl":
        rows = rows[-1:]  # one record: the heatmap shows it once
    with open(os.path.join(d, name), "w") as f:
        for r in rows:
            f.write(json.dumps({k: v for k, v in r.items() if k not in drop}) + "\n")
if os.path.exists(os.path.join(d, "eval.json")):
    os.remove(os.path.join(d, "eval.json"))
EOF

# Bad input: one line on stderr, exit 2.
expect2() {
  local want=$1; shift
  local rc=0
  "$py" "$report" "$@" --moe-train "$build/moe-train" --out "$tmp/bad-report" >"$tmp/out.txt" 2>"$tmp/err.txt" || rc=$?
  [ "$rc" = 2 ] || fail "report.py $* exited $rc, expected 2: $(cat "$tmp/err.txt")"
  [ "$(wc -l <"$tmp/err.txt")" = 1 ] || fail "report.py $* printed not one line on stderr: $(cat "$tmp/err.txt")"
  [ "$(cat "$tmp/err.txt")" = "$want" ] || fail "report.py $*: stderr '$(cat "$tmp/err.txt")', expected '$want'"
}
mkdir -p "$tmp/empty" "$tmp/noconfig"
cp "$tmp/runs/lf/metrics.jsonl" "$tmp/noconfig/"
expect2 "report.py: $tmp/nope: no such directory" "$tmp/nope"
expect2 "report.py: $tmp/runs: no metrics.jsonl (not a moe-train run directory; it holds runs aux, lf, lf_seed7, none, ...: pass $tmp/runs/*)" "$tmp/runs"
expect2 "report.py: $tmp/empty: no metrics.jsonl (not a moe-train run directory)" "$tmp/runs/lf" "$tmp/empty"
expect2 "report.py: $tmp/noconfig: no config.yaml (not a moe-train run directory)" "$tmp/noconfig"
expect2 "report.py: --ep-size: expected a number of ranks >= 1" "$tmp/runs/lf" --ep-size 0
[ ! -e "$tmp/bad-report" ] || fail "report.py wrote a report for bad input"
"$py" "$report" --help | grep -q -- '--out DIR' || fail "report.py --help shows no usage"
# Run as a program (its #! line; a python3 on PATH without numpy re-runs it under /usr/bin/python3).
rc=0
"$report" "$tmp/nope" 2>"$tmp/err.txt" >/dev/null || rc=$?
if [ "$rc" != 2 ] || [ "$(cat "$tmp/err.txt")" != "report.py: $tmp/nope: no such directory" ]; then
  fail "scripts/report.py run directly: exit $rc, stderr '$(cat "$tmp/err.txt")'"
fi

"$py" "$report" "$tmp"/runs/* --moe-train "$build/moe-train" --ep-size 4 --out "$tmp/report" >"$tmp/report.log" 2>&1 ||
  { cat "$tmp/report.log"; fail "report.py exited non-zero"; }
grep -q '^done in' "$tmp/report.log" || fail "report.py printed no progress: $(cat "$tmp/report.log")"
"$py" "$repo/tests/scripts/report_check.py" "$tmp/runs" "$tmp/report" || fail "report_check.py"

# Which keys change training comes from moe-train (--print-config --with-meta),
# not from the report: a saved copy gives the same report without the binary,
# and a copy that calls train.seed a key that changes training splits the two
# Loss-Free seeds into two variants.
"$build/moe-train" --config "$repo/configs/tiny.yaml" --print-config --with-meta >"$tmp/meta.yaml"
grep -q 'seed: {value: 1234, training: seed}' "$tmp/meta.yaml" || fail "--with-meta: no seed metadata"
"$py" "$report" "$tmp"/runs/* --moe-train "$tmp/nope" --key-meta "$tmp/meta.yaml" --ep-size 4 --out "$tmp/report2" \
  >"$tmp/report2.log" 2>&1 || { cat "$tmp/report2.log"; fail "report.py --key-meta exited non-zero"; }
grep -q '^4 variants:' "$tmp/report2.log" || fail "--key-meta: $(cat "$tmp/report2.log")"
tables() { grep '^|' "$1"; }
diff <(tables "$tmp/report/README.md") <(tables "$tmp/report2/README.md") >/dev/null ||
  fail "--key-meta FILE gives other tables than moe-train's own metadata"
sed 's/seed: {value: 1234, training: seed}/seed: {value: 1234, training: changes}/' "$tmp/meta.yaml" >"$tmp/meta_seed.yaml"
"$py" "$report" "$tmp"/runs/* --key-meta "$tmp/meta_seed.yaml" --out "$tmp/report3" >"$tmp/report3.log" 2>&1 ||
  { cat "$tmp/report3.log"; fail "report.py --key-meta (seed changes training) exited non-zero"; }
grep -q '^5 variants:' "$tmp/report3.log" || fail "the seed's metadata did not split the seeds: $(cat "$tmp/report3.log")"
rc=0
"$py" "$report" "$tmp/runs/lf" --moe-train "$tmp/nope" --out "$tmp/report4" >/dev/null 2>"$tmp/err.txt" || rc=$?
{ [ "$rc" = 2 ] && [ "$(wc -l <"$tmp/err.txt")" = 1 ] && grep -q -- "--key-meta FILE" "$tmp/err.txt"; } ||
  fail "no moe-train and no --key-meta: exit $rc, stderr '$(cat "$tmp/err.txt")'"

# The paper's numbers: docs/paper.md's tables hold docs/paper_numbers.yaml's.
"$py" "$repo/tests/scripts/paper_numbers_check.py" || fail "paper_numbers_check.py"
total_ms=$(( $(ms) - start ))
echo "PASS: report of 5 runs ($((runs_ms / 1000)).$((runs_ms % 1000 / 100)) s of training, $((total_ms / 1000)).$((total_ms % 1000 / 100)) s in all)"
