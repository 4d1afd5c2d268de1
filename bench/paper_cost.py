"""Expected compute of the paper preset's eNTK tiles, from measured small tiles.

For each eNTK kernel of a configuration, times two small rectangular tiles on this
machine (``n x n`` and ``2n x 2n`` distinct rows and columns, the compute dtype of the
configuration), counts their flops and those of every tile of the real layout with
``rmtlens.kernels.ntk.entk_flops`` (the schedule the engine would run), and extrapolates with
the marginal rate (difference of flops over difference of times, which removes the
fixed cost of planning a model): time = flops / rate. It
prints the tile count, total TFLOP, CPU-hours at this machine's achieved rate, and
a GPU projection at a stated fraction of a stated peak (a projection, not a
measurement: say so when quoting it).

    python bench/paper_cost.py                          # config/paper.yaml, small tile 48
    python bench/paper_cost.py --small 32 --gpu-tflops 51 --gpu-efficiency 0.6
    python bench/paper_cost.py --rate-tflops 21.5       # a rate measured elsewhere (bench/gpu_check.sh)

With ``--rate-tflops`` no tile is timed here: every backbone's tiles are projected at
that achieved rate (e.g. the rate of a 4096 x 4096 tile measured on a GPU), and the
hours printed are those of that device.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

import torch
import yaml

from rmtlens.inputs import (
    create_backbone,
    digits_images,
    feature_dim,
    normalisation,
    preprocess,
)
from rmtlens.kernels import entk, entk_flops, entk_tiles, scalar_network

REPO = Path(__file__).resolve().parents[1]


def parse():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "config" / "paper.yaml"))
    ap.add_argument("--small", type=int, default=48, help="rows of the measured tile (columns: 2/3 of it)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gpu-tflops", type=float, default=51.0,
                    help="GPU float32 peak in TFLOP/s for the projection (H100 SXM: 67, PCIe: 51; A100: 19.5)")
    ap.add_argument("--gpu-efficiency", type=float, default=0.5, help="fraction of that peak assumed")
    ap.add_argument("--rate-tflops", type=float, default=0.0,
                    help="project at this measured rate (TFLOP/s) instead of timing small tiles here")
    return ap.parse_args()


def main():
    args = parse()
    torch.set_num_threads(args.threads)
    cfg = yaml.safe_load(Path(args.config).read_text())
    dtype = getattr(torch, cfg["entk"]["dtype"])
    memory_gb = cfg["entk"]["memory_gb"]
    print(f"{args.config}: tile {cfg['entk']['tile_size']}, {cfg['entk']['dtype']}, memory_gb {memory_gb}; "
          f"{args.threads} threads, load average {os.getloadavg()[0]:.1f}")
    images = digits_images()[0]
    grand_cpu, grand_gpu, grand_tflop = 0.0, 0.0, 0.0
    for name, bb in cfg["backbones"].items():
        if "entk" not in bb["kernels"]:
            continue
        datasets = [d for d, ds in cfg["datasets"].items() if ds.get("backbones") in (None, []) or name in ds["backbones"]]
        backbone = create_backbone(bb["model"], bb["image_size"], bb.get("seed", 0))
        model = scalar_network(backbone, feature_dim(backbone, bb["image_size"]), bb.get("head_seed", 0))
        mean, std = normalisation(backbone)
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        header = f"\n{name} ({bb['model']}, {bb['image_size']} px, P = {sum(p.numel() for p in model.parameters()):,})"
        if args.rate_tflops:
            rate = args.rate_tflops * 1e12
            print(f"{header}: projected at the given rate {args.rate_tflops:.2f} TFLOP/s")
        else:
            timed = []
            for n in (args.small, 2 * args.small):
                x = preprocess(images[: 2 * n], bb["image_size"], mean, std)
                start = time.perf_counter()
                entk(model, x[:n], x[n:], memory_gb=memory_gb, dtype=dtype)
                seconds = time.perf_counter() - start
                flops = entk_flops(model, bb["image_size"], n, n, memory_gb=memory_gb, dtype=dtype)["total"]
                timed.append((n, seconds, flops))
            (n1, t1, f1), (n2, t2, f2) = timed
            rate = (f2 - f1) / max(t2 - t1, 1e-9)
            print(f"{header}: tiles {n1}x{n1} in {t1:.1f} s and {n2}x{n2} in {t2:.1f} s: marginal rate "
                  f"{rate / 1e9:.1f} GFLOP/s, peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} "
                  f"GiB (was {rss0 / 2**20:.1f})")
        counted: dict = {}  # tile shape -> flops (one plan per shape)
        for d in datasets:
            ds = cfg["datasets"][d]
            tiles = [t for t in entk_tiles(ds["n_pool"], ds["n_test"], cfg["entk"]["tile_size"]) if t.mirror is None]
            flops = 0.0
            for t in tiles:
                rows, cols = t.rows[1] - t.rows[0], t.cols[1] - t.cols[0]
                same = t.rows == t.cols
                key = (rows, None if same else cols)
                if key not in counted:
                    counted[key] = entk_flops(model, bb["image_size"], rows, key[1], memory_gb=memory_gb,
                                              dtype=dtype)["total"]
                flops += counted[key]
            n_weights = len(bb["weights"])
            cpu_h = n_weights * flops / rate / 3600
            gpu_h = n_weights * flops / (args.gpu_tflops * 1e12 * args.gpu_efficiency) / 3600
            grand_cpu, grand_gpu, grand_tflop = grand_cpu + cpu_h, grand_gpu + gpu_h, grand_tflop + n_weights * flops / 1e12
            kernel_gb = (ds["n_pool"] + ds["n_test"]) * ds["n_pool"] * 8 / 2**30
            where = "hours at the given rate" if args.rate_tflops else "CPU-hours here"
            print(f"  {d}: {len(tiles)} tile jobs x {n_weights} weight setting(s), {n_weights * flops / 1e12:,.0f} TFLOP; "
                  f"{cpu_h:,.2f} {where}, {gpu_h:,.2f} GPU-hours projected at the stated peak; kernel file "
                  f"{kernel_gb:.1f} GiB each")
    where = "hours at the given rate" if args.rate_tflops else "CPU-hours at the achieved rate here"
    print(f"\ntotal eNTK: {grand_tflop:,.0f} TFLOP, {grand_cpu:,.2f} {where}, "
          f"{grand_gpu:,.2f} GPU-hours projected at {args.gpu_efficiency:.0%} of {args.gpu_tflops} TFLOP/s")


if __name__ == "__main__":
    main()
