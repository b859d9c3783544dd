#!/usr/bin/env bash
# ctest "export": moe-export against an independent reference. A small model
# trains with Loss-Free Balancing at a large update rate (the router bias is
# clearly non-zero), is exported to a Hugging Face glm4_moe directory, and
# tests/glm4_moe_reference.py (a numpy forward pass written from transformers'
# published modeling_glm4_moe.py, not from our C++) computes the validation
# loss from that directory alone. It must agree with moe-eval on the checkpoint
# within 1e-4 relative; the bias must change some expert selections and the
# loss. Then the import direction: --from-hf gives back the checkpoint's
# model.safetensors bit for bit and moe-eval's identical loss. Bad inputs
# (a missing directory, a softmax-gate checkpoint) exit 2 with one line.
#   tests/export_test.sh BUILD_DIR
# Exit 0 passed, 1 failed, 77 skipped (sanitizer build).
set -uo pipefail

build=$(cd "${1:?usage: export_test.sh BUILD_DIR}" && pwd)
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
reference="$repo/tests/glm4_moe_reference.py"
fail() { echo "FAIL: $*" >&2; exit 1; }

if grep -qs '^MOE_SANITIZE:BOOL=ON' "$build/CMakeCache.txt"; then
  echo "SKIP: $build is a sanitizer build; the normal build runs this test"
  exit 77
fi
for b in moe-train moe-eval moe-export; do
  [ -x "$build/$b" ] || fail "no $build/$b"
done

# An interpreter with numpy: $PYTHON, python3 on PATH, or Debian's.
py=""
for cand in ${PYTHON:-} python3 /usr/bin/python3; do
  if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import numpy' >/dev/null 2>&1; then
    py=$cand
    break
  fi
done
[ -n "$py" ] || fail "python3 lacks numpy (needed by tests/glm4_moe_reference.py): run scripts/setup.sh (python3-numpy)"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/moe-export-test.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cd "$tmp" || exit 1

# 0. The reference's own hand-made cases (known answers without it).
"$py" "$repo/tests/glm4_moe_reference_check.py" > check.log 2>&1 ||
  { cat check.log; fail "tests/glm4_moe_reference_check.py"; }

# 1. Train: 3 layers (1 dense), hidden 32, 2 heads, 8 routed experts top-2 + 1
# shared, seq_len 32, fp32 on the CPU, 30 steps of Loss-Free with u = 0.05.
S=32
"$py" "$repo/tests/write_val_shard.py" val 2561 || fail "cannot write the validation shard"  # 80 sequences
train() {
  local out=$1; shift
  "$build/moe-train" --config "$repo/configs/tiny.yaml" \
    --set model.hidden=32 --set model.heads=2 --set model.layers=3 --set model.first_dense_layers=1 \
    --set model.dense_intermediate=96 --set model.seq_len=$S \
    --set moe.n_routed=8 --set moe.top_k=2 --set moe.n_shared=1 --set moe.expert_intermediate=16 \
    --set balance.method=loss_free --set balance.update_rate=0.05 \
    --set train.global_batch=8 --set train.micro_batch=8 --set train.warmup_steps=4 \
    --set train.backend=cpu --set train.precision=float32 --set train.threads=2 \
    --set train.final_eval=false --set data.val_path="$tmp/val" \
    --set log.out_dir="$tmp/$out" --set log.level=warn "$@" > "$out.log" 2>&1 ||
    { tail -n 20 "$out.log"; fail "moe-train ($out) exited non-zero"; }
}
train run --set train.steps=30
ckpt="$tmp/run/checkpoints/step_00000030"
[ -f "$ckpt/model.safetensors" ] || { ls -R "$tmp/run"; fail "no checkpoint $ckpt"; }

# 2. Export.
"$build/moe-export" --checkpoint "$ckpt" --output hf --dtype float32 > export.log 2>&1 ||
  { cat export.log; fail "moe-export --checkpoint exited non-zero"; }
[ -f hf/config.json ] || fail "moe-export wrote no hf/config.json"

# 3. moe-eval on the checkpoint vs. the reference on the exported directory.
"$build/moe-eval" --checkpoint "$ckpt" --data "$tmp/val" --backend cpu --threads 2 \
  --output eval.json > eval.log 2>&1 || { cat eval.log; fail "moe-eval exited non-zero"; }
"$py" "$reference" --hf hf --val "$tmp/val" --seq-len $S > ref.json 2> ref.err ||
  { cat ref.err; fail "glm4_moe_reference.py exited non-zero"; }
