"""rmtlens: a random-matrix-theory lens on how neural representations generalise.

The package holds the numerics (kernels, ridge paths, estimators, theory) and the
small amount of I/O the workflow needs; the Snakemake workflow in ``workflow/``
only unpacks its inputs and calls these functions.

The names below are the public API for use from Python (README, "Use from Python").
They are imported lazily from their layer's package, so ``import rmtlens`` imports
neither torch nor timm; a name that needs them imports them when first used.

Inputs (layer ``rmtlens.inputs``)
    ``create_backbone``, ``load_pretrained_backbone`` (timm feature extractors),
    ``normalisation``, ``preprocess`` (uint8 ``(N, H, W, 3)`` images to float
    ``(N, 3, S, S)`` tensors), ``embed_images`` (pooled features ``(N, p)``),
    ``digits_images`` (scikit-learn's digits as ``(1797, S, S, 3)`` uint8),
    ``make_targets`` (labels to ``(N, C)`` targets), ``read_array_file`` (an array from
    ``.npy``, ``.npz``, ``.safetensors`` or Parquet, checked against its sha256),
    ``export_digits_representations`` (the digits' labels and three representations as
    files, for a dataset given as arrays).
Kernels (``rmtlens.kernels``)
    ``backbone_entk`` (eNTK of ``Linear(p, 1) ∘ backbone`` between two input sets,
    ``(N_rows, N_cols)`` float64), ``entk`` (eNTK of any scalar network),
    ``scalar_network``, ``backbone_feature_kernel`` (``Φ_rows Φ_colsᵀ / p``),
    ``feature_kernel`` (the workflow's ``(N_pool + m, N_pool)`` layout from features).
Estimators (``rmtlens.estimators``)
    ``ridge_path_table`` (DataFrame over λ of test risk, test error, train risk,
    GCV, LOO and dof from ``K_train``, ``y_train``, ``K_test``, ``y_test``),
    ``ridge_path`` (the same from an eigendecomposition, as dict of arrays),
    ``gcv`` and ``loo`` (one ridge), ``eigh_descending``, ``ridge_grid``,
    ``solve_kappa`` (effective ridge κ), ``deterministic_equivalent`` (DE risk),
    ``population_from_pool`` (spectrum and target coefficients for the DE),
    ``fit_power_law``, ``fit_spectrum_power_laws`` (``μ_k ∝ k^-α`` on the eigenvalues,
    ``||β_k||² ∝ k^-δ`` on the target's tail sums, ``fit_tail_exponent``), and the rates
    ``noiseless_rate`` and ``noisy_rate`` of the excess risk.
Studies (``rmtlens.studies``)
    ``fit_scaling_exponent`` (risk ∝ n^-exponent), ``gradient_flow_path`` (risks and
    GCV of gradient flow over time), ``time_grid``.
"""

from __future__ import annotations

from rmtlens._lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    # inputs
    "create_backbone": "rmtlens.inputs",
    "load_pretrained_backbone": "rmtlens.inputs",
    "normalisation": "rmtlens.inputs",
    "preprocess": "rmtlens.inputs",
    "embed_images": "rmtlens.inputs",
    "digits_images": "rmtlens.inputs",
    "make_targets": "rmtlens.inputs",
    "read_array_file": "rmtlens.inputs",
    "export_digits_representations": "rmtlens.inputs",
    # kernels
    "backbone_entk": "rmtlens.kernels",
    "backbone_feature_kernel": "rmtlens.kernels",
    "entk": "rmtlens.kernels",
    "feature_kernel": "rmtlens.kernels",
    "scalar_network": "rmtlens.kernels",
    # estimators
    "ridge_path_table": "rmtlens.estimators",
    "ridge_path": "rmtlens.estimators",
    "gcv": "rmtlens.estimators",
    "loo": "rmtlens.estimators",
    "eigh_descending": "rmtlens.estimators",
    "ridge_grid": "rmtlens.estimators",
    "solve_kappa": "rmtlens.estimators",
    "deterministic_equivalent": "rmtlens.estimators",
    "population_from_pool": "rmtlens.estimators",
    "fit_power_law": "rmtlens.estimators",
    "fit_spectrum_power_laws": "rmtlens.estimators",
    "fit_tail_exponent": "rmtlens.estimators",
    "noiseless_rate": "rmtlens.estimators",
    "noisy_rate": "rmtlens.estimators",
    # studies
    "fit_scaling_exponent": "rmtlens.studies",
    "gradient_flow_path": "rmtlens.studies",
    "time_grid": "rmtlens.studies",
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
