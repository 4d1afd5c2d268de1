"""A wrong or missing config field stops the run before any job, naming the field.

The schema's rules are checked in-process with the validator the workflow uses
(``snakemake.utils.validate``), the cross-field rules in ``test_config_checks.py``; a few
cases and the shipped presets go through the Snakemake CLI (marked ``workflow``) to show
that the workflow applies both before any job."""

from __future__ import annotations

import copy

import pytest
import yaml
from conftest import REPO, snakemake
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from rmtlens.workflow import ConfigError, check_config

BASE = yaml.safe_load((REPO / "config" / "test.yaml").read_text())
SCHEMA = str(REPO / "workflow" / "schemas" / "config.schema.yaml")


def mutate(path, value):
    cfg = copy.deepcopy(BASE)
    *parents, last = path
    node = cfg
    for key in parents:
        node = node[key]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return cfg


def validation_error(cfg) -> str:
    """The message with which the workflow's checks (schema, then cross-field rules and model
    names) reject ``cfg``."""
    try:
        validate(cfg, SCHEMA)
        check_config(cfg)
    except (WorkflowError, ConfigError) as err:
        return str(err)
    raise AssertionError("the configuration was accepted")


CASES = [
    (("datasets", "digits", "n_pool"), "many", "n_pool"),
    (("datasets", "digits", "n_pool"), KeyError, "n_pool"),
    (("datasets", "digits", "source"), "mnist", "source"),
    (("backbones", "tresnet", "weights"), ["imagenet"], "weights"),
    (("backbones", "tresnet", "model"), "resnet_does_not_exist", "backbones.tresnet.model"),
    (("backbones", "tvit", "model"), "resnet19", "Closest timm names: resnet18"),
    (("sample_sizes", "max"), 10_000, "sample_sizes.max"),
    (("ridge", "num"), 0, "num"),
    (("ridge", "min"), 100.0, "ridge.min"),
    (("seeds",), [], "seeds"),
    (("targets", "kind"), "binary", "targets.positive_classes"),
    (("ridge", "lamda"), 1.0, "lamda"),
    (("backbones", "tresnet", "pretrain", "task"), "nowhere", "backbones.tresnet.pretrain.task"),
    (("backbones", "tresnet", "pretrain"), KeyError, "pretrain"),
    (("source_tasks", "digits_rest", "dataset"), "cifar", "source_tasks.digits_rest.dataset"),
    (("datasets", "digits", "backbones"), ["tresnet", "resnet"], "datasets.digits.backbones"),
    (("datasets", "digits", "source"), "imagefolder", "archive"),
]


@pytest.mark.parametrize("path, value, field", CASES, ids=[".".join(c[0]) + f"={c[1]}" for c in CASES])
def test_bad_config_is_rejected_naming_the_field(path, value, field):
    assert field in validation_error(mutate(path, value))


# One schema error, one cross-field error and one model name through the CLI.
CLI_CASES = [CASES[0], CASES[8], CASES[5]]


@pytest.mark.workflow
@pytest.mark.parametrize("path, value, field", CLI_CASES, ids=[".".join(c[0]) + f"={c[1]}" for c in CLI_CASES])
def test_bad_config_stops_before_any_job(tmp_path, path, value, field):
    config_file = tmp_path / "bad.yaml"
    config_file.write_text(yaml.safe_dump(mutate(path, value)))
    proc = snakemake(tmp_path, "--configfile", str(config_file), "--cores", "1", check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert field in output, output[-3000:]
    assert not (tmp_path / "results").exists()


@pytest.mark.workflow
@pytest.mark.parametrize(
    "preset", ["config.yaml", "config/test.yaml", "config/cifar10.yaml", "config/cifar10-full.yaml", "config/paper.yaml"]
)
def test_every_preset_validates_and_plans(tmp_path, preset):
    """Each shipped configuration passes validation and yields a DAG (dry run)."""
    args = ["--configfile", str(REPO / preset), "-n"]
    if "cifar10" in preset:  # its archive path is given on the command line
        args += ["--config", f"datasets={{cifar10: {{archive: {REPO / 'README.md'}}}}}"]
    proc = snakemake(tmp_path, *args, check=False)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "Job stats:" in proc.stdout + proc.stderr


@pytest.mark.workflow
def test_a_preset_whose_archive_is_missing_stops_naming_it_and_the_option(tmp_path):
    """cifar10-full without the archive's path (its placeholder does not exist here): a dry
    run fails before any job, naming the file and the --config that gives it."""
    proc = snakemake(tmp_path, "--configfile", str(REPO / "config" / "cifar10-full.yaml"), "-n", check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "datasets.cifar10.archive" in output and "'resources/cifar10-jpeg.tar.gz' does not exist" in output, output
    assert "--config 'datasets={cifar10: {archive: /path/to/cifar10-jpeg.tar.gz}}'" in output, output
