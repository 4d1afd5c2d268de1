"""Power-law idealisations of a kernel's spectrum and target, and the rates they imply (SPEC §3, §5).

Notation as in :mod:`rmtlens.estimators.theory`: population eigenvalues ``μ_k``
(descending, ``k = 1..N_pool``) and squared target coefficients ``b_k = ||β_k||²``.
The kernel's **rank** ``r`` is the number of ``μ_k > 0`` (directions above its accuracy
floor); the target power on the other directions, ``Σ_{μ_k = 0} b_k``, is the
**out-of-span mass**, which no ridge estimator can learn and which the deterministic
equivalent treats exactly as additive label noise of that variance.

Fits over a window of indices, each decade of ``k`` weighing alike:

- ``α``: least squares of ``log μ_k`` on ``log k`` with weights ``1/k``, ``μ_k ≈ A k^-α``;
- ``δ``: the **tail sum** ``S(k) = Σ_{j=k}^{r} b_j`` against the tail of an exact
  truncated power law, ``S(k) ≈ B Σ_{j=k}^{r} j^-δ`` (``≈ B k^-(δ-1)/(δ-1)`` for
  ``k ≪ r``): least squares in ``log S`` over ``δ`` (with ``log B`` solved in closed form
  for each ``δ``). Per-mode ``b_k`` scatter by orders of magnitude between neighbouring
  modes; their tail sums are smooth, and they are what the risk depends on (the bias
  of a predictor that learns the first ``k`` modes is ``S(k + 1)``). At most 40
  log-spaced ``k`` enter: neighbouring tail sums carry the same information.

A fit is **valid** when ``α > 1``, ``δ > 1``, both R² are at least ``min_r2`` and the
window holds at least ``min_points`` indices; a rate is reported only from a valid fit.

Rates (Cui, Loureiro, Krzakala & Zdeborová 2021, with ``ρ = min(δ − 1, 2α)``): the
excess risk at the optimal ridge decays as ``n^-ρ`` without noise (the noiseless
regime), and as ``n^-ρ/(1+ρ)`` once label noise, or out-of-span mass, dominates it
(the noisy regime).
"""

from __future__ import annotations

import numpy as np

WINDOW_NAMES = ("fixed", "rank", "n_range")
MAX_FIT_POINTS = 40
DEFAULT_MIN_R2 = 0.95
DEFAULT_MIN_POINTS = 8


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
    return {
        "exponent": float(-slope),
        "amplitude": float(np.exp(intercept)),
        "r2": _r_squared(ly, intercept + slope * lx),
        "x_min": float(xa[use].min()),
        "x_max": float(xa[use].max()),
        "n_points": int(use.sum()),
        "n_dropped": int((window & ~use).sum()),
    }


def _r_squared(observed: np.ndarray, fitted: np.ndarray) -> float:
    total = np.sum((observed - observed.mean()) ** 2)
    return float(1.0 - np.sum((observed - fitted) ** 2) / total) if total > 0 else 1.0


def log_spaced_indices(k_min: int, k_max: int, max_points: int = MAX_FIT_POINTS) -> np.ndarray:
    """Distinct integers from ``k_min`` to ``k_max`` (both included), log-spaced, at most
    ``max_points`` of them (all of them when the window is that small), shape (P,)."""
    if not (1 <= k_min <= k_max):
        raise ValueError(f"the window [{k_min}, {k_max}] must satisfy 1 ≤ k_min ≤ k_max")
    if k_max - k_min + 1 <= max_points:
        return np.arange(k_min, k_max + 1)
    return np.unique(np.round(np.geomspace(k_min, k_max, max_points)).astype(np.int64))


