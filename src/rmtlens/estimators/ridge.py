"""Kernel ridge regression over a whole ridge grid from one eigendecomposition.

Notation (SPEC §2): training kernel ``K`` (n x n) with ``K = U diag(d) Uᵀ``,
test cross-kernel ``K*`` (m x n), targets ``Y`` (n x C), ridge ``λ ≥ 0``.
Predictor ``Ŷ* = K* (K + nλI)⁻¹ Y``, smoother ``S = K (K + nλI)⁻¹``, residual
weights ``r_i = nλ / (d_i + nλ)`` so that ``(I − S) = U diag(r) Uᵀ``.

Every quantity is written in terms of ``r`` (never as ``1 − d/(d + nλ)``), which
keeps GCV and LOO accurate at tiny λ where ``1 − tr(S)/n`` is itself tiny.

Null directions. Eigenvalues at or below a floor (the kernel's accuracy floor,
:mod:`rmtlens.estimators.accuracy`, or ``rcond · max(d)``) count as zero: the
predictor leaves them out at every λ (``K* u = 0`` on the null space of a PSD kernel),
and their residual weight is 1.

Ridgeless (``λ = 0``) is the limit ``λ → 0⁺``: the predictor uses the pseudo-inverse,
and GCV (a ratio invariant to rescaling ``r``) uses the limiting direction of ``r``:
the indicator of the null space when the kernel is rank-deficient, ``∝ 1/d`` when it
has full rank. LOO takes the limit per training point: with ``P₀`` the projector on the
null space, ``((I − S)Y)_i / (I − S)_ii → (P₀Y)_i / (P₀)_ii`` where ``(P₀)_ii > 0``,
and ``→ (K⁺Y)_i / (K⁺)_ii`` where ``(P₀)_ii = 0`` (the point alone spans a direction
of ``K``; then ``(P₀Y)_i = 0`` too and the next order in ``nλ`` decides). All are finite.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rmtlens.estimators.accuracy import (
    DEFAULT_FLOOR_TOLERANCE,
    DEFAULT_SAFETY,
    ROUNDOFF,
    apply_floor,
    flag_resolved,
    path_floor,
)


@dataclass(frozen=True)
class NullSpace:
    """The orthogonal complement of a thin range basis ``U`` (n, r), r < n, of a training
    kernel: ``dim = n − r``, ``energy = ||P Y||²_F``, ``residual = P Y`` (n, C) and
    ``leverage = diag P`` (n,), with ``P = I − U Uᵀ``. All O(n r C) to form."""

    dim: int
    energy: float
    residual: np.ndarray
    leverage: np.ndarray


def null_space(U: np.ndarray, Y: np.ndarray, Yt: np.ndarray) -> NullSpace | None:
    """:class:`NullSpace` of the thin basis ``U`` (n, r) for targets ``Y`` (n, C) with
    ``Yt = Uᵀ Y``; ``None`` when ``U`` is square (no complement)."""
    n, r = U.shape
    if r >= n:
        return None
    resid = Y - U @ Yt
    leverage = np.clip(1.0 - np.einsum("ik,ik->i", U, U), 0.0, None)
    return NullSpace(n - r, float(np.einsum("ic,ic->", resid, resid)), resid, leverage)


def check_ridge_inputs(eigvals, eigvecs, y_train, k_test, y_test, lambdas):
    """Validate and convert ridge-path inputs to float64 arrays; targets become 2-d."""
    d = np.asarray(eigvals, dtype=np.float64)
    U = np.asarray(eigvecs, dtype=np.float64)
    Y = np.asarray(y_train, dtype=np.float64)
    Ks = np.asarray(k_test, dtype=np.float64)
    Ys = np.asarray(y_test, dtype=np.float64)
    lam = np.atleast_1d(np.asarray(lambdas, dtype=np.float64))
    n = d.shape[0]
    if d.ndim != 1 or U.shape != (n, n):
        raise ValueError(f"eigvals (n,) and eigvecs (n, n) disagree: {d.shape} and {U.shape}")
    if Y.ndim == 1:
        Y = Y[:, None]
    if Ys.ndim == 1:
        Ys = Ys[:, None]
    if Y.shape[0] != n:
        raise ValueError(f"y_train has {Y.shape[0]} rows, the kernel has n = {n}")
    if Ks.ndim != 2 or Ks.shape[1] != n:
        raise ValueError(f"k_test must have shape (m, {n}), got {Ks.shape}")
    if Ys.shape != (Ks.shape[0], Y.shape[1]):
        raise ValueError(f"y_test must have shape {(Ks.shape[0], Y.shape[1])}, got {Ys.shape}")
    if np.any(lam < 0) or not np.all(np.isfinite(lam)):
        raise ValueError("lambdas must be finite and non-negative")
    for name, arr in (("eigvals", d), ("eigvecs", U), ("k_test", Ks), ("y_train", Y), ("y_test", Ys)):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contains NaN or infinite values")
    return d, U, Y, Ks, Ys, lam


def clip_spectrum(eigvals: np.ndarray, rcond: float) -> np.ndarray:
    """Zero the eigenvalues at or below ``rcond · max(eigvals)`` (negatives included)."""
    d = np.asarray(eigvals, dtype=np.float64)
    cutoff = rcond * max(float(d.max(initial=0.0)), 0.0)
    return np.where(d > cutoff, d, 0.0)


def residual_weights(d: np.ndarray, n: int, lambdas: np.ndarray):
    """Residual weights of ``I − S`` per eigen-direction and ridge.

    Parameters
    ----------
    d : (n,) clipped eigenvalues of the training kernel (zeros mark the null space).
    n : number of training samples.
    lambdas : (L,) absolute ridges, ``λ ≥ 0``.

    Returns
    -------
    r_actual : (n, L) the weights ``r_i = nλ/(d_i + nλ)``; at ``λ = 0`` the null-space
        indicator (all zeros when the kernel has full rank).
    r_direction : (n, L) weights proportional to ``r_actual`` with the ``λ → 0⁺``
        limit direction at ``λ = 0``: used by scale-invariant ratios (GCV, LOO).
    inverse : (n, L) the spectral filter ``1/(d_i + nλ)`` (pseudo-inverse at ``λ = 0``).
    """
    null = d == 0.0
    safe_d = np.where(null, 1.0, d)
    nl = n * lambdas[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        r_actual = np.where(nl > 0, nl / (d[:, None] + nl), null[:, None].astype(float))
        inverse = np.where(nl > 0, 1.0 / (d[:, None] + nl), np.where(null, 0.0, 1.0 / safe_d)[:, None])
    if null.any():
        limit = null.astype(float)
    else:
        limit = d.min() / d  # ∝ 1/d, scaled into (0, 1]
    r_direction = np.where(nl > 0, r_actual, limit[:, None])
    return r_actual, r_direction, inverse


def classification_error(predictions: np.ndarray, targets: np.ndarray) -> float:
    """Share of rows whose predicted class differs from the target's.

    With ``C > 1`` outputs the class is the argmax; with one output it is the sign.
    """
    if predictions.shape[-1] == 1:
        return float(np.mean(np.sign(predictions[..., 0]) != np.sign(targets[..., 0])))
    return float(np.mean(predictions.argmax(-1) != targets.argmax(-1)))


def ridge_path(
    eigvals: np.ndarray,
    eigvecs: np.ndarray,
    y_train: np.ndarray,
    k_test: np.ndarray,
    y_test: np.ndarray,
    lambdas: np.ndarray,
    rcond: float | None = 1e-10,
    block_size: int = 2**24,
    floor: float | None = None,
    safety: float = DEFAULT_SAFETY,
    floor_tolerance: float | None = DEFAULT_FLOOR_TOLERANCE,
) -> dict[str, np.ndarray]:
    """Test risk, test error, train risk, GCV, LOO and ``tr(S)`` for every ridge.

    Parameters
    ----------
    eigvals : (n,) eigenvalues of the training kernel ``K`` (any order).
    eigvecs : (n, n) matching orthonormal eigenvectors (columns).
    y_train : (n, C) or (n,) training targets.
    k_test : (m, n) test-versus-train kernel ``K*``.
    y_test : (m, C) or (m,) test targets.
    lambdas : (L,) absolute ridges ``λ ≥ 0`` (the system solved is ``K + nλI``).
    rcond : relative eigenvalue cutoff, used when ``floor`` is None: eigenvalues at or
        below ``rcond · max(d)`` count as zero.
    block_size : bound on the number of float64 entries of the per-block
        intermediates (``n · L_block · C``), which caps memory for large ``n · L · C``.
    floor : absolute eigenvalue floor (:func:`rmtlens.estimators.accuracy.accuracy_floor`);
        when given it replaces ``rcond``.
    safety : the floor's safety factor, which sets the band of
        :func:`rmtlens.estimators.accuracy.resolved_ridges`.
    floor_tolerance : a row stays resolved only if its test risk, GCV and LOO change by
        less than this (relative) when the floor is halved and when it is doubled
        (:func:`rmtlens.estimators.accuracy.flag_resolved`); None keeps the floor rule alone.

    Returns
    -------
    dict of (L,) arrays: ``lambda``, ``test_risk`` (mean over test rows of
    the squared error summed over outputs), ``test_error`` (classification error),
    ``train_risk``, ``gcv``, ``loo`` and ``dof`` (``tr S``), float64, ``floor_change``
    (the largest relative change of test risk, GCV and LOO at half and twice the floor),
    and the flags ``resolved_floor`` (:func:`rmtlens.estimators.accuracy.resolved_ridges`)
    and ``resolved`` (that and ``floor_change < floor_tolerance``), bool. LOO keeps the
    absolute ridge ``nλ`` fixed when a point is left out.
    """
    d, U, Y, Ks, Ys, lam = check_ridge_inputs(eigvals, eigvecs, y_train, k_test, y_test, lambdas)
    floor = path_floor(d, floor, rcond, safety, caller="ridge_path")
    Yt, A = U.T @ Y, Ks @ U  # targets in the eigenbasis, and K* U formed once for the whole grid

    def path_at(cutoff, lams):
        return ridge_path_in_eigenbasis(apply_floor(d, cutoff), U, Yt, A, Ys, lams, block_size, floor=cutoff)

    out = path_at(floor, lam)
    return flag_resolved(out, d, d.size, lam, floor, safety, floor_tolerance, path_at)


def _ridgeless_loo_terms(
    d: np.ndarray, U: np.ndarray, Yt: np.ndarray, floor: float, null: NullSpace | None = None
) -> np.ndarray:
    """Per training point, the ``λ → 0⁺`` limit of ``||((I − S)Y)_i||² / (I − S)_ii²`` (module doc).

    ``P₀`` projects on every null direction: the columns of ``U`` whose eigenvalue is 0
    (below the floor) and, on a thin basis, the complement ``null`` (``P₀ = U₀U₀ᵀ + P``,
    ``(P₀)_ii = ||U₀,i||² + null.leverage_i``, ``P₀Y = U₀Ỹ₀ + null.residual``).

    ``(P₀)_ii`` is zero to working accuracy when it is below ``θ² = (f/d_min)²``, the square of
    the largest angle by which an error of size ``f`` (the floor, or ``n·u·max d``) can
    tilt the kept eigenvectors towards the null space (Davis–Kahan with gap ``d_min``,
    the smallest kept eigenvalue): a diagonal of a projector errs by that squared angle.
    On a thin basis the complement's leverage is ``1 − ||U_i||²``, a difference whose
    error is first order in the angle: there the threshold is ``2θ + θ² + n·u``.
    """
    n = U.shape[0]
    zero = d == 0.0
    kept = ~zero
    if not kept.any():  # nothing learnt: the residual is Y itself and (I − S) = I
        resid = U @ Yt if null is None else U @ Yt + null.residual
        return np.einsum("ic,ic->i", resid, resid)
    Uk, dk = U[:, kept], d[kept]
    kinv_y = Uk @ (Yt[kept] / dk[:, None])
    kinv_diag = (Uk * Uk) @ (1.0 / dk)
    pinv_terms = np.einsum("ic,ic->i", kinv_y, kinv_y) / kinv_diag**2
    if not zero.any() and null is None:
        return pinv_terms
    U0 = U[:, zero]
    p0_diag = np.einsum("ik,ik->i", U0, U0)
    p0_y = U0 @ Yt[zero]
    theta = max(floor, n * ROUNDOFF * float(dk.max())) / float(dk.min())
    tol = theta**2
    if null is not None:
        p0_diag = p0_diag + null.leverage
        p0_y = p0_y + null.residual
        tol = 2.0 * theta + theta**2 + n * ROUNDOFF
    alone = p0_diag <= tol
    with np.errstate(divide="ignore", invalid="ignore"):
        null_terms = np.einsum("ic,ic->i", p0_y, p0_y) / p0_diag**2
    return np.where(alone, pinv_terms, null_terms)


def ridge_path_in_eigenbasis(
    d: np.ndarray,
    U: np.ndarray,
    Yt: np.ndarray,
    A: np.ndarray,
    Ys: np.ndarray,
    lam: np.ndarray,
    block_size: int = 2**24,
    loo: bool = True,
    null: NullSpace | None = None,
    floor: float = 0.0,
) -> dict[str, np.ndarray]:
    """:func:`ridge_path` from inputs already checked and rotated, for callers that
    hold them: ``d`` (n,) eigenvalues with the null directions set to 0, ``U`` (n, n),
    ``Yt = Uᵀ Y`` (n, C), ``A = K* U`` (m, n), ``Ys`` (m, C), ``lam`` (L,). ``loo=False``
    skips LOO (its ``n² L C`` work) and leaves it out of the result. ``floor`` is the
    cutoff that made ``d`` (it sets what counts as zero in the ridgeless LOO).

    Low-rank kernels: ``U`` may be a thin (n, r) basis of the range, with ``d``, ``Yt``
    and ``A`` on its r directions, when ``null`` describes the orthogonal complement
    (:func:`null_space`). Every complement direction has eigenvalue 0, so it enters
    as one direction of multiplicity ``null.dim``; ``K*`` must vanish on it (true
    for feature kernels ``K* = Φ* Φᵀ/p``), so it adds nothing to the predictions.
    Directions of the thin basis below the floor (``d = 0``) join it in the null space."""
    n, C = U.shape[0], Yt.shape[1]
    q = np.einsum("ic,ic->i", Yt, Yt)  # ||Ỹ_i||²
    if null is None:
        r_act, r_dir, inv = residual_weights(d, n, lam)
    else:  # weights of one representative null direction, then the range
        r_act, r_dir, inv = residual_weights(np.append(d, 0.0), n, lam)
        r0_act, r0_dir = r_act[-1], r_dir[-1]
        r_act, r_dir, inv = r_act[:-1], r_dir[:-1], inv[:-1]
    inv = np.where((d == 0.0)[:, None], 0.0, inv)  # null directions never enter the predictor
    train, gcv_num = (r_act**2).T @ q, (r_dir**2).T @ q
    trace_r, dof = np.sum(r_dir, axis=0), np.sum(1.0 - r_act, axis=0)
    if null is not None:
        train, gcv_num = train + r0_act**2 * null.energy, gcv_num + r0_dir**2 * null.energy
        trace_r, dof = trace_r + null.dim * r0_dir, dof + null.dim * (1.0 - r0_act)
    out = {
        "lambda": lam.copy(),
        "train_risk": train / n,
        "gcv": (gcv_num / n) / (trace_r / n) ** 2,
        "dof": dof,
        "test_risk": np.empty(lam.size),
        "test_error": np.empty(lam.size),
    }
    if loo:
        out["loo"] = np.empty(lam.size)
        one_minus_sii = (U * U) @ r_act  # (n, L): diagonal of (I − S) for λ > 0
        if null is not None:
            one_minus_sii += null.leverage[:, None] * r0_act[None, :]
        ridgeless = _ridgeless_loo_terms(d, U, Yt, floor, null) if np.any(lam == 0) else None
    step = max(1, block_size // max(1, n * C))
    for start in range(0, lam.size, step):
        sl = slice(start, min(start + step, lam.size))
        L = sl.stop - sl.start
        coef = (inv[:, sl, None] * Yt[:, None, :]).reshape(-1, L * C)
        pred = (A @ coef).reshape(-1, L, C)
        if loo:
            resid = (U @ (r_act[:, sl, None] * Yt[:, None, :]).reshape(-1, L * C)).reshape(n, L, C)
            if null is not None:
                resid += r0_act[sl][None, :, None] * null.residual[:, None, :]
        for j in range(L):
            err = pred[:, j, :] - Ys
            out["test_risk"][start + j] = np.mean(np.einsum("ic,ic->i", err, err))
            out["test_error"][start + j] = classification_error(pred[:, j, :], Ys)
            if loo:
                if lam[start + j] == 0:
                    out["loo"][start + j] = np.mean(ridgeless)
                else:
                    loo_terms = np.einsum("ic,ic->i", resid[:, j, :], resid[:, j, :])
                    out["loo"][start + j] = np.mean(loo_terms / one_minus_sii[:, start + j] ** 2)
    return out


def ridge_predictions(
    eigvals: np.ndarray,
    eigvecs: np.ndarray,
    y_train: np.ndarray,
    k_test: np.ndarray,
    lam: float,
    rcond: float = 1e-10,
    floor: float | None = None,
) -> np.ndarray:
    """Predictions ``K* (K + nλI)⁻¹ Y`` (pseudo-inverse at ``λ = 0``), shape (m, C), on the
    directions above ``floor`` (absolute; when None, ``rcond · max(eigvals)``), as :func:`ridge_path`."""
    d = np.asarray(eigvals, dtype=np.float64)
    d = clip_spectrum(d, rcond) if floor is None else apply_floor(d, floor)
    U = np.asarray(eigvecs, dtype=np.float64)
    Y = np.asarray(y_train, dtype=np.float64)
    Y = Y[:, None] if Y.ndim == 1 else Y
    _, _, inv = residual_weights(d, d.shape[0], np.array([float(lam)]))
    inv = np.where((d == 0.0)[:, None], 0.0, inv)
    return np.asarray(k_test, dtype=np.float64) @ (U @ (inv[:, :1] * (U.T @ Y)))
