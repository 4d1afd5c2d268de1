"""Scaling-law, power-law and estimator-by-regime tables of the test-config DAG, and
every claim row, recomputed from the kernels and tables with independent code."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy.optimize import minimize_scalar
from scipy.stats import spearmanr

from conftest import TEST_CONFIG
from rmtlens.inputs import PreparedDataset
from rmtlens.io import load_npz
from test_workflow import kernel_matrix

pytestmark = pytest.mark.workflow

KEYS = ["dataset", "backbone", "weights", "kernel"]


def table(run, name):
    """A table of the run (CSV files hold 10 significant digits: comparisons with them are to 1e-9)."""
    path = run / f"results/tables/{name}"
    return pd.read_parquet(path) if name.endswith(".parquet") else pd.read_csv(path)


def test_new_tables_and_figures_exist(finished_run):
    for name in ("power_laws.csv", "estimators_by_regime.csv", "gcv_local_law.csv", "gcv_local_law_summary.csv",
                 "claims.csv", "scaling.csv"):
        assert len(table(finished_run, name)) > 0, name
    for name in ("power_laws", "gcv_local_law"):
        assert (finished_run / f"results/figures/{name}.png").stat().st_size > 10_000


def test_power_law_fit_recomputed_from_the_kernel(finished_run):
    """Rank, out-of-span share, α (weighted least squares) and δ (scipy's minimiser on the
    tail-sum misfit) of one kernel, from its kernel matrix and the stored accuracy floor."""
    fits = table(finished_run, "power_laws.csv")
    row = fits[(fits.backbone == "tresnet") & (fits.weights == "trained") & (fits.kernel == "entk") & fits.primary].iloc[0]
    data = PreparedDataset.from_arrays(load_npz(finished_run / "results/datasets/digits.npz"))
    N = data.n_pool
    K = kernel_matrix(finished_run, "digits", "tresnet", "trained", "entk")[:N]
    floor = float(load_npz(finished_run / "results/spectra/digits/tresnet/trained/entk/pool.npz")["floor"])
    D, V = np.linalg.eigh(K)
    order = np.argsort(-D)
    D, V = D[order], V[:, order]
    Y = np.eye(10)[data.labels[:N]] - 0.1
    b2 = np.sum((V.T @ Y) ** 2, axis=1) / N
    rank = int(np.sum(D > floor))
    assert row["rank"] == rank and row["n_pool"] == N
    assert row["out_of_span_share"] == pytest.approx(b2[rank:].sum() / b2.sum(), rel=1e-6, abs=1e-12)
    k_min, k_max = int(row["k_min"]), int(row["k_max"])
    assert (k_min, k_max) == (2, rank // 4)
    k = np.arange(k_min, k_max + 1.0)
    X = np.column_stack([np.ones_like(k), np.log(k)])
    W = np.diag(1 / k)
    coef = np.linalg.solve(X.T @ W @ X, X.T @ W @ np.log(D[k_min - 1 : k_max] / N))
    assert row["alpha"] == pytest.approx(-coef[1], rel=1e-6)
    tails = np.cumsum(b2[:rank][::-1])[::-1]
    ks = np.unique(np.round(np.geomspace(k_min, k_max, 40)).astype(int)) if k_max - k_min + 1 > 40 else np.arange(k_min, k_max + 1)
    j = np.arange(1, rank + 1.0)

    def misfit(d):
        r = np.log(tails[ks - 1]) - np.log([np.sum(j[kk - 1 :] ** -d) for kk in ks])
        return np.sum((r - r.mean()) ** 2)

    best = minimize_scalar(misfit, bounds=(row["delta"] - 0.5, row["delta"] + 0.5), method="bounded",
                           options={"xatol": 1e-10})
    assert row["delta"] == pytest.approx(best.x, abs=1e-5)
    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    valid = row["alpha"] > 1 and row["delta"] > 1 and min(row["alpha_r2"], row["delta_r2"]) >= cfg["theory"]["powerlaw_min_r2"]
    assert bool(row["valid"]) == (valid and row["points"] >= 8)


def test_excess_exponent_and_regime_cells_recomputed(finished_run):
    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    joined = table(finished_run, "theory.parquet")
    joined = joined[joined.resolved]
    scaling = table(finished_run, "scaling.csv")
    fits = table(finished_run, "power_laws.csv")
    n_lo = cfg["scaling"]["n_window"]["min"]
    checked = 0
    for keys, group in joined.groupby(KEYS):
        floor = fits.set_index(KEYS).loc[keys].query("primary")["null_mass"].iloc[0]
        chosen = group.loc[group.groupby(["n", "seed"])["gcv"].idxmin()]
        curve = chosen.groupby("n")["test_risk"].mean()
        curve = curve[curve.index >= n_lo]
        above = curve[curve > floor]
        got = scaling.set_index(KEYS).loc[keys].query("ridge == 'gcv'").iloc[0]
        assert got["floor"] == pytest.approx(floor, rel=1e-9, abs=1e-300)
        assert got["excess_points"] == len(above)
        if len(above) >= 3:
            slope = np.polyfit(np.log(above.index), np.log(above.to_numpy() - floor), 1)[0]
            assert got["excess_exponent"] == pytest.approx(-slope, rel=1e-8)
            checked += 1
        else:
            assert np.isnan(got["excess_exponent"])
        fixed = scaling.set_index(KEYS).loc[keys].query("selection == 'fixed (saturating)'")
        assert fixed["predicted_rate"].isna().all() and (fixed["regime"] == "saturating").all()
    # one estimator-by-regime cell: GCV at λ/s ≥ 1e-1, n ≥ n_min, from the rows themselves
    by_regime = table(finished_run, "estimators_by_regime.csv")
    rows = joined[(joined.backbone == "tvit") & (joined.kernel == "features") & (joined.n >= cfg["analysis"]["n_min"])
                  & (joined.lambda_rel >= 0.1)]
    cell = by_regime[(by_regime.backbone == "tvit") & (by_regime.kernel == "features") & (by_regime.estimator == "GCV")
                     & (by_regime.ridge_bucket == "λ/s ≥ 1e-1")]
    fraction = rows.n / cfg["datasets"]["digits"]["n_pool"]
    for _, c in cell.iterrows():
        part = rows[(fraction > c.n_over_pool_lo) & (fraction <= c.n_over_pool_hi)]
        assert c["rows"] == len(part)
        assert c["median_rel_error"] == pytest.approx(np.median(np.abs(part.gcv - part.test_risk) / part.test_risk), rel=1e-9)
        assert c["median_rel_error_lo"] <= c["median_rel_error"] + 1e-12 <= c["median_rel_error_hi"] + 2e-12
    assert len(cell) > 0


def test_local_law_summary_recomputed(finished_run):
    beside = table(finished_run, "gcv_local_law.csv")
    summary = table(finished_run, "gcv_local_law_summary.csv").set_index(KEYS)
    joined = table(finished_run, "theory.parquet")
    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    for keys, group in beside.groupby(KEYS):
        row = summary.loc[keys]
        rho = spearmanr(group["dof_rel_dev"], group["gcv_rel_error"]).statistic
        assert row["spearman_dof_gcv"] == pytest.approx(rho, rel=1e-9, abs=1e-12) or (np.isnan(rho) and np.isnan(row["spearman_dof_gcv"]))
        holds = group["dof_rel_dev"] <= row["local_law_threshold"]
        assert row["rows_local_law_holds"] == holds.sum()
    # one (n, λ) of the table against the ridge rows
    g = beside.iloc[len(beside) // 2]
    rows = joined[(joined[KEYS] == g[KEYS]).all(axis=1) & (joined.n == g.n) & np.isclose(joined.lambda_rel, g.lambda_rel)
                  & joined.resolved]
    assert g["n"] >= cfg["analysis"]["n_min"] and g["seeds"] == len(rows)
    assert g["gcv_rel_error"] == pytest.approx(np.mean(np.abs(rows.gcv - rows.test_risk) / rows.test_risk), rel=1e-9)
    assert g["gcv_minus_loo"] == pytest.approx(np.mean((rows.gcv - rows.loo) / rows.loo), rel=1e-9)


def fmt(x):
    return "nan" if not np.isfinite(x) else f"{x:.3g}"


def test_every_claim_is_recomputed_from_its_table(finished_run):
    """Each claim's number, recomputed here from the table it cites, must be the claim's
    value and appear in its sentence; every kernel gets every kind of claim it can."""
    claims = table(finished_run, "claims.csv")
    fits = table(finished_run, "power_laws.csv")
    estimators = table(finished_run, "estimators.csv")
    scaling = table(finished_run, "scaling.csv")
    by_regime = table(finished_run, "estimators_by_regime.csv")
    law = table(finished_run, "gcv_local_law_summary.csv")
    de_bias = table(finished_run, "de_bias.csv")
    kernels = fits[KEYS].drop_duplicates()
    assert len(claims) > 0 and claims["statement"].str.len().min() > 40

    def at(frame, keys):
        return frame[(frame[KEYS] == pd.Series(keys, index=KEYS)).all(axis=1)]

    for _, claim in claims.iterrows():
        keys = tuple(claim[KEYS])
        kind, text = claim["claim"], claim["statement"]
        if kind == "power_law_fit":
            fit = at(fits, keys).query("primary").iloc[0]
            expected = fit["delta"]
            for number in (fit["alpha"], fit["delta"], fit["alpha_r2"], fit["delta_r2"]):
                assert fmt(number) in text
            assert ("fit is valid" in text) == bool(fit["valid"])
        elif kind == "out_of_span":
            fit = at(fits, keys).query("primary").iloc[0]
            expected = fit["out_of_span_share"]
            assert f"resolves {int(fit['rank'])} of {int(fit['n_pool'])}" in text and fmt(100 * expected) in text
        elif kind == "power_law_de":
            med = at(estimators, keys).set_index("estimator")["median_rel_error"]
            expected = med["power-law DE (truncated)"]
            assert fmt(med["power-law DE (idealised)"]) in text and fmt(med["omniscient DE"]) in text
            full_rank = at(estimators, keys)["rank_fraction"].iloc[0] == 1.0
            if full_rank:
                assert "truncation changes nothing" in text
            else:
                assert ("does not lower" in text) == (med["power-law DE (truncated)"] >= med["power-law DE (idealised)"])
        elif kind.startswith("excess_rate_"):
            row = at(scaling, keys).set_index("ridge").loc[kind.removeprefix("excess_rate_")]
            expected = row["excess_exponent"]
            assert fmt(row["observed_exponent"]) in text
            if row["regime"] == "unclassified":
                assert "regime is not classified" in text and not row["fit_valid"]
            else:
                assert f"the {row['regime']} regime" in text
            if row["fit_valid"] and np.isfinite(row["predicted_rate"]) and np.isfinite(row["excess_exponent"]):
                assert fmt(row["predicted_rate"]) in text and fmt(row["predicted_rate"] / row["excess_exponent"]) in text
        elif kind == "gcv_worst":
            gcv = at(by_regime, keys).query("estimator == 'GCV'")
            worst = gcv.loc[gcv["median_rel_error"].idxmax()]
            expected = worst["median_rel_error"]
            assert worst["ridge_bucket"] in text and fmt(worst["median_signed_error"]) in text
            assert claim["lo"] == pytest.approx(worst["median_rel_error_lo"]) and claim["hi"] == pytest.approx(worst["median_rel_error_hi"])
        elif kind == "local_law_gcv":
            row = at(law, keys).iloc[0]
            expected = row["spearman_dof_gcv"]
            assert fmt(row["gcv_error_local_law_holds"]) in text and fmt(row["gcv_error_local_law_fails"]) in text
        elif kind == "de_bias":
            rows = at(de_bias, keys)
            last = rows.loc[rows["n_over_pool_hi"].idxmax()]
            expected = last["median_signed_error_small_ridge"]
            assert ("under-predicts" in text) == (expected < 0)
        else:
            raise AssertionError(f"unknown claim {kind}")
        if np.isfinite(expected):
            assert claim["value"] == pytest.approx(expected, rel=1e-12), (keys, kind)
            assert fmt(expected if kind != "out_of_span" else 100 * expected) in text, (kind, text)
        else:
            assert np.isnan(claim["value"])
    per_kernel = claims.groupby(KEYS)["claim"].apply(set)
    for _, keys in kernels.iterrows():
        kinds = per_kernel.loc[tuple(keys)]
        assert {"power_law_fit", "out_of_span", "excess_rate_gcv", "excess_rate_oracle", "gcv_worst",
                "local_law_gcv"} <= kinds, tuple(keys)
