"""Per-mode learnability from the pool spectrum (SPEC §4 "Learnability").

With the population eigenvalues ``μ_k`` and the effective ridge ``κ(n, λ)`` of
:func:`rmtlens.estimators.theory.solve_kappa`, mode ``k`` is learned to the fraction

    L_k = μ_k / (μ_k + κ) ∈ [0, 1]

(the mean predictor is ``Σ_k L_k β_k φ_k``). The fixed point ``κ = λ + (κ/n) Σ_k L_k``
gives the effective dimension ``Σ_k L_k = n (1 − λ/κ)``; the share of the target's
power learned is ``Σ_k L_k ||β_k||² / Σ_k ||β_k||²``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rmtlens.estimators.grids import check_scale
from rmtlens.estimators.theory import population_from_pool, solve_kappa


def learnabilities(mu, kappa: float) -> np.ndarray:
    """``L_k = μ_k/(μ_k + κ)``; at ``κ = 0`` every mode with ``μ_k > 0`` has ``L_k = 1``."""
    mu = np.asarray(mu, dtype=np.float64)
    if kappa < 0 or not np.isfinite(kappa):
        raise ValueError(f"kappa must be finite and non-negative, got {kappa!r}")
    if kappa == 0:
        return (mu > 0).astype(float)
    return mu / (mu + kappa)


def learnability_tables(
    eigvals, proj, target_map, sample_sizes, lambdas_rel, rcond: float = 1e-10, modes: int = 200, *, scale: float,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Summary per (n, λ) and per-mode curves from the pool spectrum.

    Parameters
    ----------
    eigvals, proj, target_map, rcond : as for :func:`population_from_pool`.
    sample_sizes : (S,) n values.
    lambdas_rel : (L,) relative ridges (absolute ``λ_rel · scale``).
    modes : number of leading modes kept in the per-mode table.
    scale : the kernel scale ``tr(K_pool)/N_pool`` the ridge path uses (pool.npz's ``scale``,
        :func:`rmtlens.estimators.grids.kernel_scale` of the pool diagonal). Required: a sum
        of the clipped spectrum is larger wherever the kernel has negative eigenvalues.

    Returns
    -------
    summary : one row per (n, λ_rel): ``kappa``, ``effective_dim`` (``Σ L_k``),
        ``fixed_point_dim`` (``n(1 − λ/κ)``), ``learned_power`` (``Σ L_k ||β_k||² /
        Σ||β_k||²``), ``modes_half`` (#modes with ``L_k ≥ 1/2``).
    curves : one row per (n, λ_rel, k ≤ modes): ``k``, ``mu``, ``beta_sq``, ``learnability``.
    """
    pop = population_from_pool(eigvals, proj, target_map, rcond)
    mu, b2 = pop["mu"], pop["beta_sq"]
    scale = check_scale(scale)
    total = float(b2.sum())
    summary, curves = [], []
    for n in sample_sizes:
        for lam_rel in lambdas_rel:
            lam = float(lam_rel) * scale
            kappa = float(solve_kappa(mu, float(n), lam))
            L = learnabilities(mu, kappa)
            summary.append(dict(
                n=int(n), lambda_rel=float(lam_rel), kappa=kappa, effective_dim=float(L.sum()),
                fixed_point_dim=float(n * (1.0 - lam / kappa)) if kappa > 0 else float(np.sum(mu > 0)),
                learned_power=float(L @ b2 / total) if total > 0 else np.nan,
                modes_half=int(np.sum(L >= 0.5)),
            ))
            k = min(int(modes), mu.size)
            curves.append(pd.DataFrame(dict(
                n=int(n), lambda_rel=float(lam_rel), k=np.arange(1, k + 1), mu=mu[:k], beta_sq=b2[:k],
                learnability=L[:k],
            )))
    return pd.DataFrame(summary), pd.concat(curves, ignore_index=True)
