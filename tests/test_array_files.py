"""Datasets and representations given as array files: readers, validators, the dataset's
rows, real-valued targets, and the configuration checks (no Snakemake run here)."""

from __future__ import annotations

import copy
import re

import numpy as np
import pandas as pd
import pytest
from safetensors.numpy import save_file

from conftest import REPO

from rmtlens.estimators import eigh_descending
from rmtlens.estimators.lowrank import feature_pool_spectrum
from rmtlens.inputs import (
    ArrayFileError,
    PreparedDataset,
    array_file_header,
    check_array_dataset_files,
    import_representation,
    make_targets,
    prepare_array_dataset,
    read_array_file,
    sha256_of,
    target_basis,
    target_map,
)
from rmtlens.studies.noise import noise_rows
from rmtlens.workflow import (
    ConfigError,
    RidgeProblem,
    array_dataset_fields,
    array_dataset_files,
    array_dataset_pattern,
    check_file_representations,
    file_representation_units,
    solve_gradient_flow,
    solve_ridge_path,
)

RNG = np.random.default_rng(0)
N, P = 30, 6


def write(path, array, **named):
    """Write ``array`` to ``path`` in the format its suffix names (npz/safetensors: key 'x' plus ``named``)."""
    suffix = path.suffix
    if suffix == ".npy":
        np.save(path, array)
    elif suffix == ".npz":
        np.savez(path, x=array, **named)
    elif suffix == ".safetensors":
        save_file({"x": np.ascontiguousarray(array), **named}, str(path))
    else:
        raise ValueError(suffix)
    return path


# ---------------------------------------------------------------- readers


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".safetensors"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_numpy_and_safetensors_files_read_back_exactly(tmp_path, suffix, dtype):
    array = (RNG.standard_normal((N, P)) * 10).astype(dtype)
    other = {"y": np.zeros(3, np.float32)} if suffix != ".npy" else {}
    path = write(tmp_path / f"emb{suffix}", array, **other)
    key = "x" if other else None
    header = array_file_header(path, key)
    assert header.shape == (N, P) and header.dtype == np.dtype(dtype)
    read = read_array_file(path, key)
    assert read.dtype == np.dtype(dtype) and np.array_equal(read, array)


def test_parquet_scalar_columns_list_column_and_selection(tmp_path):
    array = RNG.standard_normal((N, 3))
    frame = pd.DataFrame({"a": array[:, 0], "b": array[:, 1], "c": array[:, 2], "label": np.arange(N) % 4,
                          "emb": list(array.astype(np.float32))})
    path = tmp_path / "table.parquet"
    frame.to_parquet(path)
    # selected scalar columns, in the order given
    assert array_file_header(path, columns=["c", "a"]).shape == (N, 2)
    assert np.array_equal(read_array_file(path, columns=["c", "a"]), array[:, [2, 0]])
    # one scalar column: 1-d
    header = array_file_header(path, key="label")
    assert header.shape == (N,) and header.dtype.kind == "i"
    assert np.array_equal(read_array_file(path, key="label"), np.arange(N) % 4)
    # a list column: rows of p values
    header = array_file_header(path, key="emb")
    assert header.shape == (N, 3) and header.dtype == np.float32
    assert np.array_equal(read_array_file(path, key="emb"), array.astype(np.float32))
    # every column of a numeric-only table
    numeric = tmp_path / "numeric.parquet"
    frame[["a", "b", "c"]].to_parquet(numeric)
    assert np.array_equal(read_array_file(numeric), array)


# ---------------------------------------------------------------- bad input: one clear error each


