"""Figures of the ridge grid. Each function takes tables and returns a matplotlib Figure."""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from rmtlens.estimators.grids import nearest_on_grid  # noqa: E402
from rmtlens.estimators.powerlaw import power_law_tails  # noqa: E402
from rmtlens.report.tables import KERNEL_KEYS, relative_error  # noqa: E402

plt.rcParams.update(
    {
        "figure.dpi": 110,
        "savefig.dpi": 150,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "font.size": 9,
        "legend.fontsize": 7,
        "svg.hashsalt": "rmtlens",
    }
)


def _panels(n_panels: int, width: float = 3.6, height: float = 3.0, max_cols: int = 4):
    cols = min(max_cols, n_panels)
    rows = int(np.ceil(n_panels / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n_panels:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n_panels])


def _n_label(n: int) -> str:
    """Compact sample-size label: 737, 1.43k, 40k."""
    return str(n) if n < 1000 else f"{n / 1000:.3g}k"


def _n_axis(ax, sizes, max_labels: int = 6) -> None:
    """Log x-axis of sample sizes, ticked at the sizes themselves; at most ``max_labels``
    of them labelled (every k-th, the last always), so labels never overlap."""
    sizes = sorted({int(v) for v in sizes})
    ax.set_xscale("log")
    step = int(np.ceil(len(sizes) / max_labels))
    labelled = {len(sizes) - 1 - i for i in range(0, len(sizes), step)}
    ax.set_xticks(sizes, [_n_label(v) if i in labelled else "" for i, v in enumerate(sizes)], minor=False)
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("training samples n")


def _band(ax, x, low, high, colour, alpha=0.18) -> None:
    """Shade from ``low`` to ``high`` (min–max over seeds) where both are finite and positive."""
    x, low, high = (np.asarray(v, dtype=float) for v in (x, low, high))
    ok = np.isfinite(low) & np.isfinite(high) & (low > 0)
    if ok.sum() >= 2:
        ax.fill_between(x[ok], low[ok], high[ok], color=colour, alpha=alpha, lw=0)


def _title(keys, dataset_labels: Mapping[str, str]) -> str:
    dataset, backbone, weights, kernel = keys
    return f"{dataset_labels.get(dataset, dataset)}\n{backbone} · {weights} · {kernel}"


def risk_versus_n(
    table: pd.DataFrame, lambdas_rel: Sequence[float], dataset_labels: Mapping[str, str] = {}
):
    """[W22] Fig. 1 style: test risk versus n for several ridges, GCV dashed, train risk faint.

    Curves are means over seeds with min–max bands over seeds (test risk and GCV);
    one panel per kernel.
    """
    groups = list(table.groupby(KERNEL_KEYS, sort=True))
    fig, axes = _panels(len(groups))
    for ax, (keys, group) in zip(axes, groups):
        chosen = nearest_on_grid(group["lambda_rel"].unique(), lambdas_rel)
        colours = plt.cm.viridis(np.linspace(0, 0.9, max(1, len(chosen))))
        for colour, lam in zip(colours, chosen):
            at = group[group["lambda_rel"] == lam].groupby("n")[["test_risk", "gcv", "train_risk"]]
            mean, lo, hi = at.mean(), at.min(), at.max()
            ax.plot(mean.index, mean["test_risk"], "o-", color=colour, ms=3, label=f"λ/s = {lam:.0e}")
            _band(ax, mean.index, lo["test_risk"], hi["test_risk"], colour, 0.2)
            ax.plot(mean.index, mean["gcv"], "--", color=colour, lw=1.2)
            _band(ax, mean.index, lo["gcv"], hi["gcv"], colour, 0.08)
            ax.plot(mean.index, mean["train_risk"], "-", color=colour, lw=0.8, alpha=0.3)
        _n_axis(ax, group["n"].unique())
        ax.set_yscale("log")
        ax.set_ylabel("test risk (MSE)")
        ax.set_title(_title(keys, dataset_labels), fontsize=8)
    if axes:
        handles, labels = axes[0].get_legend_handles_labels()
        handles += [
            plt.Line2D([], [], color="k", ls="-", marker="o", ms=3),
            plt.Line2D([], [], color="k", ls="--"),
            plt.Line2D([], [], color="k", alpha=0.3),
        ]
        labels += ["test risk", "GCV estimate", "train risk"]
        axes[0].legend(handles, labels, loc="best")
    fig.tight_layout()
    return fig


