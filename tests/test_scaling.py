"""Scaling exponents, GCV-selected ridge (training data only) and the local-law diagnostic."""

import inspect

import numpy as np
import pandas as pd
import pytest

from rmtlens.estimators import deterministic_equivalent, ridge_path
from rmtlens.io import load_table, save_table
from rmtlens.studies import (
    GCV_SELECTION_COLUMNS,
    de_regime,
    fit_excess_exponent,
    fit_scaling_exponent,
    local_law_diagnostic,
    local_law_table,
    oracle_lambdas,
    risk_at_selected_lambda,
    risk_vs_n_at_fixed_lambda,
    risk_vs_n_at_gcv_lambda,
    scaling_table,
    select_lambda_by_gcv,
)

LAMBDA_REL = np.concatenate([[0.0], np.geomspace(1e-5, 1.0, 8)])


def gaussian_ridge_table(ns=(100, 200, 400), seeds=(0, 1), d=800, m=400, noise_var=0.05):
    """Ridge tables of kernel ridge on Gaussian features ``x ~ N(0, diag μ)``.

    Returns the table (one row per n, seed, λ), the population ``μ`` and ``||β_k||²``
    on unit-variance eigenfunctions, and the absolute λ grid.
    """
    k = np.arange(1, d + 1)
    mu = k**-1.4
    beta = k**-0.5 * np.random.default_rng(99).choice([-1.0, 1.0], d)
    lambdas = LAMBDA_REL * mu.sum()  # mean diag of K = tr(Σ) in expectation
    rows = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        X = rng.standard_normal((max(ns) + m, d)) * np.sqrt(mu)
        y = X @ beta + np.sqrt(noise_var) * rng.standard_normal(X.shape[0])
        Xs, ys = X[max(ns) :], y[max(ns) :]
        for n in ns:
            Xn = X[:n]
            evals, U = np.linalg.eigh(Xn @ Xn.T)
            path = ridge_path(evals, U, y[:n], Xs @ Xn.T, ys, lambdas)
            frame = pd.DataFrame({key: path[key] for key in ("test_risk", "train_risk", "gcv", "dof", "test_error", "resolved")})
            rows.append(frame.assign(n=n, seed=seed, **{"lambda": lambdas, "lambda_rel": LAMBDA_REL}))
    return pd.concat(rows, ignore_index=True), mu, mu * beta**2, lambdas


@pytest.fixture(scope="module")
def gaussian_case():
    return gaussian_ridge_table()


@pytest.fixture(scope="module")
def ridge_table(gaussian_case):
    return gaussian_case[0]


def test_observed_exponent_recovers_a_planted_exponent():
    rng = np.random.default_rng(1)
    n = np.geomspace(20, 20000, 16)
    risk = 2.5 * n**-0.73 * np.exp(0.02 * rng.standard_normal(n.size))
    outside = (n < 100) | (n > 5000)
    risk[n < 100] *= 10.0  # a pre-asymptotic bump and a noise floor outside the
    risk[n > 5000] = risk[n <= 5000].min()  # window must not leak into the fit
    fit = fit_scaling_exponent(n, risk, n_min=100, n_max=5000)
    assert abs(fit["exponent"] - 0.73) < 0.01
    assert fit["r2"] > 0.99
    assert fit["n_points"] == int((~outside).sum())
    assert 100 <= fit["n_min"] and fit["n_max"] <= 5000
    whole = fit_scaling_exponent(n, risk)
    assert abs(whole["exponent"] - 0.73) > 0.05  # the window mattered


def test_gcv_selection_never_picks_an_unresolved_row(ridge_table):
    table = ridge_table[list(GCV_SELECTION_COLUMNS)].copy()
    table["resolved"] = True
    first = select_lambda_by_gcv(table)
    picked = table.merge(first[["n", "seed", "lambda"]], on=["n", "seed", "lambda"]).index
    table.loc[table.index.isin(picked) | (table["lambda"] == 0), "resolved"] = False
    again = select_lambda_by_gcv(table)
    for row in again.itertuples():
        group = table[(table.n == row.n) & (table.seed == row.seed) & table.resolved]
        assert row.gcv == group["gcv"].min() and row.gcv >= first[(first.n == row.n) & (first.seed == row.seed)].gcv.iloc[0]
    assert (again["lambda"] > 0).all()  # never the (unresolved) ridgeless rows
    table.loc[table.n == table.n.max(), "resolved"] = False
    with pytest.raises(ValueError, match="no resolved ridge"):
        select_lambda_by_gcv(table)


