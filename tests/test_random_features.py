"""Random features, their expected kernels and the double-descent deterministic equivalents."""

import numpy as np
import pytest
import scipy.optimize
from sklearn.linear_model import Ridge
from threadpoolctl import threadpool_limits

from rmtlens.studies import (
    expected_kernel,
    feature_ridge,
    linear_ridge_sweep,
    random_features,
    random_features_sweep,
    rf_deterministic_equivalent,
    rf_effective_ridge,
    spectrum_from_features,
    spectrum_from_kernel,
)


@pytest.fixture(autouse=True)
def single_blas_thread():
    """Many small BLAS calls: one thread avoids spin-waiting on a shared, busy machine."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def spec3_equivalent(mu, beta_sq, n, lam):
    """SPEC §3 written out directly: κ = λ + (κ/n) Σ μ/(μ+κ), E = Σ (κ/(μ+κ))² β² / (1 − γ)."""
    root = scipy.optimize.brentq(lambda k: k - lam - k / n * np.sum(mu / (mu + k)), lam, lam + mu.sum() / n + 1.0)
    gamma = np.sum(mu**2 / (mu + root) ** 2) / n
    test = np.sum((root / (mu + root)) ** 2 * beta_sq) / (1 - gamma)
    return root, test, (lam / root) ** 2 * test


def power_law_spectrum(P=300, alpha=1.3, delta=1.6, null_power=0.05):
    k = np.arange(1, P + 1)
    mu = k**-alpha
    beta_sq = k**-delta
    return np.append(mu / mu.sum(), 0.0), np.append(beta_sq / beta_sq.sum(), null_power)


@pytest.mark.parametrize("activation", ["relu", "erf", "linear"])
def test_expected_kernel_matches_monte_carlo(activation):
    rng = np.random.default_rng(0)
    d = 7
    base = rng.standard_normal((3, d))
    # distinct norms, a negated copy (θ = π), a rescaled copy (θ = 0) and the zero vector
    x = np.vstack([base, -base[0], 2.5 * base[1], np.zeros(d)])
    W = rng.standard_normal((400_000, d))
    phi = random_features(x, W, activation)
    products = phi[:, None, :] * phi[None, :, :]  # (6, 6, N)
    mc = products.mean(axis=-1)
    se = products.std(axis=-1) / np.sqrt(W.shape[0])
    closed = expected_kernel(x, activation=activation)
    assert np.all(np.abs(closed - mc) <= 5 * se + 1e-12), np.max(np.abs(closed - mc) / (se + 1e-300))
    np.testing.assert_allclose(expected_kernel(x[:2], x[3:], activation), closed[:2, 3:], rtol=1e-14)


def test_effective_ridge_solves_its_equation_and_is_symmetric_in_n_and_features():
    mu, _ = power_law_spectrum()
    for n, N, lam in [(50, 20, 1e-4), (50, 200, 1e-4), (80, 80, 1e-6), (30, 1000, 0.0), (1000, 30, 0.0)]:
        kappa = rf_effective_ridge(mu, n, N, lam)
        df1 = np.sum(mu / (mu + kappa))
        assert kappa * (1 - df1 / n) * (1 - df1 / N) == pytest.approx(lam, rel=1e-9, abs=1e-15)
        assert df1 <= min(n, N) * (1 + 1e-12)
        assert rf_effective_ridge(mu, N, n, lam) == pytest.approx(kappa, rel=1e-10)


@pytest.mark.parametrize("lam", [0.0, 1e-5, 1e-2])
@pytest.mark.parametrize("n", [20, 120])
def test_infinite_features_is_the_spec3_kernel_equivalent(n, lam):
    mu, beta_sq = power_law_spectrum()
    de = rf_deterministic_equivalent(mu, beta_sq, n, np.inf, lam)
    if lam == 0.0:  # the ridgeless κ solves n = Σ μ/(μ+κ)
        root = scipy.optimize.brentq(lambda k: np.sum(mu / (mu + k)) - n, 1e-15, 10.0, xtol=1e-300, rtol=1e-15)
        gamma = np.sum(mu**2 / (mu + root) ** 2) / n
        ref = (root, np.sum((root / (mu + root)) ** 2 * beta_sq) / (1 - gamma), 0.0)
    else:
        ref = spec3_equivalent(mu, beta_sq, n, lam)
    assert de["kappa"] == pytest.approx(ref[0], rel=1e-9)
    assert de["test_risk"] == pytest.approx(ref[1], rel=1e-8)
    assert de["train_risk"] == pytest.approx(ref[2], rel=1e-8, abs=1e-15)
    # and many random features approach the kernel limit
    wide = rf_deterministic_equivalent(mu, beta_sq, n, 1e9, lam)
    assert wide["test_risk"] == pytest.approx(de["test_risk"], rel=1e-5)


def test_ridgeless_equivalent_is_the_limit_of_small_ridges():
    mu, beta_sq = power_law_spectrum()
    for n, N in [(60, 20), (60, 150), (20, 60), (150, 60)]:
        at_zero = rf_deterministic_equivalent(mu, beta_sq, n, N, 0.0)
        tiny = rf_deterministic_equivalent(mu, beta_sq, n, N, 1e-13)
        assert tiny["test_risk"] == pytest.approx(at_zero["test_risk"], rel=1e-5)
        if N < n:  # least squares on N features: variance inflation n/(n − N)
            assert at_zero["gamma"] == pytest.approx(N / n, rel=1e-9)
    assert rf_deterministic_equivalent(mu, beta_sq, 60, 60, 0.0)["test_risk"] == np.inf


def test_equivalent_matches_gaussian_linear_random_features():
    """Exact model of the equivalence: Gaussian covariates, Gaussian projection F, fresh test data.

    Random-features ridge on ``z = F x / √N`` with ``x ~ N(0, diag μ)``; the population
    risk given the fit is ``Σ_k μ_k (θ_k − (Fᵀa/√N)_k)² + σ²`` in closed form.
    """
    rng = np.random.default_rng(1)
    P, n, seeds = 400, 150, 24
    mu, beta_sq = power_law_spectrum(P, alpha=1.0, delta=2.0, null_power=0.0)
    mu, beta_sq = mu[:-1], beta_sq[:-1]
    sigma2 = 0.1
    theta_abs = np.sqrt(beta_sq / mu)
    lam = 1e-5
    for ratio in [0.3, 0.5, 2.0, 3.0]:
        N = int(ratio * n)
        risks = []
        for _ in range(seeds):
            theta = theta_abs * rng.choice([-1.0, 1.0], P)
            X = rng.standard_normal((n, P)) * np.sqrt(mu)
            y = X @ theta + np.sqrt(sigma2) * rng.standard_normal(n)
            F = rng.standard_normal((N, P))
            Z = X @ F.T / np.sqrt(N)
            a = Z.T @ np.linalg.solve(Z @ Z.T + n * lam * np.eye(n), y)
            risks.append(np.sum(mu * (theta - F.T @ a / np.sqrt(N)) ** 2) + sigma2)
        de = rf_deterministic_equivalent(np.append(mu, 0.0), np.append(beta_sq, sigma2), n, N, lam)
        assert np.mean(risks) == pytest.approx(de["test_risk"], rel=0.05), ratio


def synthetic_pool(seed, P, d, noise=0.3):
    """Gaussian inputs and a nonlinear single-index plus interaction target with label noise."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((P, d))
    v = rng.standard_normal(d)
    v /= np.linalg.norm(v)
    y = np.tanh(2 * X @ v) + 0.5 * X[:, 0] * X[:, 1] + noise * rng.standard_normal(P)
    return X, y[:, None]


