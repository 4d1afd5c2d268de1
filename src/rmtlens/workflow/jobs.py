"""Job-level loaders: the arrays a workflow job needs, read from the workflow's files.

Numerical functions take arrays; these helpers are the one place where several jobs
turn the same stored files into those arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rmtlens.estimators.accuracy import DEFAULT_FLOOR_TOLERANCE, DEFAULT_SAFETY, accuracy_floor
from rmtlens.estimators.grids import kernel_scale
from rmtlens.estimators.lowrank import feature_test_basis, ridge_path_low_rank
from rmtlens.estimators.ridge import ridge_path
from rmtlens.estimators.spectra import (
    EIGH_BYTES_PER_ENTRY,
    check_kernel,
    eigh_descending,
    eigh_driver,
    kernel_test_block,
    kernel_train_block,
    permuted_eigh,
)
from rmtlens.inputs.datasets import PreparedDataset
from rmtlens.io import load_json, load_npy, load_npz
from rmtlens.studies.dynamics import gradient_flow_path, gradient_flow_path_low_rank


@dataclass(frozen=True)
class RidgeProblem:
    """One training subsample of a kernel, ready for the spectral ridge/flow paths.

    eigvals, eigvecs : (n,), (n, n) eigendecomposition of the training block; for a
        feature kernel on the low-rank path (r,), (n, r) with r = min(n, p).
    index : (n,) pool indices of the training points.
    y_train, y_test : (n, C), (m, C) targets.
    k_test : (m, n) test-versus-train kernel; ``None`` on the low-rank path.
    scale : the kernel's ``tr(K_pool)/N_pool`` (relative ridges are multiples of it).
    test_basis : (m, r) ``K* U`` on the low-rank path (``None`` on the dense path).
    relative_error : the kernel's relative error ``ε`` (its ``.accuracy.json``; 0 when
        no record was given), from which the eigenvalue floor follows (SPEC §2).
    regression : the targets are real values, not classes: a classification error
        means nothing, and the paths report it as NaN.
    """

    eigvals: np.ndarray
    eigvecs: np.ndarray
    index: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray
    k_test: np.ndarray | None
    scale: float
    test_basis: np.ndarray | None = None
    relative_error: float = 0.0
    regression: bool = False

    @property
    def low_rank(self) -> bool:
        return self.test_basis is not None

    def floor(self, safety: float = DEFAULT_SAFETY, rcond: float | None = None) -> float:
        """The eigenvalue floor of the training block (SPEC §2): ``safety · (ε + n·u) · λ_max``
        with ``n`` the number of training points (also on the thin path, whose ``n − r``
        further eigenvalues are exactly 0), or ``rcond · λ_max`` when ``rcond`` is given."""
        return accuracy_floor(self.eigvals, self.relative_error, safety, rcond=rcond, n=len(self.index))


def load_ridge_problem(dataset_path, eigh_path, kernel_path, targets: dict, accuracy_path=None) -> RidgeProblem:
    """Read a prepared dataset, an ``eigh`` output, its kernel (memory-mapped) and,
    when given, the kernel's accuracy record."""
    data = PreparedDataset.from_arrays(load_npz(dataset_path))
    eig = load_npz(eigh_path)
    kernel = load_npy(kernel_path)
    n_pool, index = data.n_pool, eig["index"]
    Y = data.targets(targets["kind"], targets["positive_classes"])
    scale = kernel_scale(kernel[np.arange(n_pool), np.arange(n_pool)])
    k_test = kernel_test_block(kernel, n_pool, index)
    relative_error = 0.0 if accuracy_path is None else kernel_relative_error(accuracy_path)
    return RidgeProblem(eig["eigvals"], eig["eigvecs"], index, Y[index], Y[n_pool:], k_test, scale,
                        relative_error=relative_error, regression=data.regression)


def kernel_relative_error(accuracy_path) -> float:
    """The relative error ``ε`` of a kernel's ``.accuracy.json`` record (SPEC §2)."""
    record = load_json(accuracy_path)
    value = record.get("relative_error") if isinstance(record, dict) else None
    if not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0:
        raise ValueError(f"{accuracy_path}: 'relative_error' must be a finite non-negative number, got {value!r}")
    return float(value)