def test_gcv_selection_cannot_receive_test_data(ridge_table):
    params = list(inspect.signature(select_lambda_by_gcv).parameters)
    assert params == ["gcv_table"]
    for column in ("test_risk", "test_error", "train_risk", "dof"):
        with pytest.raises(ValueError, match=column):
            select_lambda_by_gcv(ridge_table[["n", "seed", "lambda", "gcv", column]])
    with pytest.raises(ValueError, match="lacks the columns \\['gcv'\\]"):
        select_lambda_by_gcv(ridge_table[["n", "seed", "lambda"]])


def test_gcv_selection_is_the_per_group_argmin(ridge_table):
    shuffled = ridge_table.sample(frac=1.0, random_state=3)  # row order must not matter
    selected = select_lambda_by_gcv(shuffled[list(GCV_SELECTION_COLUMNS)])
    assert len(selected) == ridge_table.groupby(["n", "seed"]).ngroups
    for row in selected.itertuples():
        group = ridge_table[(ridge_table.n == row.n) & (ridge_table.seed == row.seed) & ridge_table.resolved]
        best = group["lambda"].to_numpy()[np.argmin(group["gcv"].to_numpy())]
        assert selected.loc[row.Index, "lambda"] == best
        assert selected.loc[row.Index, "gcv"] == group["gcv"].min()
    read = risk_at_selected_lambda(ridge_table, selected)
    for row in read.itertuples():
        match = ridge_table[(ridge_table.n == row.n) & (ridge_table.seed == row.seed)]
        expected = match.loc[np.isclose(match["lambda"], read.loc[row.Index, "lambda"], rtol=0), "test_risk"]
        assert read.loc[row.Index, "test_risk"] == expected.item()


def test_gcv_curve_ignores_test_risk_when_choosing(ridge_table):
    curve = risk_vs_n_at_gcv_lambda(ridge_table)
    scrambled = ridge_table.assign(test_risk=np.random.default_rng(0).permutation(ridge_table["test_risk"].to_numpy()))
    curve_scrambled = risk_vs_n_at_gcv_lambda(scrambled)
    np.testing.assert_array_equal(curve["lambda_median"], curve_scrambled["lambda_median"])
    # independent computation of the same curve
    expected = []
    for n, group in ridge_table.groupby("n"):
        per_seed = [g["test_risk"].to_numpy()[np.argmin(g["gcv"].to_numpy())] for _, g in group.groupby("seed")]
        expected.append(np.mean(per_seed))
    np.testing.assert_allclose(curve["risk_mean"], expected, rtol=1e-14)
    assert list(curve["n"]) == [100, 200, 400] and list(curve["n_seeds"]) == [2, 2, 2]


def test_selection_survives_a_csv_round_trip(ridge_table, tmp_path):
    save_table(tmp_path / "ridge.csv", ridge_table)
    loaded = load_table(tmp_path / "ridge.csv")
    assert not np.array_equal(loaded["lambda"], ridge_table["lambda"])  # digits were lost
    selected = select_lambda_by_gcv(ridge_table[list(GCV_SELECTION_COLUMNS)])
    read = risk_at_selected_lambda(loaded, selected)
    np.testing.assert_allclose(read["test_risk"], risk_at_selected_lambda(ridge_table, selected)["test_risk"], rtol=1e-9)


