"""Learning dynamics (SPEC §7, E7): gradient flow on kernel least squares.

Gradient flow with learning rate ``η`` on ``L = (1/2n) Σ_i (f(x_i) − y_i)²`` of a
linear model ``f(x) = θᵀφ(x)`` with kernel ``K = Φ Φᵀ`` (a linearised network, or
the kernel's function space), started from ``f = 0``, moves the function by
``df/dt = −(η/n) K(·, X) (f(X) − Y)`` and so has the closed form

    f_t(x*) = K* K⁻¹ (I − exp(−ηt K/n)) Y

(pseudo-inverse on the null space of ``K``). Through ``K = U diag(d) Uᵀ`` it is a
spectral filter, like ridge (SPEC §2) with ``1/(d + nλ)`` replaced by
``g_t(d) = (1 − exp(−ηt d/n))/d`` and the residual weight ``nλ/(d + nλ)`` replaced
by ``exp(−ηt d/n)``:

- predictions ``f_t(X*) = (K* U) diag(g_t(d)) Uᵀ Y``; ``g_t`` is evaluated as
  ``−expm1(−ηt d/n)/d``, accurate for tiny ``d`` (where it tends to ``ηt/n``), and
  is 0 on eigenvalues clipped to zero (the pseudo-inverse convention of
  :func:`rmtlens.estimators.ridge.ridge_path`; in exact arithmetic ``K* U_k = 0`` there);
- training smoother ``S_t = I − exp(−ηt K/n)``, train risk
  ``R_tr(t) = (1/n) Σ_i exp(−2ηt d_i/n) ||Ỹ_i||²`` with ``Ỹ = UᵀY``;
- ``GCV_t = R_tr(t) / (1 − tr(S_t)/n)²`` with ``1 − tr(S_t)/n = (1/n) Σ_i exp(−ηt d_i/n)``:
  no cancellation, and the ratio is evaluated with the weights rescaled by
  ``exp(+ηt d_min/n)`` so it stays finite where every weight underflows.

The matched ridge is ``λ = 1/(ηt)`` (so ``nλ = n/(ηt)`` and
``exp(−ηt d/n) ≈ 1/(1 + ηt d/n) = nλ/(d + nλ)``); ``t = ∞`` is ridgeless regression.
"""

from __future__ import annotations

import numpy as np

from rmtlens.estimators.accuracy import DEFAULT_SAFETY, apply_floor, path_floor, resolved_ridges
from rmtlens.estimators.ridge import (
    NullSpace,
    check_ridge_inputs,
    classification_error,
    clip_spectrum,
    null_space,
    ridge_path_in_eigenbasis,
)


def _check_times(times, learning_rate: float) -> np.ndarray:
    t = np.atleast_1d(np.asarray(times, dtype=np.float64))
    if t.ndim != 1 or t.size == 0:
        raise ValueError(f"times must be a non-empty 1-d grid, got shape {t.shape}")
    if np.any(np.isnan(t)) or np.any(t <= 0):
        raise ValueError("times must be positive (np.inf allowed for the t → ∞ limit)")
    if np.any(np.diff(t) <= 0):
        raise ValueError("times must be strictly increasing")
    if not (np.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"learning_rate must be finite and positive, got {learning_rate}")
    return t


def gradient_flow_filters(d: np.ndarray, n: int, times: np.ndarray, learning_rate: float = 1.0):
    """Spectral filters of gradient flow at every time.

    Parameters
    ----------
    d : (k,) clipped eigenvalues of the training kernel (zeros mark the null space).
    n : number of training samples.
    times : (T,) positive times, ``np.inf`` allowed.
    learning_rate : ``η``.

    Returns
    -------
    fit : (k, T) ``g_t(d) = (1 − exp(−ηt d/n))/d`` (0 on the null space).
    residual : (k, T) ``exp(−ηt d/n)`` (1 on the null space), the eigenvalues of ``I − S_t``.
    residual_direction : (k, T) ``exp(−ηt (d − d_min)/n)``: ``residual`` rescaled so its
        largest entry is 1, for scale-invariant ratios (GCV); at ``t = ∞`` the
        indicator of ``d = d_min``.
    """
    d = np.asarray(d, dtype=np.float64)
    t = np.asarray(times, dtype=np.float64)
    null = d == 0.0
    dmin = float(d.min())
    at_min = d == dmin
    with np.errstate(invalid="ignore"):
        x = learning_rate * t[None, :] * d[:, None] / n  # nan only for 0 · inf on the null space
        x_rel = learning_rate * t[None, :] * (d - dmin)[:, None] / n
    fit = np.where(null[:, None], 0.0, -np.expm1(-np.where(null[:, None], 0.0, x)) / np.where(null, 1.0, d)[:, None])
    residual = np.where(null[:, None], 1.0, np.exp(-np.where(null[:, None], 0.0, x)))
    residual_direction = np.where(at_min[:, None], 1.0, np.exp(-np.where(at_min[:, None], 0.0, x_rel)))
    return fit, residual, residual_direction


