"""Figures of the book, drawn with matplotlib at page width (about 7 inches) with legible ticks.

Each function takes computed data (from ``ssdlib.experiments``) and returns the figure; notebooks save and show.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from ..experiments.theory import VERTICES, ball_in_simplex, ssd_step, to_xy
from ..information import cmi
from ..solver import waterfill

PAGE_WIDTH = 7.0
CLASS_COLOURS = ("tab:red", "tab:green", "tab:purple")
plt.rcParams.update({"font.size": 9, "axes.titlesize": 9, "axes.labelsize": 9, "legend.fontsize": 8,
                     "xtick.labelsize": 8, "ytick.labelsize": 8, "figure.dpi": 110})


def proposition1_scatter(trials: pd.DataFrame):
    """I(X;Yhat|Y) against I(X;Yhat) - I(Y;Yhat): Markov joints on the diagonal, non-Markov controls off it."""
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH * 0.6, PAGE_WIDTH * 0.5))
    for markov, style in ((False, dict(color="tab:orange", marker="x", label="no Markov chain (control)")),
                          (True, dict(color="tab:blue", marker="o", label="Markov chain Y - X - Yhat"))):
        part = trials[trials.markov == markov]
        ax.scatter(part["I(X;Yh) - I(Y;Yh)"], part["I(X;Yh|Y)"], s=10, alpha=0.6, **style)
    lo = min(trials["I(X;Yh) - I(Y;Yh)"].min(), 0.0)
    hi = max(trials["I(X;Yh|Y)"].max(), trials["I(X;Yh) - I(Y;Yh)"].max())
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="identity of Proposition 1")
    ax.set(xlabel=r"$I(X;\hat Y) - I(Y;\hat Y)$ (nats)", ylabel=r"$I(X;\hat Y\mid Y)$ (nats)")
    ax.legend(loc="upper left", frameon=False)
    fig.tight_layout()
    return fig


def waterfill_bars(f, q, r: float, ax=None, title: str = ""):
    """Bars of the ratios f_i / q_i (sorted) with the two water levels: p_i / q_i = clip(f_i / q_i, a, b)."""
    f, q = torch.as_tensor(f, dtype=torch.float64), torch.as_tensor(q, dtype=torch.float64)
    p = waterfill(f[None], q[None], r)[0]
    ratio, clipped = (f / q).numpy(), (p / q).numpy()
    order = np.argsort(ratio)
    raised, lowered = clipped > ratio + 1e-12, clipped < ratio - 1e-12
    a = clipped[raised].min() if raised.any() else None
    b = clipped[lowered].max() if lowered.any() else None
    if ax is None:
        _, ax = plt.subplots(figsize=(PAGE_WIDTH * 0.5, 2.6))
    x = np.arange(len(ratio))
    ax.bar(x, ratio[order], color="0.8", label=r"$f_i/q_i$")
    ax.bar(x, clipped[order], fill=False, edgecolor="tab:blue", lw=1.2, label=r"$p_i/q_i$")
    if a is not None:
        ax.axhline(a, color="tab:green", ls="--", lw=1, label=f"level a = {a:.3f} (raise)")
    if b is not None:
        ax.axhline(b, color="tab:red", ls="--", lw=1, label=f"level b = {b:.3f} (lower)")
    ax.set(xticks=x, xticklabels=[str(i) for i in order], xlabel="class i (sorted by f_i/q_i)",
           ylabel="ratio (log scale)", yscale="log", title=title or f"radius r = {r:.3f}")
    ax.legend(loc="upper left", frameon=False)
    return ax.figure


def simplex_panel(ax, f, q_table, T: float, eps: float, *, normalized: bool = True, legend: bool = True):
    """One SSD step on the 2-simplex: the L1 ball (radius r = eps H(f)) cut by the simplex, each class mean q^y, an
    arrow from f to each projection p^y with a marker sized by the sampling probability."""
    step = ssd_step(torch.as_tensor(f), torch.as_tensor(q_table), T, eps, normalized=normalized)
    f = np.asarray(f, dtype=float)
    ax.fill(*VERTICES.T, color="0.96", ec="0.3", lw=0.8)
    ax.fill(*to_xy(ball_in_simplex(f, step["r"])).T, color="tab:blue", alpha=0.18,
            label=r"$\{p: \|p-f\|_1\leq r\}$")
    for y, colour in enumerate(CLASS_COLOURS):
        qy, py = to_xy(np.asarray(q_table[y], dtype=float)), to_xy(step["p"][y])
        ax.plot(*qy, "x", color=colour, ms=7, label=f"$q^{y}$")
        ax.annotate("", xy=py, xytext=to_xy(f), arrowprops=dict(arrowstyle="->", color=colour, lw=1.0))
        ax.plot(*py, "o", color=colour, ms=3 + 10 * step["law"][y], alpha=0.9,
                label=f"$p^{y}$, P(y={y}) = {step['law'][y]:.2f}")
    ax.plot(*to_xy(f), "k*", ms=9, label="$f(x)$")
    for k in range(3):
        ax.text(*(VERTICES[k] + [-0.05 if k == 0 else (0.0 if k == 2 else -0.05), -0.07 if k < 2 else 0.03]),
                f"class {k}", fontsize=8)
    ax.set_title(f"T = {T}, $\\epsilon$ = {eps}\nr = {step['r']:.3f}", fontsize=9)
    ax.set_aspect("equal")
    ax.axis("off")
    if legend:
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    return step


def simplex_grid_figure(f, q_table, temperatures, epsilons, *, normalized: bool = True):
    """A grid of :func:`simplex_panel` (rows: T, columns: eps) with one legend outside, on the right."""
    nrow, ncol = len(temperatures), len(epsilons)
    width = PAGE_WIDTH
    fig, axes = plt.subplots(nrow, ncol, figsize=(width, width / (ncol + 0.9) * nrow), squeeze=False)
    for i, T in enumerate(temperatures):
        for j, eps in enumerate(epsilons):
            simplex_panel(axes[i, j], f, q_table, T, eps, normalized=normalized, legend=False)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    legend = fig.legend(handles, [lab.split(",")[0] for lab in labels], loc="center right", frameon=False)
    for handle in legend.legend_handles:  # one marker size in the legend, whatever the first panel's P(y)
        if hasattr(handle, "set_markersize"):
            handle.set_markersize(6)
    fig.tight_layout(rect=(0, 0, 0.82, 1))
    return fig


def cmi_spread(probs, labels, defended, q_table):
    """A three-class cloud of outputs before and after SSD: CMI is the mean KL of each output to its class mean,
    so a class whose outputs gather around its mean has a small CMI."""
    fig, axes = plt.subplots(1, 2, figsize=(PAGE_WIDTH, PAGE_WIDTH * 0.42))
    for ax, data, name in ((axes[0], probs, "without defense"), (axes[1], defended, "with SSD")):
        ax.fill(*VERTICES.T, color="0.96", ec="0.3", lw=0.8)
        for y, colour in enumerate(CLASS_COLOURS):
            mine = data[labels == y].double()
            ax.scatter(*to_xy(mine.numpy()).T, s=6, color=colour, alpha=0.5)
            ax.plot(*to_xy(mine.mean(0).numpy()), "P", color=colour, ms=9, mec="k", mew=0.6)
        ax.set_title(f"{name}: CMI = {cmi(data, labels, 3):.3f} nats")
        ax.set_aspect("equal")
        ax.axis("off")
    fig.tight_layout()
    return fig


def kl_of_step(f, q_table, T, eps, normalized=True) -> pd.DataFrame:
    """KL(f || q^y) before and KL(p^y || q^y) after one SSD step, per class y (a small table beside the figure)."""
    step = ssd_step(torch.as_tensor(f), torch.as_tensor(q_table), T, eps, normalized=normalized)
    return pd.DataFrame({"y": range(len(step["law"])), "P(y)": step["law"], "KL(f||q^y)": step["kl_f"],
                         "KL(p^y||q^y)": step["kl"], "||p^y - f||_1": step["l1"], "r": step["r"]})


def grouped_bars(df: pd.DataFrame, value: str, *, ylabel: str, ax=None, group: str = "title",
                 series: str = "setting"):
    """Bars of ``value`` per ``group`` (x axis, e.g. defense) and ``series`` (e.g. setting), labels rotated."""
    table = df.pivot_table(index=group, columns=series, values=value, sort=False)
    if ax is None:
        _, ax = plt.subplots(figsize=(PAGE_WIDTH, 2.8))
    table.plot.bar(ax=ax, width=0.8)
    ax.set(ylabel=ylabel, xlabel="")
    ax.tick_params(axis="x", labelrotation=30)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    ax.legend(frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return ax.figure


__all__ = ["proposition1_scatter", "waterfill_bars", "simplex_panel", "simplex_grid_figure", "cmi_spread",
           "kl_of_step", "grouped_bars", "accuracy_bars", "face_grid", "image_rows", "reconstruction_grid",
           "PAGE_WIDTH"]


def accuracy_bars(summary: pd.DataFrame, *, references: pd.DataFrame | None = None, titles: dict | None = None,
                  labels: dict | None = None, value: str = "acc@1", ylabel: str = "evaluator Acc@1 (%)",
                  chance: dict | None = None):
    """One panel per setting: a bar per row of ``summary`` with its 95 % interval (``<value> low/high``), and the
    reference rows (``prior``: dashed, ``ceiling``: dotted) and the chance level (``chance[setting]``, dash-dot) as
    horizontal lines; the y axis zooms to the data. ``labels`` maps a row name to its short tick label (default:
    the row's ``title``)."""
    settings = list(dict.fromkeys(summary.setting))
    titles = titles or {}
    fig, axes = plt.subplots(1, len(settings), figsize=(PAGE_WIDTH, 2.9), sharey=True, squeeze=False)
    top = 0.0
    for ax, s in zip(axes[0], settings):
        part = summary[summary.setting == s]
        x = range(len(part))
        err = [part[value] - part[f"{value} low"], part[f"{value} high"] - part[value]]
        ax.bar(x, part[value], yerr=err, capsize=2, color="#4c72b0", width=0.7)
        top = max(top, float(part[f"{value} high"].max()))
        if references is not None:
            for row, style in (("prior", "--"), ("ceiling", ":")):
                ref = references[(references.setting == s) & (references.row == row)]
                if len(ref):
                    ax.axhline(float(ref[value].iloc[0]), color="#333333", linestyle=style, linewidth=1.2,
                               label={"prior": "prior samples", "ceiling": "white-box ceiling"}[row])
                    top = max(top, float(ref[value].iloc[0]))
        if chance and s in chance:
            ax.axhline(chance[s], color="#999999", linestyle="-.", linewidth=1.0, label="chance")
        ticks = [(labels or {}).get(r, t) for r, t in zip(part.row, part.title)]
        ax.set_xticks(list(x), ticks, rotation=45, ha="right", fontsize=8)
        ax.set_title(titles.get(s, s), fontsize=10)
    axes[0][0].set_ylabel(ylabel)
    axes[0][0].set_ylim(0, max(1.0, 1.15 * top))
    handles, labels = axes[0][-1].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, frameon=False, loc="upper right", fontsize=8, ncol=3)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return fig


