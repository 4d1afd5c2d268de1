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
   back to ``torch.func`` per-sample gradients of the whole network. Every
   parameter is counted exactly once (asserted), and a self-check on a probe
   batch compares the summed per-sample gradients with autograd's gradient;
   parameters that fail it (uses the interception cannot see) go to the fallback.
4. **Memory.** Stored per-sample pieces are the compact raw ``a`` and ``g``
   where those are smaller than the per-sample gradient, so all N samples
   usually stay resident and every gradient is computed once. Contractions run
   over sample blocks whose size is chosen from ``memory_gb``; if the pieces of
   all samples do not fit, the samples are split into super-blocks and the
   column pieces are recomputed per row super-block.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

GIB = 2**30

_ARG_NAMES = {
    F.linear: ("input", "weight", "bias"),
    F.conv1d: ("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
    F.conv2d: ("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
    F.batch_norm: (
        "input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps"
    ),
    F.layer_norm: ("input", "normalized_shape", "weight", "bias", "eps"),
    F.group_norm: ("input", "num_groups", "weight", "bias", "eps"),
}
_DEFAULTS = {
    F.linear: dict(bias=None),
    F.conv1d: dict(bias=None, stride=1, padding=0, dilation=1, groups=1),
    F.conv2d: dict(bias=None, stride=1, padding=0, dilation=1, groups=1),
    F.batch_norm: dict(weight=None, bias=None, training=False, momentum=0.1, eps=1e-5),
    F.layer_norm: dict(weight=None, bias=None, eps=1e-5),
    F.group_norm: dict(weight=None, bias=None, eps=1e-5),
}
_KIND = {
    F.linear: "linear",
    F.conv1d: "conv",
    F.conv2d: "conv",
    F.batch_norm: "batch_norm",
    F.layer_norm: "layer_norm",
    F.group_norm: "group_norm",
}
_MATMUL_KINDS = ("linear", "conv")
_RECIPE_ATTR = "_rmtlens_entk_recipe"
_ELEMENTWISE_WEIGHT = 4.0  # an elementwise flop costs about as much as this many GEMM flops


# --------------------------------------------------------------------------------------
# the scalar network


class ScalarNetwork(nn.Module):
    """``f(x) = head(backbone(x))`` with a ``Linear(p, 1)`` head; output shape ``(B,)``."""

    def __init__(self, backbone: nn.Module, head: nn.Linear):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x)).squeeze(-1)


def scalar_network(backbone: nn.Module, feature_dim: int, head_seed: int) -> nn.Module:
    """The scalar network of the eNTK definition (SPEC §1).

    Parameters
    ----------
    backbone : feature extractor mapping ``(B, 3, S, S)`` to ``(B, feature_dim)``
        (a timm model created with ``num_classes=0``).
    feature_dim : ``p``, read off a forward pass (``rmtlens.backbones.feature_dim``).
    head_seed : seeds the ``Linear(p, 1)`` head's default initialisation (local
        RNG fork; the global RNG is untouched).

    Returns
    -------
    ScalarNetwork in eval mode, head on the backbone's device and dtype; its forward
    returns ``(B,)``.
    """
    if int(feature_dim) < 1:
        raise ValueError(f"feature_dim must be a positive integer, got {feature_dim!r}")
    reference = next(backbone.parameters(), None)
    device = reference.device if reference is not None else torch.device("cpu")
    dtype = reference.dtype if reference is not None else torch.get_default_dtype()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(head_seed))
        head = nn.Linear(int(feature_dim), 1)
    return ScalarNetwork(backbone, head.to(device=device, dtype=dtype)).eval()


# --------------------------------------------------------------------------------------
# interception of parameterised operations


@dataclass
class _Recipe:
    """How a parameter-derived tensor (no sample dependence) is rebuilt from parameters."""

    func: Callable
    args: tuple
    kwargs: dict
    index: int | None
    roots: frozenset


@dataclass
class _StructuredUse:
    kind: str
    weight: str | None
    bias: str | None
    input: torch.Tensor
    version: int
    opts: dict
    out_shape: tuple
    grad: torch.Tensor | None = None


@dataclass
class _GenericUse:
    func: Callable
    args: tuple
    kwargs: dict
    index: int | None
    roots: frozenset
    separable: bool
    grad: torch.Tensor | None = None


def _bind(func, args, kwargs) -> dict:
    bound = dict(_DEFAULTS[func])
    bound.update(zip(_ARG_NAMES[func], args))
    bound.update(kwargs)
    return bound


def _is_inplace(func) -> bool:
    name = getattr(func, "__name__", "")
    return (name.endswith("_") and not name.endswith("__")) or name.startswith("__i")


def _set_output_hook(out, index, store):
    tensor = out if index is None else out[index]

    def hook(grad):
        store.grad = grad

    tensor.register_hook(hook)


