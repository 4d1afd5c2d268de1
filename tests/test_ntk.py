"""Empirical NTK versus brute-force per-sample Jacobians (torch.func.jacrev, float64)."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from helpers import (
    HiddenScale,
    inputs,
    jacobian_kernel,
    randomise_batchnorm_stats,
    rel_err,
    timm_network,
    torch_threads,
)
from torch import nn

from rmtlens.inputs import create_backbone, feature_dim
from rmtlens.kernels import entk, entk_flops, scalar_network
from rmtlens.kernels.ntk import engine as ntk_module

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")

# float32 pieces and products against float64: measured max|ΔK|/max|K| ≈ 1e-6 (resnet18,
# N=128; products over up to ~10^5 terms of float32 rounding); asserted with margin.
FLOAT32_TOLERANCE = 2e-5
# allowance above memory_gb for the peak-RSS test: allocator slack, oneDNN/MKL scratch
# buffers and Python objects that the budget does not model.
MEMORY_OVERHEAD_GB = 0.1


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny kernels: one thread is fastest and immune to a busy machine."""
    with torch_threads(1):
        yield


@pytest.mark.parametrize(
    "name, image_size",
    [
        ("test_resnet", 32),  # CNN with BatchNorm, in-place ReLU and residual adds
        ("test_convnext", 32),  # depthwise conv, LayerNorm2d, layer-scale gammas
        ("test_vit", 32),  # attention, class token, position embedding
        ("test_efficientnet", 32),  # BatchNormAct, squeeze-excite, depthwise conv
    ],
)
def test_matches_jacobian_reference(name, image_size):
    model = randomise_batchnorm_stats(timm_network(name, image_size))
    x = inputs(5, image_size)
    K = entk(model, x)
    assert K.shape == (5, 5) and K.dtype == np.float64
    assert rel_err(K, jacobian_kernel(model, x)) < 1e-10


class Awkward(nn.Module):
    """Every special path: a timm conv subclass, grouped/dilated 'same' conv, conv1d,
    GroupNorm, LayerNorm without bias, BatchNorm1d, a linear layer called twice, an
    elementwise parameter, an in-place use, a weight used both by F.linear and
    elementwise (fallback), a use whose batch axis is not the first (single-op VJP), an unused
    parameter."""

    def __init__(self):
        super().__init__()
        from timm.layers import Conv2dSame

        self.conv_same = Conv2dSame(3, 6, 3, stride=2)
        self.conv_grouped = nn.Conv2d(6, 6, 3, padding="same", dilation=2, groups=3, bias=False)
        self.gn = nn.GroupNorm(2, 6)
        self.conv1d = nn.Conv1d(6, 4, 3, padding=1)
        self.ln = nn.LayerNorm(4, bias=False)
        self.shared = nn.Linear(4, 4)
        self.scale = nn.Parameter(torch.randn(4))
        self.shift = nn.Parameter(torch.randn(4))
        self.mixed = nn.Linear(4, 4)
        self.transposed = nn.Parameter(torch.randn(4))
        self.bn = nn.BatchNorm1d(4)
        self.unused = nn.Parameter(torch.randn(3))
        self.head = nn.Linear(4, 1)

    def forward(self, x):
        x = torch.relu(self.conv_grouped(self.conv_same(x)))
        x = self.gn(x).mean(2)  # (B, 6, W)
        x = self.ln(self.conv1d(x).transpose(1, 2))  # (B, W, 4)
        x = self.shared(torch.tanh(self.shared(x)))
        x = x * self.scale
        x = x.clone()
        x.add_(self.shift)
        x = self.mixed(x) + x @ self.mixed.weight.T.tanh()
        x = x.mean(1)  # (B, 4)
        x = (x.T * self.transposed.unsqueeze(1)).T
        return self.head(self.bn(torch.sin(x))).squeeze(-1)