def load_feature_ridge_problem(dataset_path, factor_path, embeddings_path, targets: dict,
                               accuracy_path=None) -> RidgeProblem:
    """A feature kernel's subsample, from a ``factor`` output and the cached embeddings
    (memory-mapped): ``K* U = Φ* (Φ_nᵀ U)/p`` and ``tr(K_pool)/N_pool = mean ||φ_i||²/p``
    (the same kernel scale as the dense path's pool diagonal); no kernel block is formed.
    The accuracy record (``features.accuracy.json``, made from the embeddings) gives ``ε``."""
    data = PreparedDataset.from_arrays(load_npz(dataset_path))
    fac = load_npz(factor_path)
    emb = load_npy(embeddings_path)
    n_pool, index = data.n_pool, fac["index"]
    if emb.ndim != 2 or emb.shape[0] != len(data.source_index):
        raise ValueError(f"embeddings {embeddings_path} have shape {emb.shape}, the dataset has "
                         f"{len(data.source_index)} samples")
    Y = data.targets(targets["kind"], targets["positive_classes"])
    pool = np.asarray(emb[:n_pool], dtype=np.float64)
    scale = kernel_scale(np.einsum("ij,ij->i", pool, pool) / emb.shape[1])
    phi_train = pool[index]
    del pool
    test_basis = feature_test_basis(np.asarray(emb[n_pool:], dtype=np.float64), phi_train, fac["eigvecs"])
    relative_error = 0.0 if accuracy_path is None else kernel_relative_error(accuracy_path)
    return RidgeProblem(fac["eigvals"], fac["eigvecs"], index, Y[index], Y[n_pool:], None, scale,
                        test_basis=test_basis, relative_error=relative_error, regression=data.regression)


def load_any_ridge_problem(inputs, targets: dict, eigh=None) -> RidgeProblem:
    """:func:`load_ridge_problem` when the job's inputs name a ``kernel`` file, else
    :func:`load_feature_ridge_problem` (inputs ``embeddings``); ``eigh`` is the
    factorisation either way (the argument, or else ``inputs.eigh``: a job solving several
    subsamples passes each of its files), ``accuracy`` (when present) the kernel's
    accuracy record."""
    accuracy = getattr(inputs, "accuracy", None)
    eigh = inputs.eigh if eigh is None else eigh
    if getattr(inputs, "kernel", None) is not None:
        return load_ridge_problem(inputs.dataset, eigh, inputs.kernel, targets, accuracy)
    return load_feature_ridge_problem(inputs.dataset, eigh, inputs.embeddings, targets, accuracy)


def solve_ridge_path(prob: RidgeProblem, lambdas, safety: float = DEFAULT_SAFETY,
                     rcond: float | None = None,
                     floor_tolerance: float | None = DEFAULT_FLOOR_TOLERANCE) -> dict[str, np.ndarray]:
    """The ridge path of a problem on its own path (dense or low-rank), with the problem's
    accuracy floor (:meth:`RidgeProblem.floor`) deciding the null directions and ``resolved``
    (which also asks that test risk, GCV and LOO move by less than ``floor_tolerance`` at half
    and twice the floor, SPEC §2)."""
    floor = prob.floor(safety, rcond)
    if prob.low_rank:
        path = ridge_path_low_rank(prob.eigvals, prob.eigvecs, prob.y_train, prob.test_basis, prob.y_test,
                                   lambdas, floor=floor, safety=safety, floor_tolerance=floor_tolerance)
    else:
        path = ridge_path(prob.eigvals, prob.eigvecs, prob.y_train, prob.k_test, prob.y_test, lambdas,
                          floor=floor, safety=safety, floor_tolerance=floor_tolerance)
    return without_class_error(path, prob.regression)


def without_class_error(table: dict, regression: bool, columns=("test_error",)) -> dict:
    """``table`` with its classification-error columns set to NaN when the targets are real
    values (regression): an argmax/sign agreement of real-valued targets is not an error rate."""
    if regression:
        for column in columns:
            table[column] = np.full(np.shape(table[column]), np.nan)
    return table