def face_grid(faceset, n_ids: int = 8, per_id: int = 4, title: str = ""):
    """The first ``per_id`` images of the first ``n_ids`` identities of a FaceSet, one identity per column."""
    fig, axes = plt.subplots(per_id, n_ids, figsize=(n_ids * 0.85, per_id * 0.85), squeeze=False)
    for j, c in enumerate(torch.unique(faceset.labels)[:n_ids].tolist()):
        idx = (faceset.labels == c).nonzero().flatten()[:per_id]
        for i in range(per_id):
            if i < len(idx):
                axes[i, j].imshow(faceset.images[idx[i]].permute(1, 2, 0).numpy())
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def image_rows(rows, labels, *, per_row: int = 16):
    """Rows of float images ``[N, 3, H, W]`` in [0, 1], up to ``per_row`` each, labelled on the left."""
    rows = [r[:per_row].detach().cpu().clamp(0, 1) for r in rows]
    n = max(len(r) for r in rows)
    size = PAGE_WIDTH / (n + 2.5)
    fig, axes = plt.subplots(len(rows), n, figsize=(PAGE_WIDTH, size * len(rows) + 0.2), squeeze=False)
    for i, (images, label) in enumerate(zip(rows, labels)):
        for j in range(n):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if j < len(images):
                ax.imshow(images[j].permute(1, 2, 0).numpy())
        axes[i, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7)
    fig.subplots_adjust(left=2.3 / (n + 2.5), right=0.995, top=0.99, bottom=0.01, wspace=0.04, hspace=0.04)
    return fig


