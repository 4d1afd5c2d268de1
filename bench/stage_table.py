"""Stage table of a finished (or resumed) workflow run, from its benchmark files.

Every rule writes a Snakemake ``benchmark:`` file (a TSV with ``s``, ``max_rss`` in MB,
``cpu_time``, ...). This script reads all of a run directory's ``benchmarks/**/*.tsv``,
whatever their layout (``benchmarks/<rule>/...`` or ``benchmarks/<run>/<rule>/...``: the
rule is the first path component that names a rule of ``workflow/rules/*.smk``), and
prints one line per stage: pretraining, embeddings, eNTK tiles (with the time per tile),
assembly, the accuracy probe, each eigendecomposition size, ridge paths, theory, the
studies, then any other rule under its own name; with jobs, summed seconds (the sum of
the rules' benchmark times: the run's serial cost, not its wall time), mean and largest
seconds per job, CPU seconds and the largest peak RSS of a job.

eNTK tile flops come from the tile logs (``logs/**/entk_tile/**/r*_c*.log``: the
engine's schedule count, logged by ``workflow/scripts/entk_tile.py``); the achieved
GFLOP/s is the summed flops over the summed tile seconds (engine time from the logs,
and the jobs' benchmark seconds, which add process start and the model build).

    python bench/stage_table.py RUN_DIR                # a table for the terminal
    python bench/stage_table.py RUN_DIR --markdown     # the same as a Markdown table (bench/README.md)
    python bench/stage_table.py RUN_DIR --csv out.csv  # one row per stage, machine-readable

A run resumed after an interruption keeps the benchmark files of the jobs that finished
before it and writes those of the rest, so the table sums the whole run across its legs.
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# stage of each rule, in the order the table lists them; rules not named here are listed
# under their own name after these (new rules need no change here)
STAGES = [
    ("data", ["prepare_dataset", "prepare_source_task"]),
    ("pretraining", ["pretrain", "pretraining_figure"]),
    ("embeddings", ["embed"]),
    ("eNTK tiles", ["entk_tile"]),
    ("eNTK assembly", ["entk_assemble"]),
    ("eNTK accuracy probe", ["entk_accuracy"]),
    ("feature kernels", ["kernel", "feature_accuracy"]),
    ("eigendecompositions", ["pool_eigh", "eigh"]),
    ("factorisations (low-rank)", ["factor"]),
    ("pool spectra", ["pool_spectrum", "feature_pool_spectrum"]),
    ("ridge paths", ["ridge_path"]),
    ("theory", ["theory"]),
    ("summaries", ["aggregate", "estimators", "representations", "scaling", "local_law", "figures"]),
    ("studies", ["noise_study", "noise_summary", "ridge_selection", "learnability", "learning_dynamics",
                 "learning_dynamics_summary", "double_descent", "linearisation"]),
]
BY_SIZE = {"eigh", "pool_eigh", "factor"}  # listed per sample size n as well


def rule_names(repo: Path = REPO) -> set[str]:
    """Rule names declared in the workflow's rule files (``rule <name>:``)."""
    names = set()
    for path in sorted((repo / "workflow" / "rules").glob("*.smk")):
        names.update(re.findall(r"^rule (\w+):", path.read_text(), flags=re.MULTILINE))
    return names


def read_benchmark(path: Path) -> dict:
    """The first data row of a Snakemake benchmark TSV, numbers as floats (NaN if absent)."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    if not rows:
        raise ValueError(f"{path}: no benchmark row")

    def number(key):
        try:
            return float(rows[0].get(key, "nan"))
        except ValueError:  # Snakemake writes "-" where it measured nothing
            return math.nan

    return {key: number(key) for key in ("s", "max_rss", "cpu_time")}


def benchmark_jobs(run_dir: Path, rules: set[str]) -> list[dict]:
    """One record per benchmark file: rule, n (from ``n<digits>`` in the file name, or
    ``pool``), path, and the benchmark's numbers."""
    root = run_dir / "benchmarks"
    if not root.is_dir():
        raise SystemExit(f"{run_dir} has no benchmarks/ folder: not a workflow run directory")
    jobs = []
    for path in sorted(root.rglob("*.tsv")):
        parts = path.relative_to(root).parts
        rule = next((p for p in parts[:-1] if p in rules), None) or (
            path.stem if len(parts) == 1 else parts[0]
        )
        match = re.match(r"n(\d+)", path.stem)
        n = int(match.group(1)) if match else ("pool" if rule == "pool_eigh" else None)
        jobs.append(dict(rule=rule, n=n, path=path, **read_benchmark(path)))
    return jobs


