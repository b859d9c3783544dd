"""Reading moe-train run directories: config.yaml, metrics.jsonl and, when
present, expert_loads.jsonl, eval.jsonl and eval.json."""

import json
import math
import os
import re
import sys

import yaml

from . import PROG, InputError

LAST_FRACTION = 0.10    # MaxVio_batch / MaxVio_compute: mean over the last 10% of steps
EARLY_STEPS = 100       # the early-training window of the per-rank load peak


class YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 floats: moe-train writes 1e-06 and
    3e-04, which YAML 1.1 (PyYAML) would read as strings."""


YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def load_yaml(path):
    """A YAML file as Python objects; InputError naming the file and line."""
    with open(path, encoding="utf-8") as f:
        try:
            return yaml.load(f, Loader=YamlLoader)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f":{mark.line + 1}" if mark is not None else ""
            what = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise InputError(f"{path}{where}: not YAML ({what})")


def read_config(path):
    """{"section.key": value} from moe-train's two-level config.yaml."""
    doc = load_yaml(path)
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise InputError(f"{path}: not a map of sections")
    cfg = {}
    for section, body in doc.items():
        if isinstance(body, dict):
            for key, value in body.items():
                cfg[f"{section}.{key}"] = value
        elif body is not None:
            cfg[str(section)] = body  # a top-level scalar
    return cfg


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
        self.config_path = cpath
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


def rank_load_ratio(layer_loads, ep_size):
    """One layer's per-rank load peak at expert parallelism over ep_size
    ranks: the largest, over ranks, of the summed loads of the rank's experts,
    divided by the mean over ranks. Rank p holds experts [p*E/P, (p+1)*E/P),
    as the dispatcher places them (src/moe/dispatcher.h). None when no token
    was routed."""
    per = len(layer_loads) // ep_size
    ranks = [sum(layer_loads[p * per:(p + 1) * per]) for p in range(ep_size)]
    mean = sum(ranks) / ep_size
    return max(ranks) / mean if mean > 0 else None


def rank_load_peaks(loads, ep_size, early_steps=EARLY_STEPS):
    """(early peak, its step, late mean) of a run's per-rank load ratio at
    ep_size ranks, from expert_loads.jsonl: a record's ratio is the largest
    over its MoE layers (every layer's all-to-all uses the same buffers); the
    early peak is the largest ratio of the records at steps <= early_steps;
    the late mean is the mean ratio over the last ceil(10%) of the records.
    None when the run has no expert loads or its routed experts do not split
    evenly over ep_size ranks."""
    ratios = []
    for r in loads:
        layers = r.get("loads")
        if not isinstance(layers, list) or not layers or any(
                not isinstance(l, list) or not l or len(l) % ep_size for l in layers):
            return None
        per_layer = [rank_load_ratio(l, ep_size) for l in layers]
        per_layer = [x for x in per_layer if x is not None]
        ratios.append((r["step"], max(per_layer) if per_layer else None))
    early = [(x, s) for s, x in ratios if s <= early_steps and x is not None]
    if not early:
        return None
    peak, step = max(early, key=lambda t: t[0])
    return peak, step, last_fraction_mean([x for _, x in ratios])


def short_names(paths):
    """The shortest trailing path parts that tell the runs apart."""
    parts = [os.path.normpath(os.path.abspath(p)).split(os.sep) for p in paths]
    for n in range(1, max(len(p) for p in parts) + 1):
        names = [os.sep.join(p[-n:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return [os.path.normpath(p) for p in paths]
