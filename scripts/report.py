#!/usr/bin/env python3
"""Report on moe-train runs: tables beside the paper's numbers, and figures.

    scripts/report.py RUN_DIR... [--out DIR] [--smooth W] [--ignore-key SECTION.KEY]...

Reads each RUN_DIR written by moe-train (config.yaml, metrics.jsonl and, when
present, expert_loads.jsonl, eval.jsonl, eval.json), groups runs that differ
only in their seed (and in keys that do not change training: log.*,
checkpoint.*, train.threads, ...) into variants, and writes DIR/index.html (a
self-contained page) and DIR/README.md with the same tables, plus the PNG
figures beside them. docs/report.md describes every table, figure and value.

Exit codes: 0 done; 2 bad input (one line naming the problem); 1 internal error.
Needs numpy and matplotlib (Debian: python3-numpy, python3-matplotlib;
scripts/setup.sh installs them).
"""

import argparse
import datetime
import html
import json
import math
import os
import re
import sys
import textwrap
import time

PROG = "report.py"

# Keys that never change what a run trains: grouping ignores them, so runs that
# differ only in these (and the seed) are seeds of one variant. In-training
# evaluation leaves training bit-identical; loss_chunk_tokens changes only the
# float summation order of one gradient.
IGNORED_SECTIONS = ("log", "checkpoint")
IGNORED_KEYS = {
    "train.seed", "train.threads", "train.eval_interval", "train.eval_max_tokens", "train.final_eval",
    "train.loss_chunk_tokens", "train.nonfinite", "train.max_consecutive_skips",
    "parallel.timeout_seconds", "parallel.transport",
}
# The balance keys each method reads; the others are ignored by moe-train.
BALANCE_KEYS = {
    "none": (),
    "aux_loss": ("aux_alpha", "aux_scope"),
    "loss_free": ("update_rate", "update_rule", "bias_mode", "center_bias"),
}
REL_TOL = 1e-6          # float matching of config values against the paper's
LAST_FRACTION = 0.10    # MaxVio_batch / MaxVio_compute: mean over the last 10% of steps


class InputError(Exception):
    """Bad input: reported as one line, exit 2."""


def die(msg, code=2):
    print(f"{PROG}: {msg}", file=sys.stderr)
    sys.exit(code)


def progress(msg):
    print(msg, flush=True)


# --------------------------------------------------------------------------
# Minimal YAML reader for moe-train's resolved config.yaml: "section:" lines,
# then "  key: value" lines, values scalars or [a, b] lists.

_INT = re.compile(r"^[-+]?\d+$")
_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def _strip_comment(s):
    quote, escaped = None, False
    for i, c in enumerate(s):
        if quote:
            if escaped:
                escaped = False
            elif c == "\\" and quote == '"':
                escaped = True
            elif c == quote:
                quote = None
        elif c in "\"'":
            quote = c
        elif c == "#" and (i == 0 or s[i - 1] in " \t"):
            return s[:i].rstrip()
    return s


def _scalar(text):
    t = text.strip()
    if t == "" or t in ("~", "null", "Null", "NULL"):
        return "" if t == "" else None
    if len(t) >= 2 and t[0] == t[-1] and t[0] in "\"'":
        body = t[1:-1]
        if t[0] == '"':
            return re.sub(r'\\(.)', lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), body)
        return body.replace("''", "'")
    if t in ("true", "True", "TRUE"):
        return True
    if t in ("false", "False", "FALSE"):
        return False
    if _INT.match(t):
        return int(t)
    if _FLOAT.match(t):
        return float(t)
    return t


def _split_list(body):
    items, depth, quote, cur = [], 0, None, ""
    for c in body:
        if quote:
            cur += c
            if c == quote:
                quote = None
            continue
        if c in "\"'":
            quote = c
        elif c == "[":
            depth += 1
        elif c == "]":
            depth -= 1
        elif c == "," and depth == 0:
            items.append(cur)
            cur = ""
            continue
        cur += c
    if cur.strip():
        items.append(cur)
    return items


def parse_value(text):
    t = text.strip()
    if t.startswith("[") and t.endswith("]"):
        return [parse_value(x) for x in _split_list(t[1:-1])]
    return _scalar(t)


def read_config(path):
    """{"section.key": value} from a two-level YAML file."""
    cfg, section = {}, None
    with open(path, encoding="utf-8") as f:
        for n, raw in enumerate(f, 1):
            line = _strip_comment(raw.rstrip("\n"))
            if not line.strip() or line.strip() == "---":
                continue
            m = re.match(r"^([A-Za-z_][\w]*):\s*(.*)$", line)
            if m and not line[0].isspace():
                if m.group(2).strip():
                    cfg[m.group(1)] = parse_value(m.group(2))  # a top-level scalar
                    section = None
                else:
                    section = m.group(1)
                continue
            m = re.match(r"^\s+([A-Za-z_][\w]*):\s*(.*)$", line)
            if m and section is not None:
                cfg[f"{section}.{m.group(1)}"] = parse_value(m.group(2))
                continue
            raise InputError(f"{path}:{n}: cannot read this line as 'section:' or '  key: value'")
    return cfg


# --------------------------------------------------------------------------
# Reading run directories.

def read_jsonl(path):
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                # A run killed mid-write leaves a partial last line: skip it.
                rest = f.read()
                if not rest.strip():
                    print(f"{PROG}: warning: {path}:{n}: incomplete last line ignored", file=sys.stderr)
                    break
                raise InputError(f"{path}:{n}: not a JSON object ({e.msg})")
            if not isinstance(rows[-1], dict):
                raise InputError(f"{path}:{n}: not a JSON object")
    return rows


def by_step(rows, path):
    """Rows keyed by step, a later line replacing an earlier one (a resumed
    run logs the steps after its last checkpoint twice), sorted by step."""
    out = {}
    for r in rows:
        s = r.get("step")
        if not isinstance(s, int):
            raise InputError(f"{path}: a line without an integer \"step\"")
        out[s] = r
    return [out[s] for s in sorted(out)]


