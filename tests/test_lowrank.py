"""The low-rank spectral path of feature kernels against the dense path on the same embeddings.

The dense reference forms ``K = Φ Φᵀ/p`` explicitly and goes through the existing
``eigh`` + ``ridge_path`` / ``gradient_flow_path`` / ``pool_spectrum`` + ``predict_grid``
code; the low-rank path never forms an n x n block when ``p < n``.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from rmtlens.estimators import (
    eigh_descending,
    feature_factor,
    feature_pool_spectrum,
    feature_test_basis,
    pool_spectrum,
    predict_grid,
    ridge_path,
    ridge_path_low_rank,
)
from rmtlens.kernels import feature_kernel
from rmtlens.studies import gradient_flow_path, gradient_flow_path_low_rank, time_grid

# λ = 0 (ridgeless), a log grid, and λ → ∞ (1e12 times the kernel scale)
LAMBDAS = np.concatenate([[0.0], np.geomspace(1e-6, 1e3, 15), [1e12]])
CASES = {
    "p<n": (200, 50, None),
    "p=n": (100, 100, None),
    "p>n": (80, 150, None),
    "rank-deficient": (200, 60, 20),  # rank 20 < p < n
    "rank-deficient p>n": (40, 90, 25),
}


def embeddings(n, p, rank, m=70, seed=0):
    rng = np.random.default_rng(seed)
    phi = rng.standard_normal((n + m, p)) * np.linspace(2.0, 0.2, p)  # anisotropic spectrum
    if rank is not None:
        phi = rng.standard_normal((n + m, rank)) @ rng.standard_normal((rank, p))
    return phi


# DEs on fitted power laws inherit the fits' tolerance (assert_fits_close)
FITTED_COLUMNS = {"powerlaw_test_risk": 1e-6, "truncated_powerlaw_test_risk": 1e-6}


def assert_columns_close(got, ref, rtol=1e-9, atol=None):
    atol = atol or {}
    assert set(got) == set(ref)
    for key in ref:
        g, r = np.asarray(got[key], dtype=float), np.asarray(ref[key], dtype=float)
        assert np.array_equal(np.isfinite(g), np.isfinite(r)), key
        fin = np.isfinite(r)
        np.testing.assert_allclose(g[fin], r[fin], rtol=FITTED_COLUMNS.get(key, rtol), atol=atol.get(key, 0.0),
                                   err_msg=key)


def assert_fits_close(got, ref, rtol=1e-6, atol=1e-8):
    """Power-law fits per window: labels and flags equal, numbers close. A least-squares
    minimiser moves by the data's round-off over the misfit's curvature, which is small
    when the target is no power law at all (δ near 0 here), hence the looser tolerance."""
    assert [f["window"] for f in got] == [f["window"] for f in ref]
    for g, r in zip(got, ref):
        assert set(g) == set(r)
        for key, value in r.items():
            if isinstance(value, (str, bool, np.bool_)):
                assert g[key] == value, (r["window"], key)
            else:
                np.testing.assert_allclose(g[key], value, rtol=rtol, atol=atol, err_msg=f"{r['window']}: {key}")


@pytest.mark.parametrize("case", CASES)
def test_ridge_table_columns_agree_with_the_dense_path(case):
    n, p, rank = CASES[case]
    phi = embeddings(n, p, rank)
    rng = np.random.default_rng(1)
    Y, Ys = rng.standard_normal((n, 3)), rng.standard_normal((70, 3))
    K = feature_kernel(phi, n)
    d, U = eigh_descending(K[:n])
    scale = np.trace(K[:n]) / n
    dense = ridge_path(d, U, Y, K[n:], Ys, LAMBDAS * scale)
    dl, Ul, method = feature_factor(phi[:n])
    assert method == ("svd" if p < n else "dense") and Ul.shape == (n, min(n, p))
    low = ridge_path_low_rank(dl, Ul, Y, feature_test_basis(phi[n:], phi[:n], Ul), Ys, LAMBDAS * scale)
    assert_columns_close(low, dense)
    # the ridgeless row interpolates when the kernel has rank ≥ n, and not when it is rank-deficient
    assert (dense["train_risk"][0] < 1e-12) == (min(p, rank or p) >= n)
    # λ → ∞: no fit, train risk → mean squared target norm
    assert low["train_risk"][-1] == pytest.approx(np.mean(np.sum(Y**2, axis=1)), rel=1e-9)


@pytest.mark.parametrize("case", CASES)
def test_gradient_flow_table_agrees_with_the_dense_path(case):
    n, p, rank = CASES[case]
    phi = embeddings(n, p, rank, seed=2)
    rng = np.random.default_rng(3)
    Y, Ys = rng.standard_normal((n, 2)), rng.standard_normal((70, 2))
    K = feature_kernel(phi, n)
    d, U = eigh_descending(K[:n])
    times = time_grid(np.trace(K[:n]) / n, 1e-6, 1e2, 12)
    table, summary = gradient_flow_path(d, U, Y, K[n:], Ys, times)
    dl, Ul, _ = feature_factor(phi[:n])
    table_l, summary_l = gradient_flow_path_low_rank(dl, Ul, Y, feature_test_basis(phi[n:], phi[:n], Ul), Ys, times)
    assert np.array_equal(table_l.pop("is_t_star"), table.pop("is_t_star"))
    assert_columns_close(table_l, table)
    assert_columns_close(summary_l, summary)


@pytest.mark.parametrize("case", CASES)
def test_theory_table_agrees_with_the_dense_pool_spectrum(case):
    N, p, rank = CASES[case]
    phi = embeddings(N, p, rank, m=0, seed=4)
    labels = np.random.default_rng(5).integers(0, 4, N)
    K_pool = feature_kernel(phi, N)
    D, P = pool_spectrum(K_pool, labels, 4)
    Dl, Pl, method = feature_pool_spectrum(phi, labels, 4)
    assert method == ("gram" if p + 4 <= N else "dense") and Dl.shape == (N,) and Pl.shape == (N, 4)
    sizes, target = [10, 37, N // 2, N], np.eye(4) - 0.25
    scale = np.trace(K_pool) / N
    grid, fits, curves = predict_grid(D, P, target, sizes, LAMBDAS, (2, 20), scale)
    grid_l, fits_l, curves_l = predict_grid(Dl, Pl, target, sizes, LAMBDAS, (2, 20), scale)
    # γ = 1 − (1 − γ) is formed by a subtraction: its accuracy is absolute (1e-15 near γ = 0)
    assert_columns_close(grid_l, grid, atol={"gamma": 1e-12})
    assert_fits_close(fits_l, fits)
    assert_columns_close(curves_l, curves)


def test_null_space_is_handled_without_the_complement_basis():
    """Ridgeless GCV and LOO on a rank-r feature kernel equal their closed forms:
    the residual is the projection on the null space (independent of any basis of it)."""
    n, p = 150, 30
    phi = embeddings(n, p, None, m=10, seed=6)
    Y = np.random.default_rng(7).standard_normal((n, 2))
    Q, _ = np.linalg.qr(phi[:n])
    P_null = np.eye(n) - Q @ Q.T
    resid = P_null @ Y
    dl, Ul, _ = feature_factor(phi[:n])
    out = ridge_path_low_rank(dl, Ul, Y, feature_test_basis(phi[n:], phi[:n], Ul), np.zeros((10, 2)), [0.0])
    assert out["gcv"][0] == pytest.approx(np.sum(resid**2) / n / ((n - p) / n) ** 2, rel=1e-10)
    loo = np.mean(np.sum(resid**2, axis=1) / np.diag(P_null) ** 2)
    assert out["loo"][0] == pytest.approx(loo, rel=1e-8)
    assert out["dof"][0] == pytest.approx(p, rel=1e-12)


def test_low_rank_inputs_are_checked():
    phi = embeddings(50, 10, None, m=5)
    d, U, _ = feature_factor(phi[:50])
    A = feature_test_basis(phi[50:], phi[:50], U)
    with pytest.raises(ValueError, match="y_train"):
        ridge_path_low_rank(d, U, np.zeros((49, 1)), A, np.zeros((5, 1)), [1.0])
    with pytest.raises(ValueError, match="test_basis"):
        ridge_path_low_rank(d, U, np.zeros((50, 1)), A[:, :3], np.zeros((5, 1)), [1.0])
    with pytest.raises(ValueError, match="NaN"):
        feature_factor(np.full((5, 3), np.nan))


def test_low_rank_path_allocates_no_n_by_n_array():
    """Peak memory (tracemalloc, numpy's allocations) of factor + ridge path + pool spectrum at
    n = N_pool = 6000, p = 64 stays far below one n x n float64 array (288 MB)."""
    script = textwrap.dedent(
        """
        import tracemalloc
        import numpy as np
        from rmtlens.estimators import feature_factor, feature_pool_spectrum, feature_test_basis, ridge_path_low_rank
        rng = np.random.default_rng(0)
        n, p, m = 6000, 64, 500
        phi = rng.standard_normal((n + m, p))
        labels = rng.integers(0, 10, n)
        Y = np.eye(10)[labels] - 0.1
        tracemalloc.start()
        d, U, method = feature_factor(phi[:n])
        A = feature_test_basis(phi[n:], phi[:n], U)
        out = ridge_path_low_rank(d, U, Y, A, np.zeros((m, 10)), np.geomspace(1e-6, 1e2, 41))
        D, P, pool_method = feature_pool_spectrum(phi[:n], labels, 10)
        print(method, pool_method, tracemalloc.get_traced_memory()[1])
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    method, pool_method, peak = proc.stdout.split()
    assert (method, pool_method) == ("svd", "gram")
    assert int(peak) < 0.5 * 6000**2 * 8, f"peak {int(peak) / 1e6:.0f} MB"


def test_noise_rows_of_the_low_rank_path_equal_the_dense_path():
    """The label-noise study on a feature kernel with p < n: the thin
    factorisation and the dense eigendecomposition give the same rows."""
    from rmtlens.inputs.targets import make_targets, target_variance
    from rmtlens.studies.noise import noise_levels, noise_rows
    from rmtlens.workflow.jobs import RidgeProblem

    n, p, m, C = 120, 30, 40, 4
    phi = embeddings(n, p, None, m=m, seed=8)
    rng = np.random.default_rng(9)
    labels, test_labels = rng.integers(0, C, n), rng.integers(0, C, m)
    T = make_targets(np.arange(C), C, "onehot_centered")
    K = feature_kernel(phi, n)
    d, U = eigh_descending(K[:n])
    dense = RidgeProblem(d, U, np.arange(n), T[labels], T[test_labels], K[n:], 1.0)
    dl, Ul, _ = feature_factor(phi[:n])
    low = RidgeProblem(dl, Ul, np.arange(n), T[labels], T[test_labels], None, 1.0,
                       feature_test_basis(phi[n:], phi[:n], Ul))
    spec = {"kind": "onehot_centered", "positive_classes": []}
    levels = noise_levels({"gaussian": [0, 0.5], "flip": [0, 0.25]})
    args = (labels, test_labels, C, spec, levels, target_variance(T[labels]), LAMBDAS[:-1])
    got, ref = noise_rows(low, *args, noise_seed=3, seed=1), noise_rows(dense, *args, noise_seed=3, seed=1)
    assert list(got.columns) == list(ref.columns) and len(got) == len(ref)
    for column in ref.columns:
        if ref[column].dtype.kind == "f":
            np.testing.assert_allclose(got[column], ref[column], rtol=1e-9, err_msg=column)
        else:
            assert got[column].tolist() == ref[column].tolist(), column
def _lone_point_embeddings(n=120, p=12, m=15, seed=8):
    """Rank-deficient features with duplicate rows, one direction spanned by one training
    point alone, and p < n (the thin path)."""
    rng = np.random.default_rng(seed)
    phi = rng.standard_normal((n + m, p)) * np.linspace(1.5, 0.3, p)
    phi[:10] = phi[10:20]  # duplicated feature vectors
    phi[:, -1] = 0.0
    phi[n - 1, -1] = 0.9  # training point n-1 alone spans the last feature
    phi[:, -2] = phi[:, 0]  # a repeated column: the kernel has rank p - 1 < p < n
    return phi


@pytest.mark.parametrize("case", [*CASES, "lone point"])
def test_accuracy_floor_gives_the_same_table_on_both_paths(case):
    """With the feature kernel's own accuracy record (rcond=None) the floor, the null
    directions, the `resolved` flags and every column agree between the paths, λ = 0 included."""
    from rmtlens.estimators import accuracy_floor
    from rmtlens.kernels import feature_kernel_accuracy

    if case == "lone point":
        phi, n = _lone_point_embeddings(), 120
    else:
        n, p, rank = CASES[case]
        phi = embeddings(n, p, rank, seed=9)
    rng = np.random.default_rng(10)
    Y, Ys = rng.standard_normal((n, 2)), rng.standard_normal((len(phi) - n, 2))
    eps = feature_kernel_accuracy(phi, n)["relative_error"]
    K = feature_kernel(phi, n)
    d, U = eigh_descending(K[:n])
    dl, Ul, _ = feature_factor(phi[:n])
    floor_dense = accuracy_floor(d, eps)
    floor_low = accuracy_floor(dl, eps, n=n)
    # independent: safety · (ε + n·u) · λ_max with λ_max from numpy
    expected = 10.0 * (eps + n * 2.0**-53) * np.linalg.eigvalsh(K[:n]).max()
    assert floor_dense == pytest.approx(expected, rel=1e-9) and floor_low == pytest.approx(expected, rel=1e-9)
    scale = np.trace(K[:n]) / n
    dense = ridge_path(d, U, Y, K[n:], Ys, LAMBDAS * scale, floor=floor_dense)
    low = ridge_path_low_rank(dl, Ul, Y, feature_test_basis(phi[n:], phi[:n], Ul), Ys, LAMBDAS * scale,
                              floor=floor_low)
    # The flags come from eigenvalues that the two paths compute to round-off of each other;
    # they agree exactly unless an eigenvalue lies within round-off of a band edge, which this
    # spectrum keeps clear of (its gap test is exercised in test_accuracy_floor.py).
    assert low["resolved"].dtype == bool and np.array_equal(low["resolved"], dense["resolved"])
    assert np.all(np.isfinite(low["loo"]))
    assert_columns_close(low, dense)


def test_cutoff_rule_flags_the_same_rows_on_both_paths():
    """Features (p = 40 < n = 120) whose kernel eigenvalues decay through the floor of
    ε = 1e-7 (a factor 1.7 apart), so rows pass the floor rule and then move by more than 1% when
    the floor is halved or doubled. Both paths compute the same changes and flag the same rows."""
    from rmtlens.estimators import accuracy_floor

    rng = np.random.default_rng(14)
    n, m, p = 120, 30, 40
    basis, _ = np.linalg.qr(rng.standard_normal((n + m, p)))
    rotation, _ = np.linalg.qr(rng.standard_normal((p, p)))
    phi = basis * np.sqrt(p * np.geomspace(1.0, 1e-9, p)) @ rotation * np.sqrt((n + m) / n)
    Y, Ys = rng.standard_normal((n, 2)), rng.standard_normal((m, 2))
    K = feature_kernel(phi, n)
    d, U = eigh_descending(K[:n])
    dl, Ul, method = feature_factor(phi[:n])
    assert method == "svd"
    floor, floor_low = accuracy_floor(d, 1e-7), accuracy_floor(dl, 1e-7, n=n)
    assert floor_low == pytest.approx(floor, rel=1e-9)
    lambdas = np.append(0.0, np.geomspace(1e-9, 1e-3, 13))
    dense = ridge_path(d, U, Y, K[n:], Ys, lambdas, floor=floor)
    low = ridge_path_low_rank(dl, Ul, Y, feature_test_basis(phi[n:], phi[:n], Ul), Ys, lambdas, floor=floor_low)
    removed = dense["resolved_floor"] & ~dense["resolved"]
    assert removed.sum() >= 1 and dense["resolved"].sum() >= 3
    assert np.array_equal(low["resolved_floor"], dense["resolved_floor"])
    assert np.array_equal(low["resolved"], dense["resolved"])
    # λ > 0: relative changes of two numbers each accurate to ~1e-12 agree to ~1e-8 where the
    # change is not itself at round-off level. The ridgeless row is unresolved by the floor rule
    # on both paths; its LOO limit decides "alone" by a threshold of θ² on the square basis and
    # 2θ + θ² on the thin one (the complement's leverage is a difference), so it may differ.
    assert not dense["resolved_floor"][0]
    assert_columns_close({k: v[1:] for k, v in low.items()}, {k: v[1:] for k, v in dense.items()}, rtol=1e-6,
                         atol={"floor_change": 1e-10})


def test_low_rank_ridgeless_loo_equals_exact_refits_when_a_point_alone_spans_a_direction():
    """λ = 0 on the thin path: (I − S)_ii is the complement's leverage, 0 for the lone point,
    whose term is then the λ → 0⁺ limit ||(K⁺Y)_i||²/(K⁺)_ii²; the mean equals exact
    leave-one-out minimum-norm refits in feature space (lstsq), never through a kernel."""
    from rmtlens.estimators import accuracy_floor
    from rmtlens.kernels import feature_kernel_accuracy

    n = 120
    phi = _lone_point_embeddings(n=n)
    Y = np.random.default_rng(11).standard_normal((n, 3))
    terms = []
    for i in range(n):
        keep = np.arange(n) != i
        w = np.linalg.lstsq(phi[:n][keep], Y[keep], rcond=None)[0]
        terms.append(np.sum((Y[i] - phi[i] @ w) ** 2))
    dl, Ul, method = feature_factor(phi[:n])
    assert method == "svd"
    leverage = 1.0 - np.sum(Ul[:, dl > 1e-10 * dl[0]] ** 2, axis=1)
    assert leverage[n - 1] < 1e-12 and np.all(np.isfinite(terms)) and terms[n - 1] > 0
    floor = accuracy_floor(dl, feature_kernel_accuracy(phi, n)["relative_error"], n=n)
    for fl in (floor, None):  # the accuracy floor, and the rcond default
        out = ridge_path_low_rank(dl, Ul, Y, feature_test_basis(phi[n:], phi[:n], Ul), np.zeros((15, 3)), [0.0],
                                  floor=fl)
        assert out["loo"][0] == pytest.approx(np.mean(terms), rel=1e-8)


@pytest.mark.parametrize("case", ["p<n", "rank-deficient"])
def test_theory_with_the_accuracy_floor_and_one_scale_agrees_with_the_dense_pool_spectrum(case):
    """The Gram path keeps exactly the pool directions above the pool kernel's accuracy floor
    (rcond=None), and the theory at that floor with the scale ||Φ_pool||²_F/(p·N_pool) equals the
    dense pool kernel's theory at its floor with tr(K_pool)/N_pool."""
    from rmtlens.estimators import accuracy_floor
    from rmtlens.kernels import feature_kernel_accuracy

    N, p, rank = CASES[case]
    phi = embeddings(N, p, rank, m=0, seed=12)
    labels = np.random.default_rng(13).integers(0, 4, N)
    eps = feature_kernel_accuracy(phi, N)["relative_error"]
    K_pool = feature_kernel(phi, N)
    D, P = pool_spectrum(K_pool, labels, 4)
    Dl, Pl, method = feature_pool_spectrum(phi, labels, 4, rcond=None, relative_error=eps)
    assert method == "gram"
    floor, floor_l = accuracy_floor(D, eps), accuracy_floor(Dl, eps)
    assert floor_l == pytest.approx(floor, rel=1e-9)
    scale_dense = np.trace(K_pool) / N
    scale_low = np.sum(phi**2) / (p * N)
    assert scale_low == pytest.approx(scale_dense, rel=1e-12)
    sizes, target = [10, 37, N // 2, N], np.eye(4) - 0.25
    grid, fits, _ = predict_grid(D, P, target, sizes, LAMBDAS, (2, 20), floor=floor, scale=scale_dense)
    grid_l, fits_l, _ = predict_grid(Dl, Pl, target, sizes, LAMBDAS, (2, 20), floor=floor_l, scale=scale_low)
    assert_columns_close(grid_l, grid, atol={"gamma": 1e-12})
    assert_fits_close(fits_l, fits)
