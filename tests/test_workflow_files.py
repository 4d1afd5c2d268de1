"""Representations from files through the whole workflow, on a tiny version of
config/digits-files.yaml: 110 digits given as arrays (labels, or real-valued targets, and
a split) with two representations of them in different formats (raw pixels in an .npz,
a random projection as a Parquet list column). Tables are recomputed from the arrays,
a bad file stops the run before any job, a changed file reruns only what depends on it."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import dry_run_jobs, snakemake
from sklearn.datasets import load_digits

pytestmark = pytest.mark.workflow

N, N_TEST = 110, 30
P_NARROW = 6  # the projection: thin path (p < n); the 64 pixels: dense factor at n = 20, thin at 80
SIZES = (20, 80)
RUN = "tiny"  # the run folder: results/tiny/
OUT = f"results/{RUN}"


def write_files(folder, regression: bool):
    """The arrays of the dataset: the first N digits' labels (or two real-valued targets),
    a split (the last N_TEST rows are test rows), the raw pixels as uint8 in an .npz and a
    seeded random projection of them as a Parquet list column. Returns the config's dataset
    entry and the arrays (float64)."""
    X, labels = load_digits(return_X_y=True)
    X, labels = X[:N], labels[:N]
    rng = np.random.default_rng(7)
    narrow = X @ rng.standard_normal((64, P_NARROW)) / np.sqrt(P_NARROW)
    split = np.arange(N) >= N - N_TEST
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "split.npy", split)
    pd.DataFrame({"id": np.arange(N), "emb": list(narrow)}).to_parquet(folder / "narrow.parquet")
    np.savez(folder / "wide.npz", emb=X.astype(np.uint8), ids=np.arange(N))
    ds = {
        "source": "arrays",
        "label": "digits (tiny, arrays)",
        "split": {"file": str(folder / "split.npy")},
        "n_pool": N - N_TEST,  # every pool row of the split, and every test row
        "n_test": N_TEST,
        "seed": 0,
        "representations": {
            "narrow": {"file": str(folder / "narrow.parquet"), "key": "emb"},
            "wide": {"file": str(folder / "wide.npz"), "key": "emb"},
        },
    }
    if regression:  # ink in the top and in the bottom half, plus noise
        Y = np.stack([X[:, :32].mean(1), X[:, 32:].mean(1)], axis=1) + 0.1 * rng.standard_normal((N, 2))
        np.save(folder / "targets.npy", Y)
        ds["targets"] = {"file": str(folder / "targets.npy")}
    else:
        Y = np.eye(10)[labels] - 0.1  # onehot_centered
        np.save(folder / "labels.npy", labels)
        ds["labels"] = {"file": str(folder / "labels.npy")}
    return ds, {"narrow": narrow, "wide": X, "Y": Y, "split": split}


def tiny_config(ds, regression: bool) -> dict:
    return {
        "run": RUN,
        "datasets": {"tiny": ds},
        "targets": {"kind": "regression" if regression else "onehot_centered",
                    "noise": {"enabled": True, "gaussian": [0.5], "flip": [] if regression else [0.2]}},
        "sample_sizes": {"min": SIZES[0], "max": SIZES[1], "num": len(SIZES)},
        "seeds": [0],
        "ridge": {"min": 1.0e-4, "max": 10.0, "num": 4, "ridgeless": True},
        "analysis": {"n_min": 20, "bootstrap": {"replicates": 20, "seed": 0}},
        "learnability": {"lambdas_rel": [0.0, 1.0e-3], "modes": 20},
        "theory": {"powerlaw_window": {"k_min": 2, "k_max": 20}},
        "scaling": {"n_window": {"min": 20, "max": None}},
        "figures": {"lambdas_rel": [1.0e-3, 1.0]},
    }


# the regression run asks for the tables and figures that could trip over real-valued
# targets only (one representation), to keep the suite short
REGRESSION_TARGETS = [f"{OUT}/tables/ridge_selection.csv", f"{OUT}/tables/learnability.csv",
                      f"{OUT}/tables/noise_accuracy.csv", f"{OUT}/figures/risk_vs_n.png"]


def run_tiny(tmp_path_factory, regression: bool):
    workdir = tmp_path_factory.mktemp("regression" if regression else "classes")
    ds, arrays = write_files(workdir / "data", regression)
    if regression:
        del ds["representations"]["wide"]
    (workdir / "config.yaml").write_text(yaml.safe_dump(tiny_config(ds, regression)))
    snakemake(workdir, "--configfile", str(workdir / "config.yaml"), "--cores", "2",
              *(REGRESSION_TARGETS if regression else []))
    return workdir, arrays


@pytest.fixture(scope="module")
def classes_run(tmp_path_factory):
    return run_tiny(tmp_path_factory, regression=False)


@pytest.fixture(scope="module")
def regression_run(tmp_path_factory):
    return run_tiny(tmp_path_factory, regression=True)


def direct_rows(phi, Y, split, row):
    """Test risk, train risk and GCV (and the class error) of one ridge-path row by direct
    solves on the file's embeddings; pool = the split's pool rows, test = its test rows."""
    pool, test = phi[~split], phi[split]
    K_pool = pool @ pool.T / phi.shape[1]
    scale = np.trace(K_pool) / len(pool)
    idx = np.random.default_rng(int(row.seed)).permutation(len(pool))[: int(row.n)]
    n, lam = len(idx), row.lambda_rel * scale
    K, Ks = K_pool[np.ix_(idx, idx)], test @ pool[idx].T / phi.shape[1]
    Y_train, Y_test = Y[~split][idx], Y[split]
    M = K + n * lam * np.eye(n)
    alpha = np.linalg.solve(M, Y_train)
    pred = Ks @ alpha
    train = np.sum((Y_train - K @ alpha) ** 2) / n
    S = K @ np.linalg.inv(M)
    return dict(test_risk=np.mean(np.sum((pred - Y_test) ** 2, axis=1)),
                error=np.mean(pred.argmax(1) != Y_test.argmax(1)),
                train_risk=train, gcv=train / (1 - np.trace(S) / n) ** 2)


def check_ridge_rows(workdir, arrays, representations, regression):
    table = pd.read_parquet(workdir / f"{OUT}/tables/ridge.parquet")
    assert set(zip(table.backbone, table.weights, table.kernel)) == {(r, "file", "features") for r in representations}
    assert sorted(table.n.unique()) == list(SIZES)
    rows = table[(table.lambda_rel > 0) & table.resolved]
    assert len(rows) >= 2 * len(SIZES) * len(representations)
    for _, row in rows.iterrows():
        ref = direct_rows(arrays[row.backbone], arrays["Y"], arrays["split"], row)
        for key in ("test_risk", "train_risk", "gcv"):
            # eigendecomposition versus direct solves: round-off only
            assert row[key] == pytest.approx(ref[key], rel=1e-7, abs=1e-12), (key, row.to_dict())
        if regression:
            assert np.isnan(row.test_error)
        else:
            assert row.test_error == pytest.approx(ref["error"], abs=1e-12)
    return table


def test_file_representations_end_to_end(classes_run):
    workdir, arrays = classes_run
    check_ridge_rows(workdir, arrays, ("narrow", "wide"), regression=False)
    emb = np.load(workdir / f"{OUT}/embeddings/tiny/narrow/file.npy")
    order = np.r_[np.flatnonzero(~arrays["split"]), np.flatnonzero(arrays["split"])]
    assert np.array_equal(emb, arrays["narrow"][order])  # pool rows, then test rows
    # every summary lists both representations side by side
    for name in ("best_risk.csv", "representations.csv", "scaling.csv", "learnability.csv",
                 "ridge_selection.csv", "noise_accuracy.csv", "gcv_accuracy.csv"):
        frame = pd.read_csv(workdir / f"{OUT}/tables" / name)
        assert set(frame.backbone) == {"narrow", "wide"} and set(frame.weights) == {"file"}, name
    noise = pd.read_parquet(workdir / f"{OUT}/tables/noise.parquet")
    assert set(noise.noise) == {"none", "gaussian", "flip"}
    for figure in ("risk_vs_n", "representations", "learnability", "noise", "ridge_selection", "scaling"):
        assert (workdir / f"{OUT}/figures/{figure}.png").stat().st_size > 0


def test_changed_file_reruns_only_its_dependants(classes_run):
    workdir, arrays = classes_run
    config = str(workdir / "config.yaml")
    narrow = workdir / "data/narrow.parquet"
    original, before = narrow.read_bytes(), narrow.stat()
    try:
        changed = arrays["narrow"].copy()
        changed[0, 0] += 1.0  # new content (Snakemake compares small files' checksums, not only times)
        pd.DataFrame({"id": np.arange(N), "emb": list(changed)}).to_parquet(narrow)
        jobs = dry_run_jobs(workdir, "--configfile", config)
    finally:
        narrow.write_bytes(original)
        os.utime(narrow, ns=(before.st_atime_ns, before.st_mtime_ns))
    per_unit = len(SIZES)  # one seed
    assert {k: jobs.get(k, 0) for k in ("prepare_array_dataset", "representation_file", "feature_accuracy",
                                         "factor", "ridge_path", "feature_pool_spectrum", "theory",
                                         "noise_study")} == {
        "prepare_array_dataset": 0, "representation_file": 1, "feature_accuracy": 1, "factor": per_unit,
        "ridge_path": 1, "feature_pool_spectrum": 1, "theory": 1, "noise_study": 1}
    assert jobs["aggregate"] == 1 and jobs["representations"] == 1  # the summaries, once


def test_regression_targets_end_to_end(regression_run):
    workdir, arrays = regression_run
    table = check_ridge_rows(workdir, arrays, ("narrow",), regression=True)
    assert (table.n_classes == 2).all()  # two target columns
    noise = pd.read_parquet(workdir / f"{OUT}/tables/noise.parquet")
    assert set(noise.noise) == {"none", "gaussian"} and noise.test_error.isna().all()
    best = pd.read_csv(workdir / f"{OUT}/tables/best_risk.csv")
    assert best.test_error_at_best.isna().all() and (best.best_test_risk > 0).all()
    for name in ("learnability.csv", "ridge_selection.csv", "noise_accuracy.csv"):
        assert set(pd.read_csv(workdir / f"{OUT}/tables" / name).backbone) == {"narrow"}, name
    assert (workdir / f"{OUT}/figures/risk_vs_n.png").stat().st_size > 0


def test_bad_file_stops_before_any_job(tmp_path):
    """A file whose header shows the problem (here rows that do not match the labels) stops
    the run at the configuration check; every other bad input has its unit test
    (tests/test_array_files.py)."""
    ds, _ = write_files(tmp_path / "data", regression=False)
    np.savez(tmp_path / "data/wide.npz", emb=np.zeros((N - 1, 64)))
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(tiny_config(ds, regression=False)))
    proc = snakemake(tmp_path, "--configfile", str(tmp_path / "config.yaml"), "--cores", "1", check=False)
    assert proc.returncode != 0
    assert (f"invalid configuration at 'datasets.tiny': {tmp_path}/data/wide.npz: has {N - 1} rows, but the dataset "
            f"has {N} samples") in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()  # no job ran
