"""Tables of the ridge grid and summary statistics of estimators (SPEC §2)."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from rmtlens.estimators.grids import KERNEL_KEYS

ESTIMATORS = {"gcv": "GCV", "loo": "LOO", "train_risk": "train risk"}


def ridge_table(path: Mapping[str, np.ndarray], lambdas_rel: np.ndarray, meta: Mapping) -> pd.DataFrame:
    """One row per ridge: ``meta`` columns, ``lambda_rel``, then every path quantity."""
    lambdas_rel = np.asarray(lambdas_rel, dtype=np.float64)
    if lambdas_rel.shape != np.shape(path["lambda"]):
        raise ValueError("lambdas_rel and the path's lambda grid differ in length")
    frame = pd.DataFrame({k: [v] * lambdas_rel.size for k, v in meta.items()})
    frame["lambda_rel"] = lambdas_rel
    for key, values in path.items():
        frame[key] = np.asarray(values)
    return frame


def resolved_rows(table: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The rows whose numbers are resolved (column ``resolved``, SPEC §2) and how many were
    left out. Every selection and summary of the ridge grid uses only these rows; a
    table without the column (written before it existed) is returned whole."""
    if "resolved" not in table.columns:
        return table, 0
    mask = table["resolved"].astype(bool).to_numpy()
    return table[mask].reset_index(drop=True), int((~mask).sum())


def relative_error(estimate, actual) -> np.ndarray:
    """``|estimate − actual| / actual`` elementwise."""
    estimate, actual = np.asarray(estimate, dtype=float), np.asarray(actual, dtype=float)
    return np.abs(estimate - actual) / actual


def estimator_accuracy(
    table: pd.DataFrame, n_min: int, estimators: Mapping[str, str] = ESTIMATORS
) -> pd.DataFrame:
    """Median and 90th percentile of each estimator's relative error against test risk.

    Over all resolved rows of a kernel (every n ≥ ``n_min``, seed and λ;
    :func:`resolved_rows`). Long format: one row per kernel and estimator, with the
    number of rows used.
    """
    missing = [c for c in [*KERNEL_KEYS, "n", "test_risk", *estimators] if c not in table]
    if missing:
        raise ValueError(f"ridge table lacks columns {missing}")
    rows, _ = resolved_rows(table)
    rows = rows[rows["n"] >= n_min]
    if rows.empty:
        raise ValueError(f"no rows with n >= n_min = {n_min}; lower analysis.n_min")
    out = []
    for keys, group in rows.groupby(KERNEL_KEYS, sort=True):
        for column, label in estimators.items():
            err = relative_error(group[column], group["test_risk"])
            out.append(
                dict(
                    zip(KERNEL_KEYS, keys),
                    estimator=label,
                    median_rel_error=float(np.median(err)),
                    p90_rel_error=float(np.quantile(err, 0.9)),
                    rows=int(err.size),
                )
            )
    return pd.DataFrame(out)


def best_risk(table: pd.DataFrame) -> pd.DataFrame:
    """Per kernel, at its largest n: the resolved ridge with the lowest seed-mean test risk.

    Columns: kernel keys, ``n``, ``best_lambda_rel``, ``best_test_risk`` and
    ``test_error_at_best`` (seed means at that ridge), and ``min_test_error`` (the
    lowest seed-mean classification error over all ridges).
    """
    rows = []
    table, _ = resolved_rows(table)
    for keys, group in table.groupby(KERNEL_KEYS, sort=True):
        n_max = group["n"].max()
        mean = group[group["n"] == n_max].groupby("lambda_rel")[["test_risk", "test_error"]].mean()
        best = mean["test_risk"].idxmin()
        rows.append(
            dict(
                zip(KERNEL_KEYS, keys),
                n=int(n_max),
                best_lambda_rel=float(best),
                best_test_risk=float(mean.loc[best, "test_risk"]),
                test_error_at_best=float(mean.loc[best, "test_error"]),
                min_test_error=float(mean["test_error"].min()),
            )
        )
    return pd.DataFrame(rows)


THEORY_ESTIMATORS = {
    "gcv": "GCV",
    "loo": "LOO",
    "omniscient_test_risk": "omniscient DE",
    "powerlaw_test_risk": "power-law DE (idealised)",
    "truncated_powerlaw_test_risk": "power-law DE (truncated)",
    "train_risk": "train risk",
}


def with_power_law_fit(accuracy: pd.DataFrame, fits: pd.DataFrame) -> pd.DataFrame:
    """``accuracy`` with each kernel's primary power-law fit beside it: ``powerlaw_window``,
    ``powerlaw_fit_valid``, ``rank_fraction`` and ``out_of_span_share``. They tell the two
    power-law DEs' failures apart: an idealised DE far off while the truncated one is
    close means finite rank; both far off, or an invalid fit, means the shape is not a
    power law."""
    primary = fits[fits["primary"].astype(bool)]
    if primary.duplicated(KERNEL_KEYS).any():
        raise ValueError("fits holds more than one primary window for a kernel")
    columns = {"window": "powerlaw_window", "valid": "powerlaw_fit_valid"}
    extra = primary[[*KERNEL_KEYS, "window", "valid", "rank_fraction", "out_of_span_share"]].rename(columns=columns)
    merged = accuracy.merge(extra, on=KERNEL_KEYS, how="left", validate="many_to_one")
    if merged["powerlaw_window"].isna().any():
        raise ValueError("fits lacks a kernel of the accuracy table")
    return merged


