#!/usr/bin/env bash
# ctest "export": moe-export against an independent reference. A small model
# trains with Loss-Free Balancing at a large update rate (the router bias is
# clearly non-zero), is exported to a Hugging Face glm4_moe directory, and
# tests/scripts/glm4_moe_reference.py (a numpy forward pass written from transformers'
# published modeling_glm4_moe.py, not from our C++) computes the validation
# loss from that directory alone. It must agree with moe-eval on the checkpoint
# within 1e-4 relative; the bias must change some expert selections and the
# loss. Then the import direction: --from-hf gives back the checkpoint's
# model.safetensors bit for bit and moe-eval's identical loss. Bad inputs
# (a missing directory, a softmax-gate checkpoint) exit 2 with one line.
# Also: a sharded export reads the same, and a bfloat16 export keeps the bias
# in float32 and rounds the rest to nearest even.
#   tests/scripts/export_test.sh BUILD_DIR
# Exit 0 passed, 1 failed, 77 skipped (sanitizer build).
set -uo pipefail

build=$(cd "${1:?usage: export_test.sh BUILD_DIR}" && pwd)
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
reference="$repo/tests/scripts/glm4_moe_reference.py"
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
[ -n "$py" ] || fail "python3 lacks numpy (needed by tests/scripts/glm4_moe_reference.py): run scripts/setup.sh (python3-numpy)"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/moe-export-test.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cd "$tmp" || exit 1

# 0. The reference's own hand-made cases (known answers without it).
"$py" "$repo/tests/scripts/glm4_moe_reference_check.py" > check.log 2>&1 ||
  { cat check.log; fail "tests/scripts/glm4_moe_reference_check.py"; }

