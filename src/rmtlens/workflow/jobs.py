"""Job-level loaders: the arrays a workflow job needs, read from the workflow's files.

Numerical functions take arrays; these helpers are the one place where several jobs
turn the same stored files into those arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rmtlens.estimators.grids import kernel_scale
from rmtlens.estimators.spectra import kernel_test_block
from rmtlens.inputs.datasets import PreparedDataset
from rmtlens.inputs.targets import make_targets
from rmtlens.io import load_json, load_npy, load_npz


@dataclass(frozen=True)
class RidgeProblem:
    """One training subsample of a kernel, ready for the spectral ridge/flow paths.

    eigvals, eigvecs : (n,), (n, n) eigendecomposition of the training block.
    index : (n,) pool indices of the training points.
    y_train, y_test : (n, C), (m, C) targets.
    k_test : (m, n) test-versus-train kernel.
    scale : the kernel's ``tr(K_pool)/N_pool`` (relative ridges are multiples of it).
    relative_error : the kernel's relative error ``ε`` (its ``.accuracy.json``; 0 when
        no record was given), from which the eigenvalue floor follows (SPEC §2).
    """

    eigvals: np.ndarray
    eigvecs: np.ndarray
    index: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray
    k_test: np.ndarray
    scale: float
    relative_error: float = 0.0


def load_ridge_problem(dataset_path, eigh_path, kernel_path, targets: dict, accuracy_path=None) -> RidgeProblem:
    """Read a prepared dataset, an ``eigh`` output, its kernel (memory-mapped) and,
    when given, the kernel's accuracy record."""
    data = PreparedDataset.from_arrays(load_npz(dataset_path))
    eig = load_npz(eigh_path)
    kernel = load_npy(kernel_path)
    n_pool, index = data.n_pool, eig["index"]
    Y = make_targets(data.labels, len(data.classes), targets["kind"], targets["positive_classes"])
    scale = kernel_scale(kernel[np.arange(n_pool), np.arange(n_pool)])
    k_test = kernel_test_block(kernel, n_pool, index)
    relative_error = 0.0 if accuracy_path is None else kernel_relative_error(accuracy_path)
    return RidgeProblem(eig["eigvals"], eig["eigvecs"], index, Y[index], Y[n_pool:], k_test, scale, relative_error)


def kernel_relative_error(accuracy_path) -> float:
    """The relative error ``ε`` of a kernel's ``.accuracy.json`` record (SPEC §2)."""
    record = load_json(accuracy_path)
    value = record.get("relative_error") if isinstance(record, dict) else None
    if not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0:
        raise ValueError(f"{accuracy_path}: 'relative_error' must be a finite non-negative number, got {value!r}")
    return float(value)
