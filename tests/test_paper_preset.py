"""config/paper.yaml builds [W22]'s exact eNTK: head Linear(p, 1) right after
torch.manual_seed(438), 224 px inputs with ImageNet normalisation, eval mode, TF32 off."""

from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from rmtlens.kernels.ntk.network import scalar_network

ROOT = Path(__file__).resolve().parents[1]
PAPER = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def test_paper_preset_settings():
    assert PAPER["entk"]["allow_tf32"] is False
    for name, bb in PAPER["backbones"].items():
        assert bb["head_seed"] == 438, name
        assert bb["image_size"] == 224, name
        assert bb["model"].endswith(".tv_in1k"), name  # torchvision weights, as [W22]
        timm = pytest.importorskip("timm")
        cfg = timm.models.get_pretrained_cfg(bb["model"]).to_dict()
        assert tuple(cfg["mean"]) == pytest.approx(IMAGENET_MEAN)
        assert tuple(cfg["std"]) == pytest.approx(IMAGENET_STD)


@pytest.mark.parametrize("p", [512, 37])
def test_head_equals_w22_construction(p):
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(12, p), nn.BatchNorm1d(p))
    torch.manual_seed(0)  # whatever the global RNG holds before
    state = torch.random.get_rng_state()
    model = scalar_network(backbone, p, PAPER["backbones"]["resnet34"]["head_seed"])
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is untouched
    torch.manual_seed(438)
    reference = nn.Linear(p, 1)  # [W22]'s construction
    assert torch.equal(model.head.weight, reference.weight)
    assert torch.equal(model.head.bias, reference.bias)
    assert not model.training and not model.backbone.training
    other = scalar_network(backbone, p, 0)
    assert not torch.equal(other.head.weight, reference.weight)
