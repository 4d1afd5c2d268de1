"""Deterministic equivalent of kernel ridge risk under label noise (SPEC §3, "Label noise").

The training targets are ``y = g(x) + ε`` with ``E[ε | x] = 0`` and ``E||ε||² = σ²``
(summed over outputs); the risk is measured against a reference function ``h``
(the clean targets). With ``κ``, ``γ`` of :func:`rmtlens.estimators.theory.solve_kappa`
and the coefficients ``β^g_k``, ``β^h_k`` of ``g`` and ``h`` on the population
eigenfunctions,

    E||f̂ − g||² = (Σ_k (κ/(μ_k+κ))² ||β^g_k||² + γ σ²) / (1 − γ)          (excess over g)
    E f̂        = Σ_k μ_k/(μ_k+κ) β^g_k φ_k                                   (mean predictor)
    E||f̂ − h||² = E||f̂ − g||² + ||β^g − β^h||² − 2 Σ_k κ/(μ_k+κ) ⟨β^g_k, β^g_k − β^h_k⟩

and the noisy risk (against fresh noisy targets ``g + ε``) is ``E||f̂ − g||² + σ²``.
Additive Gaussian noise has ``g = h``. Uniform label flipping (a fraction ``f`` of the
labels replaced by a uniformly drawn *other* class) has, for class ``c`` with target
vector ``T_c`` and ``T̄`` the mean of the ``C`` class targets,

    g_c = a T_c + b T̄,   a = 1 − f C/(C − 1),   b = f C/(C − 1),
    σ²  = mean over the pool of  (1 − f)||T_c||² + f mean_{c'≠c} ||T_c'||² − ||g_c||².
"""

from __future__ import annotations

import numpy as np

from rmtlens.estimators.theory import _as_grid, _as_spectrum, _row_sums, deterministic_equivalent