def join_predictions(table: pd.DataFrame, predictions: pd.DataFrame) -> pd.DataFrame:
    """Ridge rows with the theory predictions of their (kernel, n, λ_rel) attached.

    ``predictions`` has one row per kernel, n and ``lambda_rel``; every ridge row
    must find its prediction (an error names the first that does not).
    """
    keys = [*KERNEL_KEYS, "n", "lambda_rel"]
    extra = [c for c in predictions.columns if c not in table.columns or c in keys]
    joined = table.merge(predictions[extra], on=keys, how="left", validate="many_to_one")
    missing = joined["kappa"].isna()
    if missing.any():
        first = joined.loc[missing, keys].iloc[0].to_dict()
        raise ValueError(f"no theory prediction for ridge row {first}")
    return joined


def double_descent_summary(table: pd.DataFrame, exclude: tuple[float, float] = (0.7, 1.4)) -> pd.DataFrame:
    """Per sweep model: where the measured and predicted risks peak, and how far the
    deterministic equivalent is from the seed-mean risk away from the peak.

    ``table`` rows: ``model``, ``ratio``, ``seed``, ``test_mse``, ``de_mse``. Ratios
    inside ``exclude`` are left out of the ``median/max_rel_error_off_peak`` columns.
    """
    rows = []
    for model, group in table.groupby("model", sort=True):
        mean = group.groupby("ratio")[["test_mse", "de_mse"]].mean()
        off = mean[(mean.index < exclude[0]) | (mean.index > exclude[1])]
        err = pd.Series(relative_error(off["de_mse"], off["test_mse"]))
        rows.append(dict(
            model=model,
            peak_ratio_measured=float(mean["test_mse"].idxmax()),
            peak_ratio_predicted=float(mean["de_mse"].idxmax()),
            peak_test_mse=float(mean["test_mse"].max()),
            median_rel_error_off_peak=float(err.median()) if len(err) else np.nan,
            max_rel_error_off_peak=float(err.max()) if len(err) else np.nan,
        ))
    return pd.DataFrame(rows)


DE_FRACTION_EDGES = (0.0, 0.1, 0.25, 0.5, 1.0)


def de_bias_by_pool_fraction(
    table: pd.DataFrame, n_pool: Mapping[str, int], n_min: int, edges=DE_FRACTION_EDGES, small_ridge: float = 1e-3
) -> pd.DataFrame:
    """Relative error of the omniscient DE against the test risk by ``n/N_pool`` bucket.

    The omniscient DE treats the pool as the population (SPEC §3), which it is not once
    ``n`` is a sizeable fraction of ``N_pool``. Per kernel and bucket ``(lo, hi]`` of
    ``n/N_pool`` (rows with ``n ≥ n_min``): median and 90th percentile of
    ``|DE − R|/R`` over all ridges, the median signed error ``(DE − R)/R``, and the
    median signed error over ridges ``λ_rel < small_ridge`` (where the bias lives).
    """
    missing = [c for c in [*KERNEL_KEYS, "n", "lambda_rel", "test_risk", "omniscient_test_risk"] if c not in table]
    if missing:
        raise ValueError(f"joined table lacks columns {missing}")
    unknown = sorted(set(table["dataset"]) - set(n_pool))
    if unknown:
        raise ValueError(f"no N_pool given for datasets {unknown}")
    rows = table[table["n"] >= n_min].copy()
    rows["n_over_pool"] = rows["n"] / rows["dataset"].map(n_pool)
    rows["bucket"] = pd.cut(rows["n_over_pool"], list(edges))
    rows["signed"] = (rows["omniscient_test_risk"] - rows["test_risk"]) / rows["test_risk"]
    out = []
    for (*keys, bucket), group in rows.groupby([*KERNEL_KEYS, "bucket"], sort=True, observed=True):
        small = group[group["lambda_rel"] < small_ridge]["signed"]
        out.append(
            dict(
                zip(KERNEL_KEYS, keys),
                n_over_pool_lo=float(bucket.left),
                n_over_pool_hi=float(bucket.right),
                n_values=" ".join(str(int(v)) for v in sorted(group["n"].unique())),
                median_rel_error=float(np.median(np.abs(group["signed"]))),
                p90_rel_error=float(np.quantile(np.abs(group["signed"]), 0.9)),
                median_signed_error=float(np.median(group["signed"])),
                median_signed_error_small_ridge=float(np.median(small)) if len(small) else np.nan,
                rows=int(len(group)),
            )
        )
    return pd.DataFrame(out)