def _truncated_tails(deltas: np.ndarray, ks: np.ndarray, rank: int) -> np.ndarray:
    """``Σ_{j=k}^{rank} j^-δ`` for each ``δ`` of ``deltas`` (G,) and ``k`` of ``ks`` (P,),
    shape (G, P); each sum runs from its small terms up."""
    log_j = np.log(np.arange(int(ks.min()), rank + 1, dtype=np.float64))
    out = np.empty((deltas.size, ks.size))
    step = max(1, 2**22 // log_j.size)
    for start in range(0, deltas.size, step):
        terms = np.exp(-deltas[start : start + step, None] * log_j[None, :])
        suffix = np.cumsum(terms[:, ::-1], axis=1)[:, ::-1]
        out[start : start + step] = suffix[:, ks - ks.min()]
    return out


def power_law_tails(amplitude: float, delta: float, ks, rank: int) -> np.ndarray:
    """``amplitude · Σ_{j=k}^{rank} j^-δ`` for each index ``k`` of ``ks`` (1 ≤ k ≤ rank):
    the tail sums of the truncated law ``b_j = amplitude · j^-δ``, shape of ``ks``."""
    k = np.asarray(ks, dtype=np.int64)
    if k.size == 0 or k.min() < 1 or k.max() > rank:
        raise ValueError(f"indices must lie in [1, rank = {rank}]")
    return amplitude * _truncated_tails(np.array([float(delta)]), k.ravel(), int(rank))[0].reshape(k.shape)


def fit_tail_exponent(beta_sq, rank: int, k_min: int, k_max: int, max_points: int = MAX_FIT_POINTS) -> dict:
    """Fit ``δ`` and ``B`` of ``b_k = B k^-δ`` (``k ≤ rank``) from the tail sums of ``b``.

    Parameters
    ----------
    beta_sq : (K,) float, ``||β_k||²`` sorted by decreasing eigenvalue (K ≥ rank).
    rank : the number of in-span directions; the tail sums run up to it.
    k_min, k_max : inclusive 1-based window of ``k`` (``k_max ≤ rank``).
    max_points : at most this many log-spaced ``k`` in the window.

    Returns
    -------
    dict: ``delta``, ``B``, ``r2`` (of ``log S(k)``), ``n_points``, ``k_min``, ``k_max``.
    On an exact truncated power law the fit returns its ``δ`` and ``B`` to round-off.

    Raises
    ------
    ValueError when the window holds fewer than 3 positive tail sums.
    """
    b2 = np.asarray(beta_sq, dtype=np.float64)
    if b2.ndim != 1 or b2.size < rank or rank < 1:
        raise ValueError(f"beta_sq must be 1-d with at least rank = {rank} ≥ 1 entries, got shape {b2.shape}")
    if np.any(b2 < 0) or not np.all(np.isfinite(b2)):
        raise ValueError("beta_sq must be finite and non-negative")
    if not (1 <= k_min < k_max <= rank):
        raise ValueError(f"the window k_min = {k_min}, k_max = {k_max} must satisfy 1 ≤ k_min < k_max ≤ rank = {rank}")
    tails = np.cumsum(b2[:rank][::-1])[::-1]
    ks = log_spaced_indices(k_min, k_max, max_points)
    ks = ks[tails[ks - 1] > 0]
    if ks.size < 3:
        raise ValueError(f"fewer than 3 positive tail sums in the window [{k_min}, {k_max}]")
    log_s = np.log(tails[ks - 1])

    def misfits(deltas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        log_g = np.log(_truncated_tails(np.atleast_1d(deltas), ks, rank))
        log_b = np.mean(log_s[None, :] - log_g, axis=1)
        return np.sum((log_s[None, :] - log_b[:, None] - log_g) ** 2, axis=1), log_b

    # A coarse grid brackets the minimum, then finer grids inside the bracket refine it
    # (each step shrinks it tenfold); the misfit is smooth in δ, and an exact power law
    # makes it vanish at the true δ.
    grid = np.linspace(-2.0, 12.0, 281)
    while True:
        values, log_bs = misfits(grid)
        i = int(np.argmin(values))
        if grid[1] - grid[0] < 1e-12 * max(1.0, abs(grid[i])):
            break
        grid = np.linspace(grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)], 21)
    delta, log_b = float(grid[i]), float(log_bs[i])
    fitted = log_b + np.log(_truncated_tails(np.array([delta]), ks, rank)[0])
    return {
        "delta": float(delta),
        "B": float(np.exp(log_b)),
        "r2": _r_squared(log_s, fitted),
        "n_points": int(ks.size),
        "k_min": int(k_min),
        "k_max": int(k_max),
    }