class _Capture(TorchFunctionMode):
    """Records every use of a model parameter during one forward pass.

    ``names`` maps ``id(parameter)`` to its name; parameters whose names are in
    ``constant`` are treated as constants (they are handled by the fallback).
    Structured uses (conv/linear/affine norms with a parameter weight/bias and a
    sample-batched input) are recorded with their input and a gradient hook on
    their output. Parameter-only computations are tagged with a recipe; a tagged
    tensor meeting sample data is a generic use.
    """

    def __init__(self, names: dict[int, str], batch: int, constant=frozenset()):
        super().__init__()
        self.names = names
        self.batch = batch
        self.constant = constant
        self.structured: list[_StructuredUse] = []
        self.generic: list[_GenericUse] = []
        self.unsupported: set[str] = set()

    def _param_name(self, t) -> str | None:
        if isinstance(t, nn.Parameter):
            name = self.names.get(id(t))
            if name is not None and name not in self.constant:
                return name
        return None

    def _roots(self, t) -> frozenset:
        name = self._param_name(t)
        if name is not None:
            return frozenset([name])
        recipe = getattr(t, _RECIPE_ATTR, None)
        if recipe is None:
            return frozenset()
        return recipe.roots - self.constant

    def _batched(self, t) -> bool:
        return isinstance(t, torch.Tensor) and t.requires_grad and not self._roots(t)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not torch.is_grad_enabled():
            return func(*args, **kwargs)
        if func in _KIND:
            out = self._structured(func, args, kwargs)
            if out is not None:
                return out
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        roots = frozenset().union(*(self._roots(t) for t in tensors)) if tensors else frozenset()
        if not roots:
            return func(*args, **kwargs)
        batched_ids = {id(t) for t in tensors if self._batched(t)}
        if not batched_ids:
            if _is_inplace(func):  # a recipe would refer to itself
                self.unsupported |= roots
                return func(*args, **kwargs)
            out = func(*args, **kwargs)
            outs = out if isinstance(out, (tuple, list)) else (out,)
            for i, o in enumerate(outs):
                if isinstance(o, torch.Tensor) and o.requires_grad:
                    index = i if isinstance(out, (tuple, list)) else None
                    setattr(o, _RECIPE_ATTR, _Recipe(func, args, kwargs, index, roots))
            return out
        # parameters meet sample data: keep private copies of the sample data
        saved = tree_map(
            lambda t: t.detach().clone() if isinstance(t, torch.Tensor) and id(t) in batched_ids else t,
            (args, kwargs),
        )
        out = func(*args, **kwargs)
        index = None
        target = out
        if isinstance(out, (tuple, list)):
            tensor_outs = [i for i, o in enumerate(out) if isinstance(o, torch.Tensor) and o.requires_grad]
            index = tensor_outs[0] if len(tensor_outs) == 1 else None
            target = out[index] if index is not None else None
        separable = (
            isinstance(target, torch.Tensor)
            and target.requires_grad
            and target.ndim >= 1
            and target.shape[0] == self.batch
        )
        use = _GenericUse(func, saved[0], saved[1], index, roots, separable)
        if separable:
            _set_output_hook(out, index, use)
        else:
            self.unsupported |= roots
        self.generic.append(use)
        return out

    def _structured(self, func, args, kwargs):
        kind = _KIND[func]
        b = _bind(func, args, kwargs)
        x, weight, bias = b["input"], b["weight"], b["bias"]
        w_name, b_name = self._param_name(weight), self._param_name(bias)
        if w_name is None and b_name is None:
            return None
        if (weight is not None and w_name is None) or (bias is not None and b_name is None):
            return None  # a parameter mixed with a derived tensor: generic path
        if not self._batched(x) or x.ndim < 2 or x.shape[0] != self.batch:
            return None
        if kind in _MATMUL_KINDS and w_name is None:
            return None
        if kind == "batch_norm" and (b["training"] or b["running_mean"] is None):
            return None
        if kind == "conv" and not isinstance(b["padding"], (str, int, tuple, list)):
            return None
        opts = {k: v for k, v in b.items() if k not in ("input", "weight", "bias")}
        if kind == "batch_norm":
            opts["running_mean"] = b["running_mean"].detach()
            opts["running_var"] = b["running_var"].detach()
        out = func(*args, **kwargs)
        use = _StructuredUse(
            kind, w_name, b_name, x.detach(), x._version, opts, tuple(out.shape)
        )
        _set_output_hook(out, None, use)
        self.structured.append(use)
        return out


def _rebuild(obj, leaves: dict[str, torch.Tensor], names: dict[int, str], memo: dict):
    """Rebuild ``obj`` with parameters replaced by ``leaves`` (others detached)."""
    if not isinstance(obj, torch.Tensor):
        return obj
    key = id(obj)
    if key in memo:
        return memo[key]
    if isinstance(obj, nn.Parameter) and key in names:
        result = leaves.get(names[key], obj.detach())
    elif getattr(obj, _RECIPE_ATTR, None) is not None:
        recipe = getattr(obj, _RECIPE_ATTR)
        r_args, r_kwargs = tree_map(
            lambda t: _rebuild(t, leaves, names, memo), (recipe.args, recipe.kwargs)
        )
        result = recipe.func(*r_args, **r_kwargs)
        if recipe.index is not None:
            result = result[recipe.index]
    else:
        result = obj.detach()
    memo[key] = result
    return result


# --------------------------------------------------------------------------------------
# plan: which parameter is handled how


def _conv_padding(padding, kernel, dilation, dims) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) zero padding of a conv's input."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding != "same":
            raise ValueError(f"unknown conv padding {padding!r}")
        pads = []
        for k, d in zip(kernel, dilation):
            total = d * (k - 1)
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        return (left, right, top, bottom)
    p = (padding,) * dims if isinstance(padding, int) else tuple(padding)
    if dims == 1:
        return (p[0], p[0], 0, 0)
    return (p[1], p[1], p[0], p[0])


def _pair(v, dims) -> tuple[int, int]:
    v = (v,) * dims if isinstance(v, int) else tuple(v)
    return (1, v[0]) if dims == 1 else (v[0], v[1])


@dataclass
class _Call:
    """Geometry of one call of a conv/linear site (shapes exclude the batch dim)."""

    in_shape: tuple
    out_shape: tuple
    positions: int
    kernel: tuple = (1, 1)
    stride: tuple = (1, 1)
    dilation: tuple = (1, 1)
    pads: tuple = (0, 0, 0, 0)


