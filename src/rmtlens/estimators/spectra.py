"""Eigendecompositions of kernel blocks, always in float64."""

from __future__ import annotations

import numpy as np
import scipy.linalg

from rmtlens.inputs.targets import target_basis


def eigh_descending(kernel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (descending) and orthonormal eigenvectors (columns) of a symmetric kernel.

    The matrix is symmetrised ``(K + Kᵀ)/2`` in float64 first, so round-off
    asymmetry of the stored kernel does not leak into the spectrum.
    """
    K = np.asarray(kernel, dtype=np.float64)
    if K.ndim != 2 or K.shape[0] != K.shape[1]:
        raise ValueError(f"kernel must be square, got shape {K.shape}")
    if not np.all(np.isfinite(K)):
        raise ValueError("kernel contains NaN or infinite values")
    K = 0.5 * (K + K.T)
    d, U = scipy.linalg.eigh(K, driver="evd", overwrite_a=True, check_finite=False)
    return d[::-1].copy(), U[:, ::-1].copy()


def _check_layout(kernel: np.ndarray, n_pool: int) -> None:
    if kernel.ndim != 2 or kernel.shape[1] != n_pool or kernel.shape[0] < n_pool:
        raise ValueError(f"kernel must have shape (N_pool + m, {n_pool}), got {kernel.shape}")


def kernel_train_block(kernel: np.ndarray, n_pool: int, train_index: np.ndarray) -> np.ndarray:
    """Training block ``K[idx, idx]`` (n x n, float64) of the stored ``(N_pool + m, N_pool)``
    kernel (pool rows, then test rows).

    Rows are selected first: on a memory map only the n training rows are read, not a
    strided column slice through the whole file.
    """
    _check_layout(kernel, n_pool)
    idx = np.asarray(train_index)
    return np.asarray(kernel[idx], dtype=np.float64)[:, idx]


def kernel_test_block(kernel: np.ndarray, n_pool: int, train_index: np.ndarray) -> np.ndarray:
    """Test-versus-train block ``K[test, idx]`` (m x n, float64) of the stored kernel;
    on a memory map only the m test rows are read."""
    _check_layout(kernel, n_pool)
    return np.asarray(kernel[n_pool:], dtype=np.float64)[:, np.asarray(train_index)]


def pool_spectrum(pool_kernel: np.ndarray, labels: np.ndarray, n_classes: int):
    """Spectrum of the whole pool kernel and the one-hot labels in its eigenbasis.

    ``labels`` are (N_pool,) class indices, or (N_pool, C) real-valued targets
    (:func:`rmtlens.inputs.targets.target_basis`), whose own coefficients are then stored.

    Returns
    -------
    eigvals : (N_pool,) descending eigenvalues ``D`` of ``K_pool``.
    proj_onehot : (N_pool, C) ``Vᵀ E`` with ``E`` the one-hot label matrix (or the
        real-valued targets). Any target linear in ``E`` has coefficients ``Vᵀ Y``
        computable from it (rows of a one-hot E sum to one, so ``Vᵀ 1`` is its row sum).
    """
    d, V = eigh_descending(pool_kernel)
    return d, V.T @ target_basis(labels, n_classes)


def check_kernel(
    kernel: np.ndarray, n_pool: int, symmetry_rtol: float = 1e-6, block_rows: int = 2048
) -> None:
    """Raise ``ValueError`` unless ``kernel`` is a finite (N_pool + m, N_pool) kernel
    whose pool block is symmetric to ``symmetry_rtol`` (relative to its largest entry).

    Reads ``block_rows`` rows (and the matching pool columns) at a time, so a memory-mapped
    kernel is checked in ``O(block_rows * N_pool)`` memory, not a copy of the whole pool block.
    """
    _check_layout(kernel, n_pool)
    scale = asym = 0.0
    for start in range(0, kernel.shape[0], block_rows):
        rows = np.asarray(kernel[start : start + block_rows], dtype=np.float64)
        if not np.all(np.isfinite(rows)):
            raise ValueError("kernel contains NaN or infinite values")
        stop = min(start + rows.shape[0], n_pool)
        if start < stop:  # pool rows: compare with the pool columns of the same indices
            pool_rows = rows[: stop - start]
            mirror = np.asarray(kernel[:n_pool, start:stop], dtype=np.float64).T
            scale = max(scale, float(np.abs(pool_rows).max()))
            asym = max(asym, float(np.abs(pool_rows - mirror).max()))
    if asym > symmetry_rtol * scale:
        raise ValueError(
            f"kernel pool block is not symmetric: max |K - Kᵀ| = {asym:.3g} "
            f"(> {symmetry_rtol:g} x max |K| = {scale:.3g})"
        )
