"""Lazy public names for the package ``__init__`` files (below every layer).

A package lists ``{public name: module}`` and gets a module ``__getattr__`` (PEP 562)
that imports the module on first use, so importing a package does not import torch
unless a name that needs it is used.
"""

from __future__ import annotations

import importlib
import sys
from typing import Callable, Mapping


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable, Callable, list[str]]:
    """``(__getattr__, __dir__, __all__)`` for ``package``; ``exports`` maps each public
    name to its module, relative to ``package`` or absolute (``rmtlens.…``)."""

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = exports[name]
        path = module if module.startswith("rmtlens.") else f"{package}.{module}"
        value = getattr(importlib.import_module(path), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__, sorted(exports)
