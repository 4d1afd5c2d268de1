"""How accurate a stored kernel is: the relative error ``ε ≈ ||E||₂ / λ_max`` (SPEC §2).

Every kernel the workflow writes has a small JSON record beside it
(``{kernel}.accuracy.json``) made by one of these functions; the ridge paths, the
theory and the extensions turn ``ε`` into an eigenvalue floor
(:func:`rmtlens.estimators.accuracy.accuracy_floor`).

- Feature kernels ``K = Φ Φᵀ/p`` are computed in float64 from the stored embeddings:
  every entry is a dot product of length ``p``, off by at most ``γ_p |φ_i|ᵀ|φ_j| / p``
  with ``γ_p = p·u/(1 − p·u)`` (Higham, Thm 3.5), so ``||E||₂ ≤ ||E||_F ≤ γ_p tr(K)``.
  Relative to ``λ_max ≥ λ̂ = max(max_i K_ii, 1ᵀK1/N)`` (two Rayleigh quotients) the
  bound is ``ε = γ_p tr(K_pool) / λ̂``.
- The eNTK is measured: a probe block (the first ``probe_size`` pool images, pool order
  being the dataset's seeded choice) is computed in the configured dtype and in float64
  with :func:`rmtlens.kernels.entk`. The floor decides about the *small* eigenvalues,
  and an eigenvalue ``d_k`` moves by ``v_kᵀ E v_k`` to first order (the coupling to
  the large directions enters at second order, ``|v_jᵀ E v_k|² / λ_j``), so the error
  that matters is the one seen by the low eigen-directions:
  ``ε = ||V_lowᵀ (K_dtype − K_64) V_low||₂ / λ_max(K_64)`` with ``V_low`` the
  eigenvectors of the lower half of the probe's float64 spectrum, plus the float64
  reference's own accumulation bound ``γ_P tr(K_64) / λ_max(K_64)`` (``P`` parameters).
  Float32 errors are close to relative, so the whole-matrix ratio ``||ΔK||₂ / λ_max``
  (recorded as ``spectral_difference``, ~1e-7 on the default ResNet-18) is set by the
  top directions and is 10–20 times the low-subspace one (~1e-8, matching the most
  negative eigenvalues of the float32 kernel, ~−5e-9 λ_max); it is recorded, with
  the entrywise ``max|ΔK| / max|K|``, for information.
"""

from __future__ import annotations

import numpy as np

ROUNDOFF = float(np.finfo(np.float64).eps) / 2


def gamma(k: int) -> float:
    """``γ_k = k·u / (1 − k·u)``: relative bound on a float64 dot product of length ``k``."""
    ku = int(k) * ROUNDOFF
    if ku >= 1:
        raise ValueError(f"γ_k is undefined for k = {k} (k·u ≥ 1)")
    return ku / (1.0 - ku)


def feature_kernel_accuracy(embeddings: np.ndarray, n_pool: int) -> dict:
    """Accuracy record of the feature kernel of ``embeddings`` (module doc).

    Parameters
    ----------
    embeddings : (N_pool + m, p) stored features, pool rows first (any float dtype).
    n_pool : number of pool rows.

    Returns
    -------
    dict: ``kernel`` ('features'), ``method`` ('float64 round-off bound'),
    ``dtype`` (of the embeddings), ``compute_dtype`` ('float64'), ``relative_error``
    (``γ_p tr(K_pool) / λ̂``), ``p``, ``n_pool``, ``trace``, ``lambda_max_lower``.
    """
    phi = np.asarray(embeddings)
    if phi.ndim != 2 or not 1 <= n_pool <= phi.shape[0]:
        raise ValueError(f"embeddings must have shape (N_pool + m, p) with N_pool={n_pool}, got {phi.shape}")
    pool = np.asarray(phi[:n_pool], dtype=np.float64)
    p = pool.shape[1]
    if not np.all(np.isfinite(pool)):
        raise ValueError("embeddings contain NaN or infinite values")
    sq = np.einsum("ij,ij->i", pool, pool) / p
    trace = float(sq.sum())
    column_sum = pool.sum(axis=0)
    lam_lower = max(float(sq.max()), float(column_sum @ column_sum) / (p * n_pool))
    if lam_lower <= 0:
        raise ValueError("the feature kernel's pool block is zero: embeddings are all zero")
    return dict(
        kernel="features",
        method="float64 round-off bound",
        dtype=str(phi.dtype),
        compute_dtype="float64",
        relative_error=gamma(p) * trace / lam_lower,
        p=int(p),
        n_pool=int(n_pool),
        trace=trace,
        lambda_max_lower=lam_lower,
    )


def entk_accuracy(model, x_probe, dtype, **entk_kwargs) -> dict:
    """Accuracy record of an eNTK computed in ``dtype``, measured on a probe (module doc).

    Parameters
    ----------
    model : the scalar network (:func:`rmtlens.kernels.scalar_network`).
    x_probe : (b, ...) probe inputs (preprocessed), on the device of ``model``.
    dtype : the torch dtype the workflow computes the eNTK's pieces in.
    entk_kwargs : passed to both :func:`rmtlens.kernels.entk` calls (device, memory_gb, ...).

    Returns
    -------
    dict: ``kernel`` ('entk'), ``method``, ``dtype``, ``compute_dtype``,
    ``relative_error`` (``low_subspace_difference + accumulation_bound``),
    ``low_subspace_difference`` (``||V_lowᵀ ΔK V_low||₂/λ_max``, 0 when the dtype is
    float64), ``spectral_difference`` (``||ΔK||₂/λ_max``), ``accumulation_bound``
    (``γ_P tr/λ_max``), ``entrywise_difference`` (``max|ΔK|/max|K|``),
    ``probe_size``, ``parameters``.
    """
    import torch

    from rmtlens.kernels import entk

    k64 = np.asarray(entk(model, x_probe, dtype=torch.float64, **entk_kwargs), dtype=np.float64)
    if dtype == torch.float64:
        k_dt = k64
    else:
        k_dt = np.asarray(entk(model, x_probe, dtype=dtype, **entk_kwargs), dtype=np.float64)
    for name, K in (("float64", k64), (str(dtype), k_dt)):
        if not np.all(np.isfinite(K)):
            raise FloatingPointError(f"the {name} eNTK probe has NaN or infinite entries")
    evals, evecs = np.linalg.eigh(0.5 * (k64 + k64.T))
    lam_max = float(evals[-1])
    if lam_max <= 0:
        raise ValueError("the float64 eNTK probe has no positive eigenvalue")
    diff = k_dt - k64
    sym_diff = 0.5 * (diff + diff.T)
    spectral = float(np.linalg.norm(sym_diff, 2)) / lam_max
    low = evecs[:, : max(1, evals.size // 2)]  # eigh: ascending, so the lower half first
    low_diff = float(np.linalg.norm(low.T @ sym_diff @ low, 2)) / lam_max
    n_params = int(sum(p.numel() for p in model.parameters()))
    bound = gamma(n_params) * float(np.trace(k64)) / lam_max
    return dict(
        kernel="entk",
        method="probe: configured dtype against float64" if k_dt is not k64 else "float64 accumulation bound",
        dtype=str(dtype).removeprefix("torch."),
        compute_dtype="float64 accumulation",
        relative_error=low_diff + bound,
        low_subspace_difference=low_diff,
        spectral_difference=spectral,
        accumulation_bound=bound,
        entrywise_difference=float(np.abs(diff).max() / np.abs(k64).max()),
        probe_size=int(k64.shape[0]),
        parameters=n_params,
    )
