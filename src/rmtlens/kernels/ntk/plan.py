"""Step 2, plan: decide for every parameter how its per-sample gradient is obtained.

Matmul sites (conv/linear) get the structured or explicit contraction, norm affines
a closed form, other uses a single-op VJP, the rest the whole-network fallback.
The step's interface: :func:`make_plan` turns a probe capture into a :class:`Plan`
(plain data: the later steps read its fields and call nothing back here).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from rmtlens.kernels.ntk.capture import MATMUL_KINDS, Captured, StructuredUse

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
class Call:
    """Geometry of one call of a conv/linear site (shapes exclude the batch dim)."""

    in_shape: tuple
    out_shape: tuple
    positions: int
    kernel: tuple = (1, 1)
    stride: tuple = (1, 1)
    dilation: tuple = (1, 1)
    pads: tuple = (0, 0, 0, 0)


@dataclass
class MatmulSite:
    """A conv/linear weight (and bias) and every call of it; derived sizes and flop
    counts are fields, set on construction."""

    kind: str
    weight: str
    bias: str | None
    calls: list[Call]
    groups: int
    d_a: int  # per-group input features, +1 for the bias
    d_g: int  # per-group output features
    n_params: int
    method: str = "explicit"  # or "structured"
    store: str = "raw"  # or "formed"
    offset: int = 0  # column offset in the formed buffer when store == "formed"
    positions: int = field(init=False)  # output positions summed over calls
    raw_numel: int = field(init=False)  # per sample: raw a and g of every call
    explicit_pair_flops: float = field(init=False)  # per kernel entry, explicit GEMM
    structured_pair_flops: float = field(init=False)  # per entry, Grams + elementwise (weighted)
    gram_flops: float = field(init=False)  # per entry: GEMM flops of the two Gram matrices
    form_flops: float = field(init=False)  # one sample's explicit gradient from raw pieces

    def __post_init__(self):
        S = self.positions = sum(c.positions for c in self.calls)
        self.raw_numel = sum(math.prod(c.in_shape) + math.prod(c.out_shape) for c in self.calls)
        self.explicit_pair_flops = 2.0 * self.n_params
        self.structured_pair_flops = self.groups * S * S * (2.0 * (self.d_a + self.d_g) + 2 * _ELEMENTWISE_WEIGHT)
        self.gram_flops = 2.0 * self.groups * S**2 * (self.d_a + self.d_g)
        self.form_flops = 2.0 * S * self.n_params


@dataclass
class Plan:
    """How every parameter's per-sample gradient is obtained, and the sizes the
    schedule needs (see :func:`make_plan`)."""

    names: dict[int, str]
    n_params: int
    sites: list[MatmulSite]
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
    probe_size: int = 0  # samples of the probe the plan was made on
    store_bytes_per_sample: int = 0  # resident pieces of one sample (formed + raw sites)

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


def _site_calls(uses: list[StructuredUse]) -> tuple[list[Call], int, int, int]:
    calls = []
    first = uses[0]
    for u in uses:
        if u.kind == "linear":
            positions = math.prod(u.input.shape[1:-1]) if u.input.ndim > 2 else 1
            calls.append(Call(tuple(u.input.shape[1:]), u.out_shape[1:], positions))
        else:
            dims = u.input.ndim - 2
            kernel = _pair(tuple(u.opts["_wshape"][2:]), dims)
            stride, dilation = _pair(u.opts["stride"], dims), _pair(u.opts["dilation"], dims)
            pads = _conv_padding(u.opts["padding"], kernel, dilation, dims)
            positions = math.prod(u.out_shape[2:])
            calls.append(
                Call(tuple(u.input.shape[1:]), u.out_shape[1:], positions, kernel, stride, dilation, pads)
            )
    w_shape = first.opts["_wshape"]
    if first.kind == "linear":
        groups, d_g, d_a = 1, w_shape[0], w_shape[1]
    else:
        groups = int(first.opts["groups"])
        d_g, d_a = w_shape[0] // groups, w_shape[1] * math.prod(w_shape[2:])
    return calls, groups, d_a + (first.bias is not None), d_g


def _classify(cap: Captured, params: dict[str, nn.Parameter], forced=frozenset()):
    """Split parameter names into structured sites, affine keys, generic roots, fallback."""
    by_key: dict[tuple, list[StructuredUse]] = {}
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


def make_plan(
    model, cap: Captured, used, n_rows: int, n_cols: int, dtype, forced=frozenset()
) -> Plan:
    """Decide, per parameter of ``model``, how its kernel part is computed.

    ``cap``: the probe capture (:func:`~rmtlens.kernels.ntk.capture.probe`); ``used``:
    parameters with a gradient on the probe; ``n_rows``, ``n_cols``: kernel size (the
    explicit/structured choice amortises formation over them); ``dtype``: compute
    dtype; ``forced`` names parameters sent to the per-sample fallback whatever
    their uses. ``cap`` is only read, so one probe serves several plans.
    """
    params = dict(model.named_parameters())
    names = {id(p): n for n, p in params.items()}
    keys, generic, fallback, unseen = _classify(cap, params, forced)
    fallback |= {n for n in unseen if n in used}
    zero = tuple(n for n in unseen if n not in fallback)
    itemsize = torch.empty((), dtype=dtype).element_size()

    sites: list[MatmulSite] = []
    affine_names: list[str] = []
    n_eff = max(1, min(n_rows, n_cols))
    for (kind, w, b), uses in keys.items():
        if kind in MATMUL_KINDS:
            calls, groups, d_a, d_g = _site_calls(uses)
            n_params = params[w].numel() + (params[b].numel() if b else 0)
            if groups * d_a * d_g != n_params:
                raise RuntimeError(f"internal: parameter count mismatch at {w}")
            site = MatmulSite(kind, w, b, calls, groups, d_a, d_g, n_params)
            explicit = site.explicit_pair_flops + 2 * site.form_flops / n_eff
            site.method = "explicit" if explicit <= site.structured_pair_flops else "structured"
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
    batch = cap.batch
    probe_raw = sum(
        (u.input.numel() + math.prod(u.out_shape)) * u.input.element_size() for u in cap.structured
    )
    act = (cap.saved_bytes + probe_raw) / batch
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
    return Plan(
        names=names,
        n_params=p_total,
        sites=sites,
        formed=formed,
        n_formed=offset,
        generic_roots=generic,
        fallback=tuple(sorted(fallback)),
        zero=zero,
        act_bytes_per_sample=act,
        pass_flops_per_sample=cap.flops / batch,
        itemsize=itemsize,
        coverage=coverage,
        expected=expected,
        watch=frozenset(id(params[n]) for n in zero),
        probe_size=batch,
        store_bytes_per_sample=itemsize * (offset + sum(s.raw_numel for s in sites if s.store == "raw")),
    )