def tile_flops(run_dir: Path) -> list[dict]:
    """Flops and engine seconds of every eNTK tile log that records them."""
    pattern = re.compile(r"tile of (\d+) x (\d+): ([0-9.eE+-]+) flops .* in ([0-9.]+) s")
    tiles = []
    for path in sorted((run_dir / "logs").rglob("r*_c*.log")):
        if "entk_tile" not in path.parts:
            continue
        for line in path.read_text(errors="replace").splitlines():
            match = pattern.search(line)
            if match:
                rows, cols, flops, seconds = match.groups()
                tiles.append(dict(path=path, rows=int(rows), cols=int(cols), flops=float(flops),
                                  seconds=float(seconds)))
    return tiles


def summarise(name: str, jobs: list[dict]) -> dict:
    s = [j["s"] for j in jobs]
    rss = [j["max_rss"] for j in jobs if not math.isnan(j["max_rss"])]
    cpu = [j["cpu_time"] for j in jobs if not math.isnan(j["cpu_time"])]
    return dict(stage=name, jobs=len(jobs), seconds=sum(s), mean=sum(s) / len(s), max=max(s),
                cpu=sum(cpu) if cpu else math.nan, max_rss_mb=max(rss) if rss else math.nan)


def stage_rows(jobs: list[dict]) -> list[dict]:
    """Rows of the table: each stage with its jobs, eigendecompositions also per size."""
    by_rule = defaultdict(list)
    for job in jobs:
        by_rule[job["rule"]].append(job)
    rows, seen = [], set()
    for stage, rules in STAGES:
        members = [j for r in rules for j in by_rule.get(r, [])]
        seen.update(rules)
        if not members:
            continue
        rows.append(summarise(stage, members))
        for rule in rules:
            if rule not in BY_SIZE or not by_rule.get(rule):
                continue
            sizes = sorted({j["n"] for j in by_rule[rule]}, key=lambda n: (isinstance(n, str), n or 0))
            for n in sizes:
                rows.append(summarise(f"  {rule} n={n}", [j for j in by_rule[rule] if j["n"] == n]))
    for rule in sorted(set(by_rule) - seen):
        rows.append(summarise(rule, by_rule[rule]))
    rows.append(summarise("total (sum of jobs)", jobs))
    return rows


def fmt_seconds(s: float) -> str:
    if math.isnan(s):
        return "-"
    if s >= 60:
        return f"{s / 60:.1f} min"
    return f"{s:.1f} s"


def print_table(rows: list[dict], tiles: list[dict], tile_jobs: list[dict], markdown: bool) -> None:
    head = ["stage", "jobs", "sum", "mean/job", "max/job", "CPU", "max RSS (MB)"]
    body = [[r["stage"], str(r["jobs"]), fmt_seconds(r["seconds"]), fmt_seconds(r["mean"]),
             fmt_seconds(r["max"]), fmt_seconds(r["cpu"]),
             "-" if math.isnan(r["max_rss_mb"]) else f"{r['max_rss_mb']:.0f}"] for r in rows]
    if markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "|".join("---" for _ in head) + "|")
        for line in body:
            stage = line[0].strip()
            print("| " + " | ".join([stage if stage == line[0] else f"· {stage}", *line[1:]]) + " |")
    else:
        widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
        for line in [head, *body]:
            print("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths))))
    if tiles:
        flops = sum(t["flops"] for t in tiles)
        engine = sum(t["seconds"] for t in tiles)
        job_s = sum(j["s"] for j in tile_jobs)
        print()
        print(f"eNTK tiles: {len(tiles)} logged with flops ({len(tile_jobs)} benchmarked), "
              f"{flops / 1e12:.1f} TFLOP by the engine's schedule, mean {flops / len(tiles) / 1e12:.2f} TFLOP per tile; "
              f"{flops / engine / 1e9:.1f} GFLOP/s over the engine's {fmt_seconds(engine)}"
              + (f", {flops / job_s / 1e9:.1f} GFLOP/s over the jobs' {fmt_seconds(job_s)}"
                 if job_s and len(tiles) == len(tile_jobs) else ""))
    elif tile_jobs:
        print()
        print("eNTK tiles: no tile log records flops (workflow/scripts/entk_tile.py logs them; older runs did not)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path, help="the run's working directory (holds benchmarks/ and logs/)")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    ap.add_argument("--csv", type=Path, help="also write the rows to this CSV file")
    args = ap.parse_args(argv)
    jobs = benchmark_jobs(args.run_dir, rule_names())
    if not jobs:
        raise SystemExit(f"{args.run_dir}/benchmarks holds no benchmark file")
    rows = stage_rows(jobs)
    print_table(rows, tile_flops(args.run_dir), [j for j in jobs if j["rule"] == "entk_tile"], args.markdown)
    if args.csv:
        with open(args.csv, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(dict(r, stage=r["stage"].strip()) for r in rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
