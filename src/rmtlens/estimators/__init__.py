"""Layer 3, estimators: spectra, grids, the ridge path with GCV and LOO, deterministic equivalents.

Public names are imported lazily from their modules, so importing the package
does not import torch unless a name that needs it is used.
"""

from __future__ import annotations

from rmtlens._lazy import lazy_exports

_EXPORTS = {
    "DEFAULT_SAFETY": "accuracy",
    "accuracy_floor": "accuracy",
    "apply_floor": "accuracy",
    "noise_level": "accuracy",
    "null_mask": "accuracy",
    "resolved_ridges": "accuracy",
    "spectrum_has_gap": "accuracy",
    "KERNEL_KEYS": "grids",
    "kernel_scale": "grids",
    "nearest_on_grid": "grids",
    "ridge_grid": "grids",
    "sample_size_grid": "grids",
    "subsample_indices": "grids",
    "RIDGE_PATH_COLUMNS": "kernel_ridge",
    "gcv": "kernel_ridge",
    "kernel_ridge_scale": "kernel_ridge",
    "loo": "kernel_ridge",
    "ridge_path_table": "kernel_ridge",
    "training_eigh": "kernel_ridge",
    "feature_factor": "lowrank",
    "feature_pool_spectrum": "lowrank",
    "feature_test_basis": "lowrank",
    "low_rank_applies": "lowrank",
    "ridge_path_low_rank": "lowrank",
    "NullSpace": "ridge",
    "check_ridge_inputs": "ridge",
    "classification_error": "ridge",
    "clip_spectrum": "ridge",
    "null_space": "ridge",
    "residual_weights": "ridge",
    "ridge_path": "ridge",
    "ridge_path_in_eigenbasis": "ridge",
    "ridge_predictions": "ridge",
    "check_kernel": "spectra",
    "eigh_descending": "spectra",
    "kernel_test_block": "spectra",
    "kernel_train_block": "spectra",
    "pool_spectrum": "spectra",
    "deterministic_equivalent": "theory",
    "fit_power_law": "theory",
    "fit_spectrum_power_laws": "theory",
    "population_from_pool": "theory",
    "power_law_rate": "theory",
    "power_law_values": "theory",
    "predict_grid": "theory",
    "solve_kappa": "theory",
    "flip_target_map": "noise",
    "label_noise_predictions": "noise",
    "noisy_deterministic_equivalent": "noise",
    "population_targets": "noise",
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
