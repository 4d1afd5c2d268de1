"""Spectral summaries of a representation's kernel (SPEC §4).

Inputs are the population spectrum ``μ`` (descending) and the squared target
coefficients ``||β_k||²`` of :func:`rmtlens.estimators.theory.population_from_pool`.
"""

from __future__ import annotations

import numpy as np

from rmtlens.estimators.theory import _as_spectrum


def normalised_spectrum(mu) -> np.ndarray:
    """``μ_k / Σ_j μ_j``, shape (K,)."""
    mu = _as_spectrum(mu, "mu")
    total = mu.sum()
    if total <= 0:
        raise ValueError("mu sums to zero")
    return mu / total


def effective_rank(mu) -> float:
    """``(Σ μ)² / Σ μ²``: the number of directions a spectrum effectively spans."""
    mu = _as_spectrum(mu, "mu")
    return float(mu.sum() ** 2 / np.sum(mu**2))


def cumulative_alignment(beta_sq) -> np.ndarray:
    """``A(k) = Σ_{j≤k} ||β_j||² / Σ_j ||β_j||²`` for k = 1..K: the share of the target
    carried by the top-k eigendirections (β sorted by decreasing eigenvalue)."""
    b2 = _as_spectrum(beta_sq, "beta_sq")
    total = b2.sum()
    if total <= 0:
        raise ValueError("beta_sq sums to zero: the target is zero")
    return np.cumsum(b2) / total


def alignment_at(beta_sq, ks) -> dict[int, float]:
    """``A(k)`` at each ``k`` of ``ks`` (clipped to the number of directions)."""
    curve = cumulative_alignment(beta_sq)
    return {int(k): float(curve[min(int(k), curve.size) - 1]) for k in ks}


def representation_tables(
    units, spectra, fits, best, target_kind: str, positive_classes=(), alignment_ks=(10, 100), rcond: float = 1e-10
):
    """The SPEC §4 table and the curves of its figure, one entry per kernel.

    Parameters
    ----------
    units : list of dicts with the kernel keys (dataset, backbone, weights, kernel).
    spectra : matching list of dicts with ``eigvals`` (N_pool,) and ``proj_onehot``
        (N_pool, C) of the pool kernel (the ``pool_spectrum`` output).
    fits : DataFrame of power-law fits with the kernel keys, ``alpha`` and ``delta``.
    best : DataFrame of the best ridge per kernel (``rmtlens.report.tables.best_risk``).
    target_kind, positive_classes : the targets (``rmtlens.inputs.targets.target_map``); each
        kernel's class (or target-column) count comes from its spectrum.
    alignment_ks : the k at which ``A(k)`` is reported.
    rcond : eigenvalue cutoff for spectra that carry no ``floor`` (the ``pool_spectrum``
        output stores the kernel's accuracy floor, which then applies).

    Returns
    -------
    table : one row per kernel: keys, ``effective_rank``, ``alignment_k{k}``, ``alpha``,
        ``delta``, ``n``, ``best_lambda_rel``, ``best_test_risk``, ``test_error_at_best``.
    curves : long table of ``k``, ``normalised_mu`` and ``alignment`` per kernel.
    """
    import pandas as pd

    from rmtlens.estimators.grids import KERNEL_KEYS
    from rmtlens.estimators.theory import population_from_pool
    from rmtlens.inputs.targets import target_map

    fits = fits.set_index(KERNEL_KEYS)
    best = best.set_index(KERNEL_KEYS)
    rows, curves = [], []
    for unit, spectrum in zip(units, spectra):
        n_classes = spectrum["proj_onehot"].shape[1]
        targets = target_map(n_classes, target_kind, positive_classes)
        floor = float(spectrum["floor"]) if "floor" in spectrum else None  # the kernel's accuracy floor
        pop = population_from_pool(spectrum["eigvals"], spectrum["proj_onehot"], targets, rcond, floor)
        key = tuple(unit[k] for k in KERNEL_KEYS)
        rows.append({
            **unit,
            "effective_rank": effective_rank(pop["mu"]),
            **{f"alignment_k{k}": v for k, v in alignment_at(pop["beta_sq"], alignment_ks).items()},
            **fits.loc[key, ["alpha", "delta"]].to_dict(),
            **best.loc[key, ["n", "best_lambda_rel", "best_test_risk", "test_error_at_best"]].to_dict(),
        })
        curves.append(pd.DataFrame({**unit, "k": np.arange(1, pop["mu"].size + 1),
                                    "normalised_mu": normalised_spectrum(pop["mu"]),
                                    "alignment": cumulative_alignment(pop["beta_sq"])}))
    return pd.DataFrame(rows), pd.concat(curves, ignore_index=True)
