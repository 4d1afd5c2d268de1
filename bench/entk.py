"""Benchmark of rmtlens.kernels.ntk.entk against two baselines, in one process.

Baselines (implemented here, same model, inputs and thread count):

(a) per-parameter-chunk, per-sample autograd loop (the approach of [W22]'s code,
    github aw31/empirical-ntks): for each chunk of the flattened parameter vector
    sized so that the float32 gradient buffer ``N x chunk`` fits the baseline
    memory budget, one forward + backward per sample writes that chunk of the
    Jacobian; then ``K += J_chunk J_chunkᵀ`` (float32 products, float64 sum);
(b) torch.func ``vmap(jacrev)`` per-sample Jacobians (batches of 16 samples, the
    fast path of vmap) contracted with ``einsum`` (PyTorch's NTK tutorial), over
    parameter groups sized by the same memory rule.

Baselines may run at a smaller ``--n-baseline`` and are extrapolated to ``--n``
as ``t_grad·(N/n) + t_contract·(N/n)²`` (their chunking is chosen for the target
N, so the per-sample cost measured is the one they would pay at N). The matmul
peak of this machine is measured in the same process; the contraction phase of
``entk`` is reported in GFLOP/s against it. Peak memory is the growth of the
process's peak RSS (VmHWM, reset through /proc/self/clear_refs) during a method.

Engines side by side: ``--baseline OTHER/src`` times another version of the engine
(e.g. a git worktree of the commit before a change) against this one; every engine
run is a fresh process with its own sources first on PYTHONPATH (``--repeats``:
runs per engine, interleaved, the least time counts). Each engine's time is printed
against the flop bound (the least flop count of the engines at the best measured
float32 matmul peak) and against neural-tangents STRUCTURED_DERIVATIVES at N when
``--peers-nt`` runs it, with the split into planning + self-check, gradient pass and
contraction by layer group. ``--tile T`` adds the same figure for a ``T x T``
rectangular tile (config/paper.yaml's tiles are 4096).

Run: ``PYTHONPATH=src python bench/entk.py`` (defaults: resnet18, 32 px, N=1024,
2 threads, both baselines at N=128); ``--help`` lists the options.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench/peers

GIB = 2**30


# --------------------------------------------------------------------------------------
# measurement helpers


def read_status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class PeakRSS:
    """Growth of the process's peak resident set during a ``with`` block (GiB)."""

    def __enter__(self):
        self.resettable = reset_peak()
        self.start_rss = read_status_kib("VmRSS")
        self.start_hwm = read_status_kib("VmHWM")
        return self

    def __exit__(self, *exc):
        hwm = read_status_kib("VmHWM")
        base = self.start_rss if self.resettable else self.start_hwm
        self.gib = max(0, hwm - base) / 2**20
        return False


def matmul_peak(dtype: torch.dtype, size: int = 4096, seconds: float = 1.5, device: str = "cpu") -> float:
    """Best GFLOP/s of ``size x size`` matmuls over a few repetitions (on ``device``; CUDA
    matmuls use TF32 when ``torch.backends.cuda.matmul.allow_tf32`` is set)."""
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    sync = torch.cuda.synchronize if a.is_cuda else (lambda: None)
    a @ b  # warm-up
    sync()
    best = 0.0
    stop = time.perf_counter() + seconds
    while time.perf_counter() < stop:
        t = time.perf_counter()
        a @ b
        sync()
        best = max(best, 2.0 * size**3 / (time.perf_counter() - t) / 1e9)
    return best


class PeakCUDA:
    """Peak CUDA memory allocated during a ``with`` block (GiB), beyond what it started with."""

    def __enter__(self):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        self.start = torch.cuda.memory_allocated()
        return self

    def __exit__(self, *exc):
        torch.cuda.synchronize()
        self.gib = (torch.cuda.max_memory_allocated() - self.start) / GIB
        return False


# --------------------------------------------------------------------------------------
# baselines