def risk_versus_lambda(table: pd.DataFrame, dataset_labels: Mapping[str, str] = {}):
    """Test risk, GCV, LOO and train risk versus λ at each kernel's largest n (seed mean,
    min–max bands over seeds for test risk, GCV and LOO).

    The ridgeless values (λ = 0) are drawn as diamonds at the left edge, at an
    x position labelled "0". The y range follows the positive-λ curves; ridgeless
    values more than tenfold outside it are pinned to the edge and annotated.
    """
    groups = list(table.groupby(KERNEL_KEYS, sort=True))
    fig, axes = _panels(len(groups))
    styles = {"test_risk": ("k", "-", "test risk"), "gcv": ("C0", "--", "GCV"),
              "loo": ("C1", ":", "LOO"), "train_risk": ("C2", "-", "train risk")}
    for ax, (keys, group) in zip(axes, groups):
        n_max = group["n"].max()
        at = group[group["n"] == n_max].groupby("lambda_rel")[list(styles)]
        mean, low, high = at.mean(), at.min(), at.max()
        positive = mean[mean.index > 0]
        values = positive.to_numpy()
        values = values[np.isfinite(values) & (values > 0)]
        lo, hi = values.min() / 1.3, values.max() * 1.3
        ridgeless = mean.loc[0.0] if 0.0 in mean.index else None
        if ridgeless is not None:
            finite = ridgeless[np.isfinite(ridgeless) & (ridgeless > 0)]
            lo = min(lo, *finite[finite > lo / 10]) if (finite > lo / 10).any() else lo
            hi = max(hi, *finite[finite < hi * 10]) if (finite < hi * 10).any() else hi
        lo, hi = lo / 1.15, hi * 1.15
        x0 = positive.index.min() / 10**1.5
        for column, (colour, ls, label) in styles.items():
            ax.plot(positive.index, positive[column], ls, color=colour, label=label,
                    alpha=0.5 if column == "train_risk" else 1.0)
            if column != "train_risk":
                _band(ax, positive.index, low.loc[positive.index, column], high.loc[positive.index, column],
                      colour, 0.15)
            if ridgeless is None or not np.isfinite(ridgeless[column]) or ridgeless[column] <= 0:
                continue
            value = ridgeless[column]
            shown = min(max(value, lo), hi)
            ax.plot([x0], [shown], "D", color=colour, ms=4, alpha=0.5 if column == "train_risk" else 1.0)
            if shown != value:
                ax.annotate(f"{value:.1e}", (x0, shown), textcoords="offset points", xytext=(5, -8 if shown == hi else 4),
                            fontsize=6, color=colour)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylim(lo, hi)
        if ridgeless is not None:
            ticks = [x0] + [t for t in ax.get_xticks() if t >= positive.index.min() * 0.99]
            ax.set_xticks(ticks, ["0"] + [f"$10^{{{int(np.round(np.log10(t)))}}}$" for t in ticks[1:]])
            ax.set_xlim(x0 / 3, positive.index.max() * 3)
        ax.set_xlabel("relative ridge λ / s")
        ax.set_ylabel("risk")
        ax.set_title(f"{_title(keys, dataset_labels)} (n = {n_max})", fontsize=8)
    if axes:
        axes[0].legend(loc="best")
    fig.tight_layout()
    return fig


