"""Pretraining on a tiny source task (scikit-learn digits at 32x32)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from rmtlens.inputs import (
    create_backbone,
    digits_images,
    feature_dim,
    load_trained_backbone,
    normalisation,
    preprocess,
    pretrain_backbone,
    random_crop_flip,
    save_backbone_state,
)

SIZE = 32


@pytest.fixture(scope="module")
def digits():
    images, labels, _ = digits_images(SIZE)
    perm = np.random.default_rng(0).permutation(len(labels))
    train, heldout = perm[:400], perm[400:700]
    return images[train], labels[train], images[heldout], labels[heldout]


@pytest.fixture(scope="module")
def trained(digits):
    return pretrain_backbone(*digits, "test_resnet", SIZE, seed=0, epochs=4, batch_size=32, lr=0.05)


def features(model, images):
    mean, std = normalisation(model)
    with torch.no_grad():
        return model.eval()(preprocess(images, SIZE, mean, std)).numpy()


def probe_accuracy(model, digits):
    """Held-out accuracy of a logistic-regression probe on the backbone's features."""
    train_x, train_y, heldout_x, heldout_y = digits
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
    probe.fit(features(model, train_x), train_y)
    return probe.score(features(model, heldout_x), heldout_y)


def test_pretraining_improves_the_representation(trained, digits, tmp_path):
    path = tmp_path / "trained.safetensors"
    save_backbone_state(path, trained.backbone_state, "test_resnet")
    backbone = load_trained_backbone("test_resnet", SIZE, seed=123, state_file=path)
    init = create_backbone("test_resnet", SIZE, seed=0)
    assert probe_accuracy(backbone, digits) >= probe_accuracy(init, digits) + 0.05

    # the recorded held-out accuracy is that of the loaded backbone with the returned head
    logits = torch.as_tensor(features(backbone, digits[2])) @ trained.head_weight.T + trained.head_bias
    accuracy = float((logits.argmax(1).numpy() == digits[3]).mean())
    assert trained.history[-1]["heldout_accuracy"] == pytest.approx(accuracy, abs=1e-12)
    assert accuracy >= trained.history[0]["heldout_accuracy"] + 0.4


def test_history(trained):
    history = trained.history
    assert [row["epoch"] for row in history] == [0, 1, 2, 3, 4]
    assert math.isnan(history[0]["train_loss"]) and history[0]["lr"] == 0.05
    losses = [row["train_loss"] for row in history[1:]]
    assert losses[-1] < losses[0] < math.log(10) * 1.5
    # cosine schedule: lr(e) = lr0 (1 + cos(pi e / E)) / 2 at the end of epoch e
    for row in history[1:]:
        assert row["lr"] == pytest.approx(0.025 * (1 + math.cos(math.pi * row["epoch"] / 4)), abs=1e-12)
    backbone = create_backbone("test_resnet", SIZE, 0)
    assert set(trained.backbone_state) == set(backbone.state_dict())
    assert trained.head_weight.shape == (10, feature_dim(backbone, SIZE)) and trained.head_bias.shape == (10,)


def test_deterministic_for_a_seed_and_leaves_global_rng_alone(digits):
    images, labels = digits[0][:96], digits[1][:96]
    args = (images, labels, digits[2][:40], digits[3][:40], "test_convnext", SIZE)
    kwargs = dict(epochs=2, batch_size=16, lr=2e-3, optimizer="adamw", augment=True)
    before = torch.random.get_rng_state()
    done, rows = [], []
    first = pretrain_backbone(*args, seed=4, **kwargs, progress=done.append, on_epoch=rows.append)
    assert torch.equal(torch.random.get_rng_state(), before)
    second = pretrain_backbone(*args, seed=4, **kwargs)
    other = pretrain_backbone(*args, seed=5, **kwargs)
    assert first.backbone_state.keys() == second.backbone_state.keys()
    for key, value in first.backbone_state.items():
        assert torch.equal(value, second.backbone_state[key]), key
    assert torch.equal(first.head_weight, second.head_weight)
    drop = lambda h: [{k: v for k, v in row.items() if k != "seconds"} for row in h]  # noqa: E731
    assert str(drop(first.history)) == str(drop(second.history))
    assert any(not torch.equal(v, other.backbone_state[k]) for k, v in first.backbone_state.items())
    assert sum(done) == 2 * 96 and rows == first.history


def test_random_crop_flip_is_a_shifted_crop_of_the_padded_image():
    x = torch.randn(6, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    out = random_crop_flip(x, torch.Generator().manual_seed(2))
    padded = F.pad(x, (2, 2, 2, 2), mode="reflect")
    for i in range(len(x)):
        matches = [
            (dy, dx, flip)
            for dy in range(5) for dx in range(5) for flip in (False, True)
            if torch.equal(out[i], (lambda c: c.flip(-1) if flip else c)(padded[i, :, dy:dy + 16, dx:dx + 16]))
        ]
        assert matches, i
    assert not torch.equal(out, x)


def test_input_validation(digits):
    images, labels = digits[0][:8], digits[1][:8]
    with pytest.raises(ValueError, match="train_images"):
        pretrain_backbone(images.astype(np.float32), labels, images, labels, "test_resnet", SIZE, 0, 1, 4, 0.1)
    with pytest.raises(ValueError, match="heldout_labels"):
        pretrain_backbone(images, labels, images, labels[:3], "test_resnet", SIZE, 0, 1, 4, 0.1)
    with pytest.raises(ValueError, match="n_classes"):
        pretrain_backbone(images, labels, images, labels, "test_resnet", SIZE, 0, 1, 4, 0.1, n_classes=2)
    with pytest.raises(ValueError, match="optimizer"):
        pretrain_backbone(images, labels, images, labels, "test_resnet", SIZE, 0, 1, 4, 0.1, optimizer="lbfgs")
    with pytest.raises(ValueError, match="batch_size"):
        pretrain_backbone(images, labels, images, labels, "test_resnet", SIZE, 0, 1, 1, 0.1)
