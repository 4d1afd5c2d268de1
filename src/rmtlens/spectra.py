"""Eigendecompositions of kernel blocks, always in float64."""

from __future__ import annotations

import numpy as np
import scipy.linalg


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


def train_test_blocks(
    kernel: np.ndarray, n_pool: int, train_index: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Training block ``K[idx, idx]`` (n x n) and test block ``K[test, idx]`` (m x n).

    ``kernel`` is the stored ``(N_pool + m, N_pool)`` array (pool rows, then test
    rows); a memory map works and only the needed columns are read.
    """
    if kernel.ndim != 2 or kernel.shape[1] != n_pool or kernel.shape[0] < n_pool:
        raise ValueError(f"kernel must have shape (N_pool + m, {n_pool}), got {kernel.shape}")
    idx = np.asarray(train_index)
    cols = np.asarray(kernel[:, idx], dtype=np.float64)
    return cols[idx], cols[n_pool:]


def pool_spectrum(pool_kernel: np.ndarray, labels: np.ndarray, n_classes: int):
    """Spectrum of the whole pool kernel and the one-hot labels in its eigenbasis.

    Returns
    -------
    eigvals : (N_pool,) descending eigenvalues ``D`` of ``K_pool``.
    proj_onehot : (N_pool, C) ``Vᵀ E`` with ``E`` the one-hot label matrix. Any
        target linear in the one-hot labels has coefficients ``Vᵀ Y`` computable
        from it (rows of E sum to one, so ``Vᵀ 1`` is its row sum).
    """
    d, V = eigh_descending(pool_kernel)
    onehot = np.eye(n_classes)[np.asarray(labels)]
    return d, V.T @ onehot


def check_kernel(kernel: np.ndarray, n_pool: int, symmetry_rtol: float = 1e-6) -> None:
    """Raise ``ValueError`` unless ``kernel`` is a finite (N_pool + m, N_pool) kernel
    whose pool block is symmetric to ``symmetry_rtol`` (relative to its largest entry)."""
    if kernel.ndim != 2 or kernel.shape[1] != n_pool or kernel.shape[0] < n_pool:
        raise ValueError(f"kernel must have shape (N_pool + m, {n_pool}), got {kernel.shape}")
    block = np.asarray(kernel[:n_pool], dtype=np.float64)
    if not np.all(np.isfinite(block)) or not np.all(np.isfinite(np.asarray(kernel[n_pool:]))):
        raise ValueError("kernel contains NaN or infinite values")
    scale = np.abs(block).max()
    asym = np.abs(block - block.T).max()
    if asym > symmetry_rtol * scale:
        raise ValueError(
            f"kernel pool block is not symmetric: max |K - Kᵀ| = {asym:.3g} "
            f"(> {symmetry_rtol:g} x max |K| = {scale:.3g})"
        )
