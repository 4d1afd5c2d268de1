"""Estimator accuracy by regime, GCV beside the local law, and the claims table, on
constructed tables whose answers are known or recomputed with pandas and scipy."""

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from rmtlens.report import (
    RIDGE_BUCKETS,
    estimator_accuracy_by_regime,
    gcv_beside_local_law,
    local_law_predicts_gcv,
    ridge_bucket,
    scaling_claims,
)
from rmtlens.report.claims import gcv_regime_claims, power_law_claims, power_law_de_claims, rate_claims

KEYS = dict(dataset="d", backbone="b", weights="init", kernel="entk")
LAMBDAS = np.array([0.0, 1e-4, 1e-2, 0.5])


def ridge_rows(seed=0, n_values=(100, 400, 900), seeds=(0, 1, 2)):
    """A ridge table with GCV 30% low at small ridges and exact elsewhere; LOO 5% high."""
    rng = np.random.default_rng(seed)
    rows = []
    for n in n_values:
        for s in seeds:
            risk = 1.0 + rng.random(LAMBDAS.size)
            gcv = np.where(LAMBDAS < 1e-3, 0.7, 1.0) * risk
            rows.append(pd.DataFrame({**KEYS, "n": n, "seed": s, "lambda_rel": LAMBDAS, "lambda": LAMBDAS * 3.0,
                                      "test_risk": risk, "gcv": gcv, "loo": 1.05 * risk, "resolved": True}))
    return pd.concat(rows, ignore_index=True)


def test_ridge_buckets():
    labels = ridge_bucket([0.0, 1e-6, 1e-3, 0.05, 0.1, 10.0])
    first, middle, last = (label for label, _, _ in RIDGE_BUCKETS)
    assert list(labels) == [first, first, middle, middle, last, last]
    with pytest.raises(ValueError, match="non-negative"):
        ridge_bucket([-1.0])


def test_accuracy_by_regime_against_pandas():
    table = ridge_rows()
    table.loc[5, "resolved"] = False
    out = estimator_accuracy_by_regime(table, {"d": 1000}, 100, {"gcv": "GCV", "loo": "LOO"}, n_boot=200, seed=1)
    rows = table[table.resolved].copy()
    rows["bucket"] = ridge_bucket(rows.lambda_rel)
    rows["frac"] = pd.cut(rows.n / 1000, [0, 0.1, 0.25, 0.5, 1.0])
    for (bucket, frac), group in rows.groupby(["bucket", "frac"], observed=True):
        cell = out[(out.estimator == "GCV") & (out.ridge_bucket == bucket) & (out.n_over_pool_hi == frac.right)]
        assert len(cell) == 1 and cell.iloc[0]["rows"] == len(group)
        err = (group.gcv - group.test_risk) / group.test_risk
        assert cell.iloc[0]["median_rel_error"] == pytest.approx(np.median(np.abs(err)), rel=1e-12)
        assert cell.iloc[0]["median_signed_error"] == pytest.approx(np.median(err), rel=1e-12)
        c = cell.iloc[0]
        assert c.median_rel_error_lo <= c.median_rel_error <= c.median_rel_error_hi and c.seeds == 3
    small = out[(out.estimator == "GCV") & (out.ridge_bucket == RIDGE_BUCKETS[0][0])]
    assert np.allclose(small["median_signed_error"], -0.3)  # the planted failure, visible by bucket
    big = out[(out.estimator == "GCV") & (out.ridge_bucket == RIDGE_BUCKETS[2][0])]
    assert np.allclose(big["median_rel_error"], 0.0)
    # bootstrap intervals are not the point estimate when seeds differ
    noisy = table.assign(gcv=table.gcv * (1 + 0.2 * table.seed))
    spread = estimator_accuracy_by_regime(noisy, {"d": 1000}, 100, {"gcv": "GCV"}, n_boot=200, seed=1)
    assert (spread.median_rel_error_hi - spread.median_rel_error_lo > 0.05).all()
    with pytest.raises(ValueError, match="no N_pool"):
        estimator_accuracy_by_regime(table, {"x": 10}, 100, {"gcv": "GCV"})


def test_gcv_beside_local_law_matches_rows_whose_ridge_differs_by_round_off():
    table = ridge_rows()
    positive = table[table.lambda_rel > 0]
    local = positive.groupby(["n", "lambda"]).size().reset_index()[["n", "lambda"]].assign(**KEYS)
    local["lambda"] = local["lambda"] * (1 + 2e-16)  # a mean over seeds, off in the last bit
    rng = np.random.default_rng(3)
    local["dof_rel_dev"] = rng.random(len(local))
    local["train_test_rel_dev"] = rng.random(len(local))
    out = gcv_beside_local_law(table, local, 100)
    assert len(out) == len(local)
    for _, row in out.iterrows():
        part = positive[(positive.n == row.n) & (positive.lambda_rel == row.lambda_rel)]
        assert row.gcv_rel_error == pytest.approx(np.mean(np.abs(part.gcv - part.test_risk) / part.test_risk))
        assert row.gcv_minus_loo == pytest.approx(np.mean((part.gcv - part.loo) / part.loo))
        want = local[(local.n == row.n) & np.isclose(local["lambda"], row["lambda"])]["dof_rel_dev"].iloc[0]
        assert row.dof_rel_dev == want
    with pytest.raises(ValueError, match="lacks rows"):
        gcv_beside_local_law(table, local[local.n != 400], 100)


