"""Kernel ridge regression from kernel matrices: the notebook-level entry points (SPEC §2).

The workflow stores kernels and eigendecompositions as files; these functions take
the kernel blocks themselves, eigendecompose the training block once in float64
(:func:`rmtlens.estimators.spectra.eigh_descending`) and evaluate
:func:`rmtlens.estimators.ridge.ridge_path` on it, so every number is the one the
workflow reports for the same blocks and ridges.

Conventions: ``K_train`` is the ``(n, n)`` kernel of the training inputs, ``K_test``
the ``(m, n)`` kernel of test against training inputs, targets are ``(n, C)`` or
``(n,)``; the ridge ``λ`` is absolute and the system solved is ``K_train + nλI``.
A kernel's natural scale is ``s = tr(K_train)/n``; ``lambda_rel = λ/s`` is the
dimensionless ridge (the workflow's grids are relative to ``tr(K_pool)/N_pool``).
"""

from __future__ import annotations

import numpy as np

from rmtlens.estimators.ridge import ridge_path
from rmtlens.estimators.spectra import eigh_descending

RIDGE_PATH_COLUMNS = ("lambda", "lambda_rel", "test_risk", "test_error", "train_risk", "gcv", "loo", "dof")
"""Columns of :func:`ridge_path_table`, in order."""

SYMMETRY_RTOL = 1e-6
"""Largest ``max|K − Kᵀ| / max|K|`` accepted for a training kernel (round-off of ``Φ Φᵀ``)."""


def training_eigh(k_train, name: str = "k_train") -> tuple[np.ndarray, np.ndarray]:
    """Float64 eigendecomposition of a symmetric training kernel, checked at the boundary.

    Parameters
    ----------
    k_train : (n, n) symmetric kernel (any float dtype; converted to float64).
    name : the argument's name in error messages.

    Returns
    -------
    eigvals : (n,) float64, descending; eigvecs : (n, n) float64, orthonormal columns.

    Raises
    ------
    ValueError naming ``name`` when the kernel is not square, not finite, or not
    symmetric to ``SYMMETRY_RTOL`` (it is symmetrised exactly before ``eigh``).
    """
    K = np.asarray(k_train, dtype=np.float64)
    if K.ndim != 2 or K.shape[0] != K.shape[1] or K.shape[0] < 1:
        raise ValueError(f"{name} must be a square (n, n) kernel, got shape {K.shape}")
    if not np.all(np.isfinite(K)):
        raise ValueError(f"{name} contains NaN or infinite values")
    size = float(np.max(np.abs(K)))
    asym = float(np.max(np.abs(K - K.T)))
    if asym > SYMMETRY_RTOL * size:
        raise ValueError(
            f"{name} is not symmetric: max|K − Kᵀ| = {asym:.3g} exceeds {SYMMETRY_RTOL:g} · max|K| = "
            f"{SYMMETRY_RTOL * size:.3g}; pass the training block K[train][:, train]"
        )
    return eigh_descending(0.5 * (K + K.T))


def kernel_ridge_scale(k_train) -> float:
    """The scale ``tr(K_train)/n`` of a training kernel (units of the kernel), float."""
    K = np.asarray(k_train, dtype=np.float64)
    if K.ndim != 2 or K.shape[0] != K.shape[1] or K.shape[0] < 1:
        raise ValueError(f"k_train must be a square (n, n) kernel, got shape {K.shape}")
    scale = float(np.trace(K)) / K.shape[0]
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"k_train has trace/n = {scale!r}; a kernel's diagonal must be positive")
    return scale


