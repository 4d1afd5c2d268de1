"""Supervised pretraining of a timm backbone on a source task (weights ``trained``, SPEC §1).

The offline stand-in for published weights: a backbone (``num_classes=0``) and a
linear classifier on its pooled features are trained with cross-entropy on the
images and labels of a source dataset. Only the backbone's state dict is kept
for later use; the classifier is returned separately so that its accuracy can be
checked, and is not part of the saved weights.

Every random choice is seeded: the backbone and classifier initialisation, the
order of the training images in each epoch, and the augmentation. Global random
state is forked and restored, so calling this function leaves it untouched; on
CPU two calls with the same arguments (and the same number of torch threads)
return bitwise identical state dicts.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from rmtlens.inputs.backbones import (
    create_backbone,
    feature_dim,
    normalisation,
    preprocess,
)

OPTIMIZERS = ("sgd", "adamw")


@dataclass(frozen=True)
class PretrainResult:
    """What pretraining produces.

    backbone_state : the backbone's state dict (CPU tensors, backbone keys only),
        for :func:`rmtlens.inputs.weights.save_backbone_state`.
    head_weight : (n_classes, p) weight of the linear classifier.
    head_bias : (n_classes,) bias of the linear classifier.
    history : one dict per epoch: ``epoch`` (0 = at initialisation), ``train_loss``
        (mean cross-entropy over the epoch's batches, weighted by batch size, NaN at
        epoch 0), ``train_accuracy`` (during the epoch, in training mode, NaN at
        epoch 0), ``heldout_accuracy`` (after the epoch, eval mode), ``lr`` (at the
        end of the epoch) and ``seconds`` (wall time of the epoch).
    """

    backbone_state: dict[str, torch.Tensor]
    head_weight: torch.Tensor
    head_bias: torch.Tensor
    history: list[dict[str, float]]


def _check_images_labels(images: np.ndarray, labels: np.ndarray, name: str) -> None:
    if not (isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 4
            and images.shape[-1] == 3):
        raise ValueError(f"{name}_images must be a uint8 array (N, H, W, 3), got "
                         f"{getattr(images, 'dtype', type(images))} {getattr(images, 'shape', '')}")
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != len(images) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name}_labels must be integers of shape ({len(images)},), got "
                         f"{labels.dtype} {labels.shape}")
    if len(labels) == 0:
        raise ValueError(f"{name}_images is empty")
    if labels.min() < 0:
        raise ValueError(f"{name}_labels must be >= 0, got {labels.min()}")


def random_crop_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random crops of reflection-padded images and random horizontal flips.

    x : (B, C, S, S) float. Padding is ``max(1, S // 8)`` pixels on each side, the
    crop is back to ``S x S``; the offsets and flips are drawn from ``generator``
    (a CPU generator, whatever the device of ``x``).
    """
    n, _, height, width = x.shape
    pad = max(1, height // 8)
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).tolist()
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).tolist()
    flip = (torch.rand(n, generator=generator) < 0.5).to(x.device).view(-1, 1, 1, 1)
    crops = torch.stack([padded[i, :, dy[i] : dy[i] + height, dx[i] : dx[i] + width] for i in range(n)])
    return torch.where(flip, crops.flip(-1), crops)


def _accuracy(model, images, labels, image_size, mean, std, batch_size, device) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = preprocess(images[start : start + batch_size], image_size, mean, std).to(device)
            y = torch.as_tensor(labels[start : start + batch_size], device=device)
            correct += int((model(x).argmax(dim=1) == y).sum())
    return correct / len(images)


