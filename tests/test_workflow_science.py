"""Label noise, ridge selection and learnability in the test-config DAG, against independent recomputations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import RESULTS

pytestmark = pytest.mark.workflow

KEYS = ["dataset", "backbone", "weights", "kernel", "n", "seed", "lambda_rel"]


def test_clean_noise_level_equals_the_ridge_table(finished_run):
    """The noise study's clean level goes through the ridge stage's loaders: same numbers."""
    noise = pd.read_parquet(finished_run / f"{RESULTS}/tables/noise.parquet")
    ridge = pd.read_parquet(finished_run / f"{RESULTS}/tables/ridge.parquet")
    clean = noise[noise["noise"] == "none"].merge(ridge, on=KEYS, suffixes=("", "_ridge"))
    assert len(clean) == len(ridge)
    np.testing.assert_allclose(clean["excess_risk"], clean["test_risk"], rtol=1e-10)
    np.testing.assert_allclose(clean["gcv"], clean["gcv_ridge"], rtol=1e-10)
    np.testing.assert_allclose(clean["loo"], clean["loo_ridge"], rtol=1e-10)  # ridgeless included
    # the same accuracy floor and cutoff rule, so the same rows flagged (SPEC §2)
    for key in ("resolved", "resolved_floor"):
        assert clean[key].tolist() == clean[f"{key}_ridge"].tolist(), key
    np.testing.assert_allclose(clean["floor_change"], clean["floor_change_ridge"], rtol=1e-10, atol=1e-14)
    flips = noise[noise["noise"] == "flip"].drop_duplicates(["backbone", "weights", "kernel", "n", "seed", "level"])
    assert (flips["flipped"] == np.round(flips["level"] * flips["n"]).astype(int)).all()
    acc = pd.read_csv(finished_run / f"{RESULTS}/tables/noise_accuracy.csv")
    assert set(acc["estimator"]) == {"GCV", "LOO", "DE (noisy risk)", "DE (excess risk)"}
    assert len(acc[["noise", "level"]].drop_duplicates()) == len(noise[["noise", "level"]].drop_duplicates())


def test_ridge_selection_oracle_is_the_argmin_of_test_risk(finished_run):
    joined = pd.read_parquet(finished_run / f"{RESULTS}/tables/theory.parquet")
    selection = pd.read_csv(finished_run / f"{RESULTS}/tables/ridge_selection.csv")
    if "resolved" in joined:
        joined = joined[joined["resolved"]]
    for keys, group in joined.groupby(["dataset", "backbone", "weights", "kernel", "n"]):
        best = group.loc[group.groupby("seed")["test_risk"].idxmin(), "lambda_rel"].median()
        row = selection.set_index(["dataset", "backbone", "weights", "kernel", "n"]).loc[keys]
        assert row["oracle_lambda_rel"] == pytest.approx(best)
        for sel in ("gcv", "loo", "de"):
            assert row[f"{sel}_regret_mean"] >= 1.0


def test_learnability_table_satisfies_the_fixed_point(finished_run):
    table = pd.read_csv(finished_run / f"{RESULTS}/tables/learnability.csv")
    np.testing.assert_allclose(table["effective_dim"], table["fixed_point_dim"], rtol=1e-8)
    assert ((table["learned_power"] >= 0) & (table["learned_power"] <= 1)).all()
    for _, group in table.groupby(["backbone", "weights", "kernel", "lambda_rel"]):
        assert np.all(np.diff(group.sort_values("n")["learned_power"]) >= -1e-12)  # more data, more learned


def test_estimator_tables_carry_bootstrap_intervals(finished_run):
    for name in ("gcv_accuracy", "estimators"):
        acc = pd.read_csv(finished_run / f"{RESULTS}/tables/{name}.csv")
        for stat in ("median_rel_error", "p90_rel_error"):
            assert (acc[f"{stat}_lo"] <= acc[stat] + 1e-12).all() and (acc[stat] <= acc[f"{stat}_hi"] + 1e-12).all()