def test_local_law_predicts_gcv_against_scipy():
    rng = np.random.default_rng(4)
    dev = rng.random(60) * 0.3
    beside = pd.DataFrame({**KEYS, "dof_rel_dev": dev, "gcv_rel_error": dev**2 + 0.01 * rng.random(60),
                           "gcv_minus_loo": -dev})
    out = local_law_predicts_gcv(beside, 0.1).iloc[0]
    assert out.spearman_dof_gcv == pytest.approx(spearmanr(dev, beside.gcv_rel_error).statistic, rel=1e-12)
    assert out.spearman_dof_gap == pytest.approx(1.0)
    assert out.rows_local_law_holds == (dev <= 0.1).sum()
    assert out.gcv_error_local_law_holds == pytest.approx(np.median(beside.gcv_rel_error[dev <= 0.1]))
    assert out.gcv_error_local_law_fails > out.gcv_error_local_law_holds


def fits_row(**changes):
    row = dict(KEYS, window="rank", primary=True, k_min=2, k_max=50, alpha=1.31, alpha_r2=0.991, alpha_lo=1.2,
               alpha_hi=1.4, delta=1.72, delta_r2=0.987, delta_lo=1.6, delta_hi=1.8, valid=True, reason="", rank=200,
               n_pool=1000, rank_fraction=0.2, out_of_span_share=0.3456)
    row.update(changes)
    return pd.DataFrame([row])


def test_power_law_claims_state_the_fit_and_its_validity():
    good, bad = power_law_claims(fits_row()), power_law_claims(fits_row(valid=False, reason="delta R² < 0.95"))
    fit_claim, span = good
    assert fit_claim["claim"] == "power_law_fit" and fit_claim["value"] == 1.72
    assert "α = 1.31" in fit_claim["statement"] and "δ = 1.72" in fit_claim["statement"]
    assert "the fit is valid" in fit_claim["statement"] and "not valid (delta R² < 0.95)" in bad[0]["statement"]
    assert "resolves 200 of 1000" in span["statement"] and "34.6%" in span["statement"]


def test_power_law_de_claim_direction_follows_the_numbers():
    def table(ideal, cut):
        return pd.DataFrame([dict(KEYS, estimator=e, median_rel_error=v) for e, v in
                             (("omniscient DE", 0.05), ("power-law DE (idealised)", ideal),
                              ("power-law DE (truncated)", cut))])
    lower = power_law_de_claims(table(0.9, 0.2))[0]
    assert lower["value"] == 0.2 and "truncation lowers" in lower["statement"]
    assert "does not lower" in power_law_de_claims(table(0.2, 0.9))[0]["statement"]


def test_rate_and_gcv_claims():
    scaling = pd.DataFrame([dict(KEYS, ridge=r, floor=0.1, excess_exponent=0.5, excess_r2=0.99, excess_points=5,
                                 fit_n_min=100.0, r_inf_fit=0.09, excess_exponent_fit=0.52, observed_exponent=0.2,
                                 regime="noisy", noise_share_lo=0.4, noise_share_hi=0.45, fit_valid=valid,
                                 predicted_rate=0.6 if valid else np.nan, noiseless_rate=1.5, noisy_rate=0.6,
                                 rate_over_excess=1.2 if valid else np.nan)
                            for r, valid in (("gcv", True), ("oracle", False))] +
                           [dict(KEYS, ridge="0.01", regime="saturating")])
    claims = {c["claim"]: c for c in rate_claims(scaling)}
    assert set(claims) == {"excess_rate_gcv", "excess_rate_oracle"}
    assert "rate is 0.6, 1.2 times" in claims["excess_rate_gcv"]["statement"]
    assert "No rate is predicted" in claims["excess_rate_oracle"]["statement"]
    by_regime = pd.DataFrame([dict(KEYS, estimator=e, ridge_bucket=b, n_over_pool_lo=0.5, n_over_pool_hi=1.0,
                                   median_rel_error=m, median_rel_error_lo=m - 0.01, median_rel_error_hi=m + 0.01,
                                   median_signed_error=-m, rows=9)
                              for e, b, m in (("GCV", "λ/s < 1e-3", 0.35), ("GCV", "λ/s ≥ 1e-1", 0.01),
                                              ("LOO", "λ/s < 1e-3", 0.04))])
    worst = gcv_regime_claims(by_regime)[0]
    assert worst["value"] == 0.35 and "λ/s < 1e-3" in worst["statement"] and "(GCV low)" in worst["statement"]
    assert "LOO's median error there is 0.04" in worst["statement"]


def test_claims_table_has_one_row_per_statement():
    empty = pd.DataFrame(columns=[*KEYS, "estimator", "median_rel_error"])
    law = pd.DataFrame([dict(KEYS, rows=10, local_law_threshold=0.1, spearman_dof_gcv=0.7, spearman_dof_gap=0.6,
                             rows_local_law_holds=6, gcv_error_local_law_holds=0.01, gap_local_law_holds=0.0,
                             rows_local_law_fails=4, gcv_error_local_law_fails=0.2, gap_local_law_fails=0.1)])
    de_bias = pd.DataFrame([dict(KEYS, n_over_pool_lo=lo, n_over_pool_hi=hi, n_values="900",
                                 median_signed_error_small_ridge=v) for lo, hi, v in ((0.0, 0.5, 0.01), (0.5, 1.0, -0.2))])
    scaling = pd.DataFrame(columns=[*KEYS, "ridge"])
    by_regime = pd.DataFrame(columns=[*KEYS, "estimator"])
    claims = scaling_claims(fits_row(), empty, scaling, by_regime, law, de_bias)
    assert list(claims["claim"]) == ["power_law_fit", "out_of_span", "local_law_gcv", "de_bias"]
    bias = claims[claims.claim == "de_bias"].iloc[0]
    assert bias["value"] == -0.2 and "under-predicts" in bias["statement"]