def pretrain_backbone(
    train_images: np.ndarray,
    train_labels: np.ndarray,
    heldout_images: np.ndarray,
    heldout_labels: np.ndarray,
    model_name: str,
    image_size: int,
    seed: int,
    epochs: int,
    batch_size: int,
    lr: float,
    optimizer: str = "sgd",
    weight_decay: float = 5e-4,
    momentum: float = 0.9,
    augment: bool = False,
    n_classes: int | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    device: torch.device | str = "cpu",
    eval_batch_size: int = 256,
    progress: Callable[[int], None] | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> PretrainResult:
    """Train a timm backbone and a linear classifier with cross-entropy.

    Parameters
    ----------
    train_images, heldout_images : (N, H, W, 3) uint8 source-task images; inputs are
        resized to ``image_size`` and normalised with the backbone's mean/std.
    train_labels, heldout_labels : (N,) integer class indices.
    model_name, image_size, seed, model_kwargs : as for
        :func:`rmtlens.inputs.backbones.create_backbone`; ``seed`` also seeds the
        classifier, the data order, the augmentation and any dropout.
    epochs : passes over the training images.
    batch_size : images per step (>= 2: BatchNorm needs two); a last batch of one
        image is skipped.
    lr : peak learning rate; it follows a cosine from ``lr`` to 0 over all steps.
    optimizer : ``'sgd'`` (Nesterov momentum ``momentum``) or ``'adamw'``.
    weight_decay : on every parameter.
    augment : random crops of padded images and horizontal flips (:func:`random_crop_flip`).
    n_classes : classifier outputs; default ``max(train_labels) + 1``.
    device : where to train ("cpu" or "cuda").
    eval_batch_size : images per forward pass for the held-out accuracy.
    progress : called with the number of training images of each finished batch.
    on_epoch : called with each history row as soon as it is complete.
    """
    _check_images_labels(train_images, train_labels, "train")
    _check_images_labels(heldout_images, heldout_labels, "heldout")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {optimizer!r}")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if batch_size < 2:
        raise ValueError(f"batch_size must be >= 2, got {batch_size}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    n_classes = int(train_labels.max()) + 1 if n_classes is None else int(n_classes)
    if max(int(train_labels.max()), int(heldout_labels.max())) >= n_classes:
        raise ValueError(f"labels must be < n_classes = {n_classes}")

    device = torch.device(device)
    train_labels = np.asarray(train_labels, dtype=np.int64)
    heldout_labels = np.asarray(heldout_labels, dtype=np.int64)
    n = len(train_labels)
    steps_per_epoch = sum(1 for start in range(0, n, batch_size) if n - start >= 2)
    total_steps = epochs * steps_per_epoch
    fork_devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []

    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(seed)  # classifier initialisation, dropout / drop-path in training
        backbone = create_backbone(model_name, image_size, seed, model_kwargs)
        head = torch.nn.Linear(feature_dim(backbone, image_size), n_classes)
        model = torch.nn.Sequential(backbone, head).to(device)
        mean, std = normalisation(backbone)
        if optimizer == "sgd":
            opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, nesterov=momentum > 0,
                                  weight_decay=weight_decay)
        else:
            opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))
        )
        order_generator = torch.Generator().manual_seed(seed)
        augment_generator = torch.Generator().manual_seed(seed + 1)

        def evaluate() -> float:
            return _accuracy(model, heldout_images, heldout_labels, image_size, mean, std,
                             eval_batch_size, device)

        history = [dict(epoch=0, train_loss=math.nan, train_accuracy=math.nan,
                        heldout_accuracy=evaluate(), lr=float(lr), seconds=0.0)]
        if on_epoch is not None:
            on_epoch(history[-1])
        for epoch in range(1, epochs + 1):
            start_time = time.perf_counter()
            model.train()
            order = torch.randperm(n, generator=order_generator).numpy()
            loss_sum, correct, seen = 0.0, 0, 0
            for start in range(0, n, batch_size):
                rows = order[start : start + batch_size]
                if len(rows) < 2:
                    continue
                x = preprocess(train_images[rows], image_size, mean, std).to(device)
                if augment:
                    x = random_crop_flip(x, augment_generator)
                y = torch.as_tensor(train_labels[rows], device=device)
                logits = model(x)
                loss = F.cross_entropy(logits, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                schedule.step()
                loss_sum += float(loss.detach()) * len(rows)
                correct += int((logits.argmax(dim=1) == y).sum())
                seen += len(rows)
                if progress is not None:
                    progress(len(rows))
            if not math.isfinite(loss_sum):
                raise FloatingPointError(
                    f"pretraining diverged in epoch {epoch} (non-finite loss); lower lr (now {lr})"
                )
            history.append(dict(
                epoch=epoch, train_loss=loss_sum / seen, train_accuracy=correct / seen,
                heldout_accuracy=evaluate(), lr=float(schedule.get_last_lr()[0]),
                seconds=time.perf_counter() - start_time,
            ))
            if on_epoch is not None:
                on_epoch(history[-1])

    model.eval()
    state = {k: v.detach().to("cpu").clone() for k, v in backbone.state_dict().items()}
    return PretrainResult(
        backbone_state=state,
        head_weight=head.weight.detach().to("cpu").clone(),
        head_bias=head.bias.detach().to("cpu").clone(),
        history=history,
    )
