"""Benchmark: LAPACK's symmetric eigensolvers for the workflow's float64 ``eigh`` jobs.

Times ``rmtlens.estimators.eigh_descending`` (symmetrise, eigendecompose, reverse to
descending order: exactly what an ``eigh`` job runs) with each driver, and its peak
memory. tracemalloc cannot see LAPACK's work arrays, so every (n, driver) runs in a
fresh subprocess that reads its own high-water mark (``VmHWM`` of /proc/self/status)
after the call; the peak is reported above the interpreter's resident size before the
matrix was loaded (so it counts the input, as a job holds its kernel block), in bytes
and as ``c`` in ``peak ≈ c · n²`` bytes.

    python bench/eigh_drivers.py                      # n = 2000, 4000; evd, evr, ev, numpy, torch (CPU)
    python bench/eigh_drivers.py --large              # adds n = 10,000 (the eNTK preset's pool; ~10 min per driver at 1 thread)
    python bench/eigh_drivers.py --n 1000 --drivers evd,evr --threads 2
    python bench/eigh_drivers.py --matrix results/kernels/<dataset>/<backbone>/<weights>/entk.npy

Drivers: ``evd`` (LAPACK ``dsyevd``, divide and conquer), ``evr`` (``dsyevr``, MRRR),
``ev`` (``dsyev``, QR iteration), all three through ``scipy.linalg.eigh``; ``numpy``
(``numpy.linalg.eigh``, numpy's own OpenBLAS build, ``dsyevd``); ``torch``
(``torch.linalg.eigh`` on the CPU, PyTorch's LAPACK; for comparison only: the workflow
would have to import torch into every eigh job) and ``cuda`` (``torch.linalg.eigh`` on
a GPU, when one is present). The matrix is a kernel-like PSD matrix
``K = Φ Φᵀ / n`` with power-law column scales ``k^-0.6`` (eigenvalues decaying like a
network kernel's, which matters: divide and conquer deflates small couplings), or the
leading ``n x n`` block of a stored kernel (``--matrix``). Each driver's eigenvalues are
compared with ``numpy.linalg.eigh``'s, and its residual ``‖K U − U D‖/‖K‖`` and
orthogonality ``max|UᵀU − I|`` are printed.

Wall and CPU seconds are both printed: on a shared machine the CPU time of a one-thread
run is the steadier measure of the work (it leaves out the time other processes held the
core). Threads: ``--threads`` (default 1, what the ``eigh`` rule runs with: Snakemake sets
``OMP_NUM_THREADS`` to the rule's ``threads``). Pin the whole benchmark with
``taskset`` to measure on chosen cores; the subprocesses inherit it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DRIVERS = ("evd", "evr", "ev", "numpy", "torch", "cuda")


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", default=[2000, 4000], help="matrix sizes")
    ap.add_argument("--large", action="store_true", help="also n = 10,000")
    ap.add_argument("--drivers", default="evd,evr,ev,numpy,torch", help=f"comma-separated, among {DRIVERS}")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--matrix", help="a .npy kernel whose leading n x n block is decomposed (default: synthetic)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=1,
                    help="rounds over the drivers, interleaved (least time and largest peak kept)")
    ap.add_argument("--child", nargs=3, metavar=("DRIVER", "MATRIX", "OUT"), help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def status_bytes(field: str) -> int:
    """A ``kB`` field of /proc/self/status (VmRSS, VmHWM), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status (Linux only)")


def child(driver: str, matrix_path: str, out_path: str) -> None:
    """One measurement in a fresh process: load, time ``eigh_descending``, read VmHWM."""
    import numpy as np

    from rmtlens.estimators import eigh_descending

    if driver in ("torch", "cuda"):
        import torch

        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
        if driver == "cuda" and not torch.cuda.is_available():
            raise SystemExit("no CUDA device")
    base = status_bytes("VmRSS")
    K = np.load(matrix_path)  # the input, as a job holds its kernel block
    n = K.shape[0]
    start, cpu_start = time.perf_counter(), time.process_time()
    if driver == "torch":  # not a driver of the workflow: the same steps, torch's LAPACK
        S = torch.from_numpy(0.5 * (K + K.T))
        d, U = torch.linalg.eigh(S)
        del S
        d, U = d.numpy()[::-1].copy(), U.numpy()[:, ::-1].copy()
    else:
        d, U = eigh_descending(K, driver)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    peak = status_bytes("VmHWM") - base
    residual = float(np.linalg.norm(K @ U - U * d) / np.linalg.norm(K))
    orth = float(np.abs(U.T @ U - np.eye(n)).max())
    np.save(out_path, d)
    print(json.dumps(dict(seconds=seconds, cpu=cpu, peak=peak, residual=residual, orth=orth)))


