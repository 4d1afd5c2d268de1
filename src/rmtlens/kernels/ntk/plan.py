"""Step 2, plan: decide for every parameter how its per-sample gradient is obtained.

Matmul sites (conv/linear) get the structured or explicit contraction, norm affines
a closed form, other uses a single-op VJP, the rest the whole-network fallback.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from rmtlens.kernels.ntk.capture import _MATMUL_KINDS, _Capture, _Signature, _StructuredUse

_ELEMENTWISE_WEIGHT = 4.0  # an elementwise flop costs about as much as this many GEMM flops


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
    expected: list = field(default_factory=list)  # signatures every batch must reproduce
    watch: frozenset = frozenset()  # ids of parameters no use touched on the probe
    fallback_vmap: bool | None = None  # whole-network fallback through vmap (None: untried)
    probe_size: int = 0  # samples of the probe the plan was verified on

    def paths(self) -> dict[str, str]:
        """Per parameter name, how its per-sample gradient is obtained: ``structured`` /
        ``explicit`` (matmul sites), ``affine`` (norm closed form), ``generic``
        (single-op VJP), ``fallback`` (whole network) or ``unused``."""
        out = {n: s.method for s in self.sites for n in (s.weight, s.bias) if n}
        for name in self.formed:
            out.setdefault(name, "affine")
        out.update({n: "generic" for n in self.generic_roots})
        out.update({n: "fallback" for n in self.fallback})
        out.update({n: "unused" for n in self.zero})
        return out

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


def _reference_capture(model, x1: torch.Tensor, names) -> tuple[list[_Signature], set[int]]:
    """A recording capture of one sample: the signatures of its uses and every tensor dim seen."""
    x = x1.detach().clone().requires_grad_(True)
    cap = _Capture(names, 1)
    with cap:
        out = model(x)
    _scalar_output(out, 1)
    dims = set(cap.dims)
    for t in list(model.parameters()) + list(model.buffers()):
        dims.update(t.shape)
    return cap.signatures, dims


def _probe(model, x_probe: torch.Tensor, names, params, reference) -> tuple[_Capture, dict]:
    """One captured forward on the probe batch; also measures memory and flops."""
    from torch.utils.flop_counter import FlopCounterMode

    x = x_probe.detach().clone().requires_grad_(True)
    saved: dict[int, int] = {}
    resident = {t.untyped_storage().data_ptr() for t in list(params.values()) + list(model.buffers())}

    def pack(t):  # activations saved for backward, not the weights
        ptr = t.untyped_storage().data_ptr()
        if ptr not in resident:
            saved[ptr] = t.untyped_storage().nbytes()
        return t

    cap = _Capture(names, x.shape[0], reference=reference)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with cap:
            out = model(x)
    _scalar_output(out, x.shape[0])
    if len(cap.signatures) != len(reference):
        raise RuntimeError(
            f"eNTK: the model makes {len(cap.signatures)} parameterised operations on a batch of "
            f"{x.shape[0]} but {len(reference)} on one sample; its parameter uses depend on the batch"
        )
    for u in cap.structured:
        u.opts["_wshape"] = tuple(params[u.weight].shape) if u.weight else None
    del out
    counter = FlopCounterMode(display=False)
    with counter:
        xf = x_probe.detach().clone().requires_grad_(True)
        _scalar_output(model(xf), xf.shape[0]).sum().backward(inputs=[xf])
    stats = dict(saved_bytes=sum(saved.values()), flops=float(counter.get_total_flops()))
    return cap, stats


def _scalar_output(out, batch: int) -> torch.Tensor:
    if not isinstance(out, torch.Tensor) or out.numel() != batch:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"model must return one scalar per sample, shape ({batch},) or ({batch}, 1); got {shape}. "
            "Wrap a backbone with scalar_network()."
        )
    return out.reshape(batch)


def _make_plan(
    model, x_probe, reference, used, n_rows: int, n_cols: int, dtype, forced=frozenset()
) -> _Plan:
    """Probe the model and decide, per parameter, how its kernel part is computed.

    ``reference``: signatures of a batch-1 capture (batch axes are found against
    them); ``used``: parameters with a gradient on the probe; ``forced`` names
    parameters sent to the per-sample fallback whatever their uses.
    """
    params = dict(model.named_parameters())
    names = {id(p): n for n, p in params.items()}
    cap, stats = _probe(model, x_probe, names, params, reference)
    keys, generic, fallback, unseen = _classify(cap, params, forced)
    fallback |= {n for n in unseen if n in used}
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
    constant = fallback | set(zero)
    expected = [sig for sig in cap.signatures if sig.roots - constant]
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
        expected=expected,
        watch=frozenset(id(params[n]) for n in zero),
    )


def _single_call(site: _MatmulSite, k: int) -> _MatmulSite:
    return _MatmulSite(
        site.kind, site.weight, site.bias, [site.calls[k]], site.groups, site.d_a, site.d_g, site.n_params
    )
