"""Layer 6, workflow support: configuration checks for the rule files, job-level loaders and run
logs used only by ``workflow/scripts/``, and the checks and kernel units of datasets and
representations given as files (rule files).

Public names are imported lazily from their modules, so importing the package
does not import torch unless a name that needs it is used.
"""

from __future__ import annotations

from rmtlens._lazy import lazy_exports

_EXPORTS = {
    "ConfigError": "config_checks",
    "check_config": "config_checks",
    "check_input_files": "config_checks",
    "FILE_WEIGHTS": "file_representations",
    "array_dataset_fields": "file_representations",
    "array_dataset_files": "file_representations",
    "array_dataset_pattern": "file_representations",
    "array_datasets": "file_representations",
    "representation_fields": "file_representations",
    "representation_path": "file_representations",
    "check_file_representations": "file_representations",
    "file_representation_units": "file_representations",
    "spectrum_rcond": "noise",
    "RidgeProblem": "jobs",
    "eigh_job_bytes": "jobs",
    "kernel_block_eigh": "jobs",
    "kernel_relative_error": "jobs",
    "load_any_ridge_problem": "jobs",
    "load_feature_ridge_problem": "jobs",
    "load_ridge_problem": "jobs",
    "permuted_pool_eigh": "jobs",
    "solve_gradient_flow": "jobs",
    "solve_ridge_path": "jobs",
    "without_class_error": "jobs",
    "entk_job_network": "networks",
    "Progress": "runlog",
    "job_logger": "runlog",
    "set_torch_threads": "runlog",
    "noise_study_job": "noise",
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
