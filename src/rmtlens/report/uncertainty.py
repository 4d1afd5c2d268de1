"""Uncertainty of the estimator statistics: seed-cluster bootstrap intervals (SPEC §2).

The median and 90th-percentile relative errors are computed over all (n, λ, seed)
rows of a kernel. Rows of one seed share a subsample, so they are not independent:
the bootstrap resamples whole seeds with replacement (a cluster bootstrap), recomputes
both statistics on the rows of the drawn seeds, and reports the 5th and 95th
percentiles of the replicates as a 90% interval.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from rmtlens.estimators.grids import KERNEL_KEYS
from rmtlens.report.tables import relative_error


def seed_bootstrap(errors_by_seed: list[np.ndarray], n_boot: int = 1000, seed: int = 0, level: float = 0.9):
    """90% (``level``) intervals of the median and the 90th percentile of pooled errors.

    Parameters
    ----------
    errors_by_seed : one array of relative errors per seed (the clusters).
    n_boot : bootstrap replicates.
    seed : seeds the resampling.

    Returns
    -------
    dict: ``median``, ``p90`` (on all rows), ``median_lo``, ``median_hi``, ``p90_lo``,
    ``p90_hi``, ``seeds``.
    """
    clusters = [np.asarray(e, dtype=float) for e in errors_by_seed if np.size(e)]
    if not clusters:
        raise ValueError("no errors to bootstrap")
    pooled = np.concatenate(clusters)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(clusters), size=(int(n_boot), len(clusters)))
    # Both statistics depend on the drawn multiset of seeds only, not on the order of the
    # draw, and a few seeds have few multisets (10 for 3 seeds): each is computed once.
    stats: dict[tuple[int, ...], tuple[float, float]] = {}
    med, p90 = np.empty(int(n_boot)), np.empty(int(n_boot))
    for b, pick in enumerate(draws):
        key = tuple(sorted(pick.tolist()))
        if key not in stats:
            sample = np.concatenate([clusters[i] for i in key])
            stats[key] = np.median(sample), np.quantile(sample, 0.9)
        med[b], p90[b] = stats[key]
    tail = 100 * (1 - level) / 2
    return dict(
        median=float(np.median(pooled)), p90=float(np.quantile(pooled, 0.9)),
        median_lo=float(np.percentile(med, tail)), median_hi=float(np.percentile(med, 100 - tail)),
        p90_lo=float(np.percentile(p90, tail)), p90_hi=float(np.percentile(p90, 100 - tail)),
        seeds=len(clusters),
    )


def with_bootstrap_intervals(
    accuracy: pd.DataFrame, table: pd.DataFrame, n_min: int, estimators: Mapping[str, str],
    n_boot: int = 1000, seed: int = 0,
) -> pd.DataFrame:
    """``accuracy`` (from ``estimator_accuracy``) with 90% seed-bootstrap intervals added:
    ``median_rel_error_lo/hi``, ``p90_rel_error_lo/hi`` and ``seeds``. Uses the rows
    with ``n ≥ n_min`` (and ``resolved`` True where that column exists)."""
    rows = table[table["n"] >= n_min]
    if "resolved" in rows.columns:
        rows = rows[rows["resolved"].astype(bool)]
    labels = {label: column for column, label in estimators.items()}
    extra = []
    for _, acc in accuracy.iterrows():
        mask = np.ones(len(rows), dtype=bool)
        for k in KERNEL_KEYS:
            mask &= (rows[k] == acc[k]).to_numpy()
        group = rows[mask]
        column = labels[acc["estimator"]]
        err = relative_error(group[column], group["test_risk"])
        by_seed = [err[(group["seed"] == s).to_numpy()] for s in sorted(group["seed"].unique())]
        boot = seed_bootstrap(by_seed, n_boot, seed)
        extra.append(dict(
            median_rel_error_lo=boot["median_lo"], median_rel_error_hi=boot["median_hi"],
            p90_rel_error_lo=boot["p90_lo"], p90_rel_error_hi=boot["p90_hi"], seeds=boot["seeds"],
        ))
    return pd.concat([accuracy.reset_index(drop=True), pd.DataFrame(extra)], axis=1)