def synthetic_kernel(n: int, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    phi = rng.standard_normal((n, n)) * np.arange(1, n + 1) ** -0.6
    K = phi @ phi.T / n
    return 0.5 * (K + K.T)


def main(argv=None) -> int:
    args = parse(argv)
    if args.child:
        child(*args.child)
        return 0
    drivers = args.drivers.split(",")
    bad = [d for d in drivers if d not in DRIVERS]
    if bad:
        raise SystemExit(f"unknown driver(s) {bad}; expected among {DRIVERS}")
    sizes = sorted(set(args.n + ([10_000] if args.large else [])))
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(args.threads)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).resolve().parents[1] / "src"), env.get("PYTHONPATH", "")]
    ).rstrip(os.pathsep)
    import numpy as np

    affinity = sorted(os.sched_getaffinity(0))
    print(f"# threads {args.threads}, cores {affinity}, load average {os.getloadavg()[0]:.2f} "
          f"(timings are only meaningful on otherwise idle cores)")
    print(f"# matrix: {args.matrix or 'synthetic K = Φ Φᵀ/n, column scales k^-0.6'}")
    print(f"{'n':>6} {'driver':>6} {'seconds':>8} {'CPU s':>8} {'peak MB':>8} {'c (n² B)':>8} "
          f"{'|Δd|/d0':>9} {'residual':>9} {'orth':>9}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="eigh_drivers_") as tmp:
        for n in sizes:
            path = os.path.join(tmp, f"K{n}.npy")
            if args.matrix:
                K = np.load(args.matrix, mmap_mode="r")
                if min(K.shape) < n:
                    raise SystemExit(f"--matrix has shape {K.shape}, smaller than n = {n}")
                K = np.asarray(K[:n, :n], dtype=np.float64)
                K = 0.5 * (K + K.T)
            else:
                K = synthetic_kernel(n, args.seed)
            np.save(path, K)
            del K
            ref, best = None, {}
            order = sorted(drivers, key=lambda d: d != "numpy")  # the reference first
            for _ in range(args.repeats):  # interleaved rounds: a drifting load hits every driver alike
                for driver in order:
                    out = os.path.join(tmp, f"d_{driver}_{n}.npy")
                    proc = subprocess.run(
                        [sys.executable, __file__, "--child", driver, path, out],
                        env=env, capture_output=True, text=True,
                    )
                    if proc.returncode != 0:
                        print(f"{n:>6} {driver:>6} failed: {proc.stderr.strip().splitlines()[-1:]}")
                        continue
                    r = json.loads(proc.stdout.strip().splitlines()[-1])
                    d = np.load(out)
                    if ref is None and driver == "numpy":
                        ref = d
                    dev = float(np.abs(d - ref).max() / abs(ref[0])) if ref is not None else float("nan")
                    print(f"{n:>6} {driver:>6} {r['seconds']:8.2f} {r['cpu']:8.2f} {r['peak'] / 1e6:8.0f} "
                          f"{r['peak'] / n**2:8.1f} "
                          f"{dev:9.1e} {r['residual']:9.1e} {r['orth']:9.1e}", flush=True)
                    old = best.get(driver)
                    if old is not None:
                        r = dict(r, seconds=min(r["seconds"], old["seconds"]), cpu=min(r["cpu"], old["cpu"]),
                                 peak=max(r["peak"], old["peak"]))
                    best[driver] = dict(r, n=n, driver=driver, dev=dev)
            rows += best.values()
    if args.repeats > 1:
        print(f"# least time and largest peak of {args.repeats} rounds:")
        for r in rows:
            print(f"{r['n']:>6} {r['driver']:>6} {r['seconds']:8.2f} {r['cpu']:8.2f} {r['peak'] / 1e6:8.0f} "
                  f"{r['peak'] / r['n']**2:8.1f}")
    for n in sizes:
        at_n = [r for r in rows if r["n"] == n and r["driver"] != "torch"]
        if at_n:
            for key, what in (("seconds", "wall"), ("cpu", "CPU")):
                best = min(at_n, key=lambda r: r[key])
                print(f"# n={n}: fastest workflow driver by {what} time {best['driver']} ({best[key]:.2f} s); "
                      + ", ".join(f"{r['driver']} {r[key] / best[key]:.2f}x" for r in at_n))
    return 0


if __name__ == "__main__":
    sys.exit(main())
