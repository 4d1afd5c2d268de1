"""PyTorch peers of the eNTK benchmark: nngeometry's GramMatrix and torch.func NTK-vector products.

Both return the ``N x N`` kernel of a scalar network as a float64 numpy array.
"""

from __future__ import annotations

import numpy as np
import torch


def nngeometry_gram(model, x: torch.Tensor, batch: int = 64) -> np.ndarray:
    """nngeometry 0.4 ``GramMatrix`` (per-layer hooks) over all parameters of ``model``."""
    from nngeometry import GramMatrix
    from nngeometry.layercollection import LayerCollection

    data = torch.utils.data.TensorDataset(x, torch.zeros(x.shape[0]))
    loader = torch.utils.data.DataLoader(data, batch_size=batch, shuffle=False)
    layers = LayerCollection.from_model(model)
    G = GramMatrix(model, loader, function=lambda *d: model(d[0]).reshape(-1, 1), layer_collection=layers)
    return G.data[0, :, 0, :].double().numpy()


def ntk_vector_products(model, x: torch.Tensor, block: int = 64) -> np.ndarray:
    """The NTK-vector-product method of PyTorch's NTK tutorial, block by block.

    For a block of column samples, ``vjp`` at those samples maps each one-hot
    cotangent ``u`` to ``J_cᵀ u`` in parameter space; ``jvp`` at the row samples in
    that direction gives ``J_r J_cᵀ u``, one kernel column; ``vmap`` over the
    one-hot vectors gives the block. Blocks below the diagonal are mirrored.
    """
    from torch.func import functional_call, jvp, vjp, vmap

    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    # timm's fused attention (scaled_dot_product_attention) has no forward-mode rule
    # under vmap here; the unfused path computes the same function
    fused = [m for m in model.modules() if getattr(m, "fused_attn", False)]
    for m in fused:
        m.fused_attn = False

    def f(p, xb):
        return functional_call(model, (p, buffers), (xb,)).reshape(-1)

    n = x.shape[0]
    K = np.zeros((n, n))
    starts = list(range(0, n, block))
    for i, r0 in enumerate(starts):
        xr = x[r0 : r0 + block]
        for c0 in starts[i:]:
            xc = x[c0 : c0 + block]
            _, pullback = vjp(lambda p: f(p, xc), params)

            def column(u):
                (direction,) = pullback(u)
                return jvp(lambda p: f(p, xr), (params,), (direction,))[1]

            eye = torch.eye(xc.shape[0], dtype=x.dtype)
            cols = vmap(column)(eye)  # (n_c, n_r)
            K[r0 : r0 + xr.shape[0], c0 : c0 + xc.shape[0]] = cols.T.double().numpy()
            K[c0 : c0 + xc.shape[0], r0 : r0 + xr.shape[0]] = cols.double().numpy()
    for m in fused:
        m.fused_attn = True
    return K