def solve_gradient_flow(prob: RidgeProblem, times, learning_rate: float, safety: float = DEFAULT_SAFETY,
                        rcond: float | None = None):
    """The gradient-flow path of a problem on its own path (dense or low-rank), with its accuracy floor."""
    floor = prob.floor(safety, rcond)
    if prob.low_rank:
        table, summary = gradient_flow_path_low_rank(prob.eigvals, prob.eigvecs, prob.y_train, prob.test_basis,
                                                     prob.y_test, times, learning_rate, floor=floor, safety=safety)
    else:
        table, summary = gradient_flow_path(prob.eigvals, prob.eigvecs, prob.y_train, prob.k_test, prob.y_test,
                                            times, learning_rate, floor=floor, safety=safety)
    errors = [c for c in table if c.endswith("test_error")]  # test_error, ridge_test_error
    return without_class_error(table, prob.regression, errors), summary


def kernel_block_eigh(kernel_path, n_pool: int, index: np.ndarray,
                      check: bool = True) -> tuple[np.ndarray, np.ndarray, str]:
    """Eigendecomposition of the training block ``K[index][:, index]`` of a stored
    ``(N_pool + m, N_pool)`` kernel file, float64, descending (an ``eigh`` job).

    The kernel is checked (finite, symmetric pool block; unless ``check`` is false) and its rows are read through
    memory maps that are closed right after, so the file's pages leave the job's resident
    memory before the decomposition (:func:`eigh_job_bytes` bounds the peak). Returns
    ``(eigvals, eigvecs, driver)``: the driver is CUDA's when a GPU is present, else the
    one chosen CPU driver (:func:`rmtlens.estimators.eigh_driver`).
    """
    if check:  # a job decomposing several subsamples of one kernel checks it once
        kernel = load_npy(kernel_path)
        check_kernel(kernel, n_pool, block_rows=CHECK_BLOCK_ROWS)
        del kernel  # the check touched every page of the file: unmap them
    kernel = load_npy(kernel_path)
    block = kernel_train_block(kernel, n_pool, index)
    del kernel
    driver = eigh_driver()
    eigvals, eigvecs = eigh_descending(block, driver)
    return eigvals, eigvecs, driver


def permuted_pool_eigh(pool_eigh_path, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The eigendecomposition of ``K[index][:, index]``, ``index`` a permutation of the
    pool, from the pool's stored one (``pool_eigh``'s file): no new decomposition."""
    pool = load_npz(pool_eigh_path)
    if not np.array_equal(pool["index"], np.arange(len(pool["index"]))):
        raise ValueError(f"{pool_eigh_path} is not a decomposition of the pool in pool order")
    return permuted_eigh(pool["eigvals"], pool.pop("eigvecs"), index)


def eigh_job_bytes(n: int, n_pool: int, n_test: int, permuted: bool = False) -> int:
    """Peak resident bytes an eigh job adds to its interpreter, at sample size ``n`` of a
    ``(n_pool + n_test, n_pool)`` float64 kernel file (what the rules declare as memory,
    plus a constant for the interpreter; tests/test_eigh.py measures it).

    :func:`kernel_block_eigh`: the largest of the kernel check (every page of the file
    mapped, ``8 (N_pool + m) N_pool``, plus up to three temporaries of one block of
    :func:`check_kernel`'s 2048 rows), reading the rows (``n x N_pool`` mapped and copied,
    then the ``n x n`` block: ``16 n N_pool + 8 n²``) and the decomposition
    (``EIGH_BYTES_PER_ENTRY · n²``, bench/eigh_drivers.py). :func:`permuted_pool_eigh`
    (``permuted``): the pool's eigenvectors and their permuted copy, ``16 n²``.
    """
    if permuted:
        return 16 * n * n
    rows = n_pool + n_test
    check = 8 * rows * n_pool + 24 * min(CHECK_BLOCK_ROWS, rows) * n_pool
    return max(check, 16 * n * n_pool + 8 * n * n, EIGH_BYTES_PER_ENTRY * n * n)


CHECK_BLOCK_ROWS = 2048
"""Rows per block of :func:`check_kernel` in the eigh jobs (its default)."""
