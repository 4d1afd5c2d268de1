"""The measured run of config/cifar10-entk.yaml, as one procedure.

1. A fresh clone of the repository (``--repo``, default: this one) into ``--workdir``,
   with the virtual environment linked in (``--venv``, default: the repository's).
2. The preset started in the background under ``/usr/bin/time -v`` (its peak is the
   largest single process) while a sampler reads /proc every 2 s and records the peak of
   the whole process tree: summed RSS, summed anonymous RSS and summed PSS (RSS counts
   pages shared between processes, such as the memory-mapped kernel files, once per
   process; PSS shares them out).
3. Once at least one eNTK tile has finished and another is running (its log past
   ``--kill-at-percent`` of its flops), the whole workflow is killed with SIGKILL: the
   Snakemake process is stopped first (it starts nothing more), then every process of its
   tree is killed, as a lost node would be. The finished tiles' modification times are
   recorded (finished: written, and no longer marked incomplete by Snakemake).
4. The README's recovery: ``snakemake --unlock`` with the same options, then the same
   command again (a second leg, measured the same way).
5. Checks: every tile that had finished before the kill still has its modification time
   (none was recomputed), the killed tile exists now, ``.partial/`` is empty.
6. The stage table (bench/stage_table.py) of the whole run, both legs summed.
7. ``--compare-tiles K``: K tiles (the killed one, one finished before the kill, one of
   the other kernel) recomputed by Snakemake in a second, uninterrupted working directory
   from copies of the same inputs, and compared byte for byte with the resumed run's.

Everything is written to ``<workdir>/measure/``: ``leg1.time``, ``leg2.time`` (the
``time -v`` reports), ``leg*.log`` (Snakemake's output), ``memory.csv`` (the sampler's
timeline), ``stage_table.md``, ``stage_table.csv`` and ``summary.json``; the summary is
also printed.

    python bench/cifar10_entk_run.py --archive /path/to/cifar10-jpeg.tar.gz \\
        --workdir /path/to/fresh-run --compare-tiles 3

A small rehearsal of the whole procedure (a few minutes; the preset shrunk by overrides):

    python bench/cifar10_entk_run.py --archive $RMTLENS_CIFAR10_JPEG --workdir /tmp/rehearsal \\
        --dataset n_pool=400 --dataset n_test=100 --set 'entk={tile_size: 200, memory_gb: 1}' \\
        --set 'source_tasks={cifar10_rest: {n_train: 300, n_heldout: 100}}' \\
        --set 'backbones={resnet18: {pretrain: {epochs: 1}}}' --set 'sample_sizes={num: 3}' \\
        --kill-at-percent 0 --compare-tiles 2
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from rmtlens.workflow.runlog import snakemake_incomplete_outputs

HERE = Path(__file__).resolve().parents[1]


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archive", required=True, type=Path, help="the CIFAR-10 JPEG archive (.tar.gz)")
    ap.add_argument("--workdir", required=True, type=Path, help="where the fresh clone goes (must not exist)")
    ap.add_argument("--repo", type=Path, default=HERE, help="repository to clone (default: this one)")
    ap.add_argument("--branch", help="branch or commit to check out in the clone (default: the clone's HEAD)")
    ap.add_argument("--venv", type=Path, help="virtual environment to link as <clone>/.venv (default: <repo>/.venv)")
    ap.add_argument("--configfile", default="config/cifar10-entk.yaml")
    ap.add_argument("--dataset", action="append", default=[], metavar="KEY=VALUE",
                    help="override a field of every dataset of the preset (e.g. n_pool=400)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a top-level config field (YAML value; written to measure/overrides.yaml)")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--mem-mb", type=int, default=11000,
                    help="--resources mem_mb: the scheduler keeps declared memory under it (default 11000)")
    ap.add_argument("--no-kill", action="store_true", help="one uninterrupted leg")
    ap.add_argument("--kill-at-percent", type=int, default=20,
                    help="kill once a running tile's log reports this percent of its flops (default 20)")
    ap.add_argument("--compare-tiles", type=int, default=0, metavar="K",
                    help="recompute K tiles in an uninterrupted working directory and compare bytes")
    ap.add_argument("--interval", type=float, default=2.0, help="memory sampling interval (s)")
    return ap.parse_args(argv)


# ---------------------------------------------------------------- process tree and memory

def children_map() -> dict[int, list[int]]:
    """Parent pid -> child pids, from /proc/<pid>/stat."""
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def tree(root: int) -> list[int]:
    """``root`` and all its descendants."""
    kids, out, todo = children_map(), [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, []))
    return out


def memory_of(pid: int) -> tuple[int, int, int]:
    """(RSS, anonymous RSS, PSS) of a process in bytes; zeros if it is gone."""
    rss = anon = pss = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("RssAnon:"):
                anon = int(line.split()[1]) * 1024
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1]) * 1024
                break
    except OSError:
        pass
    return rss, anon, pss


class Sampler(threading.Thread):
    """Sums RSS, anonymous RSS and PSS over a process tree every ``interval`` seconds."""

    def __init__(self, root: int, interval: float, out: Path, leg: int, t0: float):
        super().__init__(daemon=True)
        self.root, self.interval, self.out, self.leg, self.t0 = root, interval, out, leg, t0
        self.peak = dict(rss=0, anon=0, pss=0, procs=0)
        self.stop = threading.Event()

    def run(self):
        new = not self.out.exists()
        with open(self.out, "a", newline="") as handle:
            writer = csv.writer(handle)
            if new:
                writer.writerow(["leg", "t_s", "rss_mb", "anon_mb", "pss_mb", "processes"])
            while not self.stop.is_set():
                pids = tree(self.root)
                totals = [sum(v) for v in zip(*(memory_of(p) for p in pids))] or [0, 0, 0]
                for key, value in zip(("rss", "anon", "pss"), totals):
                    self.peak[key] = max(self.peak[key], value)
                self.peak["procs"] = max(self.peak["procs"], len(pids))
                writer.writerow([self.leg, f"{time.time() - self.t0:.1f}", *(f"{v / 2**20:.0f}" for v in totals),
                                 len(pids)])
                handle.flush()
                self.stop.wait(self.interval)


def kill_tree(root: int) -> list[int]:
    """Kill the workflow under ``root`` (``/usr/bin/time``) as a lost node would: SIGSTOP
    its Snakemake process (it starts nothing more), then SIGKILL that process and every
    descendant; ``time`` itself survives to write its report."""
    snakemakes = [p for p in children_map().get(root, [])]
    for pid in snakemakes:
        os.kill(pid, signal.SIGSTOP)
    pids = [p for p in tree(root) if p != root]
    for pid in reversed(pids):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return pids


# ---------------------------------------------------------------- the workflow

def time_report(path: Path) -> dict:
    """Wall time (s) and largest single-process RSS (MB) of a ``/usr/bin/time -v`` report."""
    text = path.read_text(errors="replace") if path.exists() else ""
    out = {}
    match = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", text)
    if match:
        parts = [float(p) for p in match.group(1).split(":")]
        out["wall_s"] = sum(p * 60**i for i, p in enumerate(reversed(parts)))
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    if match:
        out["max_single_rss_mb"] = int(match.group(1)) / 1024
    return out


def tile_files(workdir: Path) -> dict[Path, int]:
    """Finished eNTK tile files (any results layout) with their mtimes (ns)."""
    return {p: p.stat().st_mtime_ns for p in sorted(workdir.glob("results/**/entk_tiles/r*_c*.npy"))}


def tile_key(path: Path) -> tuple[str, ...]:
    """(dataset, backbone, weights, tile) of a tile file (``.../<d>/<b>/<w>/entk_tiles/r_c.npy``)
    or of its log (``.../entk_tile/<d>/<b>/<w>/r_c.log``)."""
    if path.suffix == ".npy":
        return (*path.parts[-5:-2], path.stem)
    return (*path.parts[-4:-1], path.stem)


def running_tiles(root: int) -> list[str]:
    """Command lines of running entk_tile jobs in the tree."""
    out = []
    for pid in tree(root):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "entk_tile.py" in cmd:
            out.append(cmd)
    return out


def tile_progress(workdir: Path, finished) -> dict[Path, int]:
    """Latest percent of flops in the log of every tile that has not finished."""
    done = {tile_key(f) for f in finished}
    out = {}
    for log in workdir.glob("logs/**/entk_tile/**/r*_c*.log"):
        percents = re.findall(r"percent of the tile's flops: (\d+)/100", log.read_text(errors="replace"))
        if percents and tile_key(log) not in done:
            out[log] = int(percents[-1])
    return out


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(2**22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def main(argv=None) -> int:
    args = parse(argv)
    args.workdir = args.workdir.resolve()
    if args.workdir.exists():
        raise SystemExit(f"{args.workdir} exists: the run starts from a fresh clone")
    archive = args.archive.resolve()
    if not archive.is_file():
        raise SystemExit(f"no archive at {archive}")
    subprocess.run(["git", "clone", "--quiet", str(args.repo), str(args.workdir)], check=True)
    if args.branch:
        subprocess.run(["git", "-C", str(args.workdir), "checkout", "--quiet", args.branch], check=True)
    venv = (args.venv or args.repo / ".venv").resolve()
    (args.workdir / ".venv").symlink_to(venv)
    out = args.workdir / "measure"
    out.mkdir()
    commit = subprocess.run(["git", "-C", str(args.workdir), "rev-parse", "HEAD"], capture_output=True,
                            text=True, check=True).stdout.strip()

    import yaml

    preset = yaml.safe_load((args.workdir / args.configfile).read_text())
    # Snakemake reads --config values as strings below the top level, so typed overrides go
    # into a second config file, merged over the preset; the archive path stays on --config
    # as the README gives it
    overrides: dict = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = yaml.safe_load(value)
    fields = {}
    for item in args.dataset:
        key, _, value = item.partition("=")
        fields[key] = yaml.safe_load(value)
    if fields:
        overrides["datasets"] = {name: fields for name in preset["datasets"]}
    configfiles = [args.configfile]
    if overrides:
        (out / "overrides.yaml").write_text(yaml.safe_dump(overrides))
        configfiles.append(str(out / "overrides.yaml"))
    archive_item = "datasets={" + ", ".join(f"{name}: {{archive: {archive}}}" for name in preset["datasets"]) + "}"
    env = dict(os.environ, PYTHONPATH=str(args.workdir / "src"))
    snakemake = [str(args.workdir / ".venv/bin/python"), "-m", "snakemake", "--profile", "profiles/local",
                 "--cores", str(args.cores), "--configfile", *configfiles,
                 "--resources", f"mem_mb={args.mem_mb}", "--config", archive_item]
    (out / "command.txt").write_text(" ".join(snakemake) + "\n")
    print("command:", " ".join(snakemake), flush=True)
    t0 = time.time()
    summary: dict = dict(commit=commit, command=snakemake, legs=[])

    def leg(number: int, kill: bool) -> dict:
        with open(out / f"leg{number}.log", "w") as log:
            proc = subprocess.Popen(["/usr/bin/time", "-v", "-o", str(out / f"leg{number}.time"), *snakemake],
                                    cwd=args.workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        sampler = Sampler(proc.pid, args.interval, out / "memory.csv", number, t0)
        sampler.start()
        start = time.time()
        record: dict = dict(leg=number)
        while proc.poll() is None:
            if kill:
                finished = tile_files(args.workdir)
                progress = tile_progress(args.workdir, set(finished))
                ready = [log for log, pct in progress.items() if pct >= args.kill_at_percent]
                if finished and ready and running_tiles(proc.pid):
                    record["running_tile_logs"] = [str(p.relative_to(args.workdir)) for p in ready]
                    record["killed_pids"] = kill_tree(proc.pid)
                    # finished = written and recorded by Snakemake: a tile whose job ended just
                    # before the kill, not yet unmarked incomplete, is rerun by --rerun-incomplete
                    incomplete = snakemake_incomplete_outputs(args.workdir)
                    finished = tile_files(args.workdir)
                    record["finished_tiles_at_kill"] = {str(p.relative_to(args.workdir)): m
                                                        for p, m in finished.items() if p not in incomplete}
                    record["written_but_incomplete_tiles"] = sorted(str(p.relative_to(args.workdir))
                                                                    for p in finished if p in incomplete)
                    record["killed_at_s"] = time.time() - start
                    proc.wait()
                    break
            time.sleep(1.0)
        proc.wait()
        sampler.stop.set()
        sampler.join()
        record.update(returncode=proc.returncode, wall_s=time.time() - start,
                      peak_tree_rss_mb=sampler.peak["rss"] / 2**20, peak_tree_anon_mb=sampler.peak["anon"] / 2**20,
                      peak_tree_pss_mb=sampler.peak["pss"] / 2**20, max_processes=sampler.peak["procs"],
                      **{f"time_v_{k}": v for k, v in time_report(out / f"leg{number}.time").items()})
        summary["legs"].append(record)
        print(json.dumps({k: v for k, v in record.items() if k not in ("finished_tiles_at_kill", "killed_pids")}),
              flush=True)
        return record

    first = leg(1, kill=not args.no_kill)
    checks: dict = {}
    if "killed_at_s" in first:
        unlock = subprocess.run([*snakemake, "--unlock"], cwd=args.workdir, env=env, capture_output=True, text=True)
        checks["unlock_returncode"] = unlock.returncode
        second = leg(2, kill=False)
        before = {args.workdir / p: m for p, m in first["finished_tiles_at_kill"].items()}
        after = tile_files(args.workdir)
        checks["finished_tiles_before_kill"] = len(before)
        checks["recomputed_finished_tiles"] = sorted(str(p) for p, m in before.items() if after.get(p) != m)
        killed_files = [next((t for t in after if tile_key(t) == tile_key(Path(log))), None)
                        for log in first["running_tile_logs"]]
        checks["killed_tiles_now_present"] = all(f is not None for f in killed_files)
        partial = args.workdir / ".partial"
        checks["partial_leftovers"] = sorted(str(p) for p in partial.rglob("*") if p.is_file()) if partial.exists() else []
        checks["resumed_ok"] = second["returncode"] == 0
    else:
        killed_files = []
        checks["resumed_ok"] = first["returncode"] == 0
    table = subprocess.run([str(args.workdir / ".venv/bin/python"), str(args.workdir / "bench/stage_table.py"),
                            str(args.workdir), "--markdown", "--csv", str(out / "stage_table.csv")],
                           capture_output=True, text=True)
    (out / "stage_table.md").write_text(table.stdout + table.stderr)
    summary["stage_table"] = table.stdout

    if args.compare_tiles:
        checks["tile_comparison"] = compare_tiles(args, snakemake, env, killed_files, out)
    summary["checks"] = checks
    summary["total_wall_s"] = sum(leg["wall_s"] for leg in summary["legs"])
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(table.stdout)
    print(json.dumps(checks, indent=2, default=str))
    ok = checks["resumed_ok"] and not checks.get("recomputed_finished_tiles") and not checks.get("partial_leftovers")
    ok = ok and all(c["identical"] for c in checks.get("tile_comparison", []))
    print("OK" if ok else "CHECKS FAILED", f"(total wall {summary['total_wall_s'] / 60:.1f} min; {out})")
    return 0 if ok else 1


def compare_tiles(args, snakemake, env, killed_files, out) -> list[dict]:
    """Recompute some tiles in an uninterrupted working directory and compare bytes."""
    tiles = sorted(tile_files(args.workdir))
    units = sorted({t.parent.parent for t in tiles})
    chosen = [f for f in killed_files if f is not None]
    chosen += [t for t in tiles if t not in chosen and t.parent.parent == units[0]][:1]
    chosen += [t for t in tiles if t not in chosen and len(units) > 1 and t.parent.parent == units[-1]][:1]
    chosen += [t for t in tiles if t not in chosen]
    chosen = chosen[: args.compare_tiles]
    if not chosen:
        return [dict(tile=None, identical=False, recomputed=False, returncode=None, note="no finished tile")]
    fresh = args.workdir.parent / (args.workdir.name + "-tiles")
    if fresh.exists():
        shutil.rmtree(fresh)
    fresh.mkdir()
    # the tiles' inputs (prepared dataset, trained weights and what they came from), mtimes kept
    for pattern in ("results/**/datasets/*.npz", "results/**/source_tasks/*.npz", "resources/weights/**/*",
                    "results/**/weights/**/*", "results/**/pretrain/*.csv"):
        for src in args.workdir.glob(pattern):
            if src.is_file():
                dst = fresh / src.relative_to(args.workdir)
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
    targets = [str(t.relative_to(args.workdir)) for t in chosen]
    cmd = [*snakemake[:3], "-s", str(args.workdir / "Snakefile"), "--directory", str(fresh),
           *snakemake[3:], "--allowed-rules", "entk_tile", "--", *targets]
    # profiles/local is found relative to the working directory: point at the clone's
    cmd[cmd.index("profiles/local")] = str(args.workdir / "profiles/local")
    cmd[cmd.index(args.configfile)] = str(args.workdir / args.configfile)  # (overrides.yaml is absolute)
    with open(out / "compare_tiles.log", "w") as log:
        proc = subprocess.run(cmd, cwd=fresh, env=env, stdout=log, stderr=subprocess.STDOUT)
    results = []
    for target in targets:
        a, b = args.workdir / target, fresh / target
        results.append(dict(tile=target, identical=b.exists() and sha256(a) == sha256(b),
                            recomputed=b.exists(), returncode=proc.returncode))
    return results


if __name__ == "__main__":
    sys.exit(main())
