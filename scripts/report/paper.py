"""The paper's tables beside our variants (Wang et al. 2024, arXiv
2408.15664; its 1B model). The numbers come from docs/paper_numbers.yaml, the
repository's one copy of them; this module says which of them each report
table shows and which variants match a row."""

import os

from . import InputError
from .runs import load_yaml
from .variants import fmt_param

REL_TOL = 1e-6          # float matching of config values against the paper's
NUMBERS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                       "docs", "paper_numbers.yaml")


def close(a, b):
    if a is None or b is None:
        return False
    if b == 0:
        return a == 0
    return abs(a - b) <= REL_TOL * abs(b)


def is_lf(v, rule=None, mode=None, gate="sigmoid"):
    # The paper's Loss-Free: no centring, no sequence-wise loss beside it, the paper's routing.
    return (v.method == "loss_free" and not v.center and not v.seq_alpha and v.gate == gate
            and v.paper_routing and (rule is None or v.rule == rule) and (mode is None or v.mode == mode))


def is_aux(v, gate="sigmoid"):
    return v.method == "aux_loss" and v.gate == gate and v.scope == "sequence" and v.paper_routing


def is_none(v, gate="sigmoid"):
    return v.method == "none" and v.gate == gate and v.paper_routing


def is_after_paper(v):
    """What DeepSeek-V3 added to the paper's Loss-Free (sign rule, additive
    bias, sigmoid gate): the sequence-wise loss, group-limited routing,
    normalised or scaled gates (docs/paper.md, "After the paper")."""
    return (v.method == "loss_free" and not v.center and v.gate == "sigmoid" and v.rule == "sign"
            and v.mode == "additive" and (bool(v.seq_alpha) or not v.paper_routing))


def fmt_exp(v):
    """u and alpha as the paper writes them: 1e-2, 3e-4, 0."""
    if v == 0:
        return "0"
    m, e = f"{v:.6e}".split("e")
    return f"{m.rstrip('0').rstrip('.')}e{int(e)}"


def setting_text(p):
    """A paper row's setting: 'Loss-Free, sign, u=1e-3', 'aux loss, alpha=3e-4, softmax'."""
    if p["method"] == "loss_free":
        s = f"Loss-Free, {p['rule']}" + (f", {p['mode']}" if p["mode"] != "additive" else "")
        s += f", u={fmt_exp(float(p['u']))}"
    else:
        s = f"aux loss, alpha={fmt_exp(float(p['alpha']))}"
    return s + (f", {p['gate']}" if p["gate"] != "sigmoid" else "")


def matches(p, v):
    """True when variant v has exactly paper row p's setting."""
    if p["method"] == "loss_free":
        return is_lf(v, p["rule"], p["mode"], p["gate"]) and close(v.u, float(p["u"]))
    return is_aux(v, p["gate"]) and close(v.alpha, float(p["alpha"]))


def paper_row(p):
    """{setting, ppl, mv, match} for one row of docs/paper_numbers.yaml."""
    return {"setting": setting_text(p), "ppl": p.get("ppl", p.get("balance", "not given")),
            "mv": p.get("maxvio_global", p.get("balance", "not given")),
            "match": lambda v, p=p: matches(p, v)}


