"""report.py RUN_DIR... [--out DIR] [--smooth W] [--ignore-key SECTION.KEY]...
[--ep-size P] [--moe-train PATH | --key-meta FILE]

Reads each RUN_DIR written by moe-train, groups runs that differ only in their
seed (and in keys that moe-train marks as not changing training) into
variants, and writes DIR/index.html (a self-contained page) and DIR/README.md
with the same tables, plus the PNG figures beside them. The page leads with
the runs' own comparison and figures; then the paper's tables (those with no
matching run folded away); then every run. docs/report.md describes every
table, figure and value.

Exit codes: 0 done; 2 bad input (one line naming the problem); 1 internal error.
Needs PyYAML, numpy and matplotlib (Debian: python3-yaml, python3-numpy,
python3-matplotlib; scripts/setup.sh installs them).
"""

import argparse
import datetime
import os
import re
import sys
import time

from . import PROG, InputError, progress

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENTRY = os.path.join(REPO, "scripts", "report.py")


def parse_args(argv):
    ap = argparse.ArgumentParser(
        prog=PROG,
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
    ap.add_argument("--moe-train", default=os.path.join(REPO, "build", "moe-train"), metavar="PATH",
                    help="the moe-train whose --print-config --with-meta says which config keys change "
                         "training (default: build/moe-train of this checkout)")
    ap.add_argument("--key-meta", metavar="FILE",
                    help="a saved copy of `moe-train --print-config --with-meta` to use instead of running "
                         "moe-train (a machine without the binary)")
    ap.add_argument("--ep-size", type=int, default=8, metavar="P",
                    help="expert-parallel ranks of the per-rank load table (default 8: one 8-GPU node)")
    ap.add_argument("--title", default="moe-lfb report", help="HTML page title")
    return ap.parse_args(argv)


def missing_module():
    """None when PyYAML, numpy and matplotlib import, else the missing module's
    name. An interpreter without them (a pyenv or venv python first on PATH)
    re-runs the report at once under Debian's /usr/bin/python3 when that one
    differs."""
    import importlib.util
    missing = next((m for m in ("yaml", "numpy", "matplotlib") if importlib.util.find_spec(m) is None), None)
    if missing is None:
        return None  # found, not imported yet: bad input is reported without the import's cost
    deb = "/usr/bin/python3"
    if (os.environ.get("MOE_REPORT_REEXEC") != "1" and os.path.exists(deb)
            and os.path.realpath(sys.executable) != os.path.realpath(deb)):
        os.environ["MOE_REPORT_REEXEC"] = "1"
        try:
            os.execv(deb, [deb, ENTRY] + sys.argv[1:])
        except OSError:
            pass
    return missing


def build_report(runs, variants, meta, args):
    from .paper import paper_tables
    from .render import Doc
    from .runs import LAST_FRACTION
    from .tables import Tables

    T = Tables(runs, variants)
    pct = int(LAST_FRACTION * 100)
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
        f"MaxVio_batch (last {pct}%): the mean of each step's MaxVio_batch (the step's global "
        f"batch, mean over MoE layers) over the last ceil({pct}%) of the logged steps."
        + (" MaxVio_compute: the same for the computation-batch MaxVio (each micro-batch x expert-parallel "
           "group, the batch one GPU computes)." if T.any_compute else
           " MaxVio_compute: not logged by these runs (a moe-train older than the maxvio_compute field)."),
        "A variant is a set of runs whose configs differ only in `train.seed` and in keys that do not change "
        f"training (`log.*`, `checkpoint.*`, `train.threads`, evaluation settings, ...; {meta.summary()}). "
        "Its cell is the mean over its runs; with n >= 2: mean ± sample std [min, max]. Numbers: 4 significant "
        "digits.",
        "The paper's numbers are for its 1B model (about 100B tokens of its own corpus); ours come from however small "
        "a model these runs trained, so compare trends, not values.",
    ])
    tables = paper_tables()
    doc.toc([("all-variants", "all variants"), ("figures", "figures"), ("paper", "beside the paper"),
             ("every-run", "every run")])

    # The runs' own comparison first, then their figures.
    doc.h(2, "Variants", "variants")
    T.all_variants(doc)
    T.rank_load(doc, args.ep_size)
    figures(doc, T, variants, args, tables[0]["family"])

    doc.h(2, "Beside the paper", "paper")
    T.beside_paper(doc, tables)

    doc.h(2, "Runs", "runs")
    T.every_run(doc)
    return doc