def baseline_param_chunks(model, x, memory_gb, n_target):
    """(a) [W22]-style: per-sample backward per parameter chunk, then chunked J Jᵀ."""
    params = [p for p in model.parameters()]
    sizes = [p.numel() for p in params]
    starts = np.concatenate([[0], np.cumsum(sizes)])
    P = int(starts[-1])
    chunk = max(1, min(P, int(0.9 * memory_gb * GIB / (4 * n_target))))
    n = x.shape[0]
    K = torch.zeros(n, n, dtype=torch.float64)
    J = torch.empty(n, chunk, dtype=torch.float32)
    t_grad = t_mm = 0.0
    old = [p.requires_grad for p in params]
    try:
        for c0 in range(0, P, chunk):
            c1 = min(P, c0 + chunk)
            active = [i for i in range(len(params)) if starts[i] < c1 and starts[i + 1] > c0]
            for i, p in enumerate(params):
                p.requires_grad_(i in active)
            t = time.perf_counter()
            for s in range(n):
                out = model(x[s : s + 1]).sum()
                grads = torch.autograd.grad(out, [params[i] for i in active], allow_unused=True)
                for i, g in zip(active, grads):
                    lo, hi = max(c0, starts[i]), min(c1, starts[i + 1])
                    flat = g.reshape(-1) if g is not None else torch.zeros(sizes[i])
                    J[s, lo - c0 : hi - c0] = flat[lo - starts[i] : hi - starts[i]]
            t_grad += time.perf_counter() - t
            t = time.perf_counter()
            width = c1 - c0
            col = 1 << 16
            for j0 in range(0, width, col):
                block = J[:, j0 : min(width, j0 + col)]
                K += (block @ block.T).double()
            t_mm += time.perf_counter() - t
    finally:
        for p, r in zip(params, old):
            p.requires_grad_(r)
    info = dict(chunk=chunk, n_chunks=math.ceil(P / chunk), buffer_gib_at_target=4 * n_target * chunk / GIB)
    return K.numpy(), t_grad, t_mm, info


def baseline_vmap_jacrev(model, x, memory_gb, n_target, batch=16):
    """(b) torch.func: vmap(jacrev) per-sample Jacobians, einsum contraction."""
    from torch.func import functional_call, jacrev, vmap

    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    chunk = max(1, int(0.9 * memory_gb * GIB / (4 * n_target)))
    groups, current, size = [], [], 0
    for k, v in params.items():
        if current and size + v.numel() > chunk:
            groups.append(current)
            current, size = [], 0
        current.append(k)
        size += v.numel()
    groups.append(current)
    largest = max(sum(params[k].numel() for k in g) for g in groups)
    n = x.shape[0]
    K = torch.zeros(n, n, dtype=torch.float64)
    t_grad = t_mm = 0.0
    for names in groups:
        fixed = {k: v for k, v in params.items() if k not in names}

        def f_single(theta, x1):
            return functional_call(model, ({**fixed, **theta}, buffers), (x1.unsqueeze(0),)).squeeze()

        theta = {k: params[k] for k in names}
        t = time.perf_counter()
        jac = {k: [] for k in names}
        for s in range(0, n, batch):
            j = vmap(jacrev(f_single), (None, 0))(theta, x[s : s + batch])
            for k in names:
                jac[k].append(j[k].reshape(j[k].shape[0], -1))
        jac = {k: torch.cat(v) for k, v in jac.items()}
        t_grad += time.perf_counter() - t
        t = time.perf_counter()
        K += sum(torch.einsum("Nf,Mf->NM", j, j) for j in jac.values()).double()
        t_mm += time.perf_counter() - t
        del jac
    info = dict(n_groups=len(groups), chunk=largest, buffer_gib_at_target=4 * n_target * largest / GIB)
    return K.numpy(), t_grad, t_mm, info



# --------------------------------------------------------------------------------------
# peers: other libraries computing the same kernel

PEER_TOLERANCE = 1e-4  # max|ΔK|/max|K| between two float32 computations of the kernel
NT_IMPLS = {"nt-jc": "JACOBIAN_CONTRACTION", "nt-nvp": "NTK_VECTOR_PRODUCTS", "nt-sd": "STRUCTURED_DERIVATIVES"}


def blas_report() -> str:
    """Which BLAS kernels run numpy's and PyTorch's products (threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl not installed"
    parts = []
    for info in threadpool_info():
        arch = info.get("architecture") or "-"
        parts.append(f"{info['internal_api']}:{os.path.basename(info['filepath'])}:{arch}:{info['num_threads']}t")
    env = {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_WAIT_POLICY")}
    return f"{'; '.join(parts)}; env {env}"


def numpy_peak(dtype=np.float32, size: int = 4096, seconds: float = 1.5) -> float:
    """Best GFLOP/s of numpy's matmul (its own OpenBLAS)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size)).astype(dtype)
    b = rng.standard_normal((size, size)).astype(dtype)
    a @ b
    best = 0.0
    stop = time.perf_counter() + seconds
    while time.perf_counter() < stop:
        t = time.perf_counter()
        a @ b
        best = max(best, 2.0 * size**3 / (time.perf_counter() - t) / 1e9)
    return best


