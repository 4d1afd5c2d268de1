"""Benchmark: ridge path from one eigendecomposition versus per-λ solves.

Both sides compute, for every λ of the grid, test risk, test error, train risk,
GCV (with tr S) and LOO. The baseline does what one would do without the
spectral trick: per λ, form (K + nλI)⁻¹ explicitly (needed for tr S and the
diagonal of S used by LOO), then the predictions and residuals.

    python bench/ridge_path.py              # n=2000, m=1000, 50 λ, C=10
    python bench/ridge_path.py --n 1000 --threads 2
"""

from __future__ import annotations

import argparse
import os
import time


def parse():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--m", type=int, default=1000)
    ap.add_argument("--lambdas", type=int, default=50)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    return ap.parse_args()


args = parse()
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(args.threads)

import numpy as np  # noqa: E402  (after the thread variables)

from rmtlens.estimators import classification_error, eigh_descending, ridge_path


def problem(n, m, C, seed=0):
    """A feature kernel with a power-law spectrum, like a network's (n + m rows)."""
    rng = np.random.default_rng(seed)
    p = 3 * n
    phi = rng.standard_normal((n + m, p)) * np.arange(1, p + 1) ** -0.6
    K_all = phi @ phi[:n].T / p
    labels = rng.integers(0, C, n + m)
    Y = np.eye(C)[labels] - 1.0 / C
    return K_all[:n], K_all[n:], Y[:n], Y[n:]


def per_lambda_baseline(K, Ks, Y, Ys, lambdas):
    n = K.shape[0]
    out = {k: np.empty(len(lambdas)) for k in ("test_risk", "test_error", "train_risk", "gcv", "loo", "dof")}
    for j, lam in enumerate(lambdas):
        inv = np.linalg.inv(K + n * lam * np.eye(n))
        alpha = inv @ Y
        pred = Ks @ alpha
        I_minus_S = n * lam * inv  # I − K(K + nλI)⁻¹ = nλ(K + nλI)⁻¹
        resid = I_minus_S @ Y
        residual_dof = np.trace(I_minus_S)  # n − tr S, without cancellation
        dof = n - residual_dof
        out["test_risk"][j] = np.mean(np.sum((pred - Ys) ** 2, axis=1))
        out["test_error"][j] = classification_error(pred, Ys)
        out["train_risk"][j] = np.sum(resid**2) / n
        out["gcv"][j] = out["train_risk"][j] / (residual_dof / n) ** 2
        out["loo"][j] = np.mean(np.sum(resid**2, axis=1) / np.diag(I_minus_S) ** 2)
        out["dof"][j] = dof
    return out


def best_of(fn, repeats):
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result


def main():
    K, Ks, Y, Ys = problem(args.n, args.m, args.classes)
    scale = np.trace(K) / args.n
    lambdas = scale * np.geomspace(1e-6, 1e2, args.lambdas)

    def spectral():
        d, U = eigh_descending(K)
        return ridge_path(d, U, Y, Ks, Ys, lambdas)

    t_spec, fast = best_of(spectral, args.repeats)
    t_eigh, _ = best_of(lambda: eigh_descending(K), args.repeats)
    t_base, slow = best_of(lambda: per_lambda_baseline(K, Ks, Y, Ys, lambdas), args.repeats)
    print(f"n={args.n} m={args.m} C={args.classes} lambdas={args.lambdas} threads={args.threads}")
    print(f"{'method':<34}{'time [s]':>10}")
    print(f"{'per-λ inverse (baseline)':<34}{t_base:>10.2f}")
    print(f"{'one eigh + spectral path':<34}{t_spec:>10.2f}   (of which eigh {t_eigh:.2f})")
    print(f"speed-up: {t_base / t_spec:.1f}x")
    print("max relative difference per quantity:")
    for key in ("test_risk", "train_risk", "gcv", "loo", "dof"):
        rel = np.max(np.abs(fast[key] - slow[key]) / np.abs(slow[key]))
        print(f"  {key:<11}{rel:.2e}")
    print(f"  test_error max abs difference {np.max(np.abs(fast['test_error'] - slow['test_error'])):.2e}")


if __name__ == "__main__":
    main()
