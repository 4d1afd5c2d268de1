"""CIFAR-10, CIFAR-100 and Fashion-MNIST through torchvision, verified, as standard arrays.

Every file that enters a dataset root is checked against a known md5 before it is
given its final name: downloads go to a temporary file beside the target
(:func:`rmtlens.io.atomic_path`), are verified, and only then renamed; a file that
fails verification is deleted. A file already in place under its final name is used
without any network access when its checksum matches.

CIFAR
    The official python-format archives. The archive's url, file name and md5, the
    extracted folder, its members' md5s and the loading of the pickled batches are
    torchvision's own (:class:`torchvision.datasets.CIFAR10` / ``CIFAR100``). Another
    dataset class with the same interface (a subclass overriding those attributes)
    can be injected, which is how the tests serve a generated archive.
Fashion-MNIST
    torchvision's :class:`~torchvision.datasets.FashionMNIST` loads
    ``<root>/FashionMNIST/raw/*-idx?-ubyte``. Those files are decompressed from the
    ``*.gz`` files of Debian's package ``dataset-fashion-mnist``
    (``/usr/share/datasets/fashion-mnist/``) when present, otherwise downloaded from
    torchvision's mirrors (or a given mirror) and verified with torchvision's md5
    list. Debian recompressed the archives (their ``.gz`` md5s differ from
    torchvision's), so the decompressed files are verified against the md5s of the
    decompressed original archives, :data:`FASHION_MNIST_RAW_MD5`.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rmtlens.inputs.archives import DatasetError
from rmtlens.io import atomic_path

DATASETS = ("cifar10", "cifar100", "fashion_mnist")

FASHION_MNIST_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where ``apt-get install dataset-fashion-mnist`` puts the four ``*-idx?-ubyte.gz``."""

FASHION_MNIST_RAW_MD5 = {
    # md5 of the decompressed contents of the original archives (the ones whose .gz
    # md5s torchvision lists); identical for Debian's recompressed copies.
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}

