"""The scalar network ``f = Linear(p, 1) ∘ backbone`` whose eNTK is computed (SPEC §1).
"""

from __future__ import annotations

import torch
from torch import nn


class ScalarNetwork(nn.Module):
    """``f(x) = head(backbone(x))`` with a ``Linear(p, 1)`` head; output shape ``(B,)``."""

    def __init__(self, backbone: nn.Module, head: nn.Linear):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x)).squeeze(-1)


def scalar_network(backbone: nn.Module, feature_dim: int, head_seed: int) -> nn.Module:
    """The scalar network of the eNTK definition (SPEC §1).

    Parameters
    ----------
    backbone : feature extractor mapping ``(B, 3, S, S)`` to ``(B, feature_dim)``
        (a timm model created with ``num_classes=0``).
    feature_dim : ``p``, read off a forward pass (``rmtlens.inputs.backbones.feature_dim``).
    head_seed : seeds the ``Linear(p, 1)`` head's default initialisation (local
        RNG fork; the global RNG is untouched).

    Returns
    -------
    ScalarNetwork in eval mode, head on the backbone's device and dtype; its forward
    returns ``(B,)``.
    """
    if int(feature_dim) < 1:
        raise ValueError(f"feature_dim must be a positive integer, got {feature_dim!r}")
    reference = next(backbone.parameters(), None)
    device = reference.device if reference is not None else torch.device("cpu")
    dtype = reference.dtype if reference is not None else torch.get_default_dtype()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(head_seed))
        head = nn.Linear(int(feature_dim), 1)
    return ScalarNetwork(backbone, head.to(device=device, dtype=dtype)).eval()
