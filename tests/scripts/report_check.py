#!/usr/bin/env python3
"""Checks scripts/report.py's output against the run files it was made from
(tests/scripts/report_test.sh): every page and figure exists, and the tables of
README.md and index.html hold each run's and each variant's numbers, computed
here independently of the report, in the right rows and columns.

    report_check.py RUNS_DIR REPORT_DIR

RUNS_DIR holds the runs lf and lf_seed7 (Loss-Free, sign, u = 1e-3, two
seeds), aux (aux loss, alpha 1e-3), each with maxvio_compute, the bias and an
end-of-training eval.json, and none (no balancing, stripped to an older
moe-train's files: no maxvio_compute, no bias, no eval.json).
"""

import json
import math
import os
import re
import statistics
import sys

import numpy as np
from html.parser import HTMLParser

runs_dir, out = sys.argv[1], sys.argv[2]
failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)


def jsonl(path):
    if not os.path.exists(path):
        return []
    rows = {}
    for line in open(path):
        if line.strip():
            r = json.loads(line)
            rows[r["step"]] = r
    return [rows[s] for s in sorted(rows)]


def f4(x):
    return f"{x:#.4g}"


# ---- the runs' own numbers -------------------------------------------------
V3 = "Loss-Free, sign, u=1e-3, seq-wise alpha=1e-4, groups 2 of 4, normalised gates"
RUNS = {"lf": "Loss-Free, sign, u=1e-3", "lf_seed7": "Loss-Free, sign, u=1e-3",
        "aux": "aux loss, alpha=1e-3", "none": "no balancing", "v3": V3}
EP = 4  # report_test.sh passes --ep-size 4: the tiny model's 8 experts, 2 per rank
run = {}
for name in RUNS:
    d = os.path.join(runs_dir, name)
    m = jsonl(os.path.join(d, "metrics.jsonl"))
    k = math.ceil(len(m) / 10)
    r = {"steps": m[-1]["step"], "loss": m[-1]["loss"],
         "mvb": statistics.fmean(x["maxvio_batch"] for x in m[-k:])}
    r["mvc"] = statistics.fmean(x["maxvio_compute"] for x in m[-k:]) if "maxvio_compute" in m[0] else None
    ej = os.path.join(d, "eval.json")
    if os.path.exists(ej):
        e = json.load(open(ej))
        r["src"] = f"eval.json (step {e['step']})"
    else:
        e = jsonl(os.path.join(d, "eval.jsonl"))[-1]
        r["src"] = f"last eval.jsonl line (step {e['step']})"
    r["ppl"], r["mvg"] = e["perplexity"], e["maxvio_global"]
    r["seed"] = int(re.search(r"^  seed: (\d+)$", open(os.path.join(d, "config.yaml")).read(), re.M).group(1))
    loads = jsonl(os.path.join(d, "expert_loads.jsonl"))
    r["bias"] = bool(loads) and "bias" in loads[-1]
    # Per-rank load at EP ranks (docs/report.md): each record's worst layer of
    # max over ranks / mean of the rank sums, ranks holding consecutive experts;
    # every record is within the first 100 steps here.
    worst = [(rec["step"], max(float(np.max(s) / np.mean(s)) for s in
                               (np.asarray(l, dtype=np.float64).reshape(EP, -1).sum(axis=1) for l in rec["loads"])))
             for rec in loads]
    r["rank_peak"], r["rank_peak_step"] = max(worst, key=lambda t: (t[1], -t[0]))[::-1]
    k = math.ceil(len(worst) / 10)
    r["rank_late"] = statistics.fmean(w for _, w in worst[-k:])
    run[name] = r

check(run["none"]["mvc"] is None and not run["none"]["bias"], "the 'none' run was not stripped")
check(run["none"]["src"].startswith("last eval.jsonl"), "the 'none' run still has eval.json")
# This tree's moe-train writes maxvio_compute, the bias and the end-of-training eval.json.
for name in ("lf", "lf_seed7", "aux", "v3"):
    check(run[name]["mvc"] is not None, f"{name}: metrics.jsonl has no maxvio_compute")
    check(run[name]["bias"], f"{name}: expert_loads.jsonl has no bias")
    check(run[name]["src"].startswith("eval.json (step 16)"), f"{name}: no eval.json of step 16 from moe-train")
