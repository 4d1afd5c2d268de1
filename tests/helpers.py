"""Models, inputs and reference kernels shared by the tests and the bench scripts.

Tests import it as ``helpers`` (pytest puts ``tests/`` on ``sys.path``); bench scripts
add the repository root to ``sys.path`` and import ``tests.helpers``. Everything here is
small and seeded: float64 scalar networks ``Linear(p, 1) ∘ backbone`` with non-trivial
BatchNorm statistics, random inputs, and the brute-force eNTK ``J Jᵀ`` from
``torch.func.jacrev`` per-sample Jacobians that the engine is checked against.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch threads (tiny kernels: one thread is fastest and
    immune to a busy machine), then restore the previous number."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """``max|a − b| / max|b|``: the relative error of a kernel ``a`` against a reference ``b``."""
    return float(np.abs(a - b).max() / np.abs(b).max())


def inputs(n: int, image_size: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(n, 3, image_size, image_size)`` standard normal images from a seeded generator."""
    return torch.randn(n, 3, image_size, image_size, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def randomise_batchnorm_stats(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial running statistics (means ~ N(0, 0.3²), variances in [0.5, 1.5)), so
    that BatchNorm in eval mode is not the identity; returns ``model``."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                m.running_mean.copy_(0.3 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
    return model


def timm_network(name: str, image_size: int, seed: int = 0) -> nn.Module:
    """``Linear(p, 1) ∘ backbone`` of a timm model (float32, eval mode), backbone seeded by
    ``seed``, head by ``seed + 1``."""
    from rmtlens.inputs import create_backbone, feature_dim
    from rmtlens.kernels import scalar_network

    backbone = create_backbone(name, image_size, seed)
    return scalar_network(backbone, feature_dim(backbone, image_size), head_seed=seed + 1)


def uncache_attention_biases(model: nn.Module) -> nn.Module:
    """timm's LeViT caches its attention biases in eval mode (an inference shortcut), after
    which no gradient reaches ``attention_biases`` (for autograd, jacrev and the engine's
    per-sample check alike): recompute them on every call instead; returns ``model``."""
    for m in model.modules():
        if hasattr(m, "attention_bias_cache"):
            m.get_attention_biases = lambda device, m=m: m.attention_biases[:, m.attention_bias_idxs]
    return model


def seeded(factory: Callable[[], nn.Module], seed: int) -> nn.Module:
    """``factory()`` in eval mode, its random initialisation drawn after
    ``torch.manual_seed(seed)`` without touching the global generator's state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory().eval()


def float64_network(factory: Callable[[], nn.Module], image_size: int, seed: int = 0) -> nn.Module:
    """The float64 scalar network ``Linear(p, 1) ∘ backbone`` of any backbone: built by
    :func:`seeded` (``seed``), attention-bias caches off, BatchNorm statistics randomised
    (``seed``), head seeded by ``seed + 1``; ``p`` read from a forward pass at ``image_size``."""
    from rmtlens.kernels import scalar_network

    backbone = randomise_batchnorm_stats(uncache_attention_biases(seeded(factory, seed)), seed)
    with torch.no_grad():
        p = backbone(torch.zeros(2, 3, image_size, image_size)).reshape(2, -1).shape[1]
    return scalar_network(backbone, p, head_seed=seed + 1).double()


def jacobian_kernel(model: nn.Module, x_rows: torch.Tensor, x_cols: torch.Tensor | None = None) -> np.ndarray:
    """Reference eNTK ``J_rows J_colsᵀ`` from full per-sample Jacobians by ``jacrev``, float64
    (``model`` is converted in place), no shortcuts.

    ``f(x_i)`` is the first output on the batch ``(x_i, x_i)``: PyTorch's backward at batch
    size 1 is wrong for some models (timm's LeViT stem, checked against finite
    differences), and samples are independent in eval mode."""
    from torch.func import functional_call, jacrev

    model = model.double()
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = dict(model.named_buffers())

    def jac(x: torch.Tensor) -> torch.Tensor:
        rows = []
        for i in range(x.shape[0]):
            def f(p, xi=x[[i, i]].double()):
                return functional_call(model, {**p, **buffers}, (xi,)).reshape(2)[0]

            J = jacrev(f)(params)
            rows.append(torch.cat([J[k].reshape(-1) for k in params]))
        return torch.stack(rows)

    J_rows = jac(x_rows)
    J_cols = J_rows if x_cols is None else jac(x_cols)
    return (J_rows @ J_cols.T).numpy()


class MHANet(nn.Module):
    """Conv stem, learned positions and one ``nn.TransformerEncoderLayer``
    (``nn.MultiheadAttention``), mean-pooled: 16 tokens of ``width`` channels from 16-px images."""

    def __init__(self, batch_first: bool, width: int = 8, heads: int = 2):
        super().__init__()
        self.batch_first = batch_first
        self.stem = nn.Conv2d(3, width, 4, stride=4)
        self.pos = nn.Parameter(0.1 * torch.randn(1, 16, width))
        self.block = nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=0.0, batch_first=batch_first)
        self.num_features = width

    def forward(self, x):
        h = self.stem(x).flatten(2).transpose(1, 2) + self.pos  # (B, 16, C)
        if not self.batch_first:
            h = h.transpose(0, 1)
        return self.block(h).mean(1 if self.batch_first else 0)


class HiddenScale(torch.autograd.Function):
    """``x · sum(w)``: uses a weight where the engine's interception cannot see it (inside a
    custom Function), so the self-check sends that weight to the whole-network fallback."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, w):
        return x * w.sum()

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        return g * w.sum(), (g * x).sum() * torch.ones_like(w)


def mixer(image_size: int = 32, resmlp: bool = False, **kwargs) -> nn.Module:
    """timm's ``MlpMixer`` class itself (its named variants fix depth and width), or ResMLP
    (affine norms, residual blocks) with ``resmlp=True``; ``kwargs`` go to the class."""
    from timm.models.mlp_mixer import Affine, MlpMixer, ResBlock

    if resmlp:
        kwargs = dict(kwargs, block_layer=ResBlock, norm_layer=Affine)
    return MlpMixer(num_classes=0, img_size=image_size, **kwargs)
