"""Estimator accuracy by regime, and GCV's failures beside the local law (SPEC §2, §6).

A median over the whole ridge grid hides where an estimator fails: GCV can be 30–40%
low at small ridges while its median over 41 ridges is 1%. These tables split the
relative errors by ridge and by ``n/N_pool``, and set GCV's error (and its gap to LOO)
beside the local-law deviation at the same ``(n, λ)``.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from rmtlens.estimators.grids import KERNEL_KEYS
from rmtlens.studies.scaling import LAMBDA_RTOL
from rmtlens.report.tables import DE_FRACTION_EDGES, relative_error, resolved_rows
from rmtlens.report.uncertainty import seed_bootstrap

RIDGE_BUCKETS = (("λ/s < 1e-3", 0.0, 1e-3), ("1e-3 ≤ λ/s < 1e-1", 1e-3, 1e-1), ("λ/s ≥ 1e-1", 1e-1, np.inf))
LOCAL_LAW_HOLDS = 0.1  # relative deviation of 1 − tr(S)/n from λ/κ below which the local law is said to hold


def ridge_bucket(lambda_rel) -> np.ndarray:
    """The :data:`RIDGE_BUCKETS` label of each relative ridge (λ = 0 in the first)."""
    lam = np.asarray(lambda_rel, dtype=np.float64)
    if np.any(lam < 0) or not np.all(np.isfinite(lam)):
        raise ValueError("lambda_rel must be finite and non-negative")
    labels = np.empty(lam.size, dtype=object)
    for label, lo, hi in RIDGE_BUCKETS:
        labels[(lam >= lo) & (lam < hi)] = label
    return labels


def _pool_fraction_bucket(n_over_pool: np.ndarray, edges) -> tuple[np.ndarray, np.ndarray]:
    index = np.searchsorted(np.asarray(edges), n_over_pool, side="left")  # bucket (lo, hi]
    index = np.clip(index, 1, len(edges) - 1)
    return np.asarray(edges)[index - 1], np.asarray(edges)[index]


def estimator_accuracy_by_regime(
    table: pd.DataFrame,
    n_pool: Mapping[str, int],
    n_min: int,
    estimators: Mapping[str, str],
    n_boot: int = 1000,
    seed: int = 0,
    edges=DE_FRACTION_EDGES,
) -> pd.DataFrame:
    """Relative error of each estimator against the test risk, by ridge and by ``n/N_pool``.

    Parameters
    ----------
    table : ridge rows joined with the theory predictions (resolved rows are used).
    n_pool : ``N_pool`` of each dataset.
    n_min : rows with ``n ≥ n_min`` only.
    estimators : ``{column: label}`` of the estimates.
    n_boot, seed : the seed-cluster bootstrap (:func:`rmtlens.report.uncertainty.seed_bootstrap`).
    edges : bucket edges of ``n/N_pool`` (buckets ``(lo, hi]``).

    Returns
    -------
    One row per kernel, estimator, ridge bucket (``ridge_bucket``) and ``n/N_pool``
    bucket (``n_over_pool_lo/hi``): ``median_rel_error`` with its 90% interval
    (``median_rel_error_lo/hi``), ``p90_rel_error``, ``median_signed_error``
    (``(estimate − R)/R``, negative when the estimate is low), ``rows`` and ``seeds``.
    """
    missing = [c for c in [*KERNEL_KEYS, "n", "seed", "lambda_rel", "test_risk", *estimators] if c not in table]
    if missing:
        raise ValueError(f"joined table lacks columns {missing}")
    unknown = sorted(set(table["dataset"]) - set(n_pool))
    if unknown:
        raise ValueError(f"no N_pool given for datasets {unknown}")
    rows, _ = resolved_rows(table)
    rows = rows[rows["n"] >= n_min].copy()
    if rows.empty:
        raise ValueError(f"no resolved rows with n >= n_min = {n_min}")
    rows["ridge_bucket"] = ridge_bucket(rows["lambda_rel"])
    fraction = rows["n"].to_numpy(np.float64) / rows["dataset"].map(n_pool).to_numpy(np.float64)
    rows["n_over_pool_lo"], rows["n_over_pool_hi"] = _pool_fraction_bucket(fraction, edges)
    order = {label: i for i, (label, _, _) in enumerate(RIDGE_BUCKETS)}
    out = []
    groups = rows.groupby([*KERNEL_KEYS, "ridge_bucket", "n_over_pool_lo", "n_over_pool_hi"], sort=False)
    for (*keys, bucket, lo, hi), group in groups:
        seeds = sorted(group["seed"].unique())
        for column, label in estimators.items():
            estimate, actual = group[column].to_numpy(np.float64), group["test_risk"].to_numpy(np.float64)
            signed = (estimate - actual) / actual
            err = relative_error(estimate, actual)
            boot = seed_bootstrap([err[(group["seed"] == s).to_numpy()] for s in seeds], n_boot, seed)
            out.append(dict(
                zip(KERNEL_KEYS, keys), estimator=label, ridge_bucket=bucket, n_over_pool_lo=float(lo),
                n_over_pool_hi=float(hi), median_rel_error=boot["median"], median_rel_error_lo=boot["median_lo"],
                median_rel_error_hi=boot["median_hi"], p90_rel_error=boot["p90"],
                median_signed_error=float(np.median(signed)), rows=int(err.size), seeds=boot["seeds"],
                _order=order[bucket],
            ))
    frame = pd.DataFrame(out).sort_values([*KERNEL_KEYS, "estimator", "_order", "n_over_pool_lo"], kind="stable")
    return frame.drop(columns="_order").reset_index(drop=True)


def gcv_beside_local_law(table: pd.DataFrame, local: pd.DataFrame, n_min: int) -> pd.DataFrame:
    """GCV's and LOO's errors per ``(n, λ)`` beside the local-law deviations there.

    Parameters
    ----------
    table : ridge rows (``gcv``, ``loo``, ``test_risk``; resolved rows are used).
    local : the local-law table (:func:`rmtlens.studies.local_law_table`: kernel keys,
        ``n``, ``lambda``, ``dof_rel_dev``, ``train_test_rel_dev``).
    n_min : rows with ``n ≥ n_min`` only.

    Returns
    -------
    One row per kernel and ``(n, λ > 0)``: seed means of ``gcv_rel_error``
    (``|GCV − R|/R``), ``loo_rel_error`` and ``gcv_minus_loo`` (``(GCV − LOO)/LOO``), with
    ``lambda_rel``, ``ridge_bucket`` and the local law's ``dof_rel_dev`` and
    ``train_test_rel_dev``.
    """
    rows, _ = resolved_rows(table)
    rows = rows[(rows["n"] >= n_min) & (rows["lambda_rel"] > 0)].copy()
    rows["gcv_rel_error"] = relative_error(rows["gcv"], rows["test_risk"])
    rows["loo_rel_error"] = relative_error(rows["loo"], rows["test_risk"])
    rows["gcv_minus_loo"] = (rows["gcv"] - rows["loo"]) / rows["loo"]
    keys = [*KERNEL_KEYS, "n", "lambda_rel"]
    errors = rows.groupby(keys, sort=True).agg(
        **{"lambda": ("lambda", "first")}, gcv_rel_error=("gcv_rel_error", "mean"),
        loo_rel_error=("loo_rel_error", "mean"), gcv_minus_loo=("gcv_minus_loo", "mean"), seeds=("seed", "nunique"),
    ).reset_index()
    errors["ridge_bucket"] = ridge_bucket(errors["lambda_rel"])
    # the local-law table's λ is a mean over seeds, equal to the ridge table's to round-off
    law = local[[*KERNEL_KEYS, "n", "lambda", "dof_rel_dev", "train_test_rel_dev"]].assign(_law_lambda=local["lambda"])
    errors["n"] = errors["n"].astype(np.float64)
    law = law.assign(n=law["n"].astype(np.float64))
    merged = pd.merge_asof(
        errors.sort_values("lambda"), law.sort_values("lambda"), on="lambda", by=[*KERNEL_KEYS, "n"],
        direction="nearest",
    )
    matched = np.isclose(merged["_law_lambda"], merged["lambda"], rtol=LAMBDA_RTOL, atol=0.0)
    if not matched.all():
        first = merged.loc[~matched, keys].head(1).to_dict("records")
        raise ValueError(f"the local-law table lacks rows of the ridge table, e.g. {first}")
    merged["n"] = merged["n"].astype(np.int64)
    return merged.drop(columns="_law_lambda").sort_values(keys, kind="stable").reset_index(drop=True)


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    if x.size < 3:
        return np.nan
    rx, ry = pd.Series(x).rank().to_numpy(), pd.Series(y).rank().to_numpy()
    if rx.std() == 0 or ry.std() == 0:
        return np.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def local_law_predicts_gcv(beside: pd.DataFrame, holds: float = LOCAL_LAW_HOLDS) -> pd.DataFrame:
    """Does the local law's failure predict where GCV fails? One row per kernel.

    From :func:`gcv_beside_local_law`: ``spearman_dof_gcv`` (rank correlation of
    ``dof_rel_dev`` with ``gcv_rel_error``), ``spearman_dof_gap`` (with
    ``|gcv_minus_loo|``), and the median GCV error and GCV − LOO gap where the local law
    holds (``dof_rel_dev ≤ holds``) and where it fails, with the row counts.
    """
    out = []
    for keys, group in beside.groupby(KERNEL_KEYS, sort=True):
        dev = group["dof_rel_dev"].to_numpy(np.float64)
        err = group["gcv_rel_error"].to_numpy(np.float64)
        gap = np.abs(group["gcv_minus_loo"].to_numpy(np.float64))
        finite = np.isfinite(dev)
        ok, bad = finite & (dev <= holds), finite & (dev > holds)
        median = lambda v, m: float(np.median(v[m])) if m.any() else np.nan  # noqa: E731
        out.append(dict(
            zip(KERNEL_KEYS, keys), rows=int(finite.sum()), local_law_threshold=holds,
            spearman_dof_gcv=_spearman(dev[finite], err[finite]), spearman_dof_gap=_spearman(dev[finite], gap[finite]),
            rows_local_law_holds=int(ok.sum()), gcv_error_local_law_holds=median(err, ok),
            gap_local_law_holds=median(gap, ok), rows_local_law_fails=int(bad.sum()),
            gcv_error_local_law_fails=median(err, bad), gap_local_law_fails=median(gap, bad),
        ))
    return pd.DataFrame(out)
