"""Self-check of a plan against per-sample autograd gradients on a probe batch.

The probe has ``p`` samples, ``p`` the smallest prime ``≥ 3`` that is no dimension of
any tensor of a one-sample capture (parameters, buffers, every operation's inputs
and outputs): an axis of length ``p`` is then the batch axis and nothing else. Its
samples are real inputs (rows, then columns, cycled) with seeded noise, so that no
two are equal and a use that mixes samples cannot hide.

The interface: :func:`probe_batch` (the probe inputs, from the dimensions a one-sample
recording saw), :func:`used_parameters`, :func:`check_batch` (the pass batch of the
check) and :func:`failed_parameters`, which consumes a plan and the pieces the
pieces step made of the probe with it.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from rmtlens.kernels.ntk.pieces import Pieces, planned_gradients
from rmtlens.kernels.ntk.plan import Plan

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


@contextmanager
def _native_convolutions():
    """oneDNN off inside the block (restored after); nothing else changes."""
    old = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = old


def _sample_gradients(model, x_probe: torch.Tensor, i: int, names: list[str], params) -> list:
    """``∇θ f(x_i)`` per parameter (None: no gradient) from one plain autograd pass.

    Independent of everything the engine does (no interception, no vmap, no
    masking). The pass runs on the pair ``(x_i, x_{i+1})`` (eval mode: samples are
    independent; first output) because PyTorch's backward at batch 1 can be wrong
    (a 1-sample tensor's memory format is ambiguous; timm's LeViT stem disagrees
    with finite differences there). The capture step has checked that the model
    returns one scalar per sample. oneDNN is off for this pass: PyTorch's native
    convolutions compute the reference with other kernels than the engine's pass, and
    at batch 2 they are 2-4 times faster than oneDNN's weight gradients.
    """
    p = x_probe.shape[0]
    try:
        with _native_convolutions():
            out = model(x_probe[[i, (i + 1) % p]]).reshape(2)[0]
            return list(torch.autograd.grad(out, [params[n] for n in names], allow_unused=True))
    except RuntimeError as err:
        if "backward through the graph a second time" not in str(err):
            raise
        raise RuntimeError(
            "eNTK: the model reuses a tensor computed from its parameters in an earlier "
            "forward pass (an eval-mode cache, e.g. timm LeViT's attention_bias_cache), so "
            "no gradient reaches those parameters after the first pass; disable the cache "
            "(recompute the tensor on every call) to define the eNTK"
        ) from err


def probe_batch(dims: set[int], x_rows: torch.Tensor, x_cols, device, dtype) -> torch.Tensor:
    """The probe ``(p, ...)``: ``p`` the smallest prime ``≥ 3`` not in ``dims`` (every tensor
    dimension of a one-sample recording), its samples real inputs with seeded noise."""
    return _probe_inputs(x_rows, x_cols, _probe_size(dims), device, dtype)


def used_parameters(model, x_probe: torch.Tensor) -> set[str]:
    """Names of the parameters with a gradient on the probe (structural: any sample)."""
    params = dict(model.named_parameters())
    names = list(params)
    grads = _sample_gradients(model, x_probe, 0, names, params)
    return {n for n, g in zip(names, grads) if g is not None}


def check_batch(p: int) -> int:
    """Pass batch of the self-check on a probe of ``p`` samples: about half the probe,
    so that a batch other than the probe's is exercised."""
    return (p + 1) // 2 if p >= 5 else p


def failed_parameters(model, plan: Plan, pieces: Pieces, x_probe, dtype) -> set[str]:
    """Parameters whose per-sample gradients on the probe differ from autograd's.

    ``pieces``: what the pieces step made of ``x_probe`` with ``plan`` (passes of
    :func:`check_batch` samples). Every parameter's per-sample gradients formed from
    them are compared sample by sample with ``_sample_gradients``; a parameter fails
    when ``max_i |got_i − want_i|`` exceeds ``tol`` times its largest gradient entry
    over the probe (or ``1e-3`` of the model's largest). One sample's gradient is held
    at a time. A use the interception cannot see (e.g. inside a custom autograd
    Function) or one not split by sample as planned fails it.
    """
    p = x_probe.shape[0]
    params = dict(model.named_parameters())
    names = list(params)
    err = dict.fromkeys(names, 0.0)
    peak = dict.fromkeys(names, 0.0)
    for i in range(p):
        got = planned_gradients(plan, pieces, i)
        for name, want in zip(names, _sample_gradients(model, x_probe, i, names, params)):
            mine = got.get(name)  # None: an unused parameter (zero by plan)
            if want is not None:
                peak[name] = max(peak[name], float(want.abs().max()) if want.numel() else 0.0)
            if mine is None and want is None:
                continue
            if mine is None:
                diff = want.abs()
            elif want is None:
                diff = mine.abs()
            else:
                diff = torch.sub(mine.view(want.shape), want).abs_()  # in want's layout: no copy
            err[name] = max(err[name], float(diff.max()) if diff.numel() else 0.0)
    tol = 1e-9 if dtype == torch.float64 else 1e-4
    scale = max(peak.values(), default=0.0)
    return {n for n in names if err[n] > tol * max(peak[n], 1e-3 * scale, 1e-30)}