def test_missing_unknown_and_ambiguous_files_name_the_file(tmp_path):
    with pytest.raises(ArrayFileError, match=r"nope\.npy: file does not exist"):
        array_file_header(tmp_path / "nope.npy")
    (tmp_path / "emb.csv").write_text("1,2\n")
    with pytest.raises(ArrayFileError, match=r"emb\.csv: unknown array format '\.csv'"):
        array_file_header(tmp_path / "emb.csv")
    path = write(tmp_path / "two.npz", np.zeros((N, P)), y=np.zeros(N))
    with pytest.raises(ArrayFileError, match=r"two\.npz: holds 2 arrays .*name one with `key`"):
        array_file_header(path)
    with pytest.raises(ArrayFileError, match=r"two\.npz: has no array 'z'"):
        array_file_header(path, "z")
    (tmp_path / "broken.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(ArrayFileError, match=r"broken\.npy: cannot read it as \.npy"):
        array_file_header(tmp_path / "broken.npy")


def test_checksum_mismatch_names_both_digests(tmp_path):
    path = write(tmp_path / "emb.npy", np.ones((N, P)))
    good = sha256_of(path)
    assert np.array_equal(read_array_file(path, sha256=good.upper()), np.ones((N, P)))
    with pytest.raises(ArrayFileError, match=rf"emb\.npy: checksum mismatch: expected sha256 {'0' * 64}, got {good}"):
        read_array_file(path, sha256="0" * 64)


def dataset_spec(tmp_path, n_pool=12, n_test=8, split=None, labels=None, **reps):
    labels = np.arange(N) % 3 if labels is None else labels
    spec = {"source": "arrays", "labels": {"file": str(write(tmp_path / "labels.npy", labels))},
            "n_pool": n_pool, "n_test": n_test, "seed": 0,
            "representations": {name: {"file": str(path)} for name, path in reps.items()}}
    if split is not None:
        spec["split"] = {"file": str(write(tmp_path / "split.npy", split))}
    return spec


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((N - 1, P)), rf"has {N - 1} rows, but the dataset has {N} samples"),
        (np.zeros(N), r"embeddings are 1-d with shape \(30,\).*shape \(N, p\)"),
        (np.zeros((N, 0)), r"embeddings are empty, shape \(30, 0\)"),
        (np.zeros((N, 2, 3)), r"embeddings are 3-d .*flatten or pool"),
        (np.array([["a"] * P] * N), r"embeddings must be numeric, got dtype <U1"),
        (np.zeros((N, P), np.complex128), r"embeddings must be numeric, got dtype complex128"),
    ],
)
def test_bad_embeddings_stop_at_the_header_check(tmp_path, array, message):
    spec = dataset_spec(tmp_path, emb=write(tmp_path / "emb.npy", array))
    with pytest.raises(ArrayFileError, match=r"emb\.npy: " + message):
        check_array_dataset_files(spec)


def test_empty_embeddings_file(tmp_path):
    spec = dataset_spec(tmp_path, emb=write(tmp_path / "emb.npy", np.zeros((0, P))))
    with pytest.raises(ArrayFileError, match=r"emb\.npy: embeddings are empty, shape \(0, 6\)"):
        check_array_dataset_files(spec)


def test_object_npy_is_refused_without_unpickling(tmp_path):
    path = tmp_path / "emb.npy"
    np.save(path, np.array([object()] * N, dtype=object).reshape(N, 1), allow_pickle=True)
    spec = dataset_spec(tmp_path, emb=path)
    with pytest.raises(ArrayFileError, match=r"emb\.npy: embeddings must be numeric, got dtype object"):
        check_array_dataset_files(spec)
    with pytest.raises(ArrayFileError, match=r"emb\.npy: holds Python objects"):
        read_array_file(path)


@pytest.mark.parametrize("bad, count, first", [(np.nan, 1, 4), (np.inf, 2, 4), (-np.inf, 1, 17)])
def test_nan_or_infinite_embeddings_stop_the_job_that_reads_them(tmp_path, bad, count, first):
    array = RNG.standard_normal((N, P))
    array[first, 2] = bad
    if count == 2:
        array[first + 1, 0] = bad
    spec = dataset_spec(tmp_path, emb=write(tmp_path / "emb.npy", array))
    check_array_dataset_files(spec)  # headers are fine: values are the job's to check
    data = prepare_array_dataset(spec)
    with pytest.raises(ArrayFileError, match=rf"emb\.npy: embeddings contain {count} NaN or infinite values in "
                                             rf"{count} rows \(first at row {first}\)"):
        import_representation(spec["representations"]["emb"]["file"], {}, data)


