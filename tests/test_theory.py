"""Deterministic equivalent: κ solver versus brute-force root finding, risk versus
Monte Carlo ridge on Gaussian features and the isotropic closed forms (power-law fits: test_powerlaw.py)."""

import numpy as np
import pytest
from scipy.optimize import brentq

from rmtlens.estimators import (
    deterministic_equivalent,
    fit_eigenvalue_exponent,
    fit_power_law,
    noiseless_rate,
    population_from_pool,
    power_law_values,
    solve_kappa,
)


def brentq_kappa(mu, n, lam):
    """Root of the fixed-point form ``κ − λ − (κ/n) Σ μ/(μ+κ)`` (λ > 0) or of
    ``n − Σ μ/(μ+κ)`` (λ = 0) with scipy's brentq, one pair at a time."""
    if lam > 0:
        f = lambda k: k - lam - (k / n) * np.sum(mu / (mu + k))
        return brentq(f, lam, lam + mu.sum() / n, xtol=1e-300, rtol=1e-15, maxiter=500)
    # ridgeless: solve in log κ, the root may be many orders below the spectrum
    g = lambda t: n - np.sum(mu / (mu + np.exp(t)))
    return np.exp(brentq(g, np.log(mu[mu > 0].min()) - 60, np.log(mu.sum() / n), xtol=1e-14, rtol=1e-15))


def random_spectrum(rng, size, n_zero=0):
    mu = rng.random(size) ** rng.uniform(1, 6) * rng.uniform(0.1, 10)
    return np.concatenate([mu, np.zeros(n_zero)])


@pytest.mark.parametrize("seed", range(4))
def test_kappa_matches_brentq_on_random_spectra(seed):
    rng = np.random.default_rng(seed)
    mu = random_spectrum(rng, 200, n_zero=30)
    rank = 200
    scale = mu.mean()
    ns = np.array([3, 40, 150, 199, 200, 260, 1000])
    lambdas = np.concatenate([[0.0], scale * np.geomspace(1e-9, 10, 6)])
    kappa = solve_kappa(mu, ns[:, None], lambdas[None, :])
    assert kappa.shape == (ns.size, lambdas.size)
    for i, n in enumerate(ns):
        for j, lam in enumerate(lambdas):
            if lam == 0 and n >= rank:
                assert kappa[i, j] == 0.0
                continue
            ref = brentq_kappa(mu, n, lam)
            assert kappa[i, j] == pytest.approx(ref, rel=1e-9), (n, lam)


def test_kappa_in_the_ridgeless_limit():
    rng = np.random.default_rng(10)
    mu = random_spectrum(rng, 120, n_zero=10)
    rank = 120
    lam_tiny = np.array([1e-200, 1e-100, 1e-40])
    # below the rank: κ(λ) → κ(0) > 0
    k0 = solve_kappa(mu, 80, 0.0)
    assert k0 == pytest.approx(brentq_kappa(mu, 80, 0.0), rel=1e-10)
    np.testing.assert_allclose(solve_kappa(mu, 80, lam_tiny), k0, rtol=1e-12)
    # above the rank: κ ≈ λ / (1 − rank/n)
    np.testing.assert_allclose(solve_kappa(mu, 300, lam_tiny), lam_tiny / (1 - rank / 300), rtol=1e-10)
    # at the rank: κ² Σ 1/μ / n → λ, i.e. κ ≈ sqrt(λ n / Σ_{μ>0} 1/μ)
    expected = np.sqrt(lam_tiny * rank / np.sum(1 / mu[mu > 0]))
    np.testing.assert_allclose(solve_kappa(mu, rank, lam_tiny), expected, rtol=1e-8)
    assert solve_kappa(mu, rank, 0.0) == 0.0 and solve_kappa(mu, 1000, 0.0) == 0.0
    # non-integer n just below the rank: a tiny but positive κ
    k_close = solve_kappa(mu, rank - 0.5, 0.0)
    assert 0 < k_close < mu[mu > 0].min()
    assert k_close == pytest.approx(brentq_kappa(mu, rank - 0.5, 0.0), rel=1e-8)


def test_kappa_on_a_spectrum_spanning_15_orders():
    rng = np.random.default_rng(11)
    mu = rng.permutation(np.logspace(0, -15, 600))
    ns = np.array([5, 50, 300, 590, 599, 600, 2000])
    lambdas = np.array([0.0, 1e-25, 1e-18, 1e-12, 1e-6, 1.0, 1e6])
    kappa = solve_kappa(mu, ns[:, None], lambdas[None, :])
    assert np.all(np.isfinite(kappa))
    for i, n in enumerate(ns):
        for j, lam in enumerate(lambdas):
            if lam == 0 and n >= mu.size:
                assert kappa[i, j] == 0
                continue
            # independent reference: brentq on the relative residual in log κ
            h = lambda t: lam * np.exp(-t) + np.sum(mu / (mu + np.exp(t))) / n - 1
            lo = np.log(lam) if lam > 0 else np.log(mu.min()) - 60
            ref = np.exp(brentq(h, lo, np.log(lam + mu.sum() / n), xtol=1e-15, rtol=1e-15))
            rel = 1e-8 if (n < 590 or lam >= 1e-12) else 1e-5  # reference loses digits to cancellation there
            assert kappa[i, j] == pytest.approx(ref, rel=rel), (n, lam)