def load_numbers(path=NUMBERS):
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such file (the paper's numbers)")
    doc = load_yaml(path)
    try:
        results = doc["results"]
        for g in results.values():
            for p in g["rows"]:
                p.setdefault("gate", "sigmoid")
        return results
    except (TypeError, KeyError) as e:
        raise InputError(f"{path}: not the paper's numbers ({e})")


def paper_tables(path=NUMBERS):
    """The report's tables beside the paper, numbered in the report's own order
    (the caption names the paper's table or figure)."""
    R = load_numbers(path)

    def rows(group, model="1B", **where):
        out = [p for p in R[group]["rows"] if p["model"] == model
               and all(p.get(k) == want for k, want in where.items())]
        return [paper_row(p) for p in out]

    def src(*groups):
        return " Paper: " + "; ".join(R[g]["source"] for g in groups) + "."

    sign_rows = rows("update_rate")
    return [
        {
            "title": "Table 1. Main result: Loss-Free vs auxiliary loss",
            "caption": "Sigmoid gate. The paper's aux-loss baseline uses alpha = 1e-3; its Loss-Free "
                       "run the sign rule, additive bias, u = 1e-3. The paper reports no run without balancing. "
                       "Rows below the paper's may add what DeepSeek-V3 put beside Loss-Free: the sequence-wise "
                       "loss (seq-wise alpha), group-limited routing, normalised or scaled gates (docs/paper.md, "
                       "\"After the paper\")." + src("main"),
            "rows": rows("main") + [
                {"setting": "no balancing", "ppl": "not reported", "mv": "not reported",
                 "match": lambda v: is_none(v)}],
            # Below the paper's rows: its Loss-Free with what DeepSeek-V3 added.
            "family": lambda v: is_aux(v) or is_lf(v, "sign", "additive") or is_none(v) or is_after_paper(v),
        },
        {
            "title": "Table 2. Update rate u (Loss-Free, sign rule, additive bias)",
            "caption": "Sigmoid gate. The paper gives MaxVio_global for this sweep only as curves: "
                       "u = 1e-4 balances slowly early in training, 1e-3 is best, 1e-2 oscillates late."
                       + src("update_rate"),
            "rows": sign_rows,
            "family": lambda v: is_lf(v, "sign", "additive"),
        },
        {
            "title": "Table 3. Update rule: sign vs proportional (Loss-Free, additive bias)",
            "caption": "Sigmoid gate. Proportional: b_i += u * e_i / mean(c); sign: b_i += u * sign(e_i). "
                       "The sign rows repeat Table 2." + src("update_rule", "update_rate"),
            "rows": rows("update_rule") + sign_rows,
            "family": lambda v: is_lf(v, None, "additive"),
        },
        {
            "title": "Table 4. Bias mode: additive vs multiplicative (Loss-Free, sign rule)",
            "caption": "Sigmoid gate. Multiplicative: top-K of s * b, b starting at 1; additive: top-K of "
                       "s + b, b starting at 0. The additive rows repeat Table 2." + src("bias_mode", "update_rate"),
            "rows": rows("bias_mode") + sign_rows,
            "family": lambda v: is_lf(v, "sign", None),
        },
        {
            "title": "Table 5. Softmax gate",
            "caption": "The paper's softmax runs: aux loss with alpha = 3e-4, Loss-Free with the proportional "
                       "rule and u = 1e-3 (additive bias). The sigmoid-gate counterparts are in Table 1." + src("softmax"),
            "rows": rows("softmax"),
            "family": lambda v: v.gate == "softmax" and (is_aux(v, "softmax") or is_lf(v, None, "additive", "softmax")
                                                         or is_none(v, "softmax")),
        },
        {
            "title": "Table 6. Auxiliary-loss weight alpha (aux loss, sigmoid gate)",
            "caption": R["aux_alpha"]["note"] + src("aux_alpha", "main"),
            "rows": sorted(rows("aux_alpha") + rows("main", method="aux_loss"),
                           key=lambda r: -float(r["setting"].rpartition("=")[2])),
            "family": lambda v: is_aux(v),
        },
    ]


def setting_of(v):
    """A variant's setting in the paper's terms, for rows the paper lacks."""
    if v.method == "loss_free":
        s = f"Loss-Free, {v.rule}" + (f", {v.mode}" if v.mode != "additive" else "") + f", u={fmt_param(v.u)}"
    elif v.method == "aux_loss":
        s = f"aux loss, alpha={fmt_param(v.alpha)}"
    else:
        s = "no balancing"
    if v.method == "loss_free" and v.seq_alpha:
        s += f", seq-wise alpha={fmt_param(v.seq_alpha)}"
    s += f", {v.gate}" if v.gate != "sigmoid" else ""
    return s + (f", {v.routing_text()}" if v.routing_text() else "")


def markdown_table(path=NUMBERS):
    """Every row of docs/paper_numbers.yaml as one Markdown table: docs/paper.md
    holds it between its "paper_numbers.yaml" markers (tests/scripts/paper_numbers_check.py
    checks it, and with --write puts it there)."""
    R = load_numbers(path)
    out = ["| model | setting | val PPL | MaxVio_global | paper |", "|---|---|---|---|---|"]
    for g in R.values():
        for p in g["rows"]:
            out.append(f"| {p['model']} | {setting_text(p)} | {p.get('ppl', '-')} | "
                       f"{p.get('maxvio_global', p.get('balance', '-'))} | {g['source'].split(' (')[0]} |")
    return "\n".join(out) + "\n"
