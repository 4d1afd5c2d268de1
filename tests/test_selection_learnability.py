"""Ridge selection, per-mode learnability and seed-bootstrap intervals."""

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import brentq

from rmtlens.report.uncertainty import seed_bootstrap, with_bootstrap_intervals
from rmtlens.studies.learnability import learnabilities, learnability_tables
from rmtlens.studies.selection import regret_summary, ridge_selection_rows, ridge_selection_table, select_lambda


def _joined(seed=0, resolved=False):
    """A synthetic joined ridge/theory table for one kernel: 3 n, 3 seeds, 6 ridges."""
    rng = np.random.default_rng(seed)
    lams = np.array([0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0])
    rows = []
    for n in (50, 100, 200):
        de = rng.uniform(0.5, 1.5, lams.size)
        for s in (0, 1, 2):
            test = rng.uniform(0.5, 1.5, lams.size)
            rows.append(pd.DataFrame(dict(
                dataset="d", backbone="b", weights="init", kernel="features", n=n, seed=s,
                lambda_rel=lams, **{"lambda": lams * 2.0}, test_risk=test, test_error=rng.uniform(size=lams.size),
                gcv=rng.uniform(0.5, 1.5, lams.size), loo=rng.uniform(0.5, 1.5, lams.size),
                train_risk=rng.uniform(size=lams.size), omniscient_test_risk=de,
            )))
    table = pd.concat(rows, ignore_index=True)
    if resolved:
        table["resolved"] = rng.uniform(size=len(table)) > 0.3
    return table


@pytest.mark.parametrize("resolved", [False, True])
def test_selectors_match_brute_force(resolved):
    table = _joined(resolved=resolved)
    rows = ridge_selection_rows(table)
    use = table[table["resolved"]] if resolved else table
    for (n, s), group in use.groupby(["n", "seed"]):
        for selector, column in (("oracle", "test_risk"), ("gcv", "gcv"), ("loo", "loo"),
                                 ("de", "omniscient_test_risk")):
            expect = group.loc[group[column].idxmin()]
            got = rows[(rows["selector"] == selector) & (rows["n"] == n) & (rows["seed"] == s)].iloc[0]
            assert got["lambda_rel"] == expect["lambda_rel"]
            assert got["test_risk"] == expect["test_risk"]
            oracle = group["test_risk"].min()
            assert got["regret"] == pytest.approx(expect["test_risk"] / oracle)
            assert got["regret"] >= 1.0
    oracle_rows = rows[rows["selector"] == "oracle"]
    assert np.all(oracle_rows["regret"] == 1.0)
    wide = ridge_selection_table(rows)
    assert {"oracle_lambda_rel", "gcv_lambda_rel", "loo_lambda_rel", "de_lambda_rel", "gcv_regret_mean"} <= set(wide)
    summary = regret_summary(rows, 100)
    assert set(summary["selector"]) == {"gcv", "loo", "de"}
    assert (summary["max_regret"] >= summary["median_regret"]).all()


def test_each_selector_sees_only_its_column():
    table = _joined()
    with pytest.raises(ValueError, match="may only see"):
        select_lambda(table[["n", "seed", "lambda", "lambda_rel", "gcv", "test_risk"]], "gcv")
    with pytest.raises(ValueError, match="may only see"):
        select_lambda(table[["n", "seed", "lambda_rel", "omniscient_test_risk", "loo"]], "omniscient_test_risk")
    seen = []
    import rmtlens.studies.selection as selection

    original = selection.select_lambda

    def spy(view, column):
        seen.append((column, set(view.columns)))
        return original(view, column)

    selection.select_lambda = spy
    try:
        selection.ridge_selection_rows(table)
    finally:
        selection.select_lambda = original
    for column, columns in seen:
        assert columns <= {"n", "seed", "lambda", "lambda_rel", "resolved", column}
        assert column in columns
    assert {c for c, _ in seen} == {"test_risk", "gcv", "loo", "omniscient_test_risk"}


def test_learnability_fixed_point_and_brentq():
    rng = np.random.default_rng(0)
    n_pool, C = 400, 3
    D = np.sort(rng.pareto(1.5, n_pool) + 0.01)[::-1] * np.arange(1, n_pool + 1) ** -0.5
    proj = rng.standard_normal((n_pool, C))
    summary, curves = learnability_tables(D, proj, np.eye(C), [20, 80, 300], [0.0, 1e-3, 1e-1], modes=n_pool)
    mu = np.sort(D / n_pool)[::-1]
    scale = D.sum() / n_pool
    for _, row in summary.iterrows():
        L = curves[(curves["n"] == row["n"]) & (curves["lambda_rel"] == row["lambda_rel"])]["learnability"].to_numpy()
        assert np.all((L >= 0) & (L <= 1))
        lam = row["lambda_rel"] * scale
        assert L.sum() == pytest.approx(row["n"] * (1 - lam / row["kappa"]), rel=1e-9)
        assert row["effective_dim"] == pytest.approx(L.sum(), rel=1e-12)
        # independent root of κ = λ + (κ/n) Σ μ/(μ+κ)
        f = lambda k: k - lam - (k / row["n"]) * np.sum(mu / (mu + k))  # noqa: E731
        if lam == 0:
            f = lambda k: np.sum(mu / (mu + k)) - row["n"]  # noqa: E731
        kappa = brentq(f, 1e-14, 1e3 * mu.sum() + lam, xtol=1e-16, rtol=1e-13)
        assert row["kappa"] == pytest.approx(kappa, rel=1e-8)
        np.testing.assert_allclose(L, mu / (mu + kappa), rtol=1e-7)
    assert np.all(learnabilities(mu, 0.0) == (mu > 0))


def _synthetic_rows(n_seeds, seed=0):
    rng = np.random.default_rng(seed)
    frames = []
    for s in range(n_seeds):
        shift = rng.normal(0, 0.3)  # seed-level effect: rows of one seed are correlated
        for n in (100, 200):
            risk = rng.uniform(1, 2, 10)
            frames.append(pd.DataFrame(dict(
                dataset="d", backbone="b", weights="init", kernel="features", n=n, seed=s, lambda_rel=np.arange(10),
                test_risk=risk, gcv=risk * np.exp(shift + rng.normal(0, 0.1, 10)),
            )))
    return pd.concat(frames, ignore_index=True)


def test_bootstrap_contains_point_and_shrinks_with_seeds():
    widths = []
    for n_seeds in (3, 30):
        table = _synthetic_rows(n_seeds)
        err = np.abs(table["gcv"] - table["test_risk"]) / table["test_risk"]
        accuracy = pd.DataFrame([dict(dataset="d", backbone="b", weights="init", kernel="features", estimator="GCV",
                                      median_rel_error=float(np.median(err)), p90_rel_error=float(np.quantile(err, 0.9)))])
        out = with_bootstrap_intervals(accuracy, table, 100, {"gcv": "GCV"}, n_boot=2000, seed=1).iloc[0]
        assert out["median_rel_error_lo"] <= out["median_rel_error"] <= out["median_rel_error_hi"]
        assert out["p90_rel_error_lo"] <= out["p90_rel_error"] <= out["p90_rel_error_hi"]
        assert out["seeds"] == n_seeds
        widths.append(out["median_rel_error_hi"] - out["median_rel_error_lo"])
    assert widths[1] < widths[0]
    # a single seed has no between-seed variation: the interval collapses onto the point
    one = seed_bootstrap([np.array([0.1, 0.2, 0.3])], n_boot=50)
    assert one["median_lo"] == one["median_hi"] == one["median"] == pytest.approx(0.2)
