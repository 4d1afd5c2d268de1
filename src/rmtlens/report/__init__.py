"""Layer 5, report: summary tables and figures of the ridge grid and the studies.

Public names are imported lazily from their modules, so importing the package
does not import torch unless a name that needs it is used.
"""

from __future__ import annotations

from rmtlens._lazy import lazy_exports

_EXPORTS = {
    "DE_FRACTION_EDGES": "tables",
    "de_bias_by_pool_fraction": "tables",
    "double_descent_curves": "plots",
    "estimators_versus_risk": "plots",
    "learning_dynamics_curves": "plots",
    "linearisation_summary": "plots",
    "local_law_deviations": "plots",
    "gcv_local_law_figure": "plots",
    "power_law_fits_figure": "plots",
    "risk_versus_lambda": "plots",
    "risk_versus_n": "plots",
    "scaling_laws": "plots",
    "spectra_and_alignment": "plots",
    "training_curves": "plots",
    "ESTIMATORS": "tables",
    "THEORY_ESTIMATORS": "tables",
    "best_risk": "tables",
    "double_descent_summary": "tables",
    "estimator_accuracy": "tables",
    "join_predictions": "tables",
    "with_power_law_fit": "tables",
    "RIDGE_BUCKETS": "regimes",
    "LOCAL_LAW_HOLDS": "regimes",
    "estimator_accuracy_by_regime": "regimes",
    "gcv_beside_local_law": "regimes",
    "local_law_predicts_gcv": "regimes",
    "ridge_bucket": "regimes",
    "CLAIM_COLUMNS": "claims",
    "scaling_claims": "claims",
    "relative_error": "tables",
    "resolved_rows": "tables",
    "ridge_table": "tables",
    "seed_bootstrap": "uncertainty",
    "with_bootstrap_intervals": "uncertainty",
    "band": "study_plots",
    "learnability_figure": "study_plots",
    "noise_accuracy_figure": "study_plots",
    "noise_curves": "study_plots",
    "selected_lambda_figure": "study_plots",
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