def training_curves(histories: Mapping[str, pd.DataFrame]):
    """Pretraining curves: train loss and held-out accuracy per epoch, one line per backbone."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(8.0, 3.2))
    for name, history in histories.items():
        trained = history[history["epoch"] > 0]
        ax_loss.plot(trained["epoch"], trained["train_loss"], "o-", ms=3, label=name)
        ax_acc.plot(history["epoch"], history["heldout_accuracy"], "o-", ms=3, label=name)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("train cross-entropy")
    ax_loss.set_yscale("log")
    ax_acc.set_xlabel("epoch (0 = initialisation)")
    ax_acc.set_ylabel("held-out accuracy")
    ax_acc.set_ylim(0, 1)
    ax_acc.legend(loc="lower right")
    fig.tight_layout()
    return fig


def _kernel_colours(table: pd.DataFrame):
    keys = [tuple(k) for k in table[KERNEL_KEYS].drop_duplicates().sort_values(KERNEL_KEYS).to_numpy()]
    return {k: plt.cm.tab10(i % 10) for i, k in enumerate(keys)}


def estimators_versus_risk(table: pd.DataFrame, estimators: Mapping[str, str], n_min: int):
    """Each estimator's prediction against the measured test risk (rows with n ≥ n_min).

    One panel per estimator, every kernel, n, seed and λ; log-log with the identity.
    Panels carry the median relative error over all points.
    """
    rows = table[table["n"] >= n_min]
    fig, axes = _panels(len(estimators), width=3.3, height=3.2, max_cols=len(estimators))
    colours = _kernel_colours(rows)
    positive = rows["test_risk"][rows["test_risk"] > 0]
    lo, hi = positive.min() / 1.5, positive.max() * 1.5
    for ax, (column, label) in zip(axes, estimators.items()):
        for keys, group in rows.groupby(KERNEL_KEYS, sort=True):
            x, y = group["test_risk"].to_numpy(), group[column].to_numpy()
            ok = (x > 0) & (y > 0) & np.isfinite(y)
            ax.scatter(x[ok], np.clip(y[ok], lo / 10, hi * 10), s=4, alpha=0.45, color=colours[tuple(keys)],
                       label=" · ".join(map(str, keys[1:])))
        err = relative_error(rows[column], rows["test_risk"])
        ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo / 10, hi * 10)
        ax.set_xlabel("measured test risk")
        ax.set_ylabel(f"{label} prediction")
        ax.set_title(f"{label}: median rel. error {np.nanmedian(err):.1%}", fontsize=8)
    if axes:
        axes[0].legend(loc="upper left", markerscale=2, fontsize=6)
    fig.tight_layout()
    return fig


def spectra_and_alignment(curves: pd.DataFrame, dataset_labels: Mapping[str, str] = {}):
    """Normalised spectra and cumulative target alignment, weights side by side (SPEC §4).

    ``curves`` has columns ``dataset``, ``backbone``, ``weights``, ``kernel``, ``k``,
    ``normalised_mu`` and ``alignment``. One row of two panels per (dataset, backbone,
    kernel); one line per weight setting.
    """
    groups = list(curves.groupby(["dataset", "backbone", "kernel"], sort=True))
    fig, axes = plt.subplots(len(groups), 2, figsize=(7.6, 2.9 * len(groups)), squeeze=False)
    styles = {"init": ("C7", "-"), "trained": ("C3", "-"), "pretrained": ("C0", "-")}
    for (ax_mu, ax_al), ((dataset, backbone, kernel), group) in zip(axes, groups):
        for weights, curve in group.groupby("weights", sort=True):
            colour, ls = styles.get(weights, ("k", "-"))
            mu = curve["normalised_mu"].to_numpy()
            keep = mu > 0
            ax_mu.plot(curve["k"].to_numpy()[keep], mu[keep], ls, color=colour, label=weights)
            ax_al.plot(curve["k"], curve["alignment"], ls, color=colour, label=weights)
        title = f"{dataset_labels.get(dataset, dataset)} · {backbone} · {kernel}"
        ax_mu.set(xscale="log", yscale="log", xlabel="eigen-index k", ylabel="μ_k / Σμ")
        ax_mu.set_title(title, fontsize=8)
        ax_al.set(xscale="log", xlabel="eigen-index k", ylabel="target alignment A(k)", ylim=(0, 1.02))
        ax_al.set_title("cumulative share of ||β||² in the top k", fontsize=8)
        ax_al.legend(loc="lower right")
    fig.tight_layout()
    return fig


def scaling_laws(table: pd.DataFrame, scaling: pd.DataFrame, dataset_labels: Mapping[str, str] = {}):
    """Risk versus n, one panel per kernel (SPEC §5). Filled black: test risk at the
    GCV-selected ridge (seed mean ± s.d.); open black and grey: its excess over the floor
    ``R_∞`` (out-of-span power; dotted line) at the GCV and oracle ridges; blue: the
    omniscient DE at the GCV ridges; red dashed: the predicted rate of the DE's regime,
    anchored at the first GCV excess point of the fit window (absent when the power-law
    fit is invalid or the kernel sits between regimes)."""
    from rmtlens.studies.scaling import gcv_selected_lambdas, oracle_lambdas, risk_at_selected_lambda

    groups = list(table.groupby(KERNEL_KEYS, sort=True))
    fig, axes = _panels(len(groups))
    for ax, (keys, group) in zip(axes, groups):
        rows = scaling[(scaling[KERNEL_KEYS] == pd.Series(keys, index=KERNEL_KEYS)).all(axis=1)].set_index("ridge")
        floor = float(rows.loc["gcv", "floor"]) if "gcv" in rows.index else 0.0
        selected = gcv_selected_lambdas(group)
        measured = risk_at_selected_lambda(group, selected, "test_risk").groupby("n")["test_risk"].agg(["mean", "std"])
        oracle = risk_at_selected_lambda(group, oracle_lambdas(group), "test_risk").groupby("n")["test_risk"].mean()
        theory_at = risk_at_selected_lambda(group, selected, "omniscient_test_risk").groupby("n")["omniscient_test_risk"]
        theory = theory_at.mean()
        _band(ax, theory.index, theory_at.min(), theory_at.max(), "C0", 0.15)
        ax.errorbar(measured.index, measured["mean"], yerr=measured["std"], fmt="o", color="k", ms=3,
                    capsize=2, label="test risk (GCV λ)")
        ax.plot(theory.index, theory.to_numpy(), "-", color="C0", label="omniscient DE")
        excess = measured["mean"] - floor
        ax.plot(excess.index[excess > 0], excess[excess > 0], "o", mfc="none", color="k", ms=4,
                label="R − R_∞ (GCV λ)")
        excess_oracle = oracle - floor
        ax.plot(excess_oracle.index[excess_oracle > 0], excess_oracle[excess_oracle > 0], "s", mfc="none",
                color="0.55", ms=4, label="R − R_∞ (oracle λ)")
        if floor > 0:
            ax.axhline(floor, color="0.4", ls=":", lw=1, label=f"R_∞ = {floor:.3g}")
        if "gcv" in rows.index:
            r = rows.loc["gcv"]
            if np.isfinite(r["predicted_rate"]) and np.isfinite(r["fit_n_min"]) and (excess > 0).any():
                n0 = max(r["fit_n_min"], excess.index[excess > 0].min())
                n_line = np.geomspace(n0, measured.index.max(), 20)
                ax.plot(n_line, excess.loc[n0] * (n_line / n0) ** (-r["predicted_rate"]), "--", color="C3",
                        label=f"{r['regime']} rate {r['predicted_rate']:.2f}")
        exponents = ""
        if "gcv" in rows.index:
            r = rows.loc["gcv"]
            exponents = f"\nexponent at GCV λ: excess {r['excess_exponent']:.2f}, total {r['observed_exponent']:.2f}"
        ax.set(yscale="log", ylabel="test risk")
        _n_axis(ax, group["n"].unique())
        ax.set_title(_title(keys, dataset_labels) + exponents, fontsize=8)
        ax.legend(loc="upper right", fontsize=6)
    fig.tight_layout()
    return fig


def power_law_fits_figure(curves: pd.DataFrame, fits: pd.DataFrame, dataset_labels: Mapping[str, str] = {}):
    """The power-law fits a reader can judge, one panel per kernel (SPEC §3). Dots:
    eigenvalues ``μ_k/μ_1`` (blue) and tail sums ``S(k)/S(1)`` of the target (orange)
    against k, log-log; lines: the primary window's fits (solid, over the window) with
    their laws continued (dotted); shaded: the primary window. The title gives α, δ, R²
    and whether the fit is valid."""
    groups = list(curves.groupby(KERNEL_KEYS, sort=True))
    fig, axes = _panels(len(groups))
    for ax, (keys, group) in zip(axes, groups):
        fit = fits[(fits[KERNEL_KEYS] == pd.Series(keys, index=KERNEL_KEYS)).all(axis=1) & fits["primary"]].iloc[0]
        k = group["k"].to_numpy(np.float64)
        mu, tail = group["mu"].to_numpy(), group["tail"].to_numpy()
        ax.plot(k, mu / mu[0], ".", color="C0", ms=3, label="μ_k / μ_1")
        ax.plot(k, tail / tail[0], ".", color="C1", ms=3, label="S(k) / S(1)")
        if np.isfinite(fit["alpha"]):
            lo, hi = fit["k_min"], fit["k_max"]
            ax.axvspan(lo, hi, color="0.9", zorder=0)
            line = np.unique(np.round(np.geomspace(1, fit["rank"], 80)).astype(np.int64))
            inside = (line >= lo) & (line <= hi)
            law_mu = fit["A"] * line.astype(np.float64) ** -fit["alpha"] / mu[0]
            law_tail = power_law_tails(fit["B"], fit["delta"], line, int(fit["rank"])) / tail[0]
            for law, colour, label in ((law_mu, "C0", f"α = {fit['alpha']:.2f}"),
                                       (law_tail, "C1", f"δ = {fit['delta']:.2f}")):
                ax.plot(line, law, ":", color=colour, lw=1)
                ax.plot(line[inside], law[inside], "-", color=colour, lw=1.5, label=label)
        verdict = "valid" if fit["valid"] else "not valid"
        ax.set(xscale="log", yscale="log", xlabel="eigen-index k")
        ax.set_title(f"{_title(keys, dataset_labels)}\n{fit['window']} window: R² {fit['alpha_r2']:.3f} / "
                     f"{fit['delta_r2']:.3f}, {verdict}", fontsize=7)
        ax.legend(loc="lower left", fontsize=6)
    fig.tight_layout()
    return fig


def gcv_local_law_figure(beside: pd.DataFrame, summary: pd.DataFrame, threshold: float):
    """GCV's relative error against the local-law deviation ``|1 − tr(S)/n − λ/κ|/(λ/κ)``
    at the same (n, λ), one panel per kernel, coloured by ridge bucket; the dotted line
    is the threshold below which the local law is said to hold. Titles: Spearman's rank
    correlation."""
    from rmtlens.report.regimes import RIDGE_BUCKETS

    groups = list(beside.groupby(KERNEL_KEYS, sort=True))
    fig, axes = _panels(len(groups))
    for ax, (keys, group) in zip(axes, groups):
        for i, (label, _, _) in enumerate(RIDGE_BUCKETS):
            part = group[group["ridge_bucket"] == label]
            ax.plot(part["dof_rel_dev"], part["gcv_rel_error"], "o", ms=3, alpha=0.7, color=f"C{i}", label=label)
        ax.axvline(threshold, color="0.4", ls=":", lw=1)
        row = summary[(summary[KERNEL_KEYS] == pd.Series(keys, index=KERNEL_KEYS)).all(axis=1)]
        rho = float(row["spearman_dof_gcv"].iloc[0]) if len(row) else np.nan
        ax.set(xscale="log", yscale="log", xlabel="local-law deviation", ylabel="|GCV − R| / R")
        ax.set_title(f"{' · '.join(map(str, keys[1:]))}\nSpearman ρ = {rho:.2f}", fontsize=7)
        ax.legend(loc="best", fontsize=6)
    fig.tight_layout()
    return fig


def local_law_deviations(local: pd.DataFrame):
    """Median over ridges of the local-law deviations versus n, one line per kernel.

    Solid: ``|1 − tr(S)/n − λ/κ| / (λ/κ)``; dashed: ``|R_tr/R − (λ/κ)²| / (λ/κ)²``.
    """
    fig, ax = plt.subplots(figsize=(5.4, 3.8))
    colours = _kernel_colours(local)
    for keys, group in local.groupby(KERNEL_KEYS, sort=True):
        med = group.groupby("n")[["dof_rel_dev", "train_test_rel_dev"]].median()
        colour = colours[tuple(keys)]
        ax.plot(med.index, med["dof_rel_dev"], "o-", ms=3, color=colour, label=" · ".join(map(str, keys[1:])))
        ax.plot(med.index, med["train_test_rel_dev"], "--", color=colour, alpha=0.7)
    ax.set(yscale="log", ylabel="relative deviation (median over λ)")
    _n_axis(ax, local["n"].unique())
    handles, labels = ax.get_legend_handles_labels()
    handles += [plt.Line2D([], [], color="k"), plt.Line2D([], [], color="k", ls="--")]
    labels += ["1 − tr(S)/n vs λ/κ", "R_tr/R vs (λ/κ)²"]
    ax.legend(handles, labels, fontsize=6, loc="best")
    fig.tight_layout()
    return fig


def double_descent_curves(table: pd.DataFrame):
    """Test MSE versus the sweep ratio (N_rf/n, or n/p), seed mean ± std, with the
    deterministic equivalent; one panel per model. The dotted line marks ratio 1."""
    models = list(table.groupby("model", sort=True))
    fig, axes = _panels(len(models), width=3.8, height=3.1)
    for ax, (model, group) in zip(axes, models):
        stats = group.groupby("ratio").agg(mse=("test_mse", "mean"), sd=("test_mse", "std"), de=("de_mse", "mean"))
        ax.errorbar(stats.index, stats["mse"], yerr=stats["sd"], fmt="o", ms=3, color="k", capsize=2,
                    label="measured (test set)")
        ax.plot(stats.index, stats["de"], "-", color="C0", label="deterministic equivalent")
        ax.axvline(1.0, color="C3", ls=":", lw=1)
        ax.set(xscale="log", yscale="log", xlabel=group["sweep"].iloc[0], ylabel="test MSE")
        ax.set_title(model, fontsize=8)
        ax.legend(fontsize=6, loc="best")
    fig.tight_layout()
    return fig


def learning_dynamics_curves(table: pd.DataFrame, dataset_labels: Mapping[str, str] = {}):
    """Gradient flow along time per kernel: test risk, train risk, GCV of ``S_t`` and ridge
    at ``λ = 1/(ηt)``; the early-stopping optimum is marked and the ``t → ∞`` limit dotted."""
    groups = list(table.groupby(KERNEL_KEYS, sort=True))
    fig, axes = _panels(len(groups))
    for ax, (keys, group) in zip(axes, groups):
        finite = group[np.isfinite(group["time"])]
        ax.plot(finite["time"], finite["test_risk"], "-", color="k", label="test risk (gradient flow)")
        ax.plot(finite["time"], finite["train_risk"], "-", color="C2", alpha=0.6, label="train risk")
        ax.plot(finite["time"], finite["gcv"], "--", color="C0", label="GCV of S_t")
        ax.plot(finite["time"], finite["ridge_test_risk"], ":", color="C1", label="ridge, λ = 1/(ηt)")
        star = finite[finite["is_t_star"]]
        ax.plot(star["time"], star["test_risk"], "*", color="C3", ms=9, label="early-stopping optimum")
        limit = group.loc[~np.isfinite(group["time"]), "test_risk"]
        if len(limit):
            ax.axhline(limit.iloc[0], color="k", ls=":", lw=0.7)
        ax.set(xscale="log", yscale="log", xlabel="time ηt", ylabel="risk")
        ax.set_title(f"{_title(keys, dataset_labels)} (n = {group['n'].iloc[0]})", fontsize=8)
    if axes:
        axes[0].legend(fontsize=6, loc="best")
    fig.tight_layout()
    return fig


def linearisation_summary(accuracy: pd.DataFrame, alignment: pd.DataFrame):
    """E8 ([OJ21]): test accuracy of the network and its linearisations per task, and the
    kernel-target alignment of the network's eNTK over training (train solid, test dashed)."""
    fig, (ax_acc, ax_al) = plt.subplots(1, 2, figsize=(9.0, 3.4))
    acc = accuracy.assign(task_label=[
        "super-class" if t != "eigenfunction" else f"eigen j={int(j)}" for t, j in zip(accuracy["task"], accuracy["j"])
    ])
    order = list(dict.fromkeys(acc["task_label"]))
    styles = {"network": ("k", "o"), "linearised_init": ("C0", "s"), "linearised_end": ("C1", "^")}
    for model, (colour, marker) in styles.items():
        rows = acc[acc["model"] == model].set_index("task_label").reindex(order)
        ax_acc.plot(range(len(order)), rows["test_accuracy"], marker=marker, color=colour, ls="-", label=model)
    ax_acc.set_xticks(range(len(order)), order, rotation=20)
    ax_acc.set(ylabel="test accuracy", ylim=(0.4, 1.02))
    ax_acc.axhline(0.5, color="grey", lw=0.6, ls=":")
    ax_acc.legend(fontsize=7)
    al = alignment.assign(task_label=[
        "super-class" if t != "eigenfunction" else f"eigen j={int(j)}" for t, j in zip(alignment["task"], alignment["j"])
    ])
    for colour, label in zip(plt.cm.tab10(np.arange(len(order)) % 10), order):
        rows = al[al["task_label"] == label]
        for split, ls in (("train", "-"), ("test", "--")):
            part = rows[rows["split"] == split].sort_values("epoch")
            ax_al.plot(part["epoch"], part["alignment"], ls, marker="o", ms=3, color=colour,
                       label=label if split == "train" else None)
    ax_al.set(xlabel="epoch", ylabel="eNTK-target alignment yᵀKy / (‖y‖² tr K)", yscale="log")
    ax_al.legend(fontsize=6)
    fig.tight_layout()
    return fig
