#!/usr/bin/env python3
"""An independent reference forward pass of Hugging Face transformers'
glm4_moe architecture (Glm4MoeForCausalLM), in numpy, float64 throughout.

    tests/scripts/glm4_moe_reference.py --hf DIR --val SHARD_OR_DIR --seq-len S [--max-seqs N]

Written from the published definition (transformers, src/transformers/models/
glm4_moe/modeling_glm4_moe.py and configuration_glm4_moe.py), not from
moe-lfb's C++ model: only the validation data layout (how moe-eval cuts the
split into sequences) follows moe-lfb (src/data/shard_dataset.cpp,
ValidationReader; src/eval/evaluator.cpp).

Reads DIR/config.json and the weights (DIR/model.safetensors, or the shards
named by DIR/model.safetensors.index.json), F32 or BF16 (F64 also accepted).
The validation split: a shard file, a directory (its val_*.bin, by name) or a
glob; sequence k holds tokens [k*S, k*S + S] of the concatenated stream, the
first S the inputs, the last S the targets; (total - 1) // S sequences, or N
of them evenly spaced with --max-seqs N, sequence i * total // N for i < N
(what `moe-eval --max-tokens N*S` evaluates).

Prints one JSON line:
  loss                      mean next-token cross-entropy over all targets
  tokens, sequences         targets and sequences evaluated
  bias_changed_selections   per MoE layer: tokens whose set of selected experts
                            changes when e_score_correction_bias is dropped
                            from the selection (same router input, the forward
                            with the bias)
  loss_without_bias         the loss of a second forward with the bias zeroed
  min_selection_margin      per MoE layer: the smallest gap between the k-th
                            and (k+1)-th choice score (a near tie that another
                            precision could break the other way)
  min_group_margin          per MoE layer: the smallest gap between the
                            topk_group-th and the next group score (null when
                            every group is kept)
  dropped_group_selections  per MoE layer: tokens whose top-k holds an expert
                            of a dropped group, which the published 0.0 mask
                            allows when a kept expert's score + bias is below 0
  expert_loads              per MoE layer and routed expert: tokens routed
                            there (with the bias), as moe-eval counts them
  compute                   "float64"

Exit codes: 0 done; 2 bad input (one line naming the problem); 1 internal error
or no numpy.
The module's read_safetensors() is also used by tests/scripts/export_test.sh to compare
checkpoints tensor by tensor.
"""

import glob as globmod
import json
import os
import struct
import sys

PROG = "glm4_moe_reference.py"


def _numpy_or_reexec():
    """numpy, re-running the main script (this one, or a script importing it)
    under Debian's /usr/bin/python3 when the interpreter lacks it (a pyenv
    python first on PATH)."""
    try:
        import numpy
        return numpy
    except ImportError:
        deb = "/usr/bin/python3"
        script = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
        if (os.environ.get("MOE_REFERENCE_REEXEC") != "1" and os.path.isfile(script)
                and os.path.exists(deb)
                and os.path.realpath(sys.executable) != os.path.realpath(deb)):
            os.environ["MOE_REFERENCE_REEXEC"] = "1"
            try:
                os.execv(deb, [deb, script] + sys.argv[1:])
            except OSError:
                pass
        print(f"{PROG}: numpy is missing (Debian: python3-numpy; scripts/setup.sh)", file=sys.stderr)
        sys.exit(1)


np = _numpy_or_reexec()


class InputError(Exception):
    pass


# ------------------------------------------------------------- safetensors

_ITEMSIZE = {"F32": 4, "BF16": 2, "F64": 8, "F16": 2, "I32": 4, "I64": 8, "U8": 1}


