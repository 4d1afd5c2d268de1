"""Self-check of a plan against autograd on a probe batch before the main pass.
"""

from __future__ import annotations

import torch

from rmtlens.kernels.ntk.pieces import _form, _gradient_pieces
from rmtlens.kernels.ntk.plan import _make_plan, _Plan


def _verify_plan(model, plan: _Plan, x_probe, device, dtype) -> set[str]:
    """Parameters whose per-sample gradients on the probe batch do not sum to autograd's.

    A check of the whole bookkeeping (every use of every parameter intercepted and
    assigned once) on the real model, before any expensive work. A parameter used
    in a way the interception cannot see (e.g. inside a custom autograd Function)
    fails it.
    """
    pieces = _gradient_pieces(model, plan, x_probe, x_probe.shape[0], device, dtype, None, 2**26)
    ref = plan.probe_grads
    scale = max((float(g.abs().max()) for g in ref.values()), default=0.0)
    tol = 1e-9 if dtype == torch.float64 else 1e-4
    failed: set[str] = set()

    def check(name: str, got: torch.Tensor) -> None:
        want = ref.get(name)
        want = torch.zeros_like(got) if want is None else want.reshape(-1)
        bound = tol * max(float(want.abs().max()), 1e-3 * scale, 1e-30)
        if float((got - want).abs().max()) > bound:
            failed.add(name)

    total = pieces.formed.sum(0)
    for name, (off, size) in plan.formed.items():
        check(name, total[off : off + size])
    for i, site in enumerate(plan.sites):
        if site.store == "formed":
            J = total[site.offset : site.offset + site.n_params]
        else:
            J = _form(site, pieces.raw[i]).sum(0)
        J = J.view(site.groups * site.d_g, site.d_a)
        d_a0 = site.d_a - (site.bias is not None)
        check(site.weight, J[:, :d_a0].reshape(-1))
        if site.bias is not None:
            check(site.bias, J[:, d_a0])
    failed |= {name for name in plan.zero if name in ref}
    return failed


def _verified_plan(model, x_probe, n_rows, n_cols, dtype, device) -> _Plan:
    """``_make_plan``, with parameters failing ``_verify_plan`` sent to the exact fallback."""
    forced: set[str] = set()
    for _ in range(3):  # parameters failing the self-check go to the exact fallback
        plan = _make_plan(model, x_probe, n_rows, n_cols, dtype, frozenset(forced))
        failed = _verify_plan(model, plan, x_probe, device, dtype)
        if not failed:
            break
        forced |= failed
    else:
        raise RuntimeError(f"eNTK self-check keeps failing for parameters {sorted(failed)}")
    plan.probe_grads = {}
    return plan