_USER_AGENT = "rmtlens (python urllib)"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class DatasetSplits:
    """The official train and test splits of a dataset.

    train_images, test_images : (N, H, W, 3) uint8, C-contiguous.
    train_labels, test_labels : (N,) int64 class indices into ``classes``.
    classes : class names, index = label.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: tuple[str, ...]


def md5_of(path: str | os.PathLike) -> str:
    """Hex md5 digest of a file (torchvision's own ``calculate_md5``)."""
    from torchvision.datasets.utils import calculate_md5

    return calculate_md5(path)


def cifar_class(name: str) -> type:
    """torchvision's dataset class for ``'cifar10'`` or ``'cifar100'``."""
    from torchvision.datasets import CIFAR10, CIFAR100

    classes = {"cifar10": CIFAR10, "cifar100": CIFAR100}
    if name not in classes:
        raise ValueError(f"name must be one of {sorted(classes)}, got {name!r}")
    return classes[name]


def download_verified(
    url: str, destination: str | os.PathLike, md5: str, timeout: float = 60.0, placement_hint: str = ""
) -> Path:
    """Download ``url`` to ``destination`` if its md5 matches, else raise and keep nothing.

    The body is written to a temporary file beside ``destination``, its md5 is
    compared with ``md5``, and only a match is renamed to ``destination``. A
    network failure, a truncated body (fewer bytes than ``Content-Length``) or a
    checksum mismatch raises :class:`~rmtlens.inputs.datasets.DatasetError` naming the file,
    the expected and actual md5 and what to do; ``placement_hint`` is appended.
    """
    destination = Path(destination)
    where = (
        f"Without network, put the file at {destination} (md5 {md5}); get it from {url}"
        f"{' ' + placement_hint if placement_hint else ''}."
    )
    try:
        with atomic_path(destination) as tmp:
            request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
            received, expected_length = 0, None
            with urllib.request.urlopen(request, timeout=timeout) as response, open(tmp, "wb") as out:
                length = response.headers.get("Content-Length")
                expected_length = int(length) if length is not None else None
                try:
                    while block := response.read(_CHUNK):
                        out.write(block)
                        received += len(block)
                except http.client.IncompleteRead as err:
                    out.write(err.partial)
                    received += len(err.partial)
            actual = md5_of(tmp)
            truncated = expected_length is not None and received < expected_length
            if truncated or actual != md5:
                what = (
                    f"truncated download ({received} of {expected_length} bytes)"
                    if truncated
                    else "checksum mismatch"
                )
                raise DatasetError(
                    f"{what} for {destination.name} from {url}: expected md5 {md5}, got {actual}. "
                    "The partial or corrupt file was deleted. Run again to retry the download, "
                    f"or use another mirror. {where}"
                )
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        raise DatasetError(f"could not download {url}: {err}. {where}") from err
    return destination


def _require_md5(path: Path, md5: str, source_url: str) -> None:
    actual = md5_of(path)
    if actual != md5:
        raise DatasetError(
            f"checksum mismatch for {path}: expected md5 {md5}, got {actual}. The file is corrupt or a "
            f"different archive; it is not used. Delete it to download again, or replace it with the "
            f"original from {source_url}."
        )


def _extract_folder(archive: Path, root: Path, folder: str) -> None:
    """Extract ``folder`` from ``archive`` into ``root`` through a temporary directory."""
    staging = Path(tempfile.mkdtemp(prefix=f".{folder}.", suffix=".partial", dir=root))
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(staging, filter="data")
        extracted = staging / folder
        if not extracted.is_dir():
            raise DatasetError(f"archive {archive} has no folder {folder}/")
        target = root / folder
        if target.exists():
            shutil.rmtree(target)
        os.replace(extracted, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def fetch_cifar(
    name: str, root: str | os.PathLike, url: str | None = None, dataset_class: type | None = None,
    timeout: float = 60.0,
) -> Path:
    """Make ``<root>/<base_folder>`` hold the verified members of a CIFAR archive.

    Nothing happens when the extracted members already match their md5s. Else the
    archive ``<root>/<filename>`` is used if present (it must match ``tgz_md5``;
    no download is tried), downloaded from ``url`` (a mirror; default the class's
    ``url``) otherwise, and extracted. Returns the extracted folder.
    """
    cls = dataset_class or cifar_class(name)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    members_ok = all(
        (root / cls.base_folder / member).is_file() and md5_of(root / cls.base_folder / member) == md5
        for member, md5 in cls.train_list + cls.test_list + [[cls.meta["filename"], cls.meta["md5"]]]
    )
    if members_ok:
        return root / cls.base_folder
    archive = root / cls.filename
    if archive.is_file():
        _require_md5(archive, cls.tgz_md5, cls.url)
    else:
        download_verified(url or cls.url, archive, cls.tgz_md5, timeout=timeout,
                          placement_hint=f"(official: {cls.url})" if url else "")
    _extract_folder(archive, root, cls.base_folder)
    return root / cls.base_folder


def _torchvision_split(cls: type, root: Path, train: bool) -> Any:
    try:
        return cls(str(root), train=train, download=False)
    except RuntimeError as err:
        raise DatasetError(f"torchvision could not load {cls.__name__} from {root}: {err}") from err


def load_cifar(
    name: str, root: str | os.PathLike, url: str | None = None, dataset_class: type | None = None,
    timeout: float = 60.0,
) -> DatasetSplits:
    """CIFAR-10 or CIFAR-100 train and test splits, images (N, 32, 32, 3) uint8.

    Parameters
    ----------
    name : ``'cifar10'`` or ``'cifar100'`` (fine labels).
    root : directory for the archive and its extracted folder (e.g. under ``resources/``).
    url : mirror of the official archive; default torchvision's ``url``.
    dataset_class : a torchvision CIFAR class or subclass whose ``url``, ``filename``,
        ``tgz_md5``, ``base_folder``, ``train_list``, ``test_list`` and ``meta``
        describe the archive; default torchvision's class for ``name``.
    timeout : seconds without data before a download is abandoned.
    """
    cls = dataset_class or cifar_class(name)
    root = Path(root)
    fetch_cifar(name, root, url=url, dataset_class=cls, timeout=timeout)
    train, test = _torchvision_split(cls, root, True), _torchvision_split(cls, root, False)
    return DatasetSplits(
        train_images=np.ascontiguousarray(train.data, dtype=np.uint8),
        train_labels=np.asarray(train.targets, dtype=np.int64),
        test_images=np.ascontiguousarray(test.data, dtype=np.uint8),
        test_labels=np.asarray(test.targets, dtype=np.int64),
        classes=tuple(str(c) for c in train.classes),
    )


def _decompress_verified(source: Path, target: Path, md5: str, advice: str) -> None:
    """Gunzip ``source`` to ``target`` if the decompressed bytes have md5 ``md5``."""
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with atomic_path(target) as tmp:
            with gzip.open(source, "rb") as gz, open(tmp, "wb") as out:
                while block := gz.read(_CHUNK):
                    digest.update(block)
                    out.write(block)
            if digest.hexdigest() != md5:
                raise DatasetError(
                    f"checksum mismatch for the contents of {source}: expected md5 {md5} after "
                    f"decompression, got {digest.hexdigest()}. {advice}"
                )
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise DatasetError(f"cannot decompress {source}: {err}. {advice}") from err


def stage_fashion_mnist(
    root: str | os.PathLike, source_dir: str | os.PathLike | None = FASHION_MNIST_DEBIAN_DIR,
    url: str | None = None, timeout: float = 60.0,
) -> Path:
    """Place verified ``*-idx?-ubyte`` files in ``<root>/FashionMNIST/raw/`` for torchvision.

    Each of torchvision's four resources is taken, in this order, from an already
    staged decompressed file with the right md5; from ``source_dir/<name>.gz``
    (Debian's package by default); from ``<root>/FashionMNIST/raw/<name>.gz`` (an
    original archive placed by hand, checked with torchvision's md5); or downloaded
    from ``url`` (a mirror base URL ending in ``/``), default torchvision's mirrors.
    Returns the raw folder.
    """
    from torchvision.datasets import FashionMNIST

    raw = Path(root) / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    mirrors = [url] if url else list(FashionMNIST.mirrors)
    for gz_name, gz_md5 in FashionMNIST.resources:
        name = gz_name.removesuffix(".gz")
        target = raw / name
        if target.is_file() and md5_of(target) == FASHION_MNIST_RAW_MD5[name]:
            continue
        advice = (
            f"Install the original files with `apt-get install dataset-fashion-mnist` "
            f"({FASHION_MNIST_DEBIAN_DIR}/{gz_name}) or put the original {gz_name} (md5 {gz_md5}) "
            f"at {raw / gz_name}; it is published at {FashionMNIST.mirrors[0]}{gz_name}."
        )
        candidate = Path(source_dir) / gz_name if source_dir is not None else None
        if candidate is None or not candidate.is_file():
            candidate = raw / gz_name
            if candidate.is_file():
                _require_md5(candidate, gz_md5, f"{FashionMNIST.mirrors[0]}{gz_name}")
            else:
                errors = []
                for mirror in mirrors:
                    try:
                        download_verified(f"{mirror}{gz_name}", candidate, gz_md5, timeout=timeout)
                        break
                    except DatasetError as err:
                        errors.append(str(err))
                else:
                    raise DatasetError(
                        f"Fashion-MNIST file {gz_name} is not available offline and could not be "
                        f"downloaded ({' | '.join(errors)}). {advice}"
                    )
        _decompress_verified(candidate, target, FASHION_MNIST_RAW_MD5[name], advice)
    return raw


def load_fashion_mnist(
    root: str | os.PathLike, source_dir: str | os.PathLike | None = FASHION_MNIST_DEBIAN_DIR,
    url: str | None = None, timeout: float = 60.0,
) -> DatasetSplits:
    """Fashion-MNIST train and test splits as uint8 RGB (N, 28, 28, 3), grey repeated.

    The files are staged by :func:`stage_fashion_mnist` and read by torchvision's
    :class:`~torchvision.datasets.FashionMNIST`.
    """
    from torchvision.datasets import FashionMNIST

    stage_fashion_mnist(root, source_dir=source_dir, url=url, timeout=timeout)
    splits = [_torchvision_split(FashionMNIST, Path(root), train) for train in (True, False)]
    rgb = [np.repeat(s.data.numpy()[..., None], 3, axis=-1) for s in splits]
    return DatasetSplits(
        train_images=rgb[0],
        train_labels=splits[0].targets.numpy().astype(np.int64),
        test_images=rgb[1],
        test_labels=splits[1].targets.numpy().astype(np.int64),
        classes=tuple(FashionMNIST.classes),
    )


def load_torchvision(name: str, root: str | os.PathLike, url: str | None = None) -> DatasetSplits:
    """Train and test splits of ``name`` in :data:`DATASETS`.

    ``url`` is a mirror (the archive's URL for CIFAR, a base URL for
    Fashion-MNIST); Fashion-MNIST is staged from the Debian package's files when
    they are installed.
    """
    if name in ("cifar10", "cifar100"):
        return load_cifar(name, root, url=url)
    if name == "fashion_mnist":
        return load_fashion_mnist(root, url=url)
    raise ValueError(f"name must be one of {list(DATASETS)}, got {name!r}")
