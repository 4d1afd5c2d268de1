"""Accuracy floors, resolved ridge rows and the ridgeless LOO limit (SPEC §2), against
independent computations: exact leave-one-out refits, numpy eigvalsh, float64 kernels."""

import numpy as np
import pytest

from rmtlens.estimators import (
    accuracy_floor,
    null_mask,
    resolved_ridges,
    ridge_path,
)
from rmtlens.estimators.accuracy import ROUNDOFF


def rank_deficient_features(seed=0):
    """30 x 6 features of rank 6 with duplicate rows, and one point that alone spans a direction."""
    rng = np.random.default_rng(seed)
    phi = rng.standard_normal((30, 6))
    phi[:5] = phi[5:10]  # five duplicated feature vectors
    phi[:, 5] = 0.0
    phi[29, 5] = 1.3  # point 29 alone has a component along the sixth feature
    y = np.eye(3)[rng.integers(0, 3, 30)] - 1 / 3
    return phi, y


def exact_ridgeless_loo(phi, y):
    """Mean squared leave-one-out residual of the minimum-norm interpolant, refitted per point
    in feature space (lstsq), never through the kernel's eigendecomposition."""
    terms = []
    for i in range(len(phi)):
        keep = np.arange(len(phi)) != i
        w = np.linalg.lstsq(phi[keep], y[keep], rcond=None)[0]
        terms.append(np.sum((y[i] - phi[i] @ w) ** 2))
    return float(np.mean(terms)), np.array(terms)


def test_ridgeless_loo_on_a_rank_deficient_kernel_with_duplicates_equals_exact_refits():
    phi, y = rank_deficient_features()
    K = phi @ phi.T / phi.shape[1]
    d, U = np.linalg.eigh(K)
    expected, terms = exact_ridgeless_loo(phi, y)
    assert np.all(np.isfinite(terms)) and terms[29] > 0  # the lone point is predicted from the others
    for floor in (None, accuracy_floor(d, 1e-7)):  # rcond default, and a float32-like floor
        path = ridge_path(d, U, y, K[:4], y[:4], [0.0], floor=floor)
        assert np.isfinite(path["loo"][0])
        assert path["loo"][0] == pytest.approx(expected, rel=1e-8)


def test_ridgeless_loo_of_a_full_rank_kernel_equals_exact_refits():
    rng = np.random.default_rng(3)
    phi = rng.standard_normal((25, 40))
    y = rng.standard_normal((25, 2))
    K = phi @ phi.T / 40
    d, U = np.linalg.eigh(K)
    expected, _ = exact_ridgeless_loo(phi, y)
    path = ridge_path(d, U, y, K[:3], y[:3], [0.0, 1e-9])
    assert path["loo"][0] == pytest.approx(expected, rel=1e-8)
    assert path["loo"][1] == pytest.approx(expected, rel=1e-5)  # continuous in λ → 0⁺


def test_floor_and_resolved_rows_against_an_independent_computation():
    rng = np.random.default_rng(1)
    n = 50
    phi = rng.standard_normal((n, n)) * np.arange(1, n + 1) ** -2.0  # eigenvalues from ~1 to ~1e-13
    K = phi @ phi.T
    d_np = np.linalg.eigvalsh(K)
    eps, safety = 1e-8, 10.0
    floor = accuracy_floor(d_np[::-1], eps, safety)
    expected_floor = safety * (eps + n * 2.0**-53) * d_np.max()
    assert floor == pytest.approx(expected_floor, rel=1e-12)
    assert np.array_equal(null_mask(d_np, floor), d_np <= expected_floor)
    assert accuracy_floor(d_np, eps, safety, rcond=1e-3) == pytest.approx(1e-3 * d_np.max())
    lambdas = np.geomspace(1e-14, 1e-2, 25) * d_np.max() / n
    band = np.any((d_np > expected_floor / safety) & (d_np <= expected_floor * safety))
    assert band  # this spectrum decays through its floor: small ridges are not resolved
    expected = n * lambdas >= expected_floor
    assert np.array_equal(resolved_ridges(d_np, n, lambdas, floor, safety), expected)
    assert not resolved_ridges(d_np, n, [0.0], floor, safety)[0]
    # a spectrum with a gap of more than safety² around the floor: every row is resolved
    gapped = np.concatenate([np.geomspace(1.0, 1e-3, 20), np.full(5, 1e-12)])
    f = accuracy_floor(gapped, 1e-8, safety)
    assert np.all(resolved_ridges(gapped, 25, [0.0, 1e-20, 1.0], f, safety))
    assert null_mask(gapped, f).sum() == 5


def test_ridge_table_has_resolved_flags_and_no_nan():
    phi, y = rank_deficient_features(2)
    K = phi @ phi.T / 6
    d, U = np.linalg.eigh(K)
    lambdas = np.concatenate([[0.0], np.geomspace(1e-12, 1.0, 9)])
    path = ridge_path(d, U, y, K[:7], y[:7], lambdas, floor=accuracy_floor(d, 0.0))
    assert path["resolved"].dtype == bool and path["resolved"].all()  # rank 6 of 30: a clean gap
    for key, values in path.items():
        assert not np.any(np.isnan(np.asarray(values, dtype=float))), key


def test_floor_includes_the_eigendecomposition_roundoff():
    d = np.array([2.0, 1.0, 0.5])
    assert accuracy_floor(d, 0.0, 4.0) == pytest.approx(4.0 * 3 * ROUNDOFF * 2.0)
    with pytest.raises(ValueError, match="relative_error"):
        accuracy_floor(d, -1.0)
    with pytest.raises(ValueError, match="safety"):
        accuracy_floor(d, 1e-8, safety=0.5)
