"""Kernels of a backbone between two input sets: the notebook-level entry points (SPEC §1).

A backbone is a feature extractor returning ``(B, p)`` (a timm model created with
``num_classes=0``, e.g. by :func:`rmtlens.inputs.backbones.create_backbone`); inputs are
preprocessed float tensors ``(N, 3, S, S)`` (:func:`rmtlens.inputs.backbones.preprocess`).
Both functions return float64 numpy arrays ``(N_rows, N_cols)``; with ``x_cols = None``
the kernel of ``x_rows`` with itself.
"""

from __future__ import annotations

import numpy as np
import torch

from rmtlens.inputs.backbones import feature_dim
from rmtlens.kernels.ntk import entk, scalar_network


def _check_inputs(x_rows, x_cols) -> None:
    for name, x in (("x_rows", x_rows), ("x_cols", x_cols)):
        if x is None and name == "x_cols":
            continue
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point() or x.shape[0] < 1:
            raise ValueError(
                f"{name} must be a float tensor (N, 3, S, S) of preprocessed images "
                f"(rmtlens.preprocess), got {getattr(x, 'dtype', type(x).__name__)} {tuple(getattr(x, 'shape', ()))}"
            )
    if x_cols is not None and x_cols.shape[1:] != x_rows.shape[1:]:
        raise ValueError(f"x_cols {tuple(x_cols.shape)} and x_rows {tuple(x_rows.shape)} differ beyond the batch axis")


def backbone_entk(
    backbone: torch.nn.Module,
    x_rows: torch.Tensor,
    x_cols: torch.Tensor | None = None,
    *,
    head_seed: int = 0,
    memory_gb: float = 2.0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Empirical NTK of ``f = Linear(p, 1) ∘ backbone`` between two input sets (SPEC §1).

    ``K[i, j] = ∇θ f(x_rows[i]) · ∇θ f(x_cols[j])`` over all parameters θ of the
    backbone and of a ``Linear(p, 1)`` head seeded by ``head_seed``, model in eval
    mode: the workflow's ``entk`` kernel. Units: squared output per squared
    parameter, summed over parameters (no normalisation).

    Parameters
    ----------
    backbone : feature extractor ``(B, 3, S, S) → (B, p)`` (not modified; put it in
        eval mode first if it is not, as ``create_backbone`` does).
    x_rows : (N_rows, 3, S, S) preprocessed inputs.
    x_cols : (N_cols, 3, S, S) preprocessed inputs, or None for the symmetric
        ``(N_rows, N_rows)`` kernel of ``x_rows`` with itself. Passing the training
        images as ``x_cols`` and ``cat([train, test])`` as ``x_rows`` gives the
        workflow's ``(n + m, n)`` layout with the training gradients computed once.
    head_seed : seed of the head's default initialisation (the global RNG is untouched).
    memory_gb, dtype, device, progress : as for :func:`rmtlens.kernels.ntk.entk`
        (``dtype`` is the compute dtype; the result is float64 either way).

    Returns
    -------
    (N_rows, N_cols) float64 numpy array.
    """
    _check_inputs(x_rows, x_cols)
    model = scalar_network(backbone, feature_dim(backbone, int(x_rows.shape[-1])), head_seed)
    return entk(model, x_rows, x_cols, memory_gb=memory_gb, dtype=dtype, device=device, progress=progress)


def backbone_feature_kernel(
    backbone: torch.nn.Module,
    x_rows: torch.Tensor,
    x_cols: torch.Tensor | None = None,
    *,
    batch_size: int = 256,
) -> np.ndarray:
    """Feature kernel ``K = Φ_rows Φ_colsᵀ / p`` of the backbone's pooled features (SPEC §1).

    Features come from one forward pass per batch in eval mode (in the backbone's
    dtype, as the workflow's ``embed`` rule does), the product is float64. Units:
    squared feature values, averaged over the p features.

    Parameters
    ----------
    backbone : feature extractor ``(B, 3, S, S) → (B, p)``, used in eval mode.
    x_rows : (N_rows, 3, S, S) preprocessed inputs.
    x_cols : (N_cols, 3, S, S) preprocessed inputs, or None for ``x_rows`` itself
        (then the result is exactly symmetric).
    batch_size : inputs per forward pass (memory only).

    Returns
    -------
    (N_rows, N_cols) float64 numpy array.
    """
    _check_inputs(x_rows, x_cols)
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    device = next(backbone.parameters()).device

    def features(x: torch.Tensor) -> np.ndarray:
        chunks = []
        with torch.inference_mode():
            for start in range(0, x.shape[0], int(batch_size)):
                out = backbone(x[start : start + int(batch_size)].to(device))
                if out.ndim != 2:
                    raise ValueError(f"backbone returned shape {tuple(out.shape)}; expected (batch, p)")
                chunks.append(out.float().cpu().numpy().astype(np.float64))
        phi = np.concatenate(chunks)
        if not np.all(np.isfinite(phi)):
            raise ValueError("backbone produced NaN or infinite features")
        return phi

    was_training = backbone.training
    backbone.eval()
    try:
        phi_rows = features(x_rows)
        phi_cols = phi_rows if x_cols is None else features(x_cols)
    finally:
        backbone.train(was_training)
    K = phi_rows @ phi_cols.T / phi_rows.shape[1]
    return 0.5 * (K + K.T) if x_cols is None else K
