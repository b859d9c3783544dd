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
# in float32 and rounds the rest to nearest even. Group-limited routing
# (n_group 4, topk_group 2): the export's shifted bias makes the reference's
# published 0.0 mask agree with training; config.json with n_group 1, or the
# bias unshifted, must disagree (negative controls); the import reads it back.
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

# 3d. Group-limited routing (moe.n_group 4, moe.topk_group 2, top-3 of 8):
# training never picks a dropped group's expert, glm4_moe (the reference, as
# published) sets its key to 0.0, so the two differ when a kept expert's
# s + b is below 0. The export shifts each layer's bias so that every kept key
# is > 0 (docs/export.md); then the reference must agree with moe-eval as in
# step 3 (same tolerance, loads equal) and pick no dropped group's expert.
# The trained bias here lies in [-0.1, 0.3], too close to 0 for the 0.0 mask
# to matter (the unshifted export then picks no dropped group's expert), so
# the checkpoint tested is the trained one with every bias lowered by 1, the
# state of a run whose bias drifted down: a constant, so moe-eval routes it as
# the trained one (asserted, loss and loads identical), but now many kept
# keys are negative. Negative controls, each must fail the check: config.json with
# n_group 1 (all groups, glm4_moe's default), and the bias exported unshifted,
# where the 0.0 mask picks dropped groups' experts.
train grouped --set train.steps=30 --set moe.n_group=4 --set moe.topk_group=2 --set moe.top_k=3
gtrained="$tmp/grouped/checkpoints/step_00000030"
gckpt="$tmp/grouped_low/step_00000030"
"$py" - "$gtrained" "$gckpt" "$repo/tests/scripts" <<'PY' || fail "cannot write the lowered-bias checkpoint"
import json, os, shutil, struct, sys
sys.path.insert(0, sys.argv[3])
from glm4_moe_reference import read_safetensors, np
shutil.copytree(sys.argv[1], sys.argv[2])
path = os.path.join(sys.argv[2], "model.safetensors")
st = read_safetensors(path)
meta = st.pop("__metadata__", None)
for L in (1, 2):
    dt, sh, raw = st[f"layers.{L}.moe.router_bias"]
    st[f"layers.{L}.moe.router_bias"] = (dt, sh, (np.frombuffer(raw, "<f4") - np.float32(1)).astype("<f4").tobytes())
header, blobs, off = ({"__metadata__": meta} if meta else {}), [], 0
for n, (dt, sh, raw) in st.items():
    header[n] = {"dtype": dt, "shape": sh, "data_offsets": [off, off + len(raw)]}
    blobs.append(raw)
    off += len(raw)
h = json.dumps(header).encode()
h += b" " * (-len(h) % 8)
with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
PY
"$build/moe-export" --checkpoint "$gckpt" --output hf_grouped --dtype float32 > export_grouped.log 2>&1 ||
  { cat export_grouped.log; fail "moe-export of the group-limited checkpoint"; }
grep -q "router bias: e_score_correction_bias is the training bias shifted by" export_grouped.log ||
  { cat export_grouped.log; fail "the group-limited export does not say that it shifted the bias"; }
"$build/moe-eval" --checkpoint "$gckpt" --data "$tmp/val" --backend cpu --threads 2 --batch 8 \
  --output eval_grouped.json > eval_grouped.log 2>&1 || { cat eval_grouped.log; fail "moe-eval (grouped)"; }
"$build/moe-eval" --checkpoint "$gtrained" --data "$tmp/val" --backend cpu --threads 2 --batch 8 \
  --output eval_trained.json > eval_trained.log 2>&1 || { cat eval_trained.log; fail "moe-eval (grouped, trained)"; }
"$py" - eval_trained.json eval_grouped.json <<'PY' || fail "lowering every bias by 1 changed moe-eval's routing"
import json, sys
a, b = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
print(f"grouped: trained bias loss {a['loss']!r}, lowered by 1 {b['loss']!r}")
sys.exit(0 if a["expert_loads"] == b["expert_loads"] and a["loss"] == b["loss"] else 1)
PY
"$py" - hf_grouped "$gckpt/model.safetensors" "$repo/tests/scripts" <<'PY' || fail "cannot write the grouped negative-control copies"
import json, os, shutil, struct, sys
sys.path.insert(0, sys.argv[3])
from glm4_moe_reference import read_safetensors, decode_tensor, np
src = sys.argv[1]
conf = json.load(open(os.path.join(src, "config.json")))
assert (conf["n_group"], conf["topk_group"], conf["num_experts_per_tok"]) == (4, 2, 3), conf
# The exported bias is the checkpoint's plus one constant per layer, its smallest entry 2^-14.
ours = read_safetensors(sys.argv[2])
st = read_safetensors(os.path.join(src, "model.safetensors"))
st.pop("__metadata__", None)
for L in (1, 2):
    b = decode_tensor("b", *ours[f"layers.{L}.moe.router_bias"])
    name = f"model.layers.{L}.mlp.gate.e_score_correction_bias"
    e = decode_tensor(name, *st[name])
    # c: 2^-14 - min b in float32, stepped up while float32(min b + c) < 2^-14.
    b32, floor = b.astype(np.float32), np.float32(2.0 ** -14)
    c = np.float32(floor - b32.min())
    while b32.min() + c < floor:
        c = np.nextafter(c, np.float32(np.inf))
    assert np.array_equal(e, (b32 + c).astype(np.float64)) and e.min() >= 2.0 ** -14, (L, b, e)
    print(f"layer {L}: bias [{b.min():.4f}, {b.max():.4f}], exported shifted by {c:.9g}")
