"""Configuration checks the schema cannot express: cross-field ranges and names.

Snakemake validates a configuration against ``workflow/schemas/config.schema.yaml``
(types, ranges, required fields, defaults); :func:`check_config` then checks what
spans several fields, on the validated configuration (defaults filled in). Each
rule is a small function of the configuration that raises :class:`ConfigError`
naming the offending field; the rule files call :func:`check_config` once, before
any job is planned, and :func:`check_input_files` for the files a configuration names
(image archives, weights files), which must exist whatever results earlier runs left.
"""

from __future__ import annotations

import os
from pathlib import PurePath
from typing import Any, Callable, Mapping

from rmtlens.estimators import sample_size_grid

Config = Mapping[str, Any]


class ConfigError(ValueError):
    """A configuration value that contradicts another; ``field`` is its dotted path."""

    def __init__(self, field: str, message: str):
        super().__init__(f"invalid configuration at '{field}': {message}")
        self.field = field


def _largest_n(cfg: Config, dataset: str) -> int:
    return cfg["sample_sizes"]["max"] or cfg["datasets"][dataset]["n_pool"]


def sample_sizes(cfg: Config, dataset: str) -> list[int]:
    """The sample-size grid of ``dataset``: ``sample_sizes`` with ``max: null`` meaning its pool."""
    grid = cfg["sample_sizes"]
    return sample_size_grid(grid["min"], _largest_n(cfg, dataset), grid["num"])


def check_sample_sizes(cfg: Config) -> None:
    """``sample_sizes.max`` within every dataset's pool, ``sample_sizes.min`` at most the largest n."""
    n_max = cfg["sample_sizes"]["max"]
    for name, ds in cfg["datasets"].items():
        if n_max is not None and n_max > ds["n_pool"]:
            raise ConfigError("sample_sizes.max", f"{n_max} exceeds datasets.{name}.n_pool = {ds['n_pool']}")
        if cfg["sample_sizes"]["min"] > _largest_n(cfg, name):
            raise ConfigError(
                "sample_sizes.min",
                f"{cfg['sample_sizes']['min']} exceeds the largest sample size {_largest_n(cfg, name)} of dataset {name}",
            )


def check_dataset_backbones(cfg: Config) -> None:
    """Every name in ``datasets.<name>.backbones`` is a configured backbone."""
    for name, ds in cfg["datasets"].items():
        for b in ds.get("backbones") or []:
            if b not in cfg["backbones"]:
                raise ConfigError(f"datasets.{name}.backbones", f"{b!r} is not a name under backbones")


def check_source_tasks(cfg: Config) -> None:
    """Every source task draws from a configured dataset; every backbone with ``trained``
    weights pretrains on a configured source task."""
    for name, task in (cfg.get("source_tasks") or {}).items():
        if task["dataset"] not in cfg["datasets"]:
            raise ConfigError(f"source_tasks.{name}.dataset", f"{task['dataset']!r} is not a name under datasets")
    for name, bb in cfg["backbones"].items():
        if "trained" in bb["weights"] and bb["pretrain"]["task"] not in (cfg.get("source_tasks") or {}):
            raise ConfigError(
                f"backbones.{name}.pretrain.task", f"{bb['pretrain']['task']!r} is not a name under source_tasks"
            )


def _check_study_dataset(cfg: Config, study: str) -> None:
    if cfg[study]["dataset"] not in cfg["datasets"]:
        raise ConfigError(f"{study}.dataset", f"{cfg[study]['dataset']!r} is not a name under datasets")


def check_double_descent(cfg: Config) -> None:
    """When enabled: a configured dataset, embeddings named ``<backbone>/<weights>`` of a
    configured backbone (``inputs`` may also be ``pixels``), ``n`` within the pool."""
    dd = cfg["double_descent"]
    if not dd["enabled"]:
        return
    _check_study_dataset(cfg, "double_descent")
    for field, value in (("inputs", dd["inputs"]), ("linear.embedding", dd["linear"]["embedding"])):
        if field == "inputs" and value == "pixels":
            continue
        backbone, _, weights = value.partition("/")
        if backbone not in cfg["backbones"] or weights not in cfg["backbones"][backbone]["weights"]:
            raise ConfigError(
                f"double_descent.{field}", f"{value!r} is not '<backbone>/<weights>' of a configured backbone"
            )
    if dd["n"] > cfg["datasets"][dd["dataset"]]["n_pool"]:
        raise ConfigError("double_descent.n", f"{dd['n']} exceeds the pool of {dd['dataset']}")