@pytest.mark.parametrize("split, side", [(np.zeros(N, bool), "test"), (np.ones(N, bool), "pool")])
def test_split_that_leaves_pool_or_test_empty(tmp_path, split, side):
    spec = dataset_spec(tmp_path, split=split)
    with pytest.raises(ArrayFileError, match=rf"split\.npy: the split leaves the {side} set empty"):
        check_array_dataset_files(spec)
    with pytest.raises(ArrayFileError, match=rf"split\.npy: the split leaves the {side} set empty"):
        prepare_array_dataset(spec)


def test_split_values_rows_and_sizes(tmp_path):
    with pytest.raises(ArrayFileError, match=r"split\.npy: split values must be 0 \(pool\) or 1 \(test\), got \[2\]"):
        check_array_dataset_files(dataset_spec(tmp_path, split=np.arange(N) % 3))
    with pytest.raises(ArrayFileError, match=rf"split\.npy: has {N - 2} rows, but the dataset has {N} samples"):
        check_array_dataset_files(dataset_spec(tmp_path, split=np.zeros(N - 2, bool)))
    split = np.arange(N) < 20  # 20 test rows, 10 pool rows
    with pytest.raises(ArrayFileError, match=r"split\.npy: n_pool = 12 exceeds the 10 pool rows of the split"):
        check_array_dataset_files(dataset_spec(tmp_path, split=split))
    with pytest.raises(ArrayFileError, match=r"labels\.npy: n_pool \+ n_test = 35 exceeds its 30 samples"):
        check_array_dataset_files(dataset_spec(tmp_path, n_pool=20, n_test=15))


def test_labels_must_be_classes(tmp_path):
    with pytest.raises(ArrayFileError, match=r"labels\.npy: labels must be integers or strings, got dtype float64"):
        check_array_dataset_files(dataset_spec(tmp_path, labels=np.linspace(0, 1, N)))
    with pytest.raises(ArrayFileError, match=r"labels\.npy: labels must be >= 0 \(class indices\), got -1"):
        prepare_array_dataset(dataset_spec(tmp_path, labels=np.arange(N) - 1))
    with pytest.raises(ArrayFileError, match=r"labels\.npy: labels must be 1-d"):
        check_array_dataset_files(dataset_spec(tmp_path, labels=np.zeros((N, 2), int)))


def test_nan_targets_are_refused(tmp_path):
    values = RNG.standard_normal((N, 2))
    values[7, 1] = np.nan
    spec = {"source": "arrays", "targets": {"file": str(write(tmp_path / "y.npy", values))}, "n_pool": 10,
            "n_test": 5, "seed": 0}
    check_array_dataset_files(spec)
    with pytest.raises(ArrayFileError, match=r"y\.npy: targets contain 1 NaN or infinite values in 1 rows "
                                             r"\(first at row 7\)"):
        prepare_array_dataset(spec)


# ---------------------------------------------------------------- the dataset's rows


def test_seeded_split_draws_disjoint_pool_and_test_as_for_digits(tmp_path):
    emb = RNG.standard_normal((N, P)).astype(np.float32)
    spec = dataset_spec(tmp_path, emb=write(tmp_path / "emb.npy", emb))
    data = prepare_array_dataset(spec)
    perm = np.random.default_rng(0).permutation(N)  # the documented rule: one seeded permutation
    expected = np.concatenate([np.sort(perm[:12]), np.sort(perm[12:20])])
    assert np.array_equal(data.file_rows, expected)
    assert data.images is None and data.n_pool == 12 and data.n_test == 8 and data.file_row_count == N
    assert np.array_equal(data.labels, (np.arange(N) % 3)[expected]) and data.classes == ("0", "1", "2")
    rows = import_representation(spec["representations"]["emb"]["file"], {}, data)
    assert rows.dtype == np.float32 and np.array_equal(rows, emb[expected])
    again = PreparedDataset.from_arrays(data.to_arrays())  # the workflow's npz round trip
    assert np.array_equal(again.file_rows, data.file_rows) and again.file_row_count == N


