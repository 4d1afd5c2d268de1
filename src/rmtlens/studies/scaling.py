"""Scaling of risk with sample size, GCV-selected ridge, local-law diagnostic (SPEC §5, §6).

Tables are pandas DataFrames with one row per ``(n, seed, λ)`` as written by the
ridge stage: columns ``n``, ``seed``, ``lambda`` (absolute ridge), ``lambda_rel``
(``λ / mean(diag K_pool)``) and the outputs of :func:`rmtlens.estimators.ridge.ridge_path`
(``test_risk``, ``test_error``, ``train_risk``, ``gcv``, ``loo``, ``dof``).

Ridges are matched between tables with a relative tolerance (``LAMBDA_RTOL``)
rather than exact equality, since tables may have passed through CSV.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rmtlens.estimators.powerlaw import fit_power_law

GCV_SELECTION_COLUMNS = ("n", "seed", "lambda", "lambda_rel", "gcv", "resolved")
LAMBDA_RTOL = 1e-8


def _require_columns(table, columns, name: str) -> None:
    if not isinstance(table, pd.DataFrame):
        raise ValueError(f"{name} must be a pandas DataFrame, got {type(table).__name__}")
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{name} lacks the columns {missing}")
    for c in columns:
        if table[c].isna().any():
            raise ValueError(f"{name} column {c!r} contains NaN values")


def _lambda_index(reference: np.ndarray, query: np.ndarray, name: str) -> np.ndarray:
    """Index of each ``query`` ridge in the sorted unique ``reference`` ridges."""
    ref = np.unique(reference)
    q = np.asarray(query, dtype=np.float64)
    pos = np.clip(np.searchsorted(ref, q), 1, max(1, ref.size - 1))
    left = ref[np.clip(pos - 1, 0, ref.size - 1)]
    right = ref[np.clip(pos, 0, ref.size - 1)]
    idx = np.where(np.abs(q - left) <= np.abs(right - q), pos - 1, pos)
    idx = np.clip(idx, 0, ref.size - 1)
    ok = np.isclose(ref[idx], q, rtol=LAMBDA_RTOL, atol=0.0)
    if not ok.all():
        raise ValueError(f"{name}: ridges {np.unique(q[~ok])[:5].tolist()} have no match in the ridge table")
    return idx


def fit_scaling_exponent(n, risk, n_min: float | None = None, n_max: float | None = None) -> dict[str, float]:
    """Observed exponent of ``risk ∝ n^(−exponent)`` on log-log axes over ``[n_min, n_max]``.

    Parameters
    ----------
    n : (P,) positive sample sizes.
    risk : (P,) risks (e.g. mean over seeds); non-positive values are dropped.
    n_min, n_max : inclusive window on ``n``; ``None`` means unbounded.

    Returns
    -------
    dict: ``exponent`` (positive when risk decays), ``amplitude``, ``r2``,
    ``n_min``/``n_max`` actually used, ``n_points``, ``n_dropped``.
    """
    fit = fit_power_law(n, risk, n_min, n_max)
    return {
        "exponent": fit["exponent"],
        "amplitude": fit["amplitude"],
        "r2": fit["r2"],
        "n_min": fit["x_min"],
        "n_max": fit["x_max"],
        "n_points": fit["n_points"],
        "n_dropped": fit["n_dropped"],
    }


def select_lambda_by_gcv(gcv_table: pd.DataFrame) -> pd.DataFrame:
    """Ridge minimising GCV for each ``(n, seed)``, from training-data quantities only.

    Parameters
    ----------
    gcv_table : DataFrame with columns ``n``, ``seed``, ``lambda``, ``gcv`` and
        optionally ``lambda_rel`` and ``resolved`` (rows with ``resolved`` False are
        never selected, SPEC §2), and NO other column: passing test quantities
        (``test_risk``, ``test_error``, ...) is an error, so the selection cannot
        see them. Select the columns first, e.g.
        ``table[["n", "seed", "lambda", "gcv"]]``.

    Returns
    -------
    DataFrame, one row per ``(n, seed)`` sorted by both, with the selected
    ``lambda`` (and ``lambda_rel``) and its ``gcv``. Ties go to the smallest ridge.
    Read the test risk there with :func:`risk_at_selected_lambda`.
    """
    _require_columns(gcv_table, ("n", "seed", "lambda", "gcv"), "gcv_table")
    extra = [c for c in gcv_table.columns if c not in GCV_SELECTION_COLUMNS]
    if extra:
        raise ValueError(
            f"gcv_table may only hold the columns {list(GCV_SELECTION_COLUMNS)}; got also {extra}"
        )
    if "resolved" in gcv_table.columns:
        kept = gcv_table[gcv_table["resolved"].astype(bool)]
        lost = set(map(tuple, gcv_table[["n", "seed"]].drop_duplicates().to_numpy())) - set(
            map(tuple, kept[["n", "seed"]].drop_duplicates().to_numpy())
        )
        if lost:
            raise ValueError(f"no resolved ridge to select from for (n, seed) = {sorted(lost)[:3]}")
        gcv_table = kept.drop(columns="resolved")
    ordered = gcv_table.sort_values(["n", "seed", "lambda"], kind="stable")
    best = ordered.loc[ordered.groupby(["n", "seed"], sort=True)["gcv"].idxmin()]
    return best.reset_index(drop=True)


def gcv_selected_lambdas(ridge_table: pd.DataFrame) -> pd.DataFrame:
    """:func:`select_lambda_by_gcv` on the training-data columns of a ridge table."""
    return select_lambda_by_gcv(ridge_table[[c for c in GCV_SELECTION_COLUMNS if c in ridge_table.columns]])


def risk_at_selected_lambda(ridge_table: pd.DataFrame, selected: pd.DataFrame, risk: str = "test_risk") -> pd.DataFrame:
    """Read ``risk`` at the selected ridge of each ``(n, seed)``.

    Parameters
    ----------
    ridge_table : DataFrame with ``n``, ``seed``, ``lambda`` and the ``risk`` column.
    selected : DataFrame with ``n``, ``seed``, ``lambda`` (from :func:`select_lambda_by_gcv`).
    risk : the column to read (``test_risk``, ``test_error``, ...).

    Returns
    -------
    ``selected`` with the column ``risk`` added, one row per row of ``selected``.
    """
    _require_columns(ridge_table, ("n", "seed", "lambda", risk), "ridge_table")
    _require_columns(selected, ("n", "seed", "lambda"), "selected")
    lam_ref = ridge_table["lambda"].to_numpy(np.float64)
    left = ridge_table[["n", "seed", risk]].assign(_lam=_lambda_index(lam_ref, lam_ref, "ridge_table"))
    right = selected.assign(_lam=_lambda_index(lam_ref, selected["lambda"].to_numpy(np.float64), "selected"))
    merged = right.merge(left, on=["n", "seed", "_lam"], how="left", validate="one_to_one")
    if merged[risk].isna().any():
        raise ValueError("selected holds (n, seed, lambda) rows absent from ridge_table")
    return merged.drop(columns="_lam")


def _mean_over_seeds(frame: pd.DataFrame, keys: list[str], risk: str) -> pd.DataFrame:
    grouped = frame.groupby(keys, sort=True)[risk]
    return grouped.agg(risk_mean="mean", risk_std="std", n_seeds="count").reset_index()


def risk_vs_n_at_fixed_lambda(ridge_table: pd.DataFrame, lambda_rel, risk: str = "test_risk") -> pd.DataFrame:
    """Risk versus ``n`` at fixed relative ridges, mean and std over seeds.

    Parameters
    ----------
    ridge_table : DataFrame with ``n``, ``seed``, ``lambda_rel`` and the ``risk`` column.
    lambda_rel : sequence of relative ridges, each present in the table
        (matched with relative tolerance ``LAMBDA_RTOL``).
    risk : the column to average.

    Returns
    -------
    DataFrame with columns ``lambda_rel`` (as requested), ``n``, ``risk_mean``,
    ``risk_std`` (NaN with one seed) and ``n_seeds``.
    """
    _require_columns(ridge_table, ("n", "seed", "lambda_rel", risk), "ridge_table")
    wanted = np.atleast_1d(np.asarray(lambda_rel, dtype=np.float64))
    if not np.all(np.isfinite(wanted)) or np.any(wanted < 0):
        raise ValueError("lambda_rel must be finite and non-negative")
    ref = ridge_table["lambda_rel"].to_numpy(np.float64)
    row_idx = _lambda_index(ref, ref, "ridge_table")
    want_idx = _lambda_index(ref, wanted, "lambda_rel")
    frames = []
    for value, idx in zip(wanted, want_idx):
        rows = ridge_table.loc[row_idx == idx, ["n", risk]]
        frames.append(_mean_over_seeds(rows, ["n"], risk).assign(lambda_rel=value))
    out = pd.concat(frames, ignore_index=True)
    return out[["lambda_rel", "n", "risk_mean", "risk_std", "n_seeds"]]


def risk_vs_n_at_gcv_lambda(ridge_table: pd.DataFrame, risk: str = "test_risk") -> pd.DataFrame:
    """Risk versus ``n`` at the GCV-selected ridge of each ``(n, seed)``.

    The selection sees only the columns of ``GCV_SELECTION_COLUMNS``
    (:func:`select_lambda_by_gcv`); the risk is read afterwards.

    Returns
    -------
    DataFrame with columns ``n``, ``risk_mean``, ``risk_std``, ``n_seeds`` and
    ``lambda_median`` (median selected absolute ridge over seeds).
    """
    _require_columns(ridge_table, ("n", "seed", "lambda", "gcv", risk), "ridge_table")
    selected = gcv_selected_lambdas(ridge_table)
    at_selected = risk_at_selected_lambda(ridge_table, selected, risk)
    out = _mean_over_seeds(at_selected, ["n"], risk)
    out["lambda_median"] = at_selected.groupby("n", sort=True)["lambda"].median().to_numpy()
    return out


def _relative_deviation(empirical: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """``|empirical − predicted| / predicted``; 0 where both vanish, inf where only predicted does."""
    diff = np.abs(empirical - predicted)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(predicted > 0, diff / predicted, np.where(diff > 0, np.inf, 0.0))


def local_law_diagnostic(ridge_table: pd.DataFrame, predictions: pd.DataFrame) -> pd.DataFrame:
    """Empirical ``1 − tr(S)/n`` and ``R_tr/GCV`` against ``λ/κ`` and ``(λ/κ)²`` (SPEC §6).

    Parameters
    ----------
    ridge_table : DataFrame with ``n``, ``seed``, ``lambda``, ``dof``, ``train_risk``,
        ``gcv`` and ``test_risk``.
    predictions : DataFrame with ``n``, ``lambda`` and ``lambda_over_kappa`` (from
        :func:`rmtlens.estimators.theory.deterministic_equivalent`), covering every
        ``(n, lambda)`` of the ridge table.

    Returns
    -------
    DataFrame, one row per ``(n, lambda)``, empirical ratios averaged over seeds:
    ``one_minus_dof_over_n`` versus ``lambda_over_kappa`` (``dof_rel_dev``),
    ``train_over_gcv`` versus ``lambda_over_kappa_sq`` (``train_gcv_rel_dev``),
    and ``train_over_test`` versus the same (``train_test_rel_dev``), plus
    ``n_seeds``. Relative deviations are ``|emp − pred| / pred`` (0 where both
    vanish, inf where only the prediction does). Note that ``R_tr/GCV`` equals
    ``(1 − tr(S)/n)²`` by the definition of GCV (for ``λ > 0``), so the
    ``train_over_test`` column is the one that tests the theory independently.
    """
    _require_columns(ridge_table, ("n", "seed", "lambda", "dof", "train_risk", "gcv", "test_risk"), "ridge_table")
    _require_columns(predictions, ("n", "lambda", "lambda_over_kappa"), "predictions")
    n = ridge_table["n"].to_numpy(np.float64)
    if np.any(n <= 0):
        raise ValueError("ridge_table column 'n' must be positive")
    with np.errstate(divide="ignore", invalid="ignore"):
        emp = pd.DataFrame(
            {
                "n": ridge_table["n"].to_numpy(),
                "lambda": ridge_table["lambda"].to_numpy(np.float64),
                "one_minus_dof_over_n": 1.0 - ridge_table["dof"].to_numpy(np.float64) / n,
                "train_over_gcv": ridge_table["train_risk"].to_numpy(np.float64) / ridge_table["gcv"].to_numpy(np.float64),
                "train_over_test": ridge_table["train_risk"].to_numpy(np.float64)
                / ridge_table["test_risk"].to_numpy(np.float64),
            }
        )
    lam_ref = emp["lambda"].to_numpy()
    emp["_lam"] = _lambda_index(lam_ref, lam_ref, "ridge_table")
    pred = predictions[["n", "lambda_over_kappa"]].assign(
        _lam=_lambda_index(lam_ref, predictions["lambda"].to_numpy(np.float64), "predictions")
    )
    pred["n"] = pred["n"].astype(np.float64)
    if pred.duplicated(["n", "_lam"]).any():
        raise ValueError("predictions holds duplicate (n, lambda) rows")
    grouped = emp.groupby(["n", "_lam"], sort=True)
    out = grouped[["lambda", "one_minus_dof_over_n", "train_over_gcv", "train_over_test"]].mean()
    out["n_seeds"] = grouped.size()
    out = out.reset_index()
    out["n"] = out["n"].astype(np.float64)
    out = out.merge(pred, on=["n", "_lam"], how="left")
    if out["lambda_over_kappa"].isna().any():
        missing = out.loc[out["lambda_over_kappa"].isna(), ["n", "lambda"]].head(3).to_dict("records")
        raise ValueError(f"predictions lack (n, lambda) rows of the ridge table, e.g. {missing}")
    rho = out["lambda_over_kappa"].to_numpy()
    out["lambda_over_kappa_sq"] = rho**2
    out["dof_rel_dev"] = _relative_deviation(out["one_minus_dof_over_n"].to_numpy(), rho)
    out["train_gcv_rel_dev"] = _relative_deviation(out["train_over_gcv"].to_numpy(), rho**2)
    out["train_test_rel_dev"] = _relative_deviation(out["train_over_test"].to_numpy(), rho**2)
    columns = [
        "n", "lambda", "n_seeds", "one_minus_dof_over_n", "lambda_over_kappa", "dof_rel_dev",
        "train_over_gcv", "lambda_over_kappa_sq", "train_gcv_rel_dev", "train_over_test", "train_test_rel_dev",
    ]
    return out[columns]


def local_law_table(joined: pd.DataFrame) -> pd.DataFrame:
    """The SPEC §6 table: :func:`local_law_diagnostic` per kernel, for resolved rows with ``λ > 0``.

    ``joined`` holds ridge rows with their theory predictions
    (``rmtlens.report.tables.join_predictions``); its ``lambda_over_kappa`` column is the
    prediction. Returns the kernel keys followed by the diagnostic's columns.
    """
    from rmtlens.estimators.grids import KERNEL_KEYS

    parts = []
    if "resolved" in joined.columns:
        joined = joined[joined["resolved"].astype(bool)]
    for keys, group in joined[joined["lambda_rel"] > 0].groupby(KERNEL_KEYS, sort=True):
        predictions = group[["n", "lambda", "lambda_over_kappa"]].drop_duplicates(["n", "lambda"])
        parts.append(local_law_diagnostic(group, predictions).assign(**dict(zip(KERNEL_KEYS, keys))))
    table = pd.concat(parts, ignore_index=True)
    return table[[*KERNEL_KEYS, *[c for c in table.columns if c not in KERNEL_KEYS]]]


def fit_excess_exponent(n, risk, min_points: int = 4) -> dict[str, float]:
    """Fit ``risk ≈ R_∞ + a n^(−exponent)`` with the floor ``R_∞ ≥ 0`` free.

    For each candidate floor on a grid in ``[0, min(risk))`` the exponent and ``a`` come
    from a log-log line through ``risk − R_∞``; the floor kept is the one whose curve
    fits ``log risk`` best (least squares), refined on finer grids around it.

    Parameters
    ----------
    n, risk : (P,) sample sizes and positive risks (P ≥ ``min_points``).

    Returns
    -------
    dict: ``r_inf``, ``exponent``, ``amplitude``, ``r2`` (of ``log risk``), ``n_points``.
    """
    x = np.asarray(n, dtype=np.float64)
    y = np.asarray(risk, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"n and risk must be 1-d of one shape, got {x.shape} and {y.shape}")
    keep = np.isfinite(y) & (y > 0)
    x, y = x[keep], y[keep]
    if x.size < min_points:
        raise ValueError(f"fewer than {min_points} positive risks to fit a floor and an exponent")
    lx, ly = np.log(x), np.log(y)

    def misfit(floor: float):
        slope, intercept = np.polyfit(lx, np.log(y - floor), 1)
        fitted = np.log(floor + np.exp(intercept + slope * lx))
        return float(np.sum((ly - fitted) ** 2)), -float(slope), float(np.exp(intercept)), fitted

    top = float(y.min())
    lo, hi = 0.0, top
    for _ in range(6):
        floors = np.linspace(lo, hi, 41)[:-1] if hi == top else np.linspace(lo, hi, 41)
        values = [misfit(f)[0] for f in floors]
        i = int(np.argmin(values))
        step = floors[1] - floors[0]
        lo, hi = max(0.0, floors[i] - step), min(floors[i] + step, top * (1 - 1e-9))
    best = floors[i]
    _, exponent, amplitude, fitted = misfit(best)
    total = np.sum((ly - ly.mean()) ** 2)
    r2 = 1.0 - np.sum((ly - fitted) ** 2) / total if total > 0 else 1.0
    return {"r_inf": float(best), "exponent": exponent, "amplitude": amplitude, "r2": float(r2),
            "n_points": int(x.size)}


def _fit_or_nan(fit, *args) -> dict[str, float]:
    try:
        return fit(*args)
    except ValueError:  # too few usable points in the window
        return {"exponent": np.nan, "r2": np.nan, "n_min": np.nan, "n_max": np.nan, "n_points": 0,
                "r_inf": np.nan}


def oracle_lambdas(ridge_table: pd.DataFrame) -> pd.DataFrame:
    """The ridge of lowest test risk for each ``(n, seed)`` among resolved rows: the
    oracle, which sees the test data (the best any selector could do on the grid).
    Returns one row per ``(n, seed)`` with ``n``, ``seed``, ``lambda``; ties go to the
    smallest ridge."""
    _require_columns(ridge_table, ("n", "seed", "lambda", "test_risk"), "ridge_table")
    rows = ridge_table
    if "resolved" in rows.columns:
        rows = rows[rows["resolved"].astype(bool)]
    ordered = rows.sort_values(["n", "seed", "lambda"], kind="stable")
    best = ordered.loc[ordered.groupby(["n", "seed"], sort=True)["test_risk"].idxmin(), ["n", "seed", "lambda"]]
    return best.reset_index(drop=True)


def de_regime(predictions: pd.DataFrame, n_lo: float, n_hi: float, rho: float) -> dict:
    """Which regime the omniscient DE puts a kernel in over ``n_lo..n_hi`` (SPEC §5).

    At the DE-optimal ridge of each ``n`` (the grid ridge minimising the DE risk), the
    excess risk over the floor splits into bias and the variance the floor (label noise,
    out-of-span mass) induces; ``noise_share`` is the latter's fraction. Without a floor
    it is 0; deep in the noisy regime of a power law with ``ρ = min(δ − 1, 2α)`` it tends
    to ``ρ/(1 + ρ)`` (at the optimum the two terms' slopes in ``κ`` balance, ``ρ`` for the
    bias against 1 for the variance). The regime is ``noisy`` when the share is at least
    half that limit at both ends of the range, ``noiseless`` when below it at both, and
    ``crossover`` otherwise; ``unclassified`` without a valid ``ρ``.

    Parameters
    ----------
    predictions : one kernel's DE grid (``n``, ``lambda``, ``omniscient_test_risk``,
        ``omniscient_excess_bias``, ``omniscient_excess_noise``).
    n_lo, n_hi : the range of sample sizes (the grid's nearest ``n`` are used).
    rho : ``min(δ − 1, 2α)`` of a valid power-law fit, or NaN.

    Returns
    -------
    dict: ``noise_share_lo``, ``noise_share_hi``, ``regime``.
    """
    _require_columns(predictions, ("n", "lambda", "omniscient_test_risk", "omniscient_excess_bias",
                                   "omniscient_excess_noise"), "predictions")
    best = predictions.loc[predictions.groupby("n", sort=True)["omniscient_test_risk"].idxmin()]
    excess = best["omniscient_excess_bias"] + best["omniscient_excess_noise"]
    with np.errstate(divide="ignore", invalid="ignore"):
        shares = pd.Series(np.where(excess > 0, best["omniscient_excess_noise"] / excess, 0.0),
                           index=best["n"].to_numpy(np.float64))
    at = lambda n: float(shares.iloc[int(np.argmin(np.abs(np.log(shares.index / n))))])  # noqa: E731
    lo, hi = at(n_lo), at(n_hi)
    if not (np.isfinite(rho) and rho > 0):
        return {"noise_share_lo": lo, "noise_share_hi": hi, "regime": "unclassified"}
    threshold = 0.5 * rho / (1.0 + rho)
    regime = "noiseless" if max(lo, hi) < threshold else "noisy" if min(lo, hi) >= threshold else "crossover"
    return {"noise_share_lo": lo, "noise_share_hi": hi, "regime": regime}


def scaling_rows(
    kernel_rows: pd.DataFrame, lambdas_rel, n_min: float | None, n_max: float | None, floor: float = 0.0
) -> list[dict]:
    """Observed exponents of risk versus n for one kernel (SPEC §5).

    Parameters
    ----------
    kernel_rows : ridge rows of one kernel joined with their theory predictions
        (columns of the ridge table plus ``omniscient_test_risk``).
    lambdas_rel : fixed relative ridges to report (matched to the grid), besides the
        oracle and GCV-selected ridges.
    n_min, n_max : fit window on n.
    floor : ``R_∞``, the DE's floor (out-of-span target power), subtracted for the
        excess-risk exponents.

    Returns
    -------
    One dict per ridge setting (``ridge`` = ``'oracle'``, ``'gcv'`` or the relative
    ridge; ``selection`` says which kind): ``observed_exponent`` / ``observed_r2`` of the
    seed-mean test risk versus n, ``omniscient_exponent`` of the DE curve at the same
    ridges, the window used, and, at the oracle and GCV ridges only,
    ``excess_exponent`` / ``excess_r2`` of ``R(n) − floor`` (``excess_points``: the
    points above the floor), ``de_excess_exponent`` (the same for the DE curve), and
    ``r_inf_fit`` / ``excess_exponent_fit`` from :func:`fit_excess_exponent`. Fixed ridges
    get NaN there: with λ fixed the risk saturates, and no rate applies.
    """
    selected = {"oracle": oracle_lambdas(kernel_rows), "gcv": gcv_selected_lambdas(kernel_rows)}
    settings = []
    for ridge, chosen in selected.items():
        measured = risk_at_selected_lambda(kernel_rows, chosen, "test_risk").groupby("n", sort=True)["test_risk"].mean()
        theory = risk_at_selected_lambda(kernel_rows, chosen, "omniscient_test_risk")
        theory = theory.groupby("n", sort=True)["omniscient_test_risk"].mean()
        settings.append((ridge, "oracle (test data)" if ridge == "oracle" else "GCV", measured, theory))
    for lam in lambdas_rel:
        measured = risk_vs_n_at_fixed_lambda(kernel_rows, [lam], "test_risk").set_index("n")["risk_mean"]
        theory = risk_vs_n_at_fixed_lambda(kernel_rows, [lam], "omniscient_test_risk").set_index("n")["risk_mean"]
        settings.append((f"{lam:g}", "fixed (saturating)", measured, theory))
    rows = []
    for ridge, selection, measured, theory in settings:
        n_obs, r_obs = measured.index.to_numpy(np.float64), measured.to_numpy()
        n_de, r_de = theory.index.to_numpy(np.float64), theory.to_numpy()
        obs = _fit_or_nan(fit_scaling_exponent, n_obs, r_obs, n_min, n_max)
        de = _fit_or_nan(fit_scaling_exponent, n_de, r_de, n_min, n_max)
        row = dict(ridge=ridge, selection=selection, observed_exponent=obs["exponent"], observed_r2=obs["r2"],
                   omniscient_exponent=de["exponent"], fit_n_min=obs["n_min"], fit_n_max=obs["n_max"],
                   fit_points=obs["n_points"])
        nan = np.nan
        row.update(floor=nan, excess_exponent=nan, excess_r2=nan, excess_points=0, de_excess_exponent=nan,
                   r_inf_fit=nan, excess_exponent_fit=nan, excess_fit_r2=nan)
        if selection != "fixed (saturating)":
            inside = _in_window(n_obs, n_min, n_max)
            above = inside & (r_obs > floor)
            excess = _fit_or_nan(fit_scaling_exponent, n_obs[above], r_obs[above] - floor)
            de_inside = _in_window(n_de, n_min, n_max) & (r_de > floor)
            de_excess = _fit_or_nan(fit_scaling_exponent, n_de[de_inside], r_de[de_inside] - floor)
            free = _fit_or_nan(fit_excess_exponent, n_obs[inside], r_obs[inside])
            row.update(floor=floor, excess_exponent=excess["exponent"], excess_r2=excess["r2"],
                       excess_points=int(above.sum()), de_excess_exponent=de_excess["exponent"],
                       r_inf_fit=free["r_inf"], excess_exponent_fit=free["exponent"], excess_fit_r2=free["r2"])
        rows.append(row)
    return rows


def _in_window(n: np.ndarray, n_min, n_max) -> np.ndarray:
    inside = np.ones(n.size, dtype=bool)
    if n_min is not None:
        inside &= n >= n_min
    if n_max is not None:
        inside &= n <= n_max
    return inside


RATE_COLUMNS = ("noiseless_rate", "noisy_rate", "regime", "predicted_rate", "rate_over_excess")


def scaling_table(
    joined: pd.DataFrame, fits: pd.DataFrame, predictions: pd.DataFrame, lambdas_rel, n_min, n_max
) -> pd.DataFrame:
    """The SPEC §5 table: per kernel and ridge setting, observed exponents and the rates.

    Parameters
    ----------
    joined : ridge rows with theory predictions (``rmtlens.report.tables.join_predictions``).
    fits : power-law fits per kernel and window (the ``theory`` rule's ``powerlaw.csv``:
        kernel keys, ``primary``, ``alpha``, ``delta``, ``valid``, ``noiseless_rate``,
        ``noisy_rate``, ``null_mass``); the primary window's row is used.
    predictions : the DE grids of the kernels (kernel keys plus the columns
        :func:`de_regime` reads).
    lambdas_rel : fixed relative ridges to report (each mapped to the nearest grid value).
    n_min, n_max : fit window on n (None: unbounded).

    Returns
    -------
    One row per kernel and ridge setting: the kernel keys, the primary fit's ``alpha``,
    ``delta`` and ``fit_valid``, the columns of :func:`scaling_rows`, the DE's regime
    (:func:`de_regime`, ``noise_share_lo/hi``) and, at the oracle and GCV ridges of a
    valid fit, ``noiseless_rate``, ``noisy_rate``, ``predicted_rate`` (the rate of the
    regime; NaN at a crossover, where neither applies) and ``rate_over_excess``
    (``predicted_rate / excess_exponent``).
    """
    from rmtlens.estimators.grids import KERNEL_KEYS, nearest_on_grid

    primary = fits[fits["primary"].astype(bool)].set_index(KERNEL_KEYS)
    rows = []
    for keys, group in joined.groupby(KERNEL_KEYS, sort=True):
        fit = primary.loc[keys]
        mask = np.ones(len(predictions), dtype=bool)
        for k, v in zip(KERNEL_KEYS, keys):
            mask &= (predictions[k] == v).to_numpy()
        lambdas = nearest_on_grid(group["lambda_rel"].unique(), lambdas_rel)
        kernel_rows = scaling_rows(group, lambdas, n_min, n_max, float(fit["null_mass"]))
        used = [r for r in kernel_rows if r["ridge"] == "gcv"][0]
        n_lo, n_hi = used["fit_n_min"], used["fit_n_max"]
        rho = float(fit["noiseless_rate"]) if bool(fit["valid"]) else np.nan
        regime = de_regime(predictions[mask], n_lo, n_hi, rho) if np.isfinite(n_lo) else {
            "noise_share_lo": np.nan, "noise_share_hi": np.nan, "regime": "unclassified"}
        for row in kernel_rows:
            rates = dict.fromkeys(RATE_COLUMNS, np.nan)
            if row["selection"] != "fixed (saturating)" and bool(fit["valid"]):
                rate = {"noiseless": fit["noiseless_rate"], "noisy": fit["noisy_rate"]}.get(regime["regime"], np.nan)
                rates.update(noiseless_rate=fit["noiseless_rate"], noisy_rate=fit["noisy_rate"], predicted_rate=rate,
                             rate_over_excess=rate / row["excess_exponent"] if row["excess_exponent"] else np.nan)
            rates["regime"] = regime["regime"] if row["selection"] != "fixed (saturating)" else "saturating"
            rows.append({**dict(zip(KERNEL_KEYS, keys)), "alpha": fit["alpha"], "delta": fit["delta"],
                         "fit_valid": bool(fit["valid"]), **row, "noise_share_lo": regime["noise_share_lo"],
                         "noise_share_hi": regime["noise_share_hi"], **rates})
    return pd.DataFrame(rows)