def reconstruction_grid(truth: dict, rows: dict, attacks):
    """The paper's Figure 2 layout: a column per (attack, class), a private training image of the class on top,
    then one reconstruction per defense row; ``truth`` {class: image}, ``rows`` {defense: {(attack, class): image}}."""
    classes = list(truth)
    columns = [(a, c) for a in attacks for c in classes]
    size = min(0.75, (PAGE_WIDTH - 1.6) / len(columns))
    fig, axes = plt.subplots(len(rows) + 1, len(columns), figsize=(1.6 + size * len(columns),
                                                                   0.25 + size * (len(rows) + 1)), squeeze=False)
    labels = ["private (ground truth)", *rows]
    for i, label in enumerate(labels):
        for j, (attack, c) in enumerate(columns):
            ax = axes[i, j]
            image = truth[c] if i == 0 else rows[label].get((attack, c))
            ax.set_xticks([])
            ax.set_yticks([])
            if image is not None:
                ax.imshow(image.detach().cpu().clamp(0, 1).permute(1, 2, 0).numpy())
            if j == 0:
                ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7)
            if i == 0:
                ax.set_title(f"{attack}\nclass {c}", fontsize=6)
    fig.subplots_adjust(left=1.55 / (1.6 + size * len(columns)), right=0.995, top=0.93, bottom=0.01, wspace=0.05,
                        hspace=0.05)
    return fig


