"""eNTK engine across model families: exactness against jacrev, path per parameter, time.

For each family (timm models at 32 px or their smallest input, small widths where
timm allows; two ``nn.MultiheadAttention`` models built here), in float64 and one
process: ``entk`` of ``--n`` samples against the brute-force kernel from
``torch.func.jacrev`` per-sample Jacobians (``J Jᵀ``), the maximum relative error
``max|ΔK| / max|K|``, the number of parameter tensors per path (S structured Gram,
E explicit per-sample gradients, A affine closed form, V single-op VJP, F
whole-network fallback, Z unused), and the time of ``entk`` relative to jacrev.
Where parameters go to the whole-network fallback, the table says so and prints the
share of ``entk``'s time spent in it against its share of the parameters.

Run: ``PYTHONPATH=src python bench/entk_families.py`` (``--only swin,beit`` for a
subset, ``--n`` samples, ``--threads``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tests.helpers
from tests.helpers import HiddenScale, MHANet, float64_network, jacobian_kernel, mixer  # noqa: E402

# (label, timm name, image size, create_model kwargs); "mha" rows are built below
FAMILIES = [
    ("resnet18", "resnet18", 32, {}),
    ("convnext_atto", "convnext_atto", 32, {}),
    ("deit_tiny", "deit_tiny_patch16_224", 32, {}),
    ("vit (test_vit)", "test_vit", 32, {}),
    ("swin_tiny", "swin_tiny_patch4_window7_224", 32, {}),
    ("swin small widths", "swin_tiny_patch4_window7_224", 32,
     dict(embed_dim=16, depths=(2, 2), num_heads=(1, 2), window_size=4)),
    ("efficientnet_b0", "efficientnet_b0", 32, {}),
    ("mobilenetv3_small_050", "mobilenetv3_small_050", 32, {}),
    ("efficientnet evonorm", "test_efficientnet_evos", 32, {}),
    ("beit (rel. pos. bias)", "beit_base_patch16_224", 32,
     dict(patch_size=8, embed_dim=32, depth=2, num_heads=2, use_rel_pos_bias=True, init_values=0.1)),
    ("vit_relpos", "test_vit_relpos", 32, {}),
    ("nfnet (test_nfnet)", "test_nfnet", 32, {}),
    ("regnetx_002", "regnetx_002", 32, {}),
    ("regnety_002 (SE)", "regnety_002", 32, {}),
    ("mlp-mixer", "MlpMixer", 32, dict(patch_size=8, num_blocks=2, embed_dim=32)),
    ("resmlp", "MlpMixer", 32, dict(patch_size=8, num_blocks=2, embed_dim=32, mlp_ratio=4, resmlp=True)),
    ("levit_128s", "levit_128s", 32, {}),
    ("cait", "cait_xxs24_224", 32, dict(patch_size=8, embed_dim=32, depth=2, num_heads=2, depth_token_only=1)),
    ("mha batch_first", "mha", 16, dict(batch_first=True, width=16)),
    ("mha seq-first", "mha", 16, dict(batch_first=False, width=16)),
    ("toy: autograd.Function", "hidden", 16, {}),  # shows the whole-network fallback
]

PATHS = [("structured", "S"), ("explicit", "E"), ("affine", "A"), ("generic", "V"), ("fallback", "F"), ("unused", "Z")]


class HiddenNet(nn.Module):
    """A conv stem and a linear layer whose weight is also used inside ``HiddenScale``:
    the self-check sends that layer to the whole-network fallback."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 4, stride=4)
        self.lin = nn.Linear(width, width)
        self.num_features = width

    def forward(self, x):
        h = self.lin(torch.relu(self.stem(x)).mean((2, 3)))
        return HiddenScale.apply(h, self.lin.weight)


def backbone_factory(name: str, image_size: int, kwargs: dict, seed: int = 0):
    """A function that builds the backbone of a FAMILIES row."""
    if name == "mha":
        return lambda: MHANet(**kwargs)
    if name == "hidden":
        return lambda: HiddenNet(**kwargs)
    if name == "MlpMixer":  # timm's mixer_*/resmlp_* fix depth and width: the class itself
        return lambda: mixer(image_size, **kwargs)
    from rmtlens.inputs.backbones import create_backbone

    return lambda: create_backbone(name, image_size, seed, model_kwargs=kwargs)


