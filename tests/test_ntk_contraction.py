"""Whole-pool contraction of the eNTK engine: symmetric rank-k products and BLAS routing.

Checked against independent computations: plain matrix products, and ``J Jᵀ`` of
per-sample gradients from ``torch.func`` (float64) at sizes that need several
diagonal blocks of the PyTorch rank-k path.
"""

import numpy as np
import pytest
import torch
from helpers import inputs, randomise_batchnorm_stats, timm_network, torch_threads
from torch.func import functional_call, grad, vmap

from rmtlens.kernels import entk
from rmtlens.kernels.ntk import contraction


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):
        yield


@pytest.fixture
def blas(monkeypatch):
    """Select the BLAS route for one test (the choice is cached per process)."""

    def select(route):
        monkeypatch.setenv("RMTLENS_ENTK_BLAS", route)
        contraction._BLAS_CHOICE.clear()

    yield select
    contraction._BLAS_CHOICE.clear()


@pytest.mark.parametrize("route", ["torch", "numpy"])
@pytest.mark.parametrize("align", [1, 3, 7])
def test_self_product_upper_triangle_and_aligned_blocks(route, align, blas):
    g = torch.Generator().manual_seed(0)
    n = 7 * 97  # several leaves of 256, not a multiple of them
    J = torch.randn(n, 50, generator=g, dtype=torch.float64)
    ref = J @ J.T
    out = torch.zeros(n, n, dtype=torch.float64)
    contraction._self_product(J, out, route, align=align)
    upper = torch.triu(torch.ones(n, n, dtype=torch.bool))
    assert torch.allclose(out[upper], ref[upper], rtol=1e-12, atol=1e-12)
    # every aligned diagonal block is complete (the structured reduction needs them)
    for i in range(0, n, align):
        assert torch.allclose(out[i : i + align, i : i + align], ref[i : i + align, i : i + align], rtol=1e-12)
    A = J[:10].T.contiguous()  # (50, 10): Aᵀ A, the Gram orientation of structured terms
    outT = torch.zeros(10, 10, dtype=torch.float64)
    contraction._self_product(A, outT, route, transposed=True)
    up = torch.triu(torch.ones(10, 10, dtype=torch.bool))
    assert torch.allclose(outT[up], (A.T @ A)[up], rtol=1e-12)


def test_auto_route_is_numpy_when_its_openblas_is_known(blas):
    blas("auto")
    route = contraction._blas(torch.device("cpu"), torch.float32)
    core = contraction._numpy_blas_core()
    assert route == ("numpy" if core is not None else "torch")
    assert contraction._blas(torch.device("meta"), torch.float32) == "torch"  # devices other than the CPU
    blas("fortran")
    with pytest.raises(ValueError, match="RMTLENS_ENTK_BLAS"):
        contraction._blas(torch.device("cpu"), torch.float32)


def per_sample_kernel(model, x_rows, x_cols):
    """``J_r J_cᵀ`` from ``vmap(grad)`` per-sample gradients, float64."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = dict(model.named_buffers())

    def f(p, xi):
        return functional_call(model, {**p, **buffers}, (xi.unsqueeze(0),)).sum()

    def jac(x):
        g = vmap(grad(f), in_dims=(None, 0))(params, x)
        return torch.cat([g[k].reshape(x.shape[0], -1) for k in params], dim=1)

    return (jac(x_rows) @ jac(x_cols).T).numpy()


@pytest.mark.parametrize("route", ["torch", "numpy"])
def test_whole_pool_kernel_beyond_one_leaf(route, blas):
    """N = 300 > one leaf of 256: symmetric, rectangular and prefix layouts against vmap(grad)."""
    blas(route)
    model = randomise_batchnorm_stats(timm_network("test_resnet", 8)).double()
    x = inputs(300, 8, seed=2, dtype=torch.float64)
    ref = per_sample_kernel(model, x, x)
    scale = np.abs(ref).max()
    K = entk(model, x)
    assert np.array_equal(K, K.T)
    assert np.abs(K - ref).max() / scale < 1e-10
    Kr = entk(model, x[:130], x[130:])
    assert np.abs(Kr - ref[:130, 130:]).max() / scale < 1e-10
    Kp = entk(model, x, x[:140])
    assert np.abs(Kp - ref[:, :140]).max() / scale < 1e-10


def test_column_chunks_share_conv_patches(monkeypatch):
    """A budget that splits explicit terms into column chunks: the conv patches of all
    samples are formed once and shared by the chunks; the kernel is still J Jᵀ."""
    model = timm_network("test_resnet", 16, 0).double()
    x = torch.randn(40, 3, 16, 16, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    shared = []
    original = contraction.patches

    def counted(site, raw, ws, role):
        shared.append(site.weight)
        return original(site, raw, ws, role)

    monkeypatch.setattr(contraction, "patches", counted)
    original_whole = contraction._explicit_whole

    def small_chunks(fill, width, unit, pr, pc, symmetric, K, budget, ws):  # 3 units a chunk at most
        budget = min(budget, pr.n * pr.n * 8 + 32 * 2**20 + 2 * (pr.n + pc.n) * 3 * unit * 8 + 2**22)
        return original_whole(fill, width, unit, pr, pc, symmetric, K, budget, ws)

    monkeypatch.setattr(contraction, "_explicit_whole", small_chunks)
    ref = per_sample_kernel(model, x, x)
    scale = np.abs(ref).max()
    assert np.abs(entk(model, x) - ref).max() / scale < 1e-10
    assert shared  # the shared path ran
    shared.clear()
    assert np.abs(entk(model, x[:15], x[15:]) - ref[:15, 15:]).max() / scale < 1e-10
    assert shared


def test_numpy_products_run_while_torch_is_on_one_thread(monkeypatch, blas):
    """With numpy's BLAS, PyTorch runs on one thread during the products (its idle OpenMP
    threads would spin beside numpy's), and its thread count is restored afterwards."""
    blas("numpy")
    seen = []
    matmul = np.matmul

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return matmul(*args, **kwargs)

    monkeypatch.setattr(contraction.np, "matmul", spy)
    model = randomise_batchnorm_stats(timm_network("test_resnet", 8)).double()
    x = inputs(40, 8, seed=3, dtype=torch.float64)
    with torch_threads(2):
        K = entk(model, x)
        assert torch.get_num_threads() == 2
    assert seen and set(seen) == {1}, seen
    ref = per_sample_kernel(model, x, x)
    assert np.abs(K - ref).max() / np.abs(ref).max() < 1e-10
