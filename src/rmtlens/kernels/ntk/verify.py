"""Self-check of a plan against per-sample autograd gradients on a probe batch.

The probe has ``p`` samples, ``p`` the smallest prime ``≥ 3`` that is no dimension of
any tensor of a one-sample capture (parameters, buffers, every operation's inputs
and outputs): an axis of length ``p`` is then the batch axis and nothing else. Its
samples are real inputs (rows, then columns, cycled) with seeded noise, so that no
two are equal and a use that mixes samples cannot hide.
"""

from __future__ import annotations

import torch

from rmtlens.kernels.ntk.pieces import _form, _gradient_pieces
from rmtlens.kernels.ntk.plan import _make_plan, _Plan, _reference_capture, _scalar_output

PROBE_NOISE = 0.1  # noise added to the probe samples, relative to their standard deviation
PROBE_SEED = 0


def _probe_size(dims: set[int]) -> int:
    """Smallest prime ``≥ 3`` not in ``dims``."""
    p = 3
    while p in dims or any(p % q == 0 for q in range(2, int(p**0.5) + 1)):
        p += 1
    return p


def _probe_inputs(x_rows: torch.Tensor, x_cols, p: int, device, dtype) -> torch.Tensor:
    """``p`` distinct probe samples: the first real inputs, cycled, plus seeded noise."""
    pool = x_rows[:p] if x_cols is None else torch.cat([x_rows[:p], x_cols[:p].to(x_rows.device)])
    pool = pool.to(device=device, dtype=dtype)
    x = pool[torch.arange(p) % pool.shape[0]]
    gen = torch.Generator(device="cpu").manual_seed(PROBE_SEED)
    noise = torch.randn(x.shape, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
    scale = float(x.std()) if x.numel() > 1 and float(x.std()) > 0 else 1.0
    return x + PROBE_NOISE * scale * noise


def _per_sample_reference(model, x_probe: torch.Tensor) -> dict[str, torch.Tensor | None]:
    """Per-sample gradients ``(p, numel)`` from one plain autograd pass per sample.

    Independent of everything the engine does (no interception, no vmap, no
    masking): ``∇θ f(x_i)`` by ``torch.autograd.grad`` of ``f(x_i)`` alone. The pass
    runs on the pair ``(x_i, x_{i+1})`` (eval mode: samples are independent) because
    PyTorch's backward at batch 1 can be wrong (a 1-sample tensor's memory format is
    ambiguous; timm's LeViT stem disagrees with finite differences there).
    None: no gradient for any sample.
    """
    params = dict(model.named_parameters())
    names = list(params)
    rows: dict[str, list] = {n: [] for n in names}
    p = x_probe.shape[0]
    for i in range(p):
        pair = x_probe[[i, (i + 1) % p]]
        out = _scalar_output(model(pair), 2)[0]
        try:
            grads = torch.autograd.grad(out, [params[n] for n in names], allow_unused=True)
        except RuntimeError as err:
            if "backward through the graph a second time" not in str(err):
                raise
            raise RuntimeError(
                "eNTK: the model reuses a tensor computed from its parameters in an earlier "
                "forward pass (an eval-mode cache, e.g. timm LeViT's attention_bias_cache), so "
                "no gradient reaches those parameters after the first pass; disable the cache "
                "(recompute the tensor on every call) to define the eNTK"
            ) from err
        for n, g in zip(names, grads):
            rows[n].append(None if g is None else g.detach().reshape(-1))
    ref = {}
    for n in names:
        if all(g is None for g in rows[n]):
            ref[n] = None
        else:
            ref[n] = torch.stack([g if g is not None else params[n].new_zeros(params[n].numel()) for g in rows[n]])
    return ref


def _verify_plan(model, plan: _Plan, x_probe, ref: dict, device, dtype) -> set[str]:
    """Parameters whose per-sample gradients on the probe differ from autograd's.

    Every parameter's ``(p, numel)`` per-sample gradients, formed from the pieces the
    main pass would store (passes of about half the probe, so that a batch other
    than the probe's is exercised), are compared sample by sample with
    ``_per_sample_reference``. A use the interception cannot see (e.g. inside a
    custom autograd Function) or one not split by sample as planned fails it.
    """
    p = x_probe.shape[0]
    batch = (p + 1) // 2 if p >= 5 else p
    pieces = _gradient_pieces(model, plan, x_probe, batch, device, dtype, None, 2**26)
    peak = {n: float(g.abs().max()) for n, g in ref.items() if g is not None}
    scale = max(peak.values(), default=0.0)
    tol = 1e-9 if dtype == torch.float64 else 1e-4
    failed: set[str] = set()

    def check(name: str, got: torch.Tensor, shape=None) -> None:
        """``got``: ``(p, numel)`` or, with ``shape``, a view of that shape."""
        want = ref.get(name)
        bound = tol * max(peak.get(name, 0.0), 1e-3 * scale, 1e-30)
        if want is None:
            err = float(got.abs().max()) if got.numel() else 0.0
        else:
            want = want.view(shape) if shape is not None else want
            if got.shape != want.shape:
                failed.add(name)
                return
            err = float(torch.sub(got, want).abs_().max()) if got.numel() else 0.0
        if err > bound:
            failed.add(name)

    for name, (off, size) in plan.formed.items():
        check(name, pieces.formed[:, off : off + size])
    for i, site in enumerate(plan.sites):
        if site.store == "formed":
            J = pieces.formed[:, site.offset : site.offset + site.n_params]
        else:
            J = _form(site, pieces.raw[i])
        J = J.view(p, site.groups * site.d_g, site.d_a)
        d_a0 = site.d_a - (site.bias is not None)
        check(site.weight, J[:, :, :d_a0], (p, site.groups * site.d_g, d_a0))
        if site.bias is not None:
            check(site.bias, J[:, :, d_a0])
    failed |= {name for name in plan.zero if ref.get(name) is not None}
    return failed


def _verified_plan(model, x_rows, x_cols, n_rows, n_cols, dtype, device) -> _Plan:
    """``_make_plan`` on a probe, with parameters failing ``_verify_plan`` sent to the fallback."""
    params = dict(model.named_parameters())
    names = {id(t): n for n, t in params.items()}
    x1 = x_rows[:1].to(device=device, dtype=dtype)
    reference, dims = _reference_capture(model, x1, names)
    x_probe = _probe_inputs(x_rows, x_cols, _probe_size(dims), device, dtype)
    ref = _per_sample_reference(model, x_probe)
    used = {n for n, g in ref.items() if g is not None}
    forced: set[str] = set()
    for _ in range(3):  # parameters failing the self-check go to the exact fallback
        plan = _make_plan(model, x_probe, reference, used, n_rows, n_cols, dtype, frozenset(forced))
        failed = _verify_plan(model, plan, x_probe, ref, device, dtype)
        if not failed:
            break
        forced |= failed
    else:
        raise RuntimeError(
            f"eNTK self-check keeps failing for parameters {sorted(failed)[:8]} (of {len(failed)}): "
            "even the whole-network per-sample fallback disagrees with per-sample autograd, so "
            "f of a sample depends on its batch (the other samples: a batch statistic, a module "
            "in training mode; or the batch size) and the eNTK is not defined"
        )
    plan.probe_size = x_probe.shape[0]
    return plan
