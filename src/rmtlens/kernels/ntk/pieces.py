"""Step 3, per-sample pieces: the compact ``a``/``g`` (or explicit gradients) of a sample block.

The step's interface: :func:`gradient_pieces` runs the captured passes of a plan over
samples and returns their :class:`Pieces`; :func:`form`, :func:`gram_piece` and
:func:`gram_pair` turn raw pieces into explicit gradients and Gram factors for the
contraction, :func:`planned_gradients` one sample's gradients for the self-check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from rmtlens.kernels.ntk.capture import (
    MATMUL_KINDS,
    GenericUse,
    StructuredUse,
    capture_pass,
    rebuild_output,
)
from rmtlens.kernels.ntk.plan import Call, MatmulSite, Plan


class Workspace:
    """Reusable buffers: large fresh allocations page-fault on every use (mmap)."""

    def __init__(self):
        self.buffers: dict[str, torch.Tensor] = {}

    def get(self, key: str | None, shape, dtype, device) -> torch.Tensor:
        if key is None:
            return torch.empty(shape, dtype=dtype, device=device)
        numel = math.prod(shape)
        buf = self.buffers.get(key)
        if buf is None or buf.numel() < numel or buf.dtype != dtype:
            buf = self.buffers[key] = torch.empty(numel, dtype=dtype, device=device)
        return buf[:numel].view(shape)

    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self.buffers.values())

    def reserve(self, need: float, budget: float) -> None:
        """Drop the buffers when keeping them and ``need`` more bytes would exceed ``budget``."""
        if self.nbytes() + need > budget:
            self.buffers.clear()


def _im2col(site: MatmulSite, call: Call, a: torch.Tensor, dst: torch.Tensor) -> None:
    """Write the input patches of a conv call into ``dst``, a view shaped ``(n, G, d_a0, S)``."""
    if a.ndim == 3:  # conv1d as a conv2d of height 1
        a = a.unsqueeze(2)
    if any(call.pads):
        a = F.pad(a, call.pads)
    n, C, H, W = a.shape
    (kh, kw), (sh, sw), (dh, dw) = call.kernel, call.stride, call.dilation
    Ho, Wo = (H - dh * (kh - 1) - 1) // sh + 1, (W - dw * (kw - 1) - 1) // sw + 1
    if Ho * Wo != call.positions:
        raise RuntimeError("internal: conv geometry disagrees with the recorded output")
    sN, sC, sH, sW = a.stride()
    src = a.as_strided(
        (n, C, kh, kw, Ho, Wo), (sN, sC, dh * sH, dw * sW, sh * sH, sw * sW), a.storage_offset()
    )
    G = site.groups
    src = src.unflatten(1, (G, C // G))
    dst.unflatten(2, (C // G, kh, kw)).unflatten(-1, (Ho, Wo)).copy_(src)


def patches(site: MatmulSite, raw, ws: Workspace, role: str) -> list:
    """Per call of a conv site, its patches ``(n, G, d_a, S_k)`` of all ``n`` samples of
    ``raw`` (bias: a row of ones), for :func:`form` to reuse across column chunks."""
    out = []
    d_a0 = site.d_a - (site.bias is not None)
    for k, (call, (a, _)) in enumerate(zip(site.calls, raw)):
        X = ws.get(f"{role}{k}", (a.shape[0], site.groups, site.d_a, call.positions), a.dtype, a.device)
        _im2col(site, call, a, X[:, :, :d_a0])
        if site.bias is not None:
            X[:, :, d_a0].fill_(1.0)
        out.append(X)
    return out


def patches_bytes(site: MatmulSite, n: int, itemsize: int) -> int:
    """Bytes of :func:`patches` for ``n`` samples (0 for linear sites, which need none)."""
    return 0 if site.kind == "linear" else n * site.groups * site.d_a * site.positions * itemsize


def form(
    site: MatmulSite, raw, out: torch.Tensor | None = None, ws: Workspace | None = None,
    rows: tuple[int, int] | None = None, calls: list[Call] | None = None, patched: list | None = None,
):
    """Explicit per-sample gradients ``(n, n_params)`` of a matmul site.

    ``raw``: per call, ``[a, g]`` of ``n`` samples (``Pieces.raw`` of the site).
    ``J_n = Σ_s g_ns a_nsᵀ`` per group, one batched matmul per call (bias: a
    row of ones appended to the patches). ``out`` must be contiguous if given.
    ``rows = (o0, o1)`` (ungrouped sites only) forms only the output channels
    ``o0:o1``: the columns ``o0·d_a : o1·d_a`` of the full gradient, ``(n, (o1-o0)·d_a)``.
    ``calls``: the calls ``raw`` holds, when not all of the site's. ``patched``: the
    conv site's :func:`patches` of these samples, computed once for several chunks.
    """
    ws = ws or Workspace()
    a0 = raw[0][0]
    n, G, d_a, d_g = a0.shape[0], site.groups, site.d_a, site.d_g
    o0, o1 = (0, d_g) if rows is None else rows
    if rows is not None and G != 1:
        raise RuntimeError("internal: output-channel chunks of a grouped site")
    width = o1 - o0
    d_a0 = d_a - (site.bias is not None)
    J = out if out is not None else torch.empty((n, G * width * d_a), dtype=a0.dtype, device=a0.device)
    J3 = J.view(n * G, width, d_a)
    for k, (call, (a, g)) in enumerate(zip(site.calls if calls is None else calls, raw)):
        S = call.positions
        if site.kind == "linear":
            g3 = g.reshape(n, S, d_g)[..., o0:o1].transpose(1, 2)
            if site.bias is None:
                B3 = a.reshape(n, S, d_a)
            else:
                B3 = ws.get("patches", (n, S, d_a), a.dtype, a.device)
                B3[..., :d_a0].copy_(a.reshape(n, S, d_a0))
                B3[..., d_a0].fill_(1.0)
        else:
            if patched is not None:
                X = patched[k]
            else:
                X = ws.get("patches", (n, G, d_a, S), a.dtype, a.device)
                _im2col(site, call, a, X[:, :, :d_a0])
                if site.bias is not None:
                    X[:, :, d_a0].fill_(1.0)
            B3 = X.view(n * G, d_a, S).transpose(1, 2)
            g3 = g.reshape(n * G, d_g, S)[:, o0:o1]
        if k == 0:
            torch.bmm(g3, B3, out=J3)
        else:
            J3.baddbmm_(g3, B3)
    return J


def gram_piece(site: MatmulSite, raw, ws: Workspace, role: str | None):
    """Gram factors of a site, position-major: patches ``(G, S, n, d_a)`` and output
    gradients ``(G, S, n, d_g)`` (``S``: positions of all calls); returns ``(A, Gb, n, S)``.

    The site's kernel block is ``Σ_{s,t} (A_s A'_tᵀ) ∘ (Gb_s Gb'_tᵀ)`` summed over groups:
    one ``n x n'`` product per position pair, each a plain matrix product.
    """
    a0 = raw[0][0]
    n, G, d_a, d_g, S = a0.shape[0], site.groups, site.d_a, site.d_g, site.positions
    d_a0 = d_a - (site.bias is not None)
    A = ws.get(role and role + "_a", (G, S, n, d_a), a0.dtype, a0.device)
    Gb = ws.get(role and role + "_g", (G, S, n, d_g), a0.dtype, a0.device)
    off = 0
    for call, (a, g) in zip(site.calls, raw):
        Sk = call.positions
        if site.kind == "linear":
            A[0, off : off + Sk, :, :d_a0].copy_(a.reshape(n, Sk, d_a0).transpose(0, 1))
            Gb[0, off : off + Sk].copy_(g.reshape(n, Sk, d_g).transpose(0, 1))
        else:
            _im2col(site, call, a, A[:, off : off + Sk, :, :d_a0].permute(2, 0, 3, 1))
            Gb[:, off : off + Sk].copy_(g.reshape(n, G, d_g, Sk).permute(1, 3, 0, 2))
        off += Sk
    if site.bias is not None:
        A[..., d_a0].fill_(1.0)
    return A, Gb, n, S


def gram_pair(r, c, ws: Workspace) -> torch.Tensor:
    """``Σ_{s,t} (a_s·a'_t)(g_s·g'_t)`` summed over groups, ``(n_r, n_c)``, from two
    :func:`gram_piece` results (one product per position pair)."""
    Ar, Gr, nr, S = r
    Ac, Gc, nc, _ = c
    G = Ar.shape[0]
    acc = ws.get("gram_acc", (nr, nc), Ar.dtype, Ar.device)
    ga = ws.get("gram_a", (G, nr, nc), Ar.dtype, Ar.device)
    gg = ws.get("gram_g", (G, nr, nc), Ar.dtype, Ar.device)
    acc.zero_()
    for s in range(S):
        for t in range(S):
            torch.bmm(Ar[:, s], Ac[:, t].transpose(1, 2), out=ga)
            torch.bmm(Gr[:, s], Gc[:, t].transpose(1, 2), out=gg)
            ga.mul_(gg)
            acc.add_(ga.sum(0) if G > 1 else ga[0])
    return acc


def _per_sample_sum(t: torch.Tensor, axis, n: int, keep: tuple[int, ...]) -> torch.Tensor:
    """``(n, Π keep)``: ``t`` summed within each sample over all axes but ``keep``."""
    d, k = axis
    rest = [i for i in range(t.ndim) if i not in keep]
    t = t.permute(rest + list(keep))
    d = rest.index(d)
    t = t.unflatten(d, (n, k)).movedim(d, 0)
    return t.reshape(n, -1, math.prod(t.shape[t.ndim - len(keep) :])).sum(1)


def _affine_grads(use: StructuredUse, n: int) -> dict[str, torch.Tensor]:
    """Per-sample gradients of a norm layer's weight and bias, shape ``(n, numel)``.

    ``x`` and ``g`` are in the layer's own layout (batch axis ``use.axis``).
    """
    x, g = use.input, use.grad
    o = use.opts
    if use.kind == "batch_norm":
        shape = (1, -1) + (1,) * (x.ndim - 2)
        xhat = (x - o["running_mean"].view(shape)) * torch.rsqrt(o["running_var"].view(shape) + o["eps"])
        keep = (1,)
    elif use.kind == "layer_norm":
        xhat = F.layer_norm(x, o["normalized_shape"], None, None, o["eps"])
        keep = tuple(range(x.ndim - len(tuple(o["normalized_shape"])), x.ndim))
    else:
        xhat = F.group_norm(x, o["num_groups"], None, None, o["eps"])
        keep = (1,)
    out = {}
    if use.weight is not None:
        out[use.weight] = _per_sample_sum(g * xhat, use.axis, n, keep)
    if use.bias is not None:
        out[use.bias] = _per_sample_sum(g, use.axis, n, keep)
    return out


def _generic_grads(use: GenericUse, plan: Plan, params, n: int, chunk_bytes: int):
    """Per-sample gradients of the generic roots of one operation by masked VJPs.

    The output's batch axis ``(d, k)`` holds ``n·k`` entries, sample-major; the
    cotangent of sample ``i`` is the output gradient on its ``k`` entries, zero
    elsewhere (the self-check on the probe verifies that layout).
    """
    roots = sorted(use.roots & plan.generic_roots)
    if not roots or use.grad is None:  # no grad: the output does not reach f
        return {}
    leaves = {n_: params[n_].detach().requires_grad_(True) for n_ in roots}
    out = rebuild_output(use, leaves, plan.names)
    g = use.grad
    d, k = use.axis
    g_split = g.unflatten(d, (n, k)).movedim(d, 0)  # (n, ...)
    per_sample = {name: [] for name in roots}
    chunk = max(1, min(n, chunk_bytes // max(1, g.numel() * g.element_size())))
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        cot = g.new_zeros((stop - start,) + tuple(g.shape))
        cot_split = cot.unflatten(d + 1, (n, k)).movedim(d + 1, 1)  # (m, n, ...) view
        idx = torch.arange(stop - start, device=g.device)
        cot_split[idx, idx + start] = g_split[start:stop]
        grads = torch.autograd.grad(
            out, [leaves[r] for r in roots], cot, is_grads_batched=True,
            retain_graph=True, allow_unused=True,
        )
        for name, gr in zip(roots, grads):
            if gr is None:
                gr = cot.new_zeros((stop - start,) + tuple(leaves[name].shape))
            per_sample[name].append(gr.reshape(stop - start, -1))
    return {name: torch.cat(v) for name, v in per_sample.items()}


def is_oom(err: BaseException) -> bool:
    """An allocation failure (CUDA or CPU allocator), as opposed to any other error."""
    if isinstance(err, (MemoryError, getattr(torch, "OutOfMemoryError", MemoryError))):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text or "DefaultCPUAllocator" in text
    )


def _fallback_grads(model, plan: Plan, x: torch.Tensor, params, buffers) -> torch.Tensor:
    """Per-sample gradients of the fallback parameters, ``(n, Σ numel)``.

    ``vmap(grad)`` over samples; a model vmap cannot batch (an operation without a
    batching rule, data-dependent control flow: a ``RuntimeError`` on the first
    try, remembered in the plan) gets one autograd pass per sample. An allocation
    failure is never taken for a missing batching rule.
    """
    from torch.func import functional_call, grad, vmap

    names = list(plan.fallback)
    fixed = {n: p.detach() for n, p in params.items() if n not in names}
    trainable = {n: params[n].detach() for n in names}

    def f_single(theta, xi):
        out = functional_call(model, {**fixed, **theta, **buffers}, (xi.unsqueeze(0),))
        return out.reshape(())

    pieces = []
    if plan.fallback_vmap is not False:
        per_sample = vmap(grad(f_single), in_dims=(None, 0))
        try:
            for start in range(0, x.shape[0], 16):
                g = per_sample(trainable, x[start : start + 16])
                pieces.append(torch.cat([g[n].reshape(g[n].shape[0], -1) for n in names], dim=1))
            plan.fallback_vmap = True
            return torch.cat(pieces).detach()
        except RuntimeError as err:
            if plan.fallback_vmap or is_oom(err):
                raise
            plan.fallback_vmap = False  # no batching rule: per-sample loop from now on
    pieces = []
    leaves = {n: t.clone().requires_grad_(True) for n, t in trainable.items()}
    for i in range(x.shape[0]):
        out = functional_call(model, {**fixed, **leaves, **buffers}, (x[i : i + 1],))
        gs = torch.autograd.grad(out.sum(), [leaves[n] for n in names], allow_unused=True)
        row = [
            (gr if gr is not None else torch.zeros_like(leaves[n])).reshape(1, -1)
            for n, gr in zip(names, gs)
        ]
        pieces.append(torch.cat(row, dim=1))
    return torch.cat(pieces).detach()


@dataclass
class Pieces:
    """Per-sample pieces of ``n`` samples: formed gradients and raw site data."""

    formed: torch.Tensor  # (n, n_formed)
    raw: dict[int, list[list[torch.Tensor]]]  # site index -> calls -> [a, g] of shape (n, ...)
    n: int = field(init=False)

    def __post_init__(self):
        self.n = self.formed.shape[0]

    def rows(self, a: int, b: int) -> "Pieces":
        """The pieces of samples ``a:b`` (views)."""
        raw = {i: [[t[a:b] for t in call] for call in calls] for i, calls in self.raw.items()}
        return Pieces(self.formed[a:b], raw)


def _pass_batches(n: int, batch: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of the passes: ``batch`` samples each, none of one sample when
    ``n ≥ 2`` (PyTorch's backward can differ at batch 1, where a tensor's memory
    format is ambiguous; e.g. timm's LeViT stem, against finite differences)."""
    bounds = [(s, min(n, s + batch)) for s in range(0, n, batch)]
    if n >= 2 and bounds[-1][1] - bounds[-1][0] == 1:
        if len(bounds) == 1:
            return bounds
        (a, b), (_, c) = bounds[-2], bounds[-1]
        bounds[-2:] = [(a, b - 1), (b - 1, c)] if b - 1 - a >= 2 else [(a, c)]
    return bounds


def gradient_pieces(model, plan: Plan, x: torch.Tensor, batch: int, device, dtype, progress, budget):
    """Per-sample pieces of the samples ``x``, passes of ``batch`` samples.

    Every pass must reproduce the plan's uses (count, order, shapes: checked by the
    capture) and every raw buffer row is written exactly once (asserted), so no
    uninitialised memory reaches the contraction.
    """
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    n = x.shape[0]
    formed = torch.zeros((n, plan.n_formed), dtype=dtype, device=device)
    raw = {
        i: [
            [
                torch.empty((n,) + c.in_shape, dtype=dtype, device=device),
                torch.empty((n,) + c.out_shape, dtype=dtype, device=device),
            ]
            for c in site.calls
        ]
        for i, site in enumerate(plan.sites)
        if site.store == "raw"
    }
    filled = {i: [0] * len(plan.sites[i].calls) for i in raw}
    planned = tuple(sum(sig.kind == kind for sig in plan.expected) for kind in ("structured", "generic"))
    site_of = {(s.kind, s.weight, s.bias): i for i, s in enumerate(plan.sites)}
    constant = frozenset(plan.fallback) | frozenset(plan.zero)
    chunk_bytes = int(max(2**20, min(64 * 2**20, budget / 8)))  # masked cotangents
    for start, stop in _pass_batches(n, batch):
        m = stop - start
        xb = x[start:stop].to(device=device, dtype=dtype)
        cap = capture_pass(model, xb, plan.names, constant, plan.expected, plan.watch)
        got = (len(cap.structured), len(cap.generic))
        if got != planned:
            raise RuntimeError(
                f"eNTK: planned sites did not receive every recorded call on samples {start}:{stop}: "
                f"{got} (structured, generic) uses where the plan has {planned}; the kernel would be wrong"
            )
        rows = slice(start, stop)
        call_index: dict[int, int] = {}
        for use in cap.structured:
            if use.input._version != use.version:
                raise RuntimeError(
                    "the input of a parameterised layer was modified in place after use; "
                    "the eNTK pieces would be wrong"
                )
            if use.kind not in MATMUL_KINDS:
                if use.grad is None:  # its output does not reach f: zero gradient
                    continue
                for name, g in _affine_grads(use, m).items():
                    off, size = plan.formed[name]
                    formed[rows, off : off + size] += g
                continue
            i = site_of.get((use.kind, use.weight, use.bias))
            if i is None:
                raise RuntimeError(f"internal: layer {use.weight} was not seen by the probe")
            site = plan.sites[i]
            k = call_index.get(i, 0)
            call_index[i] = k + 1
            if k >= len(site.calls):
                raise RuntimeError(f"eNTK: layer {use.weight} called more often than planned")
            if site.store == "raw":
                raw[i][k][0][rows] = use.input
                if use.grad is None:
                    raw[i][k][1][rows] = 0.0
                else:
                    raw[i][k][1][rows] = use.grad
                filled[i][k] += m
            elif use.grad is not None:
                J = form(site, [(use.input, use.grad)], calls=[site.calls[k]])
                formed[rows, site.offset : site.offset + site.n_params] += J
                del J
        for use in cap.generic:
            if not use.separable:
                raise RuntimeError("internal: a use that cannot be split by sample reached the main pass")
            for name, g in _generic_grads(use, plan, params, m, chunk_bytes).items():
                off, size = plan.formed[name]
                formed[rows, off : off + size] += g
        if plan.fallback:
            off = plan.formed[plan.fallback[0]][0]
            G = _fallback_grads(model, plan, xb.detach(), params, buffers)
            formed[rows, off : off + G.shape[1]] = G
        del cap
        if progress is not None:
            progress.update(plan.pass_flops_per_sample * m)
    unfed = [(plan.sites[i].weight, k) for i, calls in filled.items() for k, c in enumerate(calls) if c != n]
    if unfed:
        raise RuntimeError(
            f"eNTK: planned sites did not receive every recorded call for all {n} samples: "
            f"(layer, call) {unfed[:5]}; the kernel would contain uninitialised memory"
        )
    return Pieces(formed, raw)


def planned_gradients(plan: Plan, pieces: Pieces, i: int) -> dict[str, torch.Tensor]:
    """Sample ``i``'s gradient of every planned parameter from the pieces, as flat views
    (a site's weight as its ``(G·d_g, d_a0)`` block)."""
    got = {name: pieces.formed[i, off : off + size] for name, (off, size) in plan.formed.items()}
    for k, site in enumerate(plan.sites):
        if site.store == "formed":
            J = pieces.formed[i, site.offset : site.offset + site.n_params]
        else:
            J = form(site, [[t[i : i + 1] for t in call] for call in pieces.raw[k]])
        J = J.view(site.groups * site.d_g, site.d_a)
        d_a0 = site.d_a - (site.bias is not None)
        got[site.weight] = J[:, :d_a0]
        if site.bias is not None:
            got[site.bias] = J[:, d_a0]
    return got
