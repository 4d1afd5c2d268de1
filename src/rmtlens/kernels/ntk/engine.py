"""Empirical neural tangent kernel of a scalar network (SPEC §1, kernel ``entk``).

``K(x, x') = ∇θ f(x) · ∇θ f(x')`` over ALL parameters θ of ``f = head ∘ backbone``,
model in eval mode, no normalisation. The explicit product ``J Jᵀ`` costs
``2·N_rows·N_cols·P`` flops; this module computes the same numbers with far fewer.

Algorithm
---------
1. **One batched pass.** Eval mode makes samples independent, so one forward and
   one backward of ``Σ_i f(x_i)`` per batch gives, for every parameterised
   operation, its input ``a`` and the gradient ``g`` of ``f(x_i)`` at its output,
   for all samples of the batch at once. The operations are intercepted with a
   ``TorchFunctionMode`` at the functional level (``F.conv2d``, ``F.linear``,
   ``F.batch_norm`` ...), which makes subclasses such as timm's ``Conv2dSame``,
   fused norm+activation layers and modules called several times work unchanged.
2. **Structured contraction.** For a conv/linear weight (bias = an extra input
   channel of ones) the per-sample gradient is ``Σ_s g_s a_sᵀ`` over positions
   ``s``, and its kernel block is ``Σ_{s,t} (g_s·g'_t)(a_s·a'_t)``: two Gram
   matrices multiplied elementwise and summed over position blocks. Each layer
   uses whichever is cheaper: that, or the explicit per-sample gradients
   (formed from stored ``a``, ``g`` by one batched matmul) contracted by GEMM.
3. **Elementwise affine parameters** (BatchNorm / LayerNorm / GroupNorm) get
   their per-sample gradients in closed form (``Σ_s g_s ⊙ x̂_s``); parameters
   that enter through any other operation (layer-scale gammas, class tokens,
   position embeddings, weights that are transformed before use) get theirs from
   a masked-cotangent VJP of that single operation; anything else (parameters
   the interception does not see, or uses it cannot separate by sample) falls
   back to ``torch.func`` per-sample gradients of the whole network. A use's
   batch axis is the axis that grows with the batch against a one-sample capture
   (sample-major ``B·k`` entries: window attention, tokens folded into the batch,
   sequence-first layouts). Every parameter is counted exactly once (asserted),
   and a self-check on a probe of ``p`` distinct samples (``p`` a prime that is no
   tensor dimension of the model) compares every parameter's per-sample gradients
   with plain autograd's, sample by sample; parameters that fail it (uses the
   interception cannot see or split) go to the fallback, checked again. Each
   main-pass batch must reproduce the probe's uses, or the call fails.
4. **Memory.** Stored per-sample pieces are the compact raw ``a`` and ``g``
   where those are smaller than the per-sample gradient, so all N samples
   usually stay resident and every gradient is computed once. Contractions run
   over sample blocks whose size is chosen from ``memory_gb``; if the pieces of
   all samples do not fit, the samples are split into super-blocks and the
   column pieces are recomputed per row super-block.

This module: the public entry points ``entk`` and ``entk_flops``: validation, then the
steps in order, each taking the previous step's result: ``capture.record`` (one
sample) → ``verify.probe_batch`` → ``capture.probe`` → ``plan.make_plan`` →
``pieces.gradient_pieces`` of the probe → ``verify.failed_parameters`` (failures go to
the fallback and the plan is made again) → ``schedule.make_schedule`` →
``pieces.gradient_pieces`` → ``contraction.contract`` per block of samples.
"""

from __future__ import annotations

import copy
import math
import os
import sys
import time
from contextlib import contextmanager
from typing import Callable

import numpy as np
import torch
from torch import nn

from rmtlens.kernels.ntk.capture import probe, record
from rmtlens.kernels.ntk.contraction import blocks, contract
from rmtlens.kernels.ntk.pieces import gradient_pieces, is_oom
from rmtlens.kernels.ntk.plan import Plan, make_plan
from rmtlens.kernels.ntk.schedule import Schedule, make_schedule
from rmtlens.kernels.ntk.verify import check_batch, failed_parameters, probe_batch, used_parameters


class _Progress:
    """tqdm bar on stderr (``progress=True``) or a callback ``(done, total)`` in flops."""

    def __init__(self, progress, total: float):
        self.callback = progress if callable(progress) else None
        self.bar = None
        self.total = max(float(total), 1.0)
        self.done = 0.0
        if progress is True:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, unit="FLOP", unit_scale=True, file=sys.stderr,
                            desc="eNTK", dynamic_ncols=True)

    def update(self, flops: float):
        step = min(float(flops), self.total - self.done)
        self.done += step
        if self.bar is not None:
            self.bar.update(step)
        if self.callback is not None:
            self.callback(self.done, self.total)

    def finish(self):
        self.update(self.total - self.done)

    def close(self):
        if self.bar is not None:
            self.bar.close()


