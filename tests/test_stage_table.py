"""bench/stage_table.py on a real run: every benchmark file counted once, in its stage,
sums equal to the files' own numbers, the eNTK tiles' flops read from their logs."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pandas as pd
import pytest
from conftest import REPO

pytestmark = pytest.mark.workflow


def stage_table():
    spec = importlib.util.spec_from_file_location("stage_table", REPO / "bench" / "stage_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stage_table_sums_every_benchmark_of_a_run(finished_run):
    st = stage_table()
    files = sorted((finished_run / "benchmarks").rglob("*.tsv"))
    frames = {f: pd.read_csv(f, sep="\t") for f in files}
    jobs = st.benchmark_jobs(finished_run, st.rule_names())
    assert len(jobs) == len(files)
    rows = {r["stage"]: r for r in st.stage_rows(jobs)}
    total = rows["total (sum of jobs)"]
    assert total["jobs"] == len(files)
    assert total["seconds"] == pytest.approx(sum(f["s"].iloc[0] for f in frames.values()), rel=1e-12)
    assert total["max_rss_mb"] == pytest.approx(max(f["max_rss"].iloc[0] for f in frames.values()))
    # the stages partition the jobs: their counts add up to every file
    top = [r for name, r in rows.items() if not name.startswith(" ") and name != "total (sum of jobs)"]
    assert sum(r["jobs"] for r in top) == len(files)
    tiles = [f for f in files if "entk_tile" in f.parts]
    assert rows["eNTK tiles"]["jobs"] == len(tiles) > 0
    assert rows["eNTK tiles"]["seconds"] == pytest.approx(sum(frames[f]["s"].iloc[0] for f in tiles), rel=1e-12)
    # eigendecompositions listed per size, pool_eigh as n=pool: one per eNTK unit
    pool = [f for f in files if "pool_eigh" in f.parts]
    assert rows["  pool_eigh n=pool"]["jobs"] == len(pool) > 0
    sizes = {int(f.stem.split("_")[0][1:]) for f in files if "eigh" in f.parts}
    assert all(f"  eigh n={n}" in rows for n in sizes)
    # every tile log records its flops
    logged = st.tile_flops(finished_run)
    assert len(logged) == len(tiles) and all(t["flops"] > 0 and t["seconds"] > 0 for t in logged)


def test_stage_table_command_prints_markdown_and_csv(finished_run, tmp_path):
    out = tmp_path / "stages.csv"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "stage_table.py"), str(finished_run), "--markdown",
                           "--csv", str(out)], capture_output=True, text=True, check=True)
    assert "| eNTK tiles |" in proc.stdout and "GFLOP/s" in proc.stdout
    table = pd.read_csv(out)
    assert table.iloc[-1]["stage"] == "total (sum of jobs)"
    assert table.iloc[-1]["jobs"] == len(list((finished_run / "benchmarks").rglob("*.tsv")))
    missing = subprocess.run([sys.executable, str(REPO / "bench" / "stage_table.py"), str(tmp_path)],
                             capture_output=True, text=True)
    assert missing.returncode != 0 and "no benchmarks/ folder" in missing.stderr