def _stacked(n: int, height: float = 2.5, sharex: bool = True):
    """``n`` panels stacked in one column of the page's width (legible at the text column's size)."""
    fig, axes = plt.subplots(n, 1, figsize=(min(PAGE_WIDTH, 7.0), 0.6 + height * n), sharex=sharex, squeeze=False)
    return fig, axes[:, 0]


def survival_curves(curves, ours: dict, theirs: dict, titles: dict):
    """How often SSD's draw keeps the top-1 label against |Y| (one panel per setting, one line per T), with our
    class count (dotted) and the paper's (dashed); ``curves`` from ``mechanism.survival_by_classes``."""
    settings = list(dict.fromkeys(curves.setting))
    fig, axes = _stacked(len(settings))
    for ax, s in zip(axes, settings):
        for T, g in curves[curves.setting == s].groupby("T"):
            ax.plot(g.classes, g.survival, marker="o", ms=3, label=f"T = {T:g}")
        ax.axvline(ours[s], color="k", ls=":", lw=1)
        ax.axvline(theirs[s], color="k", ls="--", lw=1)
        ax.set_xscale("log")
        ax.set_ylabel("kept (%)")
        ax.set_title(f"{titles.get(s, s)}: ours {ours[s]} (dotted), paper {theirs[s]} (dashed)", fontsize=9)
    axes[-1].set_xlabel("number of classes |Y|")
    axes[0].legend(fontsize=7, ncol=4, loc="lower left")
    fig.tight_layout()
    return fig