def test_risk_vs_n_at_fixed_lambda_matches_groupby(ridge_table):
    wanted = LAMBDA_REL[[2, 5]] * (1 + 1e-12)  # tolerant match, as after a CSV round trip
    curves = risk_vs_n_at_fixed_lambda(ridge_table, wanted)
    assert list(curves.columns) == ["lambda_rel", "n", "risk_mean", "risk_std", "n_seeds"]
    for value, target in zip(wanted, LAMBDA_REL[[2, 5]]):
        rows = ridge_table[ridge_table["lambda_rel"] == target]
        expected = rows.groupby("n")["test_risk"].agg(["mean", "std"])
        got = curves[curves["lambda_rel"] == value].set_index("n")
        np.testing.assert_allclose(got["risk_mean"], expected["mean"], rtol=1e-14)
        np.testing.assert_allclose(got["risk_std"], expected["std"], rtol=1e-12)
    with pytest.raises(ValueError, match="lambda_rel"):
        risk_vs_n_at_fixed_lambda(ridge_table, [0.123])


def predictions_table(mu, beta_sq, ns, lambdas):
    de = deterministic_equivalent(mu, beta_sq, np.asarray(ns, float)[:, None], lambdas[None, :], noise_var=0.05)
    n_grid, lam_grid = np.meshgrid(ns, lambdas, indexing="ij")
    return pd.DataFrame(
        {"n": n_grid.ravel(), "lambda": lam_grid.ravel(), "lambda_over_kappa": de["lambda_over_kappa"].ravel()}
    )


def test_local_law_diagnostic_on_gaussian_features(gaussian_case):
    table, mu, beta_sq, lambdas = gaussian_case
    diag = local_law_diagnostic(table, predictions_table(mu, beta_sq, [100, 200, 400], lambdas))
    assert len(diag) == 3 * lambdas.size and set(diag["n_seeds"]) == {2}
    positive = diag["lambda"] > 0
    # independent: λ/κ versus the empirical 1 − tr(S)/n of the same ridge fits
    emp = table.groupby(["n", "lambda"])["dof"].mean().reset_index()
    one_minus = 1 - emp["dof"] / emp["n"]
    np.testing.assert_allclose(diag["one_minus_dof_over_n"], one_minus, rtol=1e-12)
    # the local law holds for Gaussian features: within a few percent
    assert diag.loc[positive & (diag.n >= 200), "dof_rel_dev"].max() < 0.05
    # the DE predicts train/test risk too (m = 400 test points, so looser)
    assert diag.loc[positive & (diag.n >= 200), "train_test_rel_dev"].median() < 0.1


def test_local_law_table_is_the_diagnostic_of_each_kernel_at_positive_ridges(gaussian_case):
    table, mu, beta_sq, lambdas = gaussian_case
    preds = predictions_table(mu, beta_sq, [100, 200, 400], lambdas)
    one = table.merge(preds, on=["n", "lambda"], how="left")
    other = one.assign(test_risk=2 * one["test_risk"], lambda_over_kappa=0.5 * one["lambda_over_kappa"])
    keys = dict(dataset="d", weights="init", kernel="features")
    joined = pd.concat([one.assign(backbone="a", **keys), other.assign(backbone="b", **keys)], ignore_index=True)
    got = local_law_table(joined.sample(frac=1.0, random_state=0))  # row order must not matter
    assert list(got.columns[:4]) == ["dataset", "backbone", "weights", "kernel"]
    for backbone, rows in (("a", one), ("b", other)):
        positive = rows[rows["lambda_rel"] > 0]
        want = local_law_diagnostic(positive, positive[["n", "lambda", "lambda_over_kappa"]].drop_duplicates())
        mine = got[got["backbone"] == backbone].drop(columns=list(got.columns[:4])).reset_index(drop=True)
        pd.testing.assert_frame_equal(mine, want, check_exact=False, rtol=1e-12)
    assert (got["lambda"] > 0).all() and len(got) == 2 * 3 * int((LAMBDA_REL > 0).sum())