def num(x):
    """A finite float, or None (JSON null, NaN written as null, missing)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


class Run:
    def __init__(self, path):
        self.path = path
        if not os.path.exists(path):
            raise InputError(f"{path}: no such directory")
        if not os.path.isdir(path):
            raise InputError(f"{path}: not a directory")
        mpath = os.path.join(path, "metrics.jsonl")
        cpath = os.path.join(path, "config.yaml")
        if not os.path.isfile(mpath):
            # A sweep's log.out_dir holds one run per seed (seed1/, seed2/, ...).
            subs = sorted(d for d in os.listdir(path)
                          if os.path.isfile(os.path.join(path, d, "metrics.jsonl")))
            hint = ""
            if subs:
                shown = ", ".join(subs[:4]) + (", ..." if len(subs) > 4 else "")
                hint = f"; it holds runs {shown}: pass {os.path.join(path, '*')}"
            raise InputError(f"{path}: no metrics.jsonl (not a moe-train run directory{hint})")
        if not os.path.isfile(cpath):
            raise InputError(f"{path}: no config.yaml (not a moe-train run directory)")
        self.config = read_config(cpath)
        for key in ("balance.method", "moe.gate", "train.seed"):
            if key not in self.config:
                raise InputError(f"{cpath}: no {key} (not a config written by moe-train)")
        self.metrics = by_step(read_jsonl(mpath), mpath)
        if not self.metrics:
            raise InputError(f"{mpath}: no steps logged")
        lpath = os.path.join(path, "expert_loads.jsonl")
        self.loads = by_step(read_jsonl(lpath), lpath) if os.path.isfile(lpath) else []
        epath = os.path.join(path, "eval.jsonl")
        self.evals = by_step(read_jsonl(epath), epath) if os.path.isfile(epath) else []
        jpath = os.path.join(path, "eval.json")
        self.eval_final = None
        if os.path.isfile(jpath):
            try:
                with open(jpath, encoding="utf-8") as f:
                    self.eval_final = json.load(f)
            except json.JSONDecodeError as e:
                raise InputError(f"{jpath}: not JSON ({e.msg})")
            if not isinstance(self.eval_final, dict):
                raise InputError(f"{jpath}: not a JSON object")
        self.name = path  # replaced by a short unique name later
        self._derive()

    def _derive(self):
        m = self.metrics
        self.steps = [r["step"] for r in m]
        self.last_step = self.steps[-1]
        self.loss = [num(r.get("loss")) for r in m]
        self.maxvio_batch = [num(r.get("maxvio_batch")) for r in m]
        self.has_compute = any("maxvio_compute" in r for r in m)
        self.maxvio_compute = [num(r.get("maxvio_compute")) for r in m] if self.has_compute else None
        self.has_bias = any("bias" in r for r in self.loads)
        self.seed = self.config.get("train.seed")
        self.final_loss = last_finite(self.loss)
        self.mv_batch_last = last_fraction_mean(self.maxvio_batch)
        self.mv_compute_last = last_fraction_mean(self.maxvio_compute) if self.has_compute else None
        # Validation perplexity and MaxVio_global: eval.json (the end-of-training
        # evaluation on the full split), else the last in-training evaluation.
        self.ppl = self.mv_global = None
        self.eval_source = "no eval"
        self.eval_kind = "none"
        src = None
        if self.eval_final is not None:
            src, self.eval_kind = self.eval_final, "eval.json"
            step = self.eval_final.get("step")
            self.eval_source = "eval.json" + (f" (step {step})" if isinstance(step, int) else "")
        elif self.evals:
            src, self.eval_kind = self.evals[-1], "eval.jsonl"
            self.eval_source = f"last eval.jsonl line (step {src['step']})"
        if src is not None:
            self.ppl = num(src.get("perplexity"))
            self.mv_global = num(src.get("maxvio_global"))
            if self.ppl is None and num(src.get("loss")) is not None:
                self.ppl = math.exp(num(src.get("loss")))


def last_finite(xs):
    for x in reversed(xs):
        if x is not None:
            return x
    return None


def last_fraction_mean(xs):
    """Mean over the last ceil(10%) of the logged steps (at least one); steps
    whose value is null (a non-finite step) are left out."""
    if not xs:
        return None
    k = max(1, math.ceil(LAST_FRACTION * len(xs)))
    vals = [x for x in xs[-k:] if x is not None]
    return sum(vals) / len(vals) if vals else None


def short_names(paths):
    """The shortest trailing path parts that tell the runs apart."""
    parts = [os.path.normpath(os.path.abspath(p)).split(os.sep) for p in paths]
    for n in range(1, max(len(p) for p in parts) + 1):
        names = [os.sep.join(p[-n:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return [os.path.normpath(p) for p in paths]


# --------------------------------------------------------------------------
# Variants: runs whose configs agree on every key that changes training.

def semantic_config(cfg, extra_ignored):
    method = cfg.get("balance.method")
    keep_balance = BALANCE_KEYS.get(method)
    out = {}
    for k, v in cfg.items():
        section, _, key = k.partition(".")
        if section in IGNORED_SECTIONS or k in IGNORED_KEYS or k in extra_ignored:
            continue
        if section == "balance" and key != "method" and keep_balance is not None and key not in keep_balance:
            continue  # a key this method does not read
        out[k] = v
    return out


def freeze(v):
    if isinstance(v, list):
        return tuple(freeze(x) for x in v)
    if isinstance(v, float) and v == int(v) and abs(v) < 2**53:
        return int(v)  # 1 and 1.0 are the same value
    return v


def fmt_param(v):
    """u / alpha in labels: 1e-3, 3e-4, 0.01, 0."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if v == 0:
        return "0"
    if abs(v) < 0.01 or abs(v) >= 1e4:
        m, e = f"{v:.6e}".split("e")
        m = m.rstrip("0").rstrip(".")
        return f"{m}e{int(e)}"
    return f"{v:g}"


def fmt_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return fmt_param(v)
    if isinstance(v, list):
        return "[" + ", ".join(fmt_value(x) for x in v) + "]"
    return str(v)


METHOD_NAME = {"loss_free": "Loss-Free", "aux_loss": "aux loss", "none": "no balancing"}
SHOWN_KEYS = {"balance.method", "balance.update_rate", "balance.update_rule", "balance.bias_mode",
              "balance.center_bias", "balance.aux_alpha", "balance.aux_scope", "moe.gate"}


class Variant:
    def __init__(self, key, runs):
        self.key = key
        self.runs = sorted(runs, key=lambda r: (0, r.seed, "") if isinstance(r.seed, int) else (1, 0, str(r.seed)))
        c = self.runs[0].config
        self.method = c.get("balance.method")
        self.gate = c.get("moe.gate")
        self.rule = c.get("balance.update_rule")
        self.mode = c.get("balance.bias_mode")
        self.center = c.get("balance.center_bias") is True
        self.u = num(c.get("balance.update_rate"))
        self.alpha = num(c.get("balance.aux_alpha"))
        self.scope = c.get("balance.aux_scope")
        self.label = ""
        self.slug = ""

    @property
    def n(self):
        return len(self.runs)

    def base_label(self):
        parts = [METHOD_NAME.get(self.method, str(self.method))]
        if self.method == "loss_free":
            parts.append(str(self.rule))
            if self.mode != "additive":
                parts.append(str(self.mode))
            if self.center:
                parts.append("centred")
            parts.append(f"u={fmt_param(self.u)}")
        elif self.method == "aux_loss":
            parts.append(f"alpha={fmt_param(self.alpha)}")
            if self.scope != "sequence":
                parts.append(f"{self.scope} scope")
        if self.gate != "sigmoid":
            parts.append(str(self.gate))
        return ", ".join(parts)


