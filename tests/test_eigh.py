"""Float64 eigendecompositions: the chosen LAPACK driver against numpy.linalg.eigh and a
matrix of known spectrum, the pool's decomposition permuted for n = N_pool, and an eigh
job's peak memory against what its rule declares."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from rmtlens.estimators import (
    EIGH_DRIVER,
    EIGH_DRIVERS,
    cuda_available,
    eigh_descending,
    permuted_eigh,
    ridge_path,
)
from rmtlens.workflow import eigh_job_bytes

EPS = np.finfo(np.float64).eps


def known_spectrum(n=48, seed=0):
    """``K = Q diag(d) Qᵀ`` with degenerate eigenvalues (a triple, a quintuple) and a
    10-dimensional null space, as a low-rank kernel has; returns K, d and the distinct
    eigenvalues' groups as (value, Q_group)."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    d = np.concatenate([[10.0] * 3, [7.0], [4.0] * 5, np.linspace(3.0, 0.5, n - 19), [0.0] * 10])
    K = (Q * d) @ Q.T
    K = 0.5 * (K + K.T)
    groups = [(v, Q[:, d == v]) for v in np.unique(d)]
    return K, d, groups


def projector(U, d, value, tol):
    """Orthogonal projector onto the eigenvectors whose eigenvalue lies within tol of value."""
    V = U[:, np.abs(d - value) <= tol]
    return V @ V.T


def cpu_drivers():
    return [d for d in EIGH_DRIVERS if d != "cuda"] + [
        pytest.param("cuda", marks=pytest.mark.skipif(not cuda_available(), reason="no CUDA device"))
    ]


@pytest.mark.parametrize("driver", cpu_drivers())
def test_driver_matches_numpy_and_the_known_spectrum(driver):
    K, d_true, groups = known_spectrum()
    n = len(d_true)
    d, U = eigh_descending(K, driver)
    d_np, U_np = np.linalg.eigh(K)
    # backward-stable solvers: eigenvalues within a small multiple of n·ε·‖K‖ of the truth
    # (K itself is the known spectrum up to the round-off of forming Q diag(d) Qᵀ)
    tol = 10 * n * EPS * np.abs(d_true).max()
    np.testing.assert_allclose(d, np.sort(d_true)[::-1], rtol=0, atol=tol)
    np.testing.assert_allclose(d, d_np[::-1], rtol=0, atol=tol)
    assert d.dtype == U.dtype == np.float64 and U.flags.c_contiguous
    np.testing.assert_allclose(U.T @ U, np.eye(n), rtol=0, atol=100 * n * EPS)
    # eigenvectors up to sign and rotation within degenerate eigenspaces: the projectors
    # onto each distinct eigenvalue's space agree with numpy's and with the construction
    # (the smallest gap is 0.5/ (n - 20), so their round-off is ~ n ε ‖K‖ / gap ≲ 1e-11)
    for value, Q_group in groups:
        P = projector(U, d, value, tol=1e-8)
        assert np.linalg.matrix_rank(P, tol=0.5) == Q_group.shape[1]
        np.testing.assert_allclose(P, projector(U_np, d_np, value, tol=1e-8), rtol=0, atol=1e-10)
        np.testing.assert_allclose(P, Q_group @ Q_group.T, rtol=0, atol=1e-10)


def test_the_chosen_driver_is_a_lapack_driver_and_unknown_ones_are_refused():
    assert EIGH_DRIVER in ("evd", "evr", "ev")  # LAPACK through scipy, measured by bench/eigh_drivers.py
    with pytest.raises(ValueError, match="unknown eigh driver 'syevd'"):
        eigh_descending(np.eye(3), "syevd")


