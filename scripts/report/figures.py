"""The report's figures: PNG files drawn with matplotlib's Agg backend (no
display needed). Each returns its file name, or None when it has nothing to
draw."""

import math
import os
import textwrap
import warnings

from . import progress
from .runs import num


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
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
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
        # Minor labels (2, 3, 5) in the major ones' size, that of every other axis.
        axis.set_tick_params(which="both", labelsize="medium")

    @staticmethod
    def _positive(a):
        import numpy as np
        a = np.array(a, dtype=float)
        a[~(a > 0)] = np.nan
        return a

    def heatmaps(self, variants):
        """Rows: variants; columns: the first, middle and last record of
        expert_loads.jsonl (fewer when the run has fewer: one record is shown
        once); each a layer x expert image of load / mean load, from the
        variant's first run with loads. Returns (file, [(variant, run, steps)])."""
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
            # The middle: the record between the first and last nearest half the last step.
            inner = range(1, len(recs) - 1) or range(len(recs))
            mid = min(inner, key=lambda i: abs(recs[i]["step"] - recs[-1]["step"] / 2))
            row = []
            for i in sorted({0, mid, len(recs) - 1}):
                L = np.array(recs[i]["loads"], dtype=float)
                mean = L.mean(axis=1, keepdims=True)
                rel = np.divide(L, mean, out=np.zeros_like(L), where=mean > 0)
                vmax = max(vmax, float(rel.max()) if rel.size else 0)
                row.append((recs[i]["step"], rel))
            snaps.append((v, r, row))
        cols = max(len(row) for _, _, row in snaps)
        E = max(rel.shape[1] for _, _, row in snaps for _, rel in row)
        nl = max(rel.shape[0] for _, _, row in snaps for _, rel in row)
        cw = min(5.5, max(2.4, 0.16 * E + 0.9))
        ch = max(1.5, 0.26 * nl + 1.1)
        # Room on the right for the colour bar and its two-line label.
        left, right = 0.7, 1.9
        W, H = cols * cw + left + right, len(snaps) * ch + 1.2
        fig, axes = plt.subplots(len(snaps), cols, figsize=(W, H), squeeze=False)
        # Fixed margins (constrained layout takes seconds here): the row labels
        # on the left, the colour bar on the right, the title on top.
        fig.subplots_adjust(left=left / W, right=1 - right / W, top=1 - 0.95 / H, bottom=0.55 / H,
                            wspace=0.18, hspace=0.75 / (ch - 0.75))
        norm = TwoSlopeNorm(vmin=0.0, vcenter=1.0, vmax=vmax)
        names = {1: ["only record"], 2: ["first", "last"], 3: ["early", "middle", "late"]}
        im = None
        for i, (v, r, row) in enumerate(snaps):
            for j in range(cols):
                ax = axes[i][j]
                if j >= len(row):
                    ax.axis("off")
                    continue
                step, rel = row[j]
                im = ax.imshow(rel, aspect="auto", cmap="RdBu_r", norm=norm, interpolation="nearest")
                ax.set_title(f"{names[len(row)][j]}: step {step}", fontsize=8.5)
                ax.set_yticks(range(rel.shape[0]))
                if rel.shape[0] > 12:
                    ax.set_yticks(range(0, rel.shape[0], max(1, rel.shape[0] // 6)))
                ax.tick_params(labelsize=7)
                ax.grid(False)
                if i == len(snaps) - 1 or j >= len(snaps[i + 1][2]):
                    ax.set_xlabel("routed expert", fontsize=8.5)
            axes[i][0].set_ylabel("MoE layer", fontsize=8.5)
            axes[i][0].annotate(f"{v.label} (run {r.name})", xy=(0, 1), xycoords="axes fraction",
                                xytext=(0, 17), textcoords="offset points", ha="left", va="bottom",
                                fontsize=9.5, fontweight="bold")
        cax = fig.add_axes([1 - (right - 0.3) / W, 0.55 / H, 0.18 / W, 1 - 1.5 / H])
        cax.grid(False)
        cb = fig.colorbar(im, cax=cax)
        cb.set_label("tokens routed to the expert /\nmean over the layer's experts", fontsize=8.5)
        cb.ax.tick_params(labelsize=7.5)
        fig.suptitle("Per-expert load of the step's global batch (shared colour scale; 1 = balanced)")
        return self.save(fig, "expert_loads.png"), [(v, r, [s for s, _ in row]) for v, r, row in snaps]

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
                # Markers at the logged steps: the line between them is not data.
                ax.plot(steps, Y[:, ex], lw=1.0, color=color, marker="o", ms=2.5, label=f"expert {ex}")
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


