"""config/test.yaml through profiles/slurm on a real single-node Slurm, against a local run."""

from __future__ import annotations

import re
import subprocess
import time

import pytest
from conftest import REPO, RESULTS, job_counts, missing_prerequisite, snakemake
from slurm_cluster import SlurmUnavailable, start_cluster

pytestmark = pytest.mark.workflow
TEST_CONFIG = REPO / "config" / "test.yaml"
PROFILE = REPO / "profiles" / "slurm"
SUBMITTED = re.compile(r"Job (\S+) has been submitted with SLURM jobid (\d+) \(log: (\S+)\)\.")


@pytest.fixture(scope="session")
def slurm_cluster():
    """A running one-node Slurm; skipped with the reason printed when it cannot be installed
    or started (a failure instead where CI lists 'slurm' in $RMTLENS_REQUIRE)."""
    try:
        cluster = start_cluster()
    except (SlurmUnavailable, OSError, subprocess.SubprocessError) as err:
        missing_prerequisite("slurm", f"no Slurm cluster for the test: {err}")
    yield cluster
    cluster.stop()


def run_snakemake(workdir, *args, env=None, timeout=1500) -> subprocess.CompletedProcess:
    return snakemake(workdir, "--configfile", str(TEST_CONFIG), *args, env=env, cwd=workdir, timeout=timeout)


def job_stats(output: str) -> dict[str, int]:
    """Snakemake's 'Job stats' table (the first one printed) as {rule: count}, with 'total'."""
    return job_counts(output, total=True)


# The whole DAG of config/test.yaml takes ~10 minutes through Slurm on the CI machine's two
# cores (68 Slurm jobs, each paying its own Snakemake and torch start-up), over a third of
# CI's budget. The test therefore builds one unit's whole chain through Slurm: the
# `tresnet` `trained` unit, whose jobs cover every rule with a cluster resource request
# (dataset group, pretraining on the GPU, embedding, eNTK tiles and accuracy probe, the
# assembled kernel, the feature-kernel accuracy record, the eigendecomposition and
# low-rank factorisation groups with ridge paths, theory and gradient flow, the noise
# study), and compares every file it made with the local run's, byte for byte. The
# summary tables are local-run jobs of the same scripts (tested by the local run).
SLURM_UNIT = re.compile(r"/tresnet/trained[/.]")


def unit_targets(local_dir) -> list[str]:
    """Every file of the local run (under results/<run>/) that belongs to the unit."""
    return sorted(
        str(path.relative_to(local_dir))
        for path in (local_dir / RESULTS).rglob("*")
        if path.is_file() and SLURM_UNIT.search("/" + str(path.relative_to(local_dir)))
    )


@pytest.fixture(scope="module")
def slurm_and_local_runs(slurm_cluster, finished_run, tmp_path_factory):
    """The tresnet·trained unit of the test config through the Slurm profile, and the same
    config run locally (--cores 2); also the unit's target files."""
    slurm_dir, local_dir = tmp_path_factory.mktemp("slurm_run"), finished_run
    targets = unit_targets(local_dir)
    start = time.monotonic()
    slurm = run_snakemake(slurm_dir, "--profile", str(PROFILE), "--slurm-keep-successful-logs", *targets,
                          env=slurm_cluster.env)
    wall_s = time.monotonic() - start
    output = slurm.stdout + slurm.stderr
    submitted = SUBMITTED.findall(output)
    print(f"Slurm run of config/test.yaml's tresnet·trained unit: {wall_s:.0f} s wall, {len(submitted)} Slurm jobs, "
          f"{job_stats(output).get('total')} snakemake jobs, {len(targets)} target files")
    return slurm_dir, local_dir, output, submitted, targets


def test_slurm_run_reproduces_the_local_files_bit_for_bit(slurm_and_local_runs):
    slurm_dir, local_dir, _, _, targets = slurm_and_local_runs
    kinds = {path.split("/")[2] for path in targets}  # results/<run>/<kind>/...
    assert {"weights", "embeddings", "kernels", "eigh", "ridge", "spectra", "theory", "dynamics", "noise"} <= kinds
    assert any("entk_tiles" in path for path in targets) and any("/features/" in path for path in targets)
    for path in targets:
        if path.endswith(".safetensors"):
            # safetensors writes its metadata from a Rust HashMap, in a per-process random
            # order: compare what the file holds, not its header bytes
            assert_same_safetensors(slurm_dir / path, local_dir / path)
        else:
            assert (slurm_dir / path).read_bytes() == (local_dir / path).read_bytes(), path


