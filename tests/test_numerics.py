"""Grids, targets, spectra, feature kernels, estimator statistics and atomic I/O."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rmtlens import io
from rmtlens.estimators import (
    check_kernel,
    eigh_descending,
    kernel_scale,
    kernel_test_block,
    kernel_train_block,
    pool_spectrum,
    ridge_grid,
    sample_size_grid,
    subsample_indices,
)
from rmtlens.inputs import make_targets
from rmtlens.kernels import feature_kernel
from rmtlens.report import estimator_accuracy


def test_sample_size_grid_is_geometric_with_both_ends():
    sizes = sample_size_grid(32, 1000, 6)
    assert sizes[0] == 32 and sizes[-1] == 1000 and len(sizes) == 6
    ratios = np.diff(np.log(sizes))
    assert np.allclose(ratios, ratios.mean(), atol=0.02)
    assert sample_size_grid(5, 7, 10) == [5, 6, 7]
    with pytest.raises(ValueError, match="n_min <= n_max"):
        sample_size_grid(10, 5, 3)


def test_ridge_grid_and_scale():
    grid = ridge_grid(1e-6, 1e2, 9, ridgeless=True)
    assert grid[0] == 0 and np.allclose(np.diff(np.log10(grid[1:])), 1.0)
    assert ridge_grid(1e-3, 1e-1, 3, ridgeless=False)[0] == pytest.approx(1e-3)
    K = np.diag([1.0, 2.0, 3.0])
    assert kernel_scale(np.diag(K)) == pytest.approx(np.trace(K) / 3)
    with pytest.raises(ValueError, match="finite and positive"):
        kernel_scale(np.zeros(3))


def test_subsamples_are_nested_and_seeded():
    a = subsample_indices(100, 10, seed=5)
    b = subsample_indices(100, 40, seed=5)
    np.testing.assert_array_equal(a, b[:10])
    assert len(set(b)) == 40
    assert not np.array_equal(a, subsample_indices(100, 10, seed=6))
    with pytest.raises(ValueError, match="n=101"):
        subsample_indices(100, 101, 0)


def test_targets():
    labels = np.array([0, 2, 1, 2])
    Y = make_targets(labels, 3)
    np.testing.assert_allclose(Y.sum(axis=1), 0, atol=1e-12)
    assert np.argmax(Y, axis=1).tolist() == labels.tolist()
    np.testing.assert_array_equal(make_targets(labels, 3, "onehot"), np.eye(3)[labels])
    np.testing.assert_array_equal(make_targets(labels, 3, "binary", [2])[:, 0], [-1, 1, -1, 1])
    with pytest.raises(ValueError, match="positive_classes"):
        make_targets(labels, 3, "binary")
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        make_targets(labels, 2)


def test_eigh_descending_reconstructs_and_orders():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((30, 30))
    K = A @ A.T
    d, U = eigh_descending(K)
    assert np.all(np.diff(d) <= 0)
    np.testing.assert_allclose(U @ np.diag(d) @ U.T, K, atol=1e-10 * np.abs(K).max())
    np.testing.assert_allclose(U.T @ U, np.eye(30), atol=1e-12)
    with pytest.raises(ValueError, match="NaN"):
        eigh_descending(np.full((2, 2), np.nan))


def test_feature_kernel_blocks_and_pool_spectrum():
    rng = np.random.default_rng(1)
    phi = rng.standard_normal((25, 7)).astype(np.float32)
    K = feature_kernel(phi, n_pool=20)
    ref = phi.astype(np.float64) @ phi[:20].astype(np.float64).T / 7
    np.testing.assert_allclose(K, ref, rtol=1e-12)
    assert np.array_equal(K[:20], K[:20].T)
    idx = np.array([3, 0, 11])
    Ktr, Kte = kernel_train_block(K, 20, idx), kernel_test_block(K, 20, idx)
    np.testing.assert_array_equal(Ktr, ref[np.ix_(idx, idx)])
    np.testing.assert_array_equal(Kte, ref[20:][:, idx])
    labels = rng.integers(0, 3, 20)
    d, proj = pool_spectrum(K[:20], labels, 3)
    _, V = np.linalg.eigh(K[:20])
    # |projections| agree with an independent eigendecomposition on the top directions
    np.testing.assert_allclose(np.abs(proj[:7]), np.abs((V[:, ::-1].T @ np.eye(3)[labels])[:7]), atol=1e-8)
    assert np.sum(d > 1e-10 * d[0]) == 7  # rank p


def test_check_kernel_rejects_bad_kernels():
    K = np.eye(4)
    check_kernel(np.vstack([K, np.ones((2, 4))]), 4)
    bad = K.copy()
    bad[0, 1] = 0.5
    with pytest.raises(ValueError, match="not symmetric"):
        check_kernel(bad, 4)
    with pytest.raises(ValueError, match="NaN"):
        check_kernel(np.vstack([K, np.full((1, 4), np.nan)]), 4)
    with pytest.raises(ValueError, match="shape"):
        check_kernel(np.ones((3, 5)), 4)


@pytest.mark.parametrize("block_rows", [1, 3, 7, 100])
def test_check_kernel_in_row_blocks_matches_the_whole_block_check(tmp_path, block_rows):
    """Blocks of any size, on a memory map: the same verdict and the same numbers as
    a direct computation on the whole pool block."""
    rng = np.random.default_rng(4)
    phi = rng.standard_normal((10, 3))
    K = phi @ phi[:8].T
    K[:8] = 0.5 * (K[:8] + K[:8].T)
    path = tmp_path / "k.npy"
    np.save(path, K)
    check_kernel(np.load(path, mmap_mode="r"), 8, block_rows=block_rows)
    K[7, 2] += 1e-3  # in the last pool row: the last, possibly partial, block
    np.save(path, K)
    asym = np.abs(K[:8] - K[:8].T).max()
    with pytest.raises(ValueError, match=f"max \\|K - Kᵀ\\| = {asym:.3g} .* max \\|K\\| = {np.abs(K[:8]).max():.3g}"):
        check_kernel(np.load(path, mmap_mode="r"), 8, block_rows=block_rows)
    check_kernel(np.load(path, mmap_mode="r"), 8, symmetry_rtol=1.1 * asym / np.abs(K[:8]).max(), block_rows=block_rows)
    K[9, 0] = np.inf  # a test row
    np.save(path, K)
    with pytest.raises(ValueError, match="NaN or infinite"):
        check_kernel(np.load(path, mmap_mode="r"), 8, block_rows=block_rows)


def test_estimator_accuracy_statistics():
    table = pd.DataFrame(
        dict(dataset="d", backbone="b", weights="init", kernel="features",
             n=[10, 50, 50, 50], test_risk=[1.0, 1.0, 2.0, 4.0], gcv=[9.0, 1.1, 2.0, 3.0],
             loo=[1.0, 1.0, 2.0, 4.0], train_risk=[0.5, 0.5, 1.0, 2.0])
    )
    acc = estimator_accuracy(table, n_min=20).set_index("estimator")
    assert acc.loc["GCV", "median_rel_error"] == pytest.approx(0.1)
    assert acc.loc["GCV", "p90_rel_error"] == pytest.approx(np.quantile([0.1, 0.0, 0.25], 0.9))
    assert acc.loc["LOO", "median_rel_error"] == 0 and acc.loc["GCV", "rows"] == 3
    with pytest.raises(ValueError, match="n_min"):
        estimator_accuracy(table, n_min=100)


def test_atomic_writes_leave_nothing_on_failure(tmp_path):
    target = tmp_path / "a" / "x.npy"
    io.save_npy(target, np.arange(3))
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            np.save(tmp, np.arange(5))
            raise RuntimeError("killed")
    np.testing.assert_array_equal(np.load(target), np.arange(3))
    assert sorted(p.name for p in target.parent.iterdir()) == ["x.npy"]
    import os

    dead = target.parent / ".x.pid999999999.abc.partial.npy"  # no such process
    alive = target.parent / f".x.pid{os.getpid()}.abc.partial.npy"
    dead.write_bytes(b"half")
    alive.write_bytes(b"half")
    assert io.remove_partials(tmp_path) == [dead] and not dead.exists() and alive.exists()
    alive.unlink()
    io.save_npz(tmp_path / "y.npz", a=np.ones(2), b=np.zeros(1))
    assert set(io.load_npz(tmp_path / "y.npz")) == {"a", "b"}