def run_nt(net, x, runs, model_name):
    """neural-tangents in its own environment; returns (info, {impl: K}) or (reason, None)."""
    import json
    import subprocess
    import tempfile

    here = os.path.dirname(os.path.abspath(__file__))
    try:
        env_py = subprocess.run(
            ["bash", os.path.join(here, "peers", "nt_env.sh")], capture_output=True, text=True, timeout=1800
        )
    except subprocess.TimeoutExpired:
        return "creating its environment took over 30 min", None
    if env_py.returncode != 0:
        return f"environment not available: {env_py.stderr.strip().splitlines()[-1:]}", None
    python = env_py.stdout.strip().splitlines()[-1]
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "in.npz"), os.path.join(tmp, "out.npz")
        n_max = max(n for _, n, _ in runs)
        with torch.no_grad():
            f_torch = net(x[:64]).double().numpy()
        arrays = {"p:" + k: v.detach().numpy() for k, v in net.named_parameters()}
        arrays.update({"s:" + k: v.detach().numpy() for k, v in net.named_buffers() if "running" in k})
        spec = dict(model=model_name, runs=runs)
        np.savez(src, spec=json.dumps(spec), x=x[:n_max].numpy(), f_torch=f_torch, **arrays)
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        proc = subprocess.run([python, os.path.join(here, "peers", "nt_run.py"), src, dst], env=env,
                              capture_output=True, text=True)
        sys.stderr.write(proc.stderr[-4000:])
        if proc.returncode != 0:
            return f"nt_run.py failed (rc {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}", None
        out = np.load(dst)
        info = json.loads(str(out["result"]))
        return info, {k[2:]: out[k] for k in out.files if k.startswith("K:")}


def layer_group(label: str) -> str:
    """Contraction term label -> layer group (``layer3``; ``formed`` for the stem, norms
    and head, whose formed gradients are contracted together)."""
    if label in ("formed", "mirror"):
        return label
    parts = label.split(".")
    for part in parts:
        if part.startswith(("layer", "stages", "blocks")):
            return part
    return parts[0] if len(parts) > 1 else label


def term_bounds(plan, n_r: int, n_c: int, symmetric: bool, peak: float) -> dict:
    """Per contraction term label: its lower bound in seconds (rank-k product flops plus
    explicit formation, at ``peak`` GFLOP/s)."""
    entries = n_r * (n_r + 1) / 2 if symmetric else float(n_r * n_c)
    samples = n_r if symmetric else n_r + n_c
    out = {"formed": 2.0 * entries * plan.n_formed / peak / 1e9}
    for s in plan.sites:
        if s.store != "raw":
            continue
        if s.method == "explicit":
            flops = entries * s.explicit_pair_flops + s.form_flops * samples
        else:
            flops = entries * s.gram_flops
        out[s.weight] = flops / peak / 1e9
    return out


def profile(ntk, net, x, args, peak):
    """Where the time of one entk run goes: phases, per-term contraction, operator split."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    timings: dict = {}
    t0 = time.perf_counter()
    ntk._entk(net, x, None, args.memory_gb, torch.float32, None, False, False, timings)
    total = time.perf_counter() - t0
    print(f"# entk N={args.n}: total {total:.2f} s = plan and self-check {timings.get('plan', float('nan')):.2f} s "
          f"+ gradient pass {timings['gradient_pass']:.2f} s ({100 * timings['gradient_pass'] / total:.0f}%) "
          f"+ contraction {timings['contraction']:.2f} s ({100 * timings['contraction'] / total:.0f}%) + rest "
          f"{total - timings.get('plan', 0.0) - timings['gradient_pass'] - timings['contraction']:.2f} s")
    bounds = term_bounds(timings["schedule"].plan, args.n, args.n, True, peak)
    print(f"# per-term contraction (bound: rank-k product flops + formation at the best measured peak "
          f"{peak:.0f} GFLOP/s)")
    print(f"{'term':40s} {'s':>6s} {'bound s':>7s} {'x bound':>7s}")
    for label, t in timings.get("terms", []):
        b = bounds.get(label)
        print(f"{label:40s} {t:6.3f} {b or float('nan'):7.3f} {t / b if b else float('nan'):7.2f}")
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        ntk._entk(net, x, None, args.memory_gb, torch.float32, None, False, False, {})
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14, max_name_column_width=36))
    return 0


# --------------------------------------------------------------------------------------
# engines timed side by side: each run in its own process, on its own sources


def network_and_inputs(model: str, image_size: int, seed: int, n: int):
    """The benchmark's scalar network and ``n`` inputs (digits upsampled, tiled past 1,797)."""
    from rmtlens.inputs.backbones import create_backbone, feature_dim, normalisation, preprocess
    from rmtlens.inputs.datasets import digits_images
    from rmtlens.kernels.ntk.network import scalar_network

    backbone = create_backbone(model, image_size, seed)
    net = scalar_network(backbone, feature_dim(backbone, image_size), seed)
    images, _, _ = digits_images(image_size)
    images = np.concatenate([images] * math.ceil(n / len(images)))[:n]
    return net, preprocess(images, image_size, *normalisation(backbone))


