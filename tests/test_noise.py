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
    """The noise study's clean level must be the ridge path's rows, λ = 0
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
    for key in ("resolved", "resolved_floor"):
        assert rows[key].tolist() == ref[key].tolist(), key
    np.testing.assert_allclose(rows["floor_change"].to_numpy(), ref["floor_change"], rtol=1e-12, atol=0.0)
    terms = []
    for i in range(n):
        keep = np.arange(n) != i
        w = np.linalg.lstsq(phi[:n][keep], T[labels][keep], rcond=None)[0]
        terms.append(np.sum((T[labels][i] - phi[i] @ w) ** 2))
    # the 1e-6 entries perturb the kernel by ~2e-7 of its largest entry (below its stated
    # error); the kept eigen-pairs, and so the LOO, move by ~1e-8 relative
    assert rows.loc[0, "loo"] == pytest.approx(np.mean(terms), rel=1e-6)


@pytest.fixture(scope="module")
def labelled_pool_spectrum():
    from labelled_pool import labelled_pool

    from rmtlens.estimators.spectra import pool_spectrum

    K, labels, T = labelled_pool()
    D, proj = pool_spectrum(K, labels, T.shape[0])
    return K, labels, T, D, proj


@pytest.mark.parametrize("kind, level, lam_rel", [
    ("gaussian", 1.0, 1e-3), ("gaussian", 1.0, 1e-1), ("flip", 0.3, 1e-3), ("flip", 0.3, 1e-1),
])
def test_label_noise_predictions_match_monte_carlo_on_a_labelled_pool(labelled_pool_spectrum, kind, level, lam_rel):
    """The noise study's deterministic equivalent, built from the pool spectrum, one-hot
    projections, target map and class counts, against kernel ridge with noisy labels drawn
    i.i.d. from that pool. The target variance is 6.3, so σ² = level (without the
    variance) moves the Gaussian excess risk by about 25% at λ/s = 1e-3; swapping the fitted
    (noisy-mean) and reference (clean) coefficients moves the flip excess by 25-65%."""
    from labelled_pool import pool_ridge_monte_carlo

    from rmtlens.estimators.noise import label_noise_predictions

    K, labels, T, D, proj = labelled_pool_spectrum
    n, scale = 100, np.trace(K) / len(labels)
    var = float(np.mean(np.sum((T[labels] - T[labels].mean(0)) ** 2, axis=1)))
    counts = np.bincount(labels, minlength=T.shape[0])
    de = label_noise_predictions(D, proj, T, counts, kind, level, var, n, lam_rel * scale)
    if kind == "gaussian":
        assert float(de["noise_var"]) == pytest.approx(level * var, rel=1e-12)
    else:  # class c's noisy target is T_k with probability 1 − f (k = c) or f/(C − 1): its variance
        C = len(T)
        per_class = []
        for c in range(C):
            prob = np.where(np.arange(C) == c, 1 - level, level / (C - 1))
            g = prob @ T
            per_class.append(prob @ np.sum((T - g) ** 2, axis=1))
        assert float(de["noise_var"]) == pytest.approx(np.dot(per_class, counts) / counts.sum(), rel=1e-9)
    excess, _ = pool_ridge_monte_carlo(K, labels, T, n, lam_rel * scale, kind, level)
    mc, stderr = excess.mean(), excess.std(ddof=1) / np.sqrt(excess.size)
    assert stderr < 0.01 * mc, "Monte Carlo too noisy for a 3% comparison"
    # the DE is exact as n → ∞; at n = 100 on this pool it agrees with the mean to < 1%
    assert float(de["excess_risk"]) == pytest.approx(mc, rel=0.03)
    assert float(de["noisy_risk"]) == pytest.approx(float(de["fit_risk"]) + float(de["noise_var"]), rel=1e-12)


def test_noise_study_job_scales_the_ridge_of_rows_and_predictions_by_the_stored_kernel_scale(tmp_path):
    """The absolute ridge is λ_rel · tr(K_pool)/N_pool for the measured rows
    and for their deterministic equivalents alike. On an indefinite kernel (a float32-like
    error gives it negative eigenvalues) Σ max(D, 0)/N_pool is larger than the trace, and a
    DE scaled by it solves for κ at another λ than the row it is joined to. Reference: κ by
    brentq on numpy's eigenvalues of the pool block, at λ from the kernel's diagonal."""
    from scipy.optimize import brentq

    from rmtlens.estimators import accuracy_floor, eigh_descending, kernel_scale, pool_spectrum, subsample_indices
    from rmtlens.inputs.datasets import PreparedDataset
    from rmtlens.io import save_json, save_npy, save_npz
    from rmtlens.workflow.noise import noise_study_job

    rng = np.random.default_rng(21)
    N, m, p, C, eps = 80, 20, 30, 3, 1e-3
    phi = rng.standard_normal((N + m, p)) * np.linspace(2.0, 0.3, p)
    K = phi @ phi[:N].T / p
    E = rng.standard_normal((N, N)) * eps * np.abs(K[:N, :N]).max() / np.sqrt(N)
    K[:N] += (E + E.T) / 2  # symmetric error: the pool block has negative eigenvalues
    labels = rng.integers(0, C, N + m)
    D_np = np.linalg.eigvalsh(K[:N])
    assert D_np.min() < 0 and np.clip(D_np, 0, None).sum() > np.trace(K[:N]) * (1 + 1e-4)
    data = PreparedDataset(np.zeros((N + m, 1, 1, 3), np.uint8), labels, np.arange(N + m), ("a", "b", "c"), N)
    save_npz(tmp_path / "dataset.npz", **data.to_arrays())
    save_npy(tmp_path / "kernel.npy", K)
    save_json(tmp_path / "accuracy.json", {"relative_error": eps})
    D, proj = pool_spectrum(K[:N], labels[:N], C)
    save_npz(tmp_path / "pool.npz", eigvals=D, proj_onehot=proj, n_pool=N, floor=accuracy_floor(D, eps),
             scale=kernel_scale(np.diag(K[:N])), relative_error=eps)
    subsamples = [(20, 0), (40, 1)]
    for n, seed in subsamples:
        index = subsample_indices(N, n, seed)
        d, U = eigh_descending(K[np.ix_(index, index)])
        save_npz(tmp_path / f"eigh_{n}_{seed}.npz", index=index, eigvals=d, eigvecs=U)
    lams = np.array([0.0, 1e-4, 1e-2, 1.0])
    table = noise_study_job(
        tmp_path / "dataset.npz", tmp_path / "kernel.npy", tmp_path / "pool.npz",
        [tmp_path / f"eigh_{n}_{s}.npz" for n, s in subsamples], subsamples,
        {"kind": "onehot_centered", "positive_classes": []}, {"gaussian": [0.5], "flip": [], "seed": 0}, lams, None,
        {"dataset": "d", "backbone": "b", "weights": "init", "kernel": "entk"}, accuracy_path=tmp_path / "accuracy.json",
    )
    scale = np.trace(K[:N]) / N
    np.testing.assert_allclose(table["lambda"], table["lambda_rel"] * scale, rtol=1e-12)
    floor = 10 * (eps + N * 2.0**-53) * D_np.max()
    mu = np.where(D_np > floor, D_np, 0.0) / N
    for _, row in table[table["lambda_rel"] > 0].drop_duplicates(["n", "lambda_rel"]).iterrows():
        lam, n = row["lambda"], row["n"]
        fixed_point = lambda k: k - lam - (k / n) * np.sum(mu / (mu + k))  # noqa: E731
        kappa = brentq(fixed_point, lam, lam + mu.sum(), xtol=1e-300, rtol=1e-14)
        assert row["kappa"] == pytest.approx(kappa, rel=1e-10), (n, row["lambda_rel"])


def test_noise_rows_apply_the_cutoff_rule_per_level():
    """The noise study flags rows as the ridge path does, the cutoff rule included
    (test risk, GCV and LOO within 1% at half and twice the floor), per level since the noisy
    targets decide how much the directions at the floor matter. Reference: the ridge path on
    each level's training targets, regenerated here from the same seeds."""
    from rmtlens.estimators import ridge_path
    from rmtlens.studies.noise import noise_levels, noise_rows
    from rmtlens.workflow.jobs import RidgeProblem

    rng = np.random.default_rng(17)
    n, m, C, eps = 60, 25, 3, 1e-7
    d = np.geomspace(1.0, 1e-9, n)  # a factor 1.42 apart through the floor 1e-6
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    Ks = rng.standard_normal((m, n)) @ np.diag(d) @ Q.T
    labels, test_labels = rng.integers(0, C, n), rng.integers(0, C, m)
    T = make_targets(np.arange(C), C, "onehot_centered")
    problem = RidgeProblem(d, Q, np.arange(n), T[labels], T[test_labels], Ks, 1.0, relative_error=eps)
    levels = noise_levels({"gaussian": [1.0], "flip": [0.3]})
    var, lams = target_variance(T[labels]), np.append(0.0, np.geomspace(1e-9, 1e-2, 15))
    spec = {"kind": "onehot_centered", "positive_classes": []}
    rows = noise_rows(problem, labels, test_labels, C, spec, levels, var, lams, noise_seed=2, seed=4)
    floor = problem.floor()
    removed = 0
    for index, (kind, level) in enumerate(levels):
        if kind == "gaussian":
            Y = T[labels] + gaussian_target_noise((n, C), level * var, [2, n, 4, index])
        elif kind == "flip":
            Y = T[flip_labels(labels, C, level, [2, n, 4, index])[0]]
        else:
            Y = T[labels]
        ref = ridge_path(d, Q, Y, Ks, T[test_labels], lams, floor=floor)
        got = rows[rows["noise"] == kind]
        for key in ("resolved_floor", "resolved"):
            assert got[key].tolist() == ref[key].tolist(), (kind, key)
        np.testing.assert_allclose(got["floor_change"], ref["floor_change"], rtol=1e-9, atol=1e-12)
        removed += int(np.sum(ref["resolved_floor"] & ~ref["resolved"]))
    assert removed >= 3  # the rule bites at every level of this crowded spectrum