def group_variants(runs, extra_ignored):
    groups = {}
    for r in runs:
        sc = semantic_config(r.config, extra_ignored)
        key = tuple(sorted((k, freeze(v)) for k, v in sc.items()))
        groups.setdefault(key, []).append(r)
    variants = [Variant(k, rs) for k, rs in groups.items()]
    # Keys outside the balancing ones that differ between variants go into the labels.
    all_keys = sorted({k for v in variants for k, _ in v.key})
    differing = []
    for k in all_keys:
        if k in SHOWN_KEYS:
            continue
        vals = {dict(v.key).get(k, "<unset>") for v in variants}
        if len(vals) > 1:
            differing.append(k)
    # A key is shown without its section where its name is unique (steps=80).
    names = [k.partition(".")[2] for k in differing]
    shown = {k: (k.partition(".")[2] if names.count(k.partition(".")[2]) == 1 else k) for k in differing}
    for v in variants:
        d = dict(v.key)
        extra = [f"{shown[k]}={fmt_value(v.runs[0].config.get(k))}" for k in differing if k in d]
        v.label = ", ".join([v.base_label()] + extra)
        v.sort_extra = tuple((0, d[k], "") if isinstance(d.get(k), (int, float)) and not isinstance(d.get(k), bool)
                             else (1, 0, str(d.get(k))) for k in differing)
    order = {"none": 0, "aux_loss": 1, "loss_free": 2}
    variants.sort(key=lambda v: (v.gate != "sigmoid", order.get(v.method, 9), str(v.rule), str(v.mode),
                                 v.center, str(v.scope), -(v.u or 0) if v.method == "loss_free" else 0,
                                 -(v.alpha or 0) if v.method == "aux_loss" else 0, v.sort_extra, v.label))
    # Labels stay unique even when the differing keys are all ignored ones.
    seen = {}
    for v in variants:
        if v.label in seen:
            seen[v.label] += 1
            v.label += f" (#{seen[v.label]})"
        else:
            seen[v.label] = 1
    used = set()
    for v in variants:
        s = re.sub(r"[^A-Za-z0-9]+", "_", v.label).strip("_").lower() or "variant"
        base, i = s, 2
        while s in used:
            s, i = f"{base}_{i}", i + 1
        used.add(s)
        v.slug = s
    return variants


# --------------------------------------------------------------------------
# Numbers.

def fmt_num(x):
    """Every number in the tables: 4 significant digits, trailing zeros kept
    (Python's '{:#.4g}': 661.0, 0.1016, 3.440)."""
    return "—" if x is None else f"{x:#.4g}"


def stats(values):
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    n = len(vals)
    mean = sum(vals) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1)) if n >= 2 else None
    return {"n": n, "mean": mean, "min": min(vals), "max": max(vals), "std": std}


def fmt_stat(values, n_runs, empty="—"):
    """A variant's cell: the mean over its runs; with >= 2 values also the
    sample std and [min, max]; '(k of n runs)' when some runs lack the value."""
    s = stats(values)
    if s is None:
        return empty
    if s["n"] == 1:
        text = fmt_num(s["mean"])
    else:
        text = f"{fmt_num(s['mean'])} ± {fmt_num(s['std'])} [{fmt_num(s['min'])}, {fmt_num(s['max'])}]"
    if s["n"] < n_runs:
        text += f" ({s['n']} of {n_runs} runs)"
    return text


def variant_eval_source(v):
    kinds = {r.eval_kind for r in v.runs}
    if kinds == {"eval.json"}:
        return "eval.json"
    if kinds == {"eval.jsonl"}:
        steps = sorted({r.evals[-1]["step"] for r in v.runs})
        return "last eval.jsonl line (step " + ", ".join(map(str, steps)) + ")"
    if kinds == {"none"}:
        return "no eval"
    return "mixed: " + ", ".join(sorted(r.eval_source for r in v.runs))


# --------------------------------------------------------------------------
# The paper's tables (Wang et al. 2024, arXiv 2408.15664; its 1B model).

def close(a, b):
    if a is None or b is None:
        return False
    if b == 0:
        return a == 0
    return abs(a - b) <= REL_TOL * abs(b)


def is_lf(v, rule=None, mode=None, gate="sigmoid"):
    return (v.method == "loss_free" and not v.center and v.gate == gate
            and (rule is None or v.rule == rule) and (mode is None or v.mode == mode))


def is_aux(v, gate="sigmoid"):
    return v.method == "aux_loss" and v.gate == gate and v.scope == "sequence"


def lf_row(setting, rule, mode, u, ppl, mv, gate="sigmoid"):
    return {"setting": setting, "ppl": ppl, "mv": mv,
            "match": lambda v: is_lf(v, rule, mode, gate) and close(v.u, u)}


def aux_row(setting, alpha, ppl, mv, gate="sigmoid"):
    return {"setting": setting, "ppl": ppl, "mv": mv,
            "match": lambda v: is_aux(v, gate) and close(v.alpha, alpha)}


def lf_setting(v):
    s = f"Loss-Free, {v.rule}"
    if v.mode != "additive":
        s += f", {v.mode}"
    return s + f", u={fmt_param(v.u)}"


def aux_setting(v):
    return f"aux loss, alpha={fmt_param(v.alpha)}"


def setting_of(v):
    if v.method == "loss_free":
        s = lf_setting(v)
    elif v.method == "aux_loss":
        s = aux_setting(v)
    else:
        s = "no balancing"
    return s + (f", {v.gate}" if v.gate != "sigmoid" else "")


SIGN_ROWS = [
    lf_row("Loss-Free, sign, u=1e-4", "sign", "additive", 1e-4, "9.51", "slow early balance"),
    lf_row("Loss-Free, sign, u=1e-3", "sign", "additive", 1e-3, "9.50", "best"),
    lf_row("Loss-Free, sign, u=1e-2", "sign", "additive", 1e-2, "9.51", "late oscillation"),
]

