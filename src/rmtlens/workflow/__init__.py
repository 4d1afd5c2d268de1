"""Layer 6, workflow support: job-level loaders and run logs, used only by ``workflow/scripts/``.

Public names are imported lazily from their modules, so importing the package
does not import torch unless a name that needs it is used.
"""

from __future__ import annotations

from rmtlens._lazy import lazy_exports

_EXPORTS = {
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
    "entk_job_network": "networks",
    "Progress": "runlog",
    "job_logger": "runlog",
    "set_torch_threads": "runlog",
    "noise_study_job": "noise",
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