def check_linearisation(cfg: Config) -> None:
    """When enabled: a configured dataset and checkpoints within the training epochs."""
    lin = cfg["linearisation"]
    if not lin["enabled"]:
        return
    _check_study_dataset(cfg, "linearisation")
    if max(lin["checkpoints"]) > lin["epochs"]:
        raise ConfigError(
            "linearisation.checkpoints", f"{max(lin['checkpoints'])} exceeds linearisation.epochs = {lin['epochs']}"
        )


def check_ridge(cfg: Config) -> None:
    """``ridge.min`` at most ``ridge.max``."""
    if cfg["ridge"]["min"] > cfg["ridge"]["max"]:
        raise ConfigError("ridge.min", f"{cfg['ridge']['min']} exceeds ridge.max = {cfg['ridge']['max']}")


def check_targets(cfg: Config) -> None:
    """Binary targets name their positive classes; the noise study's ``n_max`` keeps at
    least the smallest sample size of every dataset."""
    targets = cfg["targets"]
    if targets["kind"] == "binary" and not targets["positive_classes"]:
        raise ConfigError("targets.positive_classes", "kind 'binary' needs the classes labelled +1")
    noise = targets["noise"]
    if noise["enabled"] and noise["n_max"] is not None:
        for name in cfg["datasets"]:
            n_min = sample_sizes(cfg, name)[0]
            if noise["n_max"] < n_min:
                raise ConfigError(
                    "targets.noise.n_max", f"{noise['n_max']} is below the smallest sample size {n_min} of dataset {name}"
                )


def check_model_names(cfg: Config) -> None:
    """Every ``backbones.<name>.model`` is a timm model (or a test model) name; the
    message lists the closest names. Imports timm only for a name its source does not
    register (:mod:`rmtlens.inputs.model_names`)."""
    from rmtlens.inputs import check_model_name

    for name, bb in cfg["backbones"].items():
        try:
            check_model_name(bb["model"])
        except ValueError as err:
            raise ConfigError(f"backbones.{name}.model", str(err)) from None


#: The cross-field rules, in the order :func:`check_config` applies them (model names last).
CROSS_FIELD_CHECKS: tuple[Callable[[Config], None], ...] = (
    check_sample_sizes,
    check_dataset_backbones,
    check_source_tasks,
    check_double_descent,
    check_linearisation,
    check_ridge,
    check_targets,
)


def input_files(cfg: Config) -> list[tuple[tuple[str, ...], str]]:
    """Files the configuration names and its run reads, as ``(key path, file path)``: the
    ``archive`` of every ``imagefolder`` dataset and the ``pretrained_file`` of every
    backbone with ``pretrained`` weights. Paths are as given (relative ones are relative to
    the working directory)."""
    files = [
        (("datasets", name, "archive"), ds["archive"])
        for name, ds in cfg["datasets"].items()
        if ds["source"] == "imagefolder" and ds.get("archive")
    ]
    files += [
        (("backbones", name, "pretrained_file"), bb["pretrained_file"])
        for name, bb in cfg["backbones"].items()
        if "pretrained" in bb["weights"] and bb.get("pretrained_file")
    ]
    return files


def config_option(keys: tuple[str, ...], value: str) -> str:
    """The ``--config`` option that sets the nested field ``keys`` to ``value``, e.g.
    ``--config 'datasets={cifar10: {archive: /path/to/x.tar.gz}}'``."""
    text = value
    for key in reversed(keys[1:]):
        text = f"{{{key}: {text}}}"
    return f"--config '{keys[0]}={text}'"


def check_input_files(cfg: Config, exists: Callable[[str], bool] = os.path.isfile) -> None:
    """Every file of :func:`input_files` exists (``exists``: a predicate on paths); else a
    :class:`ConfigError` naming the field, the file and the ``--config`` option that gives
    its path. Checked before any job, whatever results of earlier runs exist."""
    for keys, path in input_files(cfg):
        if not exists(path):
            option = config_option(keys, f"/path/to/{PurePath(path).name}")
            raise ConfigError(
                ".".join(keys), f"the file {path!r} does not exist: give its path on the command line, e.g. {option}"
            )


def check_config(cfg: Config, *, model_names: bool = True) -> None:
    """Apply every cross-field rule to a schema-validated configuration ``cfg``.

    Raises :class:`ConfigError` naming the first offending field. ``model_names=False``
    skips :func:`check_model_names` (a cluster job re-reading the Snakefile needs no
    second check).
    """
    for check in CROSS_FIELD_CHECKS:
        check(cfg)
    if model_names:
        check_model_names(cfg)