def agreement_bars(agreement, titles: dict, labels: dict):
    """Per setting, the share of test and of generated images whose top-1 label through each row's oracle equals
    the undefended target's; ``agreement`` from ``mechanism.label_agreement``."""
    settings = list(dict.fromkeys(agreement.setting))
    fig, axes = _stacked(len(settings), height=2.3, sharex=False)
    for ax, s in zip(axes, settings):
        part = agreement[agreement.setting == s]
        rows = list(dict.fromkeys(part.row))
        for kind, shift in (("private test", -0.2), ("generated", 0.2)):
            values = part[part.images == kind].set_index("row").agreement.reindex(rows).to_numpy()
            ax.bar([i + shift for i in range(len(rows))], values, width=0.4, label=kind)
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels([labels.get(r, r) for r in rows], fontsize=8)
        ax.set_ylim(0, 105)
        ax.set_ylabel("same top-1 (%)")
        ax.set_title(titles.get(s, s), fontsize=9)
    axes[0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig


def temperature_curves(sweep, titles: dict):
    """Per setting, against T: the defended label's agreement with the undefended one on generated and on test
    images, the draw alone (before the projection), and the test accuracy; ``sweep`` from
    ``mechanism.temperature_sweep``."""
    settings = list(dict.fromkeys(sweep.setting))
    fig, axes = _stacked(len(settings))
    for ax, s in zip(axes, settings):
        part = sweep[sweep.setting == s]
        for kind, style in (("generated", "-"), ("private test", "--")):
            g = part[part.images == kind]
            ax.plot(g["T"], g.agreement, style, marker="o", ms=3, label=f"{kind}: defended label")
            ax.plot(g["T"], g.survival, style, color="grey", lw=1, label=f"{kind}: draw alone")
        test = part[part.images == "private test"]
        ax.plot(test["T"], test.accuracy, ":", color="k", label="test accuracy")
        ax.set_xscale("log")
        ax.set_ylabel("%")
        ax.set_title(titles.get(s, s), fontsize=9)
    axes[-1].set_xlabel("temperature T")
    axes[0].legend(fontsize=7, ncol=2, loc="lower left")
    fig.tight_layout()
    return fig


def tsne_panels(panels, *, ncols: int = 3):
    """Figure 1: a grid of t-SNE scatter plots, one per dict of ``panels`` (``xy`` [N, 2], ``labels`` [N], ``title``),
    each point coloured by its label (a cyclic colour map for many classes, tab10 for ten groups or fewer)."""
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(PAGE_WIDTH, 2.35 * nrows + 0.2), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        labels = np.asarray(panel["labels"])
        keys = sorted(set(labels.tolist()))
        rank = np.array([keys.index(v) for v in labels])
        cmap = plt.get_cmap("tab10") if len(keys) <= 10 else plt.get_cmap("hsv")
        colours = cmap(rank % 10) if len(keys) <= 10 else cmap(rank / max(len(keys), 1))
        ax.scatter(panel["xy"][:, 0], panel["xy"][:, 1], c=colours, s=5, alpha=0.8, linewidths=0)
        ax.set_title(panel["title"], fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def _seed_errorbar(ax, x, part, col, **style):
    """Mean of ``col`` with bars from its least to its largest value over seeds (``seed_summary``'s columns)."""
    mean = part[col].to_numpy()
    err = np.vstack([mean - part[f"{col} min"].to_numpy(), part[f"{col} max"].to_numpy() - mean]).clip(min=0)
    ax.errorbar(x, mean, yerr=err, capsize=3, marker="o", ms=3, **style)


def ablation_curves(t_attack, t_util, e_attack, e_util, *, references: dict, training_l1: dict,
                    attacks=("BREP", "Mirror")):
    """Figure 3: (a) the label-only attack's Acc@1 and (b) test accuracy against T ("NO" first), (c) the soft-label
    attack's Acc@1 and (d) Avg / Max L1 against eps, adaptive (solid) and constant (dashed) budgets; error bars span
    the seeds. Inputs are ``ablations.seed_summary`` tables; ``references``: ``{"T": {label: value}, "eps": ...,
    "test": value}`` drawn as horizontal lines; ``training_l1``: Avg L1 of the training-time defenses (a band)."""
    fig, axes = plt.subplots(2, 2, figsize=(PAGE_WIDTH, 5.2))
    labels = list(t_attack["T"])
    x = np.arange(len(labels))
    (a, b), (c, d) = axes
    _seed_errorbar(a, x, t_attack, "acc@1", color="tab:blue", label="SSD")
    _seed_errorbar(b, x, t_util, "test_acc", color="tab:green", label="SSD")
    for ax, key, ylabel, title in ((a, "T", "Acc@1 (%)", f"(a) {attacks[0]} against T"),
                                   (b, "test", "test accuracy (%)", "(b) utility against T")):
        refs = references.get(key, {})
        for (name, value), ls in zip(refs.items() if isinstance(refs, dict) else [("no defense", refs)],
                                     ("--", ":")):
            ax.axhline(value, color="k", ls=ls, lw=1, label=name)
        ax.set_xticks(x)
        ax.set_xticklabels(labels)
        ax.set(xlabel="temperature T", ylabel=ylabel)
        ax.set_title(title)
        ax.legend(fontsize=7, loc="best")
    for budget, ls in (("adaptive", "-"), ("constant", "--")):
        part = e_attack[e_attack.budget == budget]
        if len(part):
            _seed_errorbar(c, part.eps.to_numpy(), part, "acc@1", color="tab:blue" if budget == "adaptive" else
                           "tab:red", ls=ls, label=f"SSD, {budget}")
        part = e_util[e_util.budget == budget]
        for col, colour in (("avg_l1", "tab:orange"), ("max_l1", "tab:purple")):
            if len(part):
                _seed_errorbar(d, part.eps.to_numpy(), part, col, color=colour, ls=ls,
                               label=f"{'Avg' if col == 'avg_l1' else 'Max'} L1, {budget}")
    for (name, value), ls in zip(references.get("eps", {}).items(), ("--", ":")):
        c.axhline(value, color="k", ls=ls, lw=1, label=name)
    if training_l1:
        d.axhspan(min(training_l1.values()), max(training_l1.values()), color="grey", alpha=0.25,
                  label="Avg L1, training-time defenses")
    for ax, ylabel, title in ((c, "Acc@1 (%)", f"(c) {attacks[1]} against eps"), (d, "L1 change", "(d) L1 against eps")):
        ax.set_xscale("log")
        ticks = sorted(set(e_util.eps))
        ax.set_xticks(ticks)
        ax.set_xticklabels([f"{t:g}" for t in ticks])
        ax.minorticks_off()
        ax.set(xlabel="distortion bound eps", ylabel=ylabel)
        ax.set_title(title)
        ax.legend(fontsize=6.5, loc="best")
    fig.tight_layout()
    return fig


def frontier_figure(points: dict, curves: dict | None = None, *, attack_titles: dict | None = None,
                    labels: dict | None = None, title: str = ""):
    """The privacy-utility frontier of one setting: a row of two panels per attack (``points[attack]``, one point per
    defense with its 95 % interval), attack Acc@1 against test accuracy (left) and Avg L1 (right); SSD rows in
    red; ``curves[attack]`` (an SSD parameter sweep, in order) as a grey line through its points."""
    attacks = list(points)
    fig, axes = plt.subplots(len(attacks), 2, figsize=(PAGE_WIDTH, 2.7 * len(attacks) + 0.4), squeeze=False)
    for i, attack in enumerate(attacks):
        part = points[attack]
        for j, x in enumerate(("test_acc", "avg_l1")):
            ax = axes[i, j]
            curve = (curves or {}).get(attack)
            if curve is not None and len(curve):
                ax.errorbar(curve[x], curve["acc@1"], yerr=[curve["acc@1"] - curve["acc@1 low"],
                                                             curve["acc@1 high"] - curve["acc@1"]],
                            color="0.6", marker=".", lw=1, capsize=0, label="SSD sweep", zorder=1)
            for r in part.to_dict("records"):
                ssd = str(r["row"]).startswith("ssd")
                ax.errorbar([r[x]], [r["acc@1"]], yerr=[[r["acc@1"] - r["acc@1 low"]], [r["acc@1 high"] - r["acc@1"]]],
                            fmt="o" if ssd else "s", color="tab:red" if ssd else "#4c72b0", capsize=2, ms=4, zorder=3)
                ax.annotate((labels or {}).get(r["row"], r["title"]), (r[x], r["acc@1"]), fontsize=7,
                            xytext=(3, 3), textcoords="offset points")
            ax.set_xlabel("test accuracy (%)" if x == "test_acc" else "Avg L1 change")
            if j == 0:
                ax.set_ylabel(f"{(attack_titles or {}).get(attack, attack)} Acc@1 (%)", fontsize=9)
            if curve is not None and len(curve) and i == 0 and j == 1:
                ax.legend(frameon=False, fontsize=7, loc="upper right")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def recovery_curves(curves, *, images: str = "generated", estimator: str = "inverted"):
    """The averaging attacker's top-1 agreement with f(x) against the number of repeats, one panel per noise level
    and a line per defense variant (``curves`` from ``experiments.adaptive.recovery_curves``)."""
    part = curves[(curves.images == images) & (curves.estimator == estimator)]
    greys = sorted(part["grey levels"].unique())
    fig, axes = plt.subplots(1, len(greys), figsize=(PAGE_WIDTH, 2.8), sharey=True, squeeze=False)
    for ax, g in zip(axes[0], greys):
        for label, c in part[part["grey levels"] == g].groupby("variant", sort=False):
            ax.plot(c.repeats, c.top1, marker="o", ms=3, label=label)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("repeats per image")
        ax.set_title(f"{g} grey levels of noise", fontsize=9)
    axes[0][0].set_ylabel("top-1 agreement with f(x) (%)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, ncol=3, loc="lower center", frameon=False)
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    return fig


def hash_tradeoff(copies, *, images: str = "generated"):
    """The robust hash against its sensitivity k: how often two perturbed copies of an image keep h (one line per
    noise level; hollow markers: the literal eq. 26) and how often two distinct images share it (dashed)."""
    part = copies[(copies.randomness == "robust") & (copies.images == images)]
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH, 3.2))
    colours = {g: f"C{i}" for i, g in enumerate(sorted(part["grey levels"].unique()))}
    for offsets, style in ((True, dict(ls="-", mfc=None)), (False, dict(ls="none", mfc="none"))):
        sub = part[part.offsets == offsets]
        for g, c in sub[sub["grey levels"] > 0].groupby("grey levels"):
            c = c.sort_values("k")
            ax.plot(c.k, c["same h (%)"], marker="o", ms=5, color=colours[g],
                    label=f"copies keep h, {g} grey levels" + ("" if offsets else " (eq. 26)"), **style)
        clean = sub[sub["grey levels"] == sub["grey levels"].min()].sort_values("k")
        if offsets and len(clean):
            ax.plot(clean.k, clean["distinct images sharing h (%)"], "k--", marker="s", ms=3,
                    label="distinct images share h")
    ax.set_xscale("log")
    ax.set_xlabel("sensitivity k")
    ax.set_ylabel("%")
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, ncol=3, loc="lower center", frameon=False)
    fig.tight_layout(rect=(0, 0.16, 1, 1))
    return fig
