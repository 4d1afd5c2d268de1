"""Fault tolerance: SIGKILL at chosen points resumes to bit-identical tables; bad inputs
stop with a clear error and change nothing."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import RESULTS, TEST_CONFIG, snakemake, snakemake_command

from rmtlens.workflow.runlog import snakemake_incomplete_outputs

pytestmark = pytest.mark.workflow
TABLES = f"{RESULTS}/tables"


def table_bytes(workdir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((workdir / TABLES).iterdir())}


def assert_results_complete(workdir: Path) -> None:
    """No temporary file under results/, and every array and table there reads back whole."""
    for path in (workdir / "results").rglob("*"):
        if not path.is_file():
            continue
        assert "partial" not in path.name, f"partial file left in results/: {path}"
        if path.suffix == ".npy":
            np.load(path, mmap_mode="r")
        elif path.suffix == ".npz":
            with np.load(path) as data:
                [data[k] for k in data.files]
        elif path.suffix == ".parquet":
            pd.read_parquet(path)


def run_until(workdir: Path, checkpoint: str, target: str, timeout: float = 900) -> str:
    """Start a test-config run that builds ``target`` in its own process group, wait until a
    process reaches ``checkpoint`` (a glob of fault_checkpoint names), then SIGKILL the group.

    ``target`` must not exist yet and ``checkpoint`` must lie inside the job that writes it:
    the run cannot end without that job, so the point is reached in every job order."""
    assert not (workdir / target).exists(), f"{target} exists already: its kill point could be skipped"
    marker = workdir / "fault.marker"
    marker.unlink(missing_ok=True)
    env = dict(os.environ, RMTLENS_FAULT_PAUSE=checkpoint, RMTLENS_FAULT_MARKER=str(marker))
    cmd = snakemake_command(workdir, "--configfile", str(TEST_CONFIG), "--cores", "2", "--rerun-incomplete", target)
    log = open(workdir / f"run-{len(list(workdir.glob('run-*.log')))}.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while not marker.exists():
            if proc.poll() is not None:
                raise AssertionError(f"run ended ({proc.returncode}) before reaching {checkpoint!r}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no process reached {checkpoint!r} in {timeout} s")
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()
    return marker.read_text()


def test_sigkill_at_several_points_resumes_to_identical_tables(finished_run, tmp_path):
    workdir = tmp_path / "killed"
    workdir.mkdir()
    kernel = f"{RESULTS}/kernels/digits/tresnet/trained"
    # two tiles finished before any kill: the tile kill below must leave them untouched
    snakemake(workdir, "--configfile", str(TEST_CONFIG), "--cores", "2", f"{kernel}/entk_tiles/r0_c0.npy",
              f"{kernel}/entk_tiles/r1_c0.npy")
    # (checkpoint, the output whose job holds it): each run builds only that output, which no
    # earlier run built, so every point is reached whatever order Snakemake picks for the jobs
    points = [
        (f"write:{RESULTS}/embeddings/digits/tresnet/trained.npy", f"{RESULTS}/embeddings/digits/tresnet/trained.npy"),
        (f"entk_tile:{kernel}/entk_tiles/r2_c1.npy", f"{kernel}/entk.npy"),  # halfway through a tile
        (f"write:{RESULTS}/ridge/digits/tresnet/trained/entk.parquet",
         f"{RESULTS}/ridge/digits/tresnet/trained/entk.parquet"),  # inside a ridge-path table write
        (f"write:{RESULTS}/tables/ridge.parquet", f"{RESULTS}/tables/ridge.parquet"),  # the aggregate table write
        (f"write:{RESULTS}/tables/scaling.csv", f"{RESULTS}/tables/scaling.csv"),  # a late summary-table write
    ]
    finished_tiles = {}
    for point, target in points:
        reached = run_until(workdir, point, target)
        assert_results_complete(workdir)
        if reached.startswith("write:"):
            assert any((workdir / ".partial").iterdir()), f"the kill at {reached} left no temporary file to clean"
        else:  # killed inside a tile: its output does not exist, finished tiles do
            assert not (workdir / reached.removeprefix("entk_tile:")).exists()
            # finished: written and recorded by Snakemake; a tile whose job ended just before the
            # kill, still marked incomplete, is rightly rerun by --rerun-incomplete
            incomplete = snakemake_incomplete_outputs(workdir)
            finished_tiles = {p: p.stat().st_mtime_ns for p in workdir.glob(f"{RESULTS}/kernels/*/*/*/entk_tiles/*.npy")
                              if p not in incomplete}
            assert finished_tiles
        snakemake(workdir, "--unlock", "--configfile", str(TEST_CONFIG))
    snakemake(workdir, "--configfile", str(TEST_CONFIG), "--cores", "2", "--rerun-incomplete")
    assert_results_complete(workdir)
    assert {p: p.stat().st_mtime_ns for p in finished_tiles} == finished_tiles  # never recomputed
    assert not any((workdir / ".partial").iterdir())  # leftovers removed at the next start
    assert table_bytes(workdir) == table_bytes(finished_run)  # and equal to an uninterrupted run, bit for bit


@pytest.fixture
def finished_copy(finished_run, tmp_path):
    workdir = tmp_path / "copy"
    shutil.copytree(finished_run, workdir, symlinks=True, ignore=shutil.ignore_patterns("report.html"))
    return workdir


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda K: np.where(np.arange(K.size).reshape(K.shape) == 7, np.nan, K), "kernel contains NaN"),
        (lambda K: K + np.triu(np.full_like(K, 0.1), 1) * (np.arange(len(K)) < K.shape[1])[:, None],
         "pool block is not symmetric"),
    ],
    ids=["nan", "asymmetric"],
)
def test_corrupt_kernel_file_stops_with_a_clear_error_and_changes_no_table(finished_copy, corrupt, message):
    before = table_bytes(finished_copy)
    path = finished_copy / f"{RESULTS}/kernels/digits/tresnet/init/entk.npy"
    np.save(path, corrupt(np.load(path)))
    proc = snakemake(finished_copy, "--configfile", str(TEST_CONFIG), "--cores", "2", check=False)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
    assert table_bytes(finished_copy) == before


def test_missing_upstream_file_is_named_before_any_job(tmp_path):
    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    missing = tmp_path / "nowhere" / "images.tar.gz"
    cfg["datasets"]["digits"] = dict(source="imagefolder", archive=str(missing), n_pool=120, n_test=60)
    config_file = tmp_path / "missing.yaml"
    config_file.write_text(yaml.safe_dump(cfg))
    proc = snakemake(tmp_path, "--configfile", str(config_file), "--cores", "1", check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0 and str(missing) in output
    assert "--config 'datasets={digits: {archive: /path/to/images.tar.gz}}'" in output, output[-3000:]
    assert not (tmp_path / "results").exists()


def test_incomplete_outputs_are_the_jobs_snakemake_reruns(tmp_path):
    """A job killed after writing its output: the file exists, yet Snakemake still marks it
    incomplete and reruns it; the helper must name exactly that output, also when its
    base64 name is longer than one file name may be (Snakemake then splits it)."""
    long_dir = "/".join(["d" * 120] * 2)
    (tmp_path / "Snakefile").write_text(
        "rule all:\n"
        "    input: 'done.txt', 'killed.txt', '" + long_dir + "/killed.txt'\n"
        "rule done:\n"
        "    output: 'done.txt'\n"
        "    shell: 'echo done > {output}'\n"
        "rule killed:\n"
        "    input: 'done.txt'\n"
        "    output: 'killed.txt', '" + long_dir + "/killed.txt'\n"
        "    shell: 'for f in {output}; do echo x > $f; done; sleep 600'\n"
    )
    snakefile = tmp_path / "Snakefile"
    cmd = snakemake_command(tmp_path, "--cores", "1", snakefile=snakefile)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / long_dir / "killed.txt").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the job never wrote its outputs"
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert snakemake_incomplete_outputs(tmp_path) == {tmp_path / "killed.txt", tmp_path / long_dir / "killed.txt"}
    snakemake(tmp_path, "--unlock", snakefile=snakefile)
    rerun = snakemake(tmp_path, "--dry-run", "--rerun-incomplete", snakefile=snakefile).stdout
    assert "rule killed:" in rerun and "rule done:" not in rerun
