"""The cross-field configuration rules of rmtlens.workflow.check_config, one by one:
a configuration that breaks a rule gets a ConfigError naming the field, the shipped
presets pass. Configurations are validated against the schema first (defaults
filled in), as the rule files do."""

from __future__ import annotations

import copy
from functools import cache

import pytest
import yaml
from conftest import REPO
from snakemake.utils import validate

from rmtlens.workflow import ConfigError, check_config
from rmtlens.workflow.config_checks import CROSS_FIELD_CHECKS

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
PRESETS = ["config.yaml", "config/test.yaml", "config/cifar10.yaml", "config/cifar10-full.yaml", "config/paper.yaml"]


@cache
def _validated(preset: str) -> dict:
    cfg = yaml.safe_load((REPO / preset).read_text())
    validate(cfg, str(SCHEMA))
    return cfg


def config(preset: str = "config/test.yaml") -> dict:
    """A fresh, schema-validated copy of a shipped configuration."""
    return copy.deepcopy(_validated(preset))


def set_field(cfg: dict, dotted: str, value) -> dict:
    *parents, last = dotted.split(".")
    node = cfg
    for key in parents:
        node = node[key]
    node[last] = value
    return cfg


@pytest.mark.parametrize("preset", PRESETS)
def test_shipped_presets_pass(preset):
    check_config(config(preset), model_names=False)


def test_model_names_pass_and_a_typo_names_the_field_and_the_closest_name():
    check_config(config(), model_names=True)
    cfg = set_field(config(), "backbones.tvit.model", "resnet19")
    with pytest.raises(ConfigError, match="resnet18") as err:
        check_config(cfg)
    assert err.value.field == "backbones.tvit.model"
    check_config(cfg, model_names=False)  # the cross-field rules alone do not look at model names


# (what is changed, its new value, the field the error must name); each case breaks one rule
# of test.yaml (pool 120, grid 16..120 in 4 sizes, tresnet init+trained, tvit init).
CASES = [
    ("sample_sizes.max", 121, "sample_sizes.max"),
    ("sample_sizes.min", 121, "sample_sizes.min"),
    ("datasets.digits.backbones", ["tresnet", "resnet"], "datasets.digits.backbones"),
    ("source_tasks.digits_rest.dataset", "cifar", "source_tasks.digits_rest.dataset"),
    ("backbones.tresnet.pretrain.task", "nowhere", "backbones.tresnet.pretrain.task"),
    ("double_descent.dataset", "cifar", "double_descent.dataset"),
    ("double_descent.inputs", "tvit/trained", "double_descent.inputs"),  # tvit has no trained weights
    ("double_descent.inputs", "tvit", "double_descent.inputs"),  # not <backbone>/<weights>
    ("double_descent.linear.embedding", "vgg/init", "double_descent.linear.embedding"),
    ("double_descent.n", 121, "double_descent.n"),
    ("linearisation.dataset", "cifar", "linearisation.dataset"),
    ("linearisation.checkpoints", [0, 3], "linearisation.checkpoints"),
    ("ridge.min", 11.0, "ridge.min"),
    ("targets.kind", "binary", "targets.positive_classes"),
    ("targets.noise.n_max", 15, "targets.noise.n_max"),
]


@pytest.mark.parametrize("dotted, value, field", CASES, ids=[f"{c[0]}={c[1]}" for c in CASES])
def test_each_rule_names_the_field_it_rejects(dotted, value, field):
    cfg = set_field(config(), dotted, value)
    with pytest.raises(ConfigError) as err:
        check_config(cfg, model_names=False)
    assert err.value.field == field
    assert f"invalid configuration at '{field}'" in str(err.value)
    # exactly one rule objects: the others pass the same configuration
    objecting = []
    for check in CROSS_FIELD_CHECKS:
        try:
            check(cfg)
        except ConfigError:
            objecting.append(check.__name__)
    assert len(objecting) == 1, objecting


# The boundary of each range rule is allowed: the largest value that passes.
VALID_EDGES = [
    ("sample_sizes.max", 120),
    ("sample_sizes.min", 120),
    ("double_descent.n", 120),
    ("linearisation.checkpoints", [0, 2]),
    ("ridge.min", 10.0),
    ("targets.noise.n_max", 16),
    ("double_descent.inputs", "tresnet/trained"),
]


@pytest.mark.parametrize("dotted, value", VALID_EDGES, ids=[f"{c[0]}={c[1]}" for c in VALID_EDGES])
def test_values_at_the_edge_of_each_rule_pass(dotted, value):
    check_config(set_field(config(), dotted, value), model_names=False)


def test_disabled_studies_are_not_checked():
    cfg = config()
    set_field(cfg, "double_descent.enabled", False)
    set_field(cfg, "double_descent.dataset", "cifar")
    set_field(cfg, "linearisation.enabled", False)
    set_field(cfg, "linearisation.checkpoints", [0, 99])
    set_field(cfg, "targets.noise.enabled", False)
    set_field(cfg, "targets.noise.n_max", 1)
    check_config(cfg, model_names=False)


def test_binary_targets_with_positive_classes_pass():
    cfg = set_field(config(), "targets.kind", "binary")
    set_field(cfg, "targets.positive_classes", [0, 1])
    check_config(cfg, model_names=False)


def test_noise_n_max_is_checked_against_the_grid_not_the_configured_minimum():
    """With one sample size the grid is {max}: n_max must reach it, not just sample_sizes.min."""
    cfg = config()
    set_field(cfg, "sample_sizes.num", 1)
    set_field(cfg, "targets.noise.n_max", 60)  # above min (16), below the only n (120)
    with pytest.raises(ConfigError) as err:
        check_config(cfg, model_names=False)
    assert err.value.field == "targets.noise.n_max" and "120" in str(err.value)


def test_missing_input_files_are_named_with_the_option_that_gives_them(tmp_path):
    from rmtlens.workflow import check_input_files

    archive, weights = tmp_path / "images.tar.gz", tmp_path / "published.pth"
    cfg = config()
    set_field(cfg, "datasets.digits", dict(cfg["datasets"]["digits"], source="imagefolder", archive=str(archive)))
    set_field(cfg, "backbones.tvit.weights", ["init", "pretrained"])
    set_field(cfg, "backbones.tvit.pretrained_file", str(weights))
    with pytest.raises(ConfigError) as err:
        check_input_files(cfg)
    assert err.value.field == "datasets.digits.archive"
    assert str(archive) in str(err.value)
    assert "--config 'datasets={digits: {archive: /path/to/images.tar.gz}}'" in str(err.value)
    archive.write_bytes(b"")
    with pytest.raises(ConfigError) as err:
        check_input_files(cfg)
    assert err.value.field == "backbones.tvit.pretrained_file"
    assert "--config 'backbones={tvit: {pretrained_file: /path/to/published.pth}}'" in str(err.value)
    weights.write_bytes(b"")
    check_input_files(cfg)
    # a weights file is read only for 'pretrained' weights, an archive only for image folders
    weights.unlink()
    set_field(cfg, "backbones.tvit.weights", ["init"])
    check_input_files(cfg)
    archive.unlink()
    set_field(cfg, "datasets.digits.source", "digits")
    check_input_files(cfg)


def test_the_cifar10_preset_reads_its_archive_only():
    from rmtlens.workflow import check_input_files

    cfg = config("config/cifar10.yaml")
    asked = []
    check_input_files(cfg, exists=lambda path: asked.append(path) or True)
    assert asked == [cfg["datasets"]["cifar10"]["archive"]]
