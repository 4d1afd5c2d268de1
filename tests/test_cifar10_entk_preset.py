"""config/cifar10-entk.yaml as a dry run: every eNTK tile, both kernels of both
weights, one pool eigendecomposition per eNTK, every study, and declared memory within the
budget the measured run gives the scheduler."""

from __future__ import annotations

import math
import re

import pytest
import yaml
from conftest import REPO, snakemake

from rmtlens.estimators import ridge_grid, sample_size_grid

pytestmark = pytest.mark.workflow

PRESET = REPO / "config" / "cifar10-entk.yaml"
MEM_MB = 11000  # --resources mem_mb of bench/cifar10_entk_run.py: 12 GB less the Snakemake process
STUDIES = ["noise_study", "noise_summary", "ridge_selection", "learnability", "scaling", "theory",
           "estimators", "representations", "local_law", "aggregate", "figures", "learning_dynamics"]


def computed_tiles(n_pool, n_test, tile):
    """Tiles a job computes, counted by hand: all row x column blocks less the pool tiles
    strictly above the diagonal whose rows lie wholly in the pool (their mirror is computed)."""
    row_blocks, col_blocks = math.ceil((n_pool + n_test) / tile), math.ceil(n_pool / tile)
    pool_row_blocks = n_pool // tile  # row blocks ending inside the pool
    mirrored = sum(col_blocks - 1 - i for i in range(min(pool_row_blocks, col_blocks)))
    return row_blocks * col_blocks - mirrored


def dry_run(tmp_path):
    archive = tmp_path / "cifar10-jpeg.tar.gz"
    archive.write_bytes(b"")  # a dry run reads no data; the path must exist
    args = ["--configfile", str(PRESET), "--config", f"datasets={{cifar10: {{archive: {archive}}}}}"]
    return args


def test_preset_settings():
    cfg = yaml.safe_load(PRESET.read_text())
    ds = cfg["datasets"]["cifar10"]
    assert (ds["source"], ds["n_pool"], ds["n_test"]) == ("imagefolder", 10_000, 2_000)
    assert ds["sha256"] == yaml.safe_load((REPO / "config" / "cifar10.yaml").read_text())["datasets"]["cifar10"]["sha256"]
    (name, bb), = cfg["backbones"].items()
    assert (bb["model"], bb["image_size"]) == ("resnet18", 32)
    assert set(bb["weights"]) == {"init", "trained"} and set(bb["kernels"]) == {"entk", "features"}
    cifar = yaml.safe_load((REPO / "config" / "cifar10.yaml").read_text())
    assert bb["pretrain"] == cifar["backbones"]["resnet18"]["pretrain"]  # the CIFAR presets' 8 epochs
    sizes = sample_size_grid(cfg["sample_sizes"]["min"], cfg["sample_sizes"]["max"] or ds["n_pool"],
                             cfg["sample_sizes"]["num"])
    assert sizes[0] == 100 and sizes[-1] == 10_000
    assert cfg["seeds"] == [0, 1, 2]
    r = cfg["ridge"]
    assert len(ridge_grid(r["min"], r["max"], r["num"], r["ridgeless"])) == 41
    assert cfg["targets"]["noise"]["enabled"]


def job_stats(text):
    """Job counts per rule from Snakemake's job-stats table (the first one printed)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Job stats:"))
    counts = {}
    for line in lines[start + 3 :]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        if parts[0] != "total":
            counts[parts[0]] = int(parts[1])
    return counts


def job_blocks(text):
    """(rule, text of the job's block) for every job a dry run prints."""
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", text):
        rule = re.match(r"(?:local)?rule (\w+):", block.strip())
        if rule:
            yield rule.group(1), block


def declared_memory(text, n_pool):
    """mem_mb of every job of the dry run, by rule; checks on the way that the eigh jobs at
    n = N_pool read the pool's decomposition, not the kernel."""
    declared = {}
    for rule, block in job_blocks(text):
        mem = re.search(r"mem_mb=(\d+)", block)
        if mem:
            declared.setdefault(rule, []).append(int(mem.group(1)))
            if rule == "eigh" and f"/n{n_pool}_s" in block:
                assert re.search(r"input: \S+/pool\.npz", block) and "kernels/" not in block.split("output:")[0], block
    return declared


def declared_threads(text):
    """threads of every job of the dry run, by rule (Snakemake prints them only above 1)."""
    declared = {}
    for rule, block in job_blocks(text):
        threads = re.search(r"threads: (\d+)", block)
        declared.setdefault(rule, []).append(int(threads.group(1)) if threads else 1)
    return declared


def test_preset_dag_has_every_tile_kernel_and_study(tmp_path):
    """One dry run: every tile, eNTK and feature kernel of both weights, one pool eigh per
    eNTK (the n = N_pool subsamples permute it), every study; every job's declared mem_mb
    fits the budget the measured run gives the scheduler (else it would never start)."""
    cfg = yaml.safe_load(PRESET.read_text())
    ds = cfg["datasets"]["cifar10"]
    proc = snakemake(tmp_path, "-n", "--cores", "2", *dry_run(tmp_path))
    text = proc.stdout + proc.stderr
    jobs = job_stats(text)
    tiles = computed_tiles(ds["n_pool"], ds["n_test"], cfg["entk"]["tile_size"])
    n_sizes = len(sample_size_grid(cfg["sample_sizes"]["min"], ds["n_pool"], cfg["sample_sizes"]["num"]))
    weights = cfg["backbones"]["resnet18"]["weights"]
    assert jobs["entk_tile"] == len(weights) * tiles
    for rule in ("entk_assemble", "entk_accuracy", "pool_eigh", "pool_spectrum", "embed",
                 "feature_accuracy", "feature_pool_spectrum"):
        assert jobs[rule] == len(weights), rule  # one per weights: the eNTK's and the features' rules
    assert jobs["pretrain"] == 1
    # eNTK: dense eigh per n (each job writes every seed's file); features: the low-rank factorisation
    assert jobs["eigh"] == jobs["factor"] == len(weights) * n_sizes
    assert jobs["ridge_path"] == 2 * len(weights)  # one per kernel, every n and seed
    for study in STUDIES:
        assert jobs.get(study, 0) >= 1, study
    assert jobs["noise_study"] == jobs["theory"] == 2 * len(weights)  # every kernel of both weights

    declared = declared_memory(text, ds["n_pool"])
    assert {"entk_tile", "eigh", "pool_eigh", "ridge_path"} <= set(declared)
    for rule, values in declared.items():
        assert max(values) <= MEM_MB, (rule, max(values))
    assert max(declared["entk_tile"]) == int(1024 * cfg["entk"]["memory_gb"]) + 2000  # memory_gb + interpreter
    # every tile has at least 2000 x 2500 entries: each takes both cores (small tiles take one)
    assert declared_threads(text)["entk_tile"] == [2] * jobs["entk_tile"]
