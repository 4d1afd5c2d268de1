"""Grids of sample sizes and ridges, and nested subsamples of the pool (SPEC §1, §2)."""

from __future__ import annotations

import numpy as np

# Columns that identify one kernel in every table of the ridge grid.
KERNEL_KEYS = ["dataset", "backbone", "weights", "kernel"]


def sample_size_grid(n_min: int, n_max: int, num: int) -> list[int]:
    """``num`` geometrically spaced integer sample sizes from ``n_min`` to ``n_max``.

    Rounded to integers and de-duplicated, so fewer than ``num`` sizes come back
    when the range is too narrow; both ends are always included.
    """
    if n_min < 1 or n_max < n_min:
        raise ValueError(f"need 1 <= n_min <= n_max, got n_min={n_min}, n_max={n_max}")
    if num < 1:
        raise ValueError(f"num must be >= 1, got {num}")
    if num == 1:
        return [int(n_max)]
    sizes = np.unique(np.round(np.geomspace(n_min, n_max, num)).astype(int))
    return [int(s) for s in sizes]


def ridge_grid(lam_min: float, lam_max: float, num: int, ridgeless: bool) -> np.ndarray:
    """Relative ridges: ``num`` log-spaced values in [lam_min, lam_max], plus 0 first if ``ridgeless``.

    A relative ridge ``λ_rel`` means the absolute ridge ``λ = λ_rel · s`` where ``s``
    is the kernel's scale (:func:`kernel_scale`), so one grid fits kernels of very
    different magnitude.
    """
    if not (0 < lam_min <= lam_max):
        raise ValueError(f"need 0 < lam_min <= lam_max, got {lam_min}, {lam_max}")
    if num < 1:
        raise ValueError(f"num must be >= 1, got {num}")
    grid = np.geomspace(lam_min, lam_max, num)
    return np.concatenate([[0.0], grid]) if ridgeless else grid


def kernel_scale(pool_diagonal: np.ndarray) -> float:
    """Scale ``tr(K_pool)/N_pool`` of a kernel, from the diagonal of its pool block.

    It is the expected ``tr(K)/n`` of every training subsample, and, being one
    number per kernel, keeps a relative ridge the same absolute ridge for all n.
    """
    return check_scale(np.asarray(pool_diagonal, dtype=np.float64).mean())


def check_scale(scale) -> float:
    """A kernel scale passed in (e.g. pool.npz's stored ``tr(K_pool)/N_pool``) as a float;
    ``ValueError`` unless finite and positive."""
    value = float(scale)
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"kernel scale tr(K)/N must be finite and positive, got {scale!r}")
    return value


def subsample_indices(n_pool: int, n: int, seed: int) -> np.ndarray:
    """First ``n`` entries of a seeded permutation of ``range(n_pool)``.

    Subsamples of one seed are nested in ``n``.
    """
    if not 1 <= n <= n_pool:
        raise ValueError(f"sample size n={n} must lie in [1, n_pool={n_pool}]")
    return np.random.default_rng(seed).permutation(n_pool)[:n]


def nearest_on_grid(available, wanted) -> list[float]:
    """For each wanted positive ridge, the nearest (in log) positive ridge of a grid;
    sorted and without repeats."""
    pos = np.asarray(sorted(v for v in available if v > 0))
    if pos.size == 0:
        return []
    chosen = [float(pos[np.argmin(np.abs(np.log(pos) - np.log(w)))]) for w in wanted if w > 0]
    return sorted(set(chosen))
