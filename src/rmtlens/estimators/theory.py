"""Deterministic equivalents of kernel ridge risk from the pool spectrum (SPEC §3, §6).

Notation. The pool kernel ``K_pool = V diag(D) Vᵀ`` (``N_pool x N_pool``) stands in
for the population: eigenvalues ``μ_k = D_k / N_pool`` and target coefficients
``β_k = V_kᵀ Y / √N_pool`` (C-vectors). For ``n`` samples and absolute ridge ``λ``
(the ridge path solves ``K + nλI``) the effective ridge ``κ > 0`` solves

    κ = λ + (κ/n) Σ_k μ_k / (μ_k + κ),     equivalently   1 = λ/κ + df₁(κ)/n,

with ``df₁(κ) = Σ_k μ_k/(μ_k + κ)``. Then ``γ = (1/n) Σ_k μ_k²/(μ_k + κ)²``,
the test risk ``E = (Σ_k (κ/(μ_k + κ))² ||β_k||² + σ²) / (1 − γ)``, the train risk
``(λ/κ)² E`` and ``λ/κ``, the prediction of ``1 − tr(S)/n``.

Ridgeless limit (``λ = 0``), with ``rank = #{μ_k > 0}``:

- ``n < rank``: ``κ > 0`` solves ``n = df₁(κ)``, so ``λ/κ = 0``.
- ``n ≥ rank``: ``κ = 0``. The limit ``λ → 0⁺`` gives ``λ/κ → 1 − rank/n`` and
  ``κ/(μ_k + κ) → 1`` exactly on the directions with ``μ_k = 0``, so the risk is
  ``(||β_null||² + σ²) / (1 − rank/n)`` (infinite at ``n = rank`` unless the
  numerator vanishes, where the limit is 0).

Numerics. ``κ`` is found in ``t = log κ`` inside a bracket that provably holds
the root (safeguarded Newton: a Newton step when it stays inside the bracket,
bisection otherwise), and the residual is written without cancellation:
``λ/κ − (n − rank)/n − (1/n) Σ_{μ_k>0} κ/(μ_k + κ)``. ``1 − γ`` is likewise
evaluated as ``λ/κ + (1/n) Σ_k μ_k κ/(μ_k + κ)²`` (a sum of positive terms, by the
fixed-point equation) so that it stays accurate close to the interpolation peak.
"""

from __future__ import annotations

import numpy as np

from rmtlens.estimators.accuracy import apply_floor
from rmtlens.estimators.grids import kernel_scale
from rmtlens.estimators.powerlaw import (
    DEFAULT_MIN_POINTS,
    DEFAULT_MIN_R2,
    WINDOW_NAMES,
    fit_spectrum_power_laws,
    idealised_spectra,
    power_law_windows,
    spectrum_curves,
    truncated_spectra,
)
from rmtlens.estimators.ridge import clip_spectrum

_BLOCK = 2**22  # float64 entries per (pairs x spectrum) block: 32 MiB


