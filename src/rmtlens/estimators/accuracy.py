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
  or on the choice of ``safety`` within a factor ``safety``;
- and, since the floor is a hard threshold that eigenvalues may crowd, a resolved row
  must also survive its own cutoff: its test risk, GCV and LOO may change by less than
  a tolerance (default 1%) when the floor is halved and when it is doubled
  (:func:`floor_change`, :func:`flag_resolved`).
"""

from __future__ import annotations

import numpy as np

ROUNDOFF = float(np.finfo(np.float64).eps) / 2  # u = 2⁻⁵³, unit round-off of float64
DEFAULT_SAFETY = 10.0
DEFAULT_FLOOR_TOLERANCE = 0.01  # largest relative change of a resolved row at floor/2 and 2·floor
FLOOR_STEP = 2.0  # the floor is divided and multiplied by this to test a row's sensitivity
FLOOR_SENSITIVE = ("test_risk", "gcv", "loo")  # the path quantities that must survive the cutoff


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


def relative_change(values, reference) -> np.ndarray:
    """``|values − reference| / |reference|`` elementwise: 0 where the two are equal (equal
    infinities included), ``inf`` where only one is finite or the reference alone is 0."""
    a, b = np.asarray(values, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        change = np.abs(a - b) / np.abs(b)
    return np.where(a == b, 0.0, np.where(np.isnan(change), np.inf, change))


def floor_change(
    eigvals, floor: float, lambdas, reference, path_at, keys=FLOOR_SENSITIVE, step: float = FLOOR_STEP
) -> np.ndarray:
    """(L,) the largest relative change of ``keys`` (test risk, GCV, LOO) of each ridge row
    when the floor is divided by ``step`` and when it is multiplied by it.

    Parameters
    ----------
    eigvals : (k,) the block's eigenvalues before flooring (k = n, or r on a thin basis).
    floor : the floor the ``reference`` path was computed with.
    lambdas : (L,) absolute ridges of the reference path.
    reference : dict of (L,) arrays, the path at ``floor``.
    path_at : callable ``(floor, lambdas) -> dict of arrays``, the same path at another floor
        on a subset of the ridges.

    Only what can change is recomputed: when no eigenvalue lies between the two floors the
    nulled spectrum is the same, every number of the rows with ``λ > 0`` is unchanged, and
    only the LOO of the ``λ = 0`` rows is recomputed (its limit decides by the floor which
    points alone span a direction). A zero floor has no neighbours: the change is 0.
    """
    d = _spectrum(eigvals)
    lam = np.atleast_1d(np.asarray(lambdas, dtype=np.float64))
    change = np.zeros(lam.size)
    if not floor > 0:
        return change
    if not step > 1:
        raise ValueError(f"step must be larger than 1, got {step!r}")
    base = null_mask(d, floor)
    for other in (floor / step, floor * step):
        same = np.array_equal(null_mask(d, other), base)
        rows = lam == 0 if same else np.ones(lam.size, dtype=bool)
        if not rows.any():
            continue
        moved = path_at(other, lam[rows])
        for key in keys:
            if key in reference and (key == "loo" or not same):
                step_change = relative_change(moved[key], np.asarray(reference[key])[rows])
                change[rows] = np.maximum(change[rows], step_change)
    return change


def flag_resolved(
    path: dict, eigvals, n: int, lambdas, floor: float, safety: float, tolerance: float | None, path_at
) -> dict:
    """Add the resolution flags of SPEC §2 to a ridge path's dict (in place; returned):

    - ``resolved_floor`` (L,) bool: :func:`resolved_ridges` (``nλ ≥ f`` or a gap around ``f``);
    - ``floor_change`` (L,): :func:`floor_change` (only when ``tolerance`` is not None);
    - ``resolved`` (L,) bool: ``resolved_floor`` and ``floor_change < tolerance``.

    ``eigvals`` are the block's eigenvalues before flooring, ``n`` the block size, ``path_at``
    as for :func:`floor_change`; ``tolerance`` None keeps the floor rule alone.
    """
    lam = np.atleast_1d(np.asarray(lambdas, dtype=np.float64))
    by_floor = resolved_ridges(eigvals, n, lam, floor, safety)
    path["resolved_floor"] = by_floor
    if tolerance is None:
        path["resolved"] = by_floor.copy()
        return path
    if not (np.isfinite(tolerance) and tolerance > 0):
        raise ValueError(f"floor tolerance must be finite and positive, got {tolerance!r}")
    path["floor_change"] = floor_change(eigvals, floor, lam, path, path_at)
    path["resolved"] = by_floor & (path["floor_change"] < float(tolerance))
    return path
