"""A labelled pool of Gaussian features, and Monte Carlo kernel ridge on it, shared by the
label-noise and learnability tests: training points are drawn i.i.d. (with replacement)
from the pool, so the pool *is* the population the deterministic equivalents describe."""

from __future__ import annotations

import numpy as np

from rmtlens.inputs.targets import flip_labels, gaussian_target_noise, make_targets, target_variance


def labelled_pool(n_pool=1500, d=80, n_classes=4, target_scale=3.0, seed=0):
    """``K = X Xᵀ`` (n_pool, n_pool) with X ~ N(0, diag(k^-1.5)), labels from a noisy linear
    classifier of X, and target map ``target_scale · onehot_centered`` (a target variance far
    from 1, so that σ² = level · variance and σ² = level differ). Returns K, labels, T."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_pool, d)) * np.arange(1, d + 1) ** -0.75
    W = rng.standard_normal((d, n_classes))
    labels = np.argmax(3.0 * X @ W + rng.standard_normal((n_pool, n_classes)), axis=1)
    T = target_scale * make_targets(np.arange(n_classes), n_classes, "onehot_centered")
    return X @ X.T, labels, T


def pool_ridge_monte_carlo(K, labels, T, n, lam, kind="none", level=0.0, draws=60, seed=1):
    """Kernel ridge (system ``K_n + nλI``) on ``n`` pool points drawn with replacement, with
    training targets perturbed as the noise study does (``gaussian``: σ² = level · target
    variance; ``flip``: a fraction ``level`` of labels flipped), scored on the whole pool
    against the clean targets. Returns per-draw arrays ``excess`` (mean ||f̂ − h||²) and
    ``overlap`` (mean ⟨f̂, h⟩ over mean ||h||²: the share of the target's power learned)."""
    rng = np.random.default_rng(seed)
    Y = T[labels]
    var = target_variance(Y)
    excess, overlap = np.empty(draws), np.empty(draws)
    for t in range(draws):
        idx = rng.integers(0, len(labels), n)
        if kind == "gaussian":
            Yn = Y[idx] + gaussian_target_noise((n, Y.shape[1]), level * var, [seed, t])
        elif kind == "flip":
            noisy, _ = flip_labels(labels[idx], T.shape[0], level, [seed, t])
            Yn = T[noisy]
        else:
            Yn = Y[idx]
        pred = K[:, idx] @ np.linalg.solve(K[np.ix_(idx, idx)] + n * lam * np.eye(n), Yn)
        excess[t] = np.mean(np.sum((pred - Y) ** 2, axis=1))
        overlap[t] = np.sum(pred * Y) / np.sum(Y * Y)
    return excess, overlap
