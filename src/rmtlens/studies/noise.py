"""Label-noise study: ridge paths with noisy training targets, GCV/LOO/DE accuracy per
noise level, and where sample-wise double descent appears (SPEC §3 "Label noise").

One call per kernel. The eigendecompositions, test kernels and clean targets come
from the ridge stage's loaders (``rmtlens.workflow.load_ridge_problem``), so the
noise study sees exactly the subsamples the ridge path sees. Test targets are never
perturbed: the excess risk is measured against the clean test targets and the noisy
risk is the exact expectation over test-label noise (gaussian: excess + σ²; flip:
risk against ``E[target | class]`` plus the conditional noise variance).
"""

from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from rmtlens.estimators.accuracy import DEFAULT_FLOOR_TOLERANCE, DEFAULT_SAFETY, apply_floor, flag_resolved
from rmtlens.estimators.grids import KERNEL_KEYS, check_scale
from rmtlens.estimators.noise import flip_target_map, label_noise_predictions
from rmtlens.estimators.ridge import check_ridge_inputs, null_space, ridge_path_in_eigenbasis
from rmtlens.inputs.targets import flip_labels, gaussian_target_noise, target_map

NOISE_KINDS = ("none", "gaussian", "flip")


def noise_levels(spec: Mapping) -> list[tuple[str, float]]:
    """``[("none", 0.0), ("gaussian", v), ..., ("flip", f), ...]`` from ``targets.noise``.

    Zero levels collapse into the single clean level ``("none", 0.0)``.
    """
    levels = [("none", 0.0)]
    levels += [("gaussian", float(v)) for v in spec.get("gaussian", []) if float(v) > 0]
    levels += [("flip", float(f)) for f in spec.get("flip", []) if float(f) > 0]
    for kind, v in levels:
        if v < 0 or (kind == "flip" and v > 1):
            raise ValueError(f"targets.noise.{kind} level {v} is out of range")
    return levels