# 1. Train: 3 layers (1 dense), hidden 32, 2 heads, 8 routed experts top-2 + 1
# shared, seq_len 32, fp32 on the CPU, 30 steps of Loss-Free with u = 0.05
# init_std 0.3: a model this short-trained is otherwise nearly uniform (loss ~
# ln 512), where a wrong export moves the loss by less than the 1e-4 tolerance;
# at 0.3 a swapped expert pair, gate/up swapped, RoPE pairing or partial
# rotary, or a permuted bias each move it by 9e-4 to 9e-3 (see 3c).
S=32
"$py" "$repo/tests/scripts/write_val_shard.py" val 2561 || fail "cannot write the validation shard"  # 80 sequences
train() {
  local out=$1; shift
  "$build/moe-train" --config "$repo/configs/tiny.yaml" \
    --set model.hidden=32 --set model.heads=2 --set model.layers=3 --set model.first_dense_layers=1 \
    --set model.dense_intermediate=96 --set model.seq_len=$S --set model.init_std=0.3 \
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
# --batch 8 on both moe-eval runs: the imported checkpoint's config holds the
# built-in defaults outside the model (train.micro_batch 1, moe-eval's default
# batch), and the batch changes the float summation order of the loss.
# Not bit-exact: moe-eval computes in float32, the reference in float64
# (whose own error, ~1e-16, is nil here), so the difference is moe-eval's
# rounding. Its bound: along a token's path through the 3 layers and the head
# there are about 800 float32 accumulation terms in sequence (per layer: q/k/v
# and o projections and the MLP/expert GEMMs over K = 32, 96 or 16, scores
# over 16, softmax and P.V over <= 32), each op's relative error <= K * 2^-24,
# so the logits carry <= 800 * 6e-8 = 5e-5 relative error (worst case, no
# cancellation; sqrt(800) * 6e-8 = 2e-6 typically); a token's cross-entropy
# lse - logit moves by <= 2 * 5e-5 * |logit| (|logit| <= ~5 at init_std 0.3),
# 5e-4 absolute = 7e-5 relative to the loss 7.3, and the mean over 2560
# tokens moves no more. 1e-4 relative covers that worst case and is 9x under
# the smallest export error it must catch (9e-4: see step 1 and 3c).
# The expert loads are compared exactly: a selection agrees as long as its
# margin (k-th minus (k+1)-th score + bias) exceeds the score error, sigmoid'
# <= 1/4 times the router logit's error (32 terms of |w| ~ 0.3 on a normed
# input: ~2e-6 typically, from the bound above), about 6e-7. Should the loads
# differ, the check below says whether a margin under 1e-5 (16x that) makes
# it a near tie that float32 breaks the other way rather than an export error.
"$build/moe-eval" --checkpoint "$ckpt" --data "$tmp/val" --backend cpu --threads 2 --batch 8 \
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
print(f"expert loads (tokens per routed expert) equal: {rf['expert_loads'] == ev['expert_loads']}")
print(f"bias-changed selections per MoE layer {rf['bias_changed_selections']}; "
      f"loss without the bias {rf['loss_without_bias']:.9f}; "
      f"smallest top-k margin per MoE layer {rf['min_selection_margin']}")
ok = True
if (rf["tokens"], rf["sequences"]) != (ev["tokens"], ev["sequences"]):
    print("FAIL: the two evaluated different tokens"); ok = False
if not rel <= 1e-4:
    print("FAIL: losses differ by more than 1e-4 relative"); ok = False
if rf["expert_loads"] != ev["expert_loads"]:
    print(f"FAIL: expert loads differ: reference {rf['expert_loads']}, moe-eval {ev['expert_loads']}")
    near = [m for m in rf["min_selection_margin"] if m is not None and m < 1e-5]
    if near:
        print(f"  (a top-k margin of {min(near):.1e} is within float32 rounding of a tie: this "
              "trained model routes a token ambiguously, so this may not be an export error)")
    ok = False
if not sum(rf["bias_changed_selections"]) > 0:
    print("FAIL: the exported e_score_correction_bias changes no selection"); ok = False
# The bias's effect on the loss must stand far above the two sides' disagreement.
effect = abs(rf["loss_without_bias"] - rf["loss"]) / abs(ev["loss"])
print(f"effect of the bias on the loss {effect:.3e} relative")
if not effect > max(100 * rel, 1e-6):
    print("FAIL: the loss without the bias is not clearly another loss"); ok = False
sys.exit(0 if ok else 1)
PY

# 3b. The same export split into several files with an index gives the
# reference the identical result; a bfloat16 export (the default dtype) keeps
# e_score_correction_bias in float32, byte for byte, and holds every other
# tensor as the float32 export's values rounded to nearest even.
"$build/moe-export" --checkpoint "$ckpt" --output hf_sharded --dtype float32 --max-shard-mb 0.1 \
  > export_sharded.log 2>&1 || { cat export_sharded.log; fail "moe-export --max-shard-mb 0.1"; }
[ -f hf_sharded/model.safetensors.index.json ] || fail "--max-shard-mb 0.1 wrote no index"
"$py" "$reference" --hf hf_sharded --val "$tmp/val" --seq-len $S > ref_sharded.json 2> ref.err ||
  { cat ref.err; fail "glm4_moe_reference.py on the sharded export"; }
# Exact: the same program on the same float64 values (the shards hold the
# same tensors' bytes) in the same environment (so the same BLAS kernel and
# thread count for numpy's matmuls), the same shapes and order.
cmp -s ref.json ref_sharded.json || fail "the sharded export gives another result: $(cat ref_sharded.json)"
"$build/moe-export" --checkpoint "$ckpt" --output hf_bf16 > export_bf16.log 2>&1 ||
  { cat export_bf16.log; fail "moe-export (bfloat16)"; }
"$py" - hf/model.safetensors hf_bf16/model.safetensors "$repo/tests/scripts" <<'PY' || fail "the bfloat16 export"
import sys
sys.path.insert(0, sys.argv[3])
from glm4_moe_reference import read_safetensors, np
a, b = read_safetensors(sys.argv[1]), read_safetensors(sys.argv[2])
a.pop("__metadata__", None)
b.pop("__metadata__", None)
assert set(a) == set(b), "the bfloat16 and float32 exports hold different tensor names"
for n in sorted(a):
    (da, sa, ra), (db, sb, rb) = a[n], b[n]
    if n.endswith("e_score_correction_bias"):
        assert (db, sb, rb) == (da, sa, ra), f"{n}: {db} {sb}, not the float32 export's bytes"
        continue
    assert db == "BF16" and sb == sa, f"{n}: {db} {sb}, expected BF16 {sa}"
    u = np.frombuffer(ra, "<u4").astype(np.uint64)
    rne = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    got = np.frombuffer(rb, "<u2")
    assert np.array_equal(rne, got), \
        f"{n}: element {int(np.argmax(rne != got))} is not the float32 value rounded to nearest even"
print(f"bfloat16 export: {len(b)} tensors, the bias float32, the rest round-to-nearest-even")
PY

# 3c. The check can fail: the export with layer 2's experts 0 and 1 swapped
# (the smallest of the errors tried above) is more than 1e-4 away.
"$py" - hf hf_swapped "$repo/tests/scripts" <<'PY' || fail "cannot write the swapped-experts copy"
import json, os, shutil, struct, sys
sys.path.insert(0, sys.argv[3])
from glm4_moe_reference import read_safetensors
shutil.copytree(sys.argv[1], sys.argv[2])
st = read_safetensors(os.path.join(sys.argv[2], "model.safetensors"))
st.pop("__metadata__", None)
for k in ("gate_proj", "up_proj", "down_proj"):
    a, b = f"model.layers.2.mlp.experts.0.{k}.weight", f"model.layers.2.mlp.experts.1.{k}.weight"
    st[a], st[b] = st[b], st[a]
header, blobs, off = {}, [], 0
for n, (dt, sh, raw) in st.items():
    header[n] = {"dtype": dt, "shape": sh, "data_offsets": [off, off + len(raw)]}
    blobs.append(raw)
    off += len(raw)
h = json.dumps(header).encode()
with open(os.path.join(sys.argv[2], "model.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
PY
"$py" "$reference" --hf hf_swapped --val "$tmp/val" --seq-len $S > ref_swapped.json 2> ref.err ||
  { cat ref.err; fail "glm4_moe_reference.py on the swapped copy"; }
"$py" - eval.json ref_swapped.json <<'PY' || fail "swapping two experts goes unnoticed: the check is too weak"
import json, sys
ev, rf = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
rel = abs(rf["loss"] - ev["loss"]) / abs(ev["loss"])
print(f"negative control (layer 2 experts 0 and 1 swapped): loss {rf['loss']:.9f}, {rel:.3e} relative from moe-eval")
sys.exit(0 if rel > 1e-4 else 1)
PY

# 4. The round trip: --from-hf gives the checkpoint's tensors bit for bit.
# The import writes a checkpoint directory: CKPT2/step_00000000 (named by
# CKPT2/latest), or the checkpoint itself in CKPT2.
"$build/moe-export" --from-hf hf --output ckpt2 > import.log 2>&1 ||
  { cat import.log; fail "moe-export --from-hf exited non-zero"; }
ckpt2=ckpt2
[ -f ckpt2/latest ] && ckpt2="ckpt2/$(cat ckpt2/latest)"
[ -f "$ckpt2/model.safetensors" ] || { ls -R ckpt2; fail "no model.safetensors in the imported $ckpt2"; }
[ -f "$ckpt2/trainer_state.json" ] || fail "no trainer_state.json in the imported $ckpt2"
"$py" - "$ckpt/model.safetensors" "$ckpt2/model.safetensors" "$repo/tests/scripts" <<'PY' ||
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
# Exact: the weights are the same bytes (checked above), the model config
# comes back from config.json the same, and both moe-eval runs pass the same
# --backend cpu --threads 2 --batch 8, so the same kernel, GEMM shapes and
# thread count (OpenBLAS may round otherwise with another thread count).
"$build/moe-eval" --checkpoint "$ckpt2" --data "$tmp/val" --backend cpu --threads 2 --batch 8 \
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