@dataclass
class _MatmulSite:
    kind: str
    weight: str
    bias: str | None
    calls: list[_Call]
    groups: int
    d_a: int  # per-group input features, +1 for the bias
    d_g: int  # per-group output features
    n_params: int
    method: str = "explicit"  # or "structured"
    store: str = "raw"  # or "formed"
    offset: int = 0  # column offset in the formed buffer when store == "formed"

    @property
    def positions(self) -> int:
        return sum(c.positions for c in self.calls)

    @property
    def raw_numel(self) -> int:
        return sum(math.prod(c.in_shape) + math.prod(c.out_shape) for c in self.calls)

    def pair_flops(self, method: str) -> float:
        """Flops (elementwise ops weighted) per kernel entry."""
        S = self.positions
        if method == "explicit":
            return 2.0 * self.n_params
        return self.groups * S * S * (2.0 * (self.d_a + self.d_g) + 2 * _ELEMENTWISE_WEIGHT)

    def gram_flops(self) -> float:
        """GEMM flops of the two Gram matrices per kernel entry."""
        return 2.0 * self.groups * self.positions**2 * (self.d_a + self.d_g)

    def form_flops(self) -> float:
        """Flops to form one sample's explicit gradient from its raw pieces."""
        return 2.0 * self.positions * self.n_params


@dataclass
class _Plan:
    names: dict[int, str]
    n_params: int
    sites: list[_MatmulSite]
    formed: dict[str, tuple[int, int]]  # param name -> (offset, numel) in the formed buffer
    n_formed: int
    generic_roots: frozenset
    fallback: tuple[str, ...]
    zero: tuple[str, ...]
    act_bytes_per_sample: float
    pass_flops_per_sample: float
    itemsize: int
    coverage: dict = field(default_factory=dict)
    probe_grads: dict = field(default_factory=dict)  # Σ over the probe batch, from autograd

    @property
    def raw_sites(self) -> list[_MatmulSite]:
        return [s for s in self.sites if s.store == "raw"]

    def store_bytes_per_sample(self) -> int:
        return self.itemsize * (self.n_formed + sum(s.raw_numel for s in self.raw_sites))


def _site_calls(uses: list[_StructuredUse]) -> tuple[list[_Call], int, int, int]:
    calls = []
    first = uses[0]
    for u in uses:
        if u.kind == "linear":
            positions = math.prod(u.input.shape[1:-1]) if u.input.ndim > 2 else 1
            calls.append(_Call(tuple(u.input.shape[1:]), u.out_shape[1:], positions))
        else:
            dims = u.input.ndim - 2
            kernel = _pair(tuple(u.opts["_wshape"][2:]), dims)
            stride, dilation = _pair(u.opts["stride"], dims), _pair(u.opts["dilation"], dims)
            pads = _conv_padding(u.opts["padding"], kernel, dilation, dims)
            positions = math.prod(u.out_shape[2:])
            calls.append(
                _Call(tuple(u.input.shape[1:]), u.out_shape[1:], positions, kernel, stride, dilation, pads)
            )
    w_shape = first.opts["_wshape"]
    if first.kind == "linear":
        groups, d_g, d_a = 1, w_shape[0], w_shape[1]
    else:
        groups = int(first.opts["groups"])
        d_g, d_a = w_shape[0] // groups, w_shape[1] * math.prod(w_shape[2:])
    return calls, groups, d_a + (first.bias is not None), d_g


def _classify(cap: _Capture, params: dict[str, nn.Parameter], forced=frozenset()):
    """Split parameter names into structured sites, affine keys, generic roots, fallback."""
    by_key: dict[tuple, list[_StructuredUse]] = {}
    for u in cap.structured:
        by_key.setdefault((u.kind, u.weight, u.bias), []).append(u)
    roles: dict[str, set] = {}
    for key in by_key:
        for name in key[1:]:
            if name is not None:
                roles.setdefault(name, set()).add(key)
    for use in cap.generic:
        for name in use.roots:
            roles.setdefault(name, set()).add("generic")
    fallback = set(cap.unsupported) | set(forced)
    for name, r in roles.items():
        if len(r) > 1:
            fallback.add(name)
    changed = True
    while changed:  # a site with one fallback parameter sends its partner too
        changed = False
        for key in by_key:
            members = {n for n in key[1:] if n is not None}
            if members & fallback and not members <= fallback:
                fallback |= members
                changed = True
    keys = {k: v for k, v in by_key.items() if not ({n for n in k[1:] if n} & fallback)}
    generic = frozenset(n for n, r in roles.items() if r == {"generic"} and n not in fallback)
    unseen = [n for n in params if n not in roles and n not in fallback]
    return keys, generic, fallback, unseen


def _probe(model, x_probe: torch.Tensor, names, params) -> tuple[_Capture, dict]:
    """One captured forward/backward on a tiny batch; also measures memory and flops."""
    from torch.utils.flop_counter import FlopCounterMode

    x = x_probe.detach().clone().requires_grad_(True)
    saved: dict[int, int] = {}
    resident = {t.untyped_storage().data_ptr() for t in list(params.values()) + list(model.buffers())}

    def pack(t):  # activations saved for backward, not the weights
        ptr = t.untyped_storage().data_ptr()
        if ptr not in resident:
            saved[ptr] = t.untyped_storage().nbytes()
        return t

    cap = _Capture(names, x.shape[0])
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with cap:
            out = model(x)
    f = _scalar_output(out, x.shape[0])
    for u in cap.structured:
        u.opts["_wshape"] = tuple(params[u.weight].shape) if u.weight else None
    names_list = list(params)
    grads = torch.autograd.grad(
        f.sum(), [x] + [params[n] for n in names_list], allow_unused=True
    )
    used = {n for n, g in zip(names_list, grads[1:]) if g is not None}
    batch_grads = {n: g for n, g in zip(names_list, grads[1:]) if g is not None}
    counter = FlopCounterMode(display=False)
    with counter:
        xf = x_probe.detach().clone().requires_grad_(True)
        _scalar_output(model(xf), xf.shape[0]).sum().backward(inputs=[xf])
    stats = dict(
        saved_bytes=sum(saved.values()),
        flops=float(counter.get_total_flops()),
        used=used,
        batch_grads=batch_grads,
    )
    return cap, stats


def _scalar_output(out, batch: int) -> torch.Tensor:
    if not isinstance(out, torch.Tensor) or out.numel() != batch:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"model must return one scalar per sample, shape ({batch},) or ({batch}, 1); got {shape}. "
            "Wrap a backbone with scalar_network()."
        )
    return out.reshape(batch)


