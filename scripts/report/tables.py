"""Numbers and tables: every cell as docs/report.md defines it."""

import math
import os

from .paper import REL_TOL, setting_of
from .runs import EARLY_STEPS, LAST_FRACTION, num, rank_load_peaks


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


class Tables:
    """The report's tables, with the MaxVio_compute column when any run logs it."""

    def __init__(self, runs, variants):
        self.runs, self.variants = runs, variants
        self.any_compute = any(r.has_compute for r in runs)
        pct = int(LAST_FRACTION * 100)
        self.mv_cols = [f"MaxVio_batch (last {pct}%)"] + ([f"MaxVio_compute (last {pct}%)"] if self.any_compute else [])

    def variant_cells(self, v):
        cells = [fmt_stat([r.ppl for r in v.runs], v.n, "no eval"),
                 fmt_stat([r.mv_global for r in v.runs], v.n, "no eval"),
                 fmt_stat([r.mv_batch_last for r in v.runs], v.n)]
        if self.any_compute:
            cells.append(fmt_stat([r.mv_compute_last for r in v.runs], v.n, "not logged"))
        cells.append(variant_eval_source(v))
        return cells

    def all_variants(self, doc):
        rows = []
        for v in self.variants:
            seeds = ", ".join(str(r.seed) for r in v.runs)
            rows.append([v.label, str(v.n), seeds, fmt_stat([r.final_loss for r in v.runs], v.n)]
                        + self.variant_cells(v))
        doc.table("All variants", "Every variant of the runs given, whether or not the paper has a matching setting.",
                  ["variant", "n", "seeds", "final train loss", "val PPL", "MaxVio_global"] + self.mv_cols + ["eval"],
                  rows, "all-variants")

    def beside_paper(self, doc, tables):
        """The paper's tables: those with a matching variant shown, the others
        folded away in one <details>. Returns the shown tables' numbers."""
        header = ["setting", "paper PPL (1B)", "paper MaxVio_global (1B)", "our variant", "n", "val PPL",
                  "MaxVio_global"] + self.mv_cols + ["eval"]
        blank = [""] * (len(header) - 4)
        built = []
        for i, t in enumerate(tables):
            rows, matched = [], set()
            for pr in t["rows"]:
                hits = [v for v in self.variants if pr["match"](v)]
                if not hits:
                    rows.append([pr["setting"], pr["ppl"], pr["mv"], "no run"] + blank)
                for v in hits:
                    matched.add(id(v))
                    rows.append([pr["setting"], pr["ppl"], pr["mv"], v.label, str(v.n)] + self.variant_cells(v))
            for v in self.variants:
                if id(v) not in matched and t["family"](v):
                    matched.add(id(v))
                    rows.append([setting_of(v) + " (not in the paper)", "—", "—", v.label, str(v.n)]
                                + self.variant_cells(v))
            built.append((i + 1, t, rows, bool(matched)))
        shown = [b for b in built if b[3]]
        folded = [b for b in built if not b[3]]
        doc.p("Each table lists the paper's rows (\"no run\" where none of our variants has exactly that setting; "
              f"floats match within a relative {REL_TOL:g}) and, below them, our variants of the same family at "
              "values the paper did not test (paper columns \"—\"). The paper's numbers (docs/paper_numbers.yaml) "
              "are for its 1B model; ours are from the runs above."
              + (" Tables with no run of their family are folded below." if folded else ""))

        def put(d, n, t, rows):
            d.table(t["title"], t["caption"] + " Paper numbers: its 1B model.", header, rows, f"table-{n}")

        for n, t, rows, _ in shown:
            put(doc, n, t, rows)
        if folded:
            inner = doc.details("No run of their setting, folded: "
                                + "; ".join(t["title"] for _, t, _, _ in folded))
            for n, t, rows, _ in folded:
                put(inner, n, t, rows)
        return [n for n, *_ in shown]

    def rank_load(self, doc, ep_size):
        """The per-rank load at ep_size expert-parallel ranks, early peak and
        late mean (runs.rank_load_peaks), from expert_loads.jsonl; a line
        saying why when no run has it."""
        rows, skipped = [], []
        for v in self.variants:
            peaks = [rank_load_peaks(r.loads, ep_size) for r in v.runs]
            if all(p is None for p in peaks):
                skipped.append(v.label)
                continue
            steps = ", ".join(str(p[1]) for p in peaks if p is not None)
            c = v.runs[0].config
            E, K = num(c.get("moe.n_routed")), num(c.get("moe.top_k"))
            worst = (fmt_num(ep_size * min(K, E / ep_size) / K) if E and K else "—")
            rows.append([v.label, str(v.n), fmt_stat([p[0] if p else None for p in peaks], v.n), steps,
                         fmt_stat([p[2] if p else None for p in peaks], v.n), worst])
        if not rows:
            doc.p(f"Per-rank load at ep_size {ep_size}: not shown, no run has expert_loads.jsonl records "
                  f"within its first {EARLY_STEPS} steps whose routed experts split evenly over {ep_size} ranks.")
            return
        pct = int(LAST_FRACTION * 100)
        doc.table(f"Per-rank load at ep_size {ep_size}",
                  f"What expert parallelism over {ep_size} ranks would have received, from each step's loads in "
                  "expert_loads.jsonl (whatever ep_size the runs trained with): the largest, over ranks, of the "
                  "summed loads of a rank's experts (rank p holds experts p*E/P to (p+1)*E/P - 1), divided by "
                  "the mean over ranks, taking the worst MoE layer of each record. Early peak: the largest over "
                  f"the records of the first {EARLY_STEPS} steps (at: the step, per run); late: the mean over "
                  f"the last {pct}% of the records. Worst case: every token's experts on one rank, "
                  "P * min(K, E/P) / K. A dropless expert-parallel buffer must hold the peak."
                  + (f" Not shown (no records that split over {ep_size} ranks): " + "; ".join(skipped) + "."
                     if skipped else ""),
                  ["variant", "n", f"early peak (steps <= {EARLY_STEPS})", "at step", f"late (last {pct}%)",
                   "worst case"], rows, "rank-load")

    def every_run(self, doc):
        rows = []
        for v in self.variants:
            for r in v.runs:
                row = [r.name, v.label, str(r.seed), str(r.last_step), fmt_num(r.final_loss),
                       fmt_num(r.ppl) if r.ppl is not None else "no eval",
                       fmt_num(r.mv_global) if r.mv_global is not None else "no eval",
                       fmt_num(r.mv_batch_last)]
                if self.any_compute:
                    row.append(fmt_num(r.mv_compute_last) if r.has_compute else "not logged")
                row.append(r.eval_source)
                rows.append(row)
        doc.table("Every run", "One row per run directory (name: the shortest trailing part of its path that tells "
                  "the runs apart).", ["run", "variant", "seed", "steps", "final train loss", "val PPL",
                                       "MaxVio_global"] + self.mv_cols + ["eval"], rows, "every-run")
        doc.ul([f"`{r.name}`: {os.path.abspath(r.path)}" for r in self.runs])
