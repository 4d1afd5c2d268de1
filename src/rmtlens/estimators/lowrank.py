"""Low-rank spectral path for feature kernels ``K = Φ Φᵀ / p`` (SPEC §2.1).

A feature kernel has rank at most ``p``. Everything the ridge, theory and flow
paths need is had from the embeddings without any ``n x n`` (let alone
``N_pool x N_pool``) array once ``p < n``:

- training block: the thin SVD ``Φ_n = U diag(s) Wᵀ`` gives the eigen-pairs
  ``d = s²/p`` with the ``n x r`` range basis ``U`` (``r = min(n, p)``); the
  complement of ``U`` is the null space, handled analytically
  (:class:`rmtlens.estimators.ridge.NullSpace`);
- test block against the basis: ``K* U = Φ* (Φ_nᵀ U) / p`` (m x r); ``K*``
  vanishes on the null space because ``K* v = Φ* (Φ_nᵀ v)/p`` and
  ``Φ_nᵀ v = 0`` there;
- pool spectrum: the eigen-pairs ``(ω_k, w_k)`` of the ``p x p`` Gram
  ``Φ_poolᵀ Φ_pool`` give the non-zero pool eigenvalues ``D_k = ω_k/p`` and
  eigenvectors ``V_k = Φ_pool w_k / √ω_k``, so ``V_kᵀ E = w_kᵀ (Φ_poolᵀ E)/√ω_k``;
  the target energy on the null space (``EᵀE − Σ_k (V_kᵀE)ᵀ(V_kᵀE)``, a C x C
  matrix) is stored as C rows of eigenvalue 0, which is all the deterministic
  equivalent reads of it (it depends on the null space only through that sum).

When ``p ≥ n`` (training block) or ``p ≥ N_pool`` (pool) the square kernel is the
smaller array: it is formed from the embeddings and decomposed densely, as for
the eNTK. Either way the outputs have the shapes the dense path's consumers read.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from rmtlens.estimators.accuracy import (
    DEFAULT_FLOOR_TOLERANCE,
    DEFAULT_SAFETY,
    accuracy_floor,
    apply_floor,
    flag_resolved,
    path_floor,
)
from rmtlens.estimators.ridge import null_space, ridge_path_in_eigenbasis
from rmtlens.estimators.spectra import eigh_descending
from rmtlens.inputs.targets import target_basis


def _embeddings(phi, name: str) -> np.ndarray:
    arr = np.asarray(phi, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"{name} must be a non-empty (rows, p) array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def low_rank_applies(n: int, p: int) -> bool:
    """Whether the thin factorisation is the cheaper one: ``p < n``."""
    return p < n


def feature_factor(phi_train) -> tuple[np.ndarray, np.ndarray, str]:
    """Eigen-pairs of the training block ``K = Φ Φᵀ/p`` from its embedding rows.

    Parameters
    ----------
    phi_train : (n, p) embeddings of the training points.

    Returns
    -------
    eigvals : (r,) descending eigenvalues, ``r = min(n, p)`` (the rest are zero).
    basis : (n, r) orthonormal eigenvectors; square when ``p ≥ n``.
    method : ``"svd"`` (thin SVD, ``p < n``) or ``"dense"`` (eigh of the n x n block).
    """
    phi = _embeddings(phi_train, "phi_train")
    n, p = phi.shape
    if low_rank_applies(n, p):
        U, s, _ = scipy.linalg.svd(phi, full_matrices=False, lapack_driver="gesdd", check_finite=False)
        return s**2 / p, U, "svd"
    d, U = eigh_descending(phi @ phi.T / p)
    return d, U, "dense"


def feature_test_basis(phi_test, phi_train, basis) -> np.ndarray:
    """``K* U = Φ* (Φ_nᵀ U) / p``, shape (m, r), without the m x n block."""
    phi_s = _embeddings(phi_test, "phi_test")
    phi = _embeddings(phi_train, "phi_train")
    U = np.asarray(basis, dtype=np.float64)
    if phi_s.shape[1] != phi.shape[1] or U.shape[0] != phi.shape[0]:
        raise ValueError(f"phi_test {phi_s.shape}, phi_train {phi.shape} and basis {U.shape} disagree")
    return phi_s @ (phi.T @ U) / phi.shape[1]


def ridge_path_low_rank(
    eigvals,
    basis,
    y_train,
    test_basis,
    y_test,
    lambdas,
    rcond: float | None = 1e-10,
    block_size: int = 2**24,
    floor: float | None = None,
    safety: float = DEFAULT_SAFETY,
    floor_tolerance: float | None = DEFAULT_FLOOR_TOLERANCE,
) -> dict[str, np.ndarray]:
    """:func:`rmtlens.estimators.ridge.ridge_path` from a thin eigendecomposition.

    Parameters
    ----------
    eigvals : (r,) eigenvalues of the training kernel on its range basis.
    basis : (n, r) orthonormal columns ``U``, ``r ≤ n``; the kernel is 0 on their
        orthogonal complement, and so is ``K*`` (feature kernels).
    y_train : (n, C) or (n,) training targets.
    test_basis : (m, r) ``K* U`` (:func:`feature_test_basis`).
    y_test : (m, C) or (m,) test targets.
    lambdas : (L,) absolute ridges ``λ ≥ 0``.
    rcond : relative eigenvalue cutoff, as for the dense path (used when ``floor`` is None).
    floor : absolute eigenvalue floor, as for the dense path: the kernel's accuracy floor
        for the block size ``n`` (:func:`rmtlens.estimators.accuracy.accuracy_floor` with
        ``n=``); range directions at or below it join the null space.
    safety : the floor's safety factor (sets the band of ``resolved``).
    floor_tolerance : as for the dense path: the largest relative change of test risk, GCV
        and LOO at half and twice the floor that a resolved row may show.

    Returns
    -------
    The dict of :func:`ridge_path` (same keys, same definitions, ``resolved``,
    ``resolved_floor`` and ``floor_change`` included; the ``n − r`` exact zeros of the
    complement never fall in the resolution band of a positive floor, nor between a
    floor and its half), computed in
    ``O(n r (L C + r))`` time and ``O(n (r + L C))`` memory.
    """
    d = np.asarray(eigvals, dtype=np.float64)
    U = np.asarray(basis, dtype=np.float64)
    Y = np.asarray(y_train, dtype=np.float64)
    A = np.asarray(test_basis, dtype=np.float64)
    Ys = np.asarray(y_test, dtype=np.float64)
    lam = np.atleast_1d(np.asarray(lambdas, dtype=np.float64))
    Y = Y[:, None] if Y.ndim == 1 else Y
    Ys = Ys[:, None] if Ys.ndim == 1 else Ys
    if d.ndim != 1 or U.ndim != 2 or U.shape[1] != d.size or U.shape[0] < d.size:
        raise ValueError(f"eigvals (r,) and basis (n, r) with r ≤ n disagree: {d.shape} and {U.shape}")
    n = U.shape[0]
    if Y.shape[0] != n:
        raise ValueError(f"y_train has {Y.shape[0]} rows, the basis has n = {n}")
    if A.ndim != 2 or A.shape[1] != d.size:
        raise ValueError(f"test_basis must have shape (m, {d.size}), got {A.shape}")
    if Ys.shape != (A.shape[0], Y.shape[1]):
        raise ValueError(f"y_test must have shape {(A.shape[0], Y.shape[1])}, got {Ys.shape}")
    if np.any(lam < 0) or not np.all(np.isfinite(lam)):
        raise ValueError("lambdas must be finite and non-negative")
    for name, arr in (("eigvals", d), ("basis", U), ("test_basis", A), ("y_train", Y), ("y_test", Ys)):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contains NaN or infinite values")
    floor = path_floor(d, floor, rcond, safety, n=n, caller="ridge_path_low_rank")
    Yt = U.T @ Y
    null = null_space(U, Y, Yt)

    def path_at(cutoff, lams):
        return ridge_path_in_eigenbasis(apply_floor(d, cutoff), U, Yt, A, Ys, lams, block_size, null=null, floor=cutoff)

    out = path_at(floor, lam)
    return flag_resolved(out, d, n, lam, floor, safety, floor_tolerance, path_at)


def feature_pool_spectrum(
    phi_pool,
    labels,
    n_classes: int,
    rcond: float | None = 1e-10,
    relative_error: float = 0.0,
    safety: float = DEFAULT_SAFETY,
):
    """:func:`rmtlens.estimators.spectra.pool_spectrum` of ``K_pool = Φ Φᵀ/p`` from
    the ``p x p`` Gram (``p < N_pool``), or from the dense pool kernel (``p ≥ N_pool``).

    The directions kept with their own projections are those above the floor
    ``accuracy_floor(D, relative_error, safety, rcond)`` of the ``N_pool x N_pool`` pool
    kernel (SPEC §2): ``rcond · max D`` when ``rcond`` is given, else the accuracy floor
    (``rcond=None``), the same floor the theory applies to ``D``.

    Returns
    -------
    eigvals : (N_pool,) descending ``D``: the Gram's ``ω/p``, then zeros.
    proj_onehot : (N_pool, C) ``Vᵀ E`` on the directions with ``D`` above the floor
        (``E``: the one-hot labels, or (N_pool, C) real-valued targets given as ``labels``);
        the rest of ``E``'s energy (null space and clipped directions) as C rows
        ``B`` with ``BᵀB = EᵀE − Σ_k (V_kᵀE)ᵀ(V_kᵀE)`` placed at zero eigenvalues,
        then zero rows. Every quadratic form ``Σ_{null} ||(V_kᵀE) M||²`` of the
        dense decomposition is reproduced exactly.
    method : ``"gram"`` or ``"dense"``.
    """
    phi = _embeddings(phi_pool, "phi_pool")
    N, p = phi.shape
    labels = np.asarray(labels)
    if labels.shape[:1] != (N,):
        raise ValueError(f"labels must have {N} rows, got shape {labels.shape}")
    onehot = target_basis(labels, n_classes)  # one-hot classes, or real-valued targets as they are
    if not low_rank_applies(N, p) or N < p + n_classes:
        d, V = eigh_descending(phi @ phi.T / p)
        return d, V.T @ onehot, "dense"
    omega, W = scipy.linalg.eigh(phi.T @ phi, driver="evd", check_finite=False)
    omega, W = omega[::-1], W[:, ::-1]
    D = np.zeros(N)
    D[:p] = omega / p
    floor = accuracy_floor(D, relative_error, safety, rcond=rcond)
    keep = D[:p] > floor
    proj = np.zeros((N, n_classes))
    proj[:p][keep] = (W[:, keep].T @ (phi.T @ onehot)) / np.sqrt(omega[keep])[:, None]
    rest = onehot.T @ onehot - proj.T @ proj  # C x C energy off the kept directions
    w, Q = np.linalg.eigh(0.5 * (rest + rest.T))
    first_zero = p  # D[p:] == 0 exactly
    proj[first_zero : first_zero + n_classes] = np.sqrt(np.clip(w, 0.0, None))[:, None] * Q.T
    return D, proj, "gram"