def noise_rows(
    problem, train_labels: np.ndarray, test_labels: np.ndarray, n_classes: int, targets: Mapping,
    levels: Iterable[tuple[str, float]], variance: float, lambdas_rel: np.ndarray, noise_seed: int,
    seed: int, rcond: float | None = None, safety: float = DEFAULT_SAFETY,
    floor_tolerance: float | None = DEFAULT_FLOOR_TOLERANCE,
) -> pd.DataFrame:
    """Measured risks and training-data estimators of one subsample at every noise level.

    Parameters
    ----------
    problem : a :class:`rmtlens.workflow.jobs.RidgeProblem` (eigen-pairs, clean targets,
        test kernel, kernel scale).
    train_labels, test_labels : (n,), (m,) integer classes of the training and test points
        (used by label flipping only; None for real-valued targets).
    n_classes : C (real-valued targets: their number of columns).
    targets : ``{"kind", "positive_classes"}`` (the clean target construction). With kind
        ``regression`` there are no classes: flip levels are refused and ``test_error`` is NaN.
    levels : ``(kind, level)`` pairs from :func:`noise_levels`.
    variance : total variance of the clean pool targets; gaussian σ² = level · variance.
    lambdas_rel : (L,) relative ridges (absolute = ``λ_rel · problem.scale``).
    noise_seed, seed : the noise draw is seeded by ``(noise_seed, n, seed, level index)``.
    rcond, safety : the eigenvalue floor, as in the ridge path (SPEC §2): the problem's
        accuracy floor ``safety · (ε + n·u) · λ_max``, or ``rcond · λ_max`` when given.
    floor_tolerance : as in the ridge path: a resolved row's excess risk, GCV and LOO change
        by less than this (relative) at half and twice the floor; None: the floor rule alone.

    Returns
    -------
    DataFrame, one row per level and ridge: ``noise``, ``level``, ``noise_var``,
    ``lambda_rel``, ``lambda``, ``excess_risk``, ``noisy_risk``, ``test_error``
    (against clean test labels), ``train_risk``, ``gcv``, ``loo``, ``dof``, ``flipped``,
    and the ridge path's flags ``resolved_floor`` (the row is above the kernel's accuracy
    floor, the same at every level), ``floor_change`` and ``resolved`` (both, per level:
    the noisy targets decide how much the directions at the floor matter). The clean
    level's rows are the ridge path's.
    """
    lam_rel = np.asarray(lambdas_rel, dtype=np.float64)
    if problem.low_rank:  # thin range basis (n, r) and K* U from the embeddings (SPEC §2.1)
        d = np.asarray(problem.eigvals, dtype=np.float64)
        U = np.asarray(problem.eigvecs, dtype=np.float64)
        Y, Ys = np.atleast_2d(problem.y_train.T).T, np.atleast_2d(problem.y_test.T).T
        A, lam = np.asarray(problem.test_basis, dtype=np.float64), lam_rel * problem.scale
    else:
        d, U, Y, Ks, Ys, lam = check_ridge_inputs(
            problem.eigvals, problem.eigvecs, problem.y_train, problem.k_test, problem.y_test, lam_rel * problem.scale
        )
        A = Ks @ U
    # the ridge path's own cutoff: the kernel's accuracy floor (SPEC §2), or rcond if given
    floor = problem.floor(safety, rcond)

    def path_for(Y_fit, Y_test, loo=True, cutoff=floor, lams=lam):
        Yt = U.T @ Y_fit
        null = null_space(U, Y_fit, Yt) if problem.low_rank else None
        # floor=: the cutoff that made d decides which training points alone span a
        # direction in the ridgeless LOO, exactly as in the ridge path
        return ridge_path_in_eigenbasis(apply_floor(d, cutoff), U, Yt, A, Y_test, lams, loo=loo, null=null,
                                        floor=cutoff)

    n = U.shape[0]
    regression = targets["kind"] == "regression"
    if regression and any(kind == "flip" for kind, _ in levels):
        raise ValueError("label flipping replaces class labels; real-valued (regression) targets have none: "
                         "leave targets.noise.flip empty")
    T = target_map(n_classes, targets["kind"], targets["positive_classes"])
    frames = []
    for index, (kind, level) in enumerate(levels):
        rng_seed = [int(noise_seed), int(n), int(seed), int(index)]
        flipped = 0
        if kind == "gaussian":
            sigma2 = float(level) * float(variance)
            Y_noisy = Y + gaussian_target_noise(Y.shape, sigma2, rng_seed)
        elif kind == "flip":
            noisy_labels, mask = flip_labels(train_labels, n_classes, level, rng_seed)
            Y_noisy = T[noisy_labels]
            flipped = int(mask.sum())
        elif kind == "none":
            Y_noisy = Y
        else:
            raise ValueError(f"unknown noise kind {kind!r}")
        path = flag_resolved(path_for(Y_noisy, Ys), d, len(problem.index), lam, floor, safety, floor_tolerance,
                             lambda cutoff, lams: path_for(Y_noisy, Ys, cutoff=cutoff, lams=lams))
        frame = pd.DataFrame(path).rename(columns={"test_risk": "excess_risk"})
        if kind == "flip":
            mean_map, per_class = flip_target_map(T, level)
            # E over test-label flips of ||ŷ − T_noisy||² = ||ŷ − g_c||² + σ²_c
            shifted = path_for(Y_noisy, mean_map[test_labels], loo=False)
            frame["noisy_risk"] = shifted["test_risk"] + float(per_class[test_labels].mean())
            frame["noise_var"] = float(per_class[train_labels].mean())
        else:
            sigma2 = float(level) * float(variance) if kind == "gaussian" else 0.0
            frame["noisy_risk"] = frame["excess_risk"] + sigma2
            frame["noise_var"] = sigma2
        frame.insert(0, "noise", kind)
        frame.insert(1, "level", float(level))
        frame.insert(2, "lambda_rel", lam_rel)
        frame["flipped"] = flipped
        if regression:  # argmax/sign agreement of real values is no error rate
            frame["test_error"] = np.nan
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def noise_predictions(
    eigvals, proj, n_classes: int, targets: Mapping, class_counts, levels, variance: float,
    sample_sizes, lambdas_rel, rcond: float = 1e-10, *, scale: float,
) -> pd.DataFrame:
    """Deterministic equivalents (excess and noisy risk) of every level on the (n, λ) grid.

    ``eigvals``, ``proj`` are the pool spectrum and ``Vᵀ E`` (one-hot projections);
    the absolute ridge is ``λ_rel · scale`` with ``scale`` the stored kernel scale
    ``tr(K_pool)/N_pool`` (pool.npz's ``scale``), the one the ridge path and the rows use.
    """
    T = target_map(n_classes, targets["kind"], targets["positive_classes"])
    D = np.asarray(eigvals, dtype=np.float64)
    scale = check_scale(scale)
    n = np.asarray(sample_sizes, dtype=np.float64)
    lam_rel = np.asarray(lambdas_rel, dtype=np.float64)
    nn, ll = np.meshgrid(n, lam_rel, indexing="ij")
    frames = []
    for kind, level in levels:
        de = label_noise_predictions(
            D, proj, T, class_counts, "flip" if kind == "flip" else "gaussian",
            level if kind != "none" else 0.0, variance, nn, ll * scale, rcond,
        )
        frames.append(pd.DataFrame({
            "noise": kind, "level": float(level), "n": nn.ravel().astype(np.int64), "lambda_rel": ll.ravel(),
            "kappa": de["kappa"].ravel(), "gamma": de["gamma"].ravel(),
            "de_excess_risk": de["excess_risk"].ravel(), "de_noisy_risk": de["noisy_risk"].ravel(),
            "de_noise_var": de["noise_var"].ravel(),
        }))
    return pd.concat(frames, ignore_index=True)


