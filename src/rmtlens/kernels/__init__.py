"""Layer 2, kernels: feature kernels, the empirical NTK (:mod:`rmtlens.kernels.ntk`) and its tiling.

Public names are imported lazily from their modules, so importing the package
does not import torch unless a name that needs it is used.
"""

from __future__ import annotations

import importlib

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
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