def network(name: str, image_size: int, kwargs: dict, seed: int = 0) -> nn.Module:
    return float64_network(backbone_factory(name, image_size, kwargs, seed), image_size, seed)


def path_counts(plan) -> dict[str, int]:
    counts = {label: 0 for label, _ in PATHS}
    for path in plan.paths().values():
        counts[path] += 1
    return counts


def measure(label, name, image_size, kwargs, n, seed=0) -> dict:
    from rmtlens.kernels.ntk import engine, pieces

    model = network(name, image_size, kwargs, seed)
    x = torch.randn(n, 3, image_size, image_size, generator=torch.Generator().manual_seed(seed + 2),
                    dtype=torch.float64)
    P = sum(p.numel() for p in model.parameters())
    spent = {"fallback": 0.0}
    original = pieces._fallback_grads

    def timed_fallback(*a, **k):
        t = time.perf_counter()
        try:
            return original(*a, **k)
        finally:
            spent["fallback"] += time.perf_counter() - t

    pieces._fallback_grads = timed_fallback
    timings: dict = {}
    try:
        t0 = time.perf_counter()
        K = engine._entk(model, x, None, 2.0, torch.float64, None, False, False, timings)
        t_entk = time.perf_counter() - t0
    finally:
        pieces._fallback_grads = original
    t0 = time.perf_counter()
    R = jacobian_kernel(model, x)
    t_jac = time.perf_counter() - t0
    plan = timings["schedule"].plan
    cov = plan.coverage
    return dict(
        label=label, P=P, err=float(np.abs(K - R).max() / np.abs(R).max()), counts=path_counts(plan),
        t_entk=t_entk, t_jac=t_jac, t_plan=t_entk - timings["gradient_pass"] - timings["contraction"], fallback_share=cov["fallback"] / P,
        fallback_time=spent["fallback"] / t_entk, probe=plan.probe_size,
        fallback=plan.fallback,
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=8, help="samples per kernel")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default="", help="comma list of label substrings")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    chosen = [f for f in FAMILIES if not args.only or any(s in f[0] for s in args.only.split(","))]
    print(f"# eNTK families: float64, N={args.n}, threads={torch.get_num_threads()}, torch {torch.__version__}; "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print("# paths (parameter tensors): S structured Gram, E explicit, A affine closed form, "
          "V single-op VJP, F whole-network fallback, Z unused")
    head = f"{'model':24s} {'params':>10s} {'max rel err':>11s} {'S':>4s} {'E':>4s} {'A':>4s} {'V':>4s} {'F':>4s} {'Z':>3s} {'probe':>5s} {'plan s':>6s} {'entk s':>7s} {'jacrev s':>8s} {'entk/jacrev':>11s}"
    print(head)
    print("-" * len(head))
    measure("warm-up", "mha", 16, dict(batch_first=True, width=16), 2)  # first-call imports and caches
    notes = []
    worst = 0.0
    for label, name, size, kwargs in chosen:
        try:
            r = measure(label, name, size, kwargs, args.n)
        except Exception as err:  # a benchmark row reports the failure and goes on
            print(f"{label:24s} FAILED: {type(err).__name__}: {str(err)[:150]}")
            notes.append(label)
            continue
        c = r["counts"]
        worst = max(worst, r["err"])
        print(f"{label:24s} {r['P']:10,d} {r['err']:11.1e} {c['structured']:4d} {c['explicit']:4d} "
              f"{c['affine']:4d} {c['generic']:4d} {c['fallback']:4d} {c['unused']:3d} {r['probe']:5d} "
              f"{r['t_plan']:6.2f} {r['t_entk']:7.2f} {r['t_jac']:8.2f} {r['t_entk'] / r['t_jac']:11.2f}", flush=True)
        if r["fallback"]:
            print(f"    whole-network fallback: {len(r['fallback'])} tensors, {100 * r['fallback_share']:.1f}% of "
                  f"parameters, {100 * r['fallback_time']:.0f}% of entk time; {list(r['fallback'])[:4]}")
    print("# plan s: probe, one-sample capture and per-sample self-check, part of entk s; at this tiny N "
          "it dominates entk's time (it does not grow with N)")
    print(f"\n# worst max relative error: {worst:.1e}; failed: {notes or 'none'}")
    print(f"# load average at end: {os.getloadavg()[0]:.2f} (timings only meaningful on an idle machine)")
    return 1 if notes or worst > 1e-10 else 0


if __name__ == "__main__":
    sys.exit(main())
