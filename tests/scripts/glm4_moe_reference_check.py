#!/usr/bin/env python3
"""Self-checks of tests/scripts/glm4_moe_reference.py on hand-made cases whose answer
is known without it: the safetensors reader (F32, BF16 bit patterns, a
sharded index, a missing / unexpected tensor), the validation cut, the router
(the bias changing the selection, group-limited selection, normalisation and
scaling), rotary attention against a slow per-position loop with complex
rotations, and whole-model losses of degenerate models (ln V for zero logits,
a closed form when only embedding, final norm and lm_head act).
    tests/scripts/glm4_moe_reference_check.py
Exit 0 passed, 1 failed."""

import json
import math
import os
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import glm4_moe_reference as ref  # noqa: E402  (re-execs under /usr/bin/python3 without numpy)

np = ref.np
REF = os.path.join(HERE, "glm4_moe_reference.py")


def fail(msg):
    print(f"FAIL: {msg}")
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def write_safetensors(path, tensors, dtype="F32"):
    """tensors: {name: float array}; written F32 or BF16 (truncating)."""
    header, blobs, off = {}, [], 0
    for name, a in tensors.items():
        a = np.ascontiguousarray(a, dtype=np.float32)
        raw = a.tobytes() if dtype == "F32" else (a.view(np.uint32) >> 16).astype("<u2").tobytes()
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def write_shard(path, tokens):
    hdr = b"MOELFBTK" + struct.pack("<IIIiiiQQQ", 1, 2, 512, -1, 0, -1, len(tokens), 1, 0)
    hdr += b"\0" * (256 - len(hdr))
    with open(path, "wb") as f:
        f.write(hdr + struct.pack("<%dH" % len(tokens), *tokens))


def tiny_config(**over):
    c = {"model_type": "glm4_moe", "architectures": ["Glm4MoeForCausalLM"], "vocab_size": 16,
         "hidden_size": 8, "intermediate_size": 12, "num_hidden_layers": 2, "num_attention_heads": 2,
         "num_key_value_heads": 2, "head_dim": 4, "hidden_act": "silu", "rms_norm_eps": 1e-6,
         "tie_word_embeddings": False, "attention_bias": False, "use_qk_norm": False,
         "moe_intermediate_size": 6, "num_experts_per_tok": 2, "n_shared_experts": 1,
         "n_routed_experts": 4, "routed_scaling_factor": 1.0, "n_group": 1, "topk_group": 1,
         "first_k_dense_replace": 1, "norm_topk_prob": False,
         "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0,
                             "partial_rotary_factor": 1.0}}
    c.update(over)
    return c


def random_weights(cfg, rng, scale=0.3):
    w = {}
    for name, shape in cfg.expected_shapes().items():
        if name.endswith("layernorm.weight") or name.endswith("norm.weight"):
            w[name] = 1.0 + 0.1 * rng.standard_normal(shape)
        else:
            w[name] = scale * rng.standard_normal(shape)
    return w


