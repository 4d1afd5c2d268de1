"""The low-rank path end to end on real images: CIFAR-10 (JPEG re-encoding), a pool of 2,000.

The workflow never writes a feature-kernel file; its ridge, theory and gradient-flow
rows are checked against dense computations from the cached embeddings (the kernel
``Φ Φ_poolᵀ/p`` formed explicitly, direct solves, a dense eigendecomposition of the
pool kernel), and no array it writes is N_pool x N_pool.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import CIFAR10_SHA256, TEST_CONFIG, snakemake

from rmtlens.estimators import eigh_descending, pool_spectrum, predict_grid, ridge_path
from rmtlens.inputs import PreparedDataset, make_targets
from rmtlens.io import load_npz
from rmtlens.studies import gradient_flow_path, time_grid

pytestmark = pytest.mark.workflow

N_POOL, N_TEST = 2000, 300


@pytest.fixture(scope="module")
def cifar_run(cifar10_archive, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("lowrank")
    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    cfg["datasets"] = {
        "cifar10": dict(source="imagefolder", label="CIFAR-10 (JPEG)", archive=str(cifar10_archive),
                        sha256=CIFAR10_SHA256, n_pool=N_POOL, n_test=N_TEST, seed=0)
    }
    cfg["backbones"] = {"tresnet": dict(cfg["backbones"]["tresnet"], weights=["init"], kernels=["features"])}
    cfg["source_tasks"] = {}
    cfg["double_descent"]["enabled"] = cfg["linearisation"]["enabled"] = False
    cfg["sample_sizes"] = dict(min=50, max=None, num=3)  # 50, 316, 2000: p = 96 lies inside
    cfg["seeds"] = [0]
    config_file = workdir / "cifar-lowrank.yaml"
    config_file.write_text(yaml.safe_dump(cfg))
    snakemake(workdir, "--configfile", str(config_file), "--cores", "2")
    return workdir, cfg


def dense_inputs(workdir, cfg):
    data = PreparedDataset.from_arrays(load_npz(workdir / "results/datasets/cifar10.npz"))
    phi = np.load(workdir / "results/embeddings/cifar10/tresnet/init.npy").astype(np.float64)
    K_all = phi @ phi[:N_POOL].T / phi.shape[1]
    t = cfg["targets"]
    Y = make_targets(data.labels, len(data.classes), t["kind"], t["positive_classes"])
    return data, phi, K_all, Y


def test_no_feature_kernel_file_and_no_pool_by_pool_array(cifar_run):
    workdir, _ = cifar_run
    assert not list(workdir.glob("results/kernels/**/*.npy"))
    for path in workdir.glob("results/**/*.np[yz]"):
        arrays = [np.load(path, mmap_mode="r")] if path.suffix == ".npy" else list(np.load(path).values())
        for arr in arrays:
            assert sum(dim >= N_POOL for dim in arr.shape) < 2, (path, arr.shape)
    logs = "".join(p.read_text() for p in workdir.glob("logs/factor/**/*.log"))
    assert "n=2000, p=96: svd" in logs and "n=50, p=96: dense" in logs
    assert "p x p Gram (low-rank)" in (workdir / "logs/pool_spectrum/cifar10/tresnet/init/features.log").read_text()


def test_ridge_rows_equal_direct_solves_on_the_dense_kernel(cifar_run):
    workdir, cfg = cifar_run
    data, phi, K_all, Y = dense_inputs(workdir, cfg)
    table = pd.read_parquet(workdir / "results/tables/ridge.parquet")
    scale = np.trace(K_all[:N_POOL]) / N_POOL
    for n in (316, 2000):
        idx = np.random.default_rng(0).permutation(N_POOL)[:n]
        K, Ks = K_all[np.ix_(idx, idx)], K_all[N_POOL:, idx]
        for lam_rel in sorted(table.lambda_rel.unique())[1::3]:
            row = table[(table.n == n) & (table.lambda_rel == lam_rel)].iloc[0]
            lam = lam_rel * scale
            inv = np.linalg.inv(K + n * lam * np.eye(n))
            resid = n * lam * inv @ Y[idx]  # (I − S) Y
            pred = Ks @ inv @ Y[idx]
            ref = dict(
                test_risk=np.mean(np.sum((pred - Y[N_POOL:]) ** 2, axis=1)),
                train_risk=np.sum(resid**2) / n,
                gcv=np.sum(resid**2) / n / (np.trace(n * lam * inv) / n) ** 2,
                loo=np.mean(np.sum(resid**2, axis=1) / np.diag(n * lam * inv) ** 2),
                dof=n - np.trace(n * lam * inv),
            )
            for key, value in ref.items():
                assert row[key] == pytest.approx(value, rel=1e-6), (key, n, lam_rel)
    # the ridgeless row at n = N_POOL > p: least squares on the features, residual = projection off their span
    row = table[(table.n == 2000) & (table.lambda_rel == 0)].iloc[0]
    idx = np.random.default_rng(0).permutation(N_POOL)[:2000]
    coef, *_ = np.linalg.lstsq(phi[idx], Y[idx], rcond=None)
    assert row.train_risk == pytest.approx(np.sum((phi[idx] @ coef - Y[idx]) ** 2) / 2000, rel=1e-8)
    assert row.test_risk == pytest.approx(np.mean(np.sum((phi[N_POOL:] @ coef - Y[N_POOL:]) ** 2, axis=1)), rel=1e-8)


def test_theory_and_flow_rows_equal_the_dense_path(cifar_run):
    workdir, cfg = cifar_run
    data, phi, K_all, Y = dense_inputs(workdir, cfg)
    joined = pd.read_parquet(workdir / "results/tables/theory.parquet")
    D, P = pool_spectrum(K_all[:N_POOL], data.labels[:N_POOL], len(data.classes))
    C = len(data.classes)
    target_map = np.eye(C) - 1.0 / C
    w = cfg["theory"]["powerlaw_window"]
    lam_rel = np.sort(joined.lambda_rel.unique())
    # the accuracy floor of SPEC §2 from the record the workflow wrote from the embeddings, recomputed with numpy
    record = json.loads((workdir / "results/kernels/cifar10/tresnet/init/features.accuracy.json").read_text())
    assert record["method"] == "float64 round-off bound" and record["p"] == phi.shape[1]
    eps, safety, u = record["relative_error"], cfg["accuracy"]["safety"], 2.0**-53
    grid, _, _ = predict_grid(D, P, target_map, [50, 316, 2000], lam_rel, (w["k_min"], w["k_max"]),
                              floor=safety * (eps + N_POOL * u) * D.max(), scale=np.trace(K_all[:N_POOL]) / N_POOL)
    ref = pd.DataFrame(grid)
    got = joined[joined.seed == 0].merge(ref, on=["n", "lambda_rel"], suffixes=("", "_dense"))
    assert len(got) == len(ref)
    for key in ("kappa", "lambda_over_kappa", "omniscient_test_risk", "omniscient_train_risk", "powerlaw_test_risk",
                "truncated_powerlaw_test_risk", "omniscient_excess_bias", "omniscient_excess_noise"):
        np.testing.assert_allclose(got[key], got[key + "_dense"], rtol=1e-9, err_msg=key)

    flow = pd.read_parquet(workdir / "results/dynamics/cifar10/tresnet/init/features.parquet")
    idx = np.random.default_rng(0).permutation(N_POOL)[:2000]
    d, U = eigh_descending(K_all[np.ix_(idx, idx)])
    times = time_grid(np.trace(K_all[:N_POOL]) / N_POOL, cfg["ridge"]["min"], cfg["ridge"]["max"],
                      cfg["learning_dynamics"]["num_times"], cfg["learning_dynamics"]["learning_rate"])
    floor = safety * (eps + 2000 * u) * d.max()
    table, _ = gradient_flow_path(d, U, Y[idx], K_all[N_POOL:, idx], Y[N_POOL:], times,
                                  cfg["learning_dynamics"]["learning_rate"], floor=floor, safety=safety)
    assert np.array_equal(flow["resolved"].to_numpy(), table["resolved"])
    for key in ("test_risk", "train_risk", "gcv", "dof", "ridge_test_risk", "ridge_gcv"):
        np.testing.assert_allclose(flow[key], table[key], rtol=1e-8, err_msg=key)
    dense_ridge = ridge_path(d, U, Y[idx], K_all[N_POOL:, idx], Y[N_POOL:], [0.0], floor=floor, safety=safety)
    assert flow.test_risk.iloc[-1] == pytest.approx(dense_ridge["test_risk"][0], rel=1e-8)
