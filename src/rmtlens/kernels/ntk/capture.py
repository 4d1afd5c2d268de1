"""Step 1, capture: intercept every parameterised operation of one batched forward/backward.

A ``TorchFunctionMode`` records, per functional call (``F.conv2d``, ``F.linear``,
``F.batch_norm`` ...), its input ``a`` and the gradient ``g`` of ``f(x_i)`` at its output,
and the recipes that rebuild parameter-derived tensors from the parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
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


_MATMUL_KINDS = ("linear", "conv")


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
