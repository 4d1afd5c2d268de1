"""Dataset downloads: generated archives in the official CIFAR formats served over HTTP,
and Fashion-MNIST from Debian's ``dataset-fashion-mnist`` through torchvision's loader."""

import gzip
import hashlib
import shutil

import numpy as np
import pytest
from cifar_fixtures import make_tiny_cifar, md5_bytes, serve_files, write

from rmtlens.inputs import (
    FASHION_MNIST_DEBIAN_DIR,
    FASHION_MNIST_RAW_MD5,
    ArraySource,
    DatasetError,
    choose_pool_and_test,
    cifar_class,
    load_cifar,
    load_fashion_mnist,
    prepare_pool,
    stage_fashion_mnist,
)


@pytest.fixture(scope="module", params=["cifar10", "cifar100"])
def tiny(request):
    return make_tiny_cifar(request.param, n_per_train_member=6 if request.param == "cifar10" else 30,
                           n_test=12, seed=3)


@pytest.fixture
def dead_url():
    """The URL of a server that has been stopped: connections are refused."""
    with serve_files({}) as (base, _):
        pass
    return base


def leftovers(root):
    """Every file below ``root`` whose name marks it as temporary."""
    return [p for p in root.rglob("*") if "partial" in p.name]


def assert_matches(splits, tiny):
    assert splits.train_images.dtype == np.uint8 and splits.train_images.flags.c_contiguous
    assert splits.train_images.shape == tiny.train_images.shape
    np.testing.assert_array_equal(splits.train_images, tiny.train_images)
    np.testing.assert_array_equal(splits.test_images, tiny.test_images)
    assert splits.train_labels.dtype == np.int64 and splits.test_labels.dtype == np.int64
    np.testing.assert_array_equal(splits.train_labels, tiny.train_labels)
    np.testing.assert_array_equal(splits.test_labels, tiny.test_labels)
    assert list(splits.classes) == tiny.classes


def test_download_gives_the_archived_arrays(tiny, tmp_path):
    path = f"/mirror/{tiny.filename}"
    with serve_files({path: tiny.archive_bytes}) as (base, server):
        splits = load_cifar(tiny.kind, tmp_path, url=base + path, dataset_class=tiny.dataset_class())
        assert server.requests == [path]
    assert_matches(splits, tiny)
    assert hashlib.md5((tmp_path / tiny.filename).read_bytes()).hexdigest() == tiny.tgz_md5
    assert leftovers(tmp_path) == []


def test_prepare_takes_pool_from_train_and_test_from_test(tiny, tmp_path):
    write(tmp_path / tiny.filename, tiny.archive_bytes)
    n_pool, n_test, seed = 20, 7, 5
    splits = load_cifar(tiny.kind, tmp_path, dataset_class=tiny.dataset_class())
    source = ArraySource(splits.train_images, splits.train_labels, splits.test_images, splits.test_labels, splits.classes)
    prepared = prepare_pool(source, n_pool, n_test, seed)
    pool, test = choose_pool_and_test(len(tiny.train_labels), len(tiny.test_labels), n_pool, n_test, seed)
    assert prepared.n_pool == n_pool and prepared.n_test == n_test
    np.testing.assert_array_equal(prepared.images[:n_pool], tiny.train_images[pool])
    np.testing.assert_array_equal(prepared.images[n_pool:], tiny.test_images[test])
    np.testing.assert_array_equal(prepared.labels, np.concatenate([tiny.train_labels[pool], tiny.test_labels[test]]))
    np.testing.assert_array_equal(prepared.source_index, np.concatenate([pool, test]))
    assert list(prepared.classes) == tiny.classes


