"""Datasets: digits, image-folder archives, checksums, pool/test selection."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
from PIL import Image

from rmtlens.inputs import (
    DatasetError,
    PreparedDataset,
    choose_pool_and_test,
    digits_images,
    prepare_dataset,
    sha256_of,
)


def prepare_imagefolder(archive, sha256, n_pool, n_test, seed):
    return prepare_dataset(dict(source="imagefolder", sha256=sha256, n_pool=n_pool, n_test=n_test, seed=seed), archive)


def write_imagefolder(path, per_class=4, classes=("cat", "ant", "bee"), size=8, prefix="", seed=0):
    """A tiny archive in the image-folder layout; returns the pixels by member name."""
    rng = np.random.default_rng(seed)
    pixels = {}
    with tarfile.open(path, "w:gz") as tar:
        for split in ("train", "test"):
            for c in classes:
                for i in range(per_class):
                    img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                    buf = io.BytesIO()
                    Image.fromarray(img).save(buf, format="PNG")  # lossless, to compare pixels
                    name = f"{prefix}{split}/{c}/{i:04d}.png"
                    info = tarfile.TarInfo(name)
                    info.size = buf.tell()
                    buf.seek(0)
                    tar.addfile(info, buf)
                    pixels[name] = img
    return pixels


def test_digits_are_upsampled_rgb_copies_of_sklearn_digits():
    from sklearn.datasets import load_digits

    images, labels, classes = digits_images()
    ref = load_digits()
    assert images.shape == (1797, 32, 32, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(labels, ref.target)
    assert np.array_equal(images[..., 0], images[..., 2])
    # block means of the upsampled image follow the original grey levels
    blocks = images[..., 0].reshape(1797, 8, 4, 8, 4).mean(axis=(2, 4))
    corr = np.corrcoef(blocks.ravel(), ref.images.ravel())[0, 1]
    assert corr > 0.95
    assert classes == tuple(str(i) for i in range(10))


def test_pool_and_test_are_disjoint_seeded_and_sorted():
    pool, test = choose_pool_and_test(100, None, 30, 20, seed=3)
    assert len(set(pool) & set(test)) == 0 and len(pool) == 30 and len(test) == 20
    assert np.all(np.diff(pool) > 0) and np.all(np.diff(test) > 0)
    again = choose_pool_and_test(100, None, 30, 20, seed=3)
    np.testing.assert_array_equal(pool, again[0])
    other = choose_pool_and_test(100, None, 30, 20, seed=4)
    assert not np.array_equal(pool, other[0])
    with pytest.raises(DatasetError, match="exceeds the 100 images"):
        choose_pool_and_test(100, None, 90, 20, seed=0)
    with pytest.raises(DatasetError, match="n_test = 11 exceeds the 10 test images"):
        choose_pool_and_test(100, 10, 5, 11, seed=0)


def test_prepare_digits_round_trips_through_arrays():
    ds = prepare_dataset(dict(source="digits", n_pool=50, n_test=20, seed=1))
    back = PreparedDataset.from_arrays(ds.to_arrays())
    assert back.n_pool == 50 and back.n_test == 20 and back.classes == ds.classes
    np.testing.assert_array_equal(back.images, ds.images)
    images, labels, _ = digits_images()
    np.testing.assert_array_equal(ds.images, images[ds.source_index])
    np.testing.assert_array_equal(ds.labels, labels[ds.source_index])


@pytest.mark.parametrize("prefix", ["", "CIFAR-10-images/"])
def test_imagefolder_reads_the_right_pixels_and_labels(tmp_path, prefix):
    archive = tmp_path / "tiny.tar.gz"
    pixels = write_imagefolder(archive, prefix=prefix)
    ds = prepare_imagefolder(archive, sha256_of(archive), n_pool=6, n_test=4, seed=0)
    assert ds.classes == ("ant", "bee", "cat")  # sorted folder names
    train_names = sorted(n for n in pixels if "/train/" in f"/{n}")
    test_names = sorted(n for n in pixels if "/test/" in f"/{n}")
    for row in range(10):
        names = train_names if row < 6 else test_names
        name = names[ds.source_index[row]]
        np.testing.assert_array_equal(ds.images[row], pixels[name])
        assert ds.classes[ds.labels[row]] == name.split("/")[-2]


def test_imagefolder_checksum_mismatch_names_file_and_digests(tmp_path):
    archive = tmp_path / "tiny.tar.gz"
    write_imagefolder(archive)
    wrong = "0" * 64
    with pytest.raises(DatasetError) as err:
        prepare_imagefolder(archive, wrong, 2, 2, 0)
    message = str(err.value)
    assert str(archive) in message and wrong in message and sha256_of(archive) in message


def test_imagefolder_wrong_layout_is_explained(tmp_path):
    archive = tmp_path / "flat.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        data = b"not an image"
        info = tarfile.TarInfo("images/0001.jpg")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(DatasetError, match="train/<class>/"):
        prepare_imagefolder(archive, None, 1, 1, 0)
    with pytest.raises(DatasetError, match="does not exist"):
        prepare_imagefolder(tmp_path / "missing.tar.gz", None, 1, 1, 0)


def test_real_cifar10_archive_subset(cifar10_archive):
    from conftest import CIFAR10_SHA256

    ds = prepare_imagefolder(cifar10_archive, CIFAR10_SHA256, n_pool=20, n_test=10, seed=0)
    assert ds.images.shape == (30, 32, 32, 3)
    assert ds.classes == ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    assert ds.images.std() > 10


def test_source_task_is_disjoint_from_pool_and_test_and_relabels_classes():
    from rmtlens.inputs.datasets import (
        DigitsSource,
        pool_and_test_indices,
        prepare_source_task,
    )

    source = DigitsSource()
    pool, test = pool_and_test_indices(source, 300, 200, seed=4)
    task = prepare_source_task(source, 300, 200, 4, n_train=150, n_heldout=50, classes=[7, 2], task_seed=1)
    assert task.classes == ("7", "2")
    used = np.concatenate([task.train_index, task.heldout_index])
    assert len(set(used)) == 200 and not set(used) & (set(pool) | set(test))
    images, labels, _ = digits_images()
    np.testing.assert_array_equal(task.train_images, images[task.train_index])
    np.testing.assert_array_equal(np.array([7, 2])[task.train_labels], labels[task.train_index])
    np.testing.assert_array_equal(np.array([7, 2])[task.heldout_labels], labels[task.heldout_index])
    with pytest.raises(DatasetError, match="remain outside"):
        prepare_source_task(source, 300, 200, 4, n_train=1200, n_heldout=200, classes=None, task_seed=1)
    with pytest.raises(DatasetError, match="not classes of the dataset"):
        prepare_source_task(source, 300, 200, 4, n_train=10, n_heldout=10, classes=[3, 12], task_seed=1)