def assert_same_safetensors(path, reference) -> None:
    """Same metadata and the same tensors (names, dtypes, shapes, every bit) in two files."""
    import torch
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as got, safe_open(str(reference), framework="pt") as want:
        assert got.metadata() == want.metadata(), path
        assert sorted(got.keys()) == sorted(want.keys()), path
        for name in want.keys():
            a, b = got.get_tensor(name), want.get_tensor(name)
            assert a.dtype == b.dtype and a.shape == b.shape, (path, name)
            assert torch.equal(a.view(-1).view(torch.uint8), b.view(-1).view(torch.uint8)), (path, name)


def test_every_job_ran_as_a_completed_slurm_job(slurm_and_local_runs, slurm_cluster):
    slurm_dir, _, output, submitted, _ = slurm_and_local_runs
    assert submitted, output[-3000:]
    states = slurm_cluster.job_states()
    run_names = {states[slurm_id][1] for _, slurm_id, _ in submitted}
    assert len(run_names) == 1  # the plugin names every job of one run after its run id
    for _, slurm_id, _ in submitted:
        assert states[slurm_id][0] == "COMPLETED", (slurm_id, states[slurm_id])

    # Every snakemake job but 'all' (no action: the main process finishes it) ran inside one
    # of those Slurm jobs: the Slurm output file, named by the job id and kept with
    # --slurm-keep-successful-logs, shows the job step snakemake running it to completion.
    ran = []
    for _, slurm_id, log in submitted:
        assert log.endswith(f"/{slurm_id}.log"), log
        text = (slurm_dir / log).read_text()
        rules = re.findall(r"^localrule (\w+):", text, flags=re.MULTILINE)
        assert f"{len(rules)} of {len(rules)} steps (100%) done" in text, log
        ran += rules
    expected = job_stats(output)
    assert len(ran) == expected.pop("total") - expected.pop("all", 0)
    assert {rule: ran.count(rule) for rule in set(ran)} == expected


def test_pretrain_got_the_clusters_gpu(slurm_and_local_runs, slurm_cluster):
    """The profile asks for a GPU because this cluster declares one (Gres=gpu:1)."""
    _, _, _, submitted, _ = slurm_and_local_runs
    pretrain_ids = [slurm_id for _, slurm_id, log in submitted if "rule_pretrain" in log]
    assert len(pretrain_ids) == 1
    job = slurm_cluster.run("scontrol", "--details", "--oneliner", "show", "job", pretrain_ids[0]).stdout
    assert "TresPerJob=gres:gpu:1" in job and re.search(r"\bJOB_GRES=gpu:1\b", job), job  # asked for, and allocated


def pretrain_gpu_request(workdir, env) -> int:
    proc = run_snakemake(workdir, "--profile", str(PROFILE), "--dry-run", "--until", "pretrain", env=env, timeout=300)
    block = (proc.stdout + proc.stderr).split("rule pretrain:", 1)[1]
    return int(re.search(r"resources: .*\bgpu=(\d+)", block).group(1))


def test_profile_requests_a_gpu_only_where_the_cluster_has_one(slurm_cluster, tmp_path):
    assert pretrain_gpu_request(tmp_path, slurm_cluster.env) == 1
    # A cluster without GPUs: sinfo's GRES column reads '(null)' on every node.
    fake_bin = tmp_path / "cpu_only_bin"
    fake_bin.mkdir()
    (fake_bin / "sinfo").write_text("#!/bin/sh\necho '(null)'\n")
    (fake_bin / "sinfo").chmod(0o755)
    cpu_only = dict(slurm_cluster.env, PATH=f"{fake_bin}:{slurm_cluster.env['PATH']}")
    assert pretrain_gpu_request(tmp_path, cpu_only) == 0