def worker(args) -> int:
    """One timed ``entk`` run of the engine on PYTHONPATH (``--worker n``: N x N symmetric;
    ``--worker tile``: a T x T rectangular tile of 2T distinct samples); JSON to
    ``--worker-out``, the kernel next to it (``.npy``)."""
    import json

    from rmtlens.kernels.ntk import engine as ntk

    torch.set_num_threads(args.threads)
    if args.clock == "cpu":  # every timer of this process (the engine's too) counts CPU seconds
        time.perf_counter = time.process_time
    tile = args.worker == "tile"
    n = 2 * args.tile if tile else args.n
    net, x = network_and_inputs(args.model, args.image_size, args.seed, n)
    with torch.no_grad():  # warm-up: first calls of conv kernels allocate caches
        net(x[:2])
    cuda = args.device.startswith("cuda")
    ntk._entk(net, x[:4], None, args.memory_gb, torch.float32, args.device, args.tf32, False, None)
    rows, cols = (x[: args.tile], x[args.tile :]) if tile else (x, None)
    timings: dict = {}
    with PeakCUDA() if cuda else PeakRSS() as mem:
        t0, c0 = time.perf_counter(), time.process_time()
        K = ntk._entk(net, rows, cols, args.memory_gb, torch.float32, args.device, args.tf32, False, timings)
        total, cpu = time.perf_counter() - t0, time.process_time() - c0
    groups: dict = {}
    for label, t in timings.get("terms", []):
        groups[layer_group(label)] = groups.get(layer_group(label), 0.0) + t
    sched = timings["schedule"]
    stored = getattr(sched.plan, "store_bytes_per_sample", 0)
    stored = stored() if callable(stored) else stored  # a method in older engines (the --baseline worktree)
    np.save(args.worker_out + ".npy", K)
    out = dict(total=total, cpu=cpu, plan=timings.get("plan", float("nan")), gradient_pass=timings["gradient_pass"],
               contraction=timings["contraction"], groups=groups, flops=timings["flops"], layout=timings["layout"],
               pass_batch=sched.pass_batch, super_block=sched.super_block, peak_gib=mem.gib,
               stored_gib=stored * n / GIB)
    with open(args.worker_out, "w") as fh:
        json.dump(out, fh)
    return 0


def run_engine(src: str, mode: str, args, tmp: str, tag: str) -> dict:
    """``worker`` in a fresh process with ``src`` first on PYTHONPATH."""
    import json
    import subprocess

    out = os.path.join(tmp, re.sub(r"[^\w.-]+", "_", tag) + ".json")  # a baseline's label may be a path
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", mode, "--worker-out", out,
           "--model", args.model, "--n", str(args.n), "--tile", str(args.tile), "--image-size", str(args.image_size),
           "--threads", str(args.threads), "--memory-gb", str(args.tile_memory_gb if mode == "tile" else args.memory_gb),
           "--seed", str(args.seed), "--clock", args.clock, "--device", args.device] + (["--tf32"] if args.tf32 else [])
    env = dict(os.environ, PYTHONPATH=src)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"engine {src} failed ({mode}):\n{proc.stderr[-3000:]}")
    with open(out) as fh:
        result = json.load(fh)
    result["kernel"] = out + ".npy"
    return result