def _make_plan(model, x_probe, n_rows: int, n_cols: int, dtype, forced=frozenset()) -> _Plan:
    """Probe the model and decide, per parameter, how its kernel part is computed.

    ``forced`` names parameters sent to the per-sample fallback whatever their uses.
    """
    params = dict(model.named_parameters())
    names = {id(p): n for n, p in params.items()}
    cap, stats = _probe(model, x_probe, names, params)
    keys, generic, fallback, unseen = _classify(cap, params, forced)
    fallback |= {n for n in unseen if n in stats["used"]}
    zero = tuple(n for n in unseen if n not in fallback)
    itemsize = torch.empty((), dtype=dtype).element_size()

    sites: list[_MatmulSite] = []
    affine_names: list[str] = []
    n_eff = max(1, min(n_rows, n_cols))
    for (kind, w, b), uses in keys.items():
        if kind in _MATMUL_KINDS:
            calls, groups, d_a, d_g = _site_calls(uses)
            n_params = params[w].numel() + (params[b].numel() if b else 0)
            if groups * d_a * d_g != n_params:
                raise RuntimeError(f"internal: parameter count mismatch at {w}")
            site = _MatmulSite(kind, w, b, calls, groups, d_a, d_g, n_params)
            explicit = site.pair_flops("explicit") + 2 * site.form_flops() / n_eff
            site.method = "explicit" if explicit <= site.pair_flops("structured") else "structured"
            site.store = "formed" if site.method == "explicit" and n_params <= site.raw_numel else "raw"
            sites.append(site)
        else:
            affine_names += [n for n in (w, b) if n is not None]

    formed: dict[str, tuple[int, int]] = {}
    offset = 0
    for site in sites:
        if site.store == "formed":
            site.offset = offset
            offset += site.n_params
    for name in affine_names + sorted(generic) + sorted(fallback):
        formed[name] = (offset, params[name].numel())
        offset += params[name].numel()

    counted = [n for s in sites for n in (s.weight, s.bias) if n] + list(formed) + list(zero)
    if sorted(counted) != sorted(params):
        missing = set(params) - set(counted)
        twice = {n for n in counted if counted.count(n) > 1}
        raise RuntimeError(f"eNTK parameter coverage broken: missing {missing}, twice {twice}")
    p_total = sum(p.numel() for p in params.values())
    batch = x_probe.shape[0]
    probe_raw = sum(
        (u.input.numel() + math.prod(u.out_shape)) * u.input.element_size() for u in cap.structured
    )
    act = (stats["saved_bytes"] + probe_raw) / batch
    coverage = dict(
        structured=sum(s.n_params for s in sites if s.method == "structured"),
        explicit=sum(s.n_params for s in sites if s.method == "explicit"),
        affine=sum(params[n].numel() for n in affine_names),
        generic=sum(params[n].numel() for n in generic),
        fallback=sum(params[n].numel() for n in fallback),
        unused=sum(params[n].numel() for n in zero),
    )
    return _Plan(
        names=names,
        n_params=p_total,
        sites=sites,
        formed=formed,
        n_formed=offset,
        generic_roots=generic,
        fallback=tuple(sorted(fallback)),
        zero=zero,
        act_bytes_per_sample=act,
        pass_flops_per_sample=stats["flops"] / batch,
        itemsize=itemsize,
        coverage=coverage,
        probe_grads=stats["batch_grads"],
    )


# --------------------------------------------------------------------------------------
# per-sample pieces


class _Workspace:
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


def _im2col(site: _MatmulSite, call: _Call, a: torch.Tensor, dst: torch.Tensor) -> None:
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


def _form(site: _MatmulSite, raw, out: torch.Tensor | None = None, ws: _Workspace | None = None):
    """Explicit per-sample gradients ``(n, n_params)`` of a matmul site.

    ``J_n = Σ_s g_ns a_nsᵀ`` per group, one batched matmul per call (bias: a
    row of ones appended to the patches). ``out`` must be contiguous if given.
    """
    ws = ws or _Workspace()
    a0 = raw[0][0]
    n, G, d_a, d_g = a0.shape[0], site.groups, site.d_a, site.d_g
    d_a0 = d_a - (site.bias is not None)
    J = out if out is not None else torch.empty((n, site.n_params), dtype=a0.dtype, device=a0.device)
    J3 = J.view(n * G, d_g, d_a)
    for k, (call, (a, g)) in enumerate(zip(site.calls, raw)):
        S = call.positions
        if site.kind == "linear":
            g3 = g.reshape(n, S, d_g).transpose(1, 2)
            if site.bias is None:
                B3 = a.reshape(n, S, d_a)
            else:
                B3 = ws.get("patches", (n, S, d_a), a.dtype, a.device)
                B3[..., :d_a0].copy_(a.reshape(n, S, d_a0))
                B3[..., d_a0].fill_(1.0)
        else:
            X = ws.get("patches", (n, G, d_a, S), a.dtype, a.device)
            _im2col(site, call, a, X[:, :, :d_a0])
            if site.bias is not None:
                X[:, :, d_a0].fill_(1.0)
            B3 = X.view(n * G, d_a, S).transpose(1, 2)
            g3 = g.reshape(n * G, d_g, S)
        if k == 0:
            torch.bmm(g3, B3, out=J3)
        else:
            J3.baddbmm_(g3, B3)
    return J


