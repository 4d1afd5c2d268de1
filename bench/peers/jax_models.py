"""JAX ports of the benchmark's scalar networks, taking the PyTorch weights (eval mode).

Runs inside the neural-tangents environment (bench/peers/nt_env.sh); imports no torch.
``params`` is a dict name -> array with the PyTorch ``state_dict`` names of the
trainable parameters; BatchNorm running statistics are passed separately (``stats``)
because they are constants of the network, not parameters of the eNTK.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

_DN = ("NCHW", "OIHW", "NCHW")


def _conv(x, w, stride=1, padding=0):
    return lax.conv_general_dilated(
        x, w, (stride, stride), [(padding, padding), (padding, padding)], dimension_numbers=_DN
    )


def _bn(x, p, stats, name, eps=1e-5):
    mean, var = stats[name + ".running_mean"], stats[name + ".running_var"]
    scale = p[name + ".weight"] * lax.rsqrt(var + eps)
    return x * scale[None, :, None, None] + (p[name + ".bias"] - mean * scale)[None, :, None, None]


def _maxpool(x):
    """3x3 stride-2 max pool, padding 1, routing the gradient like PyTorch.

    At ties (frequent on upsampled images) PyTorch sends the whole gradient to the
    first maximal element in row-major window order; ``lax.reduce_window`` and
    ``jnp.max`` choose or share differently, which changes the (non-unique)
    gradient and so the eNTK. ``argmax`` takes the first maximum, as PyTorch does.
    """
    B, C, H, W = x.shape
    Ho, Wo = (H - 1) // 2 + 1, (W - 1) // 2 + 1
    xp = jnp.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-jnp.inf)
    win = jnp.stack(
        [xp[:, :, i : i + 2 * Ho - 1 : 2, j : j + 2 * Wo - 1 : 2] for i in range(3) for j in range(3)], -1
    )
    idx = jnp.argmax(win, axis=-1)[..., None]
    return jnp.take_along_axis(win, idx, axis=-1)[..., 0]


def resnet18(params, x, stats):
    """timm ``resnet18`` (BasicBlock, layers 2-2-2-2) + ``Linear(512, 1)`` head: ``(B,)``."""
    p = params
    b = "backbone."
    h = _conv(x, p[b + "conv1.weight"], 2, 3)
    h = jax.nn.relu(_bn(h, p, stats, b + "bn1"))
    h = _maxpool(h)
    for layer in range(1, 5):
        for block in range(2):
            pre = f"{b}layer{layer}.{block}."
            stride = 2 if layer > 1 and block == 0 else 1
            out = _conv(h, p[pre + "conv1.weight"], stride, 1)
            out = jax.nn.relu(_bn(out, p, stats, pre + "bn1"))
            out = _bn(_conv(out, p[pre + "conv2.weight"], 1, 1), p, stats, pre + "bn2")
            if pre + "downsample.0.weight" in p:
                short = _bn(_conv(h, p[pre + "downsample.0.weight"], stride, 0), p, stats, pre + "downsample.1")
            else:
                short = h
            h = jax.nn.relu(out + short)  # gradient 0 at 0, as torch
    feats = h.mean(axis=(2, 3))
    return feats @ p["head.weight"].T + p["head.bias"]  # (B, 1)


MODELS = {"resnet18": resnet18}  # timm name -> port


def _ln(x, p, name, eps=1e-6):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) * lax.rsqrt(var + eps) * p[name + ".weight"] + p[name + ".bias"]


def _linear(x, p, name):
    return x @ p[name + ".weight"].T + p[name + ".bias"]


def vit(params, x, stats, head_dim=64):
    """timm ``VisionTransformer`` (class-token pooling, no layer scale) + ``Linear(dim, 1)`` head."""
    p = params
    b = "backbone."
    w = p[b + "patch_embed.proj.weight"]
    k = w.shape[-1]
    h = _conv(x, w, k, 0) + p[b + "patch_embed.proj.bias"][None, :, None, None]
    B, D = h.shape[0], h.shape[1]
    h = h.reshape(B, D, -1).transpose(0, 2, 1)  # (B, tokens, D)
    cls = jnp.broadcast_to(p[b + "cls_token"], (B, 1, D))
    h = jnp.concatenate([cls, h], axis=1) + p[b + "pos_embed"]
    heads = D // head_dim
    depth = len({k.split(".")[2] for k in p if k.startswith(b + "blocks.")})
    for i in range(depth):
        pre = f"{b}blocks.{i}."
        y = _ln(h, p, pre + "norm1")
        qkv = _linear(y, p, pre + "attn.qkv").reshape(B, -1, 3, heads, head_dim).transpose(2, 0, 3, 1, 4)
        q, kk, v = qkv[0], qkv[1], qkv[2]
        att = jax.nn.softmax((q * head_dim**-0.5) @ kk.transpose(0, 1, 3, 2), axis=-1)
        y = (att @ v).transpose(0, 2, 1, 3).reshape(B, -1, D)
        h = h + _linear(y, p, pre + "attn.proj")
        y = _linear(_ln(h, p, pre + "norm2"), p, pre + "mlp.fc1")
        h = h + _linear(jax.nn.gelu(y, approximate=False), p, pre + "mlp.fc2")
    feats = _ln(h, p, b + "norm")[:, 0]
    return feats @ p["head.weight"].T + p["head.bias"]


MODELS["vit_tiny_patch16_224"] = vit