def source_label(src: str) -> str:
    import subprocess

    try:
        rev = subprocess.run(["git", "-C", src, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(["git", "-C", src, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return rev.stdout.strip() + ("+changes" if dirty else "") if rev.returncode == 0 else src
    except OSError:
        return src


def time_engines(engines, mode: str, args, repeats: int, tmp: str) -> dict:
    """Best (least total time) of ``repeats`` runs per engine, the engines interleaved."""
    best: dict = {}
    for r in range(repeats):
        for label, src in engines:
            res = run_engine(src, mode, args, tmp, f"{mode}-{label}-{r}")
            print(f"#   {mode} run {r + 1}/{repeats} {label}: {res['total']:.2f} s (CPU time {res['cpu']:.2f} s)",
                  flush=True)
            if label not in best or res["total"] < best[label]["total"]:
                best[label] = res
    return best


def print_engines(best: dict, what: str, peak: float, nt_time: float | None) -> None:
    """Each engine's time against the flop bound (and neural-tangents), and its split."""
    flops = min(r["flops"]["total"] for r in best.values())  # work the eNTK cannot skip: the least counted
    bound = flops / peak / 1e9
    ref = next(iter(best.values()))
    f = ref["flops"]
    print(f"\n# {what}: bound = {flops / 1e12:.3f} TFLOP (gradient pass {f['gradient_pass'] / 1e12:.3f} + "
          f"contraction {f['contraction'] / 1e12:.3f}) at {peak:.1f} GFLOP/s = {bound:.2f} s")
    groups = sorted({g for r in best.values() for g in r["groups"]})
    head = (f"{'engine':24s} {'time s':>7s} {'x bound':>7s} {'nt-sd/':>7s} {'peak GiB':>8s} {'plan+chk':>8s} "
            f"{'grad pass':>9s} {'contract':>8s} | " + " ".join(f"{g[:9]:>9s}" for g in groups))
    print(head)
    print("-" * len(head))
    for label, r in best.items():
        vs_nt = f"{nt_time / r['total']:6.2f}x" if nt_time else f"{'-':>7s}"
        print(f"{label:24s} {r['total']:7.2f} {r['total'] / bound:7.2f} {vs_nt} {r['peak_gib']:8.2f} {r['plan']:8.2f} "
              f"{r['gradient_pass']:9.2f} {r['contraction']:8.2f} | "
              + " ".join(f"{r['groups'][g]:9.2f}" if g in r["groups"] else f"{'-':>9s}" for g in groups))
    kernels = {label: np.load(r["kernel"]) for label, r in best.items()}
    if len(kernels) > 1:
        (la, ka), (lb, kb) = list(kernels.items())[:2]
        print(f"# {la} vs {lb}: max|ΔK|/max|K| = {np.abs(ka - kb).max() / np.abs(kb).max():.1e}")


# --------------------------------------------------------------------------------------


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet18", help="timm model name")
    ap.add_argument("--n", type=int, default=1024, help="kernel size N (N x N symmetric)")
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--baselines", default="a,b", help="comma list of a, b, or 'none'")
    ap.add_argument("--n-baseline", type=int, default=128, help="N at which baselines run")
    ap.add_argument("--memory-gb", type=float, default=2.0, help="memory_gb of entk")
    ap.add_argument("--baseline-memory-gb", type=float, default=6.0,
                    help="gradient-buffer budget of the baselines at the target N")
    ap.add_argument("--n-check", type=int, default=128, help="N of the float32-vs-float64 check")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--profile", action="store_true",
                    help="profile the entk run instead (torch.profiler op split, per-term times); "
                         "no peers or baselines")
    ap.add_argument("--peers", default="none",
                    help="comma list of nt-jc, nt-nvp, nt-sd, nngeometry, ntk-vp, or 'none'")
    ap.add_argument("--peer-n", default="",
                    help="N per peer, e.g. 'nt-jc=256,nngeometry=256' (default: --n); smaller N is "
                         "extrapolated as time·(N/n)² and marked")
    ap.add_argument("--peer-batch", default="nt-jc=32,nngeometry=64,ntk-vp=64",
                    help="sample batch of the peers that take one (nt-jc, nngeometry, ntk-vp)")
    ap.add_argument("--baseline", default="",
                    help="src folder of another version of the engine (e.g. a git worktree of the commit "
                         "before a change): timed side by side with this one, each run in its own process")
    ap.add_argument("--repeats", type=int, default=1,
                    help="timed runs per engine at N, engines interleaved; the least time counts")
    ap.add_argument("--tile", type=int, default=0,
                    help="also time a T x T rectangular tile (2T distinct samples; config/paper.yaml's "
                         "tile is 4096); 0: no tile")
    ap.add_argument("--tile-repeats", type=int, default=1, help="timed runs per engine of the tile")
    ap.add_argument("--tile-memory-gb", type=float, default=8.0,
                    help="memory_gb of entk for the tile (8: all 2T samples' pieces stay resident)")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="engine timings in wall seconds, or CPU seconds of the engine's process (for "
                         "development on a shared machine with --threads 1; the bound is wall-clock)")
    ap.add_argument("--peers-nt", action="store_true",
                    help="add neural-tangents STRUCTURED_DERIVATIVES at N (as --peers nt-sd)")
    ap.add_argument("--device", default="cpu", help="where entk computes: cpu or cuda (cuda: peak = GPU memory "
                                                    "allocated; no baselines, peers or float64 check)")
    ap.add_argument("--tf32", action="store_true", help="allow TF32 matmuls and convolutions on CUDA")
    ap.add_argument("--json", default="", help="also write the engines' best runs (times, flops, split) here")
    ap.add_argument("--worker", choices=["n", "tile"], help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.peers_nt and "nt-sd" not in args.peers:
        args.peers = "nt-sd" if args.peers.strip() == "none" else args.peers + ",nt-sd"

    torch.set_num_threads(args.threads)
    import tempfile

    import rmtlens
    from rmtlens.kernels.ntk import engine as ntk

    net, x = network_and_inputs(args.model, args.image_size, args.seed, args.n)
    P = sum(p.numel() for p in net.parameters())
    print(f"# eNTK benchmark: {args.model}, {args.image_size}px, N={args.n}, P={P:,}, "
          f"threads={torch.get_num_threads()}, torch {torch.__version__}")
    print(f"# load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs "
          "(timings are only meaningful on an otherwise idle machine)")

    if args.clock == "cpu":  # the peaks in CPU seconds too (the bound is then CPU seconds)
        time.perf_counter = time.process_time
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = args.tf32
        print(f"# device {torch.cuda.get_device_name(args.device)}, TF32 {'on' if args.tf32 else 'off'}")
        args.baselines, args.peers, args.n_check = "none", "none", 0
    peak32 = matmul_peak(torch.float32, device=args.device)
    peak64 = matmul_peak(torch.float64, device=args.device)
    np_peak = 0.0 if cuda else numpy_peak()
    try:
        from rmtlens.kernels.ntk.contraction import _blas

        route = _blas(torch.device("cpu"), torch.float32)
    except ImportError:  # an engine before BLAS routing
        route = "torch"
    print(f"# matmul peak (4096^3, best of repeats): torch float32 {peak32:.1f} GFLOP/s, float64 {peak64:.1f} "
          f"GFLOP/s; numpy float32 {np_peak:.1f} GFLOP/s")
    print(f"# BLAS: {blas_report()}; entk products through {route}")
    peak32 = max(peak32, np_peak)

    if args.profile:
        with torch.no_grad():  # warm-up: first calls of conv kernels allocate caches
            net(x[:2])
        ntk.entk(net, x[:4], dtype=torch.float32, memory_gb=args.memory_gb)
        return profile(ntk, net, x, args, peak32)

    own = os.path.dirname(os.path.dirname(os.path.abspath(rmtlens.__file__)))
    engines = []
    if args.baseline:
        engines.append((f"before {source_label(args.baseline)}", os.path.abspath(args.baseline)))
    engines.append((f"{'after' if args.baseline else 'entk'} {source_label(own)}", own))
    own_label = engines[-1][0]
    tmp_dir = tempfile.TemporaryDirectory()
    tmp = tmp_dir.name
    print(f"# engines (each run in its own process): {', '.join(f'{lab} = {src}' for lab, src in engines)}")
    best = time_engines(engines, "n", args, args.repeats, tmp)
    ours = best[own_label]
    K = np.load(ours["kernel"])
    t_ours = ours["total"]
    flops = ours["flops"]
    rows = [dict(method="entk float32", n=args.n, t=t_ours, t_grad=ours["gradient_pass"], t_mm=ours["contraction"],
                 peak=ours["peak_gib"], t_at_n=t_ours, peak_at_n=ours["peak_gib"])]
    cov = flops["coverage"]
    print(f"# entk plan: parameters per method {cov}; pass batch {ours['pass_batch']}, "
          f"super-block {ours['super_block']}, stored pieces {ours['stored_gib']:.3f} GiB")
    print(f"# flops at N={args.n}: explicit 2·N²·P = {flops['explicit_jjt'] / 1e12:.2f} TFLOP; entk does "
          f"{flops['total'] / 1e12:.3f} TFLOP = gradient pass {flops['gradient_pass'] / 1e12:.3f} "
          f"+ contraction {flops['contraction'] / 1e12:.3f} (explicit GEMM {flops['contraction_explicit'] / 1e12:.3f}, "
          f"structured Gram {flops['contraction_structured'] / 1e12:.3f}, formation {flops['formation'] / 1e12:.3f}); "
          f"ratio {flops['explicit_jjt'] / flops['total']:.1f}x fewer")
    gf_mm = flops["contraction"] / ours["contraction"] / 1e9
    gf_pass = flops["gradient_pass"] / ours["gradient_pass"] / 1e9
    print(f"# entk contraction phase: {gf_mm:.1f} GFLOP/s = {100 * gf_mm / peak32:.0f}% of float32 peak; "
          f"gradient pass {gf_pass:.1f} GFLOP/s; effective 2·N²·P / total time = "
          f"{flops['explicit_jjt'] / t_ours / 1e9:.0f} GFLOP/s")

    # float32 versus float64 on a subset
    nc = min(args.n_check, args.n)
    if nc:
        with PeakRSS() as mem64:
            t0 = time.perf_counter()
            K64 = ntk.entk(net, x[:nc], dtype=torch.float64, memory_gb=args.memory_gb)
            t64 = time.perf_counter() - t0
        K32 = K[:nc, :nc]
        err_max = np.abs(K32 - K64).max() / np.abs(K64).max()
        err_fro = np.linalg.norm(K32 - K64) / np.linalg.norm(K64)
        print(f"# float32 vs float64 (N={nc}): max|ΔK|/max|K| = {err_max:.2e}, ‖ΔK‖_F/‖K‖_F = {err_fro:.2e}; "
              f"float64 run {t64:.2f} s, peak +{mem64.gib:.2f} GiB")

    nb = min(args.n_baseline, args.n)
    scale = args.n / nb
    chosen = [] if args.baselines.strip() == "none" else [b.strip() for b in args.baselines.split(",")]
    for name in chosen:
        fn = {"a": baseline_param_chunks, "b": baseline_vmap_jacrev}.get(name)
        if fn is None:
            raise SystemExit(f"--baselines: unknown baseline {name!r} (use a, b or none)")
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            Kb, t_grad, t_mm, info = fn(net, x[:nb], args.baseline_memory_gb, args.n)
            t_meas = time.perf_counter() - t0
        err = np.abs(Kb - K[:nb, :nb]).max() / np.abs(Kb).max()
        t_at_n = t_grad * scale + t_mm * scale**2
        buffer_meas = 4 * nb * info.get("chunk", 0) / GIB
        peak_at_n = mem.gib - buffer_meas + info.get("buffer_gib_at_target", 0.0)
        label = {"a": "(a) per-sample loop [W22]", "b": "(b) vmap(jacrev)+einsum"}[name]
        rows.append(dict(method=label, n=nb, t=t_meas, t_grad=t_grad, t_mm=t_mm, peak=mem.gib,
                         t_at_n=t_at_n, peak_at_n=peak_at_n))
        print(f"# baseline {label}: {info}; max rel. difference to entk float32 = {err:.1e}")

    peers = [] if args.peers.strip() == "none" else [p.strip() for p in args.peers.split(",")]
    peer_n = dict(kv.split("=") for kv in args.peer_n.split(",") if kv)
    peer_batch = {k: int(v) for k, v in (kv.split("=") for kv in args.peer_batch.split(",") if kv)}
    unknown = set(peers) - set(NT_IMPLS) - {"nngeometry", "ntk-vp"}
    if unknown:
        raise SystemExit(f"--peers: unknown {sorted(unknown)}")

    def add_peer(label, n, t, peak, Kp, extra=""):
        err = np.abs(Kp - K[:n, :n]).max() / np.abs(K[:n, :n]).max()
        t_at_n = t * (args.n / n) ** 2
        ok = bool(err <= PEER_TOLERANCE)
        rows.append(dict(method=label, n=n, t=t, t_grad=float("nan"), t_mm=float("nan"), peak=peak,
                         t_at_n=t_at_n if ok else float("nan"), peak_at_n=peak, err=err,
                         note=(extra + (" extrap." if n < args.n else "")) if ok else "DIFFERS: no ratio"))
        print(f"# peer {label}: N={n}, {t:.2f} s, peak +{peak:.2f} GiB, max rel. difference to entk {err:.1e}"
              f"{'' if ok else ' > tolerance: ratio refused'} {extra}")

    nt_runs = [[NT_IMPLS[p], int(peer_n.get(p, args.n)), peer_batch.get(p, 0)] for p in peers if p in NT_IMPLS]
    nt_time = None  # neural-tangents STRUCTURED_DERIVATIVES at N, when it ran and agreed
    if nt_runs:
        info, kernels = run_nt(net, x.float(), nt_runs, args.model)
        if kernels is None:
            print(f"# peer neural-tangents skipped: {info}")
        else:
            print(f"# neural-tangents {info['nt']} (jax {info['jax']}): JAX port reproduces the network's "
                  f"outputs to max rel. {info['port_max_rel_diff']:.1e}")
            for name, r in info["runs"].items():
                add_peer(f"nt {name.lower()}", r["n"], r["run_s"], r["peak_gib"], kernels[name],
                         f"jit {r['compile_s']:.1f}s")
                if name == NT_IMPLS["nt-sd"] and r["n"] == args.n and rows[-1]["t_at_n"] == rows[-1]["t_at_n"]:
                    nt_time = r["run_s"]
    from peers.torch_peers import nngeometry_gram, ntk_vector_products

    for name, fn in (("nngeometry", nngeometry_gram), ("ntk-vp", ntk_vector_products)):
        if name not in peers:
            continue
        n = int(peer_n.get(name, args.n))
        try:
            with PeakRSS() as mem:
                t0 = time.perf_counter()
                Kp = fn(net, x[:n].float(), peer_batch.get(name, 64))
                t = time.perf_counter() - t0
        except Exception as exc:  # a peer that cannot run this model: say why
            print(f"# peer {name} failed: {type(exc).__name__}: {str(exc)[:200]}")
            continue
        label = {"nngeometry": "nngeometry GramMatrix", "ntk-vp": "torch.func NTK-vp"}[name]
        add_peer(label, n, t, mem.gib, Kp)

    print()
    header = (f"{'method':28s} {'N run':>6s} {'time(s)':>8s} {'grads(s)':>8s} {'J·Jᵀ(s)':>8s} "
              f"{'peak GiB':>8s} | {'time@N':>8s} {'µs/entry':>8s} {'peak@N':>7s} {'vs entk':>8s}")
    print(header)
    print("-" * len(header))
    for r in rows:
        ratio = r["t_at_n"] / t_ours
        print(f"{r['method']:28s} {r['n']:6d} {r['t']:8.2f} {r['t_grad']:8.2f} {r['t_mm']:8.2f} "
              f"{r['peak']:8.2f} | {r['t_at_n']:8.1f} {1e6 * r['t_at_n'] / args.n**2:8.2f} "
              f"{r['peak_at_n']:7.2f} {ratio:7.1f}x  {r.get('note', '')}")
    print_engines(best, f"entk, N = {args.n} symmetric", peak32, nt_time)
    summary = dict(device=args.device, tf32=args.tf32, image_size=args.image_size, peak_gflops=peak32,
                   n=dict(size=args.n, nt_sd=nt_time, engines=best))
    if args.tile:
        print(f"\n# tile {args.tile} x {args.tile} (rectangular, {2 * args.tile} distinct samples):", flush=True)
        best_tile = time_engines(engines, "tile", args, args.tile_repeats, tmp)
        print_engines(best_tile, f"entk, tile {args.tile} x {args.tile}", peak32, None)
        summary["tile"] = dict(size=args.tile, engines=best_tile)
    if args.json:
        import json

        with open(args.json, "w") as fh:
            json.dump(summary, fh, indent=1, default=str)
        print("# neural-tangents is not run at the tile (its time there would be about its ratio at N times ours)")
    print("# nt-sd/: neural-tangents STRUCTURED_DERIVATIVES' time at N over the engine's (how many times faster)")
    print("# bound: the least flop count of the engines (gradient pass + contraction, symmetric products "
          "counted at half) at the best measured float32 matmul peak; plan+chk = planning and the per-sample "
          "self-check; columns after | = contraction seconds per layer group (formed: stem, norms and head "
          "gradients contracted together)")
    tmp_dir.cleanup()
    print(f"\n# load average at end: {os.getloadavg()[0]:.2f}")
    print("peers run at n < N: time@N = time·(N/n)² (extrap.), peak as measured at n; a peer whose "
          f"kernel differs from entk's by more than {PEER_TOLERANCE:g} (max|ΔK|/max|K|) gets no ratio.")
    print(f"time@N for baselines run at N < {args.n}: t_grad·(N/n) + t_contract·(N/n)²; peak@N adds "
          "their float32 gradient buffer at N (4·N·chunk bytes). µs/entry = time@N / N². "
          "Peak = growth of peak RSS during the method.")


if __name__ == "__main__":
    sys.exit(main())
