"""Eigendecompositions of kernel blocks, always in float64."""

from __future__ import annotations

import os

import numpy as np
import scipy.linalg

from rmtlens.inputs.targets import target_basis

EIGH_DRIVERS = ("evd", "evr", "ev", "numpy", "cuda")
"""Drivers :func:`eigh_descending` accepts: LAPACK's ``syevd`` (divide and conquer),
``syevr`` (MRRR) and ``syev`` (QR iteration) through :func:`scipy.linalg.eigh`,
``numpy.linalg.eigh`` (numpy's own LAPACK, ``syevd``), and ``torch.linalg.eigh`` on a
CUDA device (float64, cuSOLVER)."""

EIGH_DRIVER = "evd"
"""The CPU driver of every float64 eigendecomposition (the one place it is chosen):
``syevd`` took the least CPU time of the LAPACK drivers in ``bench/eigh_drivers.py`` at
n = 2000 and 4000, with eigenvectors orthogonal to round-off (bench/README.md)."""

EIGH_BYTES_PER_ENTRY = 40
"""Peak bytes per kernel entry of an ``eigh`` job on the CPU driver (measured peak RSS
above the interpreter ≈ 32-33 n² bytes for ``syevd`` in ``bench/eigh_drivers.py``,
rounded up: the job's kernel block, the symmetrised copy LAPACK overwrites with the
eigenvectors, its ``2n²`` workspace, then the reversed copy)."""


def cuda_available() -> bool:
    """Whether torch sees a CUDA device; torch is imported only where an NVIDIA driver
    is loaded, so a CPU-only job does not pay for the import."""
    if not os.path.exists("/proc/driver/nvidia/version"):
        return False
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def eigh_driver(prefer_cuda: bool = True) -> str:
    """The driver an eigendecomposition job uses: ``"cuda"`` when a CUDA device is
    present (and wanted), else :data:`EIGH_DRIVER`."""
    return "cuda" if prefer_cuda and cuda_available() else EIGH_DRIVER


def _eigh_ascending(K: np.ndarray, driver: str) -> tuple[np.ndarray, np.ndarray]:
    """Ascending eigenvalues and eigenvectors of the exactly symmetric float64 ``K``
    (C-contiguous; overwritten by the LAPACK drivers)."""
    if driver == "numpy":
        return np.linalg.eigh(K)
    if driver == "cuda":
        import torch

        d, U = torch.linalg.eigh(torch.from_numpy(K).to("cuda"))
        return d.cpu().numpy(), U.cpu().numpy()
    # K is exactly symmetric, so its transpose (a Fortran-ordered view of the same
    # buffer, holding the same numbers in the same places) goes to LAPACK without the
    # copy scipy would make of a C-ordered array
    return scipy.linalg.eigh(K.T, driver=driver, overwrite_a=True, check_finite=False)


def eigh_descending(kernel: np.ndarray, driver: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (descending) and orthonormal eigenvectors (columns) of a symmetric kernel.

    Parameters
    ----------
    kernel : (n, n) symmetric kernel, any float dtype.
    driver : one of :data:`EIGH_DRIVERS`; ``None``: :data:`EIGH_DRIVER`.

    Returns
    -------
    eigvals : (n,) float64, descending; eigvecs : (n, n) float64, C-ordered,
    orthonormal columns (each eigenvector's sign is the driver's).

    The matrix is symmetrised ``(K + Kᵀ)/2`` in float64 first, so round-off
    asymmetry of the stored kernel does not leak into the spectrum.
    """
    if driver is None:
        driver = EIGH_DRIVER
    if driver not in EIGH_DRIVERS:
        raise ValueError(f"unknown eigh driver {driver!r}; expected one of {EIGH_DRIVERS}")
    K = np.asarray(kernel, dtype=np.float64)
    if K.ndim != 2 or K.shape[0] != K.shape[1]:
        raise ValueError(f"kernel must be square, got shape {K.shape}")
    if not np.all(np.isfinite(K)):
        raise ValueError("kernel contains NaN or infinite values")
    K = 0.5 * (K + K.T)  # exactly symmetric: floating-point addition commutes
    d, U = _eigh_ascending(K, driver)
    del K
    return d[::-1].copy(), U[:, ::-1].copy()


def permuted_eigh(
    eigvals: np.ndarray, eigvecs: np.ndarray, index: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Eigendecomposition of ``K[index][:, index]`` from that of ``K``, for ``index`` a
    permutation of ``range(N)``.

    ``K[index][:, index] = P K Pᵀ`` with ``P`` the permutation matrix, so ``K = V D Vᵀ``
    gives ``P K Pᵀ = (P V) D (P V)ᵀ``: the same eigenvalues and the eigenvectors with
    their rows permuted, exact (no arithmetic) and as accurate as ``(D, V)`` itself. It
    is not bit-identical to an ``eigh`` of the permuted matrix (LAPACK's round-off
    depends on the order), which agrees with it to round-off up to the sign of each
    eigenvector and a rotation within degenerate eigenspaces.

    Parameters
    ----------
    eigvals : (N,) eigenvalues of ``K`` (returned as a copy, in the same order).
    eigvecs : (N, N) eigenvectors of ``K`` as columns.
    index : (N,) integer permutation of ``range(N)``.

    Returns
    -------
    eigvals : (N,) float64; eigvecs : (N, N) float64, C-ordered, ``eigvecs[index]``.
    """
    d = np.asarray(eigvals, dtype=np.float64)
    V = np.asarray(eigvecs)
    idx = np.asarray(index)
    n = d.shape[0] if d.ndim == 1 else -1
    if d.ndim != 1 or V.shape != (n, n):
        raise ValueError(f"need eigvals (N,) and eigvecs (N, N); got {d.shape} and {V.shape}")
    if idx.shape != (n,) or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"index must be an integer array of shape ({n},), got {idx.dtype} {idx.shape}")
    if not np.array_equal(np.sort(idx), np.arange(n)):
        raise ValueError(f"index is not a permutation of range({n})")
    return d.copy(), np.ascontiguousarray(V[idx], dtype=np.float64)


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
    return d, label_projections(V, labels, n_classes)


def label_projections(eigvecs: np.ndarray, outcomes: np.ndarray, n_columns: int) -> np.ndarray:
    """The targets' basis in an eigenbasis: ``Vᵀ E`` (N x C) for eigenvectors ``V``
    (N x N, columns) and ``E`` = :func:`rmtlens.inputs.targets.target_basis` of
    ``outcomes`` (the one-hot matrix of (N,) integer labels, or (N, q) real targets)."""
    V = np.asarray(eigvecs)
    outcomes = np.asarray(outcomes)
    if V.ndim != 2 or outcomes.ndim not in (1, 2) or len(outcomes) != V.shape[0]:
        raise ValueError(f"need eigvecs (N, K) and outcomes (N,) or (N, q); got {V.shape} and {outcomes.shape}")
    return V.T @ target_basis(outcomes, n_columns)


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