@contextmanager
def _tf32(device: torch.device, allow: bool):
    if device.type != "cuda":
        yield
        return
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = allow
    torch.backends.cudnn.allow_tf32 = allow
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


@contextmanager
def _all_require_grad(model: nn.Module):
    """Every parameter of ``model`` requires grad inside the block (restored after)."""
    params = list(model.parameters())
    old = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    try:
        yield
    finally:
        for p, r in zip(params, old):
            p.requires_grad_(r)


def _channels_last(model: nn.Module, device, dtype) -> bool:
    """Whether the work copy of ``model`` runs channels-last: float32 on the CPU with 2-d
    convolutions, where oneDNN's channels-last kernels run the gradient pass faster."""
    if os.environ.get("RMTLENS_ENTK_CHANNELS_LAST", "auto").strip().lower() in ("0", "no", "off"):
        return False
    return device.type == "cpu" and dtype == torch.float32 and any(
        isinstance(m, nn.Conv2d) for m in model.modules()
    )


def _prepare_model(model: nn.Module, device, dtype) -> tuple[nn.Module, int]:
    """The model in the compute dtype and memory format on the device (a copy only when needed)."""
    ref = next(model.parameters(), None)
    if ref is None:
        raise ValueError("model has no parameters")
    same = ref.device == device and all(p.dtype == dtype for p in model.parameters())
    channels_last = _channels_last(model, device, dtype)
    if same and not channels_last:
        return model, 0
    copy_ = copy.deepcopy(model).to(device=device, dtype=dtype)
    if channels_last:
        copy_ = copy_.to(memory_format=torch.channels_last)
    return copy_, sum(p.numel() * p.element_size() for p in copy_.parameters())


def _check_eval(model: nn.Module) -> None:
    training = [n for n, m in model.named_modules() if m.training]
    if training:
        raise ValueError(
            f"model must be in eval mode (samples must be independent); modules in training "
            f"mode: {training[:5]}. Call model.eval()."
        )
    for n, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not m.track_running_stats:
            raise ValueError(f"BatchNorm {n!r} has no running statistics; samples would not be independent")


def _validate_inputs(x_rows, x_cols, memory_gb, dtype):
    if not isinstance(x_rows, torch.Tensor) or x_rows.ndim < 2 or x_rows.shape[0] < 1:
        raise ValueError(f"x_rows must be a tensor (N, ...) with N >= 1, got {getattr(x_rows, 'shape', x_rows)!r}")
    if not x_rows.is_floating_point():
        raise ValueError(f"x_rows must be floating point (preprocessed), got {x_rows.dtype}")
    if x_cols is not None:
        if not isinstance(x_cols, torch.Tensor) or x_cols.shape[1:] != x_rows.shape[1:] or x_cols.shape[0] < 1:
            raise ValueError(
                f"x_cols must be a tensor shaped like x_rows (M, {tuple(x_rows.shape[1:])}), "
                f"got {getattr(x_cols, 'shape', x_cols)!r}"
            )
        if not x_cols.is_floating_point():
            raise ValueError(f"x_cols must be floating point (preprocessed), got {x_cols.dtype}")
    if not (isinstance(memory_gb, (int, float)) and memory_gb > 0 and math.isfinite(memory_gb)):
        raise ValueError(f"memory_gb must be a positive number, got {memory_gb!r}")
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")


def entk(
    model: nn.Module,
    x_rows: torch.Tensor,
    x_cols: torch.Tensor | None = None,
    *,
    memory_gb: float = 2.0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    allow_tf32: bool = False,
    progress: bool | Callable = False,
) -> np.ndarray:
    """Empirical NTK ``K[i, j] = ∇θ f(x_rows[i]) · ∇θ f(x_cols[j])`` over all parameters.

    Parameters
    ----------
    model : scalar network in eval mode returning ``(B,)`` (see ``scalar_network``);
        it is not modified (a converted copy is used when ``dtype``/``device`` differ).
    x_rows : ``(N_rows, ...)`` preprocessed inputs (``rmtlens.inputs.backbones.preprocess``).
    x_cols : ``(N_cols, ...)`` inputs, or None for the symmetric kernel of ``x_rows``
        with itself (each symmetric block pair computed once, then mirrored). When
        ``x_cols`` equals the first ``N_cols`` rows (the ``(pool + test) x pool``
        layout), their gradients are computed once and the leading square is
        treated as symmetric.
    memory_gb : bound in GiB on the memory this call allocates: the returned kernel
        (``8·N_rows·N_cols`` bytes), a converted model copy if any, stored per-sample
        pieces, pass activations and contraction blocks. Chunking is chosen from it.
    dtype : compute dtype of the per-sample gradient pieces and of each block
        product; ``float64`` is the exact reference, ``float32`` about twice as fast
        on CPU. Accumulation across blocks and layers is always float64.
    device : where to compute; default: the model's device (CUDA when it is there).
    allow_tf32 : allow TF32 matmuls/convolutions on CUDA (off by default).
    progress : True for a tqdm bar with ETA on stderr (units: GFLOP), or a callable
        ``progress(done_flops, total_flops)``.

    Returns
    -------
    K : ``(N_rows, N_cols)`` float64 numpy array.
    """
    return _entk(model, x_rows, x_cols, memory_gb, dtype, device, allow_tf32, progress)