def test_kappa_raises_instead_of_returning_unconverged_values():
    mu = np.logspace(0, -10, 200)
    with pytest.raises(RuntimeError, match="did not converge"):
        solve_kappa(mu, 50, np.geomspace(1e-8, 1, 5), max_iter=2)


def gaussian_ridge_monte_carlo(mu, beta, n, lambdas, noise_var, draws, seed, sign_flips=8):
    """Exact population test risk, train risk and tr(S)/n of ridge on ``K = X Xᵀ``
    (system ``K + nλI``), averaged over draws of ``X`` ~ N(0, diag(μ)) and noise.

    Each draw also averages over ``sign_flips`` random sign patterns of ``β`` (a
    symmetry of the Gaussian design, so the expectation is unchanged), which costs
    extra right-hand sides only and removes most of the variance.
    """
    rng = np.random.default_rng(seed)
    d = mu.size
    test, train, dof = (np.zeros((draws, lambdas.size)) for _ in range(3))
    for r in range(draws):
        X = rng.standard_normal((n, d)) * np.sqrt(mu)
        B = beta[:, None] * rng.choice([-1.0, 1.0], (d, sign_flips))
        Y = X @ B + np.sqrt(noise_var) * rng.standard_normal((n, sign_flips))
        evals, U = np.linalg.eigh(X @ X.T)
        evals = np.where(evals > 1e-10 * evals.max(), evals, 0.0)
        UY = U.T @ Y
        for j, lam in enumerate(lambdas):
            if lam > 0:
                inv = 1.0 / (evals + n * lam)
            else:
                inv = np.where(evals > 0, 1.0 / np.where(evals > 0, evals, 1.0), 0.0)
            W = X.T @ (U @ (inv[:, None] * UY))
            test[r, j] = np.mean(mu @ (W - B) ** 2) + noise_var
            train[r, j] = np.mean((Y - X @ W) ** 2)
            dof[r, j] = np.sum(evals * inv) / n
    return test, train, dof


@pytest.mark.parametrize(
    "d, noise_var, lambdas",
    [
        (1000, 0.0, np.array([0.0, 1e-4, 1e-3, 1e-2, 1e-1])),
        (1000, 0.1, np.array([0.0, 1e-3, 1e-2, 1e-1])),
        (300, 0.1, np.array([0.0, 1e-3, 1e-2])),  # d < n: ridgeless is least squares
    ],
)
def test_deterministic_equivalent_matches_monte_carlo(d, noise_var, lambdas):
    n = 500
    rng = np.random.default_rng(d + int(noise_var * 10))
    k = np.arange(1, d + 1)
    mu = k**-1.3
    beta = k**-0.6 * rng.choice([-1.0, 1.0], d)
    draws = 25
    test, train, dof = gaussian_ridge_monte_carlo(mu, beta, n, lambdas, noise_var, draws, seed=1)
    # the DE's β_k are coefficients on unit-variance eigenfunctions x_k / √μ_k
    de = deterministic_equivalent(mu, mu * beta**2, n, lambdas, noise_var=noise_var)
    mc_test = test.mean(0)
    stderr = test.std(0, ddof=1) / np.sqrt(draws)
    assert np.all(stderr < 0.01 * mc_test), "Monte Carlo too noisy for a 3% comparison"
    np.testing.assert_allclose(de["test_risk"], mc_test, rtol=0.03)
    np.testing.assert_allclose(de["train_risk"], train.mean(0), rtol=0.03, atol=1e-12)
    np.testing.assert_allclose(de["lambda_over_kappa"], 1 - dof.mean(0), rtol=0.03, atol=1e-12)


@pytest.mark.parametrize("c", [0.25, 0.5, 0.8, 1.5, 2.0, 4.0])
def test_isotropic_ridgeless_closed_forms(c):
    n, b, noise_var = 400, 2.0, 0.3
    d = int(c * n)
    mu = np.ones(d)
    beta_sq = np.full(d, b / d)
    de = deterministic_equivalent(mu, beta_sq, n, [0.0, 1e-13], noise_var=noise_var)
    excess = de["test_risk"] - noise_var
    if c < 1:
        expected = noise_var * c / (1 - c)
        assert de["kappa"][0] == 0 and de["lambda_over_kappa"][0] == pytest.approx(1 - c)
    else:
        expected = b * (1 - 1 / c) + noise_var / (c - 1)
        assert de["kappa"][0] == pytest.approx(c - 1, rel=1e-12)
        assert de["gamma"][0] == pytest.approx(1 / c, rel=1e-12)
    assert excess[0] == pytest.approx(expected, rel=1e-10)
    assert excess[1] == pytest.approx(expected, rel=1e-6)  # λ → 0⁺ is continuous