PAPER_TABLES = [
    {
        "title": "Table 1. Main result: Loss-Free vs auxiliary loss",
        "caption": "Sigmoid gate. The paper's aux-loss baseline uses alpha = 1e-3; its Loss-Free "
                   "run the sign rule, additive bias, u = 1e-3. The paper reports no run without balancing.",
        "rows": [
            aux_row("aux loss, alpha=1e-3", 1e-3, "9.56", "0.72"),
            lf_row("Loss-Free, sign, u=1e-3", "sign", "additive", 1e-3, "9.50", "0.04"),
            {"setting": "no balancing", "ppl": "not reported", "mv": "not reported",
             "match": lambda v: v.method == "none" and v.gate == "sigmoid"},
        ],
        "family": lambda v: is_aux(v) or is_lf(v, "sign", "additive") or (v.method == "none" and v.gate == "sigmoid"),
    },
    {
        "title": "Table 2. Update rate u (Loss-Free, sign rule, additive bias)",
        "caption": "Sigmoid gate. The paper gives MaxVio_global for this sweep only as curves: "
                   "u = 1e-4 balances slowly early in training, 1e-3 is best, 1e-2 oscillates late.",
        "rows": SIGN_ROWS,
        "family": lambda v: is_lf(v, "sign", "additive"),
    },
    {
        "title": "Table 3. Update rule: sign vs proportional (Loss-Free, additive bias)",
        "caption": "Sigmoid gate. Proportional: b_i += u * e_i / mean(c); sign: b_i += u * sign(e_i). "
                   "The sign rows repeat Table 2.",
        "rows": [
            lf_row("Loss-Free, proportional, u=1e-2", "proportional", "additive", 1e-2, "9.53", "0.028"),
            lf_row("Loss-Free, proportional, u=1e-3", "proportional", "additive", 1e-3, "9.51", "0.036"),
            lf_row("Loss-Free, proportional, u=1e-4", "proportional", "additive", 1e-4, "9.51", "0.040"),
        ] + SIGN_ROWS,
        "family": lambda v: is_lf(v, None, "additive"),
    },
    {
        "title": "Table 4. Bias mode: additive vs multiplicative (Loss-Free, sign rule)",
        "caption": "Sigmoid gate. Multiplicative: top-K of s * b, b starting at 1; additive: top-K of "
                   "s + b, b starting at 0. The additive rows repeat Table 2.",
        "rows": [
            lf_row("Loss-Free, sign, multiplicative, u=1e-2", "sign", "multiplicative", 1e-2, "9.52", "0.041"),
            lf_row("Loss-Free, sign, multiplicative, u=1e-3", "sign", "multiplicative", 1e-3, "9.52", "0.036"),
            lf_row("Loss-Free, sign, multiplicative, u=1e-4", "sign", "multiplicative", 1e-4, "9.54", "0.048"),
        ] + SIGN_ROWS,
        "family": lambda v: is_lf(v, "sign", None),
    },
    {
        "title": "Table 5. Softmax gate",
        "caption": "The paper's softmax runs: aux loss with alpha = 3e-4, Loss-Free with the proportional "
                   "rule and u = 1e-3 (additive bias). The sigmoid-gate counterparts are in Table 1.",
        "rows": [
            aux_row("aux loss, alpha=3e-4, softmax", 3e-4, "9.604", "0.937", gate="softmax"),
            lf_row("Loss-Free, proportional, u=1e-3, softmax", "proportional", "additive", 1e-3,
                   "9.599", "0.027", gate="softmax"),
        ],
        "family": lambda v: v.gate == "softmax" and (is_aux(v, "softmax") or is_lf(v, None, "additive", "softmax")
                                                     or v.method == "none"),
    },
    {
        "title": "Table 6. Auxiliary-loss weight alpha (aux loss, sigmoid gate)",
        "caption": "The paper gives no numbers for this sweep, only the trend: a larger alpha balances "
                   "better and gives a worse perplexity. The alpha = 1e-3 numbers are its main result (Table 1).",
        "rows": [
            aux_row("aux loss, alpha=1e-2", 1e-2, "not given", "not given"),
            aux_row("aux loss, alpha=1e-3", 1e-3, "9.56", "0.72"),
            aux_row("aux loss, alpha=1e-4", 1e-4, "not given", "not given"),
            aux_row("aux loss, alpha=0", 0.0, "not given", "not given"),
        ],
        "family": lambda v: is_aux(v),
    },
]


# --------------------------------------------------------------------------
# Document model, rendered to HTML and Markdown.

class Doc:
    def __init__(self):
        self.blocks = []

    def h(self, level, text, anchor=None):
        self.blocks.append(("h", level, text, anchor))

    def p(self, text):
        self.blocks.append(("p", text))

    def ul(self, items):
        self.blocks.append(("ul", items))

    def table(self, title, caption, header, rows, anchor=None):
        self.blocks.append(("table", title, caption, header, rows, anchor))

    def toc(self, entries):
        """[(anchor, text)]: links in the HTML page (Markdown viewers make their own)."""
        self.blocks.append(("toc", entries))

    def fig(self, file, title, caption):
        if file:  # None: the figure had nothing to draw
            self.blocks.append(("fig", file, title, caption))


def md_cell(s):
    return str(s).replace("|", "\\|").replace("\n", " ")


def render_md(doc):
    out = []
    for b in doc.blocks:
        if b[0] == "h":
            out += ["#" * b[1] + " " + b[2], ""]
        elif b[0] == "p":
            out += [b[1], ""]
        elif b[0] == "ul":
            out += ["- " + x for x in b[1]] + [""]
        elif b[0] == "table":
            _, title, caption, header, rows, _a = b
            if title:
                out += [f"**{title}**", ""]
            if caption:
                out += [caption, ""]
            out.append("| " + " | ".join(md_cell(c) for c in header) + " |")
            out.append("|" + "|".join("---" for _ in header) + "|")
            for r in rows:
                out.append("| " + " | ".join(md_cell(c) for c in r) + " |")
            out.append("")
        elif b[0] == "fig":
            _, file, title, caption = b
            out += [f"**{title}**", "", f"[![{title}]({file})]({file})", "", caption, ""]
    return "\n".join(out).rstrip() + "\n"


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2em auto;
       max-width: 1250px; padding: 0 1em; color: #1d2125; line-height: 1.45; }