def ridge_path_table(k_train, y_train, k_test, y_test, lambdas, *, relative: bool = False, rcond: float = 1e-10):
    """The ridge path as a pandas DataFrame: one row per ridge, from the kernel blocks.

    Parameters
    ----------
    k_train : (n, n) symmetric training kernel ``K``.
    y_train : (n, C) or (n,) training targets.
    k_test : (m, n) test-versus-train kernel ``K*``.
    y_test : (m, C) or (m,) test targets.
    lambdas : (L,) ridges ``λ ≥ 0``: absolute (the system is ``K + nλI``), or, with
        ``relative=True``, multiples of the scale ``s = tr(K)/n``.
    relative : read ``lambdas`` as relative ridges ``λ/s``.
    rcond : relative eigenvalue cutoff; smaller eigenvalues of ``K`` count as zero
        (``λ = 0`` is the ridgeless pseudo-inverse limit).

    Returns
    -------
    pandas.DataFrame with L rows and float64 columns :data:`RIDGE_PATH_COLUMNS`:
    ``lambda`` (absolute), ``lambda_rel`` (``λ/s``), ``test_risk`` (mean over test
    rows of the squared error summed over the C outputs), ``test_error`` (share of
    test rows whose argmax, or sign when C = 1, is wrong), ``train_risk`` (same units
    as ``test_risk``, on the training rows), ``gcv`` and ``loo`` (training-data
    estimates of ``test_risk``, same units) and ``dof`` (``tr S``, between 0 and n).
    """
    import pandas as pd

    scale = kernel_ridge_scale(k_train)
    lam = np.atleast_1d(np.asarray(lambdas, dtype=np.float64))
    if lam.ndim != 1 or lam.size == 0:
        raise ValueError(f"lambdas must be a non-empty 1-d array, got shape {lam.shape}")
    absolute = lam * scale if relative else lam
    eigvals, eigvecs = training_eigh(k_train)
    path = ridge_path(eigvals, eigvecs, y_train, k_test, y_test, absolute, rcond=rcond, floor_tolerance=None)
    path["lambda_rel"] = absolute / scale
    return pd.DataFrame({c: np.asarray(path[c], dtype=np.float64) for c in RIDGE_PATH_COLUMNS})


def _training_estimate(k_train, y_train, lam: float, key: str, rcond: float) -> float:
    lam = float(lam)
    if not (np.isfinite(lam) and lam >= 0):
        raise ValueError(f"lam must be a finite ridge ≥ 0, got {lam!r}")
    eigvals, eigvecs = training_eigh(k_train)
    Y = np.asarray(y_train, dtype=np.float64)
    # the path needs test rows; the first training row serves (its test columns are unused)
    path = ridge_path(eigvals, eigvecs, Y, np.asarray(k_train, dtype=np.float64)[:1], Y[:1], [lam], rcond=rcond,
                      floor_tolerance=None)  # no flags reported: the floor-sensitivity solves would be wasted
    return float(path[key][0])


def gcv(k_train, y_train, lam: float, *, rcond: float = 1e-10) -> float:
    """Generalised cross-validation of kernel ridge regression at one ridge (SPEC §2).

    ``GCV(λ) = (1/n)||(I − S)Y||² / (1 − tr(S)/n)²`` with ``S = K(K + nλI)⁻¹``;
    at ``λ = 0`` the limit ``λ → 0⁺``.

    Parameters
    ----------
    k_train : (n, n) symmetric training kernel.
    y_train : (n, C) or (n,) targets.
    lam : absolute ridge ``λ ≥ 0``.
    rcond : relative eigenvalue cutoff (see :func:`ridge_path_table`).

    Returns
    -------
    float: an estimate of the test risk (units of the squared targets, summed over outputs).
    """
    return _training_estimate(k_train, y_train, lam, "gcv", rcond)


def loo(k_train, y_train, lam: float, *, rcond: float = 1e-10) -> float:
    """Leave-one-out risk of kernel ridge regression at one ridge, in closed form (SPEC §2).

    ``LOO(λ) = (1/n) Σ_i ||((I − S)Y)_i||² / (1 − S_ii)²`` with ``S = K(K + nλI)⁻¹``:
    refitting without point i at the same absolute ridge ``nλ``; at ``λ = 0`` the
    limit ``λ → 0⁺``.

    Parameters
    ----------
    k_train : (n, n) symmetric training kernel.
    y_train : (n, C) or (n,) targets.
    lam : absolute ridge ``λ ≥ 0``.
    rcond : relative eigenvalue cutoff (see :func:`ridge_path_table`).

    Returns
    -------
    float: the mean squared leave-one-out error (summed over outputs).
    """
    return _training_estimate(k_train, y_train, lam, "loo", rcond)