# eval.json (the whole split) and the last eval.jsonl line (its first 1024 tokens)
# differ, so the tables below tell which one the report took.
last_line = jsonl(os.path.join(runs_dir, "lf", "eval.jsonl"))[-1]
check(f4(last_line["perplexity"]) != f4(run["lf"]["ppl"]), "lf: eval.json and eval.jsonl agree; the test cannot tell them apart")


def cell(values):
    """A variant's cell as docs/report.md defines it.

    Computed here independently of report.py, from the same doubles of the
    run files: a single value is the same number; a mean of two (the
    two-seed variant, the last ceil(10%) = 2 of 16 steps) is one correctly
    rounded addition and a division either way, so the same bits; the sample
    std can differ from report.py's formula in its last bit (~1e-16
    relative). The cells compare after rounding to 4 significant digits
    (steps 1e-4 relative apart), so they could only differ for a value within
    1e-16 of a rounding midpoint: a chance of ~1e-12 per cell."""
    if len(values) == 1:
        return f4(values[0])
    return (f"{f4(statistics.fmean(values))} ± {f4(statistics.stdev(values))} "
            f"[{f4(min(values))}, {f4(max(values))}]")


# ---- the files ----------------------------------------------------------------
md_path, html_path = os.path.join(out, "README.md"), os.path.join(out, "index.html")
for p in (md_path, html_path):
    check(os.path.isfile(p) and os.path.getsize(p) > 0, f"no {p}")
if failures:
    sys.exit("FAIL: " + "; ".join(failures))
md, page = open(md_path).read(), open(html_path).read()

figures = ["loss.png", "maxvio_batch.png", "maxvio_compute.png", "expert_loads.png",
           "bias_loss_free_sign_u_1e_3.png", "ppl_vs_maxvio.png", "val_perplexity.png"]
pngs = sorted(f for f in os.listdir(out) if f.endswith(".png"))
for f in figures:
    check(f in pngs, f"no figure {f}")
for f in pngs:
    with open(os.path.join(out, f), "rb") as fh:
        check(fh.read(8) == b"\x89PNG\r\n\x1a\n", f"{f} is not a PNG")
    check(os.path.getsize(os.path.join(out, f)) > 5000, f"{f} is nearly empty")
    check(f"({f})" in md, f"README.md does not link {f}")
    check(f'src="{f}"' in page, f"index.html does not show {f}")
for f in re.findall(r'src="([^"]+)"', page):
    check(os.path.isfile(os.path.join(out, f)), f"index.html shows a missing {f}")
check(not re.search(r'<(link|script)\b|https?://', page), "index.html loads something external")


# ---- tables: {title: [row dict]} from each page ----------------------------
def md_tables(text):
    tables, title, header = {}, None, None
    for line in text.splitlines():
        m = re.match(r"^\*\*(.+)\*\*$", line)
        if m:
            title, header = m.group(1), None
            continue
        if line.startswith("|"):
            cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            if header is None:
                header = cells
            elif not all(set(c) <= {"-"} for c in cells):
                tables.setdefault(title, []).append(dict(zip(header, cells)))
        else:
            header = None
    return tables


