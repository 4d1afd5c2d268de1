"""The whole DAG on config/test.yaml through the snakemake CLI, checked independently."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import REPO, RESULTS, RUN, TEST_CONFIG, dry_run_jobs, snakemake

from rmtlens.inputs import PreparedDataset, create_backbone, embed_images
from rmtlens.io import load_npz

pytestmark = pytest.mark.workflow


def kernel_matrix(workdir, dataset, backbone, weights, kernel):
    """The (N_pool + m, N_pool) kernel of a unit: the eNTK file, or for ``features``
    (low-rank path, no kernel file) ``Φ Φ_poolᵀ / p`` formed densely from the embeddings."""
    if kernel != "features":
        return np.load(workdir / f"{RESULTS}/kernels/{dataset}/{backbone}/{weights}/{kernel}.npy")
    assert not (workdir / f"{RESULTS}/kernels/{dataset}/{backbone}/{weights}/features.npy").exists()
    phi = np.load(workdir / f"{RESULTS}/embeddings/{dataset}/{backbone}/{weights}.npy").astype(np.float64)
    n_pool = PreparedDataset.from_arrays(load_npz(workdir / f"{RESULTS}/datasets/{dataset}.npz")).n_pool
    return phi @ phi[:n_pool].T / phi.shape[1]


def target_rows(workdir, dataset="digits"):
    """Centred one-hot targets of every pool and test row (config/test.yaml's targets)."""
    data = PreparedDataset.from_arrays(load_npz(workdir / f"{RESULTS}/datasets/{dataset}.npz"))
    return np.eye(len(data.classes))[data.labels] - 1.0 / len(data.classes)


def floored_ridge(w, V, Ks, Y, Ys, cutoff, lambdas):
    """Test risk and GCV of ridge on the kernel ``Σ_{w > cutoff} w v vᵀ`` (eigen-pairs from numpy),
    by dense solves per ridge; predictions ``K* P (K_g + nλI)⁻¹ Y`` with ``P`` the projector on
    the kept directions (λ > 0; NaN at λ = 0)."""
    n, keep = len(w), w > cutoff
    Kg, P = V[:, keep] @ np.diag(w[keep]) @ V[:, keep].T, V[:, keep] @ V[:, keep].T
    out = {"test_risk": np.full(len(lambdas), np.nan), "gcv": np.full(len(lambdas), np.nan)}
    for j, lam in enumerate(lambdas):
        if lam > 0:
            M = Kg + n * lam * np.eye(n)
            alpha = np.linalg.solve(M, Y)
            out["test_risk"][j] = np.mean(np.sum((Ks @ P @ alpha - Ys) ** 2, axis=1))
            dof = np.trace(Kg @ np.linalg.inv(M))
            out["gcv"][j] = np.sum((Y - Kg @ alpha) ** 2) / n / (1 - dof / n) ** 2
    return out


def brute_force_row(K_all, n_pool, idx, Y, lam):
    """Test risk, error, train risk and GCV by direct solves (no eigendecomposition)."""
    n = len(idx)
    K = K_all[np.ix_(idx, idx)]
    Ks = K_all[n_pool:, idx]
    M = K + n * lam * np.eye(n)
    alpha = np.linalg.solve(M, Y[idx])
    pred = Ks @ alpha
    err = pred - Y[n_pool:]
    S = K @ np.linalg.inv(M)
    resid = Y[idx] - K @ alpha
    train = np.sum(resid**2) / n
    return dict(
        test_risk=np.mean(np.sum(err**2, axis=1)),
        test_error=np.mean(pred.argmax(1) != Y[n_pool:].argmax(1)),
        train_risk=train,
        gcv=train / (1 - np.trace(S) / n) ** 2,
    )


def test_table_rows_match_independent_recomputation(finished_run):
    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    table = pd.read_parquet(finished_run / f"{RESULTS}/tables/ridge.parquet")
    n_lambdas = cfg["ridge"]["num"] + int(cfg["ridge"]["ridgeless"])
    n_units = sum(len(b["weights"]) * len(b["kernels"]) for b in cfg["backbones"].values())
    sizes = table["n"].unique()
    assert len(table) == n_units * len(sizes) * len(cfg["seeds"]) * n_lambdas
    assert sizes.min() == cfg["sample_sizes"]["min"] and sizes.max() == cfg["datasets"]["digits"]["n_pool"]

    data = PreparedDataset.from_arrays(load_npz(finished_run / f"{RESULTS}/datasets/digits.npz"))
    n_pool, C = data.n_pool, len(data.classes)
    Y = np.eye(C)[data.labels] - 1.0 / C
    rows = table[table["lambda_rel"] > 0].sample(12, random_state=0)
    for _, row in rows.iterrows():
        K_all = kernel_matrix(finished_run, "digits", row.backbone, row.weights, row.kernel)
        scale = np.trace(K_all[:n_pool]) / n_pool
        idx = np.random.default_rng(int(row.seed)).permutation(n_pool)[: int(row.n)]
        ref = brute_force_row(K_all, n_pool, idx, Y, row.lambda_rel * scale)
        for key, value in ref.items():
            assert row[key] == pytest.approx(value, rel=1e-7, abs=1e-12), (key, row.to_dict())


def test_feature_kernel_inputs_equal_recomputed_embeddings(finished_run):
    """Feature kernels take the low-rank path: the cached embeddings are their only input, and
    no dense feature-kernel file is written."""
    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    data = PreparedDataset.from_arrays(load_npz(finished_run / f"{RESULTS}/datasets/digits.npz"))
    assert not list(finished_run.glob(f"{RESULTS}/kernels/*/*/*/features.npy"))
    for name, bb in cfg["backbones"].items():
        model = create_backbone(bb["model"], bb["image_size"], bb["seed"], bb.get("model_kwargs"))
        phi = embed_images(model, data.images, bb["image_size"], batch_size=32).astype(np.float64)
        stored = np.load(finished_run / f"{RESULTS}/embeddings/digits/{name}/init.npy")
        np.testing.assert_allclose(stored, phi, rtol=1e-4, atol=1e-6 * np.abs(phi).max())


def test_accuracy_table_matches_ridge_table(finished_run):
    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    table = pd.read_parquet(finished_run / f"{RESULTS}/tables/ridge.parquet")
    acc = pd.read_csv(finished_run / f"{RESULTS}/tables/gcv_accuracy.csv")
    rows = table[(table.backbone == "tresnet") & (table.weights == "init") & (table.kernel == "features")
                 & (table.n >= cfg["analysis"]["n_min"])]
    err = np.abs(rows.gcv - rows.test_risk) / rows.test_risk
    got = acc[(acc.backbone == "tresnet") & (acc.weights == "init") & (acc.kernel == "features")
              & (acc.estimator == "GCV")].iloc[0]
    assert got.median_rel_error == pytest.approx(np.median(err), rel=1e-9)
    assert got.p90_rel_error == pytest.approx(np.quantile(err, 0.9), rel=1e-9)
    assert got.rows == len(rows)


def test_figures_are_real_images(finished_run):
    from PIL import Image

    for name in ["risk_vs_n", "gcv_vs_risk", "risk_vs_lambda"]:
        with Image.open(finished_run / f"{RESULTS}/figures/{name}.png") as img:
            pixels = np.asarray(img.convert("L"))
        assert pixels.shape[0] > 200 and pixels.shape[1] > 200
        assert pixels.std() > 5  # not a blank canvas
        svg = (finished_run / f"{RESULTS}/figures/{name}.svg").read_text()
        assert svg.lstrip().startswith("<?xml") and "<path" in svg


def test_changing_the_ridge_grid_reuses_kernels_and_eigendecompositions(finished_run, tmp_path):
    workdir = tmp_path / "copy"
    shutil.copytree(finished_run, workdir, symlinks=True)
    assert dry_run_jobs(workdir, "--configfile", str(TEST_CONFIG)) == {}
    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    cfg["ridge"].update(min=1.0e-4, num=5)
    new_grid = tmp_path / "new_grid.yaml"
    new_grid.write_text(yaml.safe_dump(cfg))
    jobs = dry_run_jobs(workdir, "--configfile", str(new_grid))
    assert jobs.get("ridge_path", 0) > 0 and jobs.get("aggregate") == 1
    for heavy in ["prepare_dataset", "embed", "kernel", "eigh", "pool_eigh", "factor", "pool_spectrum",
                  "feature_pool_spectrum"]:
        assert heavy not in jobs, jobs


def test_cifar10_subset_end_to_end(cifar10_archive, tmp_path):
    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    cfg["datasets"] = {
        "cifar10": dict(
            source="imagefolder", label="CIFAR-10 (JPEG re-encoding)", archive=str(cifar10_archive),
            sha256="45b041e867f5a40f79bfde38d3dd1fd511103d50068c1afecf6445e25234d4db",
            n_pool=100, n_test=50, seed=0,
        )
    }
    cfg["backbones"] = {"tresnet": dict(cfg["backbones"]["tresnet"], weights=["init"], kernels=["features"])}
    cfg["source_tasks"] = {}
    cfg["double_descent"]["enabled"] = cfg["linearisation"]["enabled"] = False
    config_file = tmp_path / "cifar.yaml"
    config_file.write_text(yaml.safe_dump(cfg))
    snakemake(tmp_path, "--configfile", str(config_file), "--cores", "2")
    data = PreparedDataset.from_arrays(load_npz(tmp_path / f"{RESULTS}/datasets/cifar10.npz"))
    assert data.images.shape == (150, 32, 32, 3) and data.classes[0] == "airplane"
    table = pd.read_parquet(tmp_path / f"{RESULTS}/tables/ridge.parquet")
    K_all = kernel_matrix(tmp_path, "cifar10", "tresnet", "init", "features")
    Y = np.eye(10)[data.labels] - 0.1
    row = table[(table.n == 100) & (table.lambda_rel > 0)].iloc[3]
    scale = np.trace(K_all[:100]) / 100
    idx = np.random.default_rng(int(row.seed)).permutation(100)[:100]
    ref = brute_force_row(K_all, 100, idx, Y, row.lambda_rel * scale)
    assert row.test_risk == pytest.approx(ref["test_risk"], rel=1e-7)
    assert row.gcv == pytest.approx(ref["gcv"], rel=1e-7)


def test_pretraining_improves_the_source_task_and_the_kernel(finished_run):
    history = pd.read_csv(finished_run / f"{RESULTS}/pretrain/tresnet.csv")
    assert history.epoch.tolist() == list(range(len(history)))
    assert history.heldout_accuracy.iloc[-1] >= history.heldout_accuracy.iloc[0] + 0.3
    best = pd.read_csv(finished_run / f"{RESULTS}/tables/best_risk.csv").set_index(["backbone", "weights", "kernel"])
    for kernel in ("features", "entk"):
        trained, init = best.loc[("tresnet", "trained", kernel)], best.loc[("tresnet", "init", kernel)]
        assert trained.best_test_risk < init.best_test_risk, kernel


def test_pretraining_is_deterministic_whatever_the_cores(finished_run, tmp_path):
    """Retrained on one core instead of two, the weights are bit-identical: torch's thread
    count, which changes the weights (another summation order, amplified by training), comes
    from the config (pretrain.threads), not from the cores Snakemake grants."""
    from rmtlens.inputs.weights import load_backbone_state

    workdir = tmp_path / "again"
    shutil.copytree(finished_run, workdir, symlinks=True)
    snakemake(workdir, "--configfile", str(TEST_CONFIG), "--cores", "1", "--forcerun", "pretrain", "--until", "pretrain")
    log = (workdir / f"logs/{RUN}/pretrain/tresnet.log").read_text()
    assert "2 torch threads, OMP_WAIT_POLICY=PASSIVE" in log, log
    first, name = load_backbone_state(finished_run / f"{RESULTS}/weights/tresnet/trained.safetensors")
    second, _ = load_backbone_state(workdir / f"{RESULTS}/weights/tresnet/trained.safetensors")
    assert name == "test_resnet" and first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key


def test_published_weights_from_a_local_file_reach_the_embeddings(tmp_path):
    """weights 'pretrained' with a local file goes through timm's loading path in the embed rule."""
    from safetensors.torch import save_file

    source = create_backbone("test_resnet", 32, seed=7)
    weights_file = tmp_path / "published.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(weights_file))
    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    cfg["backbones"] = {"pub": dict(model="test_resnet", image_size=32, weights=["pretrained"], kernels=["features"],
                                    seed=0, pretrained_file=str(weights_file))}
    cfg["double_descent"]["enabled"] = False
    config_file = tmp_path / "pub.yaml"
    config_file.write_text(yaml.safe_dump(cfg))
    target = f"{RESULTS}/embeddings/digits/pub/pretrained.npy"
    snakemake(tmp_path, "--configfile", str(config_file), "--cores", "2", target)
    data = PreparedDataset.from_arrays(load_npz(tmp_path / f"{RESULTS}/datasets/digits.npz"))
    expected = embed_images(source, data.images, 32, batch_size=64)
    np.testing.assert_allclose(np.load(tmp_path / target), expected, rtol=1e-5, atol=1e-6)
    init = embed_images(create_backbone("test_resnet", 32, seed=0), data.images[:8], 32)
    assert not np.allclose(init, expected[:8], atol=1e-3)

    # the weights file gone: the run stops before any job, naming it and the option that
    # gives it, although the embedding made from it exists
    weights_file.rename(tmp_path / "moved.safetensors")
    proc = snakemake(tmp_path, "--configfile", str(config_file), "-n", target, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0 and str(weights_file) in output, output[-3000:]
    assert "--config 'backbones={pub: {pretrained_file: /path/to/published.safetensors}}'" in output, output[-3000:]


def test_theory_predictions_match_an_independent_computation(finished_run):
    """The omniscient DE of a table row, recomputed from the kernel file with numpy and brentq."""
    from scipy.optimize import brentq

    joined = pd.read_parquet(finished_run / f"{RESULTS}/tables/theory.parquet")
    data = PreparedDataset.from_arrays(load_npz(finished_run / f"{RESULTS}/datasets/digits.npz"))
    N = data.n_pool
    K_pool = kernel_matrix(finished_run, "digits", "tvit", "init", "features")[:N]
    D, V = np.linalg.eigh(K_pool)
    Y = np.eye(10)[data.labels[:N]] - 0.1
    mu = np.clip(D, 0, None) / N
    mu[D <= 1e-10 * D.max()] = 0
    beta_sq = np.sum((V.T @ Y) ** 2, axis=1) / N
    row = joined[(joined.backbone == "tvit") & (joined.kernel == "features") & (joined.n == 61) & (joined.lambda_rel == 1e-3)].iloc[0]
    lam, n = row["lambda"], 61
    assert lam == pytest.approx(1e-3 * np.trace(K_pool) / N, rel=1e-9)
    kappa = brentq(lambda k: k - lam - (k / n) * np.sum(mu / (mu + k)), lam, lam + mu.sum() / n + 1, xtol=1e-300, rtol=1e-14)
    gamma = np.sum(mu**2 / (mu + kappa) ** 2) / n
    risk = np.sum((kappa / (mu + kappa)) ** 2 * beta_sq) / (1 - gamma)
    assert row.kappa == pytest.approx(kappa, rel=1e-8)
    assert row.omniscient_test_risk == pytest.approx(risk, rel=1e-8)
    assert row.omniscient_train_risk == pytest.approx((lam / kappa) ** 2 * risk, rel=1e-8)


def test_representation_and_scaling_tables_agree_with_direct_computations(finished_run):
    rep = pd.read_csv(finished_run / f"{RESULTS}/tables/representations.csv").set_index(["backbone", "weights", "kernel"])
    data = PreparedDataset.from_arrays(load_npz(finished_run / f"{RESULTS}/datasets/digits.npz"))
    N = data.n_pool
    D = np.linalg.eigvalsh(kernel_matrix(finished_run, "digits", "tresnet", "trained", "features")[:N])
    D = np.where(D > 1e-10 * D.max(), D, 0)
    assert rep.loc[("tresnet", "trained", "features"), "effective_rank"] == pytest.approx(D.sum() ** 2 / np.sum(D**2), rel=1e-9)

    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    table = pd.read_parquet(finished_run / f"{RESULTS}/tables/ridge.parquet")
    rows = table[(table.backbone == "tvit") & (table.kernel == "features") & table.resolved]
    # GCV-selected ridge per (n, seed) from GCV alone, then the measured risk there
    chosen = rows.loc[rows.groupby(["n", "seed"])["gcv"].idxmin()]
    curve = chosen.groupby("n")["test_risk"].mean()
    curve = curve[curve.index >= cfg["scaling"]["n_window"]["min"]]
    slope = np.polyfit(np.log(curve.index), np.log(curve.to_numpy()), 1)[0]
    scaling = pd.read_csv(finished_run / f"{RESULTS}/tables/scaling.csv")
    got = scaling[(scaling.backbone == "tvit") & (scaling.kernel == "features") & (scaling.ridge == "gcv")].iloc[0]
    assert got.observed_exponent == pytest.approx(-slope, rel=1e-9)


def test_learning_dynamics_limit_is_the_ridgeless_row_of_the_ridge_table(finished_run):
    dyn = pd.read_csv(finished_run / f"{RESULTS}/tables/learning_dynamics.csv")
    ridge = pd.read_parquet(finished_run / f"{RESULTS}/tables/ridge.parquet")
    for (backbone, weights, kernel), group in dyn.groupby(["backbone", "weights", "kernel"]):
        limit = group[~np.isfinite(group.time)].iloc[0]
        row = ridge[(ridge.backbone == backbone) & (ridge.weights == weights) & (ridge.kernel == kernel)
                    & (ridge.n == limit.n) & (ridge.seed == 0) & (ridge.lambda_rel == 0)].iloc[0]
        assert limit.test_risk == pytest.approx(row.test_risk, rel=1e-7)
        assert limit.train_risk == pytest.approx(row.train_risk, rel=1e-6, abs=1e-12)
        finite = group[np.isfinite(group.time)]
        # the matched-ridge column is the ridge path at λ = 1/(ηt): monotone in λ as a train risk
        assert np.all(np.diff(finite.ridge_train_risk.to_numpy()) <= 1e-12)


def test_double_descent_linear_equivalent_matches_a_direct_formula(finished_run):
    from scipy.optimize import brentq

    table = pd.read_csv(finished_run / f"{RESULTS}/tables/double_descent.csv")
    linear = table[table.model.str.startswith("linear")]
    data = PreparedDataset.from_arrays(load_npz(finished_run / f"{RESULTS}/datasets/digits.npz"))
    N = data.n_pool
    phi = np.load(finished_run / f"{RESULTS}/embeddings/digits/tresnet/trained.npy").astype(np.float64)
    p = phi.shape[1]
    Y = (np.eye(10)[data.labels] - 0.1)[:N]
    D, V = np.linalg.eigh(phi[:N] @ phi[:N].T / p)
    mu = np.where(D > 1e-10 * D.max(), D, 0) / N
    b2 = np.sum((V.T @ Y) ** 2, axis=1) / N
    row = linear.iloc[len(linear) // 2]
    n, lam = int(row.n), row["lambda"]
    kappa = brentq(lambda k: k - lam - (k / n) * np.sum(mu / (mu + k)), lam, lam + mu.sum() / n + 1, rtol=1e-14)
    gamma = np.sum(mu**2 / (mu + kappa) ** 2) / n
    assert row.de_mse == pytest.approx(np.sum((kappa / (mu + kappa)) ** 2 * b2) / (1 - gamma), rel=1e-6)
    summary = pd.read_csv(finished_run / f"{RESULTS}/tables/double_descent_summary.csv").set_index("model")
    for model, group in table.groupby("model"):
        assert summary.loc[model, "peak_ratio_measured"] == group.groupby("ratio").test_mse.mean().idxmax()


def test_adding_a_backbone_schedules_only_its_jobs_and_the_summaries(finished_run, tmp_path):
    workdir = tmp_path / "copy"
    shutil.copytree(finished_run, workdir, symlinks=True)
    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    cfg["backbones"]["tconv"] = dict(model="test_convnext", image_size=32, weights=["init"], kernels=["features"], seed=0)
    config_file = tmp_path / "more.yaml"
    config_file.write_text(yaml.safe_dump(cfg))
    jobs = dry_run_jobs(workdir, "--configfile", str(config_file))
    n_sizes = len(pd.read_parquet(finished_run / f"{RESULTS}/tables/ridge.parquet").n.unique())
    per_unit = {"embed": 1, "feature_pool_spectrum": 1, "theory": 1, "learning_dynamics": 1,
                "factor": n_sizes, "ridge_path": 1}  # factor: one job per n, covering every seed
    for rule, count in per_unit.items():
        assert jobs.get(rule) == count, (rule, jobs)
    for untouched in ["prepare_dataset", "prepare_source_task", "pretrain", "pretraining_figure", "double_descent",
                      "kernel", "eigh", "pool_spectrum"]:
        assert untouched not in jobs, jobs
    assert {"aggregate", "estimators", "scaling", "figures"} <= set(jobs)


def tree_state(root):
    """{relative path: (bytes, mtime)} of every file under ``root``."""
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()}


def test_two_runs_sit_side_by_side(finished_run, tmp_path):
    """A second, smaller configuration under its own run name beside the finished test run:
    it recomputes what it needs in its own folders, leaves the first run's files untouched
    (bytes and modification times), its tables hold only its own units, and the first run
    still has nothing to do."""
    workdir = tmp_path / "copy"
    shutil.copytree(finished_run, workdir, symlinks=True)
    first = {top: tree_state(workdir / top / RUN) for top in ("results", "logs", "benchmarks")}
    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    cfg["run"] = "other"
    cfg["backbones"] = {"tvit": cfg["backbones"]["tvit"] | {"kernels": ["features"]}}
    cfg["source_tasks"], cfg["seeds"] = {}, [0]
    cfg["sample_sizes"]["num"] = 2
    for study in ("double_descent", "learning_dynamics", "linearisation"):
        cfg[study]["enabled"] = False
    cfg["targets"]["noise"]["enabled"] = False
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(cfg))

    target = "results/other/tables/best_risk.csv"  # the ridge-path summary: enough to show where things go
    planned = dry_run_jobs(workdir, target, "--configfile", str(other))
    assert planned["prepare_dataset"] == 1 and planned["embed"] == 1  # nothing taken from the first run
    snakemake(workdir, "--configfile", str(other), "--cores", "2", target)
    assert {top: tree_state(workdir / top / RUN) for top in first} == first
    for top in ("results", "logs", "benchmarks"):
        assert sorted(p.name for p in (workdir / top).iterdir()) == sorted(["other", RUN]), top
    best = pd.read_csv(workdir / target)
    assert set(zip(best.backbone, best.weights, best.kernel)) == {("tvit", "init", "features")}
    assert dry_run_jobs(workdir, "--configfile", str(TEST_CONFIG)) == {}
    assert dry_run_jobs(workdir, target, "--configfile", str(other)) == {}


def test_entk_tiles_assemble_to_the_untiled_kernel(finished_run):
    """Tiles (one mirrored, one straddling pool and test) equal one untiled eNTK call."""
    from rmtlens.inputs.backbones import feature_dim, normalisation, preprocess
    from rmtlens.inputs.weights import load_trained_backbone
    from rmtlens.kernels.ntk import entk, scalar_network

    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    data = PreparedDataset.from_arrays(load_npz(finished_run / f"{RESULTS}/datasets/digits.npz"))
    N = data.n_pool
    backbone = load_trained_backbone("test_resnet", 32, 0, finished_run / f"{RESULTS}/weights/tresnet/trained.safetensors")
    model = scalar_network(backbone, feature_dim(backbone, 32), head_seed=0)
    mean, std = normalisation(backbone)
    x = preprocess(data.images, 32, mean, std)
    reference = entk(model, x, x[:N], dtype=torch.float64)
    K = np.load(finished_run / f"{RESULTS}/kernels/digits/tresnet/trained/entk.npy")
    assert cfg["entk"]["tile_size"] < N and len(list((finished_run / f"{RESULTS}/kernels/digits/tresnet/trained/entk_tiles").iterdir())) > 3
    np.testing.assert_allclose(K, reference, rtol=1e-10, atol=1e-10 * np.abs(reference).max())
    pool = K[:N]
    assert np.array_equal(pool, pool.T)
    assert np.linalg.eigvalsh(pool).min() > -1e-10 * np.abs(pool).max()


def test_paper_preset_builds_the_full_dag(tmp_path):
    """config/paper.yaml (dry run only): every tile, eigendecomposition and ridge path is scheduled."""
    from rmtlens.estimators.grids import sample_size_grid
    from rmtlens.kernels.tiles import entk_tiles

    cfg = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    jobs = dry_run_jobs(tmp_path, "--configfile", str(REPO / "config" / "paper.yaml"))
    units = [(d, b, w, k) for d, ds in cfg["datasets"].items() for b in ds["backbones"]
             for w in cfg["backbones"][b]["weights"] for k in cfg["backbones"][b]["kernels"]]
    tiles = {d: sum(t.mirror is None for t in entk_tiles(ds["n_pool"], ds["n_test"], cfg["entk"]["tile_size"]))
             for d, ds in cfg["datasets"].items()}
    sizes = {d: len(sample_size_grid(cfg["sample_sizes"]["min"], ds["n_pool"], cfg["sample_sizes"]["num"]))
             for d, ds in cfg["datasets"].items()}
    assert jobs["entk_tile"] == sum(tiles[d] for d, b, w, k in units if k == "entk")
    assert jobs["entk_assemble"] == sum(k == "entk" for *_, k in units)
    # one eigh/factor job per kernel and n, covering every seed; one ridge_path job per kernel
    assert jobs.get("eigh", 0) + jobs.get("factor", 0) == sum(sizes[d] for d, *_ in units)
    assert jobs["ridge_path"] == len(units)
    assert jobs.get("factor", 0) == sum(sizes[d] for d, b, w, k in units if k == "features")
    assert jobs["prepare_dataset"] == 2 and "pretrain" not in jobs


def test_linearisation_tasks_follow_the_initial_entk(finished_run):
    """The eigenvalues behind the E8 eigenfunction tasks, recomputed from jacrev Jacobians."""
    from torch.func import functional_call, jacrev

    from rmtlens.inputs.backbones import preprocess
    from rmtlens.studies.linearisation import IMAGE_MEAN, IMAGE_STD, small_cnn

    spec = yaml.safe_load(TEST_CONFIG.read_text())["linearisation"]
    data = PreparedDataset.from_arrays(load_npz(finished_run / f"{RESULTS}/datasets/digits.npz"))
    x = preprocess(data.images, 32, IMAGE_MEAN, IMAGE_STD).double()
    model = small_cnn(spec["width"], spec["depth"], spec["seed"]).double().eval()
    params = {k: v.detach() for k, v in model.named_parameters()}
    jac = jacrev(lambda p, xb: functional_call(model, p, (xb,)))(params, x)
    J = torch.cat([j.reshape(len(x), -1) for j in jac.values()], dim=1).numpy()
    eigvals = np.sort(np.linalg.eigvalsh(J @ J.T))[::-1]
    acc = pd.read_csv(finished_run / f"{RESULTS}/tables/linearisation_accuracy.csv")
    for j in spec["eigen_indices"]:
        got = acc[(acc.task == "eigenfunction") & (acc.j == j)].eigenvalue.iloc[0]
        assert got == pytest.approx(eigvals[j], rel=1e-6)
    assert set(acc.model) == {"network", "linearised_init", "linearised_end"}


def test_ridge_rows_are_finite_and_flagged_exactly_below_the_accuracy_floor(finished_run):
    """Every cell of ridge.parquet is finite; each row's floor and `resolved` flag, recomputed from
    the eigendecomposition file and the kernel's accuracy record with numpy (SPEC §2)."""
    import json

    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    safety, u = cfg["accuracy"]["safety"], 2.0**-53
    tolerance = cfg["accuracy"].get("floor_tolerance", 0.01)  # the schema's default
    n_pool, removed = cfg["datasets"]["digits"]["n_pool"], 0
    table = pd.read_parquet(finished_run / f"{RESULTS}/tables/ridge.parquet")
    numeric = table.select_dtypes("number")
    assert np.isfinite(numeric.to_numpy()).all(), numeric.columns[~np.isfinite(numeric).all()].tolist()
    assert table["resolved"].dtype == bool
    records = {}
    for path in (finished_run / f"{RESULTS}/kernels/digits").glob("*/*/*.accuracy.json"):
        backbone, weights = path.parts[-3], path.parts[-2]
        records[(backbone, weights, path.name.split(".")[0])] = json.loads(path.read_text())
    assert set(records) == set(map(tuple, table[["backbone", "weights", "kernel"]].drop_duplicates().to_numpy()))
    float32 = records[("tvit", "init", "entk")]  # config/test.yaml runs this eNTK in float32
    assert float32["dtype"] == "float32" and 1e-12 < float32["relative_error"] < 1e-3
    assert records[("tresnet", "init", "entk")]["dtype"] == "float64"
    assert float32["relative_error"] > 100 * records[("tresnet", "init", "entk")]["relative_error"]
    for (backbone, weights, kernel, n, seed), rows in table.groupby(["backbone", "weights", "kernel", "n", "seed"]):
        eig = np.load(finished_run / f"{RESULTS}/eigh/digits/{backbone}/{weights}/{kernel}/n{n}_s{seed}.npz")
        K_all = kernel_matrix(finished_run, "digits", backbone, weights, kernel)  # features: from the embeddings
        d = np.linalg.eigvalsh(K_all[np.ix_(eig["index"], eig["index"])])
        floor = safety * (records[(backbone, weights, kernel)]["relative_error"] + n * u) * d.max()
        assert rows["floor"].iloc[0] == pytest.approx(floor, rel=1e-6)
        gap = not np.any((d > floor / safety) & (d <= floor * safety))
        expected = (n * rows["lambda"].to_numpy() >= floor) | gap
        assert np.array_equal(rows["resolved_floor"].to_numpy(), expected), (backbone, weights, kernel, n, seed)
        # the cutoff rule: test risk and GCV at half and twice the floor by dense solves on the
        # floored kernel (LOO too is in floor_change, which must then be at least as large)
        lam = rows["lambda"].to_numpy()
        idx, Y = eig["index"], target_rows(finished_run)
        K, Ks = np.asarray(K_all[np.ix_(idx, idx)], dtype=np.float64), np.asarray(K_all[n_pool:, idx], dtype=np.float64)
        w, V = np.linalg.eigh(K)
        at = {g: floored_ridge(w, V, Ks, Y[idx], Y[n_pool:], g, lam) for g in (floor / 2, floor, 2 * floor)}
        lower = np.zeros(lam.size)
        for g in (floor / 2, 2 * floor):
            for key in ("test_risk", "gcv"):
                lower = np.maximum(lower, np.abs(at[g][key] - at[floor][key]) / at[floor][key])
        changes = rows["floor_change"].to_numpy()
        assert np.all(changes[lam > 0] >= lower[lam > 0] * (1 - 1e-6) - 1e-9), (backbone, weights, kernel, n, seed)
        if np.sum((d > floor / 2) & (d <= 2 * floor)) == 0:  # no direction changes side: nothing moves
            assert np.all(changes[lam > 0] == 0.0)
        assert np.array_equal(rows["resolved"].to_numpy(), expected & (changes < tolerance))
        removed += int(np.sum(expected & (changes >= tolerance)))
    summary = pd.read_csv(finished_run / f"{RESULTS}/tables/gcv_accuracy.csv")
    assert summary["rows"].sum() == 3 * len(table[table.resolved & (table.n >= cfg["analysis"]["n_min"])])
    counts = pd.read_csv(finished_run / f"{RESULTS}/tables/resolved_rows.csv")
    for _, row in counts.iterrows():
        unit = table[(table.backbone == row.backbone) & (table.weights == row.weights) & (table.kernel == row.kernel)]
        assert row["rows"] == len(unit) == row.unresolved_by_floor + row.unresolved_by_cutoff + row.resolved
        assert row.unresolved_by_floor == (~unit.resolved_floor).sum() and row.resolved == unit.resolved.sum()
    assert counts["unresolved_by_cutoff"].sum() == removed