def test_corrupt_download_is_reported_and_deleted(tiny, tmp_path):
    corrupt = bytearray(tiny.archive_bytes)
    corrupt[len(corrupt) // 2] ^= 0xFF
    path = f"/{tiny.filename}"
    with serve_files({path: bytes(corrupt)}) as (base, _):
        with pytest.raises(DatasetError) as info:
            load_cifar(tiny.kind, tmp_path, url=base + path, dataset_class=tiny.dataset_class())
    message = str(info.value)
    assert "checksum mismatch" in message and tiny.filename in message
    assert tiny.tgz_md5 in message and md5_bytes(bytes(corrupt)) in message
    assert "Run again" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_truncated_download_is_reported_and_deleted(tiny, tmp_path):
    path = f"/{tiny.filename}"
    cut = len(tiny.archive_bytes) // 3
    with serve_files({path: tiny.archive_bytes}, truncate={path: cut}) as (base, _):
        with pytest.raises(DatasetError) as info:
            load_cifar(tiny.kind, tmp_path, url=base + path, dataset_class=tiny.dataset_class())
    message = str(info.value)
    assert f"truncated download ({cut} of {len(tiny.archive_bytes)} bytes)" in message
    assert tiny.filename in message
    assert tiny.tgz_md5 in message and md5_bytes(tiny.archive_bytes[:cut]) in message
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_preplaced_archive_is_used_without_network(tiny, tmp_path, dead_url):
    write(tmp_path / tiny.filename, tiny.archive_bytes)
    splits = load_cifar(tiny.kind, tmp_path, url=dead_url + "/x.tar.gz", dataset_class=tiny.dataset_class())
    assert_matches(splits, tiny)


def test_verified_extracted_folder_needs_no_archive(tiny, tmp_path, dead_url):
    write(tmp_path / tiny.filename, tiny.archive_bytes)
    cls = tiny.dataset_class()
    load_cifar(tiny.kind, tmp_path, dataset_class=cls)
    (tmp_path / tiny.filename).unlink()
    assert_matches(load_cifar(tiny.kind, tmp_path, url=dead_url + "/x", dataset_class=cls), tiny)


def test_tampered_member_is_replaced_from_the_archive(tiny, tmp_path):
    write(tmp_path / tiny.filename, tiny.archive_bytes)
    cls = tiny.dataset_class()
    load_cifar(tiny.kind, tmp_path, dataset_class=cls)
    member = tmp_path / tiny.base_folder / cls.test_list[0][0]
    member.write_bytes(member.read_bytes()[:-10])
    assert_matches(load_cifar(tiny.kind, tmp_path, dataset_class=cls), tiny)


def test_preplaced_archive_with_wrong_checksum_is_refused(tiny, tmp_path, dead_url):
    wrong = tiny.archive_bytes[:-1] + bytes([tiny.archive_bytes[-1] ^ 1])
    write(tmp_path / tiny.filename, wrong)
    with pytest.raises(DatasetError) as info:
        load_cifar(tiny.kind, tmp_path, url=dead_url + "/x", dataset_class=tiny.dataset_class())
    message = str(info.value)
    assert str(tmp_path / tiny.filename) in message
    assert tiny.tgz_md5 in message and md5_bytes(wrong) in message
    assert "Delete it" in message
    assert not (tmp_path / tiny.base_folder).exists()


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_offline_message_names_exact_path_and_official_source(name, tmp_path, dead_url):
    from torchvision import datasets

    official = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}[name]
    assert cifar_class(name) is official
    mirror = dead_url + "/" + official.filename
    with pytest.raises(DatasetError) as info:
        load_cifar(name, tmp_path / "resources", url=mirror)
    message = str(info.value)
    assert f"put the file at {tmp_path / 'resources' / official.filename}" in message
    assert official.tgz_md5 in message and official.url in message and mirror in message
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------- Fashion-MNIST


def read_idx(path, header):
    """Independent reader of a gzipped idx file: big-endian header, then uint8 data."""
    data = gzip.decompress(path.read_bytes())
    return np.frombuffer(data, dtype=np.uint8, offset=header)


@pytest.fixture(scope="module")
def fashion_root(tmp_path_factory, debian_fashion_mnist):
    return tmp_path_factory.mktemp("fashion")