def join_noise_predictions(rows: pd.DataFrame, predictions: pd.DataFrame) -> pd.DataFrame:
    """Attach each row's deterministic equivalent (matched on noise, level, n, λ_rel)."""
    keys = ["noise", "level", "n", "lambda_rel"]
    joined = rows.merge(predictions, on=keys, how="left", validate="many_to_one")
    if joined["de_excess_risk"].isna().any():
        first = joined.loc[joined["de_excess_risk"].isna(), keys].iloc[0].to_dict()
        raise ValueError(f"no deterministic equivalent for noise row {first}")
    return joined


NOISE_ESTIMATORS = {
    # column: (label, measured column it estimates)
    "gcv": ("GCV", "noisy_risk"),
    "loo": ("LOO", "noisy_risk"),
    "de_noisy_risk": ("DE (noisy risk)", "noisy_risk"),
    "de_excess_risk": ("DE (excess risk)", "excess_risk"),
}


def _usable(table: pd.DataFrame) -> pd.DataFrame:
    """Rows whose numbers are trusted: ``resolved`` True where that column exists."""
    if "resolved" in table.columns:
        return table[table["resolved"].astype(bool)]
    return table


def noise_accuracy(table: pd.DataFrame, n_min: int) -> pd.DataFrame:
    """Median and 90th-percentile relative error of GCV, LOO and the DE per kernel and
    noise level (rows with n ≥ n_min and λ > 0; ``resolved`` rows only where marked)."""
    rows = _usable(table)
    rows = rows[(rows["n"] >= n_min) & (rows["lambda_rel"] > 0)]
    if rows.empty:
        raise ValueError(f"no noise-study rows with n >= {n_min} and λ > 0")
    out = []
    for keys, group in rows.groupby([*KERNEL_KEYS, "noise", "level"], sort=True):
        for column, (label, target) in NOISE_ESTIMATORS.items():
            err = np.abs(group[column] - group[target]) / group[target]
            out.append(dict(
                zip([*KERNEL_KEYS, "noise", "level"], keys), noise_var=float(group["noise_var"].mean()),
                estimator=label, against=target, median_rel_error=float(np.median(err)),
                p90_rel_error=float(np.quantile(err, 0.9)), rows=int(err.size),
            ))
    return pd.DataFrame(out)


def sample_wise_peaks(table: pd.DataFrame, rise: float = 0.05) -> pd.DataFrame:
    """Where seed-mean excess risk rises with n at the smallest ridges (double descent).

    Per kernel, noise level and each of the two smallest ridges (λ = 0 if present and
    the smallest λ > 0): the measured and DE excess risk versus n (seed mean), and
    whether the curve rises by more than ``rise`` between consecutive n. ``peak_n`` is
    the n of the largest value reached after such a rise (NaN without one), and
    ``peak_ratio`` that value over the minimum at smaller n.
    """
    rows = _usable(table)
    out = []
    for keys, group in rows.groupby([*KERNEL_KEYS, "noise", "level"], sort=True):
        lams = sorted(group["lambda_rel"].unique())
        chosen = ([0.0] if 0.0 in lams else []) + [v for v in lams if v > 0][:1]
        for lam in chosen:
            curve = group[group["lambda_rel"] == lam].groupby("n")[["excess_risk", "de_excess_risk"]].mean()
            record = dict(zip([*KERNEL_KEYS, "noise", "level"], keys), lambda_rel=float(lam))
            for column, name in (("excess_risk", "measured"), ("de_excess_risk", "de")):
                values = curve[column].to_numpy()
                ns = curve.index.to_numpy()
                rises = np.flatnonzero(values[1:] > values[:-1] * (1 + rise))
                if rises.size:
                    start = rises[0] + 1
                    peak = start + int(np.argmax(np.where(np.isnan(values[start:]), -np.inf, values[start:])))
                    record[f"{name}_peak_n"] = int(ns[peak])
                    record[f"{name}_peak_ratio"] = float(values[peak] / np.min(values[:start]))
                else:
                    record[f"{name}_peak_n"] = np.nan
                    record[f"{name}_peak_ratio"] = np.nan
                record[f"{name}_rises"] = bool(rises.size)
            out.append(record)
    return pd.DataFrame(out)