def test_given_split_draws_pool_from_pool_rows_and_test_from_test_rows(tmp_path):
    split = np.array(["train", "test", "pool", "TEST", "pool"] * 6)  # 18 pool rows, 12 test rows
    spec = dataset_spec(tmp_path, n_pool=18, n_test=5, split=split,
                        emb=write(tmp_path / "emb.npy", np.arange(N * 2, dtype=np.uint8).reshape(N, 2)))
    assert check_array_dataset_files(spec) == {"rows": N, "pool_rows": 18, "test_rows": 12}
    data = prepare_array_dataset(spec)
    is_test = np.char.lower(split) == "test"
    pool_rows, test_rows = data.file_rows[:18], data.file_rows[18:]
    assert np.array_equal(pool_rows, np.flatnonzero(~is_test))  # all of them, in file order
    assert len(test_rows) == 5 and is_test[test_rows].all() and np.all(np.diff(test_rows) > 0)
    rows = import_representation(spec["representations"]["emb"]["file"], {}, data)
    assert rows.dtype == np.float64 and np.array_equal(rows, np.arange(N * 2).reshape(N, 2)[data.file_rows])


def test_string_labels_become_sorted_classes(tmp_path):
    names = np.array(["cat", "dog", "ant"] * 10)
    data = prepare_array_dataset(dataset_spec(tmp_path, labels=names))
    assert data.classes == ("ant", "cat", "dog")
    assert [data.classes[i] for i in data.labels] == list(names[data.file_rows])


# ---------------------------------------------------------------- real-valued targets


def test_regression_targets_are_the_values_and_their_map_is_the_identity(tmp_path):
    values = RNG.standard_normal((N, 2))
    frame = pd.DataFrame({"u": values[:, 0], "v": values[:, 1], "w": 1.0})
    frame.to_parquet(tmp_path / "y.parquet")
    spec = {"source": "arrays", "targets": {"file": str(tmp_path / "y.parquet"), "columns": ["u", "v"]},
            "n_pool": 10, "n_test": 5, "seed": 3}
    data = prepare_array_dataset(spec)
    assert data.regression and data.labels is None and data.classes == ("u", "v")
    Y = data.targets("regression")
    assert np.array_equal(Y, values[data.file_rows])
    assert np.array_equal(target_map(2, "regression"), np.eye(2))
    assert np.array_equal(target_basis(Y, 2) @ target_map(2, "regression"), Y)
    with pytest.raises(ValueError, match="does not fit this dataset, which has real-valued targets"):
        data.targets("onehot_centered")
    with pytest.raises(ValueError, match="'regression' takes real-valued"):
        make_targets(np.arange(4), 4, "regression")
    # class kinds: the map's rows are the class targets
    labels = np.array([2, 0, 1, 1])
    assert np.array_equal(target_basis(labels, 3) @ target_map(3, "onehot_centered"),
                          make_targets(labels, 3, "onehot_centered"))


