"""Figures of the label-noise study, ridge selection and per-mode learnability.

Curves over seeds are drawn as the seed mean with a band from the minimum to the
maximum over seeds (captions say so).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from rmtlens.report.plots import _band, _n_axis, _panels, _title, plt
from rmtlens.report.tables import KERNEL_KEYS


def band(ax, x, low, high, colour, alpha=0.18):
    """Shade between ``low`` and ``high`` (the min–max over seeds) where both are finite."""
    _band(ax, x, low, high, colour, alpha)


def noise_curves(table: pd.DataFrame, dataset_labels: Mapping[str, str] = {}):
    """Excess test risk versus n at the smallest positive ridge, one line per noise level,
    with the DE (dashed) and GCV − σ² for additive noise (dotted). Seed mean, min–max band."""
    groups = list(table.groupby(KERNEL_KEYS, sort=True))
    fig, axes = _panels(len(groups))
    for ax, (keys, group) in zip(axes, groups):
        lam = min(v for v in group["lambda_rel"].unique() if v > 0)
        rows = group[group["lambda_rel"] == lam]
        levels = list(rows[["noise", "level"]].drop_duplicates().itertuples(index=False))
        colours = plt.cm.plasma(np.linspace(0, 0.85, max(1, len(levels))))
        for colour, (kind, level) in zip(colours, levels):
            part = rows[(rows["noise"] == kind) & (rows["level"] == level)]
            stats = part.groupby("n").agg(mean=("excess_risk", "mean"), lo=("excess_risk", "min"),
                                          hi=("excess_risk", "max"), de=("de_excess_risk", "mean"))
            label = "clean" if kind == "none" else f"{kind} {level:g}"
            ax.plot(stats.index, stats["mean"], "o-", ms=3, color=colour, label=label)
            band(ax, stats.index, stats["lo"], stats["hi"], colour)
            ax.plot(stats.index, stats["de"], "--", color=colour, lw=1)
        _n_axis(ax, group["n"].unique())
        ax.set(yscale="log", ylabel="excess test risk (clean targets)")
        ax.set_title(f"{_title(keys, dataset_labels)}, λ/s = {lam:.0e}", fontsize=8)
    if axes:
        handles, labels = axes[0].get_legend_handles_labels()
        handles += [plt.Line2D([], [], color="k", ls="--")]
        labels += ["deterministic equivalent"]
        axes[0].legend(handles, labels, fontsize=6, loc="best")
    fig.tight_layout()
    return fig


def noise_accuracy_figure(accuracy: pd.DataFrame):
    """Median relative error of each estimator per noise level, one panel per estimator."""
    estimators = list(dict.fromkeys(accuracy["estimator"]))
    fig, axes = _panels(len(estimators), width=3.3, height=3.0, max_cols=len(estimators))
    levels = list(accuracy[["noise", "level"]].drop_duplicates().itertuples(index=False))
    names = ["clean" if k == "none" else f"{k} {v:g}" for k, v in levels]
    kernels = list(accuracy[KERNEL_KEYS].drop_duplicates().itertuples(index=False))
    for ax, est in zip(axes, estimators):
        for i, keys in enumerate(kernels):
            rows = accuracy[(accuracy["estimator"] == est)]
            for k, v in zip(KERNEL_KEYS, keys):
                rows = rows[rows[k] == v]
            values = [rows[(rows["noise"] == kind) & (rows["level"] == lev)]["median_rel_error"].mean()
                      for kind, lev in levels]
            ax.plot(range(len(levels)), values, "o-", ms=3, color=plt.cm.tab10(i % 10),
                    label=" · ".join(map(str, keys[1:])))
        ax.set_xticks(range(len(levels)), names, rotation=40, fontsize=6)
        ax.set(yscale="log", ylabel="median relative error")
        ax.set_title(est, fontsize=8)
    if axes:
        axes[0].legend(fontsize=5, loc="best")
    fig.tight_layout()
    return fig


def selected_lambda_figure(rows: pd.DataFrame, dataset_labels: Mapping[str, str] = {}):
    """Selected relative ridge versus n per selector (median over seeds, min–max band),
    one panel per kernel; λ = 0 (ridgeless) is drawn at the bottom edge."""
    groups = list(rows.groupby(KERNEL_KEYS, sort=True))
    fig, axes = _panels(len(groups))
    styles = {"oracle": ("k", "o-"), "gcv": ("C0", "s--"), "loo": ("C1", "^:"), "de": ("C3", "d-.")}
    positive = rows.loc[rows["lambda_rel"] > 0, "lambda_rel"]
    floor = positive.min() / 10 if len(positive) else 1e-8
    for ax, (keys, group) in zip(axes, groups):
        for sel, (colour, style) in styles.items():
            part = group[group["selector"] == sel]
            if part.empty:
                continue
            lam = part.assign(lambda_rel=part["lambda_rel"].clip(lower=floor))
            stats = lam.groupby("n")["lambda_rel"].agg(["median", "min", "max"])
            regret = part.groupby("n")["regret"].mean()
            label = sel if sel == "oracle" else f"{sel} (mean regret {regret.mean():.3f})"
            ax.plot(stats.index, stats["median"], style, color=colour, ms=3, label=label)
            band(ax, stats.index, stats["min"], stats["max"], colour, alpha=0.12)
        _n_axis(ax, group["n"].unique())
        ax.set(yscale="log", ylabel="selected λ / s (0 drawn at the floor)")
        ax.set_title(_title(keys, dataset_labels), fontsize=8)
        ax.legend(fontsize=5, loc="best")
    fig.tight_layout()
    return fig


def learnability_figure(curves: pd.DataFrame, summary: pd.DataFrame, dataset_labels: Mapping[str, str] = {}):
    """Per (dataset, backbone, kernel): learnability ``L_k`` versus mode k for the
    smallest and largest n (weights side by side as colours), and the learned share of
    target power versus n."""
    lam = sorted(curves["lambda_rel"].unique())[0]
    curves = curves[curves["lambda_rel"] == lam]
    summary = summary[summary["lambda_rel"] == lam]
    groups = list(curves.groupby(["dataset", "backbone", "kernel"], sort=True))
    fig, axes = plt.subplots(len(groups), 2, figsize=(7.6, 2.9 * max(1, len(groups))), squeeze=False)
    styles = {"init": "C7", "trained": "C3", "pretrained": "C0"}
    for (ax_l, ax_p), ((dataset, backbone, kernel), group) in zip(axes, groups):
        ns = sorted(group["n"].unique())
        shown = [ns[0], ns[-1]] if len(ns) > 1 else ns
        for weights, part in group.groupby("weights", sort=True):
            colour = styles.get(weights, "k")
            for n, ls in zip(shown, (":", "-")):
                c = part[part["n"] == n]
                ax_l.plot(c["k"], c["learnability"], ls, color=colour, label=f"{weights}, n = {n}")
            s = summary[(summary["dataset"] == dataset) & (summary["backbone"] == backbone)
                        & (summary["kernel"] == kernel) & (summary["weights"] == weights)]
            ax_p.plot(s["n"], s["learned_power"], "o-", ms=3, color=colour, label=weights)
        ax_l.set(xscale="log", xlabel="eigen-mode k", ylabel="learnability μ_k/(μ_k+κ)", ylim=(0, 1.02))
        ax_l.set_title(f"{dataset_labels.get(dataset, dataset)} · {backbone} · {kernel}, λ/s = {lam:.0e}", fontsize=8)
        ax_l.legend(fontsize=5, loc="best")
        _n_axis(ax_p, group["n"].unique())
        ax_p.set(ylabel="share of target power learned", ylim=(0, 1.02))
        ax_p.legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    return fig