def test_train_over_gcv_is_one_minus_dof_over_n_squared(ridge_table):
    one_seed = ridge_table[ridge_table.seed == 0]
    ns = sorted(one_seed["n"].unique())
    lambdas = np.sort(one_seed["lambda"].unique())
    preds = pd.DataFrame(
        {"n": np.repeat(ns, lambdas.size), "lambda": np.tile(lambdas, len(ns)), "lambda_over_kappa": 0.5}
    )
    diag = local_law_diagnostic(one_seed, preds)
    positive = diag["lambda"] > 0
    np.testing.assert_allclose(
        diag.loc[positive, "train_over_gcv"], diag.loc[positive, "one_minus_dof_over_n"] ** 2, rtol=1e-10
    )
    np.testing.assert_allclose(diag["dof_rel_dev"], np.abs(diag["one_minus_dof_over_n"] - 0.5) / 0.5, rtol=1e-12)
    with pytest.raises(ValueError, match="predictions lack"):
        local_law_diagnostic(one_seed, preds[preds["n"] != ns[0]])
    with pytest.raises(ValueError, match="'dof'"):
        local_law_diagnostic(one_seed.drop(columns="dof"), preds)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda t: fit_scaling_exponent([100, 200, -5], [1, 2, 3]), "x must be finite and positive"),
        (lambda t: fit_scaling_exponent([100, 200, 400], [1, np.nan, 3]), "y contains NaN"),
        (lambda t: fit_scaling_exponent([100, 200], [1, 2, 3]), "same shape"),
        (lambda t: select_lambda_by_gcv(t[["n", "seed", "lambda", "gcv"]].assign(gcv=np.nan)), "'gcv' contains NaN"),
        (lambda t: select_lambda_by_gcv(t[["n", "seed", "lambda", "gcv"]].to_numpy()), "gcv_table must be a pandas"),
        (lambda t: risk_vs_n_at_fixed_lambda(t, [-1.0]), "lambda_rel must be finite"),
        (lambda t: risk_at_selected_lambda(t, t[["n", "seed"]]), "selected lacks the columns \\['lambda'\\]"),
    ],
)
def test_validation_errors_name_the_argument(ridge_table, call, match):
    with pytest.raises(ValueError, match=match):
        call(ridge_table)


def test_excess_exponent_with_a_free_floor_recovers_a_planted_curve():
    n = np.geomspace(100, 20000, 9)
    fit = fit_excess_exponent(n, 0.31 + 2.0 * n**-0.64)
    assert fit["r_inf"] == pytest.approx(0.31, rel=1e-4) and fit["exponent"] == pytest.approx(0.64, rel=1e-3)
    assert fit["r2"] > 0.999999 and fit["n_points"] == 9
    # no floor: the fit finds (almost) none, and the exponent of the pure power law
    pure = fit_excess_exponent(n, 3.0 * n**-0.5)
    assert pure["r_inf"] < 1e-4 and pure["exponent"] == pytest.approx(0.5, rel=1e-3)
    # the total risk's exponent is far below the excess's when a floor is present
    assert fit_scaling_exponent(n, 0.31 + 2.0 * n**-0.64)["exponent"] < 0.2
    with pytest.raises(ValueError, match="fewer than 4"):
        fit_excess_exponent(n[:3], n[:3] ** -1.0)


def test_oracle_is_the_resolved_argmin_of_the_test_risk(ridge_table):
    flagged = ridge_table.assign(resolved=ridge_table["lambda_rel"] != ridge_table["lambda_rel"].min())
    oracle = oracle_lambdas(flagged)
    for (n, seed), group in flagged[flagged.resolved].groupby(["n", "seed"]):
        best = group.loc[group["test_risk"].idxmin(), "lambda"]
        assert oracle.set_index(["n", "seed"]).loc[(n, seed), "lambda"] == best
    assert not oracle["lambda"].isin(flagged.loc[~flagged.resolved, "lambda"]).any()


def regime_grid(noise_var, ns=(100, 200, 400, 800), d=4000):
    k = np.arange(1, d + 1.0)
    mu, b2 = k**-1.5, k**-2.0
    lambdas = np.geomspace(1e-7, 1.0, 40)
    de = deterministic_equivalent(mu, b2, np.asarray(ns, float)[:, None], lambdas[None, :], noise_var=noise_var)
    n_grid, lam_grid = np.meshgrid(ns, lambdas, indexing="ij")
    return pd.DataFrame({"n": n_grid.ravel(), "lambda": lam_grid.ravel(),
                         **{f"omniscient_{key}": de[key].ravel() for key in ("test_risk", "excess_bias", "excess_noise")}})


