"""Datasets as standardised arrays: uint8 images ``(N, H, W, 3)`` and int labels.

A prepared dataset holds a *pool* of training images followed by a *test* set
(SPEC §1); every kernel of the dataset is computed on these rows in this order.

Sources:

``digits``
    scikit-learn's bundled 8x8 digits, upsampled to 32x32x3 (no download).
    It has no official split: pool and test are disjoint seeded draws.
``imagefolder``
    A ``.tar.gz`` holding ``train/<class>/*`` and ``test/<class>/*`` images, class
    index = rank of the folder name in sorted order, verified by sha256.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


class DatasetError(ValueError):
    """A dataset file is missing, corrupt or not in the expected layout."""


@dataclass(frozen=True)
class PreparedDataset:
    """Pool rows first, then test rows.

    images : (n_pool + n_test, H, W, 3) uint8.
    labels : (n_pool + n_test,) int64 class indices into ``classes``.
    source_index : (n_pool + n_test,) index of each image within its source split.
    classes : class names, index = label.
    n_pool : number of pool rows.
    """

    images: np.ndarray
    labels: np.ndarray
    source_index: np.ndarray
    classes: tuple[str, ...]
    n_pool: int

    @property
    def n_test(self) -> int:
        return int(self.labels.shape[0] - self.n_pool)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return dict(
            images=self.images,
            labels=self.labels,
            source_index=self.source_index,
            classes=np.array(self.classes),
            n_pool=np.array(self.n_pool),
        )

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "PreparedDataset":
        return cls(
            images=arrays["images"],
            labels=arrays["labels"].astype(np.int64),
            source_index=arrays["source_index"],
            classes=tuple(str(c) for c in arrays["classes"]),
            n_pool=int(arrays["n_pool"]),
        )


def choose_pool_and_test(
    n_train: int, n_test_split: int | None, n_pool: int, n_test: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded, sorted indices of the pool (train split) and test set (test split).

    With ``n_test_split=None`` the source has one split only, and the test set is
    drawn from it disjoint from the pool.
    """
    rng = np.random.default_rng(seed)
    if n_test_split is None:
        if n_pool + n_test > n_train:
            raise DatasetError(
                f"n_pool + n_test = {n_pool + n_test} exceeds the {n_train} images of the dataset"
            )
        perm = rng.permutation(n_train)
        return np.sort(perm[:n_pool]), np.sort(perm[n_pool : n_pool + n_test])
    if n_pool > n_train:
        raise DatasetError(f"n_pool = {n_pool} exceeds the {n_train} training images")
    if n_test > n_test_split:
        raise DatasetError(f"n_test = {n_test} exceeds the {n_test_split} test images")
    pool = np.sort(rng.choice(n_train, size=n_pool, replace=False))
    test = np.sort(rng.choice(n_test_split, size=n_test, replace=False))
    return pool, test


def digits_images(size: int = 32) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """scikit-learn's digits as uint8 RGB images ``(1797, size, size, 3)``, labels, names.

    The 17 grey levels (0..16) are scaled to 0..255, upsampled bilinearly and
    repeated over the three channels.
    """
    from PIL import Image
    from sklearn.datasets import load_digits

    bunch = load_digits()
    grey = np.round(bunch.images / 16.0 * 255.0).astype(np.uint8)
    up = np.stack(
        [np.asarray(Image.fromarray(g).resize((size, size), Image.BILINEAR)) for g in grey]
    )
    images = np.repeat(up[..., None], 3, axis=-1)
    return images, bunch.target.astype(np.int64), tuple(str(c) for c in range(10))


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


def prepare_digits(n_pool: int, n_test: int, seed: int) -> PreparedDataset:
    """Pool and test drawn disjointly from scikit-learn's digits."""
    images, labels, classes = digits_images()
    pool, test = choose_pool_and_test(len(labels), None, n_pool, n_test, seed)
    rows = np.concatenate([pool, test])
    return PreparedDataset(images[rows], labels[rows], rows, classes, n_pool)


def prepare_imagefolder(
    archive: str | os.PathLike, sha256: str | None, n_pool: int, n_test: int, seed: int
) -> PreparedDataset:
    """Pool from ``train/``, test set from ``test/`` of a verified image-folder archive."""
    verify_sha256(archive, sha256)
    index, classes = imagefolder_index(archive)
    pool, test = choose_pool_and_test(len(index["train"]), len(index["test"]), n_pool, n_test, seed)
    chosen = [index["train"][i] for i in pool] + [index["test"][i] for i in test]
    images = read_archive_images(archive, [name for name, _ in chosen])
    labels = np.array([label for _, label in chosen], dtype=np.int64)
    return PreparedDataset(images, labels, np.concatenate([pool, test]), classes, n_pool)


def prepare_dataset(spec: dict, archive: str | None = None) -> PreparedDataset:
    """Prepare a dataset from its configuration entry (``source``, ``n_pool``, ``n_test``, ...)."""
    source = spec["source"]
    seed = int(spec.get("seed", 0))
    if source == "digits":
        return prepare_digits(spec["n_pool"], spec["n_test"], seed)
    if source == "imagefolder":
        if archive is None:
            raise DatasetError("source 'imagefolder' needs an archive path")
        return prepare_imagefolder(archive, spec.get("sha256"), spec["n_pool"], spec["n_test"], seed)
    raise DatasetError(f"unknown dataset source {source!r}")