def figures(doc, T, variants, args, main_family):
    from .figures import Figures
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
    if T.any_compute:
        f = F.curves("maxvio_compute", "maxvio_compute.png", "Computation-batch MaxVio during training",
                     "MaxVio_compute (per micro-batch x EP group)", logy=True)
        doc.fig(f, "Computation-batch MaxVio vs step", "MaxVio of each computation batch (a micro-batch on one "
                "expert-parallel group, what one GPU computes), averaged over those batches and MoE layers; "
                f"log scale; {smooth_note}; band: min-max over seeds.")
    else:
        skipped.append("computation-batch MaxVio: no run logs `maxvio_compute` (an older moe-train)")
    main = [v for v in variants if main_family(v)] or list(variants)
    f, shown = F.heatmaps(main[:6])
    if f:
        def steps_text(steps):
            if len(steps) == 1:
                return f"step {steps[0]}, its only record"
            return "steps " + ", ".join(map(str, steps))
        who = "; ".join(f"{v.label}: run {r.name} ({steps_text(steps)})" for v, r, steps in shown)
        doc.fig(f, "Per-expert load heatmaps", "Each panel: MoE layer (rows) x routed "
                "expert (columns), tokens routed to the expert in that step's global batch divided by the mean "
                "over the layer's experts (1 = perfectly balanced; red over-, blue under-loaded), from "
                "expert_loads.jsonl at its first, middle and last record (each record once: a run with one record "
                f"has one panel); one colour scale for all panels. Runs: {who}.")
    else:
        skipped.append("expert-load heatmaps: no run has expert_loads.jsonl (log.expert_load_interval 0)")
    lf = [v for v in variants if v.method == "loss_free"]
    for v in lf:
        f, r = F.bias(v)
        if f:
            doc.fig(f, f"Bias trajectories: {v.label}", "The Loss-Free selection bias of every routed expert after "
                    "each logged step's update (expert_loads.jsonl `bias`; a marker per record), one panel per MoE "
                    f"layer, from run {r.name}" + (f" (the first of its {v.n} seeds)" if v.n > 1 else "") + ".")
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


def main(argv):
    args = parse_args(argv)
    missing = missing_module()
    if args.smooth < 0:
        raise InputError("--smooth: expected a window >= 0 steps")
    if args.ep_size < 1:
        raise InputError("--ep-size: expected a number of ranks >= 1")
    for k in args.ignore_key:
        if not re.match(r"^[a-z_]+\.[a-z_0-9]+$", k):
            raise InputError(f"--ignore-key {k}: expected section.key, e.g. train.steps")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise InputError(f"--out {args.out}: exists and is not a directory")
    if missing == "yaml":
        raise InputError(f"needs PyYAML (yaml is missing for {sys.executable}): "
                         "run scripts/setup.sh (Debian's python3-yaml)")
    from .render import render_html, render_md
    from .runs import Run, short_names
    from .variants import KeyMeta, group_variants

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
    meta = KeyMeta.from_file(args.key_meta) if args.key_meta else KeyMeta.from_moe_train(args.moe_train)
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
    progress(f"which keys change training: {meta.summary()}")
    variants = group_variants(runs, meta, set(args.ignore_key))
    progress(f"{len(variants)} variant{'s' if len(variants) != 1 else ''}:")
    for v in variants:
        progress(f"  {v.label}: n={v.n} (" + ", ".join(r.name for r in v.runs) + ")")
    longest = max(len(r.steps) for r in runs)
    args.smooth_w = args.smooth if args.smooth > 0 else max(1, longest // 50)

    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as e:
        raise InputError(f"--out {args.out}: cannot create ({e.strerror})")
    doc = build_report(runs, variants, meta, args)
    md_path = os.path.join(args.out, "README.md")
    html_path = os.path.join(args.out, "index.html")
    with open(md_path, "w", encoding="utf-8") as f:
        f.write(render_md(doc))
    progress(f"  wrote {md_path}")
    with open(html_path, "w", encoding="utf-8") as f:
        f.write(render_html(doc, args.title))
    progress(f"  wrote {html_path}")
    progress(f"done in {time.time() - t0:.1f} s: {html_path}")


def run(argv):
    """main() with the exit codes of docs/report.md."""
    try:
        main(argv)
    except InputError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:
        print(f"{PROG}: " + (f"{e.filename or ''}: {e.strerror}" if e.filename else str(e)), file=sys.stderr)
        sys.exit(2)
    except BrokenPipeError:  # stdout closed early (| head): not an error of the report
        sys.stderr.close()
        os._exit(1)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    run(sys.argv[1:])