RATIOS = [0.1, 0.2, 0.3, 0.5, 0.7, 0.85, 1.0, 1.2, 1.5, 2.0, 3.0, 4.0]


@pytest.mark.parametrize("activation", ["relu", "erf"])
def test_random_features_double_descent_matches_equivalent(activation):
    """The pool is the population: train on nested subsamples, test on the whole pool."""
    X, y = synthetic_pool(2, P=1500, d=60)
    lam = 1e-6 * np.mean(np.diag(expected_kernel(X, activation=activation)))
    n = 150
    seeds = range(16)
    out = random_features_sweep(X, y, X, y, [n], RATIOS, seeds, lam, activation)
    sizes = np.unique(out["n_features"])
    mc = np.array([out["test_mse"][out["n_features"] == N].mean() for N in sizes])
    de = np.array([out["de_mse"][out["n_features"] == N][0] for N in sizes])
    ratio = sizes / n
    away = (ratio < 0.7) | (ratio > 1.4)
    rel = np.abs(mc - de) / de
    print(activation, dict(zip(np.round(ratio, 2), np.round((mc - de) / de, 3))))
    assert np.all(rel[away] < 0.05), rel
    peak = np.argmin(np.abs(ratio - 1.0))
    assert np.argmax(mc) == peak and np.argmax(de) == peak
    assert mc[peak] > 2 * max(mc[0], mc[-1])  # a genuine peak, not a plateau


def test_linear_ridge_peaks_at_n_equals_p_and_matches_equivalent():
    rng = np.random.default_rng(3)
    P, p = 2000, 40
    F = rng.standard_normal((P, p)) * np.arange(1, p + 1) ** -0.5
    y = F @ rng.standard_normal((p, 2)) + 0.5 * rng.standard_normal((P, 2))
    ratios = [0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0]
    lam = 1e-8 * np.sum(F**2) / (P * p)
    out = linear_ridge_sweep(F, y, F, y, ratios, range(30), lam)
    sizes = np.unique(out["n"])
    mc = np.array([out["test_mse"][out["n"] == n].mean() for n in sizes])
    de = np.array([out["de_mse"][out["n"] == n][0] for n in sizes])
    peak = list(sizes).index(p)
    assert np.argmax(mc) == peak and np.argmax(de) == peak
    away = np.abs(sizes / p - 1) > 0.4
    print(dict(zip(sizes / p, np.round((mc - de) / de, 3))))
    np.testing.assert_allclose(mc[away], de[away], rtol=0.05)
    assert np.all(out["p"] == p) and np.allclose(out["ratio"], out["n"] / p)


