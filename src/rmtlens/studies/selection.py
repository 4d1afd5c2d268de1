"""Optimal ridge: the oracle λ and the λ chosen by GCV, LOO and the deterministic
equivalent, with each one's regret (SPEC §5 "Ridge selection").

Each selector sees only the columns it is allowed: GCV only ``gcv``, LOO only ``loo``,
the DE only ``omniscient_test_risk`` (a function of (n, λ) from the pool spectrum),
the oracle ``test_risk``. Selection runs per ``(n, seed)`` on the rows that are
trusted: where the ridge table has a boolean ``resolved`` column (kernel accuracy
floor), only rows with ``resolved`` True take part, for every selector.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rmtlens.estimators.grids import KERNEL_KEYS

SELECTORS = {
    "oracle": "test_risk",
    "gcv": "gcv",
    "loo": "loo",
    "de": "omniscient_test_risk",
}
KEY_COLUMNS = ("n", "seed", "lambda", "lambda_rel")


def trusted_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Rows with ``resolved`` True where that column exists; all rows otherwise."""
    if "resolved" in table.columns:
        return table[table["resolved"].astype(bool)]
    return table


def select_lambda(table: pd.DataFrame, column: str) -> pd.DataFrame:
    """Ridge minimising ``column`` per ``(n, seed)``; ties go to the smallest ridge.

    ``table`` may hold only ``n``, ``seed``, ``lambda``, ``lambda_rel``, ``resolved``
    and ``column``: any other column is an error, so a selector cannot see test data
    it is not meant to. Non-finite values never win (a group with none is an error).
    """
    allowed = {*KEY_COLUMNS, "resolved", column}
    extra = [c for c in table.columns if c not in allowed]
    if extra:
        raise ValueError(f"the {column!r} selector may only see {sorted(allowed)}; got also {extra}")
    missing = [c for c in ("n", "seed", "lambda_rel", column) if c not in table.columns]
    if missing:
        raise ValueError(f"selection table lacks the columns {missing}")
    rows = trusted_rows(table)
    rows = rows[np.isfinite(rows[column].to_numpy(dtype=float))]
    ordered = rows.sort_values(["n", "seed", "lambda_rel"], kind="stable")
    if ordered.empty:
        raise ValueError(f"no finite {column!r} values to select from")
    best = ordered.loc[ordered.groupby(["n", "seed"], sort=True)[column].idxmin()]
    return best.reset_index(drop=True)


def _selector_view(group: pd.DataFrame, column: str) -> pd.DataFrame:
    return group[[c for c in (*KEY_COLUMNS, "resolved", column) if c in group.columns]]


def ridge_selection_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Per kernel, n, seed and selector: the selected ``lambda_rel``, the test risk there
    and the regret ``R(λ_selected) / R(λ_oracle)`` (≥ 1).

    ``table`` is the joined ridge/theory table (``results/<run>/tables/theory.parquet``);
    selectors whose column is missing (e.g. no LOO) are skipped.
    """
    out = []
    for keys, group in table.groupby(KERNEL_KEYS, sort=True):
        risk = trusted_rows(group).set_index(["n", "seed", "lambda_rel"])["test_risk"]
        oracle = None
        for name, column in SELECTORS.items():
            if column not in group.columns:
                continue
            chosen = select_lambda(_selector_view(group, column), column)
            at = risk.reindex(pd.MultiIndex.from_frame(chosen[["n", "seed", "lambda_rel"]])).to_numpy()
            frame = chosen[["n", "seed", "lambda_rel"]].copy()
            frame["test_risk"] = at
            if name == "oracle":
                oracle = frame.set_index(["n", "seed"])["test_risk"]
            frame["regret"] = at / oracle.reindex(pd.MultiIndex.from_frame(frame[["n", "seed"]])).to_numpy()
            frame.insert(0, "selector", name)
            for i, (k, v) in enumerate(zip(KERNEL_KEYS, keys)):
                frame.insert(i, k, v)
            out.append(frame)
    return pd.concat(out, ignore_index=True)


def ridge_selection_table(rows: pd.DataFrame) -> pd.DataFrame:
    """``ridge_selection.csv``: per kernel and n, each selector's λ (median over seeds)
    and regret (mean and max over seeds), wide."""
    agg = rows.groupby([*KERNEL_KEYS, "n", "selector"], sort=True).agg(
        lambda_rel=("lambda_rel", "median"), regret_mean=("regret", "mean"), regret_max=("regret", "max"),
        seeds=("seed", "nunique"),
    )
    wide = agg.unstack("selector")
    wide.columns = [f"{sel}_{stat}" for stat, sel in wide.columns]
    keep = [c for c in wide.columns if not (c.startswith("oracle_regret") or (c.endswith("_seeds") and not c.startswith("oracle")))]
    wide = wide[keep].rename(columns={"oracle_seeds": "seeds"})
    return wide.reset_index()


def regret_summary(rows: pd.DataFrame, n_min: int) -> pd.DataFrame:
    """Median and max regret over (n ≥ n_min, seed) per kernel and selector."""
    use = rows[(rows["n"] >= n_min) & (rows["selector"] != "oracle")]
    if use.empty:
        raise ValueError(f"no selection rows with n >= {n_min}")
    return (
        use.groupby([*KERNEL_KEYS, "selector"], sort=True)["regret"]
        .agg(median_regret="median", max_regret="max", rows="size")
        .reset_index()
    )
