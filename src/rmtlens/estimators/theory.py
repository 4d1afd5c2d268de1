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
    ``E = (Σ_k (κ/(μ_k+κ))² ||β_k||² + σ²)/(1 − γ)`` and ``train_risk`` ``(λ/κ)² E``.
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
    bias = np.full(kappa.size, null_mass)
    if solved.any():
        ks = kappa[solved]
        var_sum, bias_sum = _row_sums(
            ks, mu_pos, lambda kk, m: (kk * m / (m + kk) ** 2, (kk / (m + kk)) ** 2 * b2_pos[None, :])
        )
        spread[solved] = var_sum / n_arr[solved]
        bias[solved] += bias_sum
    one_minus_gamma = ratio + spread
    numerator = bias + noise_var
    with np.errstate(divide="ignore", invalid="ignore"):
        test = np.where(one_minus_gamma > 0, numerator / one_minus_gamma, np.where(numerator > 0, np.inf, 0.0))
        train = np.where(ratio > 0, ratio**2 * test, 0.0)
    return {
        "kappa": kappa.reshape(shape),
        "gamma": (1.0 - one_minus_gamma).reshape(shape),
        "lambda_over_kappa": ratio.reshape(shape),
        "test_risk": test.reshape(shape),
        "train_risk": train.reshape(shape),
    }


def fit_power_law(x, y, x_min: float | None = None, x_max: float | None = None) -> dict[str, float]:
    """Least-squares fit of ``y ≈ A x^(−exponent)`` on log-log axes.

    Parameters
    ----------
    x : (P,) float, positive abscissae (an index ``k`` or a sample size ``n``).
    y : (P,) float, values; entries with ``y ≤ 0`` cannot be logged and are
        dropped (counted in ``n_dropped``), they never enter the fit.
    x_min, x_max : inclusive window on ``x``; ``None`` means unbounded.

    Returns
    -------
    dict: ``exponent`` (positive for decay), ``amplitude`` ``A``, ``r2`` (coefficient
    of determination of ``log y``), ``x_min``/``x_max`` (the extreme ``x`` actually
    used), ``n_points`` used, ``n_dropped``.

    Raises
    ------
    ValueError when fewer than 3 positive points lie in the window.
    """
    xa = np.asarray(x, dtype=np.float64)
    ya = np.asarray(y, dtype=np.float64)
    if xa.ndim != 1 or xa.shape != ya.shape:
        raise ValueError(f"x and y must be 1-d arrays of the same shape, got {xa.shape} and {ya.shape}")
    if not np.all(np.isfinite(xa)) or np.any(xa <= 0):
        raise ValueError("x must be finite and positive")
    if np.any(np.isnan(ya)):
        raise ValueError("y contains NaN values")
    if x_min is not None and x_max is not None and x_min > x_max:
        raise ValueError(f"x_min = {x_min} exceeds x_max = {x_max}")
    window = np.ones(xa.size, dtype=bool)
    if x_min is not None:
        window &= xa >= x_min
    if x_max is not None:
        window &= xa <= x_max
    use = window & (ya > 0) & np.isfinite(ya)
    if use.sum() < 3:
        raise ValueError(
            f"fewer than 3 positive y values in the window [{x_min}, {x_max}] ({int(use.sum())} found)"
        )
    lx, ly = np.log(xa[use]), np.log(ya[use])
    slope, intercept = np.polyfit(lx, ly, 1)
    resid = ly - (intercept + slope * lx)
    total = np.sum((ly - ly.mean()) ** 2)
    r2 = 1.0 - np.sum(resid**2) / total if total > 0 else 1.0
    return {
        "exponent": float(-slope),
        "amplitude": float(np.exp(intercept)),
        "r2": float(r2),
        "x_min": float(xa[use].min()),
        "x_max": float(xa[use].max()),
        "n_points": int(use.sum()),
        "n_dropped": int((window & ~use).sum()),
    }


def fit_spectrum_power_laws(mu, beta_sq, k_min: int, k_max: int) -> dict[str, float]:
    """Fit ``μ_k ≈ A k^(−α)`` and ``||β_k||² ≈ B k^(−δ)`` over indices ``k_min..k_max``.

    Parameters
    ----------
    mu, beta_sq : (K,) float, sorted by decreasing ``μ``; index ``k`` is 1-based.
    k_min, k_max : inclusive 1-based index window, ``1 ≤ k_min < k_max ≤ K``.
        Non-positive values inside it are dropped (:func:`fit_power_law`).

    Returns
    -------
    dict: ``alpha``, ``A``, ``alpha_r2``, ``alpha_points``, ``delta``, ``B``,
    ``delta_r2``, ``delta_points``, ``k_min``, ``k_max``.
    """
    mu = _as_spectrum(mu)
    b2 = _as_spectrum(beta_sq, "beta_sq")
    if b2.shape != mu.shape:
        raise ValueError(f"beta_sq must have the shape of mu {mu.shape}, got {b2.shape}")
    if not (1 <= k_min < k_max <= mu.size):
        raise ValueError(f"the window k_min = {k_min}, k_max = {k_max} must satisfy 1 ≤ k_min < k_max ≤ {mu.size}")
    k = np.arange(1, mu.size + 1, dtype=np.float64)
    fm = fit_power_law(k, mu, k_min, k_max)
    fb = fit_power_law(k, b2, k_min, k_max)
    return {
        "alpha": fm["exponent"],
        "A": fm["amplitude"],
        "alpha_r2": fm["r2"],
        "alpha_points": fm["n_points"],
        "delta": fb["exponent"],
        "B": fb["amplitude"],
        "delta_r2": fb["r2"],
        "delta_points": fb["n_points"],
        "k_min": int(k_min),
        "k_max": int(k_max),
    }


