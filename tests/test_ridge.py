"""Ridge path from one eigendecomposition versus brute-force per-λ computations."""

import numpy as np
import pytest

from rmtlens.estimators import classification_error, ridge_path, ridge_predictions


def random_psd(rng, n, rank=None, decay=1.0):
    """A PSD kernel ``Φ Φᵀ`` with ``rank`` features and a power-law spectrum."""
    p = n if rank is None else rank
    phi = rng.standard_normal((n + 40, p)) * (np.arange(1, p + 1) ** (-decay / 2))
    return phi @ phi.T / p  # (n + 40) x (n + 40): first n train, last 40 test


def brute_force(K, Ks, Y, Ys, lam, rcond=1e-10):
    """Per-λ solves, explicit inverse for tr S, explicit leave-one-out refits."""
    n = K.shape[0]
    if lam > 0:
        M = K + n * lam * np.eye(n)
        alpha = np.linalg.solve(M, Y)
        inv = np.linalg.inv(M)
    else:
        inv = np.linalg.pinv(K, rcond=rcond, hermitian=True)
        alpha = inv @ Y
    S = K @ inv
    pred = Ks @ alpha
    train_resid = Y - K @ alpha
    train_risk = np.sum(train_resid**2) / n
    loo = []
    for i in range(n):
        keep = np.arange(n) != i
        Kk = K[np.ix_(keep, keep)]
        if lam > 0:
            a = np.linalg.solve(Kk + n * lam * np.eye(n - 1), Y[keep])
        else:
            a = np.linalg.pinv(Kk, rcond=rcond, hermitian=True) @ Y[keep]
        loo.append(np.sum((Y[i] - K[i, keep] @ a) ** 2))
    out = dict(
        test_risk=np.mean(np.sum((pred - Ys) ** 2, axis=1)),
        test_error=classification_error(pred, Ys),
        train_risk=train_risk,
        dof=np.trace(S),
        loo=np.mean(loo),
    )
    if lam > 0 or np.linalg.matrix_rank(K) < n:
        out["gcv"] = train_risk / (1 - np.trace(S) / n) ** 2
    else:  # full-rank ridgeless: the λ → 0⁺ limit n ||K⁻¹Y||² / (tr K⁻¹)²
        Kinv = np.linalg.inv(K)
        out["gcv"] = n * np.sum((Kinv @ Y) ** 2) / np.trace(Kinv) ** 2
    return out


@pytest.mark.parametrize("rank", [None, 12])
def test_ridge_path_matches_brute_force(rank):
    rng = np.random.default_rng(0 if rank is None else 1)
    n, C = 60, 3
    Kall = random_psd(rng, n, rank=rank)
    K, Ks = Kall[:n, :n], Kall[n:, :n]
    labels = rng.integers(0, C, n + 40)
    Yall = np.eye(C)[labels] - 1.0 / C
    Y, Ys = Yall[:n], Yall[n:]
    scale = np.trace(K) / n
    lambdas = np.concatenate([[0.0], scale * np.geomspace(1e-5, 10, 7)])
    d, U = np.linalg.eigh(K)
    path = ridge_path(d, U, Y, Ks, Ys, lambdas)
    for j, lam in enumerate(lambdas):
        ref = brute_force(K, Ks, Y, Ys, lam)
        for key, value in ref.items():
            np.testing.assert_allclose(path[key][j], value, rtol=1e-8, atol=1e-12, err_msg=f"{key} at λ={lam}")
        assert np.all(np.isfinite([path[k][j] for k in ref]))


def test_rank_deficient_ridgeless_is_finite_and_projects():
    rng = np.random.default_rng(2)
    n, p = 50, 8
    phi = rng.standard_normal((n, p))
    K = phi @ phi.T
    Y = rng.standard_normal((n, 2))
    d, U = np.linalg.eigh(K)
    path = ridge_path(d, U, Y, K[:5], Y[:5], [0.0])
    # ridgeless on a rank-p kernel is least squares on the features: tr S = p
    assert path["dof"][0] == pytest.approx(p, abs=1e-8)
    hat = phi @ np.linalg.pinv(phi)
    resid = Y - hat @ Y
    assert path["train_risk"][0] == pytest.approx(np.sum(resid**2) / n, rel=1e-9)
    assert path["gcv"][0] == pytest.approx(np.sum(resid**2) / n / (1 - p / n) ** 2, rel=1e-9)


def test_tiny_ridge_gcv_is_continuous_to_ridgeless_limit():
    rng = np.random.default_rng(3)
    n = 80
    K = random_psd(rng, n)[:n, :n]
    Y = rng.standard_normal((n, 1))
    d, U = np.linalg.eigh(K)
    path = ridge_path(d, U, Y, K[:3], Y[:3], [0.0, 1e-13 * np.trace(K) / n])
    np.testing.assert_allclose(path["gcv"][1], path["gcv"][0], rtol=1e-4)
    np.testing.assert_allclose(path["loo"][1], path["loo"][0], rtol=1e-4)


def test_blocking_does_not_change_results():
    rng = np.random.default_rng(4)
    n = 40
    Kall = random_psd(rng, n)
    Y = rng.standard_normal((n + 40, 4))
    d, U = np.linalg.eigh(Kall[:n, :n])
    lambdas = np.geomspace(1e-4, 1, 9)
    a = ridge_path(d, U, Y[:n], Kall[n:, :n], Y[n:], lambdas)
    b = ridge_path(d, U, Y[:n], Kall[n:, :n], Y[n:], lambdas, block_size=1)
    # Blocking changes the shape of the test-side product ``A @ coef`` (one λ against all of
    # them at once), and a BLAS kernel may sum a GEMM of another shape in another order
    # (OpenBLAS's SkylakeX kernels do; its Haswell ones happen not to): the two paths agree
    # to round-off, not bit for bit.
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-13, atol=0, err_msg=key)


def test_predictions_match_solve():
    rng = np.random.default_rng(5)
    n = 30
    Kall = random_psd(rng, n)
    K, Ks = Kall[:n, :n], Kall[n:, :n]
    Y = rng.standard_normal((n, 2))
    d, U = np.linalg.eigh(K)
    lam = 0.01
    np.testing.assert_allclose(
        ridge_predictions(d, U, Y, Ks, lam), Ks @ np.linalg.solve(K + n * lam * np.eye(n), Y), rtol=1e-9
    )


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(lambdas=[-1.0]), "non-negative"),
        (dict(y_train=np.zeros((7, 2))), "y_train has 7 rows"),
        (dict(k_test=np.full((3, 10), np.nan)), "k_test contains NaN"),
    ],
)
def test_bad_inputs_name_the_problem(bad, match):
    rng = np.random.default_rng(6)
    n = 10
    K = random_psd(rng, n)[:n, :n]
    d, U = np.linalg.eigh(K)
    args = dict(eigvals=d, eigvecs=U, y_train=np.zeros((n, 2)), k_test=K[:3], y_test=np.zeros((3, 2)), lambdas=[0.1])
    args.update(bad)
    with pytest.raises(ValueError, match=match):
        ridge_path(**args)