def test_permuted_eigh_is_an_eigendecomposition_of_the_permuted_matrix():
    K, d_true, groups = known_spectrum(seed=1)
    n = len(d_true)
    index = np.random.default_rng(5).permutation(n)
    d, V = eigh_descending(K)
    d_p, V_p = permuted_eigh(d, V, index)
    K_p = K[index][:, index]
    d_np, U_np = np.linalg.eigh(K_p)
    tol = 10 * n * EPS * np.abs(d_true).max()
    np.testing.assert_allclose(d_p, d_np[::-1], rtol=0, atol=tol)
    np.testing.assert_allclose(K_p @ V_p, V_p * d_p, rtol=0, atol=tol)  # residual of the permuted pairs
    np.testing.assert_allclose(V_p.T @ V_p, np.eye(n), rtol=0, atol=100 * n * EPS)
    for value, Q_group in groups:
        np.testing.assert_allclose(projector(V_p, d_p, value, 1e-8), projector(U_np, d_np, value, 1e-8),
                                   rtol=0, atol=1e-10)
        np.testing.assert_allclose(projector(V_p, d_p, value, 1e-8), (Q_group @ Q_group.T)[np.ix_(index, index)],
                                   rtol=0, atol=1e-10)
    assert V_p.flags.c_contiguous


def test_permuted_eigh_refuses_what_is_not_a_permutation():
    d, V = np.ones(4), np.eye(4)
    with pytest.raises(ValueError, match="not a permutation of range"):
        permuted_eigh(d, V, np.array([0, 1, 1, 3]))
    with pytest.raises(ValueError, match="shape"):
        permuted_eigh(d, V, np.arange(3))
    with pytest.raises(ValueError, match="integer"):
        permuted_eigh(d, V, np.arange(4.0))
    with pytest.raises(ValueError, match="eigvecs"):
        permuted_eigh(d, np.eye(3), np.arange(4))


def test_ridge_path_from_the_permuted_pool_agrees_with_a_direct_eigh():
    """What the workflow does at n = N_pool (permute the pool's decomposition) against
    what it did before (decompose the permuted block): every column of the ridge path
    agrees to round-off, not bit for bit (LAPACK's rounding depends on the order)."""
    rng = np.random.default_rng(2)
    N, m, C, p = 150, 40, 4, 400
    phi = rng.standard_normal((N + m, p)) * np.arange(1, p + 1) ** -0.7
    K_all = phi @ phi[:N].T / p
    labels = rng.integers(0, C, N + m)
    Y = np.eye(C)[labels] - 1.0 / C
    index = rng.permutation(N)
    lambdas = np.concatenate([[0.0], np.geomspace(1e-6, 1e1, 12)]) * np.trace(K_all[:N]) / N
    d_direct, U_direct = eigh_descending(K_all[:N][index][:, index])
    d_perm, U_perm = permuted_eigh(*eigh_descending(K_all[:N]), index)
    args = (Y[index], K_all[N:][:, index], Y[N:], lambdas)
    direct = ridge_path(d_direct, U_direct, *args, rcond=1e-10)
    permuted = ridge_path(d_perm, U_perm, *args, rcond=1e-10)
    for key in ("test_risk", "train_risk", "gcv", "loo", "dof"):
        # relative round-off of an N = 150 eigendecomposition and its propagation through
        # the filters 1/(d + nλ) at the smallest ridges: well below 1e-8
        np.testing.assert_allclose(permuted[key], direct[key], rtol=1e-8, atol=1e-12, err_msg=key)
    np.testing.assert_array_equal(permuted["test_error"], direct["test_error"])
    np.testing.assert_array_equal(permuted["resolved"], direct["resolved"])


MEMORY_PROBE = r"""
import json, sys
import numpy as np
from rmtlens.workflow import kernel_block_eigh, permuted_pool_eigh
from rmtlens.estimators import eigh_descending

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024

path, pool_path, n_pool, n, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
eigh_descending(np.eye(64) + np.ones((64, 64)))  # BLAS/LAPACK buffers and code pages: the interpreter's share
index = np.random.default_rng(0).permutation(n_pool)[:n]
base = status("VmRSS")
if mode == "kernel":
    d, U, driver = kernel_block_eigh(path, n_pool, index)
else:
    d, U = permuted_pool_eigh(pool_path, index)
print(json.dumps(dict(peak=status("VmHWM") - base, n=len(d))))
"""