def test_regime_follows_the_floor():
    """μ_k = k^-1.5, ||β_k||² = k^-2 (ρ = 1): without a floor the DE-optimal excess is all
    bias; with a large one the floor's share approaches ρ/(1 + ρ) = 1/2 (noisy regime)."""
    clean = de_regime(regime_grid(0.0), 100, 800, 1.0)
    assert clean["regime"] == "noiseless" and clean["noise_share_hi"] == 0.0
    noisy = de_regime(regime_grid(2.0), 100, 800, 1.0)
    assert noisy["regime"] == "noisy" and 0.25 <= min(noisy["noise_share_lo"], noisy["noise_share_hi"]) < 0.6
    # the share at the DE-optimal ridge, recomputed
    grid = regime_grid(2.0)
    best = grid.loc[grid[grid.n == 800]["omniscient_test_risk"].idxmin()]
    share = best.omniscient_excess_noise / (best.omniscient_excess_bias + best.omniscient_excess_noise)
    assert noisy["noise_share_hi"] == pytest.approx(share, rel=1e-12)
    # a small floor: bias dominates at small n, the floor at large n
    assert de_regime(regime_grid(0.02, ns=(50, 1600)), 50, 1600, 1.0)["regime"] == "crossover"
    assert de_regime(regime_grid(2.0), 100, 800, np.nan)["regime"] == "unclassified"


def test_scaling_table_reports_rates_only_at_selected_ridges_of_valid_fits(gaussian_case):
    table, mu, beta_sq, lambdas = gaussian_case
    ns = [100, 200, 400]
    de = deterministic_equivalent(mu, beta_sq, np.asarray(ns, float)[:, None], lambdas[None, :], noise_var=0.05)
    n_grid, lam_grid = np.meshgrid(ns, lambdas, indexing="ij")
    keys = dict(dataset="d", backbone="b", weights="init", kernel="features")
    predictions = pd.DataFrame({**keys, "n": n_grid.ravel(), "lambda": lam_grid.ravel(),
                                "lambda_rel": np.tile(LAMBDA_REL, len(ns)),
                                **{f"omniscient_{k}": de[k].ravel() for k in ("test_risk", "excess_bias", "excess_noise")}})
    joined = table.assign(**keys).merge(predictions[["n", "lambda_rel", "omniscient_test_risk"]], on=["n", "lambda_rel"])
    floor = 0.05
    fit = dict(keys, primary=True, alpha=1.4, delta=1.9, valid=True, noiseless_rate=0.9, noisy_rate=0.9 / 1.9,
               null_mass=floor)
    fixed = f"{LAMBDA_REL[3]:g}"
    out = scaling_table(joined, pd.DataFrame([fit]), predictions, [LAMBDA_REL[3]], 100, None).set_index("ridge")
    assert list(out.index) == ["oracle", "gcv", fixed]
    assert out.loc[fixed, "regime"] == "saturating" and np.isnan(out.loc[fixed, "predicted_rate"])
    assert np.isnan(out.loc[fixed, "excess_exponent"]) and np.isfinite(out.loc[fixed, "observed_exponent"])
    # the GCV row's excess exponent, from the ridge rows directly
    chosen = table.loc[table[table.resolved].groupby(["n", "seed"])["gcv"].idxmin()]
    curve = chosen.groupby("n")["test_risk"].mean() - floor
    slope = np.polyfit(np.log(curve.index), np.log(curve.to_numpy()), 1)[0]
    assert out.loc["gcv", "excess_exponent"] == pytest.approx(-slope, rel=1e-10)
    regime = out.loc["gcv", "regime"]
    want = {"noiseless": 0.9, "noisy": 0.9 / 1.9}.get(regime, np.nan)
    np.testing.assert_allclose(out.loc["gcv", "predicted_rate"], want)
    invalid = scaling_table(joined, pd.DataFrame([{**fit, "valid": False}]), predictions, [LAMBDA_REL[3]], 100, None)
    assert invalid["predicted_rate"].isna().all() and invalid["noiseless_rate"].isna().all()
