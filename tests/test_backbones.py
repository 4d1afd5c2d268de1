"""Backbone creation, preprocessing and embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rmtlens.inputs import (
    architectures_in_timm_source,
    check_model_name,
    create_backbone,
    embed_images,
    feature_dim,
    normalisation,
    preprocess,
)


def test_seeded_creation_is_reproducible_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = create_backbone("test_resnet", 32, seed=0)
    after = torch.rand(1)
    assert torch.equal(before, after)
    b = create_backbone("test_resnet", 32, seed=0)
    c = create_backbone("test_resnet", 32, seed=1)
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)
    assert not a.training


def test_vit_gets_the_image_size_and_feature_dim_comes_from_forward():
    vit = create_backbone("test_vit", 32, seed=0)
    assert feature_dim(vit, 32) == vit(torch.zeros(2, 3, 32, 32)).shape[1]
    mnv3 = create_backbone("mobilenetv3_small_100", 32, seed=0)
    with torch.no_grad():
        assert feature_dim(mnv3, 32) == mnv3(torch.zeros(1, 3, 32, 32)).shape[1]


def test_timm_source_lookup_finds_exactly_the_registered_architectures():
    """The names read from timm's source without importing it are timm's registry."""
    import timm

    assert architectures_in_timm_source() == frozenset(timm.list_models())


def test_a_known_model_name_is_checked_without_importing_torch():
    """Snakemake checks every model name each time it reads the Snakefile: a known name
    (with or without a pretrained tag) must not cost the seconds of importing torch."""
    import subprocess
    import sys

    code = ("import sys; from rmtlens.inputs import check_model_name; "
            "[check_model_name(m) for m in ('resnet18', 'resnet18.a1_in1k', 'test_resnet', 'convnext_atto')]; "
            "print(sorted(m for m in ('torch', 'timm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_unknown_model_is_named():
    with pytest.raises(ValueError, match="unknown timm model 'resnet_nope'"):
        check_model_name("resnet_nope")


@pytest.mark.parametrize("typo, meant", [("resnet19", "resnet18"), ("convnext_attto", "convnext_atto"),
                                         ("vit_small_patch16", "vit_small_patch16_224"), ("RESNET18", "resnet18")])
def test_unknown_model_lists_the_closest_names(typo, meant):
    import difflib

    import timm

    names = timm.list_models()
    assert typo not in names and meant in names
    with pytest.raises(ValueError) as info:
        check_model_name(typo)
    suggested = str(info.value).split("Closest timm names: ", 1)[1].split(".", 1)[0].split(", ")
    assert meant in suggested[:3], suggested
    assert all(name in names for name in suggested) and len(suggested) <= 8
    # the best suggestion is at least as close as every other timm name (difflib ratio)
    ratio = lambda name: difflib.SequenceMatcher(None, typo.lower(), name).ratio()  # noqa: E731
    assert ratio(suggested[0]) >= max(ratio(n) for n in names) - 1e-12


def test_preprocess_scales_resizes_and_normalises():
    img = np.full((2, 8, 8, 3), 255, dtype=np.uint8)
    img[1] = 0
    x = preprocess(img, 16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert x.shape == (2, 3, 16, 16)
    assert torch.allclose(x[0], torch.full_like(x[0], 2.0)) and torch.allclose(x[1], torch.full_like(x[1], -2.0))
    with pytest.raises(ValueError, match="uint8 of shape"):
        preprocess(img.astype(np.float32), 16, (0.5,) * 3, (0.25,) * 3)


def test_embeddings_equal_a_manual_forward_and_do_not_depend_on_batching():
    model = create_backbone("test_convnext", 32, seed=0)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10, 24, 24, 3), dtype=np.uint8)
    done = []
    feats = embed_images(model, images, 32, batch_size=3, progress=done.append)
    assert sum(done) == 10
    mean, std = normalisation(model)
    with torch.no_grad():
        ref = model(preprocess(images, 32, mean, std)).numpy()
    np.testing.assert_allclose(feats, ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(embed_images(model, images, 32, batch_size=10), feats, rtol=1e-4, atol=1e-5)
