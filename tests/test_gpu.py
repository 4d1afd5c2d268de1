"""The eNTK engine on a CUDA device (skipped where none is present; bench/gpu_check.sh
runs these on a lent GPU): the same kernel as on the CPU, TF32 only where asked for and
the global flags restored, and the memory budget held on the device."""

import numpy as np
import pytest
import torch

from rmtlens.inputs import create_backbone, feature_dim
from rmtlens.kernels import entk, scalar_network

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

# TF32 rounds matmul inputs to 10 mantissa bits (~5e-4 relative); sums over many terms
# stay well within 1e-2 of the float32 kernel, and differ from it by more than 1e-7.
TF32_TOLERANCE = 1e-2
FLOAT32_TOLERANCE = 2e-5  # as tests/test_ntk.py: float32 pieces and products against float64


def network(image_size=16):
    backbone = create_backbone("test_resnet", image_size, 0)
    model = scalar_network(backbone, feature_dim(backbone, image_size), head_seed=1)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_var.uniform_(0.5, 1.5, generator=g)
    return model.eval()


def rel_err(a, b):
    return np.abs(a - b).max() / np.abs(b).max()


def test_cuda_kernel_matches_cpu():
    model = network()
    x = torch.randn(9, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    K_cpu = entk(model, x, dtype=torch.float64)
    K_gpu = entk(model, x, dtype=torch.float64, device="cuda")
    assert rel_err(K_gpu, K_cpu) < 1e-10  # float64 on both: round-off only
    K_gpu32 = entk(model, x[:5], x[5:], dtype=torch.float32, device="cuda")
    assert rel_err(K_gpu32, K_cpu[:5, 5:]) < FLOAT32_TOLERANCE
    assert next(model.parameters()).device.type == "cpu"  # the model itself stays where it was


def test_tf32_only_when_asked_and_flags_restored():
    model = network()
    x = torch.randn(12, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    K64 = entk(model, x, dtype=torch.float64, device="cuda")
    K32 = entk(model, x, dtype=torch.float32, device="cuda", allow_tf32=False)
    Ktf = entk(model, x, dtype=torch.float32, device="cuda", allow_tf32=True)
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before
    assert rel_err(K32, K64) < FLOAT32_TOLERANCE
    assert rel_err(Ktf, K64) < TF32_TOLERANCE


def cuda_growth(model, x, budget):
    """Peak CUDA memory allocated by one ``entk`` call beyond what was allocated before (GiB)."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = torch.cuda.memory_allocated()
    entk(model, x, dtype=torch.float32, device="cuda", memory_gb=budget)
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - start) / 2**30


def test_device_memory_stays_within_budget():
    backbone = create_backbone("resnet18", 32, 0)
    model = scalar_network(backbone, feature_dim(backbone, 32), head_seed=1)
    x = torch.randn(256, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    budget, allowance = 0.1, 0.1  # allowance: cuDNN/cuBLAS workspaces the budget does not model
    entk(model, x[:4], dtype=torch.float32, device="cuda", memory_gb=budget)  # warm-up
    assert cuda_growth(model, x, 4.0) > budget + allowance  # the budget binds for this problem
    assert cuda_growth(model, x, budget) < budget + allowance
