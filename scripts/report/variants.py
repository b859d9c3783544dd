"""Variants: runs whose configs agree on every key that changes training.

Which keys change training is moe-train's to say (the field table in
src/config/config.cpp): `moe-train --print-config --with-meta` marks each key
`changes`, `seed` or `none`, and keys read under one setting only with
`read_when` (docs/config.md). KeyMeta takes that from the binary or from a
recorded copy of its output."""

import os
import re
import subprocess
import tempfile

import yaml

from . import InputError
from .runs import YamlLoader, load_yaml, num


class KeyMeta:
    """{"section.key": (training, {read_when_key: value})} and where it came from."""

    def __init__(self, doc, source):
        self.source = source
        self.keys = {}
        if not isinstance(doc, dict):
            raise InputError(f"{source}: not the output of moe-train --print-config --with-meta")
        for section, body in doc.items():
            for key, m in (body or {}).items() if isinstance(body, dict) else ():
                if not isinstance(m, dict) or m.get("training") not in ("changes", "seed", "none"):
                    raise InputError(f"{source}: {section}.{key}: no training: changes|seed|none "
                                     "(not the output of moe-train --print-config --with-meta)")
                self.keys[f"{section}.{key}"] = (m["training"], m.get("read_when") or {})
        if not self.keys:
            raise InputError(f"{source}: no keys (not the output of moe-train --print-config --with-meta)")

    @classmethod
    def from_file(cls, path):
        if not os.path.isfile(path):
            raise InputError(f"--key-meta {path}: no such file")
        return cls(load_yaml(path), path)

    @classmethod
    def from_moe_train(cls, binary):
        """Asks moe-train. The metadata is per key, not per run: an empty
        config (all defaults) serves, and a run's config.yaml with keys this
        moe-train does not know cannot get in the way."""
        if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
            raise InputError(f"no {binary} to say which config keys change training: build it "
                             "(scripts/build.sh), pass --moe-train PATH, or pass --key-meta FILE "
                             "(saved from moe-train --print-config --with-meta)")
        with tempfile.TemporaryDirectory(prefix="moe-report-") as d:
            empty = os.path.join(d, "defaults.yaml")
            open(empty, "w").close()
            cmd = [binary, "--config", empty, "--print-config", "--with-meta"]
            try:
                p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            except (OSError, subprocess.TimeoutExpired) as e:
                raise InputError(f"{binary}: cannot run ({e})")
        if p.returncode != 0:
            err = (p.stderr.strip().splitlines() or ["no message"])[-1]
            raise InputError(f"{binary} --print-config --with-meta: {err}")
        try:
            doc = yaml.load(p.stdout, Loader=YamlLoader)
        except yaml.YAMLError:
            doc = None
        return cls(doc, f"{binary} --print-config --with-meta")

    def ignored(self, key, cfg):
        """True when key does not separate variants in a run with config cfg:
        the seed, a key that changes no trained weight, or one the run's
        setting does not read. A key this moe-train does not know separates."""
        m = self.keys.get(key)
        if m is None:
            return False
        training, read_when = m
        if training != "changes":
            return True
        return any(cfg.get(k) != v for k, v in read_when.items())

    def summary(self):
        counts = {t: sum(1 for tr, _ in self.keys.values() if tr == t) for t in ("changes", "seed", "none")}
        return (f"{len(self.keys)} keys from {self.source}: {counts['changes']} change training, "
                f"{counts['seed']} seed, {counts['none']} do not")


# Keys added after runs were written, with the value that trains as those runs
# did: a config.yaml without the key ran at that value.
ADDED_KEYS = {"balance.seq_aux_alpha": 0, "moe.n_group": 1, "moe.topk_group": 1}


def semantic_config(cfg, meta, extra_ignored):
    cfg = {**ADDED_KEYS, **cfg}
    return {k: v for k, v in cfg.items() if not meta.ignored(k, cfg) and k not in extra_ignored}


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
              "balance.center_bias", "balance.aux_alpha", "balance.aux_scope",
              "balance.seq_aux_alpha", "moe.gate", "moe.n_group", "moe.topk_group",
              "moe.normalize_gates", "moe.route_scale"}


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
        self.seq_alpha = num(c.get("balance.seq_aux_alpha", 0))
        self.n_group = c.get("moe.n_group", 1)
        self.topk_group = c.get("moe.topk_group", 1)
        self.norm_gates = c.get("moe.normalize_gates") is True
        self.route_scale = num(c.get("moe.route_scale", 1))
        self.label = ""
        self.slug = ""

    @property
    def n(self):
        return len(self.runs)

    @property
    def paper_routing(self):
        """The paper's routing: top-K over every expert (no group limit),
        gates neither normalised nor scaled."""
        return self.topk_group == self.n_group and not self.norm_gates and self.route_scale == 1

    def routing_text(self):
        """What differs from the paper's routing: 'groups 4 of 8, normalised gates, route scale 2.5'."""
        parts = []
        if self.topk_group != self.n_group:
            parts.append(f"groups {self.topk_group} of {self.n_group}")
        if self.norm_gates:
            parts.append("normalised gates")
        if self.route_scale != 1:
            parts.append(f"route scale {fmt_param(self.route_scale)}")
        return ", ".join(parts)

    def base_label(self):
        parts = [METHOD_NAME.get(self.method, str(self.method))]
        if self.method == "loss_free":
            parts.append(str(self.rule))
            if self.mode != "additive":
                parts.append(str(self.mode))
            if self.center:
                parts.append("centred")
            parts.append(f"u={fmt_param(self.u)}")
            if self.seq_alpha:
                parts.append(f"seq-wise alpha={fmt_param(self.seq_alpha)}")
        elif self.method == "aux_loss":
            parts.append(f"alpha={fmt_param(self.alpha)}")
            if self.scope != "sequence":
                parts.append(f"{self.scope} scope")
        if self.gate != "sigmoid":
            parts.append(str(self.gate))
        if self.routing_text():
            parts.append(self.routing_text())
        return ", ".join(parts)


def group_variants(runs, meta, extra_ignored):
    groups = {}
    for r in runs:
        sc = semantic_config(r.config, meta, extra_ignored)
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
