"""Penultimate embeddings of images through a backbone (SPEC §1, `features`)."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from rmtlens.inputs.backbones import normalisation, preprocess


def embed_images(
    model: torch.nn.Module,
    images: np.ndarray,
    image_size: int,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Pooled features of every image, shape (N, p), float32.

    Parameters
    ----------
    model : feature extractor returning (batch, p); used in eval mode on ``device``.
    images : (N, H, W, 3) uint8.
    image_size : inputs are resized to ``image_size`` x ``image_size`` pixels.
    batch_size : images per forward pass (memory only; results do not depend on it
        beyond float round-off).
    progress : called with the number of images done after each batch.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    mean, std = normalisation(model)
    model = model.eval().to(device)
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            x = preprocess(images[start : start + batch_size], image_size, mean, std).to(device)
            out = model(x)
            if out.ndim != 2:
                raise ValueError(f"backbone returned shape {tuple(out.shape)}; expected (batch, p)")
            chunks.append(out.float().cpu().numpy())
            if progress is not None:
                progress(len(x))
    features = np.concatenate(chunks)
    if not np.all(np.isfinite(features)):
        raise ValueError("backbone produced NaN or infinite features")
    return features