def test_feature_ridge_is_primal_ridge():
    rng = np.random.default_rng(4)
    n, m, q = 30, 10, 12
    Ft, Fs = rng.standard_normal((n, q)), rng.standard_normal((m, q))
    y, ys = rng.standard_normal((n, 2)), rng.standard_normal((m, 2))
    lam = 0.03
    out = feature_ridge(Ft, Fs, y, ys, [lam])
    # (ΦΦᵀ/q + nλ)⁻¹ on the dual side is ridge with penalty nλq on the primal side
    pred = Ridge(alpha=n * lam * q, fit_intercept=False, solver="cholesky").fit(Ft, y).predict(Fs)
    assert out["test_risk"][0] == pytest.approx(np.mean(np.sum((pred - ys) ** 2, axis=1)), rel=1e-9)


def test_feature_spectrum_equals_kernel_spectrum():
    rng = np.random.default_rng(5)
    P, p = 200, 15
    F = rng.standard_normal((P, p)) * np.arange(1, p + 1) ** -0.7
    y = rng.standard_normal((P, 3))
    mu_f, b_f = spectrum_from_features(F, y)
    mu_k, b_k = spectrum_from_kernel(F @ F.T / p, y)
    np.testing.assert_allclose(mu_f[:p], mu_k[:p], rtol=1e-10)
    np.testing.assert_allclose(b_f[:p], b_k[:p], rtol=1e-8)
    assert mu_f[-1] == 0.0 and np.all(mu_k[p:] == 0.0)
    assert b_f[-1] == pytest.approx(b_k[p:].sum(), rel=1e-8)
    assert b_f.sum() == pytest.approx(np.sum(y**2) / P, rel=1e-12)


def test_sweep_rows_are_nested_and_seeded():
    X, y = synthetic_pool(6, P=300, d=10)
    out = random_features_sweep(X, y, X[:50], y[:50], [40, 80], [0.5, 2.0], [0, 1], 1e-3)
    assert len(out["seed"]) == 2 * 2 * 2
    again = random_features_sweep(X, y, X[:50], y[:50], [80], [2.0], [1], 1e-3)
    row = (out["seed"] == 1) & (out["n"] == 80) & (out["n_features"] == 160)
    # exact: both sweeps draw the same (80, 160) features and solve the same-shaped system
    assert out["test_mse"][row][0] == again["test_mse"][0]
    np.testing.assert_array_equal(out["ratio"], out["n_features"] / out["n"])
    # a precomputed expected kernel gives the same rows; a different one changes the theory
    given = random_features_sweep(X, y, X[:50], y[:50], [40, 80], [0.5, 2.0], [0, 1], 1e-3,
                                  kernel_pool=expected_kernel(X))
    for key in out:
        np.testing.assert_array_equal(given[key], out[key])
    other = random_features_sweep(X, y, X[:50], y[:50], [40, 80], [0.5, 2.0], [0, 1], 1e-3,
                                  kernel_pool=expected_kernel(X, activation="erf"))
    assert not np.allclose(other["de_mse"], out["de_mse"])
    np.testing.assert_array_equal(other["test_mse"], out["test_mse"])


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda X, y: random_features_sweep(X, y, X, y, [20], [1.0], [0], 1e-3, activation="tanh"), "activation"),
        (lambda X, y: random_features_sweep(X, y, X, y, [500], [1.0], [0], 1e-3), "n_train"),
        (lambda X, y: random_features_sweep(X, y, X, y, [20], [-1.0], [0], 1e-3), "ratios"),
        (lambda X, y: random_features_sweep(X, y, X, y, [20], [1.0], [], 1e-3), "seeds"),
        (lambda X, y: random_features_sweep(X, y, X, y, [20], [1.0], [0], -1.0), "ridge"),
        (lambda X, y: random_features_sweep(X, y[:10], X, y, [20], [1.0], [0], 1e-3), "y_pool"),
        (lambda X, y: random_features_sweep(X, y, X[:, :3], y, [20], [1.0], [0], 1e-3), "x_test"),
        (lambda X, y: linear_ridge_sweep(X, y, X, y, [100.0], [0], 1e-3), "ratios"),
        (lambda X, y: random_features_sweep(X, y, X, y, [20], [1.0], [0], 1e-3, kernel_pool=np.eye(3)), "kernel_pool"),
        (lambda X, y: random_features(X, np.ones((4, 3))), "weights"),
        (lambda X, y: expected_kernel(X, np.full((2, X.shape[1]), np.nan)), "x2"),
        (lambda X, y: rf_effective_ridge(np.ones(5), 10, 0, 1e-3), "n_features"),
        (lambda X, y: rf_deterministic_equivalent(np.ones(5), np.ones(4), 10, 5, 1e-3), "beta_sq"),
    ],
)
def test_bad_inputs_name_the_argument(call, match):
    X, y = synthetic_pool(7, P=100, d=8)
    with pytest.raises(ValueError, match=match):
        call(X, y)