def _gram_piece(site: _MatmulSite, raw, ws: _Workspace, role: str | None):
    """Patches ``(G, d_a, n·S)`` and output gradients ``(G, d_g, n·S)`` of a site."""
    a0 = raw[0][0]
    n, G, d_a, d_g, S = a0.shape[0], site.groups, site.d_a, site.d_g, site.positions
    d_a0 = d_a - (site.bias is not None)
    A = ws.get(role and role + "_a", (G, d_a, n, S), a0.dtype, a0.device)
    Gb = ws.get(role and role + "_g", (G, d_g, n, S), a0.dtype, a0.device)
    off = 0
    for call, (a, g) in zip(site.calls, raw):
        Sk = call.positions
        if site.kind == "linear":
            A[0, :d_a0, :, off : off + Sk].copy_(a.reshape(n, Sk, d_a0).permute(2, 0, 1))
            Gb[0, :, :, off : off + Sk].copy_(g.reshape(n, Sk, d_g).permute(2, 0, 1))
        else:
            _im2col(site, call, a, A[:, :d_a0, :, off : off + Sk].permute(2, 0, 1, 3))
            Gb[:, :, :, off : off + Sk].copy_(g.reshape(n, G, d_g, Sk).permute(1, 2, 0, 3))
        off += Sk
    if site.bias is not None:
        A[:, d_a0].fill_(1.0)
    return A.view(G, d_a, n * S), Gb.view(G, d_g, n * S), n, S


def _gram_pair(r, c, ws: _Workspace) -> torch.Tensor:
    """``Σ_{s,t} (a_s·a'_t)(g_s·g'_t)`` summed over groups: ``(n_r, n_c)``."""
    Ar, Gr, nr, S = r
    Ac, Gc, nc, _ = c
    G = Ar.shape[0]
    prod = ws.get("gram_a", (G, nr * S, nc * S), Ar.dtype, Ar.device)
    other = ws.get("gram_g", (G, nr * S, nc * S), Ar.dtype, Ar.device)
    torch.bmm(Ar.transpose(1, 2), Ac, out=prod)
    torch.bmm(Gr.transpose(1, 2), Gc, out=other)
    prod.mul_(other)
    prod = prod.sum(0) if G > 1 else prod[0]
    if S == 1:
        return prod
    return prod.view(nr, S, nc, S).sum((1, 3))


def _affine_grads(use: _StructuredUse) -> dict[str, torch.Tensor]:
    """Per-sample gradients of a norm layer's weight and bias, shape ``(n, numel)``."""
    x, g = use.input, use.grad
    n = x.shape[0]
    o = use.opts
    if use.kind == "batch_norm":
        shape = (1, -1) + (1,) * (x.ndim - 2)
        xhat = (x - o["running_mean"].view(shape)) * torch.rsqrt(o["running_var"].view(shape) + o["eps"])
        dims = tuple(range(2, x.ndim))
    elif use.kind == "layer_norm":
        xhat = F.layer_norm(x, o["normalized_shape"], None, None, o["eps"])
        dims = tuple(range(1, x.ndim - len(o["normalized_shape"])))
    else:
        xhat = F.group_norm(x, o["num_groups"], None, None, o["eps"])
        dims = tuple(range(2, x.ndim))
    out = {}
    if use.weight is not None:
        gw = g * xhat
        out[use.weight] = (gw.sum(dims) if dims else gw).reshape(n, -1)
    if use.bias is not None:
        out[use.bias] = (g.sum(dims) if dims else g).reshape(n, -1)
    return out


