"""Power-law fits (α on eigenvalues, δ on tail sums), the two power-law DEs, and the
rates of the excess risk, against exact power laws and brute-force minimisation."""

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from rmtlens.estimators import (
    deterministic_equivalent,
    fit_eigenvalue_exponent,
    fit_spectrum_power_laws,
    fit_tail_exponent,
    idealised_spectra,
    noiseless_rate,
    noisy_rate,
    power_law_tails,
    power_law_values,
    power_law_windows,
    predict_grid,
    truncated_spectra,
)

LAWS = [(1.4, 2.3), (1.1, 1.6), (2.2, 5.0)]


def exact_law(alpha, delta, rank, n_terms, null_mass=0.0, A=2.0, B=0.7):
    """μ_k = A k^-α, ||β_k||² = B k^-δ for k ≤ rank, zero eigenvalues beyond with
    ``null_mass`` of target power on them (written out independently of the module)."""
    k = np.arange(1, n_terms + 1, dtype=np.float64)
    mu = np.where(k <= rank, A * k**-alpha, 0.0)
    b2 = np.where(k <= rank, B * k**-delta, 0.0)
    if rank < n_terms:
        b2[rank:] = null_mass / (n_terms - rank)  # spread over the null space: any split gives the same DE
    return mu, b2


@pytest.mark.parametrize("alpha, delta", LAWS)
@pytest.mark.parametrize("rank, null_mass", [(3000, 0.0), (700, 0.0), (700, 0.8)])
def test_fits_recover_exact_power_laws_in_every_window(alpha, delta, rank, null_mass):
    mu, b2 = exact_law(alpha, delta, rank, 3000, null_mass)
    windows = power_law_windows(rank, (2, 100), (100, 2000))
    assert windows == {"fixed": (2, 100), "rank": (2, rank // 4), "n_range": (50, min(2000, rank // 2))}
    for name, (k_min, k_max) in windows.items():
        fit = fit_spectrum_power_laws(mu, b2, k_min, k_max)
        assert fit["alpha"] == pytest.approx(alpha, rel=1e-9), name
        assert fit["delta"] == pytest.approx(delta, rel=1e-6), name  # the tail sums' law is exact up to the rank
        assert fit["A"] == pytest.approx(2.0, rel=1e-8) and fit["B"] == pytest.approx(0.7, rel=1e-5)
        assert fit["alpha_r2"] == pytest.approx(1.0) and fit["delta_r2"] == pytest.approx(1.0)
        assert fit["alpha_lo"] == pytest.approx(alpha, rel=1e-9) and fit["delta_hi"] == pytest.approx(delta, rel=1e-6)
        assert fit["valid"] and fit["reason"] == ""
        assert fit["noiseless_rate"] == pytest.approx(min(delta - 1, 2 * alpha), rel=1e-6)


@pytest.mark.parametrize("alpha, delta", [(1.37, 2.21), (1.8, 1.48)])
def test_fits_recover_planted_exponents_within_2_percent_under_scatter(alpha, delta):
    """Per-mode scatter as real targets show (β_k² varies by a factor e^±0.5 between
    neighbours, some modes carry nothing): the tail sums average it out."""
    rng = np.random.default_rng(30)
    K, rank = 5000, 4000
    mu, b2 = exact_law(alpha, delta, rank, K, 0.3, A=3.0, B=0.5)
    mu[:rank] *= np.exp(0.2 * rng.standard_normal(rank))
    mu[:rank] = np.sort(mu[:rank])[::-1]
    b2[:rank] *= np.exp(0.5 * rng.standard_normal(rank))
    b2[rng.choice(np.arange(20, 3000), 40, replace=False)] = 0.0
    fit = fit_spectrum_power_laws(mu, b2, 10, 1000)
    assert fit["alpha"] == pytest.approx(alpha, rel=0.02)
    assert fit["delta"] == pytest.approx(delta, rel=0.02)
    assert 0.9 < fit["delta_r2"] <= 1 and fit["alpha_lo"] <= fit["alpha"] <= fit["alpha_hi"]
    # the scattered per-mode values themselves follow a line far less closely (the fragile
    # per-mode fit this replaces); their tail sums are smooth
    k = np.arange(10, 1001)
    keep = b2[k - 1] > 0
    x, y = np.log(k[keep]), np.log(b2[k - 1][keep])
    resid = y - np.polyval(np.polyfit(x, y, 1), x)
    assert 1 - resid.var() / y.var() < fit["delta_r2"]


def test_tail_fit_against_brute_force_least_squares():
    """δ minimises Σ (log S(k) − log B − log Σ_{j≥k} j^-δ)² over the fitted k: check against
    scipy's bounded minimiser on a noisy target."""
    rng = np.random.default_rng(3)
    rank = 900
    b2 = 0.5 * np.arange(1, rank + 1.0) ** -1.9 * rng.exponential(1.0, rank)
    fit = fit_tail_exponent(b2, rank, 5, 400)
    tails = np.cumsum(b2[::-1])[::-1]
    ks = np.unique(np.round(np.geomspace(5, 400, 40)).astype(int))
    j = np.arange(1, rank + 1.0)

    def misfit(d):
        g = np.array([np.sum(j[k - 1 :] ** -d) for k in ks])
        r = np.log(tails[ks - 1]) - np.log(g)
        return np.sum((r - r.mean()) ** 2)

    best = minimize_scalar(misfit, bounds=(0.5, 4.0), method="bounded", options={"xatol": 1e-10})
    assert fit["delta"] == pytest.approx(best.x, abs=1e-6)
    assert fit["n_points"] == ks.size
    assert power_law_tails(fit["B"], fit["delta"], ks, rank) == pytest.approx(
        fit["B"] * np.array([np.sum(j[k - 1 :] ** -fit["delta"]) for k in ks]), rel=1e-12)


def test_invalid_fits_are_flagged_and_give_no_rate():
    k = np.arange(1, 801, dtype=np.float64)
    flat = fit_spectrum_power_laws(k**-0.8, k**-1.5, 2, 200)  # α ≤ 1
    assert not flat["valid"] and "alpha <= 1" in flat["reason"] and np.isnan(flat["noiseless_rate"])
    slow = fit_spectrum_power_laws(k**-1.5, k**-0.7, 2, 200)  # δ ≤ 1
    assert not slow["valid"] and "delta <= 1" in slow["reason"] and np.isnan(slow["noisy_rate"])
    rng = np.random.default_rng(0)
    rough = fit_spectrum_power_laws(k**-1.5 * np.exp(rng.standard_normal(800)), k**-2.0, 2, 200)
    assert not rough["valid"] and "alpha R² < 0.95" in rough["reason"]
    narrow = fit_spectrum_power_laws(k**-1.5, k**-2.0, 2, 6)
    assert not narrow["valid"] and "fewer than 8 points" in narrow["reason"]
    beyond = fit_spectrum_power_laws(np.where(k <= 50, k**-1.5, 0.0), k**-2.0, 2, 100)
    assert not beyond["valid"] and np.isnan(beyond["alpha"]) and "rank 50" in beyond["reason"]


def test_weighted_eigenvalue_fit_against_an_explicit_weighted_solve():
    rng = np.random.default_rng(5)
    mu = np.arange(1, 301.0) ** -1.3 * np.exp(0.1 * rng.standard_normal(300))
    fit = fit_eigenvalue_exponent(mu, 3, 250)
    k = np.arange(3, 251.0)
    W = np.diag(1 / k)
    X = np.column_stack([np.ones_like(k), np.log(k)])
    coef = np.linalg.solve(X.T @ W @ X, X.T @ W @ np.log(mu[2:250]))
    assert fit["alpha"] == pytest.approx(-coef[1], rel=1e-10) and fit["A"] == pytest.approx(np.exp(coef[0]), rel=1e-10)


def pool_inputs(mu, b2):
    """Pool eigenvalues and projections whose population (μ, ||β||²) is the given one."""
    n_pool = mu.size
    return mu * n_pool, np.sqrt(b2 * n_pool)[:, None]


@pytest.mark.parametrize("null_mass", [0.0, 0.8])
def test_truncated_power_law_de_equals_the_omniscient_de_on_an_exact_law(null_mass):
    rank, n_pool = 500, 1200
    mu, b2 = exact_law(1.5, 2.2, rank, n_pool, null_mass)
    D, P = pool_inputs(mu, b2)
    sizes, lambdas = [20, 100, 400, 1000], np.r_[0.0, np.geomspace(1e-6, 1.0, 7)]
    grid, fits, _ = predict_grid(D, P, np.eye(1), sizes, lambdas, (2, 100), (100, 1000), "rank", floor=0.0)
    np.testing.assert_allclose(grid["truncated_powerlaw_test_risk"], grid["omniscient_test_risk"], rtol=1e-8)
    primary = next(f for f in fits if f["primary"])
    assert primary["window"] == "rank" and primary["rank"] == rank
    assert primary["out_of_span_share"] == pytest.approx(null_mass / b2.sum(), rel=1e-12)
    assert primary["fitted_in_span_power"] == pytest.approx(b2[:rank].sum(), rel=1e-6)
    # the idealised DE spreads the laws over all N_pool directions and drops the floor
    mu_i, b2_i = idealised_spectra(primary, n_pool)
    ideal = deterministic_equivalent(mu_i, b2_i, np.repeat(sizes, lambdas.size),
                                     np.tile(lambdas * grid["lambda"][1] / lambdas[1], len(sizes)))["test_risk"]
    np.testing.assert_allclose(grid["powerlaw_test_risk"], ideal, rtol=1e-12)
    if null_mass > 0:  # the floor is what the idealisation misses at large n
        big = grid["n"] == 1000
        assert np.all(grid["powerlaw_test_risk"][big] < grid["omniscient_test_risk"][big] - 0.5 * null_mass)


def test_truncated_spectra_keep_the_laws_up_to_the_rank_and_the_null_mass():
    fit = {"A": 2.0, "alpha": 1.5, "B": 0.7, "delta": 2.2}
    mu, b2 = truncated_spectra(fit, 40, 0.3, 100)
    k = np.arange(1, 41.0)
    np.testing.assert_allclose(mu[:40], 2.0 * k**-1.5, rtol=1e-14)
    np.testing.assert_allclose(b2[:40], 0.7 * k**-2.2, rtol=1e-14)
    assert np.all(mu[40:] == 0) and b2[40:].sum() == pytest.approx(0.3)
    with pytest.raises(ValueError, match="n_terms must exceed the rank"):
        truncated_spectra(fit, 100, 0.3, 100)
    np.testing.assert_allclose(power_law_values(0.7, 2.2, 40), b2[:40], rtol=1e-14)


def optimal_excess_risk(mu, b2, n, noise_var=0.0):
    """The DE at its optimal ridge (scipy's bounded search in log λ) minus its floor."""
    risk = lambda t: float(deterministic_equivalent(mu, b2, n, np.exp(t), noise_var=noise_var)["test_risk"])  # noqa: E731
    best = minimize_scalar(risk, bounds=(np.log(1e-12), np.log(10.0)), method="bounded", options={"xatol": 1e-6})
    floor = float(deterministic_equivalent(mu, b2, n, 1.0, noise_var=noise_var)["floor"])
    return risk(best.x) - floor


@pytest.mark.parametrize(
    "alpha, delta, noise_var, null_mass, regime",
    [(1.5, 2.0, 0.0, 0.0, "noiseless"), (1.5, 2.0, 1.0, 0.0, "noisy"), (1.2, 2.5, 0.0, 1.0, "noisy"),
     (2.0, 2.5, 0.5, 0.0, "noisy")],
)
def test_excess_risk_at_the_optimal_ridge_decays_at_the_regime_rate(alpha, delta, noise_var, null_mass, regime):
    """Noiseless: ``n^-min(δ−1, 2α)``; with a floor (label noise, or out-of-span power on
    null directions): ``n^-ρ/(1+ρ)`` (Cui et al. 2021). Within 5% over n = 100..1000."""
    K = 20_000
    mu, b2 = exact_law(alpha, delta, K, K + (null_mass > 0), null_mass, A=1.0, B=1.0)
    ns = np.geomspace(100, 1000, 5)
    excess = np.array([optimal_excess_risk(mu, b2, n, noise_var) for n in ns])
    slope = -np.polyfit(np.log(ns), np.log(excess), 1)[0]
    want = noiseless_rate(alpha, delta) if regime == "noiseless" else noisy_rate(alpha, delta)
    assert slope == pytest.approx(want, rel=0.05)
    other = noisy_rate(alpha, delta) if regime == "noiseless" else noiseless_rate(alpha, delta)
    assert abs(slope - want) < abs(slope - other)


def test_excess_parts_sum_to_the_risk_above_its_floor():
    mu, b2 = exact_law(1.3, 1.9, 300, 400, 0.4)
    de = deterministic_equivalent(mu, b2, np.array([50.0, 250.0, 600.0]), np.array([1e-4, 1e-3, 0.0]), noise_var=0.2)
    assert np.all(de["floor"] == pytest.approx(0.6))
    np.testing.assert_allclose(de["excess_bias"] + de["excess_noise"], de["test_risk"] - de["floor"], rtol=1e-12)
    # ridgeless above the rank: κ = 0, the in-span part is learned, the floor inflated by 1/(1 − rank/n)
    assert de["excess_bias"][2] == 0.0
    assert de["test_risk"][2] == pytest.approx(0.6 / (1 - 300 / 600), rel=1e-12)


def test_rates_and_validation():
    assert noiseless_rate(1.5, 2.0) == 1.0 and noiseless_rate(0.4, 3.0) == pytest.approx(0.8)
    assert noisy_rate(1.5, 2.0) == 0.5
    with pytest.raises(ValueError, match="min"):
        noisy_rate(1.5, 0.9)
    with pytest.raises(ValueError, match="window"):
        fit_tail_exponent(np.ones(10), 10, 5, 12)
    with pytest.raises(ValueError, match="primary"):
        predict_grid(np.ones(5), np.ones((5, 1)), np.eye(1), [2], [0.1], (2, 4), None, "middle")
