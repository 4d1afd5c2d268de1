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
``cifar10``, ``cifar100``, ``fashion_mnist``
    The official files through torchvision (:mod:`rmtlens.inputs.downloads`).

Images outside a dataset's pool and test set form *source tasks* for pretraining
(:func:`prepare_source_task`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from rmtlens.inputs.archives import (
    DatasetError,
    imagefolder_index,
    read_archive_images,
    verify_sha256,
)


@dataclass(frozen=True)
class PreparedDataset:
    """Pool rows first, then test rows.

    images : (n_pool + n_test, H, W, 3) uint8; None for a dataset given as arrays
        (:mod:`rmtlens.inputs.arrays`), which has embeddings but no images.
    labels : (n_pool + n_test,) int64 class indices into ``classes``; None when the
        dataset has real-valued targets (``values``) instead.
    source_index : (n_pool + n_test,) index of each sample within its source split.
    classes : class names, index = label (real-valued targets: the target columns' names).
    n_pool : number of pool rows.
    values : (n_pool + n_test, C) float64 real-valued targets (regression), else None.
    file_rows : (n_pool + n_test,) row of each sample in the dataset's array files
        (datasets given as arrays), else None.
    file_row_count : number of rows (samples) of those files, else None.
    """

    images: np.ndarray | None
    labels: np.ndarray | None
    source_index: np.ndarray
    classes: tuple[str, ...]
    n_pool: int
    values: np.ndarray | None = None
    file_rows: np.ndarray | None = None
    file_row_count: int | None = None

    @property
    def n_test(self) -> int:
        return int(self.source_index.shape[0] - self.n_pool)

    @property
    def regression(self) -> bool:
        """Whether the targets are real values (``values``) rather than class labels."""
        return self.values is not None

    @property
    def outcomes(self) -> np.ndarray:
        """What the targets are built from (:func:`rmtlens.inputs.targets.make_targets`):
        ``labels`` (N,), or ``values`` (N, C) for real-valued targets."""
        return self.values if self.regression else self.labels

    def targets(self, kind: str, positive_classes=None) -> np.ndarray:
        """The (N, C) regression targets of every row for ``targets.kind`` (SPEC §1); a class
        kind on real-valued targets, or ``regression`` on class labels, is an error."""
        from rmtlens.inputs.targets import make_targets

        if self.regression != (kind == "regression"):
            raise ValueError(
                f"targets kind {kind!r} does not fit this dataset, which has "
                + ("real-valued targets: use kind 'regression'" if self.regression else
                   "class labels: 'regression' needs real-valued targets")
            )
        return make_targets(self.outcomes, len(self.classes), kind, positive_classes)

    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays = dict(
            images=self.images,
            labels=self.labels,
            source_index=self.source_index,
            classes=np.array(self.classes),
            n_pool=np.array(self.n_pool),
            values=self.values,
            file_rows=self.file_rows,
            file_row_count=None if self.file_row_count is None else np.array(self.file_row_count),
        )
        return {k: v for k, v in arrays.items() if v is not None}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "PreparedDataset":
        def optional(key, convert=lambda a: a):
            return convert(arrays[key]) if key in arrays else None

        return cls(
            images=optional("images"),
            labels=optional("labels", lambda a: a.astype(np.int64)),
            source_index=arrays["source_index"],
            classes=tuple(str(c) for c in arrays["classes"]),
            n_pool=int(arrays["n_pool"]),
            values=optional("values", lambda a: a.astype(np.float64)),
            file_rows=optional("file_rows"),
            file_row_count=optional("file_row_count", int),
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


class DigitsSource:
    """scikit-learn's digits: one split of 1797 images (the test set is drawn from it)."""

    has_test_split = False

    def __init__(self) -> None:
        self._images, self._labels, self.classes = digits_images()

    def labels(self, split: str) -> np.ndarray:
        return self._labels

    def images(self, split: str, index: np.ndarray) -> np.ndarray:
        return self._images[index]


class ImageFolderSource:
    """An image-folder archive (verified by sha256), decoded only where images are read."""

    has_test_split = True

    def __init__(self, archive: str | os.PathLike, sha256: str | None) -> None:
        verify_sha256(archive, sha256)
        self.archive = archive
        self._index, self.classes = imagefolder_index(archive)

    def labels(self, split: str) -> np.ndarray:
        return np.array([label for _, label in self._index[split]], dtype=np.int64)

    def images(self, split: str, index: np.ndarray) -> np.ndarray:
        return read_archive_images(self.archive, [self._index[split][i][0] for i in index])


class ArraySource:
    """Train and test splits held as arrays (CIFAR, Fashion-MNIST through torchvision)."""

    has_test_split = True

    def __init__(self, train_images, train_labels, test_images, test_labels, classes) -> None:
        self._images = {"train": train_images, "test": test_images}
        self._labels = {"train": np.asarray(train_labels, np.int64), "test": np.asarray(test_labels, np.int64)}
        self.classes = tuple(classes)

    def labels(self, split: str) -> np.ndarray:
        return self._labels[split]

    def images(self, split: str, index: np.ndarray) -> np.ndarray:
        return self._images[split][index]


SOURCES = ("digits", "imagefolder", "cifar10", "cifar100", "fashion_mnist")


def open_source(spec: dict, archive: str | None = None, download_root: str | os.PathLike = "resources/datasets"):
    """The image source a dataset's configuration entry describes.

    ``archive`` is the image-folder archive; CIFAR and Fashion-MNIST files are
    looked for, verified and (if absent) downloaded under ``download_root``, from
    ``spec['url']`` when given (a mirror) or the official address.
    """
    source = spec["source"]
    if source == "digits":
        return DigitsSource()
    if source == "imagefolder":
        if archive is None:
            raise DatasetError("source 'imagefolder' needs an archive path")
        return ImageFolderSource(archive, spec.get("sha256"))
    if source in ("cifar10", "cifar100", "fashion_mnist"):
        from rmtlens.inputs.downloads import load_torchvision

        splits = load_torchvision(source, download_root, url=spec.get("url"))
        return ArraySource(splits.train_images, splits.train_labels, splits.test_images,
                           splits.test_labels, splits.classes)
    raise DatasetError(f"unknown dataset source {source!r}; expected one of {SOURCES}")


def pool_and_test_indices(source, n_pool: int, n_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the pool (train split) and test set (test split, or train split when
    the source has only one) of a source, by :func:`choose_pool_and_test`."""
    n_test_split = len(source.labels("test")) if source.has_test_split else None
    return choose_pool_and_test(len(source.labels("train")), n_test_split, n_pool, n_test, seed)


def prepare_pool(source, n_pool: int, n_test: int, seed: int) -> PreparedDataset:
    """The pool and test set of a source as a :class:`PreparedDataset`."""
    pool, test = pool_and_test_indices(source, n_pool, n_test, seed)
    test_split = "test" if source.has_test_split else "train"
    images = np.concatenate([source.images("train", pool), source.images(test_split, test)])
    labels = np.concatenate([source.labels("train")[pool], source.labels(test_split)[test]])
    return PreparedDataset(images, labels, np.concatenate([pool, test]), source.classes, n_pool)


@dataclass(frozen=True)
class SourceTask:
    """Images for pretraining, disjoint from a dataset's pool and test set.

    train_images, heldout_images : (N, H, W, 3) uint8.
    train_labels, heldout_labels : (N,) int64 in ``[0, len(classes))``.
    train_index, heldout_index : (N,) indices of the images in the source's train split.
    classes : names of the task's classes (a subset of the dataset's, relabelled in order).
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    heldout_images: np.ndarray
    heldout_labels: np.ndarray
    train_index: np.ndarray
    heldout_index: np.ndarray
    classes: tuple[str, ...]


def prepare_source_task(
    source, n_pool: int, n_test: int, seed: int, n_train: int, n_heldout: int,
    classes: list[int] | None, task_seed: int,
) -> SourceTask:
    """A pretraining task from the train-split images outside the pool (and test set).

    Parameters
    ----------
    source : an image source (:func:`open_source`).
    n_pool, n_test, seed : the dataset's pool/test choice, to be excluded.
    n_train, n_heldout : images drawn (seeded by ``task_seed``) for training and
        for measuring held-out accuracy.
    classes : class indices to keep (relabelled 0..k-1 in this order), or None for all.
    """
    pool, test = pool_and_test_indices(source, n_pool, n_test, seed)
    labels = source.labels("train")
    excluded = set(pool.tolist()) | (set() if source.has_test_split else set(test.tolist()))
    keep = list(range(len(source.classes))) if not classes else list(classes)
    bad = [c for c in keep if not 0 <= c < len(source.classes)]
    if bad:
        raise DatasetError(f"source task classes {bad} are not classes of the dataset (0..{len(source.classes) - 1})")
    candidates = np.array([i for i in range(len(labels)) if i not in excluded and labels[i] in keep], dtype=np.int64)
    if n_train + n_heldout > len(candidates):
        raise DatasetError(
            f"source task needs n_train + n_heldout = {n_train + n_heldout} images but only {len(candidates)} "
            "remain outside the dataset's pool and test set; lower them or the pool size"
        )
    chosen = np.random.default_rng(task_seed).choice(candidates, size=n_train + n_heldout, replace=False)
    relabel = {c: i for i, c in enumerate(keep)}
    images = source.images("train", chosen)
    new_labels = np.array([relabel[int(labels[i])] for i in chosen], dtype=np.int64)
    return SourceTask(images[:n_train], new_labels[:n_train], images[n_train:], new_labels[n_train:],
                      chosen[:n_train], chosen[n_train:], tuple(source.classes[c] for c in keep))


def prepare_dataset(
    spec: dict, archive: str | None = None, download_root: str | os.PathLike = "resources/datasets"
) -> PreparedDataset:
    """The pool and test set of a dataset configuration entry (``source``, ``n_pool``, ``n_test``, ``seed``)."""
    source = open_source(spec, archive, download_root)
    return prepare_pool(source, spec["n_pool"], spec["n_test"], int(spec.get("seed", 0)))