def _generic_grads(use: _GenericUse, plan: _Plan, params, chunk_bytes: int):
    """Per-sample gradients of the generic roots of one operation by masked VJPs."""
    roots = sorted(use.roots & plan.generic_roots)
    if not roots:
        return {}
    leaves = {n: params[n].detach().requires_grad_(True) for n in roots}
    r_args, r_kwargs = tree_map(lambda t: _rebuild(t, leaves, plan.names, {}), (use.args, use.kwargs))
    out = use.func(*r_args, **r_kwargs)
    if use.index is not None:
        out = out[use.index]
    g = use.grad
    n = g.shape[0]
    per_sample = {name: [] for name in roots}
    chunk = max(1, min(n, chunk_bytes // max(1, g.numel() * g.element_size())))
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        cot = g.new_zeros((stop - start,) + tuple(g.shape))
        idx = torch.arange(stop - start, device=g.device)
        cot[idx, idx + start] = g[start:stop]
        grads = torch.autograd.grad(
            out, [leaves[r] for r in roots], cot, is_grads_batched=True,
            retain_graph=True, allow_unused=True,
        )
        for name, gr in zip(roots, grads):
            if gr is None:
                gr = cot.new_zeros((stop - start,) + tuple(leaves[name].shape))
            per_sample[name].append(gr.reshape(stop - start, -1))
    return {name: torch.cat(v) for name, v in per_sample.items()}


def _fallback_grads(model, plan: _Plan, x: torch.Tensor, params, buffers) -> torch.Tensor:
    """Per-sample gradients of the fallback parameters, ``(n, Σ numel)``."""
    from torch.func import functional_call, grad, vmap

    names = list(plan.fallback)
    fixed = {n: p.detach() for n, p in params.items() if n not in names}
    trainable = {n: params[n].detach() for n in names}

    def f_single(theta, xi):
        out = functional_call(model, {**fixed, **theta, **buffers}, (xi.unsqueeze(0),))
        return out.reshape(())

    pieces = []
    try:
        per_sample = vmap(grad(f_single), in_dims=(None, 0))
        for start in range(0, x.shape[0], 16):
            g = per_sample(trainable, x[start : start + 16])
            pieces.append(torch.cat([g[n].reshape(g[n].shape[0], -1) for n in names], dim=1))
    except Exception:  # an operation without a vmap rule: per-sample loop
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
class _Pieces:
    """Per-sample pieces of ``n`` samples: formed gradients and raw site data."""

    formed: torch.Tensor  # (n, n_formed)
    raw: dict[int, list[list[torch.Tensor]]]  # site index -> calls -> [a, g] of shape (n, ...)

    @property
    def n(self) -> int:
        return self.formed.shape[0]


def _gradient_pieces(model, plan: _Plan, x: torch.Tensor, batch: int, device, dtype, progress, budget):
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
    site_of = {(s.kind, s.weight, s.bias): i for i, s in enumerate(plan.sites)}
    constant = frozenset(plan.fallback) | frozenset(plan.zero)
    chunk_bytes = int(max(2**20, min(64 * 2**20, budget / 8)))  # masked cotangents
    for start in range(0, n, batch):
        stop = min(n, start + batch)
        xb = x[start:stop].to(device=device, dtype=dtype).detach().clone().requires_grad_(True)
        cap = _Capture(plan.names, stop - start, constant)
        # parameters handled elsewhere must look like constants to the capture
        with _requires_grad(params, constant, False), cap:
            out = model(xb)
        torch.autograd.grad(_scalar_output(out, stop - start).sum(), xb)
        rows = slice(start, stop)
        call_index: dict[int, int] = {}
        for use in cap.structured:
            if use.input._version != use.version:
                raise RuntimeError(
                    "the input of a parameterised layer was modified in place after use; "
                    "the eNTK pieces would be wrong"
                )
            if use.kind not in _MATMUL_KINDS:
                for name, g in _affine_grads(use).items():
                    off, size = plan.formed[name]
                    formed[rows, off : off + size] += g
                continue
            i = site_of.get((use.kind, use.weight, use.bias))
            if i is None:
                raise RuntimeError(f"internal: layer {use.weight} was not seen by the probe")
            site = plan.sites[i]
            k = call_index.get(i, 0)
            call_index[i] = k + 1
            if site.store == "raw":
                raw[i][k][0][rows] = use.input
                raw[i][k][1][rows] = use.grad
            else:
                J = _form(_single_call(site, k), [(use.input, use.grad)])
                formed[rows, site.offset : site.offset + site.n_params] += J
                del J
        for use in cap.generic:
            if not use.separable:
                continue
            for name, g in _generic_grads(use, plan, params, chunk_bytes).items():
                off, size = plan.formed[name]
                formed[rows, off : off + size] += g
        if plan.fallback:
            off = plan.formed[plan.fallback[0]][0]
            G = _fallback_grads(model, plan, xb.detach(), params, buffers)
            formed[rows, off : off + G.shape[1]] = G
        del cap, out
        if progress is not None:
            progress.update(plan.pass_flops_per_sample * (stop - start))
    return _Pieces(formed, raw)


def _single_call(site: _MatmulSite, k: int) -> _MatmulSite:
    return _MatmulSite(
        site.kind, site.weight, site.bias, [site.calls[k]], site.groups, site.d_a, site.d_g, site.n_params
    )


# --------------------------------------------------------------------------------------
# contraction


class _Operand:
    """One contraction term: how to get a block's piece and how to pair two pieces."""

    def __init__(self, piece: Callable, pair: Callable, piece_bytes: float, temp_bytes: float, pair_bytes, flops):
        self.piece = piece  # (pieces, start, stop, workspace, role) -> block piece
        self.pair = pair  # (piece_r, piece_c, workspace) -> (r, c) block in compute dtype
        self.piece_bytes = piece_bytes  # per sample, kept while a piece is alive
        self.temp_bytes = temp_bytes  # per sample, only while a piece is being made
        self.pair_bytes = pair_bytes  # (r, c) -> transient bytes of one pair
        self.flops = flops  # (r, c) -> flops of one pair


def _operands(plan: _Plan, itemsize: int) -> list[_Operand]:
    """The contraction terms: all formed gradients together, then each raw site."""
    ops = []
    if plan.n_formed:
        P = plan.n_formed
        ops.append(
            _Operand(
                piece=lambda pc, a, b, ws, role: pc.formed[a:b],
                pair=lambda r, c, ws: r @ c.T,
                piece_bytes=0.0,  # a view of the resident buffer
                temp_bytes=0.0,
                pair_bytes=lambda r, c: r * c * (itemsize + 8),
                flops=lambda r, c, P=P: 2.0 * r * c * P,
            )
        )

    def explicit_piece(pc, a, b, ws, role, i, site):
        raw = [[t[a:b] for t in call] for call in pc.raw[i]]
        ref = raw[0][0]
        out = ws.get(role, (b - a, site.n_params), ref.dtype, ref.device)
        return _form(site, raw, out, ws)

    def gram_piece(pc, a, b, ws, role, i, site):
        return _gram_piece(site, [[t[a:b] for t in call] for call in pc.raw[i]], ws, role)

    for i, site in enumerate(plan.sites):
        if site.store != "raw":
            continue
        S, G = site.positions, site.groups
        patches = S * G * site.d_a * itemsize
        if site.method == "explicit":
            ops.append(
                _Operand(
                    piece=lambda pc, a, b, ws, role, i=i, s=site: explicit_piece(pc, a, b, ws, role, i, s),
                    pair=lambda r, c, ws: r @ c.T,
                    piece_bytes=site.n_params * itemsize,
                    temp_bytes=patches,
                    pair_bytes=lambda r, c: r * c * (itemsize + 8),
                    flops=lambda r, c, s=site: r * c * s.pair_flops("explicit"),
                )
            )
        else:
            ops.append(
                _Operand(
                    piece=lambda pc, a, b, ws, role, i=i, s=site: gram_piece(pc, a, b, ws, role, i, s),
                    pair=_gram_pair,
                    piece_bytes=S * G * (site.d_a + site.d_g) * itemsize,
                    temp_bytes=0.0,
                    pair_bytes=lambda r, c, S=S, G=G: 2 * G * r * S * c * S * itemsize + r * c * 8,
                    flops=lambda r, c, s=site: r * c * s.gram_flops(),
                )
            )
    return ops


def _block_size(op: _Operand, n_rows: int, n_cols: int, budget: float, target: int) -> tuple[int, bool]:
    """Sample block size and whether all column pieces can stay cached."""
    b = max(1, min(target, max(n_rows, n_cols)))
    per_sample = op.piece_bytes + op.temp_bytes
    while b > 1 and 2 * b * per_sample + op.pair_bytes(b, b) > budget:
        b = (b + 1) // 2
    cache = (n_cols + b) * op.piece_bytes + b * op.temp_bytes + op.pair_bytes(b, b) <= budget
    return b, cache


def _blocks(n: int, b: int) -> list[tuple[int, int]]:
    return [(s, min(n, s + b)) for s in range(0, n, b)]


def _contract(
    ops: list[_Operand], pr: _Pieces, pc: _Pieces, symmetric: bool, K: torch.Tensor,
    budget: float, target: int, progress,
) -> None:
    """``K += Σ_terms pair(piece(rows), piece(cols))`` over sample blocks.

    With ``symmetric`` (``pr is pc``) only blocks on and above the diagonal are
    computed; the lower triangle is mirrored at the end.
    """
    n_r, n_c = pr.n, pc.n
    sizes = [_block_size(op, n_r, n_c, budget, target) for op in ops]
    b_sym = min((b for b, _ in sizes), default=1)  # one block grid for the mirror
    for op, (b, cache_cols) in zip(ops, sizes):
        if symmetric:
            b = b_sym
        rows, cols = _blocks(n_r, b), _blocks(n_c, b)
        cache: dict[int, Any] = {}
        ws = _Workspace()  # per term: its buffers are sized for it
        for bi, (r0, r1) in enumerate(rows):
            p_row = cache.get(bi) if symmetric else None
            if p_row is None:
                p_row = op.piece(pr, r0, r1, ws, None if symmetric and cache_cols else "row")
            for bj, (c0, c1) in enumerate(cols):
                if symmetric and bj < bi:
                    continue
                if symmetric and bj == bi:
                    p_col = p_row
                elif bj in cache:
                    p_col = cache[bj]
                else:
                    p_col = op.piece(pc, c0, c1, ws, None if cache_cols else "col")
                    if cache_cols:
                        cache[bj] = p_col
                K[r0:r1, c0:c1] += op.pair(p_row, p_col, ws)
                if progress is not None:
                    progress.update(op.flops(r1 - r0, c1 - c0))
            if symmetric:
                cache.pop(bi, None)
    if symmetric:  # mirror the upper triangle: the result is exactly symmetric
        blocks = _blocks(n_r, b_sym)
        for bi, (r0, r1) in enumerate(blocks):
            diag = K[r0:r1, r0:r1]
            diag.copy_(torch.triu(diag) + torch.triu(diag, 1).T)
            for c0, c1 in blocks[bi + 1 :]:
                K[c0:c1, r0:r1] = K[r0:r1, c0:c1].T


# --------------------------------------------------------------------------------------
# the public entry points


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
def _requires_grad(params: dict[str, nn.Parameter], names, value: bool):
    """Temporarily set ``requires_grad`` of the named parameters."""
    chosen = [params[n] for n in names]
    old = [p.requires_grad for p in chosen]
    for p in chosen:
        p.requires_grad_(value)
    try:
        yield
    finally:
        for p, r in zip(chosen, old):
            p.requires_grad_(r)


def _all_require_grad(model: nn.Module):
    params = dict(model.named_parameters())
    return _requires_grad(params, list(params), True)


def _prepare_model(model: nn.Module, device, dtype) -> tuple[nn.Module, int]:
    """The model in the compute dtype on the device (a copy only when needed)."""
    ref = next(model.parameters(), None)
    if ref is None:
        raise ValueError("model has no parameters")
    same = ref.device == device and all(p.dtype == dtype for p in model.parameters())
    if same:
        return model, 0
    copy_ = copy.deepcopy(model).to(device=device, dtype=dtype)
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


@dataclass
class _Schedule:
    plan: _Plan
    ops: list[_Operand]
    budget_transient: float
    pass_batch: int
    super_block: int
    block_target: int


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


def _union_size(n_rows: int, n_cols: int, layout: str) -> int:
    """Samples whose pieces are needed: rows, plus columns unless they are rows too."""
    return n_rows + n_cols if layout == "rectangular" else n_rows


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


def _schedule(plan: _Plan, n_rows, n_cols, layout, device, memory_gb, copy_bytes) -> _Schedule:
    """Chunking of a verified plan under the memory budget (the plan itself does not
    depend on the layout, so one plan serves a change of layout)."""
    n_union = _union_size(n_rows, n_cols, layout)
    total = memory_gb * GIB
    fixed = n_rows * n_cols * 8 + copy_bytes
    working = total - fixed
    if working < 0.25 * total:
        raise ValueError(
            f"memory_gb={memory_gb} is too small: the kernel itself takes "
            f"{n_rows * n_cols * 8 / GIB:.3f} GiB (+ {copy_bytes / GIB:.3f} GiB model copy)"
        )
    # resident pieces take what they need (at most 60%); transients get the rest
    budget_store = 0.6 * working
    per_sample = max(1, plan.store_bytes_per_sample())
    if n_union * per_sample <= budget_store:
        super_block = n_union
        store = n_union * per_sample
    else:
        super_block = int(budget_store // (2 * per_sample))
        if super_block < 1:
            raise ValueError(
                f"memory_gb={memory_gb} is too small: one sample's pieces take {per_sample / GIB:.3f} GiB"
            )
        store = 2 * super_block * per_sample
    budget_transient = 0.85 * working - store
    act = max(1.0, 2.0 * plan.act_bytes_per_sample)
    cap = 64 if plan.generic_roots else 128
    pass_batch = int(max(1, min(cap, budget_transient // act, super_block)))
    ops = _operands(plan, plan.itemsize)
    if device.type == "cuda":
        target = 2048
    else:  # 256 reaches the GEMM peak; smaller kernels gain more from symmetric blocks
        target = 256 if n_cols >= 1024 or layout == "rectangular" else 128
    return _Schedule(plan, ops, budget_transient, pass_batch, super_block, target)


def _estimate_flops(sched: _Schedule, n_rows: int, n_cols: int, layout: str) -> dict:
    """Flops of the schedule: gradient pass, formation and contraction."""
    plan = sched.plan
    n_union = _union_size(n_rows, n_cols, layout)
    m = sched.super_block
    if m >= n_union:
        recompute = 0
    elif layout == "symmetric":
        k = math.ceil(n_rows / m)
        recompute = n_rows * (k - 1) / 2 + 0.0
    else:
        recompute = math.ceil(n_rows / m) * n_cols - n_cols
    passes = (n_union + recompute) * plan.pass_flops_per_sample
    explicit = structured = form = 0.0
    if layout == "rectangular":
        entries = float(n_rows * n_cols)
    else:  # blocks on and above the diagonal of the leading n_cols x n_cols part
        b = min(sched.block_target, n_cols)
        nb = math.ceil(n_cols / b)
        entries = n_cols * n_cols * (nb * (nb + 1) / 2) / (nb * nb) + (n_rows - n_cols) * n_cols
    explicit += 2.0 * entries * plan.n_formed
    for s in plan.sites:
        if s.method == "explicit":
            explicit += entries * s.pair_flops("explicit")
            form += s.form_flops() * (n_union if s.store == "formed" else n_rows + n_cols)
        else:
            structured += entries * s.gram_flops()
    return dict(
        n_params=plan.n_params,
        explicit_jjt=2.0 * n_rows * n_cols * plan.n_params,
        gradient_pass=passes,
        formation=form,
        contraction_explicit=explicit,
        contraction_structured=structured,
        contraction=explicit + structured + form,
        total=passes + explicit + structured + form,
        coverage=dict(plan.coverage),
    )


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
    x_rows : ``(N_rows, ...)`` preprocessed inputs (``rmtlens.backbones.preprocess``).
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


def _entk(model, x_rows, x_cols, memory_gb, dtype, device, allow_tf32, progress, timings=None):
    """``entk``; ``timings`` (a dict) receives seconds per phase and the schedule."""
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
        x_probe = x_rows[: min(2, n_rows)].to(device=device, dtype=dtype)
        plan = _verified_plan(work, x_probe, n_rows, n_cols, dtype, device)
        sched = _schedule(plan, n_rows, n_cols, layout, device, memory_gb, copy_bytes)
        if layout == "prefix" and sched.super_block < n_rows:
            layout = "rectangular"  # pieces of all rows do not fit: the general path
            sched = _schedule(plan, n_rows, n_cols, layout, device, memory_gb, copy_bytes)
        x_all = x_rows if layout != "rectangular" else torch.cat([x_rows, x_cols.to(x_rows.device)])
        est = _estimate_flops(sched, n_rows, n_cols, layout)
        bar = _Progress(progress, est["gradient_pass"] + est["contraction"]) if progress else None
        try:
            K = torch.zeros((n_rows, n_cols), dtype=torch.float64, device=device)
            if timings is not None:
                timings.update(schedule=sched, flops=est, layout=layout, gradient_pass=0.0, contraction=0.0)
            _run(work, sched, x_all, n_rows, n_cols, layout, K, device, dtype, bar, timings)
            if bar is not None:
                bar.finish()
        finally:
            if bar is not None:
                bar.close()
    return K.cpu().numpy()


def _run(model, sched: _Schedule, x_all, n_rows, n_cols, layout, K, device, dtype, bar, timings):
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
            "gradient_pass", _gradient_pieces, model, plan, x, sched.pass_batch, device, dtype, bar,
            sched.budget_transient,
        )

    def contract(pr, pc, sym, rows, cols):  # K[rows, cols] is a view: accumulates in place
        timed(
            "contraction", _contract, sched.ops, pr, pc, sym, K[rows, cols],
            sched.budget_transient, sched.block_target, bar,
        )

    if layout == "prefix":  # columns = leading rows: symmetric part, then the rest
        pr = pieces(x_all)
        pc = _Pieces(pr.formed[:n_cols], _slice_raw(pr.raw, 0, n_cols))
        contract(pc, pc, True, slice(0, n_cols), slice(0, n_cols))
        if n_rows > n_cols:
            rest = _Pieces(pr.formed[n_cols:], _slice_raw(pr.raw, n_cols, n_rows))
            contract(rest, pc, False, slice(n_cols, n_rows), slice(0, n_cols))
        return
    if layout == "symmetric":
        supers = _blocks(n_rows, m)
        for i, (a0, a1) in enumerate(supers):
            pr = pieces(x_all[a0:a1])
            contract(pr, pr, True, slice(a0, a1), slice(a0, a1))
            for b0, b1 in supers[i + 1 :]:
                pc = pieces(x_all[b0:b1])
                contract(pr, pc, False, slice(a0, a1), slice(b0, b1))
                K[b0:b1, a0:a1] = K[a0:a1, b0:b1].T
                del pc
            del pr
        return
    if m >= n_rows + n_cols:
        both = pieces(x_all)
        pr = _Pieces(both.formed[:n_rows], _slice_raw(both.raw, 0, n_rows))
        pc = _Pieces(both.formed[n_rows:], _slice_raw(both.raw, n_rows, n_rows + n_cols))
        contract(pr, pc, False, slice(0, n_rows), slice(0, n_cols))
        return
    for a0, a1 in _blocks(n_rows, m):
        pr = pieces(x_all[a0:a1])
        for b0, b1 in _blocks(n_cols, m):
            pc = pieces(x_all[n_rows + b0 : n_rows + b1])
            contract(pr, pc, False, slice(a0, a1), slice(b0, b1))
            del pc
        del pr


def _slice_raw(raw, a, b):
    return {i: [[t[a:b] for t in call] for call in calls] for i, calls in raw.items()}


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
    x_probe = torch.zeros((2, 3, image_size, image_size), dtype=dtype, device=ref.device)
    with _all_require_grad(work):
        plan = _verified_plan(work, x_probe, n_rows, n_c, dtype, ref.device)
        sched = _schedule(plan, n_rows, n_c, layout, ref.device, memory_gb, copy_bytes)
    return _estimate_flops(sched, n_rows, n_c, layout)
