"""Gradient flow through one eigendecomposition versus explicit matrix exponentials."""

import numpy as np
import pytest
import scipy.integrate
import scipy.linalg

from rmtlens.estimators import ridge_path
from rmtlens.studies import (
    gradient_flow_filters,
    gradient_flow_path,
    gradient_flow_predictions,
)


def kernel_problem(seed, n=40, m=25, p=None, C=2, noise=0.5):
    """Kernel ``Φ Φᵀ / p`` of power-law features with noisy linear targets: train block, test block."""
    rng = np.random.default_rng(seed)
    p = 3 * n if p is None else p
    phi = rng.standard_normal((n + m, p)) * np.arange(1, p + 1) ** -0.6
    K_all = phi @ phi.T / p
    teacher = rng.standard_normal((p, C)) * np.arange(1, p + 1)[:, None] ** -0.6
    Y_all = phi @ teacher + noise * rng.standard_normal((n + m, C)) * np.std(phi @ teacher)
    return K_all[:n, :n], K_all[n:, :n], Y_all[:n], Y_all[n:]


def explicit(K, Ks, Y, Ys, eta_t):
    """f_t = K* K⁻¹ (I − expm(−ηtK/n)) Y and the GCV definition with dense matrices."""
    n = K.shape[0]
    E = scipy.linalg.expm(-eta_t * K / n)
    S = np.eye(n) - E
    pred = Ks @ np.linalg.solve(K, S @ Y)
    resid = Y - S @ Y
    train = np.sum(resid**2) / n
    with np.errstate(divide="ignore", invalid="ignore"):
        gcv = train / (1 - np.trace(S) / n) ** 2
    return dict(
        pred=pred, test_risk=np.mean(np.sum((pred - Ys) ** 2, axis=1)), train_risk=train, dof=np.trace(S), gcv=gcv
    )


def test_path_matches_matrix_exponential_at_every_time():
    K, Ks, Y, Ys = kernel_problem(0)
    n = K.shape[0]
    eta = 0.7
    times = np.geomspace(1e-2, 1e4, 13) * n / np.trace(K) * n / eta
    d, U = np.linalg.eigh(K)
    table, _ = gradient_flow_path(d, U, Y, Ks, Ys, times, learning_rate=eta)
    scale = np.sum(Y**2) / n  # risk at t = 0; expm's absolute accuracy is relative to it
    for j, t in enumerate(times):
        ref = explicit(K, Ks, Y, Ys, eta * t)
        for key in ("test_risk", "train_risk", "dof"):
            np.testing.assert_allclose(
                table[key][j], ref[key], rtol=1e-7, atol=1e-12 * scale, err_msg=f"{key} at t={t:g}"
            )
        if ref["train_risk"] > 1e-6 * scale:  # the dense GCV is 0/0 once both parts underflow
            np.testing.assert_allclose(table["gcv"][j], ref["gcv"], rtol=1e-6, err_msg=f"gcv at t={t:g}")
        np.testing.assert_allclose(
            gradient_flow_predictions(d, U, Y, Ks, t, learning_rate=eta), ref["pred"], rtol=1e-7, atol=1e-10
        )


