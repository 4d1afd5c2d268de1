"""Feature kernels ``K = Φ Φ_poolᵀ / p`` of embeddings (SPEC §1, kernel ``features``)."""

from __future__ import annotations

import numpy as np


def feature_kernel(embeddings: np.ndarray, n_pool: int) -> np.ndarray:
    """Linear kernel of embeddings against the pool, ``K = Φ Φ_poolᵀ / p``, float64.

    Parameters
    ----------
    embeddings : (N_pool + m, p) features, pool rows first.
    n_pool : number of pool rows.

    Returns
    -------
    (N_pool + m, N_pool) float64 kernel; its pool block is exactly symmetric.
    """
    phi = np.asarray(embeddings, dtype=np.float64)
    if phi.ndim != 2 or phi.shape[0] < n_pool or n_pool < 1:
        raise ValueError(f"embeddings must have shape (N_pool + m, p) with N_pool={n_pool}, got {phi.shape}")
    p = phi.shape[1]
    K = phi @ phi[:n_pool].T / p
    pool = K[:n_pool]
    K[:n_pool] = 0.5 * (pool + pool.T)
    return K
