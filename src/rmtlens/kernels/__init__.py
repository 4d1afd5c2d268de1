"""Layer 2, kernels: feature kernels, the empirical NTK (:mod:`rmtlens.kernels.ntk`) and its tiling.

Public names are imported lazily from their modules, so importing the package
does not import torch unless a name that needs it is used.
"""

from __future__ import annotations

from rmtlens._lazy import lazy_exports

_EXPORTS = {
    "backbone_entk": "backbone",
    "backbone_feature_kernel": "backbone",
    "ScalarNetwork": "ntk",
    "entk": "ntk",
    "entk_flops": "ntk",
    "scalar_network": "ntk",
    "feature_kernel": "features",
    "entk_accuracy": "accuracy",
    "feature_kernel_accuracy": "accuracy",
    "Tile": "tiles",
    "assemble_tiles": "tiles",
    "entk_tiles": "tiles",
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