class HtmlTables(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tables, self.title, self.div, self.cell, self.row, self.header = {}, None, False, None, None, None

    def handle_starttag(self, tag, attrs):
        if tag == "div" and ("class", "tt") in attrs:
            self.div, self.title = True, ""
        elif tag == "table":
            self.header = None
        elif tag == "tr":
            self.row = []
        elif tag in ("td", "th"):
            self.cell = ""

    def handle_endtag(self, tag):
        if tag == "div" and self.div:
            self.div = False
        elif tag in ("td", "th") and self.cell is not None:
            self.row.append(self.cell.strip())
            self.cell = None
        elif tag == "tr":
            if self.header is None:
                self.header = self.row
            else:
                self.tables.setdefault(self.title, []).append(dict(zip(self.header, self.row)))

    def handle_data(self, data):
        if self.div:
            self.title += data
        if self.cell is not None:
            self.cell += data


hp = HtmlTables()
hp.feed(page)
pages = {"README.md": md_tables(md), "index.html": hp.tables}

MVC = "MaxVio_compute (last 10%)"
for where, tables in pages.items():
    def table(prefix):
        hits = [rows for t, rows in tables.items() if t and t.startswith(prefix)]
        check(len(hits) == 1, f"{where}: no table '{prefix}'")
        return hits[0] if hits else []

    def expect(row, col, want, what):
        got = row.get(col)
        check(got == want, f"{where}: {what}: column '{col}' is {got!r}, expected {want!r}")

    # Every run: one row per run with its own numbers.
    rows = {r["run"]: r for r in table("Every run")}
    check(set(rows) == set(RUNS), f"{where}: runs table lists {sorted(rows)}")
    for name, r in run.items():
        row = rows.get(name, {})
        expect(row, "variant", RUNS[name], f"run {name}")
        expect(row, "steps", str(r["steps"]), f"run {name}")
        expect(row, "final train loss", f4(r["loss"]), f"run {name}")
        expect(row, "val PPL", f4(r["ppl"]), f"run {name}")
        expect(row, "MaxVio_global", f4(r["mvg"]), f"run {name}")
        expect(row, "MaxVio_batch (last 10%)", f4(r["mvb"]), f"run {name}")
        expect(row, "eval", r["src"], f"run {name}")
        expect(row, MVC, f4(r["mvc"]) if r["mvc"] is not None else "not logged", f"run {name}")

    # Variants: the two Loss-Free seeds are one variant, mean ± std [min, max].
    variants = {r["variant"]: r for r in table("All variants")}
    check(set(variants) == set(RUNS.values()), f"{where}: variants {sorted(variants)}")
    groups = {v: [run[n] for n in RUNS if RUNS[n] == v] for v in set(RUNS.values())}
    for v, rs in groups.items():
        row = variants.get(v, {})
        expect(row, "n", str(len(rs)), f"variant {v}")
        expect(row, "val PPL", cell([r["ppl"] for r in rs]), f"variant {v}")
        expect(row, "MaxVio_global", cell([r["mvg"] for r in rs]), f"variant {v}")
        expect(row, "MaxVio_batch (last 10%)", cell([r["mvb"] for r in rs]), f"variant {v}")
        expect(row, "final train loss", cell([r["loss"] for r in rs]), f"variant {v}")
        mvc = [r["mvc"] for r in rs if r["mvc"] is not None]
        expect(row, MVC, cell(mvc) if mvc else "not logged", f"variant {v}")
    check(" ± " in variants.get("Loss-Free, sign, u=1e-3", {}).get("val PPL", ""),
          f"{where}: the two-seed variant shows no spread")
    seeds = variants.get("Loss-Free, sign, u=1e-3", {}).get("seeds", "")
    check(set(seeds.split(", ")) == {"1234", "7"}, f"{where}: Loss-Free seeds '{seeds}'")

    # The per-rank load table: every variant, recomputed from expert_loads.jsonl.
    rl = {r["variant"]: r for r in table(f"Per-rank load at ep_size {EP}")}
    check(set(rl) == set(RUNS.values()), f"{where}: per-rank load variants {sorted(rl)}")
    for v, rs in groups.items():
        row = rl.get(v, {})
        expect(row, "early peak (steps <= 100)", cell([r["rank_peak"] for r in rs]), f"per-rank load {v}")
        expect(row, "at step", ", ".join(str(r["rank_peak_step"]) for r in sorted(rs, key=lambda r: r["seed"])),
               f"per-rank load {v}")  # the variant's runs in seed order
        expect(row, "late (last 10%)", cell([r["rank_late"] for r in rs]), f"per-rank load {v}")
        expect(row, "worst case", "4.000", f"per-rank load {v}")  # P * min(K, E/P) / K = 4 * 2 / 2

    # Table 1: the paper's rows beside ours.
    t1 = {(r["setting"], r["our variant"]): r for r in table("Table 1.")}
    for setting, paper_ppl, paper_mv, v in (("aux loss, alpha=1e-3", "9.56", "0.72", "aux loss, alpha=1e-3"),
                                            ("Loss-Free, sign, u=1e-3", "9.50", "0.04", "Loss-Free, sign, u=1e-3"),
                                            ("no balancing", "not reported", "not reported", "no balancing")):
        row = t1.get((setting, v), {})
        check(bool(row), f"{where}: Table 1 has no row ({setting}, {v})")
        expect(row, "paper PPL (1B)", paper_ppl, f"Table 1 {setting}")
        expect(row, "paper MaxVio_global (1B)", paper_mv, f"Table 1 {setting}")
        rs = groups[v]
        expect(row, "val PPL", cell([r["ppl"] for r in rs]), f"Table 1 {setting}")
        expect(row, "MaxVio_global", cell([r["mvg"] for r in rs]), f"Table 1 {setting}")
        expect(row, "MaxVio_batch (last 10%)", cell([r["mvb"] for r in rs]), f"Table 1 {setting}")
        mvc = [r["mvc"] for r in rs if r["mvc"] is not None]
        expect(row, MVC, cell(mvc) if mvc else "not logged", f"Table 1 {setting}")
        expect(row, "eval", "eval.json" if v != "no balancing" else "last eval.jsonl line (step 16)",
               f"Table 1 {setting}")

    # DeepSeek-V3's additions: below Table 1's paper rows, and in no paper row.
    v3 = f"Loss-Free, sign, u=1e-3, seq-wise alpha=1e-4, groups 2 of 4, normalised gates (not in the paper)"
    row = t1.get((v3, V3), {})
    check(bool(row), f"{where}: Table 1 has no row for the V3-style run: {sorted(t1)}")
    expect(row, "paper PPL (1B)", "—", "Table 1 V3-style")
    expect(row, "val PPL", cell([run["v3"]["ppl"]]), "Table 1 V3-style")
    for title in ("Table 2.", "Table 3.", "Table 4.", "Table 6."):
        check(all(r["our variant"] != V3 for r in table(title)), f"{where}: {title} shows the V3-style run")

    # Table 2: u = 1e-4 and 1e-2 have no run; 1e-3 is our two-seed variant.
    t2 = {r["setting"]: r for r in table("Table 2.")}
    for u in ("1e-4", "1e-2"):
        expect(t2.get(f"Loss-Free, sign, u={u}", {}), "our variant", "no run", f"Table 2 u={u}")
    expect(t2.get("Loss-Free, sign, u=1e-3", {}), "our variant", "Loss-Free, sign, u=1e-3", "Table 2 u=1e-3")
    expect(t2.get("Loss-Free, sign, u=1e-3", {}), "paper MaxVio_global (1B)", "best", "Table 2 u=1e-3")
    t5 = table("Table 5.")
    check(all(r["our variant"] == "no run" for r in t5), f"{where}: Table 5 (softmax) matched a sigmoid run")
    t6 = {r["setting"]: r for r in table("Table 6.")}
    expect(t6.get("aux loss, alpha=0", {}), "our variant", "no run", "Table 6 alpha=0")

# Layout: the runs' own comparison and figures lead; the paper's tables with
# a matching run follow; the one with none (Table 5, softmax) is folded away.
for where, text in (("README.md", md), ("index.html", page)):
    at = {k: text.find(k) for k in ("All variants", "loss.png", "Table 1.", "<details>", "Table 5.", "Every run")}
    check(all(v >= 0 for v in at.values()), f"{where}: missing one of {sorted(k for k, v in at.items() if v < 0)}")
    check(at["All variants"] < at["loss.png"] < at["Table 1."] < at["<details>"] < at["Table 5."] < at["Every run"],
          f"{where}: sections out of order: {at}")
    check(text.count("<details>") == 1, f"{where}: {text.count('<details>')} folded sections, expected 1")
    # The heatmap: first, middle and last record (4 records at steps 4..16);
    # the stripped run's single record once.
    check("no balancing: run none (step 16, its only record)" in text, f"{where}: heatmap of 'none' not a single panel")
    check("aux loss, alpha=1e-3: run aux (steps 4, 8, 16)" in text, f"{where}: heatmap of 'aux' not steps 4, 8, 16")

if failures:
    print("\n".join("FAIL: " + f for f in failures), file=sys.stderr)
    sys.exit(1)
print(f"report_check: {len(pngs)} figures; both pages hold the numbers of {len(run)} runs "
      "(4 from eval.json, 1 stripped to the older format)")
