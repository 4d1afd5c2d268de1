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
    scale = D.sum() / n_pool  # a PSD spectrum: tr(K_pool)/N_pool
    summary, curves = learnability_tables(D, proj, np.eye(C), [20, 80, 300], [0.0, 1e-3, 1e-1], modes=n_pool,
                                          scale=scale)
    mu = np.sort(D / n_pool)[::-1]
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


@pytest.mark.parametrize("lam_rel", [1e-3, 1e-1])
def test_learned_power_matches_monte_carlo_on_a_labelled_pool(lam_rel):
    """``learned_power`` = Σ L_k ||β_k||² / Σ ||β_k||² is the share of the target's power in
    the mean predictor, ⟨E f̂, h⟩ / ||h||²: measured by kernel ridge on n = 100 points drawn
    i.i.d. from a labelled pool (``mean(L)``, the mean learnability over modes,
    is 0.03 here against 0.39)."""
    from labelled_pool import labelled_pool, pool_ridge_monte_carlo

    from rmtlens.estimators.spectra import pool_spectrum

    K, labels, T = labelled_pool()
    D, proj = pool_spectrum(K, labels, T.shape[0])
    n, scale = 100, np.trace(K) / len(labels)
    summary, _ = learnability_tables(D, proj, T, [n], [lam_rel], scale=scale)
    _, overlap = pool_ridge_monte_carlo(K, labels, T, n, lam_rel * scale)
    mc, stderr = overlap.mean(), overlap.std(ddof=1) / np.sqrt(overlap.size)
    assert stderr < 0.01 * mc, "Monte Carlo too noisy for a 3% comparison"
    # the DE of the mean predictor is exact as n → ∞; here within 1.5% of the mean
    assert summary["learned_power"].iloc[0] == pytest.approx(mc, rel=0.03)


def test_learnability_uses_the_stored_kernel_scale_on_an_indefinite_kernel():
    """λ = λ_rel · tr(K_pool)/N_pool, the scale the ridge path uses (stored in
    pool.npz), not Σ max(D, 0)/N_pool, which exceeds it when a float32-like error leaves
    negative eigenvalues. Reference: brentq on numpy's eigenvalues at λ from the diagonal."""
    from rmtlens.estimators.spectra import pool_spectrum

    rng = np.random.default_rng(4)
    N, p, C = 120, 40, 3
    phi = rng.standard_normal((N, p)) * np.linspace(2.0, 0.3, p)
    E = rng.standard_normal((N, N)) * 1e-3 / np.sqrt(N)
    K = phi @ phi.T / p + (E + E.T) / 2
    labels = rng.integers(0, C, N)
    D, proj = pool_spectrum(K, labels, C)
    D_np = np.linalg.eigvalsh(K)
    assert np.clip(D_np, 0, None).sum() > np.trace(K) * (1 + 1e-4)
    scale = np.mean(np.diag(K))
    summary, _ = learnability_tables(D, proj, np.eye(C), [10, 30, 60], [1e-4, 1e-2, 1.0], rcond=1e-3, scale=scale)
    mu = np.where(D_np > 1e-3 * D_np.max(), D_np, 0.0) / N
    for _, row in summary.iterrows():
        lam, n = row["lambda_rel"] * np.trace(K) / N, row["n"]
        kappa = brentq(lambda k: k - lam - (k / n) * np.sum(mu / (mu + k)), lam, lam + mu.sum(), xtol=1e-300, rtol=1e-14)
        assert row["kappa"] == pytest.approx(kappa, rel=1e-10)
        assert row["fixed_point_dim"] == pytest.approx(n * (1 - lam / kappa), rel=1e-8)
    with pytest.raises(ValueError, match="scale"):
        learnability_tables(D, proj, np.eye(C), [10], [1e-2], scale=0.0)


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