def _verified_plan(model, x_rows, x_cols, n_rows, n_cols, dtype, device) -> Plan:
    """A plan made on a probe batch, with the parameters failing the self-check sent to
    the per-sample fallback (steps 1-2 and the self-check, in order)."""
    reference = record(model, x_rows[:1].to(device=device, dtype=dtype))
    x_probe = probe_batch(reference.dims, x_rows, x_cols, device, dtype)
    probed = probe(model, x_probe, reference)
    used = used_parameters(model, x_probe)
    forced: set[str] = set()
    for _ in range(3):  # parameters failing the self-check go to the exact fallback
        plan = make_plan(model, probed, used, n_rows, n_cols, dtype, frozenset(forced))
        pieces = gradient_pieces(model, plan, x_probe, check_batch(plan.probe_size), device, dtype, None, 2**26)
        failed = failed_parameters(model, plan, pieces, x_probe, dtype)
        del pieces
        if not failed:
            return plan
        forced |= failed
    raise RuntimeError(
        f"eNTK self-check keeps failing for parameters {sorted(failed)[:8]} (of {len(failed)}): "
        "even the whole-network per-sample fallback disagrees with per-sample autograd, so "
        "f of a sample depends on its batch (the other samples: a batch statistic, a module "
        "in training mode; or the batch size) and the eNTK is not defined"
    )


def _entk(model, x_rows, x_cols, memory_gb, dtype, device, allow_tf32, progress, timings=None):
    """``entk``; ``timings`` (a dict) receives seconds per phase (``plan``: planning and
    self-check, ``gradient_pass``, ``contraction``, ``terms``: ``(label, seconds)`` per
    contraction term), the schedule, its flops and the layout run."""
    _validate_inputs(x_rows, x_cols, memory_gb, dtype)
    _check_eval(model)
    ref = next(model.parameters(), None)
    if ref is None:
        raise ValueError("model has no parameters")
    device = torch.device(device) if device is not None else ref.device
    n_rows = x_rows.shape[0]
    n_cols = n_rows if x_cols is None else x_cols.shape[0]
    layout = "symmetric" if x_cols is None else "rectangular"
    if layout == "rectangular" and n_cols <= n_rows:
        cols = x_cols.to(device=x_rows.device, dtype=x_rows.dtype)
        if torch.equal(cols, x_rows[:n_cols]):  # the (pool + test) x pool layout
            layout = "prefix"
    work, copy_bytes = _prepare_model(model, device, dtype)
    with _tf32(device, allow_tf32), _all_require_grad(work):
        start = time.perf_counter()
        plan = _verified_plan(work, x_rows, x_cols, n_rows, n_cols, dtype, device)
        planned = time.perf_counter() - start
        sched = make_schedule(plan, n_rows, n_cols, layout, device, memory_gb, copy_bytes)
        layout, est = sched.layout, sched.flops
        x_all = x_rows if layout != "rectangular" else torch.cat([x_rows, x_cols.to(x_rows.device)])
        bar = _Progress(progress, est["gradient_pass"] + est["contraction"]) if progress else None
        try:
            K = torch.zeros((n_rows, n_cols), dtype=torch.float64, device=device)
            if timings is not None:
                timings.update(schedule=sched, flops=est, layout=layout, plan=planned, gradient_pass=0.0,
                               contraction=0.0)
            try:
                _run(work, sched, x_all, n_rows, n_cols, layout, K, device, dtype, bar, timings)
            except (RuntimeError, MemoryError) as err:
                if not is_oom(err):
                    raise
                raise MemoryError(
                    f"eNTK ran out of memory on {device} with memory_gb={memory_gb} "
                    f"({n_rows} x {n_cols} kernel, pass batch {sched.pass_batch}): lower memory_gb "
                    "(workflow: config entk.memory_gb) or the kernel size (workflow: entk.tile_size), "
                    "or free memory on the device"
                ) from err
            if bar is not None:
                bar.finish()
        finally:
            if bar is not None:
                bar.close()
    return K.cpu().numpy()