def run_ref(args):
    p = subprocess.run(["/usr/bin/python3", REF] + args, capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


def main():
    rng = np.random.default_rng(7)
    tmp = tempfile.mkdtemp(prefix="glm4-ref-check.")

    # --- safetensors: BF16 bit patterns -> fp32 (high half), F32 exact.
    bits = np.array([0x3F80, 0xC000, 0x3EAA, 0x0000, 0x8000, 0x7F80], dtype="<u2")
    want = np.array([1.0, -2.0, 0.33203125, 0.0, -0.0, np.inf])
    h = json.dumps({"__metadata__": {"format": "pt"},
                    "b": {"dtype": "BF16", "shape": [2, 3], "data_offsets": [0, 12]},
                    "f": {"dtype": "F32", "shape": [1], "data_offsets": [12, 16]}}).encode()
    with open(os.path.join(tmp, "b.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + bits.tobytes() + struct.pack("<f", 0.1))
    st = ref.read_safetensors(os.path.join(tmp, "b.safetensors"))
    got = ref.decode_tensor("b", *st["b"])
    check(got.shape == (2, 3) and np.array_equal(got.ravel(), want)
          and np.signbit(got.ravel()[4]), f"bf16 decode: {got.ravel()}")
    check(ref.decode_tensor("f", *st["f"])[0] == np.float32(0.1), "f32 decode")
    print("ok: safetensors F32 / BF16 decode")

    # --- validation cut: 10 tokens, S = 3 -> 3 sequences, token 0 never a target.
    vdir = os.path.join(tmp, "val")
    os.makedirs(vdir)
    write_shard(os.path.join(vdir, "val_00001.bin"), [5, 6, 7, 8])
    write_shard(os.path.join(vdir, "val_00000.bin"), [0, 1, 2, 3, 4, 5])  # first by name
    write_shard(os.path.join(vdir, "train_00000.bin"), [9] * 20)          # not val: ignored
    x, y = ref.validation_sequences(vdir, 3, 0, 16)
    check(x.tolist() == [[0, 1, 2], [3, 4, 5], [5, 6, 7]] and
          y.tolist() == [[1, 2, 3], [4, 5, 5], [6, 7, 8]], f"validation cut: {x.tolist()} {y.tolist()}")
    x, y = ref.validation_sequences(vdir, 3, 2, 16)  # sequences 0 * 3 // 2 = 0 and 1 * 3 // 2 = 1
    check(x.tolist() == [[0, 1, 2], [3, 4, 5]], f"--max-seqs 2: {x.tolist()}")
    long_dir = os.path.join(tmp, "val_long")  # 31 tokens, S = 3: 10 sequences
    os.makedirs(long_dir)
    write_shard(os.path.join(long_dir, "val_00000.bin"), list(range(31)))
    x, _ = ref.validation_sequences(long_dir, 3, 4, 64)  # sequences 0, 2, 5, 7
    check(x[:, 0].tolist() == [0, 6, 15, 21], f"--max-seqs 4 of 10: {x.tolist()}")
    print("ok: validation sequences (stream order, S + 1 windows stepping S, val_* by name)")

    # Tolerances: everything is float64. The router's logits go through an identity gate (exact),
    # so its weights are a sigmoid or two away from the hand value: a few ulps, 1e-15 is 9 ulps
    # at 0.88. Where numpy's BLAS or exp/log sums enter (attention, losses), results carry
    # ~K * 2^-53 of sum|terms| (K <= 18 here, values O(10)): ~1e-14 at worst, held to 1e-12.
    # --- router: E = 4, k = 1; the bias moves the choice, the weight is the unbiased score.
    cfg = ref.Glm4MoeConfig(tiny_config(hidden_size=4, n_routed_experts=4, num_experts_per_tok=1))
    gate = np.eye(4)
    xin = np.array([[2.0, 1.0, 0.0, -1.0]])
    idx, wts, _ = ref.route(cfg, xin, gate, np.zeros(4))
    check(idx.tolist() == [[0]] and abs(wts[0, 0] - 1 / (1 + math.exp(-2))) < 1e-15, "router no bias")
    idx, wts, _ = ref.route(cfg, xin, gate, np.array([0.0, 0.2, 0.0, 0.0]))
    # sigmoid(2) = 0.8808 < sigmoid(1) + 0.2 = 0.9311: expert 1, weight sigmoid(1) unbiased.
    check(idx.tolist() == [[1]] and abs(wts[0, 0] - 1 / (1 + math.exp(-1))) < 1e-15,
          f"router bias: {idx} {wts}")
    # k = 2, normalised and scaled by 2.5.
    cfg = ref.Glm4MoeConfig(tiny_config(hidden_size=4, n_routed_experts=4, num_experts_per_tok=2,
                                        norm_topk_prob=True, routed_scaling_factor=2.5))
    idx, wts, _ = ref.route(cfg, xin, gate, np.zeros(4))
    s0, s1 = 1 / (1 + math.exp(-2)), 1 / (1 + math.exp(-1))
    check(sorted(idx[0].tolist()) == [0, 1], "router k=2")
    got = dict(zip(idx[0].tolist(), wts[0].tolist()))
    check(abs(got[0] - 2.5 * s0 / (s0 + s1)) < 1e-14 and abs(got[1] - 2.5 * s1 / (s0 + s1)) < 1e-14,
          f"router norm/scale: {got}")
    # Groups: E = 8 in 4 groups of 2, keep the 2 best groups (sum of their top 2), then top-2.
    # Scores (logits through sigmoid are monotone): group 0 = {e0 0.95, e1 0.0},
    # group 1 = {0.6, 0.6}, group 2 = {0.7, 0.5}, group 3 = {0.1, 0.1}: group sums
    # 0.95, 1.2, 1.2, 0.2 -> groups 1, 2; the best expert overall (e0) is excluded.
    cfg = ref.Glm4MoeConfig(tiny_config(hidden_size=8, n_routed_experts=8, num_experts_per_tok=2,
                                        n_group=4, topk_group=2))
    target = np.array([0.95, 0.0001, 0.6, 0.6, 0.7, 0.5, 0.1, 0.1])
    logits = np.log(target / (1 - target))
    idx, wts, _ = ref.route(cfg, logits[None, :], np.eye(8), np.zeros(8))
    check(sorted(idx[0].tolist()) == [2, 4] or sorted(idx[0].tolist()) == [3, 4],
          f"group-limited selection: {idx}")
    check(abs(sorted(wts[0].tolist())[1] - 0.7) < 1e-12, "group-limited weights")
    # The published 0.0 mask: E = 4 in 2 groups of 2, keep 1, k = 2, normalised, scale 2.
    # s = {0.1, 0.1, 0.9, 0.3}, b = {0, 0, 0, -0.5}: keys {0.1, 0.1, 0.9, -0.2}, group scores
    # 0.2 and 0.7 keep group 1, but its expert 3 (-0.2) loses to expert 0's masked 0.0 (expert
    # 1's too; the tie to the lower index): {0, 2}, one token with a dropped group's expert.
    # The bias shifted by 0.5 + 2^-14 (moe-export's) makes every key positive: {2, 3}, weights
    # 2 * 0.9 / 1.2 and 2 * 0.3 / 1.2 from the unbiased scores; group margin 0.5 either way.
    cfg = ref.Glm4MoeConfig(tiny_config(hidden_size=4, n_routed_experts=4, num_experts_per_tok=2,
                                        n_group=2, topk_group=1, norm_topk_prob=True,
                                        routed_scaling_factor=2.0))
    target = np.array([0.1, 0.1, 0.9, 0.3])
    logits = np.log(target / (1 - target))[None, :]
    raw = np.array([0.0, 0.0, 0.0, -0.5])
    idx, wts, info = ref.route(cfg, logits, np.eye(4), raw)
    check(idx[0].tolist() == [2, 0] and info["dropped"] == 1 and abs(info["group_margin"] - 0.5) < 1e-12,
          f"0.0 mask, raw bias: {idx} {info}")
    check(abs(wts[0, 0] - 2 * 0.9 / 1.0) < 1e-12 and abs(wts[0, 1] - 2 * 0.1 / 1.0) < 1e-12,
          f"0.0 mask, raw bias weights: {wts}")
    idx, wts, info = ref.route(cfg, logits, np.eye(4), raw + 0.5 + 2.0 ** -14)
    check(idx[0].tolist() == [2, 3] and info["dropped"] == 0 and abs(info["group_margin"] - 0.5) < 1e-12,
          f"0.0 mask, shifted bias: {idx} {info}")
    check(abs(wts[0, 0] - 1.5) < 1e-12 and abs(wts[0, 1] - 0.5) < 1e-12, f"shifted bias weights: {wts}")
    # norm_topk_prob's 1e-20: selected scores that underflowed to 0 give weights 0, not 0/0.
    with np.errstate(over="ignore"):
        idx, wts, _ = ref.route(cfg, np.full((1, 4), -1000.0), np.eye(4), raw + 0.5 + 2.0 ** -14)
    check(np.array_equal(wts, np.zeros((1, 2))), f"1e-20 in the normalisation: {wts}")
    print("ok: router (bias in selection only, norm + scale, group-limited top-k, the 0.0 mask)")

    # --- attention with RoPE (partial and full) and GQA against a slow loop.
    for prf, kv in ((1.0, 2), (0.5, 1)):
        cfg = ref.Glm4MoeConfig(tiny_config(hidden_size=8, num_attention_heads=2, num_key_value_heads=kv,
                                            head_dim=4, rope_parameters={"rope_type": "default",
                                                                          "rope_theta": 100.0,
                                                                          "partial_rotary_factor": prf}))
        S, D, H, hd = 5, 8, 2, 4
        w = {"p.self_attn.q_proj.weight": rng.standard_normal((H * hd, D)),
             "p.self_attn.k_proj.weight": rng.standard_normal((kv * hd, D)),
             "p.self_attn.v_proj.weight": rng.standard_normal((kv * hd, D)),
             "p.self_attn.o_proj.weight": rng.standard_normal((D, H * hd))}
        xin = rng.standard_normal((1, S, D))
        cos, sin = ref.rotary_tables(cfg, S)
        got = ref.attention(cfg, w, "p.", xin, cos, sin)[0]
        rot = int(hd * prf)

        def rope(vec, pos):  # pairs (i, i + rot/2) rotated by pos * theta^(-2i/rot), as complex numbers
            out = vec.copy()
            for i in range(rot // 2):
                z = complex(vec[i], vec[i + rot // 2]) * complex(math.cos(pos * 100.0 ** (-2 * i / rot)),
                                                                  math.sin(pos * 100.0 ** (-2 * i / rot)))
                out[i], out[i + rot // 2] = z.real, z.imag
            return out
        want = np.zeros((S, D))
        for t in range(S):
            heads = []
            for hh in range(H):
                g = hh // (H // kv)
                qv = rope((w["p.self_attn.q_proj.weight"] @ xin[0, t])[hh * hd:(hh + 1) * hd], t)
                sc, vs = [], []
                for u in range(t + 1):
                    kvec = rope((w["p.self_attn.k_proj.weight"] @ xin[0, u])[g * hd:(g + 1) * hd], u)
                    sc.append(float(qv @ kvec) / math.sqrt(hd))
                    vs.append((w["p.self_attn.v_proj.weight"] @ xin[0, u])[g * hd:(g + 1) * hd])
                m = max(sc)
                e = [math.exp(s - m) for s in sc]
                heads.append(sum(ei * vi for ei, vi in zip(e, vs)) / sum(e))
            want[t] = w["p.self_attn.o_proj.weight"] @ np.concatenate(heads)
        err = float(np.abs(got - want).max())
        check(err < 1e-12, f"attention (partial_rotary_factor {prf}, kv heads {kv}): max error {err}")
    print("ok: causal attention with RoPE (full and partial rotary), GQA")

    # --- whole model, degenerate cases, through the command line.
    V, D = 16, 8
    raw = tiny_config()
    cfg = ref.Glm4MoeConfig(raw)
    toks = [int(t) for t in rng.integers(0, V, 3 * 6 + 1)]
    write_shard(os.path.join(tmp, "v.bin"), toks)
    inputs, targets = ref.validation_sequences(os.path.join(tmp, "v.bin"), 6, 0, V)

    def export(d, w, dtype="F32", sharded=False, conf=raw):
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(conf, f)
        if not sharded:
            write_safetensors(os.path.join(d, "model.safetensors"), w, dtype)
            return
        names = sorted(w)
        parts = [names[::2], names[1::2]]
        wmap = {}
        for i, part in enumerate(parts):
            fn = f"model-0000{i + 1}-of-00002.safetensors"
            write_safetensors(os.path.join(d, fn), {n: w[n] for n in part}, dtype)
            wmap.update({n: fn for n in part})
        with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {}, "weight_map": wmap}, f)

    # (a) every projection zero: logits 0, loss ln V, with and without bias.
    w = {n: np.zeros(s) for n, s in cfg.expected_shapes().items()}
    export(os.path.join(tmp, "zero"), w)
    rc, out, err = run_ref(["--hf", os.path.join(tmp, "zero"), "--val", os.path.join(tmp, "v.bin"),
                            "--seq-len", "6"])
    check(rc == 0, f"zero model: rc {rc}: {err}")
    j = json.loads(out)
    check(abs(j["loss"] - math.log(V)) < 1e-12 and j["tokens"] == 18 and j["sequences"] == 3,
          f"zero model: {j}")
    print(f"ok: zero model loss {j['loss']:.12f} = ln {V}")

    # (b) only embedding, final norm and lm_head act (o_proj, down projections zero):
    # the loss is the cross-entropy of rmsnorm(embed[x]) @ lm_head^T, computed here.
    w = random_weights(cfg, rng)
    for n in w:
        if n.endswith("o_proj.weight") or n.endswith("down_proj.weight"):
            w[n] = np.zeros_like(w[n])
    w = {n: np.float32(a).astype(np.float64) for n, a in w.items()}  # what an F32 file holds
    export(os.path.join(tmp, "embed"), w)
    e = w["model.embed_tokens.weight"][inputs.ravel()]
    e = w["model.norm.weight"] * e / np.sqrt((e * e).mean(-1, keepdims=True) + 1e-6)
    lg = e @ w["lm_head.weight"].T
    want = float(np.mean([math.log(sum(math.exp(v) for v in row)) - row[t]
                          for row, t in zip(lg.tolist(), targets.ravel().tolist())]))
    rc, out, err = run_ref(["--hf", os.path.join(tmp, "embed"), "--val", os.path.join(tmp, "v.bin"),
                            "--seq-len", "6"])
    check(rc == 0, f"embed model: rc {rc}: {err}")
    j = json.loads(out)
    check(abs(j["loss"] - want) < 1e-12, f"embed model: {j['loss']} vs {want}")
    print(f"ok: embedding/norm/lm_head model loss {j['loss']:.12f} (closed form {want:.12f})")

    # (c) a random model: single F32 file, sharded index, and BF16 (its weights
    # rounded to bf16 by truncation, the same loss as F32 of the truncated values).
    w = random_weights(cfg, rng)
    last = "model.layers.1.mlp.gate.e_score_correction_bias"
    w[last] = np.array([0.3, -0.3, 0.1, -0.1])
    w = {n: np.float32(a).astype(np.float64) for n, a in w.items()}
    trunc = {n: ((np.float32(a).view(np.uint32) >> 16) << 16).view(np.float32).astype(np.float64)
             for n, a in w.items()}
    export(os.path.join(tmp, "r1"), w)
    export(os.path.join(tmp, "r2"), w, sharded=True)
    export(os.path.join(tmp, "r3"), w, dtype="BF16")
    export(os.path.join(tmp, "r4"), trunc)
    res = []
    for d in ("r1", "r2", "r3", "r4"):
        rc, out, err = run_ref(["--hf", os.path.join(tmp, d), "--val", os.path.join(tmp, "v.bin"),
                                "--seq-len", "6", "--batch", "2"])
        check(rc == 0, f"{d}: rc {rc}: {err}")
        res.append(json.loads(out))
    # Exact by construction: the same weights through the same code, shapes and BLAS on one machine
    # (and a bf16 file reads as exactly its truncated f32 values).
    check(res[0] == res[1], f"sharded differs from single file: {res[0]} {res[1]}")
    check(res[2] == res[3], f"bf16 file differs from its truncated f32 values: {res[2]} {res[3]}")
    check(res[0]["loss"] != res[2]["loss"], "bf16 rounding changed nothing")
    direct = ref.forward_loss(cfg, w, inputs, targets) / targets.size
    check(abs(direct - res[0]["loss"]) < 1e-12, "batching changed the loss")
    check(sum(res[0]["bias_changed_selections"]) > 0 and res[0]["loss_without_bias"] != res[0]["loss"],
          f"the bias changed nothing: {res[0]}")
    print(f"ok: random model loss {res[0]['loss']:.10f} single = sharded; bf16 {res[2]['loss']:.10f}; "
          f"bias changes {res[0]['bias_changed_selections']} selections, loss without it "
          f"{res[0]['loss_without_bias']:.10f}")

    # --- bad inputs: one line, exit 2.
    w1 = dict(w)
    del w1["model.layers.1.mlp.experts.3.up_proj.weight"]
    export(os.path.join(tmp, "bad1"), w1)
    w2 = dict(w)
    w2["model.layers.1.mlp.experts.4.up_proj.weight"] = w["model.layers.1.mlp.experts.3.up_proj.weight"]
    export(os.path.join(tmp, "bad2"), w2)
    conf3 = dict(raw, model_type="llama")
    export(os.path.join(tmp, "bad3"), w, conf=conf3)
    for d, msg in (("bad1", "missing tensor model.layers.1.mlp.experts.3.up_proj.weight"),
                   ("bad2", "unexpected tensor model.layers.1.mlp.experts.4.up_proj.weight"),
                   ("bad3", "model_type 'llama'"), ("nowhere", "nowhere/config.json: cannot read")):
        rc, out, err = run_ref(["--hf", os.path.join(tmp, d), "--val", os.path.join(tmp, "v.bin"),
                                "--seq-len", "6"])
        check(rc == 2 and msg in err and len(err.strip().splitlines()) == 1,
              f"{d}: rc {rc}, stderr {err!r}, expected one line with {msg!r}")
    print("ok: bad inputs (missing / unexpected tensor, wrong model_type, no directory): exit 2, one line")
    print("glm4_moe_reference_check: ok")


if __name__ == "__main__":
    main()
