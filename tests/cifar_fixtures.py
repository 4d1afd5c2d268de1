"""Tiny archives in the exact format of the official CIFAR python archives, and a server.

The official batches were pickled by Python 2 (protocol 2): their text (dict keys,
label names, file names and the raw bytes of the ``uint8`` arrays) is stored as
Python 2 ``str``, which Python 3 reads back as ``str`` with ``encoding='latin1'``
(torchvision's choice) or as ``bytes`` with ``encoding='bytes'``.
:class:`Py2Pickler` writes the same opcodes.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import io
import pickle
import struct
import tarfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class Py2Pickler(pickle._Pickler):
    """Protocol-2 pickler that writes ``str`` and ``bytes`` as Python 2 ``str`` (BINSTRING)."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj):
        data = obj.encode("latin1") if isinstance(obj, str) else bytes(obj)
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = save_py2_str
    dispatch[bytes] = save_py2_str


def py2_pickle(obj) -> bytes:
    buffer = io.BytesIO()
    Py2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def md5_bytes(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def cifar_rows(images: np.ndarray) -> np.ndarray:
    """(N, 32, 32, 3) HWC images to the official (N, 3072) rows: all R, then G, then B."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(images), 3072))


@dataclass
class TinyCifar:
    """A generated archive and everything the official dataset class would state about it."""

    kind: str  # "cifar10" or "cifar100"
    archive_bytes: bytes
    filename: str
    base_folder: str
    member_md5: dict[str, str]
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: list[str]

    @property
    def tgz_md5(self) -> str:
        return md5_bytes(self.archive_bytes)

    def dataset_class(self, url: str = "http://127.0.0.1:9/unused"):
        """A subclass of torchvision's class that describes this archive."""
        from torchvision.datasets import CIFAR10, CIFAR100

        base = CIFAR10 if self.kind == "cifar10" else CIFAR100
        md5 = self.member_md5
        attrs = dict(
            url=url,
            filename=self.filename,
            tgz_md5=self.tgz_md5,
            train_list=[[m, md5[m]] for m, _ in base.train_list],
            test_list=[[m, md5[m]] for m, _ in base.test_list],
            meta=dict(base.meta, md5=md5[base.meta["filename"]]),
        )
        return type(f"Tiny{base.__name__}", (base,), attrs)


def _tar_gz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1243476850
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def make_tiny_cifar(kind: str, n_per_train_member: int, n_test: int, seed: int) -> TinyCifar:
    """Random images and labels packed like ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz``."""
    from torchvision.datasets import CIFAR10, CIFAR100

    rng = np.random.default_rng(seed)
    base = CIFAR10 if kind == "cifar10" else CIFAR100
    n_classes = 10 if kind == "cifar10" else 100
    train_names = [m for m, _ in base.train_list]
    test_names = [m for m, _ in base.test_list]
    n_train = n_per_train_member * len(train_names)
    train_images = rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8)
    test_images = rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8)
    train_labels = rng.integers(0, n_classes, n_train).astype(np.int64)
    test_labels = rng.integers(0, n_classes, n_test).astype(np.int64)
    classes = [f"class_{k:03d}" for k in range(n_classes)]

    members: dict[str, bytes] = {}
    folder = base.base_folder
    if kind == "cifar10":
        for b, name in enumerate(train_names):
            sl = slice(b * n_per_train_member, (b + 1) * n_per_train_member)
            members[f"{folder}/{name}"] = py2_pickle({
                "batch_label": f"training batch {b + 1} of 5",
                "labels": [int(v) for v in train_labels[sl]],
                "data": cifar_rows(train_images[sl]),
                "filenames": [f"img_{b}_{i:05d}.png" for i in range(n_per_train_member)],
            })
        members[f"{folder}/test_batch"] = py2_pickle({
            "batch_label": "testing batch 1 of 1",
            "labels": [int(v) for v in test_labels],
            "data": cifar_rows(test_images),
            "filenames": [f"test_{i:05d}.png" for i in range(n_test)],
        })
        members[f"{folder}/batches.meta"] = py2_pickle(
            {"num_cases_per_batch": n_per_train_member, "label_names": classes, "num_vis": 3072}
        )
        members[f"{folder}/readme.html"] = (
            b"<meta HTTP-EQUIV='REFRESH' content='0; url=http://www.cs.toronto.edu/~kriz/cifar.html'>\n"
        )
    else:
        coarse = [f"super_{k:02d}" for k in range(20)]
        for split, images, labels in (("train", train_images, train_labels), ("test", test_images, test_labels)):
            members[f"{folder}/{split}"] = py2_pickle({
                "filenames": [f"{split}_{i:05d}.png" for i in range(len(labels))],
                "batch_label": f"{split}ing batch 1 of 1",
                "fine_labels": [int(v) for v in labels],
                "coarse_labels": [int(v) // 5 for v in labels],
                "data": cifar_rows(images),
            })
        members[f"{folder}/meta"] = py2_pickle({"fine_label_names": classes, "coarse_label_names": coarse})
    member_md5 = {name.split("/", 1)[1]: md5_bytes(data) for name, data in members.items()}
    return TinyCifar(
        kind=kind, archive_bytes=_tar_gz(members), filename=base.filename, base_folder=folder,
        member_md5=member_md5, train_images=train_images, train_labels=train_labels,
        test_images=test_images, test_labels=test_labels, classes=classes,
    )


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.files[path]``; ``server.truncate[path] = k`` sends only k bytes."""

    def do_GET(self):  # noqa: N802 (http.server's naming)
        body = self.server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.server.requests.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: self.server.truncate.get(self.path, len(body))])
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve_files(files: dict[str, bytes], truncate: dict[str, int] | None = None):
    """An HTTP server on 127.0.0.1 (ephemeral port) in a thread; yields (base_url, server)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.files, server.truncate, server.requests = files, truncate or {}, []
    thread = threading.Thread(target=server.serve_forever, kwargs=dict(poll_interval=0.05), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
