"""Datasets given as arrays and representations from files, as the workflow sees them:
their kernel units and the configuration checks a schema cannot express.

A dataset with ``source: arrays`` has labels (or real-valued targets), an optional
split and any number of ``representations``: embedding files whose rows are its
samples. Each representation becomes kernel units like a backbone's, with the
backbone's place taken by its name and the weights by :data:`FILE_WEIGHTS`, so
every table and figure shows it beside the backbones. ``workflow/rules/common.smk``
calls :func:`check_file_representations` before any job runs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from rmtlens.inputs.archives import DatasetError
from rmtlens.inputs.arrays import check_array_dataset_files
from rmtlens.workflow.config_checks import ConfigError

FILE_WEIGHTS = "file"
ARRAY_FIELDS = ("labels", "targets", "split", "representations")


def array_datasets(config: Mapping) -> list[str]:
    """Names of the datasets given as arrays (``source: arrays``), in config order."""
    return [name for name, ds in config["datasets"].items() if ds["source"] == "arrays"]


def array_dataset_pattern(config: Mapping) -> str:
    """A wildcard constraint (regex) matching exactly the datasets given as arrays; with
    none, a pattern that matches nothing."""
    return "|".join(re.escape(name) for name in array_datasets(config)) or "(?!)"


def array_dataset_files(config: Mapping, dataset: str) -> dict[str, str]:
    """The files a dataset given as arrays is prepared from: ``outcome`` (its labels or
    targets) and, when given, ``split``. Its representations are not among them: each is
    an input of its own job only."""
    ds = config["datasets"][dataset]
    files = {"outcome": str((ds.get("labels") or ds.get("targets"))["file"])}
    if ds.get("split"):
        files["split"] = str(ds["split"]["file"])
    return files


def array_dataset_fields(config: Mapping, dataset: str) -> dict:
    """The fields that decide a dataset's rows and targets (the dataset job's params): not
    its representations, display label or backbone list, so changing those reruns no
    dataset job and nothing downstream of it."""
    ds = config["datasets"][dataset]
    return {k: v for k, v in ds.items() if k not in ("label", "backbones", "representations")}


def representation_fields(config: Mapping, dataset: str, name: str) -> dict:
    """How a representation's file is read (``key``, ``columns``, ``sha256``: its job's
    params); the path is the job's input, the kernels are downstream's business."""
    rep = config["datasets"][dataset]["representations"][name]
    return {k: v for k, v in rep.items() if k not in ("file", "kernels")}


def representation_path(config: Mapping, dataset: str, name: str) -> str:
    """The path of a representation's embeddings file."""
    return str(config["datasets"][dataset]["representations"][name]["file"])


def file_representation_units(config: Mapping) -> list[dict[str, str]]:
    """Kernel units of every representation from a file: ``dataset``, ``backbone`` (the
    representation's name), ``weights`` (:data:`FILE_WEIGHTS`) and ``kernel``, in config order."""
    return [
        dict(dataset=name, backbone=rep_name, weights=FILE_WEIGHTS, kernel=kernel)
        for name in array_datasets(config)
        for rep_name, rep in (config["datasets"][name].get("representations") or {}).items()
        for kernel in rep.get("kernels", ["features"])
    ]


def _check_array_dataset(name: str, ds: Mapping, kind: str, read_files: bool) -> None:
    field = f"datasets.{name}"
    if (ds.get("labels") is None) == (ds.get("targets") is None):
        raise ConfigError(field, "a dataset given as arrays needs exactly one of `labels` (class labels) and "
                                 "`targets` (real values, for regression)")
    if ds.get("backbones"):
        raise ConfigError(f"{field}.backbones", "a dataset given as arrays has no images for a backbone to embed: "
                                                "give its representations as files under `representations`")
    reps = ds.get("representations") or {}
    if not reps:
        raise ConfigError(f"{field}.representations", "names no representation: give at least one embeddings "
                                                      "file (rows = the dataset's samples)")
    if ds.get("targets") is not None and kind != "regression":
        raise ConfigError("targets.kind", f"{kind!r} builds targets from class labels, but dataset {name} gives "
                                          "real-valued `targets`: set targets.kind to 'regression'")
    if ds.get("labels") is not None and kind == "regression":
        raise ConfigError("targets.kind", f"'regression' takes real-valued targets, but dataset {name} gives class "
                                          "`labels`: use a class kind (onehot_centered, onehot, binary)")
    for rep_name, rep in reps.items():
        if "entk" in rep.get("kernels", ["features"]):
            raise ConfigError(f"{field}.representations.{rep_name}.kernels",
                              "a representation from a file has no eNTK: the eNTK needs the network's parameters "
                              "and inputs, and a file holds only its embeddings; use kernels: [features]")
    if read_files:
        try:
            check_array_dataset_files(ds)
        except DatasetError as err:
            raise ConfigError(field, str(err)) from err


def check_file_representations(config: Mapping, read_files: bool = True) -> None:
    """Raise :class:`ConfigError` naming the field and the problem unless the datasets
    given as arrays, their representations and the sections that refer to them fit
    together (the schema checked each field alone).

    Checks: exactly one of labels and targets; no backbones, at least one
    representation, no eNTK of a representation; ``targets.kind`` is ``regression``
    exactly for real-valued targets, with no label flipping in the noise study;
    pretraining tasks, E6 and E8 (which need images) do not name such a dataset;
    array fields only on ``source: arrays``; something to analyse at all. With
    ``read_files`` the files' headers too (:func:`rmtlens.inputs.check_array_dataset_files`:
    rows, dtypes, shapes, the split's counts), so bad files stop the run before any job.
    """
    kind = config["targets"]["kind"]
    arrays = set(array_datasets(config))
    for name, ds in config["datasets"].items():
        if name in arrays:
            _check_array_dataset(name, ds, kind, read_files)
            continue
        for key in ARRAY_FIELDS:
            if ds.get(key):
                raise ConfigError(f"datasets.{name}.{key}", f"only a dataset given as arrays (source: arrays) has "
                                                            f"`{key}`; {name} has source {ds['source']!r}")
        if kind == "regression":
            raise ConfigError("targets.kind", f"'regression' takes real-valued targets, but dataset {name} "
                                              f"({ds['source']}) has class labels")
    for name, task in (config.get("source_tasks") or {}).items():
        if task["dataset"] in arrays:
            raise ConfigError(f"source_tasks.{name}.dataset", f"{task['dataset']!r} is given as arrays: it has no "
                                                              "images to pretrain on")
    for section, what in (("double_descent", "E6 (random features on pixels, embeddings of backbones)"),
                          ("linearisation", "E8 (a CNN trained on images)")):
        spec = config.get(section) or {}
        if spec.get("enabled") and spec.get("dataset") in arrays:
            raise ConfigError(f"{section}.dataset", f"{spec['dataset']!r} is given as arrays, and {what} needs a "
                                                    f"dataset of images: set {section}.enabled: false or name one")
    noise = config["targets"].get("noise") or {}
    if kind == "regression" and noise.get("enabled") and any(float(f) > 0 for f in noise.get("flip", [])):
        raise ConfigError("targets.noise.flip", "label flipping replaces class labels, and regression targets have "
                                                "none: set targets.noise.flip: [] (Gaussian noise still applies)")
    if not config.get("backbones") and not file_representation_units(config):
        raise ConfigError("backbones", "nothing to analyse: no backbone is configured and no dataset given as "
                                       "arrays names a representation")
