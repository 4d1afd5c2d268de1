"""Label noise: the deterministic equivalent with its noise term against Monte Carlo,
label flipping, and the noise study's rows against brute-force solves."""

import numpy as np
import pandas as pd
import pytest

from rmtlens.estimators.noise import flip_target_map, noisy_deterministic_equivalent
from rmtlens.inputs.targets import flip_labels, gaussian_target_noise, make_targets, target_variance


def _planted(d=300, alpha=1.3, seed=0):
    rng = np.random.default_rng(seed)
    mu = np.arange(1, d + 1, dtype=float) ** -alpha
    w = rng.standard_normal(d) * np.arange(1, d + 1) ** -0.3
    return mu, w


def _monte_carlo(mu, w, n, lam, sigma2, scale_fit=1.0, draws=60, seed=1):
    """Average over draws of the exact excess risk (ŵ − w)ᵀ Σ (ŵ − w) of linear ridge
    trained on y = scale_fit · xᵀw + ε, ε ~ N(0, σ²); kernel K = X Xᵀ, system K + nλI."""
    rng = np.random.default_rng(seed)
    d = mu.size
    out = []
    for _ in range(draws):
        X = rng.standard_normal((n, d)) * np.sqrt(mu)
        y = scale_fit * X @ w + rng.standard_normal(n) * np.sqrt(sigma2)
        w_hat = X.T @ np.linalg.solve(X @ X.T + n * lam * np.eye(n), y)
        out.append(np.sum(mu * (w_hat - w) ** 2))
    return float(np.mean(out))


@pytest.mark.parametrize("sigma_mult", [0.1, 0.5, 1.0])
@pytest.mark.parametrize("lam", [1e-3, 3e-2])
def test_noisy_de_matches_monte_carlo(sigma_mult, lam):
    mu, w = _planted()
    beta = (np.sqrt(mu) * w)[:, None]
    sigma2 = sigma_mult * float(np.sum(beta**2))  # multiples of the target variance
    n = 500
    de = noisy_deterministic_equivalent(mu, beta, beta, sigma2, n, lam * mu.sum())
    mc = _monte_carlo(mu, w, n, lam * mu.sum(), sigma2)
    assert abs(float(de["excess_risk"]) - mc) / mc < 0.03
    # the noisy risk adds σ² exactly; the excess carries the γσ²/(1 − γ) noise term
    assert float(de["noisy_risk"]) == pytest.approx(float(de["excess_risk"]) + sigma2, rel=1e-12)
    clean = noisy_deterministic_equivalent(mu, beta, beta, 0.0, n, lam * mu.sum())
    g = float(de["gamma"])
    assert float(de["excess_risk"]) - float(clean["excess_risk"]) == pytest.approx(g * sigma2 / (1 - g), rel=1e-9)


def test_noisy_de_with_shrunk_mean_target_matches_monte_carlo():
    """Training targets a·h + ε, risk against h: the cross term of the flip formula."""
    mu, w = _planted(seed=3)
    beta = (np.sqrt(mu) * w)[:, None]
    a, sigma2, n, lam = 0.6, 0.3 * float(np.sum(beta**2)), 500, 1e-2 * mu.sum()
    de = noisy_deterministic_equivalent(mu, a * beta, beta, sigma2, n, lam)
    mc = _monte_carlo(mu, w, n, lam, sigma2, scale_fit=a, seed=4)
    assert abs(float(de["excess_risk"]) - mc) / mc < 0.03


def test_flip_labels_changes_exact_fraction_seeded():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, size=537)
    for fraction in (0.0, 0.1, 0.3, 1.0):
        noisy, mask = flip_labels(labels, 10, fraction, [7, 1])
        assert mask.sum() == round(fraction * labels.size)
        assert np.count_nonzero(noisy != labels) == round(fraction * labels.size)  # never flips to itself
        assert np.array_equal(noisy != labels, mask)
        again, _ = flip_labels(labels, 10, fraction, [7, 1])
        assert np.array_equal(noisy, again)
    other, _ = flip_labels(labels, 10, 0.3, [7, 2])
    assert not np.array_equal(other, noisy)


def test_flip_target_map_matches_simulation():
    T = make_targets(np.arange(4), 4, "onehot_centered")
    mean_map, var = flip_target_map(T, 0.3)
    rng = np.random.default_rng(0)
    labels = np.full(200000, 2)
    noisy, _ = flip_labels(labels, 4, 0.3, rng.integers(1 << 30))
    sample = T[noisy]
    np.testing.assert_allclose(sample.mean(axis=0), mean_map[2], atol=4e-3)
    assert np.mean(np.sum((sample - mean_map[2]) ** 2, axis=1)) == pytest.approx(var[2], rel=1e-2)


def test_gaussian_noise_variance_and_target_variance():
    eps = gaussian_target_noise((40000, 5), 0.7, 3)
    assert np.mean(np.sum(eps**2, axis=1)) == pytest.approx(0.7, rel=0.02)
    Y = np.random.default_rng(1).standard_normal((300, 3)) + 5.0
    assert target_variance(Y) == pytest.approx(np.trace(np.cov(Y.T, bias=True)), rel=1e-12)