def fit_eigenvalue_exponent(mu, k_min: int, k_max: int) -> dict:
    """Fit ``μ_k ≈ A k^-α`` over every ``k`` of ``[k_min, k_max]`` with ``μ_k > 0``.

    Weighted least squares of ``log μ_k`` on ``log k`` with weights ``1/k``, so each
    decade of ``k`` weighs alike while every eigenvalue still averages out the scatter.

    Returns dict: ``alpha``, ``A``, ``r2`` (weighted), ``n_points``.
    """
    mu = np.asarray(mu, dtype=np.float64)
    if not (1 <= k_min < k_max <= mu.size):
        raise ValueError(f"the window k_min = {k_min}, k_max = {k_max} must satisfy 1 ≤ k_min < k_max ≤ {mu.size}")
    ks = np.arange(k_min, k_max + 1)
    ks = ks[mu[ks - 1] > 0]
    if ks.size < 3:
        raise ValueError(f"fewer than 3 positive eigenvalues in the window [{k_min}, {k_max}]")
    lx, ly, w = np.log(ks), np.log(mu[ks - 1]), 1.0 / ks
    slope, intercept = np.polyfit(lx, ly, 1, w=np.sqrt(w))
    mean = np.sum(w * ly) / np.sum(w)
    total = np.sum(w * (ly - mean) ** 2)
    r2 = 1.0 - np.sum(w * (ly - intercept - slope * lx) ** 2) / total if total > 0 else 1.0
    return {"alpha": float(-slope), "A": float(np.exp(intercept)), "r2": float(r2), "n_points": int(ks.size)}


