"""Job-level driver of the label-noise study: one kernel, every (n, seed) of the ridge stage.

Goes through :func:`rmtlens.workflow.jobs.load_ridge_problem` (the ridge path's own
loader) for every subsample, so whatever that loader does (dense kernels today,
low-rank eigen-pairs where available) the noise study inherits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from rmtlens.estimators.accuracy import DEFAULT_FLOOR_TOLERANCE, DEFAULT_SAFETY
from rmtlens.inputs.datasets import PreparedDataset
from rmtlens.inputs.targets import target_variance
from rmtlens.io import load_npz
from rmtlens.studies.noise import join_noise_predictions, noise_levels, noise_predictions, noise_rows
from rmtlens.workflow.jobs import load_feature_ridge_problem, load_ridge_problem


def spectrum_rcond(spectrum, rcond: float | None) -> float:
    """The relative cutoff of a pool spectrum: ``rcond`` if given, else its stored accuracy
    floor over its largest eigenvalue (SPEC §2), as the theory rule uses."""
    if rcond is not None:
        return float(rcond)
    top = float(np.max(spectrum["eigvals"], initial=0.0))
    return float(spectrum["floor"]) / top if top > 0 else 0.0


def noise_study_job(
    dataset_path, kernel_path, spectrum_path, eigh_paths: Sequence, subsamples: Sequence[tuple[int, int]],
    targets: Mapping, noise: Mapping, lambdas_rel, rcond: float, meta: Mapping, progress=None,
    embeddings_path=None, accuracy_path=None, safety: float = DEFAULT_SAFETY,
    floor_tolerance: float | None = DEFAULT_FLOOR_TOLERANCE,
) -> pd.DataFrame:
    """All noise-study rows of one kernel, with their deterministic equivalents joined.

    Parameters
    ----------
    dataset_path, kernel_path, spectrum_path : the prepared dataset, the kernel file
        and its ``pool_spectrum`` output. A feature kernel on the low-rank path has no
        kernel file: ``kernel_path`` is then ``None`` and ``embeddings_path`` names the
        embeddings (:func:`rmtlens.workflow.jobs.load_feature_ridge_problem`).
    eigh_paths : ``eigh`` outputs, one per entry of ``subsamples`` ((n, seed) pairs).
    targets : ``config["targets"]`` (``kind``, ``positive_classes``, ``noise``).
    noise : ``targets.noise`` (``gaussian``, ``flip``, ``seed``).
    lambdas_rel : the relative ridge grid.
    rcond, safety : the eigenvalue floor's override and safety factor (SPEC §2).
    floor_tolerance : the largest relative change at half and twice the floor that a
        resolved row may show (SPEC §2), as in the ridge path.
    meta : kernel keys (dataset, backbone, weights, kernel) put on every row.
    accuracy_path : the kernel's ``.accuracy.json``: its relative error sets the floor,
        so the noise study keeps and flags exactly the ridge path's directions and rows.
    progress : optional callable, called once per finished subsample (e.g. a ``Progress``).
    """
    data = PreparedDataset.from_arrays(load_npz(dataset_path))
    n_pool, n_classes = data.n_pool, len(data.classes)
    clean = {"kind": targets["kind"], "positive_classes": targets["positive_classes"]}
    variance = target_variance(data.targets(clean["kind"], clean["positive_classes"])[:n_pool])
    levels = noise_levels(noise)
    spectrum = load_npz(spectrum_path)
    scale = float(spectrum["scale"])  # tr(K_pool)/N_pool: the rows' and the predictions' one scale
    if data.regression:  # real-valued targets: Gaussian noise only (noise_rows refuses flips)
        pool_labels = test_labels = counts = None
    else:
        pool_labels, test_labels = data.labels[:n_pool], data.labels[n_pool:]
        counts = np.bincount(pool_labels, minlength=n_classes)
    frames = []
    if len(eigh_paths) != len(subsamples):
        raise ValueError(f"{len(eigh_paths)} eigh files for {len(subsamples)} subsamples")
    for (n, seed), path in zip(subsamples, eigh_paths):
        if kernel_path is None:
            problem = load_feature_ridge_problem(dataset_path, path, embeddings_path, clean, accuracy_path)
        else:
            problem = load_ridge_problem(dataset_path, path, kernel_path, clean, accuracy_path)
        if not np.isclose(problem.scale, scale, rtol=1e-12, atol=0.0):
            raise ValueError(f"{spectrum_path}: stored kernel scale {scale!r} differs from the kernel's "
                             f"tr(K_pool)/N_pool = {problem.scale!r}: spectrum and kernel do not match")
        rows = noise_rows(
            problem, None if pool_labels is None else pool_labels[problem.index], test_labels, n_classes, clean,
            levels, variance, lambdas_rel, int(noise.get("seed", 0)), int(seed), rcond, safety, floor_tolerance,
        )
        rows.insert(0, "seed", int(seed))
        rows.insert(0, "n", int(n))
        frames.append(rows)
        if progress is not None:
            progress()
    table = pd.concat(frames, ignore_index=True)
    sizes = sorted({int(n) for n, _ in subsamples})
    predictions = noise_predictions(
        spectrum["eigvals"], spectrum["proj_onehot"], n_classes, clean, counts, levels, variance,
        sizes, lambdas_rel, spectrum_rcond(spectrum, rcond), scale=scale,
    )
    table = join_noise_predictions(table, predictions)
    for i, (key, value) in enumerate(meta.items()):
        table.insert(i, key, value)
    table["target_variance"] = variance
    return table
