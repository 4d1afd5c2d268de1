"""The eNTK engine's steps as public interfaces: composed by hand they give ``entk``'s
kernel, and one ``entk`` call hands control back and forth between modules rarely."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.func import functional_call, grad, vmap

from rmtlens.inputs import create_backbone, feature_dim
from rmtlens.kernels import entk, scalar_network
from rmtlens.kernels.ntk import capture, contraction, pieces, plan, schedule, verify

BENCH = Path(__file__).resolve().parents[1] / "bench"
MAX_BOUNCES = 8  # at most 8 re-entries into a module on the walk (17 before the steps handed data forward)


@pytest.fixture(autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def walk_tool():
    spec = importlib.util.spec_from_file_location("entk_walk", BENCH / "entk_walk.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def network():
    backbone = create_backbone("test_resnet", 16, 0)
    model = scalar_network(backbone, feature_dim(backbone, 16), head_seed=1).double()
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():  # BatchNorm must not be the identity
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_(0.0, 0.3, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)
    return model


def by_hand(model, x, memory_gb=2.0):
    """``entk(model, x)`` (symmetric, float64) from the public steps, in order."""
    n, dtype, device = x.shape[0], torch.float64, x.device
    params = list(model.parameters())
    for p in params:
        p.requires_grad_(True)
    reference = capture.record(model, x[:1])
    x_probe = verify.probe_batch(reference.dims, x, None, device, dtype)
    probed = capture.probe(model, x_probe, reference)
    used = verify.used_parameters(model, x_probe)
    made = plan.make_plan(model, probed, used, n, n, dtype)
    probe_pieces = pieces.gradient_pieces(model, made, x_probe, verify.check_batch(made.probe_size), device,
                                          dtype, None, 2**26)
    assert verify.failed_parameters(model, made, probe_pieces, x_probe, dtype) == set()
    sched = schedule.make_schedule(made, n, n, "symmetric", device, memory_gb, 0)
    assert sched.super_block == n and sched.layout == "symmetric"  # one block of pieces
    all_pieces = pieces.gradient_pieces(model, made, x, sched.pass_batch, device, dtype, None,
                                        sched.budget_transient)
    K = torch.zeros((n, n), dtype=torch.float64)
    contraction.contract(made, all_pieces, all_pieces, True, K, sched.budget_transient, sched.block_target, None)
    return K.numpy()


def per_sample_kernel(model, x):
    """``J Jᵀ`` from ``vmap(grad)`` per-sample gradients, float64 (independent of the engine)."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = dict(model.named_buffers())

    def f(p, xi):
        return functional_call(model, {**p, **buffers}, (xi.unsqueeze(0),)).sum()

    g = vmap(grad(f), in_dims=(None, 0))(params, x)
    J = torch.cat([g[k].reshape(x.shape[0], -1) for k in params], dim=1)
    return (J @ J.T).numpy()


def test_public_steps_compose_to_entk():
    model = network()
    x = torch.randn(7, 3, 16, 16, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    K = by_hand(model, x)
    # same operations on the same shapes in the same process: identical bits
    assert np.array_equal(K, entk(model, x))
    ref = per_sample_kernel(model, x)
    assert np.abs(K - ref).max() / np.abs(ref).max() < 1e-10


def test_bounce_count_on_planted_walks():
    tool = walk_tool()
    assert tool.bounces(["engine", "capture", "engine", "plan", "engine", "pieces", "engine"]) == []
    assert tool.bounces(["engine", "pieces", "capture", "pieces", "capture", "pieces", "engine"]) == [
        ("pieces", "capture"), ("capture", "pieces")]
    walk, result = tool.record_walk(lambda: capture.scalar_output(torch.zeros(3), 3))
    assert walk == ["capture"] and result.shape == (3,)


def test_steps_hand_data_forward():
    """One ``entk`` call re-enters a module it had left (other than the engine taking a
    step's result) at most ``MAX_BOUNCES`` times."""
    walk, K = walk_tool().tiny_call()
    assert K.shape == (4, 4)
    assert {"capture", "plan", "pieces", "verify", "schedule", "contraction"} <= set(walk)
    found = walk_tool().bounces(walk)
    assert len(found) <= MAX_BOUNCES, found


def test_timings_split_the_contraction_by_term():
    from rmtlens.kernels.ntk import engine

    model = network()
    x = torch.randn(6, 3, 16, 16, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    timings = {}
    engine._entk(model, x, None, 2.0, torch.float64, None, False, False, timings)
    made = timings["schedule"].plan
    labels = [label for label, _ in timings["terms"]]
    raw = [s.weight for s in made.sites if s.store == "raw"]
    assert sorted(labels) == sorted(raw + ["formed", "mirror"])  # every term once, the mirror last
    assert labels[-1] == "mirror"
    assert 0 < sum(t for _, t in timings["terms"]) <= timings["contraction"]
    assert 0 < timings["plan"]
