"""Regression targets from class labels, or real-valued targets as given (SPEC §1)."""

from __future__ import annotations

import numpy as np

TARGET_KINDS = ("onehot_centered", "onehot", "binary", "regression")
CLASS_KINDS = ("onehot_centered", "onehot", "binary")


def make_targets(
    labels: np.ndarray, n_classes: int, kind: str = "onehot_centered", positive_classes=None
) -> np.ndarray:
    """Targets for integer labels, or real-valued targets as they are.

    Parameters
    ----------
    labels : (N,) int class indices in ``[0, n_classes)``; for ``kind == 'regression'``
        the (N, C) real-valued targets themselves.
    n_classes : number of classes C (regression: number of target columns C).
    kind : ``onehot_centered`` (one-hot minus 1/C, shape (N, C)), ``onehot``
        (shape (N, C)), ``binary`` (+1 for ``positive_classes``, -1 otherwise,
        shape (N, 1)) or ``regression`` (the (N, C) values as float64).
    positive_classes : class indices labelled +1 when ``kind == 'binary'``.
    """
    if kind == "regression":
        return target_basis(labels, n_classes) if np.ndim(labels) == 2 else _not_values(labels)
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a 1-d integer array, got {labels.dtype} {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"labels must lie in [0, {n_classes}), got [{labels.min()}, {labels.max()}]")
    if kind == "binary":
        if not positive_classes:
            raise ValueError("targets kind 'binary' needs a non-empty positive_classes list")
        positive = np.isin(labels, np.asarray(positive_classes))
        return np.where(positive, 1.0, -1.0)[:, None]
    onehot = np.eye(n_classes)[labels]
    if kind == "onehot":
        return onehot
    if kind == "onehot_centered":
        return onehot - 1.0 / n_classes
    raise ValueError(f"unknown targets kind {kind!r}; expected one of {TARGET_KINDS}")


def _not_values(labels):
    raise ValueError(
        f"targets kind 'regression' takes real-valued (N, C) targets, got shape {np.shape(labels)} "
        f"of dtype {np.asarray(labels).dtype}; class labels need a class kind {CLASS_KINDS}"
    )


def target_basis(outcomes: np.ndarray, n_columns: int) -> np.ndarray:
    """The matrix ``E`` (N, q) that targets are linear in: ``Y = E @ target_map(q, kind)``.

    Parameters
    ----------
    outcomes : (N,) int class indices in ``[0, n_columns)`` (``E`` is their one-hot
        matrix), or (N, q) real-valued targets (``E`` is them, as float64).
    n_columns : number of classes C, or of target columns q.
    """
    values = np.asarray(outcomes)
    if values.ndim == 1 and np.issubdtype(values.dtype, np.integer):
        if values.size and (values.min() < 0 or values.max() >= n_columns):
            raise ValueError(f"labels must lie in [0, {n_columns}), got [{values.min()}, {values.max()}]")
        return np.eye(n_columns)[values]
    if values.ndim == 2 and values.shape[1] == n_columns and values.dtype.kind in "biuf":
        values = np.asarray(values, dtype=np.float64)
        if not np.all(np.isfinite(values)):
            raise ValueError("real-valued targets contain NaN or infinite values")
        return values
    raise ValueError(
        f"outcomes must be (N,) integer class indices or (N, {n_columns}) real-valued targets, "
        f"got shape {values.shape} of dtype {values.dtype}"
    )


def target_map(n_columns: int, kind: str = "onehot_centered", positive_classes=None) -> np.ndarray:
    """The (q, C') map with ``Y = E @ target_map`` (``E`` from :func:`target_basis`).

    Row ``c`` is the target vector of class ``c`` for the class kinds
    (:func:`make_targets` of ``0..q-1``); the identity for ``regression``, whose
    targets are the basis itself.
    """
    if kind == "regression":
        return np.eye(n_columns)
    return make_targets(np.arange(n_columns), n_columns, kind, positive_classes)


def flip_labels(labels: np.ndarray, n_classes: int, fraction: float, seed) -> tuple[np.ndarray, np.ndarray]:
    """Replace exactly ``round(fraction · N)`` labels by a uniformly drawn other class.

    Parameters
    ----------
    labels : (N,) int class indices of the TRAINING points only (test labels are
        never passed here, so they cannot change).
    n_classes : number of classes C (at least 2).
    fraction : share of labels to flip, in ``[0, 1]``.
    seed : seed or sequence of ints for ``numpy.random.default_rng``.

    Returns
    -------
    (noisy labels (N,), flipped (N,) bool mask). Every flipped label differs from
    the original; the rest are unchanged.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a 1-d integer array, got {labels.dtype} {labels.shape}")
    if n_classes < 2:
        raise ValueError("label flipping needs at least two classes")
    if not 0.0 <= float(fraction) <= 1.0:
        raise ValueError(f"flip fraction must lie in [0, 1], got {fraction!r}")
    rng = np.random.default_rng(seed)
    count = int(round(float(fraction) * labels.size))
    chosen = rng.choice(labels.size, size=count, replace=False)
    shift = rng.integers(1, n_classes, size=count)  # 1..C-1: never the same class
    noisy = labels.copy()
    noisy[chosen] = (labels[chosen] + shift) % n_classes
    flipped = np.zeros(labels.size, dtype=bool)
    flipped[chosen] = True
    return noisy, flipped


def gaussian_target_noise(shape, variance: float, seed) -> np.ndarray:
    """Additive noise ``ε`` of shape ``(N, C)`` with i.i.d. N(0, variance/C) entries,
    so that ``E||ε_i||² = variance`` (summed over the C outputs)."""
    n, c = shape
    if not np.isfinite(variance) or variance < 0:
        raise ValueError(f"noise variance must be finite and non-negative, got {variance!r}")
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, c)) * np.sqrt(float(variance) / c)


def target_variance(targets: np.ndarray) -> float:
    """Total variance of targets ``(N, C)``: ``(1/N) Σ_i ||y_i − ȳ||²``."""
    Y = np.asarray(targets, dtype=np.float64)
    Y = Y[:, None] if Y.ndim == 1 else Y
    return float(np.mean(np.sum((Y - Y.mean(axis=0)) ** 2, axis=1)))