@pytest.mark.parametrize("n, mode", [(1600, "kernel"), (700, "kernel"), (1600, "permuted")])
def test_an_eigh_job_stays_within_its_declared_memory(tmp_path, n, mode):
    """Peak resident memory of the job's work in a fresh process (LAPACK's work arrays
    included, which tracemalloc cannot see) against :func:`eigh_job_bytes`, the formula
    the eigh rules declare (plus 1000 MB for the interpreter)."""
    from rmtlens.io import save_npz

    N, m = 1600, 200
    rng = np.random.default_rng(3)
    phi = rng.standard_normal((N + m, 300))
    K_all = phi @ phi[:N].T / 300
    K_all[:N] = 0.5 * (K_all[:N] + K_all[:N].T)
    path = tmp_path / "entk.npy"
    np.save(path, K_all)
    pool_path = tmp_path / "pool.npz"
    d, V = eigh_descending(K_all[:N])
    save_npz(pool_path, index=np.arange(N), eigvals=d, eigvecs=V)
    proc = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(path), str(pool_path), str(N), str(n), mode],
                          capture_output=True, text=True, check=True)
    peak = json.loads(proc.stdout)["peak"]
    declared = eigh_job_bytes(n, N, m, permuted=mode == "permuted")
    # 4 MB of slack for the allocator and small arrays (the rule adds 1000 MB on top)
    assert peak <= declared + 4 * 2**20, (peak / 2**20, declared / 2**20)
    # and the formula is not vacuous: the job does hold the bulk of what it declares
    assert peak >= 0.6 * declared, (peak / 2**20, declared / 2**20)


@pytest.mark.workflow
def test_workflow_decomposes_each_entk_pool_once(finished_run):
    """In a run of config/test.yaml: the pool spectrum is bit for bit the library's
    ``pool_spectrum`` of the pool block (the same operations on the same numbers), the
    n = N_pool eigh files are the pool's decomposition with rows permuted, and their
    ridge rows match direct solves on the permuted block (no eigendecomposition)."""
    import pandas as pd
    import yaml
    from conftest import RESULTS, TEST_CONFIG

    from rmtlens.estimators import pool_spectrum, subsample_indices
    from rmtlens.inputs import PreparedDataset
    from rmtlens.io import load_npz

    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    data = PreparedDataset.from_arrays(load_npz(finished_run / f"{RESULTS}/datasets/digits.npz"))
    N, C = data.n_pool, len(data.classes)
    Y = np.eye(C)[data.labels] - 1.0 / C
    table = pd.read_parquet(finished_run / f"{RESULTS}/tables/ridge.parquet")
    units = [(b, w) for b, bb in cfg["backbones"].items() if "entk" in bb["kernels"] for w in bb["weights"]]
    assert units
    for backbone, weights in units:
        unit = f"digits/{backbone}/{weights}/entk"
        K_all = np.load(finished_run / f"{RESULTS}/kernels/digits/{backbone}/{weights}/entk.npy")
        spectrum = load_npz(finished_run / f"{RESULTS}/spectra/{unit}/pool.npz")
        d_ref, proj_ref = pool_spectrum(K_all[:N], data.labels[:N], C)
        assert np.array_equal(spectrum["eigvals"], d_ref) and np.array_equal(spectrum["proj_onehot"], proj_ref)
        pool = load_npz(finished_run / f"{RESULTS}/eigh/{unit}/pool.npz")
        scale = np.trace(K_all[:N]) / N
        for seed in cfg["seeds"]:
            eig = load_npz(finished_run / f"{RESULTS}/eigh/{unit}/n{N}_s{seed}.npz")
            index = subsample_indices(N, N, seed)
            assert np.array_equal(eig["index"], index)
            assert np.array_equal(eig["eigvals"], pool["eigvals"])
            assert np.array_equal(eig["eigvecs"], pool["eigvecs"][index])
            rows = table[(table.backbone == backbone) & (table.weights == weights) & (table.kernel == "entk")
                         & (table.n == N) & (table.seed == seed) & (table.lambda_rel > 0) & table.resolved]
            assert len(rows)
            K = K_all[np.ix_(index, index)]
            for _, row in rows.iterrows():
                lam = row.lambda_rel * scale
                alpha = np.linalg.solve(K + N * lam * np.eye(N), Y[index])
                test_risk = np.mean(np.sum((K_all[N:][:, index] @ alpha - Y[N:]) ** 2, axis=1))
                train_risk = np.sum((Y[index] - K @ alpha) ** 2) / N
                # direct solves against the spectral path: round-off amplified by the
                # conditioning of K + nλI at the smallest resolved ridges
                assert row.test_risk == pytest.approx(test_risk, rel=1e-7, abs=1e-12)
                assert row.train_risk == pytest.approx(train_risk, rel=1e-6, abs=1e-12)