h1 { font-size: 1.7em; margin-bottom: 0.2em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccd; }
table { border-collapse: collapse; margin: 0.4em 0 1.6em 0; font-size: 0.86em; }
th, td { border: 1px solid #c8ccd4; padding: 0.25em 0.55em; text-align: left; vertical-align: top; }
th { background: #eef1f6; } tr:nth-child(even) td { background: #f8f9fb; }
td.num { font-variant-numeric: tabular-nums; white-space: nowrap; }
.tt { font-weight: 600; margin-top: 1.2em; } .cap { color: #4a5360; font-size: 0.92em; margin: 0.2em 0; }
figure { margin: 1.2em 0 2.2em 0; } figure img { max-width: 100%; border: 1px solid #dde; }
figcaption { color: #4a5360; font-size: 0.92em; } code { background: #f1f3f6; padding: 0 0.2em; }
"""


def render_html(doc, title):
    e = html.escape
    out = ["<!DOCTYPE html>", "<html lang=\"en\">", "<head>", "<meta charset=\"utf-8\">",
           f"<title>{e(title)}</title>", f"<style>{CSS}</style>", "</head>", "<body>"]

    def inline(s):
        # `code` spans, as in the Markdown.
        return re.sub(r"`([^`]+)`", r"<code>\1</code>", e(str(s)))

    for b in doc.blocks:
        if b[0] == "h":
            anchor = f" id=\"{e(b[3])}\"" if b[3] else ""
            out.append(f"<h{b[1]}{anchor}>{inline(b[2])}</h{b[1]}>")
        elif b[0] == "p":
            out.append(f"<p>{inline(b[1])}</p>")
        elif b[0] == "ul":
            out.append("<ul>" + "".join(f"<li>{inline(x)}</li>" for x in b[1]) + "</ul>")
        elif b[0] == "table":
            _, ttl, caption, header, rows, anchor = b
            a = f" id=\"{e(anchor)}\"" if anchor else ""
            if ttl:
                out.append(f"<div class=\"tt\"{a}>{inline(ttl)}</div>")
            if caption:
                out.append(f"<p class=\"cap\">{inline(caption)}</p>")
            out.append("<table>")
            out.append("<tr>" + "".join(f"<th>{inline(c)}</th>" for c in header) + "</tr>")
            for r in rows:
                cells = []
                for c in r:
                    cls = " class=\"num\"" if re.match(r"^[-+]?[\d.]", str(c)) else ""
                    cells.append(f"<td{cls}>{inline(c)}</td>")
                out.append("<tr>" + "".join(cells) + "</tr>")
            out.append("</table>")
        elif b[0] == "toc":
            out.append("<p class=\"cap\">Contents: " + " · ".join(
                f"<a href=\"#{e(a)}\">{e(t)}</a>" for a, t in b[1]) + "</p>")
        elif b[0] == "fig":
            _, file, ttl, caption = b
            out.append(f"<figure><a href=\"{e(file)}\"><img src=\"{e(file)}\" alt=\"{e(ttl)}\"></a>"
                       f"<figcaption><b>{inline(ttl)}.</b> {inline(caption)}</figcaption></figure>")
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------
# Figures.

def smooth(y, w):
    """Trailing moving average over w steps (fewer at the start); None -> NaN."""
    import numpy as np
    y = np.array([np.nan if v is None else v for v in y], dtype=float)
    if w <= 1 or len(y) == 0:
        return y
    ok = np.isfinite(y)
    c = np.concatenate([[0.0], np.cumsum(np.where(ok, y, 0.0))])
    k = np.concatenate([[0], np.cumsum(ok)])
    idx = np.arange(1, len(y) + 1)
    lo = np.maximum(0, idx - w)
    cnt = k[idx] - k[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(cnt > 0, (c[idx] - c[lo]) / np.maximum(cnt, 1), np.nan)


def variant_curve(v, attr, w):
    """(steps, mean, min, max) over the variant's runs of a per-step series,
    each run smoothed first, aligned by step."""
    import numpy as np
    series = [(r.steps, getattr(r, attr)) for r in v.runs if getattr(r, attr) is not None]
    if not series:
        return None
    steps = sorted({s for st, _ in series for s in st})
    pos = {s: i for i, s in enumerate(steps)}
    M = np.full((len(series), len(steps)), np.nan)
    for j, (st, ys) in enumerate(series):
        sm = smooth(ys, w)
        for s, y in zip(st, sm):
            M[j, pos[s]] = y
    with np.errstate(invalid="ignore"), __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("ignore", category=RuntimeWarning)
        return np.array(steps), np.nanmean(M, 0), np.nanmin(M, 0), np.nanmax(M, 0)


class Figures:
    def __init__(self, out, variants, smooth_w):
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        self.plt = plt
        self.out = out
        self.variants = variants
        self.w = smooth_w
        cmap = plt.get_cmap("tab10" if len(variants) <= 10 else "tab20")
        markers = "osD^vP*Xh<>p"
        for i, v in enumerate(variants):
            v.color = cmap(i % cmap.N)
            v.marker = markers[i % len(markers)]
        plt.rcParams.update({"figure.dpi": 110, "axes.grid": True, "grid.alpha": 0.3,
                             "font.size": 10, "axes.titlesize": 11, "legend.fontsize": 8.5})

    def save(self, fig, name):
        path = os.path.join(self.out, name)
        fig.savefig(path, bbox_inches="tight")
        self.plt.close(fig)
        progress(f"  wrote {path}")
        return name

    def smoothing_text(self):
        return ("no smoothing" if self.w <= 1 else
                f"trailing moving average over {self.w} steps (fewer at the start)")

    def curves(self, attr, name, title, ylabel, logy):
        plt = self.plt
        fig, ax = plt.subplots(figsize=(8.5, 4.8))
        drawn = 0
        for v in self.variants:
            c = variant_curve(v, attr, self.w)
            if c is None:
                continue
            x, mean, lo, hi = c
            if logy:
                mean = self._positive(mean)
                lo, hi = self._positive(lo), self._positive(hi)
            ax.plot(x, mean, color=v.color, lw=1.5, label=f"{v.label} (n={v.n})")
            if v.n >= 2:
                ax.fill_between(x, lo, hi, color=v.color, alpha=0.18, lw=0)
            drawn += 1
        if not drawn:
            plt.close(fig)
            return None
        if logy:
            ax.set_yscale("log")
            self.plain_log(ax, "y")
        ax.set_xlabel("training step (optimizer steps)")
        ax.set_ylabel(ylabel)
        short = "no smoothing" if self.w <= 1 else f"moving average over {self.w} steps"
        ax.set_title(f"{title}\n({short}; line: mean over seeds, band: min-max)")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), framealpha=0.85)
        return self.save(fig, name)

    @staticmethod
    def plain_log(ax, which):
        """Log-axis tick labels as plain numbers (0.2, 0.3, ...) rather than 2x10^-1."""
        from matplotlib.ticker import FuncFormatter, LogLocator
        axis = ax.xaxis if which == "x" else ax.yaxis
        fmt = FuncFormatter(lambda x, _: f"{x:g}")
        axis.set_major_formatter(fmt)
        axis.set_minor_locator(LogLocator(base=10, subs=(2, 3, 5)))
        axis.set_minor_formatter(fmt)
        axis.set_tick_params(which="minor", labelsize=7.5)

    @staticmethod
    def _positive(a):
        import numpy as np
        a = np.array(a, dtype=float)
        a[~(a > 0)] = np.nan
        return a

    def heatmaps(self, variants):
        """Rows: variants; columns: early, middle, late; each a layer x expert
        image of load / mean load, from the variant's first run."""
        import numpy as np
        from matplotlib.colors import TwoSlopeNorm
        plt = self.plt
        chosen = []
        for v in variants:
            r = next((r for r in v.runs if r.loads), None)
            if r is not None:
                chosen.append((v, r))
        if not chosen:
            return None, []
        snaps = []
        vmax = 2.0
        for v, r in chosen:
            recs = r.loads
            idx = sorted({0, min(range(len(recs)), key=lambda i: abs(recs[i]["step"] - recs[-1]["step"] / 2)),
                          len(recs) - 1})
            while len(idx) < 3:
                idx.append(idx[-1])
            row = []
            for i in idx:
                L = np.array(recs[i]["loads"], dtype=float)
                mean = L.mean(axis=1, keepdims=True)
                rel = np.divide(L, mean, out=np.zeros_like(L), where=mean > 0)
                vmax = max(vmax, float(rel.max()) if rel.size else 0)
                row.append((recs[i]["step"], rel))
            snaps.append((v, r, row))
        E = max(rel.shape[1] for _, _, row in snaps for _, rel in row)
        nl = max(rel.shape[0] for _, _, row in snaps for _, rel in row)
        cw = min(5.5, max(2.4, 0.16 * E + 0.9))
        ch = max(1.5, 0.26 * nl + 1.1)
        W, H = 3 * cw + 2.0, len(snaps) * ch + 1.2
        fig, axes = plt.subplots(len(snaps), 3, figsize=(W, H), squeeze=False)
        # Fixed margins (constrained layout takes seconds here): the row labels
        # on the left, the colour bar on the right, the title on top.
        fig.subplots_adjust(left=0.7 / W, right=1 - 1.25 / W, top=1 - 0.95 / H, bottom=0.55 / H,
                            wspace=0.18, hspace=0.75 / (ch - 0.75))
        norm = TwoSlopeNorm(vmin=0.0, vcenter=1.0, vmax=vmax)
        im = None
        for i, (v, r, row) in enumerate(snaps):
            for j, (step, rel) in enumerate(row):
                ax = axes[i][j]
                im = ax.imshow(rel, aspect="auto", cmap="RdBu_r", norm=norm, interpolation="nearest")
                ax.set_title(f"{['early', 'middle', 'late'][j]}: step {step}", fontsize=8.5)
                ax.set_yticks(range(rel.shape[0]))
                if rel.shape[0] > 12:
                    ax.set_yticks(range(0, rel.shape[0], max(1, rel.shape[0] // 6)))
                ax.tick_params(labelsize=7)
                ax.grid(False)
                if i == len(snaps) - 1:
                    ax.set_xlabel("routed expert", fontsize=8.5)
            axes[i][0].set_ylabel("MoE layer", fontsize=8.5)
            axes[i][0].annotate(f"{v.label} (run {r.name})", xy=(0, 1), xycoords="axes fraction",
                                xytext=(0, 17), textcoords="offset points", ha="left", va="bottom",
                                fontsize=9.5, fontweight="bold")
        cax = fig.add_axes([1 - 1.0 / W, 0.55 / H, 0.18 / W, 1 - 1.5 / H])
        cax.grid(False)
        cb = fig.colorbar(im, cax=cax)
        cb.set_label("tokens routed / mean over the layer's experts")
        fig.suptitle("Per-expert load of the step's global batch (shared colour scale; 1 = balanced)")
        return self.save(fig, "expert_loads.png"), [(v, r) for v, r, _ in snaps]

    def bias(self, v):
        import numpy as np
        plt = self.plt
        r = next((r for r in v.runs if r.has_bias), None)
        if r is None:
            return None, None
        recs = [x for x in r.loads if "bias" in x]
        B = [np.array(x["bias"], dtype=float) for x in recs]
        nl = max(b.shape[0] for b in B)
        ne = max(b.shape[1] for b in B)
        # Every bias starts at 0 (additive) or 1 (multiplicative) before step 1.
        start = 1.0 if v.mode == "multiplicative" else 0.0
        steps = np.array([0] + [x["step"] for x in recs])
        B = [np.full((nl, ne), start)] + B
        cols = min(nl, 4)
        rows = math.ceil(nl / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols + (1.3 if ne <= 16 else 0), 3.2 * rows + 0.6),
                                 squeeze=False, sharex=True, constrained_layout=True)
        cmap = plt.get_cmap("tab10" if ne <= 10 else "tab20" if ne <= 20 else "viridis")
        for layer in range(rows * cols):
            ax = axes[layer // cols][layer % cols]
            if layer >= nl:
                ax.axis("off")
                continue
            Y = np.array([b[layer] if layer < b.shape[0] else np.full(ne, np.nan) for b in B])
            ax.axhline(start, color="black", lw=0.6, alpha=0.5)
            for ex in range(Y.shape[1]):
                color = cmap(ex) if ne <= 20 else cmap(ex / max(1, ne - 1))
                ax.plot(steps, Y[:, ex], lw=1.0, color=color, label=f"expert {ex}")
            ax.set_title(f"MoE layer {layer}", fontsize=9)
            if layer // cols == rows - 1 or layer + cols >= nl:
                ax.set_xlabel("training step")
            if layer % cols == 0:
                ax.set_ylabel("bias b_i (" + ("multiplies the score" if v.mode == "multiplicative"
                                               else "added to the score") + ")")
        if ne <= 16:
            axes[0][cols - 1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7.5, framealpha=0.85)
        colour = "" if ne <= 16 else f"; colour = expert index 0..{ne - 1}"
        fig.suptitle("\n".join(textwrap.wrap(f"Loss-Free bias of each routed expert: {v.label} (run {r.name}; "
                                             f"one line per expert{colour})", 90)), fontsize=10.5)
        return self.save(fig, f"bias_{v.slug}.png"), r

    def eval_curve(self):
        plt = self.plt
        fig, ax = plt.subplots(figsize=(8.5, 4.6))
        drawn = 0
        for v in self.variants:
            for k, r in enumerate(v.runs):
                pts = [(e["step"], num(e.get("perplexity"))) for e in r.evals if num(e.get("perplexity"))]
                if len(pts) < 2:
                    continue
                x, y = zip(*pts)
                ax.plot(x, y, color=v.color, marker=v.marker, ms=4, lw=1.2, alpha=0.9,
                        label=f"{v.label} (n={v.n})" if k == 0 or not drawn else None)
                drawn += 1
        if not drawn:
            plt.close(fig)
            return None
        handles, labels = ax.get_legend_handles_labels()
        uniq = dict(zip(labels, handles))
        ax.legend(uniq.values(), uniq.keys(), loc="upper left", bbox_to_anchor=(1.01, 1.0), framealpha=0.85)
        ax.set_yscale("log")
        self.plain_log(ax, "y")
        ax.set_xlabel("training step (optimizer steps)")
        ax.set_ylabel("validation perplexity (exp of mean token loss)")
        ax.set_title("In-training validation perplexity (eval.jsonl; one line per run)")
        return self.save(fig, "val_perplexity.png")

    def ppl_vs_maxvio(self):
        plt = self.plt
        fig, ax = plt.subplots(figsize=(7.5, 5))
        drawn = 0
        for v in self.variants:
            pts = [(r.mv_global, r.ppl) for r in v.runs if r.mv_global is not None and r.ppl is not None]
            pts = [(x, y) for x, y in pts if x > 0]
            if not pts:
                continue
            x, y = zip(*pts)
            ax.scatter(x, y, color=v.color, marker=v.marker, s=46, edgecolor="black", linewidth=0.5,
                       label=f"{v.label} (n={len(pts)})", zorder=3)
            drawn += 1
        if not drawn:
            plt.close(fig)
            return None
        ax.set_xscale("log")
        self.plain_log(ax, "x")
        ax.set_xlabel("MaxVio_global (validation set; mean over MoE layers; log scale)")
        ax.set_ylabel("validation perplexity")
        ax.set_title("Perplexity vs global load balance, one point per run\n(lower left is better)")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), framealpha=0.85)
        return self.save(fig, "ppl_vs_maxvio.png")


# --------------------------------------------------------------------------

def build_report(runs, variants, args):
    any_compute = any(r.has_compute for r in runs)
    doc = Doc()
    doc.h(1, "moe-lfb report: Loss-Free Balancing vs auxiliary loss")
    now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    doc.p(f"{len(runs)} run{'s' if len(runs) != 1 else ''} in {len(variants)} "
          f"variant{'s' if len(variants) != 1 else ''}, generated {now} by `scripts/report.py`. "
          "Paper: Wang et al. 2024, \"Auxiliary-Loss-Free Load Balancing Strategy for Mixture-of-Experts\", "
          "arXiv 2408.15664. How each number is computed: `docs/report.md`.")
    doc.ul([
        "Validation perplexity and MaxVio_global: from the run's `eval.json` (the end-of-training evaluation "
        "on the full validation split) when present, else from the last line of `eval.jsonl` (an in-training "
        "evaluation, possibly on part of the split); the `eval` column says which.",
        f"MaxVio_batch (last {int(LAST_FRACTION * 100)}%): the mean of each step's MaxVio_batch (the step's global "
        f"batch, mean over MoE layers) over the last ceil({int(LAST_FRACTION * 100)}%) of the logged steps."
        + (" MaxVio_compute: the same for the computation-batch MaxVio (each micro-batch x expert-parallel "
           "group, the batch one GPU computes)." if any_compute else
           " MaxVio_compute: not logged by these runs (a moe-train older than the maxvio_compute field)."),
        "A variant is a set of runs whose configs differ only in `train.seed` and in keys that do not change "
        "training (`log.*`, `checkpoint.*`, `train.threads`, evaluation settings, ...). Its cell is the mean over "
        "its runs; with n >= 2: mean ± sample std [min, max]. Numbers: 4 significant digits.",
        "The paper's numbers are for its 1B model (about 100B tokens of its own corpus); ours come from however small "
        "a model these runs trained, so compare trends, not values.",
    ])

    doc.toc([("all-variants", "all variants")] +
            [(f"table-{i + 1}", f"Table {i + 1}") for i in range(len(PAPER_TABLES))] +
            [("figures", "figures"), ("every-run", "every run")])

    mv_cols = ["MaxVio_batch (last 10%)"] + (["MaxVio_compute (last 10%)"] if any_compute else [])

    def variant_cells(v):
        cells = [fmt_stat([r.ppl for r in v.runs], v.n, "no eval"),
                 fmt_stat([r.mv_global for r in v.runs], v.n, "no eval"),
                 fmt_stat([r.mv_batch_last for r in v.runs], v.n)]
        if any_compute:
            cells.append(fmt_stat([r.mv_compute_last for r in v.runs], v.n, "not logged"))
        cells.append(variant_eval_source(v))
        return cells

    # All variants.
    doc.h(2, "Variants", "variants")
    rows = []
    for v in variants:
        seeds = ", ".join(str(r.seed) for r in v.runs)
        rows.append([v.label, str(v.n), seeds, fmt_stat([r.final_loss for r in v.runs], v.n)] + variant_cells(v))
    doc.table("All variants", "Every variant of the runs given, whether or not the paper has a matching setting.",
              ["variant", "n", "seeds", "final train loss", "val PPL", "MaxVio_global"] + mv_cols + ["eval"],
              rows, "all-variants")

    # The paper's tables.
    doc.h(2, "Beside the paper", "paper")
    doc.p("Each table lists the paper's rows (\"no run\" where none of our variants has exactly that setting; "
          f"floats match within a relative {REL_TOL:g}) and, below them, our variants of the same family at values "
          "the paper did not test (paper columns \"—\"). The paper's numbers are for its 1B model; ours are "
          "from the runs above.")
    header = ["setting", "paper PPL (1B)", "paper MaxVio_global (1B)", "our variant", "n", "val PPL",
              "MaxVio_global"] + mv_cols + ["eval"]
    blank = [""] * (len(header) - 4)
    for t in PAPER_TABLES:
        rows, matched = [], set()
        for pr in t["rows"]:
            hits = [v for v in variants if pr["match"](v)]
            if not hits:
                rows.append([pr["setting"], pr["ppl"], pr["mv"], "no run"] + blank)
            for v in hits:
                matched.add(id(v))
                rows.append([pr["setting"], pr["ppl"], pr["mv"], v.label, str(v.n)] + variant_cells(v))
        for v in variants:
            if id(v) not in matched and t["family"](v):
                rows.append([setting_of(v) + " (not in the paper)", "—", "—", v.label, str(v.n)] + variant_cells(v))
        doc.table(t["title"], t["caption"] + " Paper numbers: its 1B model.", header, rows,
                  f"table-{PAPER_TABLES.index(t) + 1}")

    # Figures.
    doc.h(2, "Figures", "figures")
    progress("drawing figures")
    F = Figures(args.out, variants, args.smooth_w)
    smooth_note = F.smoothing_text()
    skipped = []
    f = F.curves("loss", "loss.png", "Training loss", "training loss (nats per token)", logy=False)
    doc.fig(f, "Training loss vs step", f"Mean token cross-entropy of each step's global batch; {smooth_note}; "
            "line: mean over the variant's seeds, band: their min-max (n >= 2).")
    f = F.curves("maxvio_batch", "maxvio_batch.png", "MaxVio_batch during training",
                 "MaxVio_batch (global batch; mean over MoE layers)", logy=True)
    doc.fig(f, "MaxVio_batch vs step, every variant", "Load balance during training, as in the paper's figure: "
            "(max_i load_i - mean load) / mean load over the step's global batch, averaged over MoE layers; "
            f"log scale; {smooth_note}; band: min-max over seeds.")
    if any_compute:
        f = F.curves("maxvio_compute", "maxvio_compute.png", "Computation-batch MaxVio during training",
                     "MaxVio_compute (per micro-batch x EP group)", logy=True)
        doc.fig(f, "Computation-batch MaxVio vs step", "MaxVio of each computation batch (a micro-batch on one "
                "expert-parallel group, what one GPU computes), averaged over those batches and MoE layers; "
                f"log scale; {smooth_note}; band: min-max over seeds.")
    else:
        skipped.append("computation-batch MaxVio: no run logs `maxvio_compute` (an older moe-train)")
    main = [v for v in variants if PAPER_TABLES[0]["family"](v)] or list(variants)
    f, shown = F.heatmaps(main[:6])
    if f:
        who = "; ".join(f"{v.label}: run {r.name}" for v, r in shown)
        doc.fig(f, "Per-expert load heatmaps, early / middle / late", "Each panel: MoE layer (rows) x routed "
                "expert (columns), tokens routed to the expert in that step's global batch divided by the mean "
                "over the layer's experts (1 = perfectly balanced; red over-, blue under-loaded), from "
                f"expert_loads.jsonl at its first, middle and last record; one colour scale for all panels. Runs: {who}.")
    else:
        skipped.append("expert-load heatmaps: no run has expert_loads.jsonl (log.expert_load_interval 0)")
    lf = [v for v in variants if v.method == "loss_free"]
    for v in lf:
        f, r = F.bias(v)
        if f:
            doc.fig(f, f"Bias trajectories: {v.label}", "The Loss-Free selection bias of every routed expert after "
                    "each logged step's update (expert_loads.jsonl `bias`), one panel per MoE layer, from run "
                    f"{r.name}" + (f" (the first of its {v.n} seeds)" if v.n > 1 else "") + ".")
    if lf and not any(r.has_bias for v in lf for r in v.runs):
        skipped.append("bias trajectories: expert_loads.jsonl has no `bias` (an older moe-train)")
    elif not lf:
        skipped.append("bias trajectories: no Loss-Free run")
    f = F.ppl_vs_maxvio()
    if f:
        doc.fig(f, "Validation perplexity vs MaxVio_global", "One point per run (the eval column's source), "
                "marker and colour per variant; log x. The paper's Loss-Free point sits left of and below its "
                "aux-loss point.")
    else:
        skipped.append("perplexity vs MaxVio_global: no run has an evaluation (eval.json or eval.jsonl)")
    f = F.eval_curve()
    if f:
        doc.fig(f, "Validation perplexity vs step", "Every in-training evaluation (eval.jsonl) of each run; log y.")
    if skipped:
        doc.p("Not drawn: " + "; ".join(skipped) + ".")

    # Runs.
    doc.h(2, "Runs", "runs")
    rows = []
    for v in variants:
        for r in v.runs:
            row = [r.name, v.label, str(r.seed), str(r.last_step), fmt_num(r.final_loss),
                   fmt_num(r.ppl) if r.ppl is not None else "no eval",
                   fmt_num(r.mv_global) if r.mv_global is not None else "no eval",
                   fmt_num(r.mv_batch_last)]
            if any_compute:
                row.append(fmt_num(r.mv_compute_last) if r.has_compute else "not logged")
            row.append(r.eval_source)
            rows.append(row)
    doc.table("Every run", "One row per run directory (name: the shortest trailing part of its path that tells "
              "the runs apart).", ["run", "variant", "seed", "steps", "final train loss", "val PPL",
                                   "MaxVio_global"] + mv_cols + ["eval"], rows, "every-run")
    doc.ul([f"`{r.name}`: {os.path.abspath(r.path)}" for r in runs])
    return doc


def parse_args(argv):
    ap = argparse.ArgumentParser(
        prog="report.py",
        description="Tables (beside the paper's numbers) and figures from moe-train run directories: "
                    "writes DIR/index.html, DIR/README.md and PNG figures. See docs/report.md.",
        epilog="Exit codes: 0 done, 2 bad input (one line naming it), 1 internal error. "
               "Example: scripts/report.py runs/* --out report")
    ap.add_argument("runs", nargs="+", metavar="RUN_DIR",
                    help="a moe-train log.out_dir (config.yaml, metrics.jsonl, ...)")
    ap.add_argument("--out", default="report", metavar="DIR", help="output folder (default: report)")
    ap.add_argument("--smooth", type=int, default=0, metavar="W",
                    help="moving-average window of the training curves in steps "
                         "(default 0: auto, the longest run's steps / 50, at least 1; 1: none)")
    ap.add_argument("--ignore-key", action="append", default=[], metavar="SECTION.KEY",
                    help="also ignore this config key when grouping runs into variants (repeatable)")
    ap.add_argument("--title", default="moe-lfb report", help="HTML page title")
    return ap.parse_args(argv)


def plotting_missing():
    """None when numpy and matplotlib import, else the missing module's name.
    An interpreter without them (a pyenv or venv python first on PATH) re-runs
    this script at once under Debian's /usr/bin/python3 when that one differs."""
    import importlib.util
    missing = next((m for m in ("numpy", "matplotlib") if importlib.util.find_spec(m) is None), None)
    if missing is None:
        return None  # found, not imported yet: bad input is reported without the import's cost
    deb = "/usr/bin/python3"
    if (os.environ.get("MOE_REPORT_REEXEC") != "1" and os.path.exists(deb)
            and os.path.realpath(sys.executable) != os.path.realpath(deb)):
        os.environ["MOE_REPORT_REEXEC"] = "1"
        try:
            os.execv(deb, [deb, os.path.abspath(__file__)] + sys.argv[1:])
        except OSError:
            pass
    return missing


def main(argv):
    args = parse_args(argv)
    missing = plotting_missing()
    if args.smooth < 0:
        raise InputError("--smooth: expected a window >= 0 steps")
    for k in args.ignore_key:
        if not re.match(r"^[a-z_]+\.[a-z_0-9]+$", k):
            raise InputError(f"--ignore-key {k}: expected section.key, e.g. train.steps")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise InputError(f"--out {args.out}: exists and is not a directory")

    t0 = time.time()
    seen, paths = set(), []
    for p in args.runs:
        p = p.rstrip("/") or "/"
        real = os.path.realpath(p)
        if real in seen:
            progress(f"{p}: given twice, read once")
            continue
        seen.add(real)
        paths.append(p)
    progress(f"reading {len(paths)} run director{'y' if len(paths) == 1 else 'ies'}")
    runs = [Run(p) for p in paths]
    for r, name in zip(runs, short_names([r.path for r in runs])):
        r.name = name
    if missing:
        raise InputError(f"needs numpy and matplotlib ({missing} is missing for {sys.executable}): "
                         "run scripts/setup.sh (Debian's python3-numpy and python3-matplotlib)")
    for r in runs:
        extras = [f"{len(r.loads)} expert-load record{'s' if len(r.loads) != 1 else ''}" if r.loads
                  else "no expert loads",
                  r.eval_source]
        if r.has_compute:
            extras.append("maxvio_compute")
        if r.has_bias:
            extras.append("bias")
        progress(f"  {r.name}: {r.config.get('balance.method')}, seed {r.seed}, {len(r.metrics)} steps "
                 f"(last {r.last_step}); " + ", ".join(extras))
    variants = group_variants(runs, set(args.ignore_key))
    progress(f"{len(variants)} variant{'s' if len(variants) != 1 else ''}:")
    for v in variants:
        progress(f"  {v.label}: n={v.n} (" + ", ".join(r.name for r in v.runs) + ")")
    longest = max(len(r.steps) for r in runs)
    args.smooth_w = args.smooth if args.smooth > 0 else max(1, longest // 50)

    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as e:
        raise InputError(f"--out {args.out}: cannot create ({e.strerror})")
    doc = build_report(runs, variants, args)
    md_path = os.path.join(args.out, "README.md")
    html_path = os.path.join(args.out, "index.html")
    with open(md_path, "w", encoding="utf-8") as f:
        f.write(render_md(doc))
    progress(f"  wrote {md_path}")
    with open(html_path, "w", encoding="utf-8") as f:
        f.write(render_html(doc, args.title))
    progress(f"  wrote {html_path}")
    progress(f"done in {time.time() - t0:.1f} s: {html_path}")


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except InputError as e:
        die(str(e), 2)
    except OSError as e:
        die(f"{e.filename or ''}: {e.strerror}" if e.filename else str(e), 2)
    except BrokenPipeError:  # stdout closed early (| head): not an error of the report
        sys.stderr.close()
        os._exit(1)
    except KeyboardInterrupt:
        die("interrupted", 130)