def test_awkward_model_every_path():
    torch.manual_seed(0)
    model = randomise_batchnorm_stats(Awkward()).eval()
    x = inputs(5, 16)
    assert rel_err(entk(model, x), jacobian_kernel(model, x)) < 1e-10
    cov = entk_flops(model, 16, 5)["coverage"]
    n_params = sum(p.numel() for p in model.parameters())
    assert sum(cov.values()) == n_params  # every parameter counted exactly once
    assert cov["generic"] == 12  # scale, shift, transposed (its batch axis is axis 1)
    assert cov["fallback"] == 4 * 4 + 4  # mixed.weight, mixed.bias
    assert cov["unused"] == 3


class Hidden(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.head = nn.Linear(4, 1)

    def forward(self, x):
        h = self.lin(x.flatten(1)[:, :4])
        return self.head(HiddenScale.apply(h, self.lin.weight)).squeeze(-1)


def test_self_check_sends_invisible_uses_to_the_fallback():
    torch.manual_seed(1)
    model = Hidden().eval()
    x = inputs(4, 4)
    assert rel_err(entk(model, x), jacobian_kernel(model, x)) < 1e-10
    assert entk_flops(model, 4, 4)["coverage"]["fallback"] == 16 + 4  # lin.weight, lin.bias


def test_rows_and_columns_blocks_of_symmetric_kernel():
    model = randomise_batchnorm_stats(timm_network("test_resnet", 16))
    x = inputs(9, 16, seed=1)
    K = entk(model, x)
    assert np.array_equal(K, K.T)
    assert np.linalg.eigvalsh(K).min() > -1e-12 * np.abs(K).max()
    rows, cols = x[[0, 3, 4, 8]], x[[1, 2, 3, 5, 6]]
    Krc = entk(model, rows, cols)
    assert Krc.shape == (4, 5)
    assert rel_err(Krc, K[np.ix_([0, 3, 4, 8], [1, 2, 3, 5, 6])]) < 1e-12
    timings = {}  # columns = leading rows: the (pool + test) x pool layout
    K_prefix = ntk_module._entk(model, x, x[:6], 2.0, torch.float64, None, False, False, timings)
    assert timings["layout"] == "prefix" and K_prefix.shape == (9, 6)
    assert rel_err(K_prefix, K[:, :6]) < 1e-12


def test_small_memory_budget_gives_the_same_kernel():
    """Tiny budgets force sample super-blocks (recomputed pieces) and small blocks."""
    model = randomise_batchnorm_stats(timm_network("test_resnet", 16)).double()  # no copy
    x = inputs(24, 16, seed=2)
    K = entk(model, x)
    timings = {}
    gb = 0.0024  # ~2.5 MB: 6 samples per super-block, blocks of 2 samples
    K_small = ntk_module._entk(model, x, None, gb, torch.float64, None, False, False, timings)
    sched = timings["schedule"]
    assert sched.super_block < 24 and sched.pass_batch < 24  # the budget did bind
    assert rel_err(K_small, K) < 1e-12
    K_rect = entk(model, x[:10], x[10:], memory_gb=gb)
    assert rel_err(K_rect, K[:10, 10:]) < 1e-12
    timings = {}
    K_prefix = ntk_module._entk(model, x, x[:10], gb, torch.float64, None, False, False, timings)
    assert timings["layout"] == "rectangular"  # too big for the prefix path
    assert rel_err(K_prefix, K[:, :10]) < 1e-12


def test_float32_compute_within_tolerance():
    model = randomise_batchnorm_stats(timm_network("test_resnet", 32))
    x = inputs(32, 32, seed=3)
    K64 = entk(model, x, dtype=torch.float64)
    K32 = entk(model, x, dtype=torch.float32)
    assert K32.dtype == np.float64  # accumulation in float64 whatever the compute dtype
    err = rel_err(K32, K64)
    assert 0 < err < FLOAT32_TOLERANCE


def test_flop_counts():
    model = timm_network("test_resnet", 32)
    n_params = sum(p.numel() for p in model.parameters())
    sym = entk_flops(model, 32, 100)
    rect = entk_flops(model, 32, 100, 60)
    assert sym["explicit_jjt"] == 2.0 * 100 * 100 * n_params
    assert rect["explicit_jjt"] == 2.0 * 100 * 60 * n_params
    assert sym["n_params"] == n_params == sum(sym["coverage"].values())
    assert sym["total"] < sym["explicit_jjt"]
    assert sym["contraction"] == pytest.approx(
        sym["contraction_explicit"] + sym["contraction_structured"] + sym["formation"]
    )


def test_progress_callback_reaches_total():
    model = timm_network("test_resnet", 16)
    calls = []
    entk(model, inputs(6, 16), progress=lambda done, total: calls.append((done, total)))
    done = [d for d, _ in calls]
    assert len(calls) > 2 and done == sorted(done)
    assert calls[-1][0] == calls[-1][1]


def test_model_is_left_unchanged():
    model = timm_network("test_resnet", 16)
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    entk(model, inputs(3, 16), dtype=torch.float64)  # float64: works on a converted copy
    entk(model, inputs(3, 16), dtype=torch.float32)  # float32: works on the model itself
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters()) and not model.training


