"""Benchmark: the low-rank spectral path of a feature kernel versus the dense path.

Both sides start from the same embeddings ``Φ`` ((n + m) x p) and produce every
column of the ridge table (test risk, test error, train risk, GCV, LOO, tr S) on
the same λ grid (0 plus a log grid):

- dense: form ``K = Φ Φ_nᵀ/p`` ((n + m) x n), ``eigh`` of the n x n block, then
  ``ridge_path`` (what the workflow does for the eNTK, and did for features);
- low-rank: thin SVD of ``Φ_n``, ``K* U = Φ* (Φ_nᵀ U)/p``, ``ridge_path_low_rank``.

    PYTHONPATH=src python bench/lowrank.py       # n=8000, p=512, m=2000, 41 λ, C=10
    PYTHONPATH=src python bench/lowrank.py --n 2000
"""

from __future__ import annotations

import argparse
import os
import time


def parse():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=8000)
    ap.add_argument("--p", type=int, default=512)
    ap.add_argument("--m", type=int, default=2000)
    ap.add_argument("--lambdas", type=int, default=41, help="grid size including λ = 0")
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    return ap.parse_args()


args = parse()
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(args.threads)

import numpy as np  # noqa: E402  (after the thread variables)

from rmtlens.estimators import (  # noqa: E402
    eigh_descending,
    feature_factor,
    feature_test_basis,
    ridge_path,
    ridge_path_low_rank,
)
from rmtlens.kernels import feature_kernel  # noqa: E402


def embeddings(n, m, p, C, seed=0):
    """Embeddings with a power-law covariance spectrum (like a network's) and class structure."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, C, n + m)
    means = rng.standard_normal((C, p)) * 0.5
    phi = (rng.standard_normal((n + m, p)) + means[labels]) * np.arange(1, p + 1) ** -0.6
    Y = np.eye(C)[labels] - 1.0 / C
    return phi, Y[:n], Y[n:]


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main():
    n, m, p = args.n, args.m, args.p
    phi, Y, Ys = embeddings(n, m, p, args.classes)
    scale = float(np.mean(np.einsum("ij,ij->i", phi[:n], phi[:n])) / p)
    lambdas = np.concatenate([[0.0], np.geomspace(1e-6, 1e2, args.lambdas - 1)]) * scale
    print(f"n={n} p={p} m={m} |λ|={lambdas.size} C={args.classes} threads={args.threads} "
          f"load average {os.getloadavg()[0]:.2f}")

    def dense():
        K = feature_kernel(phi, n)
        d, U = eigh_descending(K[:n])
        return ridge_path(d, U, Y, K[n:], Ys, lambdas)

    def low_rank():
        d, U, _ = feature_factor(phi[:n])
        return ridge_path_low_rank(d, U, Y, feature_test_basis(phi[n:], phi[:n], U), Ys, lambdas)

    t_low, out_low = timed(low_rank)
    t_dense, out_dense = timed(dense)
    print(f"dense     {t_dense:9.2f} s")
    print(f"low-rank  {t_low:9.2f} s")
    print(f"speed-up  {t_dense / t_low:9.1f} x")
    worst = 0.0
    for key in ("test_risk", "test_error", "train_risk", "gcv", "loo", "dof"):
        a, b = out_low[key], out_dense[key]
        rel = np.abs(a - b) / np.maximum(np.abs(b), 1e-300)
        worst = max(worst, float(rel.max()))
        print(f"  {key:10s} max relative difference {rel.max():.2e} (at λ/s = {lambdas[rel.argmax()] / scale:.1e})")
    print(f"max relative difference over every column {worst:.2e}")


if __name__ == "__main__":
    main()