"$py" - eval.json ref.json <<'PY' || fail "the reference disagrees with moe-eval"
import json, sys
ev = json.load(open(sys.argv[1]))
rf = json.loads(open(sys.argv[2]).read())
rel = abs(rf["loss"] - ev["loss"]) / abs(ev["loss"])
print(f"moe-eval loss {ev['loss']:.9f} ({ev['tokens']} tokens, {ev['sequences']} sequences)")
print(f"reference loss {rf['loss']:.9f} ({rf['tokens']} tokens, {rf['sequences']} sequences, "
      f"{rf['compute']}); relative difference {rel:.3e}")
print(f"bias-changed selections per MoE layer {rf['bias_changed_selections']}; "
      f"loss without the bias {rf['loss_without_bias']:.9f}; "
      f"smallest top-k margin per MoE layer {rf['min_selection_margin']}")
ok = True
if (rf["tokens"], rf["sequences"]) != (ev["tokens"], ev["sequences"]):
    print("FAIL: the two evaluated different tokens"); ok = False
if not rel <= 1e-4:
    print("FAIL: losses differ by more than 1e-4 relative"); ok = False
if not sum(rf["bias_changed_selections"]) > 0:
    print("FAIL: the exported e_score_correction_bias changes no selection"); ok = False
if not rf["loss_without_bias"] != rf["loss"]:
    print("FAIL: the loss without the bias equals the loss"); ok = False
sys.exit(0 if ok else 1)
PY

# 4. The round trip: --from-hf gives the checkpoint's tensors bit for bit.
"$build/moe-export" --from-hf hf --output ckpt2 > import.log 2>&1 ||
  { cat import.log; fail "moe-export --from-hf exited non-zero"; }
"$py" - "$ckpt/model.safetensors" ckpt2/model.safetensors "$repo/tests" <<'PY' ||
import sys
sys.path.insert(0, sys.argv[3])
from glm4_moe_reference import read_safetensors
a, b = read_safetensors(sys.argv[1]), read_safetensors(sys.argv[2])
a.pop("__metadata__", None)
b.pop("__metadata__", None)
bad = [f"only in the original: {n}" for n in sorted(set(a) - set(b))]
bad += [f"only in the import: {n}" for n in sorted(set(b) - set(a))]
for n in sorted(set(a) & set(b)):
    (da, sa, ra), (db, sb, rb) = a[n], b[n]
    if (da, sa) != (db, sb):
        bad.append(f"{n}: {da} {sa} vs {db} {sb}")
    elif ra != rb:
        i = next(k for k in range(len(ra)) if ra[k] != rb[k])
        bad.append(f"{n}: bytes differ from byte {i} of {len(ra)}")
for line in bad[:20]:
    print("FAIL:", line)
print(f"round trip: {len(a)} tensors compared, {len(bad)} differences")
sys.exit(1 if bad else 0)
PY
  fail "the imported checkpoint's model.safetensors differs from the original's"
"$build/moe-eval" --checkpoint ckpt2 --data "$tmp/val" --backend cpu --threads 2 \
  --output eval2.json > eval2.log 2>&1 || { cat eval2.log; fail "moe-eval on the imported checkpoint"; }
"$py" - eval.json eval2.json <<'PY' || fail "moe-eval on the imported checkpoint gives another loss"
import json, sys
a, b = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
print(f"moe-eval loss: original {a['loss']!r}, imported {b['loss']!r}")
sys.exit(0 if a["loss"] == b["loss"] and a["expert_loads"] == b["expert_loads"] else 1)
PY

# 5. Bad inputs: exit 2, one line on stderr naming the problem.
bad() {
  local want=$1; shift
  "$build/moe-export" "$@" > bad.out 2> bad.err; local rc=$?
  [ "$rc" -eq 2 ] || { cat bad.out bad.err; fail "moe-export $*: exit $rc, expected 2"; }
  [ "$(wc -l < bad.err)" -eq 1 ] || fail "moe-export $*: not one line on stderr: $(cat bad.err)"
  grep -q -- "$want" bad.err || fail "moe-export $*: '$(cat bad.err)' lacks '$want'"
  echo "bad input ok: $(cat bad.err)"
}
bad "nowhere" --checkpoint "$tmp/nowhere" --output hf_bad1 --dtype float32
bad "nowhere" --from-hf "$tmp/nowhere" --output ckpt_bad1
train softmax --set train.steps=1 --set moe.gate=softmax
bad "moe.gate" --checkpoint "$tmp/softmax/checkpoints/step_00000001" --output hf_bad2 --dtype float32
[ -e hf_bad2/config.json ] && fail "a refused export left hf_bad2/config.json"
echo "export_test: ok"
