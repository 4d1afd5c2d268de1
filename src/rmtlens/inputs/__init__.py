"""Layer 1, inputs: datasets, downloads, targets, backbones and their weights, pretraining, embeddings.

Public names are imported lazily from their modules, so importing the package
does not import torch unless a name that needs it is used.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "DatasetError": "archives",
    "IMAGE_SUFFIXES": "archives",
    "imagefolder_index": "archives",
    "read_archive_images": "archives",
    "sha256_of": "archives",
    "verify_sha256": "archives",
    "check_model_name": "backbones",
    "closest_model_names": "backbones",
    "create_backbone": "backbones",
    "feature_dim": "backbones",
    "normalisation": "backbones",
    "pick_device": "backbones",
    "preprocess": "backbones",
    "ArraySource": "datasets",
    "DigitsSource": "datasets",
    "ImageFolderSource": "datasets",
    "PreparedDataset": "datasets",
    "SOURCES": "datasets",
    "SourceTask": "datasets",
    "choose_pool_and_test": "datasets",
    "digits_images": "datasets",
    "open_source": "datasets",
    "pool_and_test_indices": "datasets",
    "prepare_dataset": "datasets",
    "prepare_pool": "datasets",
    "prepare_source_task": "datasets",
    "DATASETS": "downloads",
    "DatasetSplits": "downloads",
    "FASHION_MNIST_DEBIAN_DIR": "downloads",
    "FASHION_MNIST_RAW_MD5": "downloads",
    "cifar_class": "downloads",
    "download_verified": "downloads",
    "fetch_cifar": "downloads",
    "load_cifar": "downloads",
    "load_fashion_mnist": "downloads",
    "load_torchvision": "downloads",
    "md5_of": "downloads",
    "stage_fashion_mnist": "downloads",
    "embed_images": "embeddings",
    "OPTIMIZERS": "pretrain",
    "PretrainResult": "pretrain",
    "pretrain_backbone": "pretrain",
    "random_crop_flip": "pretrain",
    "TARGET_KINDS": "targets",
    "make_targets": "targets",
    "PRETRAINED_FILE_FIELD": "weights",
    "WEIGHTS": "weights",
    "WeightsError": "weights",
    "backbone_with_weights": "weights",
    "cached_pretrained_file": "weights",
    "pretrained_download": "weights",
    "pretrained_instructions": "weights",
    "hub_source": "weights",
    "load_backbone_state": "weights",
    "load_pretrained_backbone": "weights",
    "load_trained_backbone": "weights",
    "save_backbone_state": "weights",
    "flip_labels": "targets",
    "gaussian_target_noise": "targets",
    "target_variance": "targets",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
