"""The workflow as a module of another workflow (``module`` / ``use rule * from``),
checked against a direct run of the same configuration (the ``finished_run`` fixture)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, RESULTS, TEST_CONFIG, dry_run_jobs, job_counts, snakemake

pytestmark = pytest.mark.workflow

# Another workflow's Snakefile: its own config (the rmtlens part nested under a key),
# this repository's workflow as a module, every rule renamed rmtlens_*.
OUTER_SNAKEFILE = """\
configfile: "outer_config.yaml"


module rmtlens:
    snakefile:
        "{snakefile}"
    config:
        config["rmtlens"]


use rule * from rmtlens as rmtlens_*


onstart:
    rmtlens.remove_partial_leftovers()
"""


def outer_workflow(workdir: Path) -> Path:
    """Write the outer Snakefile and its config (test.yaml nested under 'rmtlens') into ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = {"project": "someone else's analysis", "rmtlens": yaml.safe_load(TEST_CONFIG.read_text())}
    (workdir / "outer_config.yaml").write_text(yaml.safe_dump(config))
    (workdir / "Snakefile").write_text(OUTER_SNAKEFILE.format(snakefile=REPO / "Snakefile"))
    return workdir


def run_outer(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return snakemake(workdir, *args, snakefile=workdir / "Snakefile", timeout=900)


def outer_jobs(proc: subprocess.CompletedProcess) -> dict[str, int]:
    return job_counts(proc.stdout + proc.stderr)


def dead_pid() -> int:
    """A process id no process has now (for a planted leftover of a killed job)."""
    pid = 4_000_000
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid -= 1


def test_module_dag_is_the_direct_dag_renamed(tmp_path):
    (tmp_path / "direct").mkdir()
    direct = dry_run_jobs(tmp_path / "direct", "--configfile", str(TEST_CONFIG))
    module = outer_jobs(run_outer(outer_workflow(tmp_path / "outer"), "-n"))
    assert direct and module == {f"rmtlens_{rule}": count for rule, count in direct.items()}


def test_module_run_reproduces_the_direct_run(finished_run, tmp_path):
    outer = tmp_path / "outer"
    shutil.copytree(finished_run, outer, symlinks=True)
    outer_workflow(outer)
    # the direct run's outputs and records are the module's: nothing is left to do
    assert outer_jobs(run_outer(outer, "-n")) == {}

    # remove a backbone's embedding, one subsample's factorisation and the kernel's ridge paths (feature
    # kernels have no kernel file: SPEC §2.1), plant a killed job's leftover, and let the
    # module make them again
    unit = "digits/tvit/init"
    redone = [
        f"{RESULTS}/embeddings/{unit}.npy",
        f"{RESULTS}/eigh/{unit}/features/n16_s0.npz",
        f"{RESULTS}/ridge/{unit}/features.parquet",
    ]
    for rel in redone:
        (outer / rel).unlink()
    leftover = outer / ".partial" / f".features.pid{dead_pid()}.x1y2.partial.npy"
    leftover.parent.mkdir(exist_ok=True)
    leftover.write_bytes(b"half a kernel")
    proc = run_outer(outer, "--cores", "2", *redone[1:])
    counts = outer_jobs(proc)
    # the feature kernel's accuracy record is made from the new embedding too (SPEC §2), and the
    # kernel's one ridge_path job reads every n's factorisation, each made from the new embedding
    n_sizes = len(list((finished_run / f"{RESULTS}/eigh/{unit}/features").glob("n*_s0.npz")))
    expected = {"rmtlens_embed": 1, "rmtlens_feature_accuracy": 1, "rmtlens_factor": n_sizes, "rmtlens_ridge_path": 1}
    assert counts == expected, counts
    assert not leftover.exists(), "the module's cleanup of killed jobs' leftovers did not run"
    record = f"{RESULTS}/kernels/{unit}/features.accuracy.json"
    assert json.loads((outer / record).read_text()) == json.loads((finished_run / record).read_text())

    for rel in redone:
        mine, theirs = outer / rel, finished_run / rel
        if rel.endswith(".parquet"):
            pd.testing.assert_frame_equal(pd.read_parquet(mine), pd.read_parquet(theirs), check_exact=True)
        elif rel.endswith(".npz"):
            with np.load(mine) as a, np.load(theirs) as b:
                assert sorted(a.files) == sorted(b.files)
                for key in a.files:
                    np.testing.assert_array_equal(a[key], b[key], err_msg=f"{rel}:{key}")
        else:
            np.testing.assert_array_equal(np.load(mine), np.load(theirs), err_msg=rel)
    assert not any((outer / "results").rglob("*.partial*"))
