"""timm backbones: creation with seeded weights, input preprocessing, devices.

A backbone is any timm model created with ``num_classes=0`` so that its forward
pass returns pooled penultimate features of shape ``(batch, p)``. The feature
dimension ``p`` is always read off a forward pass: timm's ``num_features`` is
wrong for some models (``mobilenetv3_small_100``, ``test_mambaout``).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from rmtlens.inputs.model_names import check_model_name


def pick_device(prefer_cuda: bool = True) -> torch.device:
    """CUDA when present (and wanted), CPU otherwise."""
    if prefer_cuda and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def create_backbone(
    model_name: str,
    image_size: int,
    seed: int,
    model_kwargs: Mapping[str, Any] | None = None,
    pretrained: bool = False,
    pretrained_file: str | None = None,
) -> torch.nn.Module:
    """Create a timm feature extractor (``num_classes=0``) in eval mode.

    Parameters
    ----------
    model_name : timm model name.
    image_size : side length in pixels of the (square) inputs; passed to models
        that take ``img_size`` (ViTs), ignored by the others.
    seed : seeds the random initialisation (local generator, global RNG untouched).
    model_kwargs : further keyword arguments for ``timm.create_model``.
    pretrained : load timm's published weights (from the hub, or from
        ``pretrained_file`` when given, through timm's own loading path).
    pretrained_file : local weights file for ``pretrained_cfg_overlay=dict(file=...)``.
    """
    import timm

    check_model_name(model_name)
    kwargs = dict(model_kwargs or {})
    kwargs["num_classes"] = 0
    if pretrained:
        kwargs["pretrained"] = True
        if pretrained_file is not None:
            kwargs["pretrained_cfg_overlay"] = dict(file=str(pretrained_file))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            model = timm.create_model(model_name, img_size=image_size, **kwargs)
        except TypeError as err:
            if "img_size" not in str(err):
                raise
            model = timm.create_model(model_name, **kwargs)
    return model.eval()


def normalisation(model: torch.nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The (mean, std) per channel that the backbone's pretrained config expects."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    mean = tuple(cfg.get("mean", (0.485, 0.456, 0.406)))
    std = tuple(cfg.get("std", (0.229, 0.224, 0.225)))
    return mean, std


def preprocess(
    images: np.ndarray | torch.Tensor,
    image_size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """uint8 images ``(N, H, W, 3)`` to a normalised float tensor ``(N, 3, S, S)``.

    Pixels are scaled to [0, 1], resized (bilinear, antialiased) to ``image_size``
    when the size differs, then normalised channel-wise with ``mean`` and ``std``.
    """
    x = torch.as_tensor(np.asarray(images))
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(
            f"images must be uint8 of shape (N, H, W, 3), got {tuple(x.shape)} {x.dtype}"
        )
    x = x.permute(0, 3, 1, 2).to(dtype) / 255.0
    if x.shape[-2:] != (image_size, image_size):
        x = torch.nn.functional.interpolate(
            x, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False
        )
    m = torch.tensor(mean, dtype=dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=dtype).view(1, -1, 1, 1)
    return (x - m) / s


def feature_dim(model: torch.nn.Module, image_size: int) -> int:
    """Dimension of the pooled features, read off one forward pass."""
    reference = next(model.parameters())
    with torch.no_grad():
        out = model(torch.zeros(1, 3, image_size, image_size, device=reference.device, dtype=reference.dtype))
    if out.ndim != 2:
        raise ValueError(
            f"backbone returns features of shape {tuple(out.shape)}; expected (batch, p). "
            "Create it with num_classes=0 and a global pooling."
        )
    return int(out.shape[1])
