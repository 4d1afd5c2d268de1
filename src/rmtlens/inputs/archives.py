"""Image-folder archives and checksums; :class:`DatasetError` for every dataset input.

The lowest module of :mod:`rmtlens.inputs`: both the dataset sources and the
torchvision downloads raise :class:`DatasetError`, so it lives here and neither
imports the other's module for it.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


class DatasetError(ValueError):
    """A dataset file is missing, corrupt or not in the expected layout."""



def sha256_of(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 digest of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: str | os.PathLike, expected: str | None) -> None:
    """Raise :class:`DatasetError` naming the file and both digests on mismatch."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"dataset archive {path} does not exist")
    if expected is None:
        return
    actual = sha256_of(path)
    if actual != expected.lower():
        raise DatasetError(
            f"checksum mismatch for {path}: expected sha256 {expected}, got {actual}. "
            "The file is corrupt or a different archive; replace it or fix the sha256 in the config."
        )


def imagefolder_index(archive: str | os.PathLike) -> tuple[dict[str, list[tuple[str, int]]], tuple[str, ...]]:
    """Members of an image-folder archive per split, sorted by name, with labels.

    Returns ``({'train': [(member, label), ...], 'test': [...]}, classes)``.
    """
    members: dict[str, list[tuple[str, str]]] = {"train": [], "test": []}
    with tarfile.open(archive, "r:*") as tar:
        for info in tar:
            if not info.isfile() or not info.name.lower().endswith(IMAGE_SUFFIXES):
                continue
            parts = Path(info.name).parts
            # tolerate one leading folder (e.g. CIFAR-10-images/train/cat/0001.jpg)
            for k in range(min(2, len(parts) - 2)):
                if parts[k] in members and len(parts) - k == 3:
                    members[parts[k]].append((info.name, parts[k + 1]))
                    break
    for split, items in members.items():
        if not items:
            raise DatasetError(
                f"archive {archive} has no images under {split}/<class>/; expected the layout "
                "train/<class>/*.jpg and test/<class>/*.jpg"
            )
    classes = tuple(sorted({c for _, c in members["train"]}))
    unknown = {c for _, c in members["test"]} - set(classes)
    if unknown:
        raise DatasetError(f"archive {archive}: test classes {sorted(unknown)} absent from train/")
    label_of = {c: i for i, c in enumerate(classes)}
    index = {s: sorted((name, label_of[c]) for name, c in items) for s, items in members.items()}
    return index, classes


def read_archive_images(archive: str | os.PathLike, names: list[str]) -> np.ndarray:
    """Decode the named members of an archive to uint8 RGB, in the order of ``names``.

    One sequential pass over the archive; raises if a member is missing or if the
    images do not all share one size.
    """
    from PIL import Image

    wanted = {name: i for i, name in enumerate(names)}
    out: list[np.ndarray | None] = [None] * len(names)
    with tarfile.open(archive, "r:*") as tar:
        for info in tar:
            slot = wanted.get(info.name)
            if slot is None:
                continue
            data = tar.extractfile(info).read()
            out[slot] = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    missing = [names[i] for i, img in enumerate(out) if img is None]
    if missing:
        raise DatasetError(f"archive {archive} lacks members {missing[:3]}")
    shapes = {img.shape for img in out}
    if len(shapes) != 1:
        raise DatasetError(f"archive {archive}: images differ in size {sorted(shapes)[:3]}")
    return np.stack(out)
