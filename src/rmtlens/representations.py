"""Spectral summaries of a representation's kernel (SPEC §4).

Inputs are the population spectrum ``μ`` (descending) and the squared target
coefficients ``||β_k||²`` of :func:`rmtlens.theory.population_from_pool`.
"""

from __future__ import annotations

import numpy as np


def _nonnegative(values, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"{name} must be a non-empty 1-d array of finite non-negative values")
    return arr


def normalised_spectrum(mu) -> np.ndarray:
    """``μ_k / Σ_j μ_j``, shape (K,)."""
    mu = _nonnegative(mu, "mu")
    total = mu.sum()
    if total <= 0:
        raise ValueError("mu sums to zero")
    return mu / total


def effective_rank(mu) -> float:
    """``(Σ μ)² / Σ μ²``: the number of directions a spectrum effectively spans."""
    mu = _nonnegative(mu, "mu")
    return float(mu.sum() ** 2 / np.sum(mu**2))


def cumulative_alignment(beta_sq) -> np.ndarray:
    """``A(k) = Σ_{j≤k} ||β_j||² / Σ_j ||β_j||²`` for k = 1..K: the share of the target
    carried by the top-k eigendirections (β sorted by decreasing eigenvalue)."""
    b2 = _nonnegative(beta_sq, "beta_sq")
    total = b2.sum()
    if total <= 0:
        raise ValueError("beta_sq sums to zero: the target is zero")
    return np.cumsum(b2) / total


def alignment_at(beta_sq, ks) -> dict[int, float]:
    """``A(k)`` at each ``k`` of ``ks`` (clipped to the number of directions)."""
    curve = cumulative_alignment(beta_sq)
    return {int(k): float(curve[min(int(k), curve.size) - 1]) for k in ks}