def gradient_flow_predictions(
    eigvals: np.ndarray,
    eigvecs: np.ndarray,
    y_train: np.ndarray,
    k_test: np.ndarray,
    time: float,
    learning_rate: float = 1.0,
    rcond: float = 1e-10,
    floor: float | None = None,
) -> np.ndarray:
    """Predictions ``K* K⁻¹ (I − exp(−ηt K/n)) Y`` at one time, shape (m, C).

    ``time = np.inf`` gives ridgeless regression ``K* K⁺ Y``. ``floor`` (absolute), when
    given, replaces ``rcond · max(eigvals)`` as the null cutoff.
    """
    t = _check_times([time], learning_rate)
    d = np.asarray(eigvals, dtype=np.float64)
    d = clip_spectrum(d, rcond) if floor is None else apply_floor(d, floor)
    U = np.asarray(eigvecs, dtype=np.float64)
    Y = np.asarray(y_train, dtype=np.float64)
    Y = Y[:, None] if Y.ndim == 1 else Y
    fit, _, _ = gradient_flow_filters(d, d.shape[0], t, learning_rate)
    return np.asarray(k_test, dtype=np.float64) @ (U @ (fit[:, :1] * (U.T @ Y)))


def gradient_flow_path(
    eigvals: np.ndarray,
    eigvecs: np.ndarray,
    y_train: np.ndarray,
    k_test: np.ndarray,
    y_test: np.ndarray,
    times: np.ndarray,
    learning_rate: float = 1.0,
    rcond: float | None = 1e-10,
    floor: float | None = None,
    safety: float = DEFAULT_SAFETY,
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Risks of gradient flow along time, GCV of ``S_t``, and ridge at ``λ = 1/(ηt)``.

    Parameters
    ----------
    eigvals : (n,) eigenvalues of the training kernel ``K``.
    eigvecs : (n, n) matching orthonormal eigenvectors (columns).
    y_train : (n, C) or (n,) training targets.
    k_test : (m, n) test-versus-train kernel ``K*``.
    y_test : (m, C) or (m,) test targets.
    times : (T,) positive times (a log grid; ``np.inf`` allowed and meaning ridgeless).
    learning_rate : ``η``; only ``ηt`` matters.
    rcond : relative eigenvalue cutoff, used when ``floor`` is None.
    floor : absolute eigenvalue floor (the kernel's accuracy floor); when given it
        replaces ``rcond``.
    safety : the floor's safety factor (see :func:`rmtlens.estimators.accuracy.resolved_ridges`).

    Returns
    -------
    table : dict of (T,) arrays: ``time``, ``test_risk``, ``test_error``,
        ``train_risk``, ``gcv``, ``dof`` (``tr S_t``), ``ridge_lambda`` (``1/(ηt)``),
        ``ridge_test_risk``, ``ridge_test_error``, ``ridge_train_risk``,
        ``ridge_gcv``, ``resolved`` (the matched ridge ``1/(ηt)`` is resolved,
        :func:`rmtlens.estimators.accuracy.resolved_ridges`; ``t = ∞`` is ``λ = 0``),
        ``is_t_star`` (True at the early-stopping optimum over resolved times).
    summary : dict of floats, over the resolved times only: ``t_star`` and
        ``test_risk_t_star`` (argmin and min of the test risk), ``t_limit`` and
        ``test_risk_limit`` (the latest resolved time, ``∞`` when the ridgeless limit is
        resolved, and its risk), ``early_stopping_gain`` (``1 − test_risk_t_star /
        test_risk_limit``), ``max_rise`` (largest increase of the test risk
        after an earlier minimum, relative to that minimum), ``non_monotone``
        (1.0 when ``max_rise > 1e-9``, else 0.0), ``t_gcv`` /
        ``test_risk_t_gcv`` (the time chosen by minimising GCV, training data only),
        and ``unresolved_times`` (how many grid times were left out).
    """
    d, U, Y, Ks, Ys, _ = check_ridge_inputs(eigvals, eigvecs, y_train, k_test, y_test, [0.0])
    t = _check_times(times, learning_rate)
    n = d.shape[0]
    floor = path_floor(d, floor, rcond, safety, caller="gradient_flow_path")
    resolved = _resolved_times(d, n, t, learning_rate, floor, safety)
    d = apply_floor(d, floor)
    return gradient_flow_in_eigenbasis(d, U, U.T @ Y, Ks @ U, Ys, t, learning_rate, resolved=resolved)


def _resolved_times(d, n: int, t: np.ndarray, learning_rate: float, floor: float, safety: float) -> np.ndarray:
    """Which times are resolved: their matched ridge ``1/(ηt)`` is (``t = ∞`` is ``λ = 0``)."""
    resolved = resolved_ridges(d, n, 1.0 / (learning_rate * t), floor, safety)
    if not resolved.any():
        raise ValueError(f"no time of the grid is resolved: every matched ridge n/(ηt) is below the floor {floor:.3g}")
    return resolved


def gradient_flow_in_eigenbasis(
    d: np.ndarray,
    U: np.ndarray,
    Yt: np.ndarray,
    A: np.ndarray,
    Ys: np.ndarray,
    t: np.ndarray,
    learning_rate: float = 1.0,
    null: NullSpace | None = None,
    resolved: np.ndarray | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """:func:`gradient_flow_path` from checked, rotated inputs: ``d`` eigenvalues with the
    null directions (below the floor) set to 0, ``U`` (n, r), ``Yt = Uᵀ Y``, ``A = K* U``,
    ``Ys``, times ``t``; ``resolved`` (T,) marks the resolved times (all when None). A thin
    basis (``r < n``) needs ``null``, its complement (see
    :func:`rmtlens.estimators.ridge.ridge_path_in_eigenbasis`): eigenvalue 0 there, so
    residual 1, fit 0, and the GCV direction weight of ``d_min = 0``."""
    n = U.shape[0]
    lambdas = 1.0 / (learning_rate * t)
    resolved = np.ones(t.size, dtype=bool) if resolved is None else np.asarray(resolved, dtype=bool)
    q = np.einsum("ic,ic->i", Yt, Yt)
    if null is None:
        fit, residual, direction = gradient_flow_filters(d, n, t, learning_rate)
    else:
        fit, residual, direction = gradient_flow_filters(np.append(d, 0.0), n, t, learning_rate)
        res0, dir0 = residual[-1], direction[-1]
        fit, residual, direction = fit[:-1], residual[:-1], direction[:-1]
    train, gcv_num = (residual**2).T @ q, (direction**2).T @ q
    trace_dir, dof = np.sum(direction, axis=0), np.sum(1.0 - residual, axis=0)
    if null is not None:
        train, gcv_num = train + res0**2 * null.energy, gcv_num + dir0**2 * null.energy
        trace_dir, dof = trace_dir + null.dim * dir0, dof + null.dim * (1.0 - res0)

    table = {
        "time": t.copy(),
        "train_risk": train / n,
        "gcv": n * gcv_num / trace_dir**2,
        "dof": dof,
        "test_risk": np.empty(t.size),
        "test_error": np.empty(t.size),
    }
    for j in range(t.size):
        pred = A @ (fit[:, j : j + 1] * Yt)
        err = pred - Ys
        table["test_risk"][j] = np.mean(np.einsum("ic,ic->i", err, err))
        table["test_error"][j] = classification_error(pred, Ys)

    ridge = ridge_path_in_eigenbasis(d, U, Yt, A, Ys, np.append(lambdas, 0.0), loo=False, null=null)
    table["ridge_lambda"] = lambdas
    for key in ("test_risk", "test_error", "train_risk", "gcv"):
        table["ridge_" + key] = ridge[key][:-1]

    table["resolved"] = resolved
    keep = np.flatnonzero(resolved)  # resolved times form a prefix of the grid, or all of it
    risk = table["test_risk"][keep]
    star = int(keep[np.argmin(risk)])
    table["is_t_star"] = np.arange(t.size) == star
    last = int(keep[-1])
    limit = float(ridge["test_risk"][-1]) if np.isinf(t[last]) else float(table["test_risk"][last])
    running_min = np.minimum.accumulate(risk)
    rise = float(np.max((risk - running_min) / running_min)) if np.all(running_min > 0) else 0.0
    chosen = int(keep[np.argmin(table["gcv"][keep])])
    summary = {
        "t_star": float(t[star]),
        "test_risk_t_star": float(table["test_risk"][star]),
        "t_limit": float(t[last]),
        "test_risk_limit": limit,
        "early_stopping_gain": 1.0 - float(table["test_risk"][star]) / limit if limit > 0 else 0.0,
        "max_rise": rise,
        "non_monotone": float(rise > 1e-9),
        "t_gcv": float(t[chosen]),
        "test_risk_t_gcv": float(table["test_risk"][chosen]),
        "unresolved_times": float(t.size - keep.size),
    }
    return table, summary


def time_grid(scale: float, lam_rel_min: float, lam_rel_max: float, num: int, learning_rate: float = 1.0) -> np.ndarray:
    """Log-spaced times whose matched ridges ``1/(ηt)`` span ``[lam_rel_min, lam_rel_max] · scale``,
    increasing, with ``np.inf`` (ridgeless) appended. ``scale`` is the kernel's ``tr(K_pool)/N_pool``."""
    if not (scale > 0 and 0 < lam_rel_min < lam_rel_max and num >= 2 and learning_rate > 0):
        raise ValueError(
            f"need scale > 0, 0 < lam_rel_min < lam_rel_max, num >= 2 and learning_rate > 0; got "
            f"{scale}, {lam_rel_min}, {lam_rel_max}, {num}, {learning_rate}"
        )
    lambdas = np.geomspace(lam_rel_max, lam_rel_min, num) * scale
    return np.append(1.0 / (learning_rate * lambdas), np.inf)


def gradient_flow_path_low_rank(
    eigvals: np.ndarray,
    basis: np.ndarray,
    y_train: np.ndarray,
    test_basis: np.ndarray,
    y_test: np.ndarray,
    times: np.ndarray,
    learning_rate: float = 1.0,
    rcond: float | None = 1e-10,
    floor: float | None = None,
    safety: float = DEFAULT_SAFETY,
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """:func:`gradient_flow_path` from a thin eigendecomposition of a feature kernel:
    ``eigvals`` (r,), ``basis`` (n, r), ``test_basis = K* U`` (m, r); the null space of
    the basis' complement is handled analytically (SPEC §2.1). ``floor`` is the accuracy
    floor of the n x n block (``accuracy_floor(..., n=n)``); range directions below it
    join the null space, and times whose matched ridge is below it are not resolved."""
    d = np.asarray(eigvals, dtype=np.float64)
    U = np.asarray(basis, dtype=np.float64)
    Y = np.asarray(y_train, dtype=np.float64)
    Y = Y[:, None] if Y.ndim == 1 else Y
    Ys = np.asarray(y_test, dtype=np.float64)
    Ys = Ys[:, None] if Ys.ndim == 1 else Ys
    A = np.asarray(test_basis, dtype=np.float64)
    if U.ndim != 2 or d.shape != (U.shape[1],) or Y.shape[0] != U.shape[0] or A.shape[1:] != (d.size,):
        raise ValueError(f"eigvals {d.shape}, basis {U.shape}, y_train {Y.shape}, test_basis {A.shape} disagree")
    if Ys.shape != (A.shape[0], Y.shape[1]):
        raise ValueError(f"y_test must have shape {(A.shape[0], Y.shape[1])}, got {Ys.shape}")
    t = _check_times(times, learning_rate)
    n = U.shape[0]
    floor = path_floor(d, floor, rcond, safety, n=n, caller="gradient_flow_path_low_rank")
    resolved = _resolved_times(d, n, t, learning_rate, floor, safety)
    d = apply_floor(d, floor)
    Yt = U.T @ Y
    return gradient_flow_in_eigenbasis(d, U, Yt, A, Ys, t, learning_rate, null_space(U, Y, Yt), resolved)