def _run(model, sched: Schedule, x_all, n_rows, n_cols, layout, K, device, dtype, bar, timings):
    plan, m = sched.plan, sched.super_block

    def timed(phase, fn, *args):
        start = time.perf_counter()
        result = fn(*args)
        if timings is not None:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            timings[phase] += time.perf_counter() - start
        return result

    def pieces(x):
        return timed(
            "gradient_pass", gradient_pieces, model, plan, x, sched.pass_batch, device, dtype, bar,
            sched.budget_transient,
        )

    terms = timings.setdefault("terms", []) if timings is not None else None

    def block(pr, pc, sym, rows, cols):  # K[rows, cols] is a view: accumulates in place
        timed(
            "contraction", contract, plan, pr, pc, sym, K[rows, cols],
            sched.budget_transient, sched.block_target, bar, terms,
        )

    if layout == "prefix":  # columns = leading rows: symmetric part, then the rest
        pr = pieces(x_all)
        pc = pr.rows(0, n_cols)
        block(pc, pc, True, slice(0, n_cols), slice(0, n_cols))
        if n_rows > n_cols:
            block(pr.rows(n_cols, n_rows), pc, False, slice(n_cols, n_rows), slice(0, n_cols))
        return
    if layout == "symmetric":
        supers = blocks(n_rows, m)
        for i, (a0, a1) in enumerate(supers):
            pr = pieces(x_all[a0:a1])
            block(pr, pr, True, slice(a0, a1), slice(a0, a1))
            for b0, b1 in supers[i + 1 :]:
                pc = pieces(x_all[b0:b1])
                block(pr, pc, False, slice(a0, a1), slice(b0, b1))
                K[b0:b1, a0:a1] = K[a0:a1, b0:b1].T
                del pc
            del pr
        return
    if m >= n_rows + n_cols:
        both = pieces(x_all)
        block(both.rows(0, n_rows), both.rows(n_rows, n_rows + n_cols), False, slice(0, n_rows), slice(0, n_cols))
        return
    for a0, a1 in blocks(n_rows, m):
        pr = pieces(x_all[a0:a1])
        for b0, b1 in blocks(n_cols, m):
            pc = pieces(x_all[n_rows + b0 : n_rows + b1])
            block(pr, pc, False, slice(a0, a1), slice(b0, b1))
            del pc
        del pr


def entk_flops(
    model: nn.Module,
    image_size: int,
    n_rows: int,
    n_cols: int | None = None,
    *,
    memory_gb: float = 2.0,
    dtype: torch.dtype = torch.float64,
) -> dict:
    """Flop counts of ``entk`` for ``n_rows x n_cols`` (``n_cols`` None: symmetric).

    Returns
    -------
    dict with ``explicit_jjt`` (``2·N_rows·N_cols·P``, the explicit ``J Jᵀ``),
    ``n_params`` (P), ``gradient_pass`` (forward + input-backward flops of all passes,
    from ``torch.utils.flop_counter``), ``formation`` (explicit per-sample gradients
    from stored pieces), ``contraction_explicit`` (GEMMs of explicit gradients),
    ``contraction_structured`` (Gram GEMMs of structured layers), ``contraction``
    (the three before: the J Jᵀ phase), ``total`` and ``coverage`` (parameters per
    method). Symmetric kernels count only the block pairs actually computed.
    """
    if int(n_rows) < 1 or (n_cols is not None and int(n_cols) < 1):
        raise ValueError(f"n_rows and n_cols must be positive, got {n_rows!r}, {n_cols!r}")
    if int(image_size) < 1:
        raise ValueError(f"image_size must be positive, got {image_size!r}")
    _check_eval(model)
    ref = next(model.parameters())
    layout = "symmetric" if n_cols is None else "rectangular"
    n_c = n_rows if n_cols is None else int(n_cols)
    work, copy_bytes = _prepare_model(model, ref.device, dtype)
    gen = torch.Generator().manual_seed(0)  # distinct samples: the self-check is per sample
    x_probe = torch.randn((2, 3, image_size, image_size), generator=gen, dtype=torch.float64)
    with _all_require_grad(work):
        plan = _verified_plan(work, x_probe.to(ref.device, dtype), None, n_rows, n_c, dtype, ref.device)
        sched = make_schedule(plan, n_rows, n_c, layout, ref.device, memory_gb, copy_bytes)
    return sched.flops