def read_safetensors(path):
    """{name: (dtype, shape, raw bytes)} of a safetensors file, plus the
    metadata dict under "__metadata__" (absent when the file has none).
    Layout: u64 little-endian header length N, N bytes of JSON
    {name: {dtype, shape, data_offsets: [begin, end]}}, then the data, the
    offsets relative to its start."""
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror})")
    if len(blob) < 8:
        raise InputError(f"{path}: too short for a safetensors file")
    (n,) = struct.unpack("<Q", blob[:8])
    if 8 + n > len(blob):
        raise InputError(f"{path}: header length {n} runs past the end of the file")
    try:
        header = json.loads(blob[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise InputError(f"{path}: unreadable safetensors header ({e})")
    if not isinstance(header, dict):
        raise InputError(f"{path}: safetensors header is not a JSON object")
    data = memoryview(blob)[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            out[name] = info
            continue
        try:
            dtype, shape, (b, e) = info["dtype"], list(info["shape"]), info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise InputError(f"{path}: tensor {name}: malformed header entry")
        if dtype not in _ITEMSIZE:
            raise InputError(f"{path}: tensor {name}: unsupported dtype {dtype}")
        numel = 1
        for d in shape:
            numel *= int(d)
        if not (0 <= b <= e <= len(data)) or e - b != numel * _ITEMSIZE[dtype]:
            raise InputError(f"{path}: tensor {name}: data_offsets [{b}, {e}] do not hold "
                             f"{dtype} {shape}")
        out[name] = (dtype, shape, bytes(data[b:e]))
    return out


def decode_tensor(name, dtype, shape, raw):
    """float64 array of a F32 / BF16 / F64 tensor. BF16 -> fp32 puts the 16
    bits into the high half of a 32-bit word."""
    if dtype == "F32":
        a = np.frombuffer(raw, dtype="<f4")
    elif dtype == "BF16":
        a = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    elif dtype == "F64":
        a = np.frombuffer(raw, dtype="<f8")
    else:
        raise InputError(f"tensor {name}: dtype {dtype} is not a float type this reference reads "
                         "(F32, BF16, F64)")
    return a.astype(np.float64).reshape([int(d) for d in shape])


def load_hf_weights(hf_dir):
    """{name: float64 array} of an exported directory: model.safetensors, or
    the files of model.safetensors.index.json's weight_map."""
    index = os.path.join(hf_dir, "model.safetensors.index.json")
    single = os.path.join(hf_dir, "model.safetensors")
    tensors = {}
    if os.path.exists(index):
        try:
            with open(index) as f:
                wmap = json.load(f)["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise InputError(f"{index}: unreadable index ({e})")
        by_file = {}
        for name, fname in wmap.items():
            by_file.setdefault(fname, []).append(name)
        for fname in sorted(by_file):
            path = os.path.join(hf_dir, fname)
            st = read_safetensors(path)
            st.pop("__metadata__", None)
            for name in by_file[fname]:
                if name not in st:
                    raise InputError(f"{path}: missing tensor {name} (the index places it here)")
            for name in st:
                if wmap.get(name) != fname:
                    raise InputError(f"{path}: tensor {name} is not in the index's weight_map "
                                     "for this file")
                tensors[name] = decode_tensor(name, *st[name])
    elif os.path.exists(single):
        st = read_safetensors(single)
        st.pop("__metadata__", None)
        for name, v in st.items():
            tensors[name] = decode_tensor(name, *v)
    else:
        raise InputError(f"{hf_dir}: neither model.safetensors nor model.safetensors.index.json")
    return tensors


# ------------------------------------------------------------------ config

class Glm4MoeConfig:
    """The fields of config.json the forward pass reads, with the published
    configuration class's defaults where a key is absent."""

    def __init__(self, c):
        def get(k, default):
            return c.get(k, default) if c.get(k) is not None else default
        if c.get("model_type") != "glm4_moe":
            raise InputError(f"config.json: model_type {c.get('model_type')!r}, expected 'glm4_moe'")
        self.vocab_size = int(get("vocab_size", 151552))
        self.hidden_size = int(get("hidden_size", 4096))
        self.intermediate_size = int(get("intermediate_size", 10944))
        self.num_hidden_layers = int(get("num_hidden_layers", 46))
        self.num_attention_heads = int(get("num_attention_heads", 96))
        self.num_key_value_heads = int(get("num_key_value_heads", 8))
        self.head_dim = int(get("head_dim", self.hidden_size // self.num_attention_heads))
        self.hidden_act = get("hidden_act", "silu")
        self.rms_norm_eps = float(get("rms_norm_eps", 1e-5))
        self.tie_word_embeddings = bool(get("tie_word_embeddings", False))
        self.attention_bias = bool(get("attention_bias", False))
        self.use_qk_norm = bool(get("use_qk_norm", False))
        self.moe_intermediate_size = int(get("moe_intermediate_size", 1408))
        self.num_experts_per_tok = int(get("num_experts_per_tok", 8))
        self.n_shared_experts = int(get("n_shared_experts", 1))
        self.n_routed_experts = int(get("n_routed_experts", 128))
        self.routed_scaling_factor = float(get("routed_scaling_factor", 1.0))
        self.n_group = int(get("n_group", 1))
        self.topk_group = int(get("topk_group", 1))
        self.first_k_dense_replace = int(get("first_k_dense_replace", 1))
        self.norm_topk_prob = bool(get("norm_topk_prob", True))
        # RoPE: rope_parameters (newer transformers) or the top-level keys;
        # partial_rotary_factor defaults to 0.5, the class's default.
        rp = c.get("rope_parameters") or c.get("rope_scaling") or {}
        rope_type = rp.get("rope_type", rp.get("type", "default"))
        if rope_type != "default":
            raise InputError(f"config.json: rope_type {rope_type!r}: only 'default' is implemented")
        self.rope_theta = float(rp.get("rope_theta", get("rope_theta", 10000.0)))
        self.partial_rotary_factor = float(rp.get("partial_rotary_factor",
                                                  get("partial_rotary_factor", 0.5)))
        if self.hidden_act != "silu":
            raise InputError(f"config.json: hidden_act {self.hidden_act!r}: only 'silu' is implemented")
        if self.num_attention_heads % self.num_key_value_heads:
            raise InputError("config.json: num_attention_heads is not a multiple of num_key_value_heads")
        E, g = self.n_routed_experts, self.n_group
        if g < 1 or E % g or E // g < 2 or not 1 <= self.topk_group <= g:
            raise InputError(f"config.json: n_group {g} / topk_group {self.topk_group} do not "
                             f"divide {E} routed experts into groups of >= 2")
        if not 1 <= self.num_experts_per_tok <= E:
            raise InputError("config.json: num_experts_per_tok outside [1, n_routed_experts]")

    def expected_shapes(self):
        """{tensor name: shape} of the Hub checkpoint layout (per-expert names)."""
        D, V, H, KV, hd = (self.hidden_size, self.vocab_size, self.num_attention_heads,
                           self.num_key_value_heads, self.head_dim)
        s = {"model.embed_tokens.weight": [V, D], "model.norm.weight": [D]}
        if not self.tie_word_embeddings:
            s["lm_head.weight"] = [V, D]
        for L in range(self.num_hidden_layers):
            p = f"model.layers.{L}."
            s[p + "input_layernorm.weight"] = [D]
            s[p + "post_attention_layernorm.weight"] = [D]
            s[p + "self_attn.q_proj.weight"] = [H * hd, D]
            s[p + "self_attn.k_proj.weight"] = [KV * hd, D]
            s[p + "self_attn.v_proj.weight"] = [KV * hd, D]
            s[p + "self_attn.o_proj.weight"] = [D, H * hd]
            if self.attention_bias:
                s[p + "self_attn.q_proj.bias"] = [H * hd]
                s[p + "self_attn.k_proj.bias"] = [KV * hd]
                s[p + "self_attn.v_proj.bias"] = [KV * hd]
            if self.use_qk_norm:
                s[p + "self_attn.q_norm.weight"] = [hd]
                s[p + "self_attn.k_norm.weight"] = [hd]
            if L < self.first_k_dense_replace:
                I = self.intermediate_size
                s[p + "mlp.gate_proj.weight"] = [I, D]
                s[p + "mlp.up_proj.weight"] = [I, D]
                s[p + "mlp.down_proj.weight"] = [D, I]
            else:
                E, I = self.n_routed_experts, self.moe_intermediate_size
                s[p + "mlp.gate.weight"] = [E, D]
                s[p + "mlp.gate.e_score_correction_bias"] = [E]
                for e in range(E):
                    q = f"{p}mlp.experts.{e}."
                    s[q + "gate_proj.weight"] = [I, D]
                    s[q + "up_proj.weight"] = [I, D]
                    s[q + "down_proj.weight"] = [D, I]
                Is = I * self.n_shared_experts
                if Is > 0:
                    s[p + "mlp.shared_experts.gate_proj.weight"] = [Is, D]
                    s[p + "mlp.shared_experts.up_proj.weight"] = [Is, D]
                    s[p + "mlp.shared_experts.down_proj.weight"] = [D, Is]
        return s


def check_tensors(cfg, w):
    want = cfg.expected_shapes()
    for name, shape in want.items():
        if name not in w:
            raise InputError(f"missing tensor {name} (expected shape {shape})")
        if list(w[name].shape) != shape:
            raise InputError(f"tensor {name} has shape {list(w[name].shape)}, expected {shape}")
    for name in sorted(w):
        if name not in want:
            raise InputError(f"unexpected tensor {name}")


# ------------------------------------------------------------------- model

def rms_norm(x, weight, eps):
    return weight * (x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps))


def silu(x):
    return x / (1.0 + np.exp(-x))


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def swiglu(x, gate_w, up_w, down_w):
    return (silu(x @ gate_w.T) * (x @ up_w.T)) @ down_w.T


def rotary_tables(cfg, S):
    """cos, sin [S, rot_dim] for positions 0..S-1: inverse frequencies
    theta^(-2i/rot_dim), the S x rot_dim/2 angles repeated twice along the
    last axis."""
    rot = int(cfg.head_dim * cfg.partial_rotary_factor)
    inv_freq = 1.0 / cfg.rope_theta ** (np.arange(0, rot, 2, dtype=np.float64) / rot)
    ang = np.arange(S, dtype=np.float64)[:, None] * inv_freq[None, :]
    ang = np.concatenate([ang, ang], axis=-1)
    return np.cos(ang), np.sin(ang)


def apply_rotary(x, cos, sin):
    """x [..., S, head_dim]: the first rot_dim features rotated (rotate-half
    pairing: feature i with i + rot_dim/2), the rest passed through."""
    rot = cos.shape[-1]
    xr, xp = x[..., :rot], x[..., rot:]
    half = rot // 2
    rotated = np.concatenate([-xr[..., half:], xr[..., :half]], axis=-1)
    return np.concatenate([xr * cos + rotated * sin, xp], axis=-1)


def attention(cfg, w, p, x, cos, sin):
    """x [B, S, D] (normed) -> [B, S, D]: causal softmax attention."""
    B, S, _ = x.shape
    H, KV, hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim

    def proj(name, heads):
        y = x @ w[p + f"self_attn.{name}_proj.weight"].T
        if cfg.attention_bias:
            y = y + w[p + f"self_attn.{name}_proj.bias"]
        return y.reshape(B, S, heads, hd)

    q, k, v = proj("q", H), proj("k", KV), proj("v", KV)
    if cfg.use_qk_norm:
        q = rms_norm(q, w[p + "self_attn.q_norm.weight"], cfg.rms_norm_eps)
        k = rms_norm(k, w[p + "self_attn.k_norm.weight"], cfg.rms_norm_eps)
    q, k, v = (t.transpose(0, 2, 1, 3) for t in (q, k, v))  # [B, heads, S, hd]
    q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    rep = H // KV  # query head h reads key/value head h // rep
    k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
    scores = (q @ k.transpose(0, 1, 3, 2)) * hd ** -0.5
    scores = np.where(np.tril(np.ones((S, S), dtype=bool)), scores, -np.inf)
    scores = scores - scores.max(axis=-1, keepdims=True)
    pr = np.exp(scores)
    pr /= pr.sum(axis=-1, keepdims=True)
    out = (pr @ v).transpose(0, 2, 1, 3).reshape(B, S, H * hd)
    return out @ w[p + "self_attn.o_proj.weight"].T


def topk_indices(a, k):
    """Indices of the k largest entries of each row (ties to the lower index)."""
    return np.argsort(-a, axis=-1, kind="stable")[..., :k]


def route(cfg, x, gate_w, bias):
    """x [T, D] -> (indices [T, k], weights [T, k], info): Glm4MoeMoE.route_tokens_to_experts
    as published, step by step:
      router_logits = sigmoid(x W_gate^T)
      for_choice    = router_logits + e_score_correction_bias
      group_scores  = for_choice.view(T, n_group, E // n_group).topk(2).values.sum(-1)
      group_idx     = topk(group_scores, topk_group)
      score_mask    = the experts of those groups
      for_choice    = for_choice.masked_fill(~score_mask, 0.0)   (0.0, not -inf)
      topk_indices  = topk(for_choice, num_experts_per_tok)
      weights       = router_logits[topk_indices], / (sum + 1e-20) if norm_topk_prob,
                      * routed_scaling_factor
    Ties, which torch.topk leaves unspecified, go to the lower index here.
    info: "margin", the smallest k-th minus (k+1)-th masked key over the tokens;
    "group_margin", the smallest topk_group-th minus next group score (inf when
    every group is kept); "dropped", the tokens whose top-k holds an expert of a
    dropped group (only the 0.0 mask allows it: a kept key below 0 loses to it)."""
    T = x.shape[0]
    E, G, TG, k = cfg.n_routed_experts, cfg.n_group, cfg.topk_group, cfg.num_experts_per_tok
    scores = sigmoid(x @ gate_w.T)  # [T, E]
    choice = scores + bias[None, :]
    group_scores = np.sort(choice.reshape(T, G, E // G), axis=-1)[..., -2:].sum(axis=-1)
    group_mask = np.zeros((T, G), dtype=bool)
    np.put_along_axis(group_mask, topk_indices(group_scores, TG), True, axis=-1)
    score_mask = np.repeat(group_mask, E // G, axis=1)  # [T, E]
    masked = np.where(score_mask, choice, 0.0)  # masked_fill(~score_mask, 0.0), as published
    idx = topk_indices(masked, k)
    srt = -np.sort(-masked, axis=-1)
    gsrt = -np.sort(-group_scores, axis=-1)
    info = {
        "margin": float((srt[:, k - 1] - srt[:, k]).min()) if k < E else float("inf"),
        "group_margin": float((gsrt[:, TG - 1] - gsrt[:, TG]).min()) if TG < G else float("inf"),
        "dropped": int((~np.take_along_axis(score_mask, idx, axis=-1)).any(axis=-1).sum()),
    }
    wts = np.take_along_axis(scores, idx, axis=-1)
    if cfg.norm_topk_prob:
        wts = wts / (wts.sum(axis=-1, keepdims=True) + 1e-20)
    return idx, wts * cfg.routed_scaling_factor, info


def moe_block(cfg, w, p, x, use_bias, stats):
    """x [B, S, D] (normed) -> [B, S, D]: routed experts + shared experts."""
    B, S, D = x.shape
    t = x.reshape(B * S, D)
    gate_w = w[p + "mlp.gate.weight"]
    bias = w[p + "mlp.gate.e_score_correction_bias"]
    idx, wts, info = route(cfg, t, gate_w, bias if use_bias else np.zeros_like(bias))
    if stats is not None:
        idx0, _, _ = route(cfg, t, gate_w, np.zeros_like(bias))
        changed = int((np.sort(idx, axis=-1) != np.sort(idx0, axis=-1)).any(axis=-1).sum())
        loads = np.bincount(idx.ravel(), minlength=cfg.n_routed_experts)
        stats.append((changed, info, loads))
    out = np.zeros_like(t)
    for e in range(cfg.n_routed_experts):
        rows, slot = np.nonzero(idx == e)
        if rows.size == 0:
            continue
        q = f"{p}mlp.experts.{e}."
        y = swiglu(t[rows], w[q + "gate_proj.weight"], w[q + "up_proj.weight"],
                   w[q + "down_proj.weight"])
        np.add.at(out, rows, y * wts[rows, slot][:, None])
    if cfg.moe_intermediate_size * cfg.n_shared_experts > 0:
        s = p + "mlp.shared_experts."
        out = out + swiglu(t, w[s + "gate_proj.weight"], w[s + "up_proj.weight"],
                           w[s + "down_proj.weight"])
    return out.reshape(B, S, D)


def forward_loss(cfg, w, inputs, targets, use_bias=True, stats=None):
    """Summed next-token cross-entropy of inputs [B, S] against targets [B, S]."""
    B, S = inputs.shape
    eps = cfg.rms_norm_eps
    cos, sin = rotary_tables(cfg, S)
    h = w["model.embed_tokens.weight"][inputs]  # [B, S, D]
    for L in range(cfg.num_hidden_layers):
        p = f"model.layers.{L}."
        h = h + attention(cfg, w, p, rms_norm(h, w[p + "input_layernorm.weight"], eps), cos, sin)
        x = rms_norm(h, w[p + "post_attention_layernorm.weight"], eps)
        if L < cfg.first_k_dense_replace:
            h = h + swiglu(x, w[p + "mlp.gate_proj.weight"], w[p + "mlp.up_proj.weight"],
                           w[p + "mlp.down_proj.weight"])
        else:
            h = h + moe_block(cfg, w, p, x, use_bias, stats)
    h = rms_norm(h, w["model.norm.weight"], eps)
    head = w["model.embed_tokens.weight" if cfg.tie_word_embeddings else "lm_head.weight"]
    logits = h @ head.T  # [B, S, V]
    mx = logits.max(axis=-1, keepdims=True)
    lse = mx[..., 0] + np.log(np.exp(logits - mx).sum(axis=-1))
    picked = np.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return float((lse - picked).sum())


# -------------------------------------------------------------------- data

SHARD_HEADER = 256


def shard_paths(spec):
    """A directory: its val_*.bin regular files; a glob: its matches; else the
    file itself. Sorted by name."""
    if os.path.isdir(spec):
        out = sorted(os.path.join(spec, n) for n in os.listdir(spec)
                     if n.startswith("val_") and n.endswith(".bin") and len(n) > 8
                     and os.path.isfile(os.path.join(spec, n)))
        if not out:
            raise InputError(f"{spec}: no val_*.bin shards in this directory")
        return out
    if any(c in spec for c in "*?["):
        out = sorted(p for p in globmod.glob(spec) if os.path.isfile(p))
        if not out:
            raise InputError(f"{spec}: no shard file matches")
        return out
    if not os.path.exists(spec):
        raise InputError(f"{spec}: no such shard file or directory")
    return [spec]


def read_shard(path):
    """The tokens of one shard (src/data/shard_format.h): a 256-byte header
    (magic MOELFBTK, version 1, token width 2 or 4, vocab, bos, eos, pad,
    token count, document count, tokenizer hash), then the tokens."""
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror})")
    if len(blob) < SHARD_HEADER or blob[:8] != b"MOELFBTK":
        raise InputError(f"{path}: not a moe-lfb token shard (bad magic or short header)")
    version, width, vocab = struct.unpack_from("<III", blob, 8)
    (count,) = struct.unpack_from("<Q", blob, 32)
    if version != 1 or width not in (2, 4):
        raise InputError(f"{path}: shard version {version}, token width {width} not supported")
    if len(blob) != SHARD_HEADER + count * width:
        raise InputError(f"{path}: {len(blob)} bytes, expected {SHARD_HEADER + count * width} "
                         f"for {count} tokens")
    return np.frombuffer(blob, dtype="<u2" if width == 2 else "<u4", offset=SHARD_HEADER,
                         count=count).astype(np.int64)


def validation_sequences(spec, S, max_seqs, vocab):
    tokens = np.concatenate([read_shard(p) for p in shard_paths(spec)])
    if tokens.size and int(tokens.max()) >= vocab:
        raise InputError(f"{spec}: token {int(tokens.max())} outside the model's vocab {vocab}")
    if tokens.size < S + 1:
        raise InputError(f"{spec}: holds {tokens.size} tokens, fewer than seq_len + 1 = {S + 1}")
    n = (tokens.size - 1) // S
    seqs = np.arange(n)
    if max_seqs and max_seqs < n:
        seqs = np.array([i * n // max_seqs for i in range(max_seqs)])
    starts = seqs[:, None] * S + np.arange(S)[None, :]
    return tokens[starts], tokens[starts + 1]


# -------------------------------------------------------------------- main

def parse_args(argv):
    import argparse

    class Parser(argparse.ArgumentParser):
        def error(self, message):
            raise InputError(message)

    ap = Parser(prog=PROG, description="numpy reference forward pass of glm4_moe (float64)")
    ap.add_argument("--hf", required=True, help="exported Hugging Face directory")
    ap.add_argument("--val", required=True, help="validation shard, directory or glob")
    ap.add_argument("--seq-len", type=int, required=True, help="sequence length S")
    ap.add_argument("--max-seqs", type=int, default=0, help="N sequences evenly spaced over the split (default: all)")
    ap.add_argument("--batch", type=int, default=16, help="sequences per numpy forward")
    a = ap.parse_args(argv)
    if a.seq_len < 1 or a.max_seqs < 0 or a.batch < 1:
        raise InputError("--seq-len and --batch must be >= 1, --max-seqs >= 0")
    return a


def main(argv):
    a = parse_args(argv)
    cpath = os.path.join(a.hf, "config.json")
    try:
        with open(cpath) as f:
            raw = json.load(f)
    except OSError as e:
        raise InputError(f"{cpath}: cannot read ({e.strerror})")
    except ValueError as e:
        raise InputError(f"{cpath}: not JSON ({e})")
    cfg = Glm4MoeConfig(raw)
    w = load_hf_weights(a.hf)
    check_tensors(cfg, w)
    inputs, targets = validation_sequences(a.val, a.seq_len, a.max_seqs, cfg.vocab_size)
    n_moe = cfg.num_hidden_layers - min(cfg.first_k_dense_replace, cfg.num_hidden_layers)
    changed, dropped = [0] * n_moe, [0] * n_moe
    margins, gmargins = [float("inf")] * n_moe, [float("inf")] * n_moe
    loads = np.zeros((n_moe, cfg.n_routed_experts), dtype=np.int64)
    loss, loss0 = 0.0, 0.0
    for b in range(0, inputs.shape[0], a.batch):
        x, y = inputs[b:b + a.batch], targets[b:b + a.batch]
        stats = []
        loss += forward_loss(cfg, w, x, y, True, stats)
        loss0 += forward_loss(cfg, w, x, y, False)
        for i, (c, info, ld) in enumerate(stats):
            changed[i] += c
            dropped[i] += info["dropped"]
            margins[i] = min(margins[i], info["margin"])
            gmargins[i] = min(gmargins[i], info["group_margin"])
            loads[i] += ld
    n = int(targets.size)
    print(json.dumps({"loss": loss / n, "tokens": n, "sequences": int(inputs.shape[0]),
                      "bias_changed_selections": changed, "loss_without_bias": loss0 / n,
                      "min_selection_margin": [None if m == float("inf") else m for m in margins],
                      "min_group_margin": [None if m == float("inf") else m for m in gmargins],
                      "dropped_group_selections": dropped,
                      "expert_loads": loads.tolist(),
                      "compute": "float64"}))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except InputError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        sys.exit(2)
