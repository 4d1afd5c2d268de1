"""Export a dataset and representations of its samples as array files, for the workflow's
``source: arrays`` (``config/digits-files.yaml``) or any other analysis.

From the command line (writes the files, prints their paths and sha256)::

    .venv/bin/python -m rmtlens.inputs.exports resources/representations/digits
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from rmtlens.inputs.archives import sha256_of
from rmtlens.io import save_npy

DIGITS_REPRESENTATIONS = ("pixels", "resnet18_init", "random_projection")


def export_digits_representations(
    folder: str | os.PathLike, image_size: int = 32, projection_dim: int = 32, seed: int = 0,
    batch_size: int = 256,
) -> dict[str, Path]:
    """Write scikit-learn's 1797 digits as labels and three representations of the same samples.

    Files (row i is digit i of ``sklearn.datasets.load_digits``, in every file):

    ``labels.npy``
        (1797,) int64 classes 0..9.
    ``pixels.npy``
        (1797, 64) uint8, the raw 8 x 8 grey levels (0..16).
    ``resnet18_init.npy``
        (1797, 512) float32, pooled penultimate features of timm's ``resnet18`` at its
        seeded random initialisation (``seed``) on the digits as ``image_size`` px RGB
        images: what the workflow's ``embed`` rule computes (``create_backbone``,
        ``embed_images``).
    ``random_projection.npy``
        (1797, projection_dim) float64, the grey levels times a seeded Gaussian matrix
        ``G`` (64 x projection_dim) with i.i.d. N(0, 1/projection_dim) entries.

    Parameters
    ----------
    folder : where the files go (created if needed); existing files are replaced,
        each atomically.
    image_size, seed, batch_size : the ResNet-18 embedding's input size, initialisation
        seed and images per forward pass (memory only).
    projection_dim : columns of the random projection.

    Returns ``{name: path}`` for ``labels`` and every representation.
    """
    from sklearn.datasets import load_digits

    from rmtlens.inputs.backbones import create_backbone
    from rmtlens.inputs.datasets import digits_images
    from rmtlens.inputs.embeddings import embed_images

    if projection_dim < 1:
        raise ValueError(f"projection_dim must be >= 1, got {projection_dim}")
    folder = Path(folder)
    bunch = load_digits()
    grey = bunch.data.astype(np.uint8)  # (1797, 64), values 0..16
    images, labels, _ = digits_images(size=image_size)
    if not np.array_equal(labels, bunch.target):
        raise RuntimeError("digits_images and load_digits disagree on the order of the digits")
    model = create_backbone("resnet18", image_size=image_size, seed=seed)
    projection = np.random.default_rng(seed).standard_normal((grey.shape[1], projection_dim)) / np.sqrt(projection_dim)
    arrays = {
        "labels": labels.astype(np.int64),
        "pixels": grey,
        "resnet18_init": embed_images(model, images, image_size, batch_size),
        "random_projection": grey.astype(np.float64) @ projection,
    }
    paths = {}
    for name, array in arrays.items():
        paths[name] = folder / f"{name}.npy"
        save_npy(paths[name], array)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the digits' labels and three representations as .npy files "
                                                 "(rmtlens.inputs.exports.export_digits_representations).")
    parser.add_argument("folder", type=Path, help="output folder, e.g. resources/representations/digits")
    parser.add_argument("--projection-dim", type=int, default=32, help="columns of the random projection")
    parser.add_argument("--seed", type=int, default=0, help="seeds the ResNet-18 initialisation and the projection")
    args = parser.parse_args(argv)
    for name, path in export_digits_representations(args.folder, projection_dim=args.projection_dim,
                                                    seed=args.seed).items():
        print(f"{name:18s} {path}  sha256:{sha256_of(path)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