def _as_spectrum(mu, name: str = "mu") -> np.ndarray:
    arr = np.asarray(mu, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-d array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    if np.any(arr < 0):
        raise ValueError(f"{name} must be non-negative (clip the spectrum first), min is {arr.min()!r}")
    return arr


def _as_grid(n, lambdas) -> tuple[np.ndarray, np.ndarray]:
    n_arr = np.asarray(n, dtype=np.float64)
    lam = np.asarray(lambdas, dtype=np.float64)
    if not np.all(np.isfinite(n_arr)) or np.any(n_arr <= 0):
        raise ValueError("n must be finite and positive")
    if not np.all(np.isfinite(lam)) or np.any(lam < 0):
        raise ValueError("lambdas must be finite and non-negative")
    try:
        return np.broadcast_arrays(n_arr, lam)
    except ValueError:
        raise ValueError(f"n {n_arr.shape} and lambdas {lam.shape} do not broadcast") from None


def _row_sums(kappa: np.ndarray, mu: np.ndarray, terms) -> tuple[np.ndarray, ...]:
    """Sums over the spectrum of ``terms(κ[:, None], μ[None, :])`` in row blocks."""
    step = max(1, _BLOCK // max(1, mu.size))
    out = None
    for start in range(0, kappa.size, step):
        k = kappa[start : start + step, None]
        parts = [t.sum(axis=1) for t in terms(k, mu[None, :])]
        if out is None:
            out = [np.empty(kappa.size) for _ in parts]
        for o, p in zip(out, parts):
            o[start : start + step] = p
    return tuple(out) if out is not None else ()


def population_from_pool(
    eigvals, proj, target_map=None, rcond: float = 1e-10, floor: float | None = None
) -> dict[str, np.ndarray]:
    """Population spectrum and target coefficients from the pool eigendecomposition.

    Parameters
    ----------
    eigvals : (N_pool,) float, eigenvalues ``D`` of the pool kernel ``K_pool`` (any order).
    proj : (N_pool, C) float, ``Vᵀ E``: eigenvectors (columns of ``V``, matching
        ``eigvals``) projected on the one-hot label matrix ``E``.
    target_map : (C, C') float, optional. Row ``c`` is the target vector of class ``c``
        (one-hot: the identity; one-hot minus ``1/C``: ``I − 1/C``; binary ±1:
        a single column of ±1), so that ``Y = E @ target_map``. Default: identity.
    rcond : eigenvalues at or below ``rcond · max(D)`` (negatives included) count as
        zero, the same rule as :func:`rmtlens.estimators.ridge.clip_spectrum`.
    floor : absolute eigenvalue floor of ``D`` (the kernel's accuracy floor,
        :func:`rmtlens.estimators.accuracy.accuracy_floor`); when given it replaces ``rcond``.

    Returns
    -------
    dict with, sorted by decreasing ``μ`` (ties keep their input order):
    ``mu`` (N_pool,) ``D/N_pool`` with zeros on the null space; ``beta`` (N_pool, C')
    ``Vᵀ Y / √N_pool``; ``beta_sq`` (N_pool,) ``||β_k||²``. ``Σ_k beta_sq`` equals
    ``||Y||²_F / N_pool``, the mean squared target norm.
    """
    D = np.asarray(eigvals, dtype=np.float64)
    P = np.asarray(proj, dtype=np.float64)
    if D.ndim != 1 or D.size == 0:
        raise ValueError(f"eigvals must be a non-empty 1-d array, got shape {D.shape}")
    if P.ndim == 1:
        P = P[:, None]
    if P.ndim != 2 or P.shape[0] != D.size:
        raise ValueError(f"proj must have shape ({D.size}, C) to match eigvals, got {P.shape}")
    for name, arr in (("eigvals", D), ("proj", P)):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contains NaN or infinite values")
    M = np.eye(P.shape[1]) if target_map is None else np.asarray(target_map, dtype=np.float64)
    if M.ndim == 1:
        M = M[:, None]
    if M.ndim != 2 or M.shape[0] != P.shape[1]:
        raise ValueError(f"target_map must have shape ({P.shape[1]}, C'), got {M.shape}")
    if not np.all(np.isfinite(M)):
        raise ValueError("target_map contains NaN or infinite values")
    n_pool = D.size
    mu = (clip_spectrum(D, rcond) if floor is None else apply_floor(D, floor)) / n_pool
    order = np.argsort(-mu, kind="stable")
    beta = (P @ M)[order] / np.sqrt(n_pool)
    return {"mu": mu[order], "beta": beta, "beta_sq": np.einsum("kc,kc->k", beta, beta)}


def solve_kappa(mu, n, lambdas, xtol: float = 1e-13, max_iter: int = 200) -> np.ndarray:
    """Effective ridge ``κ`` solving ``κ = λ + (κ/n) Σ_k μ_k/(μ_k + κ)``.

    Parameters
    ----------
    mu : (K,) float, non-negative population eigenvalues (zeros allowed).
    n : float or array, sample sizes (> 0; need not be integers).
    lambdas : float or array, absolute ridges ``λ ≥ 0``; broadcast against ``n``
        (e.g. ``n[:, None]`` and ``lambdas[None, :]`` for a grid).
    xtol : convergence tolerance on ``log κ`` (relative accuracy of ``κ``).
    max_iter : iteration cap; exceeding it raises ``RuntimeError``.

    Returns
    -------
    kappa : float64 array of the broadcast shape of ``n`` and ``lambdas``. ``κ = 0``
        exactly where ``λ = 0`` and ``n ≥ rank``, the ridgeless limit (module doc).
    """
    mu = _as_spectrum(mu)
    n_arr, lam = _as_grid(n, lambdas)
    shape = n_arr.shape
    n_arr, lam = n_arr.ravel(), lam.ravel()
    mu_pos = mu[mu > 0]
    rank = mu_pos.size
    kappa = np.zeros(n_arr.size)
    todo = (lam > 0) | (n_arr < rank)
    if not todo.any():
        return kappa.reshape(shape)
    nn, ll = n_arr[todo], lam[todo]
    if rank == 0:  # nothing to learn: κ = λ exactly
        kappa[todo] = ll
        return kappa.reshape(shape)

    # Bracket: κ ≥ λ, and κ ≤ λ + Σμ/n because μκ/(μ+κ) ≤ μ. At λ = 0 (n < rank),
    # κ/(μ+κ) ≤ κ/μ_min gives df₁(κ) ≥ rank(1 − κ/μ_min), which is ≥ n below
    # κ = μ_min (1 − n/rank).
    mu_max = mu_pos.max()
    log_total_over_n = np.log(mu_max) + np.log(np.sum(mu_pos / mu_max)) - np.log(nn)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_lam = np.log(ll)
        ridgeless_lo = np.log(mu_pos.min()) + np.log1p(-np.minimum(nn, rank) / rank)
    lo = np.where(ll > 0, log_lam, ridgeless_lo)
    hi = np.where(ll > 0, np.logaddexp(log_lam, log_total_over_n), log_total_over_n)
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        raise RuntimeError("solve_kappa: the bracket of log κ is not finite (spectrum out of float64 range)")
    deficit = (nn - rank) / nn  # exact, no cancellation against the sum below

    def residual(t, idx):
        k = np.exp(t)
        s, ds = _row_sums(k, mu_pos, lambda kk, m: (kk / (m + kk), kk * m / (m + kk) ** 2))
        ratio = ll[idx] / k
        g = ratio - deficit[idx] - s / nn[idx]
        dg = -ratio - ds / nn[idx]  # dg/d(log κ) < 0
        return g, dg

    t = 0.5 * (lo + hi)
    # log κ can reach ~700 in magnitude, where float64 spacing exceeds 1e-13
    tol = xtol + 8 * np.finfo(np.float64).eps * np.maximum(np.abs(lo), np.abs(hi))
    active = np.flatnonzero(hi - lo > tol)
    for _ in range(max_iter):
        if active.size == 0:
            break
        ta = t[active]
        g, dg = residual(ta, active)
        root = g == 0
        lo[active] = np.where(g > 0, ta, lo[active])
        hi[active] = np.where(g < 0, ta, hi[active])
        with np.errstate(divide="ignore", invalid="ignore"):
            newton = ta - g / dg
        inside = np.isfinite(newton) & (newton > lo[active]) & (newton < hi[active])
        t_new = np.where(inside, newton, 0.5 * (lo[active] + hi[active]))
        t_new = np.where(root, ta, t_new)
        done = root | (inside & (np.abs(t_new - ta) < tol[active])) | (hi[active] - lo[active] < tol[active])
        t[active] = t_new
        active = active[~done]
    else:
        if active.size:
            raise RuntimeError(
                f"solve_kappa did not converge for {active.size} of {t.size} (n, λ) pairs in {max_iter} iterations"
            )
    kappa[todo] = np.exp(t)
    return kappa.reshape(shape)


def deterministic_equivalent(
    mu, beta_sq, n, lambdas, noise_var: float = 0.0, xtol: float = 1e-13, max_iter: int = 200
) -> dict[str, np.ndarray]:
    """Omniscient deterministic equivalent of kernel ridge regression (SPEC §3).

    Parameters
    ----------
    mu : (K,) float, non-negative population eigenvalues.
    beta_sq : (K,) float, ``||β_k||²`` of the target on each eigen-direction
        (summed over outputs), non-negative. The ``β_k`` are coefficients on
        unit-variance eigenfunctions: for a linear model ``y = xᵀw`` with
        ``x ~ N(0, diag μ)`` they are ``β_k = √μ_k w_k``, not ``w_k``.
    n, lambdas : sample sizes (> 0) and absolute ridges (≥ 0), broadcast together.
    noise_var : ``σ²``, variance of additive label noise (summed over outputs) on
        both training and test targets; the test risk includes it.
    xtol, max_iter : passed to :func:`solve_kappa`.

    Returns
    -------
    dict of float64 arrays of the broadcast shape: ``kappa``, ``gamma``,
    ``lambda_over_kappa`` (prediction of ``1 − tr(S)/n``, SPEC §6), ``test_risk``
    ``E = (Σ_k (κ/(μ_k+κ))² ||β_k||² + σ²)/(1 − γ)`` and ``train_risk`` ``(λ/κ)² E``;
    and the parts of ``E`` (SPEC §5): ``floor`` ``F = Σ_{μ_k=0} ||β_k||² + σ²``, the
    limit of ``E`` as ``n → ∞`` at the optimal ridge (out-of-span mass acts as noise),
    ``excess_bias`` ``Σ_{μ_k>0} (κ/(μ_k+κ))² ||β_k||² / (1 − γ)`` and ``excess_noise``
    ``γ F / (1 − γ)``, which sum to ``E − F``.
    """
    mu = _as_spectrum(mu)
    b2 = _as_spectrum(beta_sq, "beta_sq")
    if b2.shape != mu.shape:
        raise ValueError(f"beta_sq must have the shape of mu {mu.shape}, got {b2.shape}")
    if not np.isfinite(noise_var) or noise_var < 0:
        raise ValueError(f"noise_var must be finite and non-negative, got {noise_var!r}")
    n_arr, lam = _as_grid(n, lambdas)
    kappa = solve_kappa(mu, n_arr, lam, xtol=xtol, max_iter=max_iter)
    shape = kappa.shape
    kappa, n_arr, lam = kappa.ravel(), n_arr.ravel(), lam.ravel()

    pos = mu > 0
    mu_pos, b2_pos = mu[pos], b2[pos]
    rank = int(pos.sum())
    null_mass = float(b2[~pos].sum())

    solved = kappa > 0
    ratio = np.where(solved, lam / np.where(solved, kappa, 1.0), np.maximum(1.0 - rank / n_arr, 0.0))
    spread = np.zeros(kappa.size)  # (1/n) Σ μκ/(μ+κ)²
    gamma = np.where(solved, 0.0, np.minimum(rank / n_arr, 1.0))  # (1/n) Σ μ²/(μ+κ)², summed, not 1 − (1 − γ)
    in_span_bias = np.zeros(kappa.size)  # Σ_{μ>0} (κ/(μ+κ))² ||β||²
    if solved.any():
        ks = kappa[solved]
        var_sum, gamma_sum, bias_sum = _row_sums(
            ks, mu_pos,
            lambda kk, m: (kk * m / (m + kk) ** 2, (m / (m + kk)) ** 2, (kk / (m + kk)) ** 2 * b2_pos[None, :]),
        )
        spread[solved] = var_sum / n_arr[solved]
        gamma[solved] = gamma_sum / n_arr[solved]
        in_span_bias[solved] = bias_sum
    one_minus_gamma = ratio + spread
    floor = null_mass + noise_var
    numerator = in_span_bias + floor
    with np.errstate(divide="ignore", invalid="ignore"):
        test = np.where(one_minus_gamma > 0, numerator / one_minus_gamma, np.where(numerator > 0, np.inf, 0.0))
        train = np.where(ratio > 0, ratio**2 * test, 0.0)
        excess_bias = np.where(one_minus_gamma > 0, in_span_bias / one_minus_gamma,
                               np.where(in_span_bias > 0, np.inf, 0.0))
        excess_noise = np.where(one_minus_gamma > 0, floor * gamma / one_minus_gamma,
                                np.where(floor > 0, np.inf, 0.0))
    return {
        "kappa": kappa.reshape(shape),
        "gamma": gamma.reshape(shape),
        "lambda_over_kappa": ratio.reshape(shape),
        "test_risk": test.reshape(shape),
        "train_risk": train.reshape(shape),
        "floor": np.full(shape, floor),
        "excess_bias": excess_bias.reshape(shape),
        "excess_noise": excess_noise.reshape(shape),
    }


def predict_grid(
    eigvals,
    proj,
    target_map,
    sample_sizes,
    lambdas_rel,
    fixed_window: tuple[int, int],
    n_range: tuple[float, float] | None = None,
    primary: str = "rank",
    rcond: float = 1e-10,
    floor: float | None = None,
    scale: float | None = None,
    min_r2: float = DEFAULT_MIN_R2,
    min_points: int = DEFAULT_MIN_POINTS,
) -> tuple[dict[str, np.ndarray], list[dict], dict[str, np.ndarray]]:
    """Omniscient and power-law deterministic equivalents on an (n, λ) grid (SPEC §3, §5).

    Parameters
    ----------
    eigvals, proj, target_map, rcond, floor : as for :func:`population_from_pool`.
    sample_sizes : (S,) sample sizes n.
    lambdas_rel : (L,) relative ridges; the absolute ridge is ``λ_rel · s``.
    fixed_window, n_range : the configured fit window ``(k_min, k_max)`` and the sample
        sizes ``(n_lo, n_hi)`` of the scaling fit, from which
        :func:`rmtlens.estimators.powerlaw.power_law_windows` makes the fit windows.
    primary : the window whose fit the power-law DEs use (``fixed``, ``rank``, ``n_range``).
    scale : the kernel scale ``s = tr(K_pool)/N_pool`` (:func:`rmtlens.estimators.grids.kernel_scale`
        of the pool diagonal), the one the ridge path uses; when None, ``Σ_k D_k / N_pool``,
        the same trace from the spectrum.
    min_r2, min_points : validity thresholds of the fits.

    Returns
    -------
    grid : dict of (S·L,) arrays, n-major: ``n``, ``lambda_rel``, ``lambda``, ``kappa``,
        ``gamma``, ``lambda_over_kappa``, ``omniscient_test_risk``,
        ``omniscient_train_risk``, ``omniscient_excess_bias``, ``omniscient_excess_noise``
        (the parts of ``E − floor``, :func:`deterministic_equivalent`),
        ``powerlaw_test_risk`` (the same formula on the idealised spectra ``A k^-α``,
        ``B k^-δ``, k = 1..N_pool) and ``truncated_powerlaw_test_risk`` (the same laws
        cut at the kernel's rank, out-of-span mass kept); the power-law columns are NaN
        when the primary window cannot be fitted.
    fits : one dict per window (:func:`rmtlens.estimators.powerlaw.fit_spectrum_power_laws`)
        with ``window``, ``primary``, ``rank``, ``n_pool``, ``rank_fraction``,
        ``null_mass`` (out-of-span target power, the DE's floor), ``target_power``
        (``Σ_k ||β_k||²``), ``out_of_span_share``, ``fitted_in_span_power``
        (``Σ_{k≤rank} B k^-δ``, against ``target_power − null_mass``) and ``scale``.
    curves : :func:`rmtlens.estimators.powerlaw.spectrum_curves` of the population.
    """
    if primary not in WINDOW_NAMES:
        raise ValueError(f"primary must be one of {WINDOW_NAMES}, got {primary!r}")
    pop = population_from_pool(eigvals, proj, target_map, rcond, floor)
    mu, b2 = pop["mu"], pop["beta_sq"]
    n_pool = mu.size
    if scale is None:
        scale = kernel_scale(np.asarray(eigvals, dtype=np.float64))  # mean eigenvalue = tr(K_pool)/N_pool
    scale = float(scale)
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be finite and positive, got {scale!r}")
    n = np.asarray(sample_sizes, dtype=np.float64)
    lam_rel = np.asarray(lambdas_rel, dtype=np.float64)
    lam = lam_rel * scale
    nn, ll = np.meshgrid(n, lam, indexing="ij")
    de = deterministic_equivalent(mu, b2, nn, ll)
    rank = int(np.sum(mu > 0))
    null_mass, target_power = float(b2[rank:].sum()), float(b2.sum())
    windows = power_law_windows(rank, fixed_window, n_range)
    if primary not in windows:
        raise ValueError(f"the primary window {primary!r} needs the scaling fit's n range")
    fits = []
    for name, (k_min, k_max) in windows.items():
        fit = fit_spectrum_power_laws(mu, b2, k_min, k_max, min_r2, min_points)
        fitted = float(np.sum(idealised_spectra(fit, rank)[1])) if np.isfinite(fit["delta"]) else np.nan
        fits.append(dict(window=name, primary=name == primary, **fit, rank=rank, n_pool=n_pool,
                         rank_fraction=rank / n_pool, null_mass=null_mass, target_power=target_power,
                         out_of_span_share=null_mass / target_power if target_power > 0 else np.nan,
                         fitted_in_span_power=fitted, scale=scale))
    main = next(f for f in fits if f["primary"])
    grid = {
        "n": nn.ravel().astype(np.int64),
        "lambda_rel": np.meshgrid(n, lam_rel, indexing="ij")[1].ravel(),
        "lambda": ll.ravel(),
        "kappa": de["kappa"].ravel(),
        "gamma": de["gamma"].ravel(),
        "lambda_over_kappa": de["lambda_over_kappa"].ravel(),
        "omniscient_test_risk": de["test_risk"].ravel(),
        "omniscient_train_risk": de["train_risk"].ravel(),
        "omniscient_excess_bias": de["excess_bias"].ravel(),
        "omniscient_excess_noise": de["excess_noise"].ravel(),
        "powerlaw_test_risk": np.full(nn.size, np.nan),
        "truncated_powerlaw_test_risk": np.full(nn.size, np.nan),
    }
    if np.isfinite(main["alpha"]) and np.isfinite(main["delta"]):
        ideal = deterministic_equivalent(*idealised_spectra(main, n_pool), nn, ll)
        cut = deterministic_equivalent(*truncated_spectra(main, rank, null_mass, n_pool), nn, ll)
        grid["powerlaw_test_risk"] = ideal["test_risk"].ravel()
        grid["truncated_powerlaw_test_risk"] = cut["test_risk"].ravel()
    return grid, fits, spectrum_curves(mu, b2)