def flip_target_map(target_map, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean target map and per-class noise variance of uniform label flipping.

    Parameters
    ----------
    target_map : (C, C') row ``c`` is the target vector ``T_c`` of class ``c``.
    fraction : ``f`` in ``[0, 1]``, the share of training labels replaced by a
        uniformly drawn other class.

    Returns
    -------
    mean_map : (C, C') ``g_c = E[target | true class c]``.
    noise_var : (C,) ``E||target − g_c||²`` given class ``c``.
    """
    T = np.asarray(target_map, dtype=np.float64)
    if T.ndim == 1:
        T = T[:, None]
    C = T.shape[0]
    if C < 2:
        raise ValueError("label flipping needs at least two classes")
    f = float(fraction)
    if not 0.0 <= f <= 1.0:
        raise ValueError(f"flip fraction must lie in [0, 1], got {fraction!r}")
    others = (T.sum(axis=0)[None, :] - T) / (C - 1)  # mean target of the other classes
    mean_map = (1.0 - f) * T + f * others
    sq = np.einsum("cj,cj->c", T, T)
    others_sq = (sq.sum() - sq) / (C - 1)
    noise_var = (1.0 - f) * sq + f * others_sq - np.einsum("cj,cj->c", mean_map, mean_map)
    return mean_map, np.clip(noise_var, 0.0, None)


def noisy_deterministic_equivalent(
    mu, beta_fit, beta_ref, noise_var: float, n, lambdas, xtol: float = 1e-13
) -> dict[str, np.ndarray]:
    """Deterministic equivalent of ridge risk with noisy training targets (module doc).

    Parameters
    ----------
    mu : (K,) population eigenvalues (sorted or not, zeros allowed).
    beta_fit : (K, C) coefficients ``β^g`` of the noiseless part of the training targets.
    beta_ref : (K, C) coefficients ``β^h`` of the reference (clean) targets.
    noise_var : ``σ²`` of the training-target noise, summed over outputs.
    n, lambdas : sample sizes and absolute ridges, broadcast together.

    Returns
    -------
    dict of arrays of the broadcast shape: ``kappa``, ``gamma``, ``fit_risk``
    (``E||f̂ − g||²``), ``excess_risk`` (``E||f̂ − h||²``, against clean targets) and
    ``noisy_risk`` (``E||f̂ − g||² + σ²``, against fresh noisy targets).
    """
    mu = _as_spectrum(mu)
    bg = np.asarray(beta_fit, dtype=np.float64).reshape(mu.size, -1)
    bh = np.asarray(beta_ref, dtype=np.float64).reshape(mu.size, -1)
    if bg.shape != bh.shape:
        raise ValueError(f"beta_fit {bg.shape} and beta_ref {bh.shape} differ in shape")
    if not (np.all(np.isfinite(bg)) and np.all(np.isfinite(bh))):
        raise ValueError("beta_fit or beta_ref contains NaN or infinite values")
    if not np.isfinite(noise_var) or noise_var < 0:
        raise ValueError(f"noise_var must be finite and non-negative, got {noise_var!r}")
    n_arr, lam = _as_grid(n, lambdas)
    fit_sq = np.einsum("kc,kc->k", bg, bg)
    de = deterministic_equivalent(mu, fit_sq, n_arr, lam, noise_var=noise_var, xtol=xtol)
    gamma = de["gamma"]
    fit = de["test_risk"] - noise_var  # (bias + γσ²)/(1 − γ)
    with np.errstate(invalid="ignore"):
        fit = np.where(np.isfinite(de["test_risk"]), fit, np.inf)
    diff = bg - bh
    mismatch = float(np.einsum("kc,kc->", diff, diff))
    cross_w = np.einsum("kc,kc->k", bg, diff)  # ⟨β^g_k, β^g_k − β^h_k⟩
    kappa = de["kappa"].ravel()
    cross = np.zeros(kappa.size)
    pos = mu > 0
    cross_null = float(cross_w[~pos].sum())  # κ/(μ+κ) = 1 on the null space
    solved = kappa > 0
    if solved.any():
        (part,) = _row_sums(kappa[solved], mu[pos], lambda kk, m: (kk / (m + kk) * cross_w[pos][None, :],))
        cross[solved] = part
    # κ = 0 (ridgeless, n ≥ rank): κ/(μ+κ) = 0 on μ > 0, 1 on the null space
    cross = cross + cross_null
    excess = fit + mismatch - 2.0 * cross.reshape(fit.shape)
    return {
        "kappa": de["kappa"],
        "gamma": gamma,
        "fit_risk": fit,
        "excess_risk": excess,
        "noisy_risk": de["test_risk"],
    }


def population_targets(eigvals, proj, target_map, rcond: float = 1e-10):
    """``μ`` (sorted decreasing) and ``β = Vᵀ Y / √N`` for the targets of ``target_map``.

    As :func:`rmtlens.estimators.theory.population_from_pool` but returning ``β``
    (K, C') for any map, so that clean and noisy-mean targets share one order.
    """
    from rmtlens.estimators.theory import population_from_pool

    pop = population_from_pool(eigvals, proj, target_map, rcond)
    return pop["mu"], pop["beta"]


def label_noise_predictions(
    eigvals, proj, target_map, class_counts, kind: str, level: float, target_variance: float,
    n, lambdas, rcond: float = 1e-10,
) -> dict[str, np.ndarray]:
    """Deterministic equivalent for one noise setting of the noise study.

    Parameters
    ----------
    eigvals, proj, target_map, rcond : as for :func:`population_from_pool`.
    class_counts : (C,) number of pool points per class (weights the flip noise variance).
    kind : ``gaussian`` (σ² = ``level · target_variance``) or ``flip`` (fraction ``level``).
    target_variance : total variance of the clean pool targets (summed over outputs).
    n, lambdas : broadcast grid of sample sizes and absolute ridges.

    Returns
    -------
    :func:`noisy_deterministic_equivalent`'s dict plus ``noise_var``.
    """
    T = np.asarray(target_map, dtype=np.float64)
    T = T[:, None] if T.ndim == 1 else T
    if kind == "gaussian":
        mean_map, sigma2 = T, float(level) * float(target_variance)
    elif kind == "flip":
        mean_map, per_class = flip_target_map(T, level)
        w = np.asarray(class_counts, dtype=np.float64)
        if w.shape != (T.shape[0],) or w.sum() <= 0:
            raise ValueError(f"class_counts must have shape ({T.shape[0]},) with a positive sum")
        sigma2 = float(per_class @ w / w.sum())
    else:
        raise ValueError(f"unknown noise kind {kind!r}; expected 'gaussian' or 'flip'")
    mu, beta_ref = population_targets(eigvals, proj, T, rcond)
    _, beta_fit = population_targets(eigvals, proj, mean_map, rcond)
    out = noisy_deterministic_equivalent(mu, beta_fit, beta_ref, sigma2, n, lambdas)
    out["noise_var"] = np.full(np.shape(out["kappa"]), sigma2)
    return out