@pytest.mark.parametrize("path", ["dense", "low_rank"])
def test_noise_rows_match_direct_solves(path):
    """Every level's excess/noisy risk, GCV and train risk against a direct solve with the
    same noisy targets; test targets untouched; exact flip counts. ``low_rank``: the
    feature-kernel route (thin basis of the rank-p range, ``K* U`` given, null space
    handled analytically), against the same dense solves."""
    from rmtlens.studies.noise import noise_levels, noise_rows
    from rmtlens.workflow.jobs import RidgeProblem

    rng = np.random.default_rng(5)
    n, m, C, p = 60, 30, 4, 20
    X, Xs = rng.standard_normal((n, p)), rng.standard_normal((m, p))
    labels, test_labels = rng.integers(0, C, n), rng.integers(0, C, m)
    T = make_targets(np.arange(C), C, "onehot_centered")
    K, Ks = X @ X.T / p, Xs @ X.T / p
    if path == "dense":
        d, U = np.linalg.eigh(K)
        problem = RidgeProblem(d, U, np.arange(n), T[labels], T[test_labels], Ks, 1.0)
    else:
        U, sv, _ = np.linalg.svd(X, full_matrices=False)  # (n, p): the range of K, rank p < n
        problem = RidgeProblem(sv**2 / p, U, np.arange(n), T[labels], T[test_labels], None, 1.0, test_basis=Ks @ U)
    test_before = problem.y_test.copy()
    levels = noise_levels({"gaussian": [0, 0.5], "flip": [0, 0.25]})
    assert levels == [("none", 0.0), ("gaussian", 0.5), ("flip", 0.25)]
    spec = {"kind": "onehot_centered", "positive_classes": []}
    var = target_variance(T[labels])
    lams = np.array([1e-3, 1e-1])
    rows = noise_rows(problem, labels, test_labels, C, spec, levels, var, lams, noise_seed=3, seed=1)
    np.testing.assert_array_equal(problem.y_test, test_before)
    for index, (kind, level) in enumerate(levels):
        seed = [3, n, 1, index]
        if kind == "gaussian":
            Y = T[labels] + gaussian_target_noise((n, C), level * var, seed)
        elif kind == "flip":
            noisy, mask = flip_labels(labels, C, level, seed)
            Y = T[noisy]
            assert rows[rows["noise"] == kind]["flipped"].iloc[0] == round(level * n) == mask.sum()
        else:
            Y = T[labels]
        for lam in lams:
            row = rows[(rows["noise"] == kind) & (rows["lambda_rel"] == lam)].iloc[0]
            W = np.linalg.solve(K + n * lam * np.eye(n), Y)
            pred, fit = Ks @ W, K @ W
            excess = np.mean(np.sum((pred - T[test_labels]) ** 2, axis=1))
            assert row["excess_risk"] == pytest.approx(excess, rel=1e-9)
            train = np.mean(np.sum((Y - fit) ** 2, axis=1))
            S = K @ np.linalg.inv(K + n * lam * np.eye(n))
            assert row["gcv"] == pytest.approx(train / (1 - np.trace(S) / n) ** 2, rel=1e-8)
            if kind == "flip":
                # expectation over flipping each test label, by enumeration of the classes
                expect = 0.0
                for j, c in enumerate(test_labels):
                    others = [k for k in range(C) if k != c]
                    e = (1 - level) * np.sum((pred[j] - T[c]) ** 2)
                    e += level * np.mean([np.sum((pred[j] - T[k]) ** 2) for k in others])
                    expect += e / m
                assert row["noisy_risk"] == pytest.approx(expect, rel=1e-9)
            else:
                sigma2 = level * var if kind == "gaussian" else 0.0
                assert row["noisy_risk"] == pytest.approx(excess + sigma2, rel=1e-9)