def power_law_windows(rank: int, fixed: tuple[int, int], n_range: tuple[float, float] | None = None) -> dict:
    """The fit windows of a kernel, ``{name: (k_min, k_max)}`` (1-based, inclusive).

    - ``fixed``: the configured window, ``k_max`` lowered to the rank;
    - ``rank``: ``[2, rank/4]``, the span of the kernel short of the indices where a
      finite pool's spectrum bends down towards its rank;
    - ``n_range`` (when given ``(n_lo, n_hi)``, the sample sizes of the scaling fit):
      ``[n_lo/2, min(n_hi, rank/2)]``. At sample size ``n`` a ridge estimator learns at
      most about ``n`` modes, so the risk over ``n_lo..n_hi`` is set by the spectrum and
      the target around those indices.

    A window whose ``k_max`` does not exceed its ``k_min`` is returned as is; the fits
    then mark it invalid.
    """
    rank = int(rank)
    windows = {
        "fixed": (int(fixed[0]), min(int(fixed[1]), rank)),
        "rank": (2, rank // 4),
    }
    if n_range is not None:
        n_lo, n_hi = n_range
        windows["n_range"] = (max(2, int(n_lo // 2)), int(min(n_hi, rank // 2)))
    return windows


def _perturbed_windows(k_min: int, k_max: int, rank: int) -> list[tuple[int, int]]:
    """The window with each end moved by a factor 2 either way (9 windows, clipped to the rank)."""
    out = set()
    for a in (0.5, 1.0, 2.0):
        for b in (0.5, 1.0, 2.0):
            lo, hi = max(1, int(round(k_min * a))), min(rank, int(round(k_max * b)))
            if hi > lo:
                out.add((lo, hi))
    return sorted(out)


def fit_spectrum_power_laws(
    mu, beta_sq, k_min: int, k_max: int, min_r2: float = DEFAULT_MIN_R2, min_points: int = DEFAULT_MIN_POINTS
) -> dict:
    """``α`` from the eigenvalues and ``δ`` from the tail sums over ``[k_min, k_max]``.

    Parameters
    ----------
    mu, beta_sq : (K,) float, sorted by decreasing ``μ`` (zeros after the rank); index
        ``k`` is 1-based.
    k_min, k_max : inclusive window, ``k_max`` at most the rank (number of ``μ > 0``).
    min_r2, min_points : the validity thresholds (module docstring).

    Returns
    -------
    dict: ``k_min``, ``k_max``, ``alpha``, ``A``, ``alpha_r2``, ``delta``, ``B``,
    ``delta_r2``, ``points``, the spread of each exponent over the window with its ends
    moved by a factor 2 (``alpha_lo/hi``, ``delta_lo/hi``), ``valid`` and ``reason``
    (empty when valid), and the rates ``noiseless_rate`` and ``noisy_rate`` (NaN unless
    valid). A window too narrow to fit gives NaN exponents and ``valid = False``.
    """
    mu = np.asarray(mu, dtype=np.float64)
    b2 = np.asarray(beta_sq, dtype=np.float64)
    if mu.ndim != 1 or mu.shape != b2.shape:
        raise ValueError(f"mu and beta_sq must be 1-d of one shape, got {mu.shape} and {b2.shape}")
    rank = int(np.sum(mu > 0))
    row = {"k_min": int(k_min), "k_max": int(k_max)}
    nan = float("nan")
    empty = dict(alpha=nan, A=nan, alpha_r2=nan, delta=nan, B=nan, delta_r2=nan, points=0,
                 alpha_lo=nan, alpha_hi=nan, delta_lo=nan, delta_hi=nan, noiseless_rate=nan, noisy_rate=nan)
    if not (1 <= k_min < k_max <= rank) or k_max - k_min + 1 < 3:
        return {**row, **empty, "valid": False, "reason": f"window [{k_min}, {k_max}] does not fit in rank {rank}"}
    ev = fit_eigenvalue_exponent(mu, k_min, k_max)
    tail = fit_tail_exponent(b2, rank, k_min, k_max)
    alphas, deltas = [], []
    for lo, hi in _perturbed_windows(k_min, k_max, rank):
        try:
            alphas.append(fit_eigenvalue_exponent(mu, lo, hi)["alpha"])
            deltas.append(fit_tail_exponent(b2, rank, lo, hi)["delta"])
        except ValueError:  # fewer than 3 usable points in a shrunk window
            continue
    row.update(
        alpha=ev["alpha"], A=ev["A"], alpha_r2=ev["r2"], delta=tail["delta"], B=tail["B"], delta_r2=tail["r2"],
        points=min(ev["n_points"], tail["n_points"]),
        alpha_lo=float(min(alphas)), alpha_hi=float(max(alphas)),
        delta_lo=float(min(deltas)), delta_hi=float(max(deltas)),
    )
    problems = []
    if row["alpha"] <= 1:
        problems.append("alpha <= 1")
    if row["delta"] <= 1:
        problems.append("delta <= 1")
    if row["alpha_r2"] < min_r2:
        problems.append(f"alpha R² < {min_r2:g}")
    if row["delta_r2"] < min_r2:
        problems.append(f"delta R² < {min_r2:g}")
    if row["points"] < min_points:
        problems.append(f"fewer than {min_points} points")
    row["valid"] = not problems
    row["reason"] = "; ".join(problems)
    valid = row["valid"]
    row["noiseless_rate"] = noiseless_rate(row["alpha"], row["delta"]) if valid else nan
    row["noisy_rate"] = noisy_rate(row["alpha"], row["delta"]) if valid else nan
    return row


def spectrum_curves(mu, beta_sq, max_points: int = 200) -> dict[str, np.ndarray]:
    """What the fits see, for a figure: at log-spaced ``k`` up to the rank, ``mu`` (``μ_k``)
    and ``tail`` (``S(k) = Σ_{j=k}^{rank} ||β_j||²``), each of shape (P,), with ``k``."""
    mu = np.asarray(mu, dtype=np.float64)
    b2 = np.asarray(beta_sq, dtype=np.float64)
    rank = int(np.sum(mu > 0))
    if rank < 1:
        raise ValueError("the spectrum has no positive eigenvalue")
    ks = log_spaced_indices(1, rank, max_points)
    tails = np.cumsum(b2[:rank][::-1])[::-1]
    return {"k": ks, "mu": mu[ks - 1], "tail": tails[ks - 1]}


def noiseless_rate(alpha: float, delta: float) -> float:
    """``ρ = min(δ − 1, 2α)``: the excess risk at the optimal ridge decays as ``n^-ρ``
    without noise (infinite rank, no out-of-span mass)."""
    if not (np.isfinite(alpha) and np.isfinite(delta)):
        raise ValueError(f"alpha and delta must be finite, got {alpha!r} and {delta!r}")
    return float(min(delta - 1.0, 2.0 * alpha))


def noisy_rate(alpha: float, delta: float) -> float:
    """``ρ/(1 + ρ)`` with ``ρ = min(δ − 1, 2α)``: the decay exponent of the excess risk at
    the optimal ridge once noise (or out-of-span mass) dominates it (Cui et al. 2021)."""
    rho = noiseless_rate(alpha, delta)
    if rho <= 0:
        raise ValueError(f"the noisy-regime rate needs min(δ − 1, 2α) > 0, got {rho!r}")
    return float(rho / (1.0 + rho))


def power_law_values(amplitude: float, exponent: float, n_terms: int) -> np.ndarray:
    """``amplitude · k^(−exponent)`` for ``k = 1..n_terms``, shape (n_terms,), float64."""
    if not np.isfinite(amplitude) or amplitude <= 0:
        raise ValueError(f"amplitude must be finite and positive, got {amplitude!r}")
    if not np.isfinite(exponent):
        raise ValueError(f"exponent must be finite, got {exponent!r}")
    if int(n_terms) != n_terms or n_terms < 1:
        raise ValueError(f"n_terms must be a positive integer, got {n_terms!r}")
    return amplitude * np.arange(1, int(n_terms) + 1, dtype=np.float64) ** (-float(exponent))


def idealised_spectra(fit: dict, n_terms: int) -> tuple[np.ndarray, np.ndarray]:
    """``μ_k = A k^-α`` and ``b_k = B k^-δ`` on all ``k = 1..n_terms``: infinite rank, no
    out-of-span mass. Returns two (n_terms,) arrays."""
    return power_law_values(fit["A"], fit["alpha"], n_terms), power_law_values(fit["B"], fit["delta"], n_terms)


def truncated_spectra(fit: dict, rank: int, null_mass: float, n_terms: int) -> tuple[np.ndarray, np.ndarray]:
    """The same laws cut at the kernel's rank, with the out-of-span mass kept.

    ``μ_k = A k^-α`` and ``b_k = B k^-δ`` for ``k ≤ rank``, ``μ_k = 0`` beyond, and the
    out-of-span target power ``null_mass`` on those null directions, as the omniscient
    deterministic equivalent keeps it. Returns two (n_terms,) arrays (``n_terms > rank``
    when ``null_mass > 0``).
    """
    rank = int(rank)
    if not (1 <= rank <= n_terms):
        raise ValueError(f"rank must lie in [1, n_terms = {n_terms}], got {rank}")
    if not np.isfinite(null_mass) or null_mass < 0:
        raise ValueError(f"null_mass must be finite and non-negative, got {null_mass!r}")
    if null_mass > 0 and rank == n_terms:
        raise ValueError("out-of-span mass needs a null direction: n_terms must exceed the rank")
    mu, b2 = np.zeros(int(n_terms)), np.zeros(int(n_terms))
    mu[:rank], b2[:rank] = idealised_spectra(fit, rank)
    if rank < n_terms:
        b2[rank] = null_mass
    return mu, b2
