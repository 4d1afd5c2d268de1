"""Layer 4, studies: scaling laws, representations, local law, double descent, learning dynamics, linearisation.

Public names are imported lazily from their modules, so importing the package
does not import torch unless a name that needs it is used.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "ACTIVATIONS": "double_descent",
    "double_descent_study": "double_descent",
    "expected_kernel": "double_descent",
    "feature_ridge": "double_descent",
    "linear_ridge_sweep": "double_descent",
    "random_features": "double_descent",
    "random_features_sweep": "double_descent",
    "rf_deterministic_equivalent": "double_descent",
    "rf_effective_ridge": "double_descent",
    "spectrum_from_features": "double_descent",
    "spectrum_from_kernel": "double_descent",
    "standardise_inputs": "double_descent",
    "gradient_flow_filters": "dynamics",
    "gradient_flow_in_eigenbasis": "dynamics",
    "gradient_flow_path": "dynamics",
    "gradient_flow_path_low_rank": "dynamics",
    "gradient_flow_predictions": "dynamics",
    "time_grid": "dynamics",
    "IMAGE_MEAN": "linearisation",
    "IMAGE_STD": "linearisation",
    "Linearisation": "linearisation",
    "MODELS": "linearisation",
    "MOMENTUM": "linearisation",
    "eigenfunction_labels": "linearisation",
    "kernel_target_alignment": "linearisation",
    "linearisation_claims": "linearisation",
    "logistic_loss": "linearisation",
    "predict": "linearisation",
    "run_linearisation_study": "linearisation",
    "sign_accuracy": "linearisation",
    "small_cnn": "linearisation",
    "superclass_labels": "linearisation",
    "train_sgd": "linearisation",
    "alignment_at": "representations",
    "cumulative_alignment": "representations",
    "effective_rank": "representations",
    "normalised_spectrum": "representations",
    "representation_tables": "representations",
    "GCV_SELECTION_COLUMNS": "scaling",
    "LAMBDA_RTOL": "scaling",
    "fit_scaling_exponent": "scaling",
    "gcv_selected_lambdas": "scaling",
    "local_law_diagnostic": "scaling",
    "local_law_table": "scaling",
    "risk_at_selected_lambda": "scaling",
    "risk_vs_n_at_fixed_lambda": "scaling",
    "risk_vs_n_at_gcv_lambda": "scaling",
    "scaling_rows": "scaling",
    "scaling_table": "scaling",
    "select_lambda_by_gcv": "scaling",
    "NOISE_ESTIMATORS": "noise",
    "join_noise_predictions": "noise",
    "noise_accuracy": "noise",
    "noise_levels": "noise",
    "noise_predictions": "noise",
    "noise_rows": "noise",
    "sample_wise_peaks": "noise",
    "SELECTORS": "selection",
    "regret_summary": "selection",
    "ridge_selection_rows": "selection",
    "ridge_selection_table": "selection",
    "select_lambda": "selection",
    "trusted_rows": "selection",
    "learnabilities": "learnability",
    "learnability_tables": "learnability",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
