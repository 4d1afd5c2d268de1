"""Accuracy floors of kernel spectra, and which ridge rows they leave resolved (SPEC §2).

A stored kernel ``K̂ = K + E`` differs from the kernel it stands for by an error ``E``
(float32 pieces of an eNTK, float64 round-off of a feature kernel); its
eigendecomposition adds a backward error of about ``n·u·||K||`` (``u = 2⁻⁵³``).
Every kernel the workflow writes carries a measured or bounded *relative error*
``ε ≈ ||E||₂ / λ_max`` (:mod:`rmtlens.kernels.accuracy`). For an ``n x n`` block
with largest eigenvalue ``λ_max``:

- noise level ``σ = (ε + n·u) · λ_max``: by Weyl's inequality no eigenvalue of ``K̂``
  is off by more than ``||E||₂ + n·u·λ_max ≈ σ``;
- floor ``f = safety · σ``: eigen-directions with ``d ≤ f`` are null (their
  eigenvalue is known to no better than ``1/safety`` of itself, and their
  eigenvectors not at all); ``rcond``, when given, replaces it by ``rcond · λ_max``;
- a ridge row with absolute ridge ``nλ`` is *resolved* when ``nλ ≥ f`` (the ridge,
  not the floor, decides what the directions at the floor contribute) or when the
  spectrum has a gap around the floor: no eigenvalue in ``(f/safety, f·safety]``,
  so no direction's membership in the null space depends on the kernel's error
  or on the choice of ``safety`` within a factor ``safety``.
"""

from __future__ import annotations

import numpy as np

ROUNDOFF = float(np.finfo(np.float64).eps) / 2  # u = 2⁻⁵³, unit round-off of float64
DEFAULT_SAFETY = 10.0


def _spectrum(eigvals) -> np.ndarray:
    d = np.asarray(eigvals, dtype=np.float64)
    if d.ndim != 1 or d.size == 0:
        raise ValueError(f"eigvals must be a non-empty 1-d array, got shape {d.shape}")
    if not np.all(np.isfinite(d)):
        raise ValueError("eigvals contains NaN or infinite values")
    return d


def _size(d: np.ndarray, n: int | None) -> int:
    if n is None:
        return d.size
    if int(n) < d.size:
        raise ValueError(f"n = {n} is smaller than the {d.size} eigenvalues given")
    return int(n)


def noise_level(eigvals, relative_error: float, n: int | None = None) -> float:
    """``σ = (ε + n·u) · λ_max``: the absolute error of every eigenvalue of an ``n x n`` block
    whose kernel has relative error ``ε`` (the eigendecomposition's own ``n·u`` included).
    ``n`` defaults to the number of eigenvalues; a thin decomposition (the ``r`` non-zero
    eigenvalues of a rank-``r`` feature kernel, SPEC §2.1) passes the block size ``n``."""
    d = _spectrum(eigvals)
    if not (np.isfinite(relative_error) and relative_error >= 0):
        raise ValueError(f"relative_error must be finite and non-negative, got {relative_error!r}")
    return (float(relative_error) + _size(d, n) * ROUNDOFF) * max(float(d.max()), 0.0)


def accuracy_floor(
    eigvals, relative_error: float, safety: float = DEFAULT_SAFETY, rcond: float | None = None, n: int | None = None
) -> float:
    """Eigenvalue at or below which a direction counts as null (SPEC §2).

    Parameters
    ----------
    eigvals : (n,) eigenvalues of the block (any order; negatives allowed).
    relative_error : ``ε``, the kernel's relative error (its ``.accuracy.json``).
    safety : factor between the noise level ``σ`` and the floor, ``f = safety · σ``.
    rcond : user override: when not None the floor is ``rcond · λ_max`` instead.
    n : size of the block (default: the number of eigenvalues); a thin decomposition
        gives its ``r`` eigenvalues and the block size ``n`` (the rest are exactly 0).

    Returns
    -------
    The floor ``f ≥ 0`` (absolute, in the units of ``eigvals``).
    """
    if not (np.isfinite(safety) and safety >= 1):
        raise ValueError(f"safety must be finite and at least 1, got {safety!r}")
    d = _spectrum(eigvals)
    if rcond is not None:
        if not (np.isfinite(rcond) and rcond >= 0):
            raise ValueError(f"rcond must be finite and non-negative, got {rcond!r}")
        return float(rcond) * max(float(d.max()), 0.0)
    return float(safety) * noise_level(d, relative_error, n)


def path_floor(
    eigvals, floor: float | None, rcond: float | None, safety: float = DEFAULT_SAFETY, n: int | None = None,
    caller: str = "the path",
) -> float:
    """The floor a ridge or flow path uses: ``floor`` when given (the kernel's accuracy
    floor), else ``rcond · λ_max``; validated finite and non-negative. ``n`` is the block
    size on a thin decomposition, as for :func:`accuracy_floor`."""
    if floor is None:
        if rcond is None:
            raise ValueError(f"{caller} needs a floor or an rcond")
        floor = accuracy_floor(eigvals, 0.0, safety, rcond=rcond, n=n)
    if not (np.isfinite(floor) and floor >= 0):
        raise ValueError(f"floor must be finite and non-negative, got {floor!r}")
    return float(floor)


def null_mask(eigvals, floor: float) -> np.ndarray:
    """Boolean (n,) mask of the eigen-directions treated as null: ``d ≤ floor`` (negatives included)."""
    d = _spectrum(eigvals)
    return d <= max(float(floor), 0.0)


def apply_floor(eigvals, floor: float) -> np.ndarray:
    """Eigenvalues with the null directions (:func:`null_mask`) set to exactly 0."""
    d = _spectrum(eigvals)
    return np.where(null_mask(d, floor), 0.0, d)


def spectrum_has_gap(eigvals, floor: float, safety: float = DEFAULT_SAFETY) -> bool:
    """True when no eigenvalue lies in ``(floor/safety, floor·safety]``: whether a direction is
    null then depends neither on the kernel's error nor on ``safety`` within a factor ``safety``."""
    d = _spectrum(eigvals)
    f = max(float(floor), 0.0)
    return not bool(np.any((d > f / safety) & (d <= f * safety)))


def resolved_ridges(eigvals, n: int, lambdas, floor: float, safety: float = DEFAULT_SAFETY) -> np.ndarray:
    """Boolean (L,): which absolute ridges ``λ`` (system ``K + nλI``) give resolved numbers.

    A ridge is resolved when ``nλ ≥ floor``, or, for any ``λ`` including 0, when the
    spectrum has a gap around the floor (:func:`spectrum_has_gap`).
    """
    lam = np.atleast_1d(np.asarray(lambdas, dtype=np.float64))
    gap = spectrum_has_gap(eigvals, floor, safety)
    return (n * lam >= floor) | gap