def test_scalar_network_head_is_seeded():
    backbone = create_backbone("test_resnet", 16, 0)
    p = feature_dim(backbone, 16)
    state = torch.random.get_rng_state()
    a = scalar_network(backbone, p, head_seed=5)
    assert torch.equal(state, torch.random.get_rng_state())  # global RNG untouched
    b = scalar_network(backbone, p, head_seed=5)
    c = scalar_network(backbone, p, head_seed=6)
    assert torch.equal(a.head.weight, b.head.weight)
    assert not torch.equal(a.head.weight, c.head.weight)
    assert a.head.weight.shape == (1, p) and not a.training
    assert a(inputs(4, 16)).shape == (4,)


def test_invalid_arguments():
    model = timm_network("test_resnet", 16)
    x = inputs(3, 16)
    with pytest.raises(ValueError, match="eval mode"):
        entk(model.train(), x)
    model.eval()
    with pytest.raises(ValueError, match="x_cols"):
        entk(model, x, inputs(2, 8))
    with pytest.raises(ValueError, match="x_rows"):
        entk(model, x.to(torch.uint8))
    with pytest.raises(ValueError, match="memory_gb"):
        entk(model, x, memory_gb=0)
    with pytest.raises(ValueError, match="memory_gb"):
        entk(model, inputs(200, 16), memory_gb=1e-4)  # the kernel alone does not fit
    with pytest.raises(ValueError, match="dtype"):
        entk(model, x, dtype=torch.float16)
    with pytest.raises(ValueError, match="one scalar per sample"):
        entk(model.backbone, x)
    with pytest.raises(ValueError, match="feature_dim"):
        scalar_network(model.backbone, 0, 0)


MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, sys, torch
    from rmtlens.inputs.backbones import create_backbone, feature_dim
    from rmtlens.kernels.ntk import entk, scalar_network

    def kib(field):
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1])

    torch.set_num_threads(1)
    budget = float(sys.argv[1])
    backbone = create_backbone("resnet18", 32, 0)
    model = scalar_network(backbone, feature_dim(backbone, 32), 1)
    x = torch.randn(256, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    entk(model, x[:4], dtype=torch.float32, memory_gb=budget)  # warm-up of kernels' caches
    open("/proc/self/clear_refs", "w").write("5")  # reset VmHWM to the current RSS
    start = kib("VmRSS")
    entk(model, x, dtype=torch.float32, memory_gb=budget)
    print(json.dumps(dict(growth_gib=(kib("VmHWM") - start) / 2**20)))
    """
)


def peak_growth(budget_gb):
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(budget_gb)],
        capture_output=True, text=True, env=env, timeout=300, check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["growth_gib"]


def test_peak_memory_stays_within_budget():
    budget = 0.1
    unconstrained = peak_growth(4.0)
    constrained = peak_growth(budget)
    assert unconstrained > budget + MEMORY_OVERHEAD_GB  # the budget binds for this problem
    assert constrained < budget + MEMORY_OVERHEAD_GB