def test_ridgeless_above_the_rank_keeps_the_null_space_risk():
    mu = np.concatenate([np.linspace(1, 0.1, 50), np.zeros(20)])
    beta_sq = np.concatenate([np.full(50, 0.01), np.full(20, 0.05)])
    n = 80
    de = deterministic_equivalent(mu, beta_sq, n, [0.0, 1e-14])
    expected = 20 * 0.05 / (1 - 50 / n)
    np.testing.assert_allclose(de["test_risk"], expected, rtol=1e-8)
    np.testing.assert_allclose(de["train_risk"], (1 - 50 / n) ** 2 * expected, rtol=1e-8)
    at_rank = deterministic_equivalent(mu, beta_sq, 50, 0.0)
    assert at_rank["test_risk"] == np.inf and at_rank["train_risk"] == 0.0


def test_population_from_pool_matches_direct_projection():
    rng = np.random.default_rng(20)
    N, C = 60, 4
    phi = rng.standard_normal((N, 12))
    K = phi @ phi.T  # rank 12: the rest are round-off, some negative
    labels = rng.integers(0, C, N)
    E = np.eye(C)[labels]
    D, V = np.linalg.eigh(K)
    centered = np.eye(C) - 1.0 / C
    pop = population_from_pool(D, V.T @ E, target_map=centered)
    Y = E @ centered
    direct = np.abs(V.T @ Y / np.sqrt(N))  # sign-free comparison, sorted like mu
    order = np.argsort(-D, kind="stable")
    assert np.all(np.diff(pop["mu"]) <= 0)
    assert np.count_nonzero(pop["mu"]) == 12
    np.testing.assert_allclose(pop["mu"][:12], np.sort(D)[::-1][:12] / N, rtol=1e-12)
    np.testing.assert_allclose(np.abs(pop["beta"][:12]), direct[order][:12], atol=1e-12)
    assert pop["beta_sq"].sum() == pytest.approx(np.sum(Y**2) / N, rel=1e-12)
    binary = population_from_pool(D, V.T @ E, target_map=np.where(np.arange(C) < 2, 1.0, -1.0))
    assert binary["beta"].shape == (N, 1) and binary["beta_sq"].sum() == pytest.approx(1.0, rel=1e-12)


def test_power_law_fit_is_exact_on_an_exact_power_law():
    x = np.arange(1, 101, dtype=float)
    fit = fit_power_law(x, 7.0 * x**-1.5, 5, 50)
    assert fit["exponent"] == pytest.approx(1.5, rel=1e-12) and fit["amplitude"] == pytest.approx(7.0, rel=1e-10)
    assert fit["r2"] == pytest.approx(1.0) and (fit["x_min"], fit["x_max"], fit["n_points"]) == (5, 50, 46)


@pytest.mark.parametrize("alpha, delta", [(1.5, 2.0), (0.5, 3.0)])
def test_idealised_deterministic_equivalent_decays_at_the_closed_form_rate(alpha, delta):
    K = 200_000
    mu = power_law_values(1.0, alpha, K)
    beta_sq = power_law_values(1.0, delta, K)
    ns = np.geomspace(200, 5000, 8)
    risk = deterministic_equivalent(mu, beta_sq, ns, 0.0)["test_risk"]
    slope = -np.polyfit(np.log(ns), np.log(risk), 1)[0]
    assert slope == pytest.approx(noiseless_rate(alpha, delta), abs=0.05)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: solve_kappa(np.ones(5), -3, 0.1), "n must be finite and positive"),
        (lambda: solve_kappa(np.ones(5), 10, -0.1), "lambdas must be finite and non-negative"),
        (lambda: solve_kappa(np.ones(5), 10, np.nan), "lambdas"),
        (lambda: solve_kappa(np.array([1.0, np.nan]), 10, 0.1), "mu contains NaN"),
        (lambda: solve_kappa(np.array([1.0, -1.0]), 10, 0.1), "mu must be non-negative"),
        (lambda: solve_kappa(np.ones(5), np.ones(3), np.ones(4)), "n .* and lambdas .* do not broadcast"),
        (lambda: deterministic_equivalent(np.ones(5), np.ones(4), 10, 0.1), "beta_sq must have the shape of mu"),
        (lambda: deterministic_equivalent(np.ones(5), np.ones(5), 10, 0.1, noise_var=-1), "noise_var"),
        (lambda: population_from_pool(np.ones(5), np.ones((4, 2))), "proj must have shape"),
        (lambda: population_from_pool(np.ones(5), np.ones((5, 2)), np.ones((3, 1))), "target_map must have shape"),
        (lambda: population_from_pool(np.ones(5), np.full((5, 2), np.nan)), "proj contains NaN"),
        (lambda: fit_power_law(np.arange(1.0, 6), [1, 2, np.nan, 3, 4]), "y contains NaN"),
        (lambda: fit_power_law(np.arange(1.0, 6), np.ones(4)), "x and y must be"),
        (lambda: fit_power_law(np.arange(1.0, 6), -np.ones(5)), "fewer than 3 positive"),
        (lambda: fit_eigenvalue_exponent(np.ones(5), 0, 4), "k_min"),
        (lambda: power_law_values(-1.0, 1.0, 5), "amplitude"),
    ],
)
def test_validation_errors_name_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()
