"""The empirical NTK engine, one module per step of its algorithm.

:mod:`~rmtlens.kernels.ntk.network` (the scalar network ``f``),
:mod:`~rmtlens.kernels.ntk.capture` (step 1: one batched pass records every
parameterised operation), :mod:`~rmtlens.kernels.ntk.plan` (step 2: how each
parameter's per-sample gradient is obtained) and :mod:`~rmtlens.kernels.ntk.verify`
(its self-check), :mod:`~rmtlens.kernels.ntk.pieces` (step 3: per-sample pieces of a
sample block), :mod:`~rmtlens.kernels.ntk.contraction` (step 4: kernel blocks from
pieces), :mod:`~rmtlens.kernels.ntk.schedule` (memory schedule and flop counts) and
:mod:`~rmtlens.kernels.ntk.engine` (the public entry points).
"""

from rmtlens.kernels.ntk.engine import entk, entk_flops
from rmtlens.kernels.ntk.network import ScalarNetwork, scalar_network

__all__ = ["ScalarNetwork", "entk", "entk_flops", "scalar_network"]