@pytest.mark.parametrize("gap", [False, True])
def test_noise_rows_use_and_flag_the_kernel_accuracy_floor(gap):
    """A kernel with relative error ε: directions at or below ``10·(ε + n·u)·λ_max`` are null
    in every level's fit, and a row is flagged resolved exactly when ``nλ`` reaches the
    floor or no eigenvalue lies within a factor 10 of it (SPEC §2). The λ = 0 row equals
    the minimum-norm interpolant on the kept directions, solved directly."""
    from rmtlens.studies.noise import noise_rows
    from rmtlens.workflow.jobs import RidgeProblem

    rng = np.random.default_rng(11)
    n, m, C, eps = 40, 12, 3, 1e-6
    d = np.concatenate([np.geomspace(1.0, 1e-2, 30), np.full(10, 1e-13)]) if gap else np.geomspace(1.0, 1e-12, n)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    Ks = rng.standard_normal((m, n)) @ Q @ np.diag(np.sqrt(d)) @ Q.T
    labels, test_labels = rng.integers(0, C, n), rng.integers(0, C, m)
    T = make_targets(np.arange(C), C, "onehot_centered")
    problem = RidgeProblem(d, Q, np.arange(n), T[labels], T[test_labels], Ks, 1.0, relative_error=eps)
    spec = {"kind": "onehot_centered", "positive_classes": []}
    lams = np.array([0.0, 1e-9, 1e-3])
    rows = noise_rows(problem, labels, test_labels, C, spec, [("none", 0.0)], 1.0, lams, noise_seed=0, seed=0)
    floor = 10 * (eps + n * np.finfo(np.float64).eps / 2) * d.max()
    in_band = np.any((d > floor / 10) & (d <= floor * 10))
    assert in_band != gap
    expected = [(n * lam >= floor) or not in_band for lam in lams]
    assert rows["resolved"].tolist() == expected == ([True, True, True] if gap else [False, False, True])
    keep = d > floor
    pinv = Q[:, keep] @ np.diag(1 / d[keep]) @ Q[:, keep].T
    pred = Ks @ pinv @ T[labels]
    excess = np.mean(np.sum((pred - T[test_labels]) ** 2, axis=1))
    assert rows.loc[rows["lambda_rel"] == 0, "excess_risk"].iloc[0] == pytest.approx(excess, rel=1e-8)


def _nearly_lone_point_problem(path, seed=0):
    """Features of rank 6 < n in which training point n-1 alone spans the last feature but
    for entries of 1e-6 on five other points, below the kernel's stated relative error
    1e-7 (so the eigenvectors cannot tell the two apart); dense or thin (low-rank) problem.
    Returns the problem, the unperturbed features and the labels."""
    from rmtlens.estimators import eigh_descending, feature_factor, feature_test_basis
    from rmtlens.workflow.jobs import RidgeProblem

    rng = np.random.default_rng(seed)
    n, m, p, C = 40, 12, 6, 3
    phi = rng.standard_normal((n + m, p))
    phi[:, -1] = 0.0
    phi[n - 1, -1] = 1.3
    touched = phi.copy()
    touched[:5, -1] = 1e-6
    labels, test_labels = rng.integers(0, C, n), rng.integers(0, C, m)
    T = make_targets(np.arange(C), C, "onehot_centered")
    if path == "dense":
        K = touched @ touched.T / p
        d, U = eigh_descending(K[:n, :n])
        problem = RidgeProblem(d, U, np.arange(n), T[labels], T[test_labels], K[n:, :n], 1.7, relative_error=1e-7)
    else:
        d, U, _ = feature_factor(touched[:n])
        problem = RidgeProblem(d, U, np.arange(n), T[labels], T[test_labels], None, 1.7,
                               test_basis=feature_test_basis(touched[n:], touched[:n], U), relative_error=1e-7)
    return problem, phi, labels, test_labels, T


@pytest.mark.parametrize("path", ["dense", "low_rank"])
def test_clean_noise_rows_equal_the_ridge_path_ridgeless_included(path):
    """Issue 21, bug 1: the noise study's clean level must be the ridge path's rows, λ = 0
    included. Its ridgeless LOO once used floor 0 in the lone-point test (so a point whose
    null-space leverage is ~1e-13, i.e. zero to the kernel's accuracy, was divided by it:
    LOO 2.5e8 here, 1.9e6 on resnet18's init eNTK). The reference is independent: exact
    leave-one-out minimum-norm refits (lstsq) on the unperturbed features."""
    from rmtlens.studies.noise import noise_rows
    from rmtlens.workflow.jobs import solve_ridge_path

    problem, phi, labels, test_labels, T = _nearly_lone_point_problem(path)
    n = len(labels)
    lams = np.array([0.0, 1e-9, 1e-3, 1.0])
    spec = {"kind": "onehot_centered", "positive_classes": []}
    rows = noise_rows(problem, labels, test_labels, 3, spec, [("none", 0.0)], 1.0, lams, noise_seed=0, seed=0)
    ref = solve_ridge_path(problem, lams * problem.scale)
    ref["excess_risk"] = ref.pop("test_risk")  # the clean level's risk against clean test targets
    for key in ("excess_risk", "train_risk", "gcv", "loo", "dof", "test_error", "lambda"):
        # the same eigen-basis operations on the same arrays: equal to round-off
        np.testing.assert_allclose(rows[key].to_numpy(), ref[key], rtol=1e-12, err_msg=key)
    assert rows["resolved"].tolist() == ref["resolved"].tolist()
    terms = []
    for i in range(n):
        keep = np.arange(n) != i
        w = np.linalg.lstsq(phi[:n][keep], T[labels][keep], rcond=None)[0]
        terms.append(np.sum((T[labels][i] - phi[i] @ w) ** 2))
    # the 1e-6 entries perturb the kernel by ~2e-7 of its largest entry (below its stated
    # error); the kept eigen-pairs, and so the LOO, move by ~1e-8 relative
    assert rows.loc[0, "loo"] == pytest.approx(np.mean(terms), rel=1e-6)
