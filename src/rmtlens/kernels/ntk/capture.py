"""Step 1, capture: intercept every parameterised operation of one batched forward/backward.

A ``TorchFunctionMode`` records, per functional call (``F.conv2d``, ``F.linear``,
``F.batch_norm`` ...), its input ``a`` and the gradient ``g`` of ``f(x_i)`` at its output,
and the recipes that rebuild parameter-derived tensors from the parameters.

The step's interface: :func:`record` (one sample: the uses' signatures and every
tensor dimension), :func:`probe` (the probe batch, against a recording: batch axes,
memory and flops), :func:`capture_pass` (a main-pass batch, against the plan's
signatures), each returning a :class:`Captured`; :func:`rebuild_output` re-runs a
generic use on fresh parameter leaves.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

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


MATMUL_KINDS = ("linear", "conv")


_RECIPE_ATTR = "_rmtlens_entk_recipe"


@dataclass
class _Recipe:
    """How a parameter-derived tensor (no sample dependence) is rebuilt from parameters."""

    func: Callable
    args: tuple
    kwargs: dict
    index: int | None
    roots: frozenset


@dataclass
class Signature:
    """One use (a parameter meets sample data) as seen by a capture, in call order.

    ``in_shapes``/``out_shapes``: shapes of the sample-batched arguments and of the
    outputs that need a gradient. ``in_axes``/``out_axes``: per tensor, the batch
    axis ``(d, k)`` (axis ``d`` has ``batch·k`` entries, sample-major) or None,
    found by comparing with a batch-1 capture of the same model. ``kind`` is
    ``"structured"`` or ``"generic"``, ``key`` the site key or the generic roots.
    """

    func: Callable
    in_shapes: tuple
    out_shapes: tuple = ()
    in_axes: tuple = ()
    out_axes: tuple = ()
    roots: frozenset = frozenset()
    kind: str = ""
    key: tuple | frozenset | None = None


@dataclass
class StructuredUse:
    kind: str
    weight: str | None
    bias: str | None
    input: torch.Tensor  # batch-first for linear sites, original layout otherwise
    version: int
    opts: dict
    out_shape: tuple
    axis: tuple = (0, 1)  # (d, k) of the original input and output
    grad: torch.Tensor | None = None  # None: the output does not reach f (zero gradient)


@dataclass
class GenericUse:
    func: Callable
    args: tuple
    kwargs: dict
    index: int | None
    roots: frozenset
    separable: bool
    axis: tuple | None = None  # (d, k) of the output
    grad: torch.Tensor | None = None


def _bind(func, args, kwargs) -> dict:
    bound = dict(_DEFAULTS[func])
    bound.update(zip(_ARG_NAMES[func], args))
    bound.update(kwargs)
    return bound


def _is_inplace(func) -> bool:
    name = getattr(func, "__name__", "")
    return (name.endswith("_") and not name.endswith("__")) or name.startswith("__i") or name == "__setitem__"


def _batch_axis(shape, shape_1, batch: int):
    """The one axis ``d`` with ``shape[d] = batch·shape_1[d]`` (all others equal): ``(d, k)``."""
    if len(shape) != len(shape_1) or batch < 2:
        return None
    diff = [d for d, (a, b) in enumerate(zip(shape, shape_1)) if a != b]
    if len(diff) != 1 or shape[diff[0]] != batch * shape_1[diff[0]]:
        return None
    return (diff[0], shape_1[diff[0]])


def _scaled(shape_1, axis, batch: int) -> tuple:
    if axis is None:
        return tuple(shape_1)
    d, k = axis
    return tuple(shape_1[:d]) + (batch * k,) + tuple(shape_1[d + 1 :])


def _batch_first(t: torch.Tensor, axis, batch: int) -> torch.Tensor:
    """View of ``t`` with its batch axis ``(d, k)`` split into ``(batch, k)`` and moved first."""
    d, k = axis
    if d == 0 and k == 1:
        return t
    return t.unflatten(d, (batch, k)).movedim(d, 0)


def _set_output_hook(out, index, store, transform=None):
    tensor = out if index is None else out[index]

    def hook(grad):
        store.grad = grad if transform is None else transform(grad)

    tensor.register_hook(hook)


class _Capture(TorchFunctionMode):
    """Records every use of a model parameter during one forward pass.

    ``names`` maps ``id(parameter)`` to its name; parameters whose names are in
    ``constant`` are treated as constants (they are handled by the fallback).
    Structured uses (conv/linear/affine norms with a parameter weight/bias and a
    sample-batched input) are recorded with their input and a gradient hook on
    their output. Parameter-only computations are tagged with a recipe; a tagged
    tensor meeting sample data is a generic use.

    Three modes. Recording (``reference`` and ``expected`` None, batch 1): only the
    signatures of the uses and every tensor dimension seen (``dims``). Probe
    (``reference``: the signatures of a batch-1 capture): each batch axis is the
    axis that grew by the batch size. Main (``expected``: the plan's signatures):
    every use must match the plan's, in order and shape; ``finish`` checks that
    none is missing. ``watch`` holds ids of parameters no use touched on the
    probe: one meeting sample data later is an error.
    """

    def __init__(self, names: dict[int, str], batch: int, constant=frozenset(), *,
                 reference=None, expected=None, watch=frozenset()):
        super().__init__()
        self.names = names
        self.batch = batch
        self.constant = constant
        self.reference = reference
        self.expected = expected
        self.watch = watch
        self.dims: set[int] | None = set() if reference is None and expected is None else None
        self.structured: list[StructuredUse] = []
        self.generic: list[GenericUse] = []
        self.signatures: list[Signature] = []
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

    def _mismatch(self, j: int, what: str):
        return RuntimeError(
            f"eNTK: parameterised operation #{j} of this batch ({what}) differs from the plan made "
            f"on the probe batch; the model's parameter uses depend on the batch (data-dependent "
            f"control flow?), so the planned per-sample pieces would be wrong"
        )

    def _axes(self, j: int, func, tensors, outputs: bool) -> tuple:
        """Batch axes of ``tensors`` (inputs, or outputs when ``outputs``) of use ``j``."""
        shapes = tuple(tuple(t.shape) for t in tensors)
        if self.expected is not None:
            sig = self.expected[j]
            want_axes = sig.out_axes if outputs else sig.in_axes
            want = sig.out_shapes if outputs else sig.in_shapes
            if len(want) != len(shapes) or any(
                s != _scaled(w, a, self.batch) for s, w, a in zip(shapes, want, want_axes)
            ):
                raise self._mismatch(j, f"{getattr(func, '__name__', func)}: shapes {shapes}")
            return want_axes
        if self.reference is not None:
            sig = self.reference[j]
            ref = sig.out_shapes if outputs else sig.in_shapes
            if len(ref) != len(shapes):
                raise self._mismatch(j, f"{getattr(func, '__name__', func)}: {len(shapes)} tensors")
            return tuple(_batch_axis(s, r, self.batch) for s, r in zip(shapes, ref))
        return (None,) * len(shapes)

    def finish(self) -> None:
        """Main mode: every planned use was seen on this batch."""
        if self.expected is not None and len(self.signatures) != len(self.expected):
            raise RuntimeError(
                f"eNTK: this batch made {len(self.signatures)} parameterised operations, the plan "
                f"{len(self.expected)}; some planned sites were not fed, the kernel would be wrong"
            )

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not torch.is_grad_enabled():
            return func(*args, **kwargs)
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        if self.dims is not None:
            for t in tensors:
                self.dims.update(t.shape)
        if self.watch and any(id(t) in self.watch for t in tensors) and any(
            self._batched(t) for t in tensors
        ):
            names = sorted(self.names[id(t)] for t in tensors if id(t) in self.watch)
            raise RuntimeError(
                f"eNTK: parameters {names} meet sample data on this batch but did not on the "
                "probe batch (data-dependent control flow?); their gradient would be missed"
            )
        roots = frozenset().union(*(self._roots(t) for t in tensors)) if tensors else frozenset()
        if not roots:
            out = func(*args, **kwargs)
            if self.dims is not None:
                self._record_dims(out)
            return out
        batched = [t for t in tensors if self._batched(t)]
        if not batched:
            if _is_inplace(func):  # a recipe would refer to itself
                self.unsupported |= roots
                return func(*args, **kwargs)
            out = func(*args, **kwargs)
            if self.dims is not None:
                self._record_dims(out)
            outs = out if isinstance(out, (tuple, list)) else (out,)
            for i, o in enumerate(outs):
                # an op returning its own input (.to() to the same dtype, .contiguous(),
                # eval-mode dropout) keeps that input's recipe: a new one would refer to itself
                if isinstance(o, torch.Tensor) and o.requires_grad and not any(o is t for t in tensors):
                    index = i if isinstance(out, (tuple, list)) else None
                    setattr(o, _RECIPE_ATTR, _Recipe(func, args, kwargs, index, roots))
            return out
        j = len(self.signatures)
        if self.expected is not None and j >= len(self.expected):
            raise self._mismatch(j, f"{getattr(func, '__name__', func)}: more operations than planned")
        if self.reference is not None and (
            j >= len(self.reference) or self.reference[j].func is not func
        ):
            raise self._mismatch(j, f"{getattr(func, '__name__', func)} not in the batch-1 capture")
        if self.expected is not None and self.expected[j].func is not func:
            raise self._mismatch(j, f"{getattr(func, '__name__', func)} where the plan has "
                                    f"{getattr(self.expected[j].func, '__name__', '?')}")
        in_axes = self._axes(j, func, batched, False)
        sig = Signature(func, tuple(tuple(t.shape) for t in batched), in_axes=in_axes, roots=roots)
        self.signatures.append(sig)
        out = None
        if func in _KIND:
            out = self._structured(func, args, kwargs, batched, in_axes, sig)
        if out is None:
            out = self._generic(func, args, kwargs, batched, roots, sig)
        if self.dims is not None:
            self._record_dims(out)
        if self.expected is not None:
            want = self.expected[j]
            if want.kind != sig.kind or (sig.kind == "structured" and want.key != sig.key):
                raise self._mismatch(j, f"{sig.kind} use {sig.key} where the plan has {want.kind} {want.key}")
        return out

    def _record_dims(self, out) -> None:
        for o in tree_flatten(out)[0]:
            if isinstance(o, torch.Tensor):
                self.dims.update(o.shape)

    def _outputs(self, j, func, out) -> tuple[list, tuple]:
        outs = out if isinstance(out, (tuple, list)) else (out,)
        grads = [o for o in outs if isinstance(o, torch.Tensor) and o.requires_grad]
        return grads, self._axes(j, func, grads, True)

    def _generic(self, func, args, kwargs, batched, roots, sig: Signature):
        batched_ids = {id(t) for t in batched}
        # parameters meet sample data: keep private copies of the sample data
        saved = tree_map(
            lambda t: t.detach().clone() if isinstance(t, torch.Tensor) and id(t) in batched_ids else t,
            (args, kwargs),
        )
        out = func(*args, **kwargs)
        j = len(self.signatures) - 1
        grads, out_axes = self._outputs(j, func, out)
        sig.out_shapes = tuple(tuple(o.shape) for o in grads)
        sig.out_axes = out_axes
        index = None
        axis = None
        if isinstance(out, (tuple, list)):
            tensor_outs = [i for i, o in enumerate(out) if isinstance(o, torch.Tensor) and o.requires_grad]
            index = tensor_outs[0] if len(tensor_outs) == 1 else None
            if index is not None:
                axis = out_axes[0]
        elif grads:
            axis = out_axes[0]
        separable = axis is not None
        use = GenericUse(func, saved[0], saved[1], index, roots, separable, axis)
        sig.kind, sig.key = "generic", roots
        if separable:
            _set_output_hook(out, index, use)
        elif self.expected is not None:  # its parameters were planned for the fallback
            raise self._mismatch(j, "a use that cannot be split by sample")
        else:  # probe: uses that cannot be split by sample go to the fallback
            self.unsupported |= roots
        self.generic.append(use)
        return out

    def _structured(self, func, args, kwargs, batched, in_axes, sig: Signature):
        kind = _KIND[func]
        b = _bind(func, args, kwargs)
        x, weight, bias = b["input"], b["weight"], b["bias"]
        w_name, b_name = self._param_name(weight), self._param_name(bias)
        if w_name is None and b_name is None:
            return None
        if (weight is not None and w_name is None) or (bias is not None and b_name is None):
            return None  # a parameter mixed with a derived tensor: generic path
        if len(batched) != 1 or batched[0] is not x or x.ndim < 2:
            return None
        axis = in_axes[0]
        if self.dims is not None:
            axis = (0, 1)  # recording: no decision is made from it
        if axis is None:
            return None
        d, k = axis
        if kind == "linear" and d == x.ndim - 1:
            return None
        if kind == "layer_norm" and d >= x.ndim - len(tuple(b["normalized_shape"])):
            return None
        if kind in ("conv", "batch_norm", "group_norm") and d != 0:
            return None
        if kind == "conv" and k != 1:
            return None
        if kind in MATMUL_KINDS and w_name is None:
            return None
        if kind == "batch_norm" and (b["training"] or b["running_mean"] is None):
            return None
        if kind == "conv" and not isinstance(b["padding"], (str, int, tuple, list)):
            return None
        opts = {k_: v for k_, v in b.items() if k_ not in ("input", "weight", "bias")}
        if kind == "batch_norm":
            opts["running_mean"] = b["running_mean"].detach()
            opts["running_var"] = b["running_var"].detach()
        version = x._version
        out = func(*args, **kwargs)
        j = len(self.signatures) - 1
        grads, out_axes = self._outputs(j, func, out)
        if self.dims is None and (len(out_axes) != 1 or out_axes[0] != axis):
            raise RuntimeError(f"internal: {kind} output batch axis {out_axes} differs from its input's {axis}")
        sig.out_shapes = tuple(tuple(o.shape) for o in grads)
        sig.out_axes = out_axes
        sig.kind, sig.key = "structured", (kind, w_name, b_name)
        batch = self.batch
        if kind == "linear":  # positions may include the batch axis's k and any leading dims
            inp = _batch_first(x.detach(), axis, batch)
            out_shape = tuple(_batch_first(out.detach(), axis, batch).shape)
            transform = (lambda g: _batch_first(g, axis, batch)) if axis != (0, 1) else None
        else:
            inp, out_shape, transform = x.detach(), tuple(out.shape), None
        use = StructuredUse(kind, w_name, b_name, inp, version, opts, out_shape, axis)
        _set_output_hook(out, None, use, transform)
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


def rebuild_output(use: GenericUse, leaves: dict[str, torch.Tensor], names: dict[int, str]) -> torch.Tensor:
    """The output of a generic use recomputed with parameters replaced by ``leaves``
    (parameter name -> tensor; other parameters detached), from its saved sample data."""
    r_args, r_kwargs = tree_map(lambda t: _rebuild(t, leaves, names, {}), (use.args, use.kwargs))
    out = use.func(*r_args, **r_kwargs)
    return out if use.index is None else out[use.index]


# --------------------------------------------------------------------------------------
# the step's interface: one captured pass per call


@dataclass
class Captured:
    """What one captured pass saw.

    ``signatures``: every use (a parameter meets sample data) in call order;
    ``structured`` / ``generic``: the uses with their inputs and, after a backward,
    their output gradients; ``unsupported``: parameters whose uses cannot be split by
    sample; ``dims``: every tensor dimension seen (recordings only); ``batch``: samples
    in the pass; ``saved_bytes`` / ``flops``: activations saved for backward and
    forward + input-backward flops of the pass (probes only).
    """

    signatures: list[Signature]
    structured: list[StructuredUse]
    generic: list[GenericUse]
    unsupported: set[str]
    batch: int
    dims: set[int] = field(default_factory=set)
    saved_bytes: int = 0
    flops: float = 0.0


def scalar_output(out, batch: int) -> torch.Tensor:
    """``out`` as ``(batch,)``, or a clear error when the model is no scalar network."""
    if not isinstance(out, torch.Tensor) or out.numel() != batch:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"model must return one scalar per sample, shape ({batch},) or ({batch}, 1); got {shape}. "
            "Wrap a backbone with scalar_network()."
        )
    return out.reshape(batch)


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


def parameter_names(model: nn.Module) -> dict[int, str]:
    """``id(parameter) -> name`` of every parameter of ``model``."""
    return {id(p): n for n, p in model.named_parameters()}


def record(model: nn.Module, x1: torch.Tensor) -> Captured:
    """A recording capture of one sample ``x1`` ``(1, ...)``: the signatures of its uses
    and every tensor dimension seen (operations, parameters, buffers)."""
    x = x1.detach().clone().requires_grad_(True)
    cap = _Capture(parameter_names(model), 1)
    with cap:
        out = model(x)
    scalar_output(out, 1)
    dims = set(cap.dims)
    for t in list(model.parameters()) + list(model.buffers()):
        dims.update(t.shape)
    return Captured(cap.signatures, cap.structured, cap.generic, cap.unsupported, 1, dims)


def probe(model: nn.Module, x_probe: torch.Tensor, reference: Captured) -> Captured:
    """One captured forward on the probe batch ``(p, ...)``, batch axes found against the
    one-sample ``reference``; also measures saved activations and flops of a pass.
    Structured uses get ``opts["_wshape"]``, the shape of their weight."""
    from torch.utils.flop_counter import FlopCounterMode

    params = dict(model.named_parameters())
    names = {id(p): n for n, p in params.items()}
    x = x_probe.detach().clone().requires_grad_(True)
    saved: dict[int, int] = {}
    resident = {t.untyped_storage().data_ptr() for t in list(params.values()) + list(model.buffers())}

    def pack(t):  # activations saved for backward, not the weights
        ptr = t.untyped_storage().data_ptr()
        if ptr not in resident:
            saved[ptr] = t.untyped_storage().nbytes()
        return t

    cap = _Capture(names, x.shape[0], reference=reference.signatures)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with cap:
            out = model(x)
    scalar_output(out, x.shape[0])
    if len(cap.signatures) != len(reference.signatures):
        raise RuntimeError(
            f"eNTK: the model makes {len(cap.signatures)} parameterised operations on a batch of "
            f"{x.shape[0]} but {len(reference.signatures)} on one sample; its parameter uses depend on the batch"
        )
    for u in cap.structured:
        u.opts["_wshape"] = tuple(params[u.weight].shape) if u.weight else None
    del out
    counter = FlopCounterMode(display=False)
    with counter:
        xf = x_probe.detach().clone().requires_grad_(True)
        scalar_output(model(xf), xf.shape[0]).sum().backward(inputs=[xf])
    return Captured(cap.signatures, cap.structured, cap.generic, cap.unsupported, x.shape[0],
                    saved_bytes=sum(saved.values()), flops=float(counter.get_total_flops()))


def capture_pass(model: nn.Module, x: torch.Tensor, names: dict[int, str], constant: frozenset,
                 expected: list[Signature], watch: frozenset) -> Captured:
    """A main-pass batch ``x`` ``(m, ...)``: forward under the capture and backward of
    ``Σ f(x_i)``, so every use holds its input and output gradient.

    ``constant``: parameter names treated as constants (handled elsewhere);
    ``expected``: the signatures every batch must reproduce (count, order, shapes);
    ``watch``: ids of parameters no use touched on the probe.
    """
    params = dict(model.named_parameters())
    xb = x.detach().clone().requires_grad_(True)
    m = xb.shape[0]
    cap = _Capture(names, m, constant, expected=expected, watch=watch)
    # parameters handled elsewhere must look like constants to the capture
    with _requires_grad(params, constant, False), cap:
        out = model(xb)
    cap.finish()
    torch.autograd.grad(scalar_output(out, m).sum(), xb)
    return Captured(cap.signatures, cap.structured, cap.generic, cap.unsupported, m)