def power_law_values(amplitude: float, exponent: float, n_terms: int) -> np.ndarray:
    """``amplitude · k^(−exponent)`` for ``k = 1..n_terms``, shape (n_terms,), float64.

    Used for the idealised spectra ``μ_k = A k^(−α)`` and ``||β_k||² = B k^(−δ)``
    that are fed back into :func:`deterministic_equivalent`.
    """
    if not np.isfinite(amplitude) or amplitude <= 0:
        raise ValueError(f"amplitude must be finite and positive, got {amplitude!r}")
    if not np.isfinite(exponent):
        raise ValueError(f"exponent must be finite, got {exponent!r}")
    if int(n_terms) != n_terms or n_terms < 1:
        raise ValueError(f"n_terms must be a positive integer, got {n_terms!r}")
    return amplitude * np.arange(1, int(n_terms) + 1, dtype=np.float64) ** (-float(exponent))


def power_law_rate(alpha: float, delta: float) -> float:
    """Noiseless decay exponent of the risk, ``R ∝ n^(−min(δ − 1, 2α))``."""
    if not (np.isfinite(alpha) and np.isfinite(delta)):
        raise ValueError(f"alpha and delta must be finite, got {alpha!r} and {delta!r}")
    return float(min(delta - 1.0, 2.0 * alpha))


def predict_grid(
    eigvals,
    proj,
    target_map,
    sample_sizes,
    lambdas_rel,
    k_min: int,
    k_max: int,
    rcond: float = 1e-10,
    floor: float | None = None,
    scale: float | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Omniscient and power-law deterministic equivalents on an (n, λ) grid (SPEC §3).

    Parameters
    ----------
    eigvals, proj, target_map, rcond, floor : as for :func:`population_from_pool`.
    sample_sizes : (S,) sample sizes n.
    lambdas_rel : (L,) relative ridges; the absolute ridge is ``λ_rel · s``.
    scale : the kernel scale ``s = tr(K_pool)/N_pool`` (:func:`rmtlens.estimators.grids.kernel_scale`
        of the pool diagonal), the one the ridge path uses; when None, ``Σ_k D_k / N_pool``,
        the same trace from the spectrum.
    k_min, k_max : 1-based index window of the power-law fits; ``k_max`` is lowered
        to the number of non-zero eigenvalues.

    Returns
    -------
    grid : dict of (S·L,) arrays, n-major: ``n``, ``lambda_rel``, ``lambda``, ``kappa``,
        ``gamma``, ``lambda_over_kappa``, ``omniscient_test_risk``,
        ``omniscient_train_risk``, ``powerlaw_test_risk`` (the same formula on the
        idealised spectra ``A k^-α``, ``B k^-δ``, k = 1..N_pool).
    fit : the power-law fit (:func:`fit_spectrum_power_laws`) plus ``rate``
        (``min(δ − 1, 2α)``), ``scale`` and ``rank``.
    """
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
    fit = fit_spectrum_power_laws(mu, b2, k_min, max(k_min + 2, min(k_max, rank)))
    mu_pl = power_law_values(fit["A"], fit["alpha"], n_pool)
    b2_pl = power_law_values(fit["B"], fit["delta"], n_pool)
    de_pl = deterministic_equivalent(mu_pl, b2_pl, nn, ll)
    grid = {
        "n": nn.ravel().astype(np.int64),
        "lambda_rel": np.meshgrid(n, lam_rel, indexing="ij")[1].ravel(),
        "lambda": ll.ravel(),
        "kappa": de["kappa"].ravel(),
        "gamma": de["gamma"].ravel(),
        "lambda_over_kappa": de["lambda_over_kappa"].ravel(),
        "omniscient_test_risk": de["test_risk"].ravel(),
        "omniscient_train_risk": de["train_risk"].ravel(),
        "powerlaw_test_risk": de_pl["test_risk"].ravel(),
    }
    fit.update(rate=power_law_rate(fit["alpha"], fit["delta"]), scale=scale, rank=rank)
    return grid, fit