def test_bootstrap_intervals_equal_the_exact_cluster_bootstrap_distribution():
    """Three seeds whose rows have constant relative errors 0.1, 0.2 and 0.5: the seed-cluster
    bootstrap has 27 equally likely resamples, enumerated here. The 90% intervals of the median
    (0.1 to 0.5 around 0.2) and the 90th percentile (0.2 to 0.5 around 0.5) are the 5% and 95%
    quantiles of that exact distribution, which no atom's cumulative probability comes within
    1.3 points of (6,000 replicates estimate each to ±0.3 points, 1 s.d.). An interval collapsed onto the
    point estimate fails; rows with n < n_min (error 9) must not enter."""
    import itertools

    errors = {0: 0.1, 1: 0.2, 2: 0.5}
    rows = []
    for seed, err in errors.items():
        for n, e in ((100, err), (200, err), (50, 9.0)):
            rows.append(pd.DataFrame(dict(dataset="d", backbone="b", weights="init", kernel="features", n=n, seed=seed,
                                          lambda_rel=np.arange(5), test_risk=2.0, gcv=2.0 * (1 + e))))
    table = pd.concat(rows, ignore_index=True)
    pooled = np.repeat(list(errors.values()), 10)
    accuracy = pd.DataFrame([dict(dataset="d", backbone="b", weights="init", kernel="features", estimator="GCV",
                                  median_rel_error=float(np.median(pooled)),
                                  p90_rel_error=float(np.quantile(pooled, 0.9)))])
    out = with_bootstrap_intervals(accuracy, table, 100, {"gcv": "GCV"}, n_boot=6000, seed=3).iloc[0]
    clusters = [np.full(10, e) for e in errors.values()]
    for stat, func in (("median", np.median), ("p90", lambda x: np.quantile(x, 0.9))):
        values = np.array([func(np.concatenate([clusters[i] for i in pick]))
                           for pick in itertools.product(range(3), repeat=3)])
        atoms, counts = np.unique(np.round(values, 12), return_counts=True)
        cdf = np.cumsum(counts) / values.size
        assert np.min(np.abs(cdf - 0.05)) > 0.01 and np.min(np.abs(cdf - 0.95)) > 0.01
        lo, hi = atoms[np.searchsorted(cdf, 0.05)], atoms[np.searchsorted(cdf, 0.95)]
        assert out[f"{stat}_rel_error_lo"] == pytest.approx(lo, rel=1e-9)
        assert out[f"{stat}_rel_error_hi"] == pytest.approx(hi, rel=1e-9)
        assert lo < hi
    assert (out["median_rel_error_lo"], out["median_rel_error_hi"]) == pytest.approx((0.1, 0.5))
    assert out["seeds"] == 3


def test_bootstrap_replicates_equal_a_direct_resampling():
    """Each replicate's statistics depend on the drawn multiset of seeds only: the intervals
    are bit for bit those of concatenating the drawn seeds' rows in draw order for every
    replicate (clusters of unequal sizes, 4 seeds, with ties across seeds)."""
    rng = np.random.default_rng(11)
    clusters = [np.round(rng.lognormal(size=k), 2) for k in (7, 12, 9, 15)]
    n_boot, seed = 400, 5
    draws = np.random.default_rng(seed).integers(0, len(clusters), size=(n_boot, len(clusters)))
    samples = [np.concatenate([clusters[i] for i in pick]) for pick in draws]
    med = np.array([np.median(s) for s in samples])
    p90 = np.array([np.quantile(s, 0.9) for s in samples])
    out = seed_bootstrap(clusters, n_boot=n_boot, seed=seed, level=0.9)
    lo, hi = 100 * (1 - 0.9) / 2, 100 - 100 * (1 - 0.9) / 2  # the tails of a 90% level, as floats
    assert out["median_lo"] == np.percentile(med, lo) and out["median_hi"] == np.percentile(med, hi)
    assert out["p90_lo"] == np.percentile(p90, lo) and out["p90_hi"] == np.percentile(p90, hi)
    assert out["median_lo"] < out["median_hi"]
