"""Regression targets from class labels (SPEC §1)."""

from __future__ import annotations

import numpy as np

TARGET_KINDS = ("onehot_centered", "onehot", "binary")


def make_targets(
    labels: np.ndarray, n_classes: int, kind: str = "onehot_centered", positive_classes=None
) -> np.ndarray:
    """Targets for integer labels.

    Parameters
    ----------
    labels : (N,) int class indices in ``[0, n_classes)``.
    n_classes : number of classes C.
    kind : ``onehot_centered`` (one-hot minus 1/C, shape (N, C)), ``onehot``
        (shape (N, C)) or ``binary`` (+1 for ``positive_classes``, -1 otherwise,
        shape (N, 1)).
    positive_classes : class indices labelled +1 when ``kind == 'binary'``.
    """
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