shutil.copytree(src, "hf_grouped_n1")
conf1 = dict(conf, n_group=1, topk_group=1)
json.dump(conf1, open("hf_grouped_n1/config.json", "w"), indent=2)
shutil.copytree(src, "hf_grouped_raw")
for L in (1, 2):
    name = f"model.layers.{L}.mlp.gate.e_score_correction_bias"
    st[name] = ours[f"layers.{L}.moe.router_bias"]
header, blobs, off = {}, [], 0
for n, (dt, sh, raw) in st.items():
    header[n] = {"dtype": dt, "shape": sh, "data_offsets": [off, off + len(raw)]}
    blobs.append(raw)
    off += len(raw)
h = json.dumps(header).encode()
with open("hf_grouped_raw/model.safetensors", "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
PY
# agrees EVAL REF: step 3's test (the same tokens, loss within 1e-4 relative,
# equal expert loads), and no dropped group's expert picked.
agrees() {
  "$py" - "$1" "$2" <<'PY'
import json, sys
ev, rf = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
rel = abs(rf["loss"] - ev["loss"]) / abs(ev["loss"])
print(f"  {sys.argv[2]}: loss {rf['loss']:.9f} vs moe-eval {ev['loss']:.9f} ({rel:.3e} relative); "
      f"loads equal {rf['expert_loads'] == ev['expert_loads']}; dropped-group selections "
      f"{rf['dropped_group_selections']}; smallest top-k margin {rf['min_selection_margin']}, "
      f"group margin {rf['min_group_margin']}")
ok = ((rf["tokens"], rf["sequences"]) == (ev["tokens"], ev["sequences"]) and rel <= 1e-4
      and rf["expert_loads"] == ev["expert_loads"] and sum(rf["dropped_group_selections"]) == 0)
sys.exit(0 if ok else 1)
PY
}
for d in hf_grouped hf_grouped_n1 hf_grouped_raw; do
  "$py" "$reference" --hf $d --val "$tmp/val" --seq-len $S > ref_$d.json 2> ref.err ||
    { cat ref.err; fail "glm4_moe_reference.py on $d"; }
done
agrees eval_grouped.json ref_hf_grouped.json || fail "the group-limited export disagrees with moe-eval"
agrees eval_grouped.json ref_hf_grouped_n1.json &&
  fail "negative control: config.json with n_group 1 still agrees with moe-eval: the check is too weak"
agrees eval_grouped.json ref_hf_grouped_raw.json &&
  fail "negative control: the unshifted bias still agrees with moe-eval: the shift is not what makes it agree"
"$py" -c 'import json, sys; sys.exit(0 if sum(json.load(open(sys.argv[1]))["dropped_group_selections"]) > 0 else 1)' \
  ref_hf_grouped_raw.json || fail "the unshifted bias picks no dropped group's expert: the case does not test the 0.0 mask"
# The import reads n_group / topk_group back and keeps the shifted bias as
# it is; moe-eval on it routes as on the original (a constant shift).
"$build/moe-export" --from-hf hf_grouped --output ckpt_grouped > import_grouped.log 2>&1 ||
  { cat import_grouped.log; fail "moe-export --from-hf of the group-limited export"; }
gckpt2="ckpt_grouped/$(cat ckpt_grouped/latest)"
grep -q "n_group: 4" "$gckpt2/trainer_state.json" && grep -q "topk_group: 2" "$gckpt2/trainer_state.json" ||
  fail "the imported config lacks moe.n_group 4 / moe.topk_group 2"
"$build/moe-eval" --checkpoint "$gckpt2" --data "$tmp/val" --backend cpu --threads 2 --batch 8 \
  --output eval_grouped2.json > eval_grouped2.log 2>&1 || { cat eval_grouped2.log; fail "moe-eval (grouped import)"; }
"$py" - eval_grouped.json eval_grouped2.json <<'PY' || fail "the imported group-limited checkpoint routes otherwise"
import json, sys
a, b = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
rel = abs(a["loss"] - b["loss"]) / abs(a["loss"])
print(f"  imported: loss {b['loss']!r} vs {a['loss']!r} ({rel:.1e} relative), loads equal {a['expert_loads'] == b['expert_loads']}")
sys.exit(0 if a["expert_loads"] == b["expert_loads"] and rel <= 1e-6 else 1)
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
# An import whose groups the config would refuse: n_group 3 does not divide 8.
cp -r hf_grouped hf_bad_groups
"$py" -c 'import json, sys; p = sys.argv[1]; c = json.load(open(p)); c["n_group"] = 3; json.dump(c, open(p, "w"))' \
  hf_bad_groups/config.json
bad "config.json: n_group: 3 does not divide n_routed_experts = 8" --from-hf hf_bad_groups --output ckpt_bad3
echo "export_test: ok"
