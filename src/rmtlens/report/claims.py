"""Claims about scaling, power laws and estimator accuracy, each from a row of a table.

Every sentence the report makes about these subjects is a row here: a claim id, the
kernel it is about, the number behind it (``value``, with an interval where one
exists) and the sentence, written from those numbers. Captions and the README point
to this table instead of stating findings, so a finding always matches the run.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rmtlens.estimators.grids import KERNEL_KEYS

CLAIM_COLUMNS = (*KERNEL_KEYS, "claim", "value", "lo", "hi", "statement")
GCV_LABEL = "GCV"


def _num(x: float) -> str:
    """Three significant digits, as every claim prints its numbers."""
    return "nan" if not np.isfinite(x) else f"{x:.3g}"


def _rows_of(table: pd.DataFrame, keys) -> pd.DataFrame:
    mask = np.ones(len(table), dtype=bool)
    for k, v in zip(KERNEL_KEYS, keys):
        mask &= (table[k] == v).to_numpy()
    return table[mask]


def _claim(keys, name: str, value, statement: str, lo=np.nan, hi=np.nan) -> dict:
    """One row of ``claims.csv``: the kernel's keys, the claim's name, its value with an
    interval (NaN where it has none) and the sentence that states it."""
    return dict(zip(KERNEL_KEYS, keys), claim=name, value=value, lo=lo, hi=hi, statement=statement)


def power_law_claims(power_laws: pd.DataFrame) -> list[dict]:
    """``power_law_fit`` (the primary window's α and δ, their spread, validity) and
    ``out_of_span`` (rank and the target's power outside the span), per kernel."""
    out = []
    for keys, group in power_laws.groupby(KERNEL_KEYS, sort=True):
        fit = group[group["primary"].astype(bool)].iloc[0]
        verdict = "valid" if bool(fit["valid"]) else f"not valid ({fit['reason']}), so no rate is derived from it"
        out.append(_claim(
            keys, "power_law_fit", fit["delta"], lo=fit["delta_lo"], hi=fit["delta_hi"],
            statement=(f"Over k = {int(fit['k_min'])}..{int(fit['k_max'])} ({fit['window']} window), the eigenvalues "
                       f"decay as k^-α with α = {_num(fit['alpha'])} (R² {_num(fit['alpha_r2'])}, "
                       f"{_num(fit['alpha_lo'])} to {_num(fit['alpha_hi'])} as the window's ends move by a factor 2) "
                       f"and the target's tail sums as k^-(δ-1) with δ = {_num(fit['delta'])} (R² "
                       f"{_num(fit['delta_r2'])}, {_num(fit['delta_lo'])} to {_num(fit['delta_hi'])}); the fit is "
                       f"{verdict}."),
        ))
        out.append(_claim(
            keys, "out_of_span", fit["out_of_span_share"],
            statement=(f"The kernel resolves {int(fit['rank'])} of {int(fit['n_pool'])} pool directions "
                       f"({_num(100 * fit['rank_fraction'])}%); {_num(100 * fit['out_of_span_share'])}% of the "
                       f"target's power lies outside its span, a floor no ridge estimator can learn."),
        ))
    return out


def power_law_de_claims(estimators: pd.DataFrame) -> list[dict]:
    """``power_law_de``: the idealised and the rank-truncated power-law DEs' median errors
    beside the omniscient DE's, per kernel (from ``estimators.csv``)."""
    out = []
    labels = ("omniscient DE", "power-law DE (idealised)", "power-law DE (truncated)")
    for keys, group in estimators.groupby(KERNEL_KEYS, sort=True):
        med = group.set_index("estimator")["median_rel_error"]
        if not all(label in med.index for label in labels):
            continue
        omni, ideal, cut = (float(med[label]) for label in labels)
        if not (np.isfinite(ideal) and np.isfinite(cut)):
            continue
        full_rank = "rank_fraction" in group and float(group["rank_fraction"].iloc[0]) == 1.0
        if full_rank:
            effect = "the kernel resolves every pool direction, so truncation changes nothing"
        else:
            effect = f"truncation {'lowers' if cut < ideal else 'does not lower'} the error"
        out.append(_claim(
            keys, "power_law_de", cut,
            statement=(f"Median relative error against the test risk: power-law DE {_num(ideal)} idealised, "
                       f"{_num(cut)} truncated at the rank with the out-of-span mass kept, {_num(omni)} for the "
                       f"omniscient DE; {effect}."),
        ))
    return out


def rate_claims(scaling: pd.DataFrame) -> list[dict]:
    """``excess_rate_oracle`` and ``excess_rate_gcv``: the excess-risk exponent at that
    ridge beside the rate of the regime the DE puts the kernel in, per kernel (from
    ``scaling.csv``)."""
    out = []
    rows = scaling[scaling["ridge"].isin(["oracle", "gcv"])]
    for _, row in rows.sort_values([*KERNEL_KEYS, "ridge"]).iterrows():
        keys = tuple(row[k] for k in KERNEL_KEYS)
        where = "the oracle ridge" if row["ridge"] == "oracle" else "the GCV-selected ridge"
        if np.isfinite(row["excess_exponent"]):
            measured = (f"At {where}, R(n) − R_∞ (R_∞ = {_num(row['floor'])}, the out-of-span power) decays as "
                        f"n^-{_num(row['excess_exponent'])} (R² {_num(row['excess_r2'])}, "
                        f"{int(row['excess_points'])} sizes from n = {_num(row['fit_n_min'])})")
        else:
            measured = (f"At {where}, R(n) − R_∞ (R_∞ = {_num(row['floor'])}, the out-of-span power) has too few "
                        f"sizes above the floor to fit ({int(row['excess_points'])})")
        if np.isfinite(row["excess_exponent_fit"]):
            measured += (f"; with R_∞ fitted ({_num(row['r_inf_fit'])}) the exponent is "
                         f"{_num(row['excess_exponent_fit'])}")
        measured += f"; the total risk's exponent is {_num(row['observed_exponent'])}."
        shares = f"{_num(row['noise_share_lo'])} to {_num(row['noise_share_hi'])}"
        if row["regime"] == "unclassified":
            regime = f" Without a valid power-law fit the regime is not classified (floor's share of the excess {shares})."
        else:
            regime = f" The DE puts the kernel in the {row['regime']} regime (floor's share of the excess {shares})."
        if not bool(row["fit_valid"]):
            verdict = " No rate is predicted: the power-law fit is not valid."
        elif not np.isfinite(row["predicted_rate"]):
            verdict = (f" Between regimes neither rate applies (noiseless {_num(row['noiseless_rate'])}, "
                       f"noisy {_num(row['noisy_rate'])}).")
        elif not np.isfinite(row["rate_over_excess"]):
            verdict = f" That regime's rate is {_num(row['predicted_rate'])}; no measured exponent to compare."
        else:
            verdict = (f" That regime's rate is {_num(row['predicted_rate'])}, "
                       f"{_num(row['rate_over_excess'])} times the measured exponent.")
        out.append(_claim(keys, f"excess_rate_{row['ridge']}", row["excess_exponent"], measured + regime + verdict))
    return out


def gcv_regime_claims(by_regime: pd.DataFrame) -> list[dict]:
    """``gcv_worst``: the ridge and ``n/N_pool`` cell where GCV's median error is largest,
    with its interval, its sign and LOO's error there, per kernel."""
    out = []
    for keys, group in by_regime.groupby(KERNEL_KEYS, sort=True):
        gcv = group[group["estimator"] == GCV_LABEL]
        if gcv.empty:
            continue
        worst = gcv.loc[gcv["median_rel_error"].idxmax()]
        cell = group[(group["ridge_bucket"] == worst["ridge_bucket"])
                     & (group["n_over_pool_lo"] == worst["n_over_pool_lo"]) & (group["estimator"] == "LOO")]
        loo = float(cell["median_rel_error"].iloc[0]) if len(cell) else np.nan
        sign = "low" if worst["median_signed_error"] < 0 else "high"
        out.append(_claim(
            keys, "gcv_worst", worst["median_rel_error"],
            lo=worst["median_rel_error_lo"], hi=worst["median_rel_error_hi"],
            statement=(f"GCV is least accurate at {worst['ridge_bucket']} and n/N_pool in "
                       f"({_num(worst['n_over_pool_lo'])}, {_num(worst['n_over_pool_hi'])}]: median relative error "
                       f"{_num(worst['median_rel_error'])} (90% interval {_num(worst['median_rel_error_lo'])} to "
                       f"{_num(worst['median_rel_error_hi'])}, {int(worst['rows'])} rows), median signed error "
                       f"{_num(worst['median_signed_error'])} (GCV {sign}); LOO's median error there is {_num(loo)}."),
        ))
    return out


def local_law_claims(summary: pd.DataFrame) -> list[dict]:
    """``local_law_gcv``: whether the local-law deviation predicts GCV's error, per kernel."""
    out = []
    for _, row in summary.sort_values(list(KERNEL_KEYS)).iterrows():
        keys = tuple(row[k] for k in KERNEL_KEYS)
        out.append(_claim(
            keys, "local_law_gcv", row["spearman_dof_gcv"],
            statement=(f"Over {int(row['rows'])} (n, λ), the rank correlation of the local-law deviation "
                       f"|1 − tr(S)/n − λ/κ|/(λ/κ) with GCV's error is {_num(row['spearman_dof_gcv'])} (with "
                       f"|GCV − LOO|/LOO: {_num(row['spearman_dof_gap'])}); GCV's median error is "
                       f"{_num(row['gcv_error_local_law_holds'])} where the deviation is at most "
                       f"{_num(row['local_law_threshold'])} ({int(row['rows_local_law_holds'])} rows) and "
                       f"{_num(row['gcv_error_local_law_fails'])} where it is larger "
                       f"({int(row['rows_local_law_fails'])} rows)."),
        ))
    return out


def de_bias_claims(de_bias: pd.DataFrame) -> list[dict]:
    """``de_bias``: the omniscient DE's median signed error at small ridges in the largest
    ``n/N_pool`` bucket, per kernel (from ``de_bias.csv``)."""
    out = []
    for keys, group in de_bias.groupby(KERNEL_KEYS, sort=True):
        last = group.loc[group["n_over_pool_hi"].idxmax()]
        value = float(last["median_signed_error_small_ridge"])
        if not np.isfinite(value):
            continue
        direction = "under-predicts" if value < 0 else "over-predicts"
        out.append(_claim(
            keys, "de_bias", value,
            statement=(f"At n/N_pool in ({_num(last['n_over_pool_lo'])}, {_num(last['n_over_pool_hi'])}] (n = "
                       f"{last['n_values']}) and λ/s < 1e-3 the omniscient DE {direction} the test risk: median "
                       f"signed error {_num(value)}."),
        ))
    return out


def scaling_claims(power_laws, estimators, scaling, by_regime, local_law_summary, de_bias) -> pd.DataFrame:
    """All claims of the run, one row each (columns :data:`CLAIM_COLUMNS`)."""
    rows = [
        *power_law_claims(power_laws), *power_law_de_claims(estimators), *rate_claims(scaling),
        *gcv_regime_claims(by_regime), *local_law_claims(local_law_summary), *de_bias_claims(de_bias),
    ]
    return pd.DataFrame(rows, columns=list(CLAIM_COLUMNS))
