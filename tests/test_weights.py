"""Published-weights and trained-weights loading, checked against the source model's outputs."""

import logging
import re
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from rmtlens.inputs import (
    PRETRAINED_FILE_FIELD,
    WeightsError,
    backbone_with_weights,
    cached_pretrained_file,
    create_backbone,
    hub_source,
    load_pretrained_backbone,
    load_trained_backbone,
    pretrained_download,
    save_backbone_state,
)

MODEL, SIZE = "test_resnet", 32


@pytest.fixture(scope="module")
def source():
    """A full timm model (with its 1000-class head) whose weights play the published ones."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(11)
        model = timm.create_model(MODEL).eval()
    # make BatchNorm statistics non-trivial so a failed load cannot go unnoticed
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return model


@pytest.fixture(scope="module")
def images():
    return torch.randn(4, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))


def pooled_features(model, x):
    """Penultimate features of a full timm model, the reference for num_classes=0 backbones."""
    with torch.no_grad():
        return model.forward_head(model.forward_features(x), pre_logits=True)


def write_weights(model, path):
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path


def populate_hub_cache(cache_dir, model_name, weights_file):
    """Lay out ``weights_file`` the way huggingface_hub caches a download."""
    repo_id, _, filenames, _ = hub_source(model_name)
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache_dir / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    blob = repo / "blobs" / "a1b2c3"
    blob.parent.mkdir()
    blob.write_bytes(weights_file.read_bytes())
    snapshot = repo / "snapshots" / commit / filenames[0]
    snapshot.parent.mkdir(parents=True)
    snapshot.symlink_to(blob)
    return snapshot


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_file_goes_through_timms_pretrained_path(source, images, tmp_path, suffix):
    path = write_weights(source, tmp_path / f"weights{suffix}")
    model = load_pretrained_backbone(MODEL, SIZE, seed=2, cache_dir=tmp_path / "hub", pretrained_file=path)
    assert not model.training
    with torch.no_grad():
        out = model(images)
        init = create_backbone(MODEL, SIZE, seed=2)(images)
    torch.testing.assert_close(out, pooled_features(source, images), rtol=0, atol=0)
    assert not torch.allclose(out, init, atol=1e-3)
    assert model.pretrained_cfg["file"] == str(path)
    assert not (tmp_path / "hub").exists()


def test_hub_cache_is_used_without_network(source, images, tmp_path):
    weights_file = write_weights(source, tmp_path / "w.safetensors")
    snapshot = populate_hub_cache(tmp_path / "hub", MODEL, weights_file)
    assert cached_pretrained_file(MODEL, tmp_path / "hub") == snapshot
    model = load_pretrained_backbone(MODEL, SIZE, seed=5, cache_dir=tmp_path / "hub", allow_download=False)
    with torch.no_grad():
        torch.testing.assert_close(model(images), pooled_features(source, images), rtol=0, atol=0)


def test_missing_local_file_names_both_options(tmp_path):
    missing = tmp_path / "nowhere" / "weights.safetensors"
    with pytest.raises(WeightsError) as info:
        load_pretrained_backbone(MODEL, SIZE, 0, cache_dir=tmp_path / "hub", pretrained_file=missing)
    message = str(info.value)
    for part in (str(missing), repr(MODEL), PRETRAINED_FILE_FIELD, "timm/test_resnet.r160_in1k", str(tmp_path / "hub")):
        assert part in message


def test_weights_absent_offline_name_both_options(tmp_path, monkeypatch):
    with pytest.raises(WeightsError) as info:
        load_pretrained_backbone(MODEL, SIZE, 0, cache_dir=tmp_path / "hub", allow_download=False)
    message = str(info.value)
    for part in (repr(MODEL), PRETRAINED_FILE_FIELD, "Hugging Face hub", str(tmp_path / "hub")):
        assert part in message

    # the download path itself: timm asks huggingface_hub, which is told it is offline
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsError) as info:
        load_pretrained_backbone(MODEL, SIZE, 0, cache_dir=tmp_path / "hub")
    message = str(info.value)
    assert "could not get the published weights" in message and PRETRAINED_FILE_FIELD in message
    assert str(tmp_path / "hub") in message


def follow_the_message(message: str) -> Path:
    """The path the error message says to put the weights file at."""
    match = re.search(r"put it at (\S+) \(where it is found without network\)", message)
    assert match, message
    return Path(match.group(1))


def test_missing_weights_name_the_download_and_where_to_put_it(source, images, tmp_path):
    hub = tmp_path / "hub"
    with pytest.raises(WeightsError) as info:
        load_pretrained_backbone(MODEL, SIZE, 0, cache_dir=hub, allow_download=False)
    message = str(info.value)
    url = "https://huggingface.co/timm/test_resnet.r160_in1k/resolve/main/model.safetensors"
    assert url in message and PRETRAINED_FILE_FIELD in message
    assert pretrained_download(MODEL, hub)["url"] == url
    target = follow_the_message(message)
    assert target.is_relative_to(hub) and target.name == "model.safetensors"
    target.parent.mkdir(parents=True)
    write_weights(source, target)  # what a download elsewhere, copied here, would be
    model = load_pretrained_backbone(MODEL, SIZE, 0, cache_dir=hub, allow_download=False)
    with torch.no_grad():
        torch.testing.assert_close(model(images), pooled_features(source, images), rtol=0, atol=0)


def test_weights_published_by_url_only_name_the_url_file(source, images, tmp_path, monkeypatch):
    import rmtlens.inputs.weights as weights

    url = "https://example.org/releases/test_resnet-0123abcd.pth?download=1"
    monkeypatch.setattr(weights, "hub_source", lambda name: (None, None, (), url))
    hub = tmp_path / "hub"
    with pytest.raises(WeightsError) as info:
        load_pretrained_backbone(MODEL, SIZE, 0, cache_dir=hub, allow_download=False)
    message = str(info.value)
    assert url in message
    target = follow_the_message(message)
    assert target == hub / "test_resnet-0123abcd.pth"
    hub.mkdir()
    write_weights(source, target)
    model = load_pretrained_backbone(MODEL, SIZE, 0, cache_dir=hub, allow_download=False)
    with torch.no_grad():
        torch.testing.assert_close(model(images), pooled_features(source, images), rtol=0, atol=0)


def test_file_of_another_architecture_is_refused(tmp_path):
    other = write_weights(timm.create_model("test_convnext"), tmp_path / "convnext.safetensors")
    level = logging.getLogger("timm.models._builder").level
    with pytest.raises(WeightsError, match="does not fit timm model 'test_resnet'"):
        load_pretrained_backbone(MODEL, SIZE, 0, cache_dir=tmp_path, pretrained_file=other)
    assert logging.getLogger("timm.models._builder").level == level


def test_trained_state_round_trip(images, tmp_path):
    trained = create_backbone(MODEL, SIZE, seed=3)
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = tmp_path / "trained.safetensors"
    save_backbone_state(path, trained.state_dict(), MODEL)
    loaded = backbone_with_weights("trained", MODEL, SIZE, seed=4, trained_file=path)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), trained(images), rtol=0, atol=0)
    assert list(tmp_path.iterdir()) == [path]


def test_trained_state_is_loaded_strictly(tmp_path):
    state = create_backbone(MODEL, SIZE, seed=3).state_dict()
    with_head = dict(state, **{"fc.weight": torch.zeros(10, 8)})
    save_backbone_state(tmp_path / "head.safetensors", with_head, MODEL)
    with pytest.raises(WeightsError, match="fc.weight"):
        load_trained_backbone(MODEL, SIZE, 0, tmp_path / "head.safetensors")
    partial = {k: v for k, v in state.items() if not k.startswith("layer4")}
    save_backbone_state(tmp_path / "partial.safetensors", partial, MODEL)
    with pytest.raises(WeightsError, match="layer4"):
        load_trained_backbone(MODEL, SIZE, 0, tmp_path / "partial.safetensors")
    save_backbone_state(tmp_path / "other.safetensors", state, "resnet18")
    with pytest.raises(WeightsError, match="for model 'resnet18'"):
        load_trained_backbone(MODEL, SIZE, 0, tmp_path / "other.safetensors")
    with pytest.raises(WeightsError, match="pretraining rule"):
        load_trained_backbone(MODEL, SIZE, 0, tmp_path / "absent.safetensors")


def test_init_is_the_seeded_backbone(images):
    with torch.no_grad():
        torch.testing.assert_close(
            backbone_with_weights("init", MODEL, SIZE, seed=7)(images), create_backbone(MODEL, SIZE, 7)(images),
            rtol=0, atol=0,
        )
    with pytest.raises(ValueError, match="weights must be one of"):
        backbone_with_weights("imagenet", MODEL, SIZE, 0)