def test_pool_spectrum_of_real_targets_matches_the_dense_eigenbasis():
    """Thin (p x p Gram) path with real-valued targets: the kept directions' coefficients
    equal Vᵀ Y of the dense eigendecomposition (up to sign), and the total energy is ||Y||²."""
    n, p = 80, 7
    phi = RNG.standard_normal((n, p))
    Y = RNG.standard_normal((n, 2))
    D, proj, method = feature_pool_spectrum(phi, Y, 2, rcond=1e-10)
    assert method == "gram"
    d, V = eigh_descending(phi @ phi.T / p)
    dense = V.T @ Y
    np.testing.assert_allclose(D[:p], d[:p], rtol=1e-10)  # round-off of two eigensolvers
    np.testing.assert_allclose(np.abs(proj[:p]), np.abs(dense[:p]), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(proj.T @ proj, Y.T @ Y, rtol=1e-10)


def test_regression_ridge_path_and_noise_rows_have_no_class_error():
    n, m = 20, 10
    K = RNG.standard_normal((n + m, 5))
    K = K @ K[:n].T
    d, U = eigh_descending(K[:n])
    Y = RNG.standard_normal((n + m, 2))
    prob = RidgeProblem(d, U, np.arange(n), Y[:n], Y[n:], K[n:], 1.0, regression=True)
    path = solve_ridge_path(prob, np.array([1e-3, 1e-1]), rcond=1e-10)
    assert np.isnan(path["test_error"]).all() and np.isfinite(path["test_risk"]).all()
    # the risk is the direct solve's
    alpha = np.linalg.solve(K[:n] + n * 1e-1 * np.eye(n), Y[:n])
    np.testing.assert_allclose(path["test_risk"][1], np.mean(np.sum((K[n:] @ alpha - Y[n:]) ** 2, 1)), rtol=1e-9)
    flow, _ = solve_gradient_flow(prob, np.array([1.0, 10.0]), 1.0, rcond=1e-10)
    assert np.isnan(flow["test_error"]).all() and np.isnan(flow["ridge_test_error"]).all()
    assert np.isfinite(flow["test_risk"]).all()
    targets = {"kind": "regression", "positive_classes": []}
    rows = noise_rows(prob, None, None, 2, targets, [("none", 0.0), ("gaussian", 0.5)], 1.0, [1e-3], 0, 0, 1e-10)
    assert len(rows) == 2 and rows["test_error"].isna().all()
    with pytest.raises(ValueError, match="label flipping replaces class labels"):
        noise_rows(prob, None, None, 2, targets, [("flip", 0.1)], 1.0, [1e-3], 0, 0, 1e-10)


# ---------------------------------------------------------------- configuration checks


def base_config(tmp_path, **dataset):
    emb = write(tmp_path / "emb.npy", RNG.standard_normal((N, P)))
    ds = dataset_spec(tmp_path, emb=emb)
    for rep in ds["representations"].values():
        rep["kernels"] = ["features"]
    ds.update(dataset)
    return {
        "datasets": {"mine": ds},
        "backbones": {},
        "source_tasks": {},
        "targets": {"kind": "onehot_centered", "positive_classes": [], "noise": {"enabled": True, "flip": [0.1]}},
        "double_descent": {"enabled": False},
        "linearisation": {"enabled": False},
    }


def test_config_units_and_a_valid_config(tmp_path):
    cfg = base_config(tmp_path)
    check_file_representations(cfg)
    assert file_representation_units(cfg) == [dict(dataset="mine", backbone="emb", weights="file", kernel="features")]


def test_job_inputs_and_params_leave_representations_to_their_own_jobs(tmp_path):
    """The dataset job reads the labels (and split) only, and its params leave out the
    representations: adding or changing one must not rerun the dataset and all downstream."""
    import re as regex

    cfg = base_config(tmp_path, split={"file": "s.npy"}, label="shown")
    cfg["datasets"]["img"] = {"source": "digits"}
    assert array_dataset_files(cfg, "mine") == {"outcome": str(tmp_path / "labels.npy"), "split": "s.npy"}
    assert set(array_dataset_fields(cfg, "mine")) == {"source", "labels", "split", "n_pool", "n_test", "seed"}
    pattern = array_dataset_pattern(cfg)
    assert regex.fullmatch(pattern, "mine") and not regex.fullmatch(pattern, "img")
    assert not regex.fullmatch(array_dataset_pattern({"datasets": {"img": {"source": "digits"}}}), "img")


def mutate(cfg, edit):
    cfg = copy.deepcopy(cfg)
    edit(cfg)
    return cfg


@pytest.mark.parametrize(
    "edit, field, message",
    [
        (lambda c: c["datasets"]["mine"]["representations"]["emb"].update(kernels=["features", "entk"]),
         "datasets.mine.representations.emb.kernels", "a representation from a file has no eNTK"),
        (lambda c: c["datasets"]["mine"].update(backbones=["resnet18"]), "datasets.mine.backbones",
         "has no images for a backbone to embed"),
        (lambda c: c["datasets"]["mine"].update(representations={}), "datasets.mine.representations",
         "names no representation"),
        (lambda c: c["datasets"]["mine"].update(targets=c["datasets"]["mine"]["labels"]), "datasets.mine",
         "exactly one of `labels`"),
        (lambda c: c["targets"].update(kind="regression"), "targets.kind",
         "'regression' takes real-valued targets, but dataset mine gives class `labels`"),
        (lambda c: c.update(source_tasks={"t": {"dataset": "mine"}}), "source_tasks.t.dataset",
         "no images to pretrain on"),
        (lambda c: c.update(double_descent={"enabled": True, "dataset": "mine"}), "double_descent.dataset",
         "needs a dataset of images"),
        (lambda c: c.update(linearisation={"enabled": True, "dataset": "mine"}), "linearisation.dataset",
         "needs a dataset of images"),
        (lambda c: c["datasets"].update(img={"source": "digits", "split": {"file": "x.npy"}}),
         "datasets.img.split", "only a dataset given as arrays"),
        (lambda c: c["datasets"]["mine"]["representations"]["emb"].update(file=str(c["datasets"]["mine"]["labels"]["file"])),
         "datasets.mine", r"labels\.npy: embeddings are 1-d"),
    ],
)
def test_config_checks_name_the_field_and_the_problem(tmp_path, edit, field, message):
    cfg = mutate(base_config(tmp_path), edit)
    with pytest.raises(ConfigError, match=rf"invalid configuration at '{field}': .*{message}"):
        check_file_representations(cfg)


def test_regression_config_checks(tmp_path):
    y = write(tmp_path / "y.npy", RNG.standard_normal((N, 2)))
    cfg = base_config(tmp_path)
    del cfg["datasets"]["mine"]["labels"]
    cfg["datasets"]["mine"]["targets"] = {"file": str(y)}
    with pytest.raises(ConfigError, match=r"'targets.kind': 'onehot_centered' builds targets from class labels"):
        check_file_representations(cfg)
    cfg["targets"]["kind"] = "regression"
    with pytest.raises(ConfigError, match=r"'targets.noise.flip': label flipping replaces class labels"):
        check_file_representations(cfg)
    cfg["targets"]["noise"]["flip"] = [0]
    check_file_representations(cfg)
    cfg["datasets"]["img"] = {"source": "digits"}
    with pytest.raises(ConfigError, match=r"'targets.kind': 'regression' .* dataset img \(digits\) has class labels"):
        check_file_representations(cfg)


def test_nothing_to_analyse_and_files_unread_on_request(tmp_path):
    cfg = base_config(tmp_path)
    missing = mutate(cfg, lambda c: c["datasets"]["mine"]["representations"]["emb"].update(file="gone.npy"))
    check_file_representations(missing, read_files=False)  # cluster jobs: the main process read them
    with pytest.raises(ConfigError, match=r"'datasets.mine': gone\.npy: file does not exist"):
        check_file_representations(missing)
    cfg["datasets"] = {"img": {"source": "digits"}}
    with pytest.raises(ConfigError, match="'backbones': nothing to analyse"):
        check_file_representations(cfg)


def test_readme_own_embeddings_example_runs_as_is(tmp_path, monkeypatch, capsys):
    section = (REPO / "README.md").read_text().split("## Your own embeddings", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1 and "read_array_file" in blocks[0] and "assert" in blocks[0]
    monkeypatch.chdir(tmp_path)  # the example writes its files to the working directory
    exec(compile(blocks[0], "README.md (Your own embeddings)", "exec"), {"__name__": "readme_example"})
    out = capsys.readouterr().out
    assert "pixels: GCV picks" in out and "projection: GCV picks" in out