def test_fashion_mnist_through_torchvision_from_debian_files(fashion_root):
    splits = load_fashion_mnist(fashion_root)
    raw = fashion_root / "FashionMNIST" / "raw"
    for name, md5 in FASHION_MNIST_RAW_MD5.items():
        assert hashlib.md5((raw / name).read_bytes()).hexdigest() == md5
    assert splits.train_images.shape == (60000, 28, 28, 3) and splits.test_images.shape == (10000, 28, 28, 3)
    assert splits.train_images.dtype == np.uint8
    for images in (splits.train_images, splits.test_images):
        assert np.array_equal(images[..., 0], images[..., 1]) and np.array_equal(images[..., 0], images[..., 2])
    deb = FASHION_MNIST_DEBIAN_DIR
    np.testing.assert_array_equal(
        splits.test_images[..., 0].reshape(-1), read_idx(deb / "t10k-images-idx3-ubyte.gz", 16)
    )
    np.testing.assert_array_equal(splits.train_labels, read_idx(deb / "train-labels-idx1-ubyte.gz", 8))
    np.testing.assert_array_equal(splits.test_labels, read_idx(deb / "t10k-labels-idx1-ubyte.gz", 8))
    # the published dataset is balanced: 6000 train and 1000 test images per class
    assert np.all(np.bincount(splits.train_labels) == 6000) and np.all(np.bincount(splits.test_labels) == 1000)
    assert splits.classes[0] == "T-shirt/top" and len(splits.classes) == 10


def test_fashion_mnist_prepare(fashion_root):
    from rmtlens.inputs.datasets import open_source

    prepared = prepare_pool(open_source(dict(source="fashion_mnist"), download_root=fashion_root), 50, 20, seed=2)
    splits = load_fashion_mnist(fashion_root)
    pool, test = choose_pool_and_test(60000, 10000, 50, 20, 2)
    np.testing.assert_array_equal(prepared.images, np.concatenate([splits.train_images[pool], splits.test_images[test]]))
    np.testing.assert_array_equal(prepared.labels, np.concatenate([splits.train_labels[pool], splits.test_labels[test]]))


def test_fashion_mnist_download_verified_with_torchvision_list(tmp_path, monkeypatch, debian_fashion_mnist):
    """The download path: files fetched from a mirror, checked with the (gz) md5 list."""
    from torchvision.datasets import FashionMNIST

    # the Debian .gz are recompressed, so the list is pointed at their md5s to serve them
    files = {f"/fm/{gz}": (FASHION_MNIST_DEBIAN_DIR / gz).read_bytes() for gz, _ in FashionMNIST.resources}
    monkeypatch.setattr(FashionMNIST, "resources", [(gz, md5_bytes(files[f"/fm/{gz}"])) for gz, _ in FashionMNIST.resources])
    with serve_files(files) as (base, server):
        stage_fashion_mnist(tmp_path, source_dir=None, url=base + "/fm/")
        assert sorted(server.requests) == sorted(files)
    raw = tmp_path / "FashionMNIST" / "raw"
    for name, md5 in FASHION_MNIST_RAW_MD5.items():
        assert hashlib.md5((raw / name).read_bytes()).hexdigest() == md5
    assert leftovers(tmp_path) == []


def test_fashion_mnist_source_with_other_contents_is_refused(tmp_path, debian_fashion_mnist):
    source = tmp_path / "src"
    source.mkdir()
    for gz in FASHION_MNIST_DEBIAN_DIR.iterdir():
        shutil.copy(gz, source / gz.name)
    bad = gzip.decompress((source / "t10k-labels-idx1-ubyte.gz").read_bytes())
    bad = bad[:-1] + bytes([(bad[-1] + 1) % 10])
    write(source / "t10k-labels-idx1-ubyte.gz", gzip.compress(bad))
    with pytest.raises(DatasetError) as info:
        stage_fashion_mnist(tmp_path / "root", source_dir=source)
    message = str(info.value)
    assert FASHION_MNIST_RAW_MD5["t10k-labels-idx1-ubyte"] in message and hashlib.md5(bad).hexdigest() in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert not (tmp_path / "root" / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte").exists()
    assert leftovers(tmp_path) == []


def test_fashion_mnist_offline_without_files_says_where_to_put_them(tmp_path, dead_url):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError) as info:
        stage_fashion_mnist(tmp_path / "root", source_dir=empty, url=dead_url + "/")
    message = str(info.value)
    raw = tmp_path / "root" / "FashionMNIST" / "raw"
    assert "apt-get install dataset-fashion-mnist" in message and str(FASHION_MNIST_DEBIAN_DIR) in message
    assert str(raw / "train-images-idx3-ubyte.gz") in message