def test_predictions_solve_the_gradient_flow_ode():
    """Gradient flow of a linear model θᵀφ(x) on (1/2n)||f(X) − Y||², integrated numerically.

    In function space ``df(X)/dt = −(η/n) K (f(X) − Y)`` and ``df(X*)/dt = −(η/n) K* (f(X) − Y)``.
    """
    K, Ks, Y, _ = kernel_problem(1, n=15, m=5, C=1)
    n, eta, T = K.shape[0], 2.0, 40.0

    def rhs(_, state):
        f = state[:n]
        g = -(eta / n) * (f - Y[:, 0])
        return np.concatenate([K @ g, Ks @ g])

    sol = scipy.integrate.solve_ivp(rhs, (0, T), np.zeros(n + Ks.shape[0]), rtol=1e-11, atol=1e-13)
    d, U = np.linalg.eigh(K)
    for k_rows, rows in ((Ks, slice(n, None)), (K, slice(0, n))):
        flow = gradient_flow_predictions(d, U, Y, k_rows, T, eta)[:, 0]
        np.testing.assert_allclose(flow, sol.y[rows, -1], rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("p", [None, 12])
def test_large_time_is_ridgeless_regression(p):
    """Full rank and rank-deficient (p < n) kernels: t → ∞ gives the pseudo-inverse fit."""
    K, Ks, Y, Ys = kernel_problem(2, p=p)
    d, U = np.linalg.eigh(K)
    ridgeless = ridge_path(d, U, Y, Ks, Ys, [0.0])
    pinv_pred = Ks @ np.linalg.pinv(K, rcond=1e-10, hermitian=True) @ Y
    d_small = np.sort(d[d > 1e-10 * d.max()])[0]
    t_big = 60.0 * K.shape[0] / d_small  # exp(−60) of the slowest learnt direction
    table, summary = gradient_flow_path(d, U, Y, Ks, Ys, [t_big, np.inf])
    for t in (t_big, np.inf):
        np.testing.assert_allclose(gradient_flow_predictions(d, U, Y, Ks, t), pinv_pred, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(table["test_risk"], ridgeless["test_risk"][0], rtol=1e-6)
    np.testing.assert_allclose(table["train_risk"][-1], ridgeless["train_risk"][0], rtol=1e-6, atol=1e-14)
    assert summary["test_risk_limit"] == pytest.approx(ridgeless["test_risk"][0], rel=1e-12)
    if p is not None:  # rank-deficient: the GCV limit is the ridgeless GCV (null-space indicator)
        np.testing.assert_allclose(table["gcv"], ridgeless["gcv"][0], rtol=1e-6)
        assert table["dof"][-1] == pytest.approx(p, abs=1e-8)


def test_matched_ridge_columns_are_ridge_path():
    K, Ks, Y, Ys = kernel_problem(3)
    d, U = np.linalg.eigh(K)
    eta = 3.0
    times = np.geomspace(0.1, 1e5, 7)
    table, _ = gradient_flow_path(d, U, Y, Ks, Ys, times, learning_rate=eta)
    ref = ridge_path(d, U, Y, Ks, Ys, 1.0 / (eta * times))
    for key in ("test_risk", "train_risk", "gcv"):
        np.testing.assert_allclose(table["ridge_" + key], ref[key], rtol=1e-12)
    for j, t in enumerate(times):  # and they are the explicit ridge solution
        lam = 1.0 / (eta * t)
        pred = Ks @ np.linalg.solve(K + K.shape[0] * lam * np.eye(K.shape[0]), Y)
        assert table["ridge_test_risk"][j] == pytest.approx(np.mean(np.sum((pred - Ys) ** 2, axis=1)), rel=1e-8)


def test_early_stopping_is_reported_where_test_risk_turns_up():
    """Noisy targets on a full-rank kernel: interpolation overfits, so test risk is non-monotone."""
    K, Ks, Y, Ys = kernel_problem(4, noise=1.0)
    n = K.shape[0]
    d, U = np.linalg.eigh(K)
    times = np.append(np.geomspace(1e-2, 1e8, 41) * n / np.trace(K), np.inf)
    table, summary = gradient_flow_path(d, U, Y, Ks, Ys, times)
    brute = np.array([explicit(K, Ks, Y, Ys, t)["test_risk"] for t in times[:-1]])
    pinv_risk = np.mean(np.sum((Ks @ np.linalg.pinv(K, hermitian=True) @ Y - Ys) ** 2, axis=1))
    j = int(np.argmin(brute))
    assert summary["non_monotone"] == 1.0
    assert 0 < j < times.size - 2  # the optimum is interior on the grid
    assert summary["t_star"] == times[j] and table["is_t_star"][j] and table["is_t_star"].sum() == 1
    assert summary["test_risk_t_star"] == pytest.approx(brute[j], rel=1e-7)
    assert summary["test_risk_limit"] == pytest.approx(pinv_risk, rel=1e-6)
    assert summary["early_stopping_gain"] == pytest.approx(1 - brute[j] / pinv_risk, rel=1e-6)
    assert summary["max_rise"] == pytest.approx(np.max(brute / np.minimum.accumulate(brute)) - 1, rel=1e-6, abs=1e-9)


def test_monotone_risk_is_not_flagged():
    """Noiseless target in the kernel's span with a full-rank kernel: risk falls monotonically along the flow."""
    rng = np.random.default_rng(5)
    n = 30
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    K = (Q * np.geomspace(1, 1e-2, n)) @ Q.T
    Y = K @ rng.standard_normal((n, 1))
    d, U = np.linalg.eigh(K)
    # test on the training inputs themselves: risk = train risk, which is monotone in t
    _, summary = gradient_flow_path(d, U, Y, K, Y, np.geomspace(1e-1, 1e6, 30))
    assert summary["non_monotone"] == 0.0 and summary["max_rise"] == 0.0


def test_filters_have_no_cancellation_for_tiny_eigenvalues():
    d = np.array([0.0, 1e-300, 1e-20, 1e-8, 1.0, 1e3])
    n, eta = 10, 1.0
    times = np.array([1e-3, 1.0, 1e6, np.inf])
    fit, residual, direction = gradient_flow_filters(d, n, times, eta)
    x = eta * times[None, :3] * d[1:4, None] / n  # all below 1e-3
    # Taylor series of (1 − e^{−x})/d = (ηt/n)(1 − x/2 + x²/6 − x³/24 + …), residual 1 − x + x²/2
    series = (eta * times[:3] / n)[None, :] * (1 - x / 2 + x**2 / 6 - x**3 / 24)
    np.testing.assert_allclose(fit[1:4, :3], series, rtol=1e-13)
    np.testing.assert_allclose(residual[1:4, :3], 1 - x + x**2 / 2 - x**3 / 6, rtol=1e-13)
    assert np.all(fit[0] == 0.0) and np.all(residual[0] == 1.0)  # null space: pseudo-inverse convention
    np.testing.assert_allclose(fit[4:, -1], 1.0 / d[4:])
    assert np.all(np.isfinite(fit)) and np.all(np.isfinite(residual)) and np.all(np.isfinite(direction))
    np.testing.assert_array_equal(direction[:, -1], d == 0.0)


def test_gcv_stays_finite_where_all_weights_underflow():
    K, Ks, Y, Ys = kernel_problem(6, n=20, m=5)
    d, U = np.linalg.eigh(K)
    table, _ = gradient_flow_path(d, U, Y, Ks, Ys, [1e30, np.inf])
    assert np.all(np.isfinite(table["gcv"]))
    # full rank: GCV_t → n ||Ỹ_min||² / 1 where d_min is the slowest direction
    Yt = U.T @ Y
    k = int(np.argmin(d))
    np.testing.assert_allclose(table["gcv"], K.shape[0] * np.sum(Yt[k] ** 2), rtol=1e-12)


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(times=[1.0, -2.0]), "times must be positive"),
        (dict(times=[2.0, 1.0]), "times must be strictly increasing"),
        (dict(learning_rate=0.0), "learning_rate"),
        (dict(y_train=np.zeros((7, 2))), "y_train has 7 rows"),
        (dict(k_test=np.full((3, 10), np.nan)), "k_test contains NaN"),
    ],
)
def test_bad_inputs_name_the_argument(bad, match):
    K, _, _, _ = kernel_problem(7, n=10, m=3)
    d, U = np.linalg.eigh(K)
    args = dict(eigvals=d, eigvecs=U, y_train=np.zeros((10, 2)), k_test=K[:3], y_test=np.zeros((3, 2)), times=[1.0])
    args.update(bad)
    with pytest.raises(ValueError, match=match):
        gradient_flow_path(**args)
