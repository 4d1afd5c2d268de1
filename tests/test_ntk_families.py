"""eNTK engine: more model families and adversarial toy models against jacrev (float64),
the per-sample self-check, and the main pass's loud failures."""

import pytest
import torch
from helpers import MHANet, float64_network, jacobian_kernel, mixer, rel_err, seeded, torch_threads
from torch import nn

from rmtlens.inputs import create_backbone
from rmtlens.kernels import entk, entk_flops, scalar_network
from rmtlens.kernels.ntk import capture, engine, pieces, verify

N = 6


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):
        yield


FAMILIES = {  # name -> (backbone factory, image size); smallest variants timm allows
    "swin (window attention, shifted windows, rel. pos. bias)": (lambda: create_backbone(
        "swin_tiny_patch4_window7_224", 32, 0,
        model_kwargs=dict(embed_dim=8, depths=(2, 1), num_heads=(1, 2), window_size=4)), 32),
    "beit (relative position bias, layer scale)": (lambda: create_backbone(
        "beit_base_patch16_224", 32, 0, model_kwargs=dict(
            patch_size=8, embed_dim=16, depth=2, num_heads=2, use_rel_pos_bias=True, init_values=0.1)), 32),
    "vit_relpos": (lambda: create_backbone("test_vit_relpos", 32, 0), 32),
    "nn.MultiheadAttention batch_first": (lambda: MHANet(True), 16),
    "nn.MultiheadAttention sequence-first": (lambda: MHANet(False), 16),
    "nfnet (scaled weight standardisation)": (lambda: create_backbone("test_nfnet", 32, 0), 32),
    "mobilenetv3 (depthwise, squeeze-excite, hard-swish)": (
        lambda: create_backbone("mobilenetv3_small_050", 32, 0), 32),
    "efficientnet evonorm": (lambda: create_backbone("test_efficientnet_evos", 32, 0), 32),
    "regnetx_002": (lambda: create_backbone("regnetx_002", 32, 0), 32),
    "mlp-mixer": (lambda: mixer(patch_size=8, num_blocks=2, embed_dim=16), 32),
    "resmlp (affine)": (lambda: mixer(resmlp=True, patch_size=8, num_blocks=2, embed_dim=16, mlp_ratio=4), 32),
    "levit (attention biases, BatchNorm on tokens)": (lambda: create_backbone(
        "levit_128s", 32, 0, model_kwargs=dict(embed_dim=(16, 24, 32), depth=(1, 1, 1),
                                              num_heads=(1, 2, 2), key_dim=8)), 32),
    "cait (talking heads, class attention)": (lambda: create_backbone(
        "cait_xxs24_224", 32, 0, model_kwargs=dict(
            patch_size=8, embed_dim=16, depth=2, num_heads=2, depth_token_only=1)), 32),
}


def family_network(name):
    factory, size = FAMILIES[name]
    return float64_network(factory, size, seed=0), size


@pytest.mark.parametrize("name", list(FAMILIES))
def test_family_matches_jacrev(name):
    model, size = family_network(name)
    x = torch.randn(N, 3, size, size, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    timings = {}
    K = engine._entk(model, x, None, 2.0, torch.float64, None, False, False, timings)
    assert rel_err(K, jacobian_kernel(model, x)) < 1e-10
    plan = timings["schedule"].plan
    assert not plan.fallback  # every family here runs without the whole-network fallback
    assert plan.probe_size >= 3


# ---------------------------------------------------------------------------------------
# toy models of the failure modes


class SelfReturning(nn.Module):
    """``.to()`` to the same dtype returns its own input (a self-referential recipe)."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)
        self.v = nn.Parameter(torch.randn(3))
        self.w = nn.Parameter(torch.randn(3))
        self.head = nn.Linear(3, 1)

    def forward(self, x):
        h = self.lin(x.flatten(1)[:, :4])
        h = h * self.v.view(1, -1).to(h.dtype)
        h = h + nn.functional.dropout(self.w.contiguous(), 0.5, training=False)
        return self.head(h).squeeze(-1)


class BatchTwoLookalike(nn.Module):
    """``(h.T * p.unsqueeze(1)).T`` with ``h`` of shape ``(B, 2)``: the output of the
    parameter's use looks batch-leading at B = 2 but its batch axis is axis 1."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 2)
        self.p = nn.Parameter(torch.randn(2))
        self.head = nn.Linear(2, 1)

    def forward(self, x):
        h = self.lin(x.flatten(1)[:, :4])
        return self.head((h.T * self.p.unsqueeze(1)).T).squeeze(-1)


class AuxiliaryHead(nn.Module):
    """Parameterised ops (linear, LayerNorm, elementwise) whose outputs never reach f."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)
        self.aux_norm = nn.LayerNorm(3)
        self.aux = nn.Linear(3, 2)
        self.aux_scale = nn.Parameter(torch.randn(2))
        self.head = nn.Linear(3, 1)

    def forward(self, x):
        h = self.lin(x.flatten(1)[:, :4])
        self.aux_out = self.aux(self.aux_norm(h)) * self.aux_scale
        return self.head(h).squeeze(-1)


class SampleMixing(nn.Module):
    """A parameter meets the batch mean: no per-sample split exists for that use."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)
        self.q = nn.Parameter(torch.randn(3))
        self.head = nn.Linear(3, 1)

    def forward(self, x):
        h = torch.tanh(self.lin(x.flatten(1)[:, :4]))
        return self.head(h + h.mean(0, keepdim=True) * self.q).squeeze(-1)


@pytest.mark.parametrize("cls", [SelfReturning, BatchTwoLookalike, AuxiliaryHead])
def test_toy_models_exact(cls):
    torch.manual_seed(0)
    model = cls().eval()
    x = torch.randn(N, 4, dtype=torch.float64)
    assert rel_err(entk(model, x), jacobian_kernel(model, x)) < 1e-10
    for n in (2, 5):  # batch sizes that equal one of the model's dims, or not
        xs = x[:n]
        assert rel_err(entk(model, xs), jacobian_kernel(model, xs)) < 1e-10


def test_lookalike_use_is_split_along_its_batch_axis():
    torch.manual_seed(0)
    model = BatchTwoLookalike().eval()
    cov = entk_flops(model, 2, 6)["coverage"]
    assert cov["generic"] == 2 and cov["fallback"] == 0  # p: single-op VJP on axis 1


def test_auxiliary_head_keeps_its_path_with_exact_zero():
    """The auxiliary branch's parameters stay on their structured/affine/VJP paths and
    contribute exactly zero (the kernel equals jacrev's in test_toy_models_exact)."""
    torch.manual_seed(0)
    model = AuxiliaryHead().eval()
    x = torch.randn(N, 4, dtype=torch.float64)
    timings = {}
    engine._entk(model, x, None, 2.0, torch.float64, None, False, False, timings)
    paths = timings["schedule"].plan.paths()
    assert paths["aux.weight"] in ("structured", "explicit")
    assert paths["aux_norm.weight"] == "affine" and paths["aux_scale"] == "generic"


def test_sample_mixing_model_is_refused():
    """f of a sample depends on the other samples of its batch: no per-sample gradient
    exists, the self-check cannot be satisfied, and the engine says so."""
    torch.manual_seed(0)
    with pytest.raises(RuntimeError, match="self-check keeps failing"):
        entk(SampleMixing().eval(), torch.randn(N, 4, dtype=torch.float64))


def test_cached_parameter_tensor_gets_a_clear_error():
    factory, size = FAMILIES["levit (attention biases, BatchNorm on tokens)"]
    backbone = seeded(factory, 0)  # attention-bias cache left on
    with torch.no_grad():
        p = backbone(torch.zeros(2, 3, size, size)).shape[1]
    model = scalar_network(backbone, p, head_seed=2)
    with pytest.raises(RuntimeError, match="attention_bias_cache"):
        entk(model, torch.randn(4, 3, size, size))


def test_probe_size_avoids_model_dims():
    assert verify._probe_size({1, 2, 3, 4, 5, 8}) == 7
    assert verify._probe_size({3}) == 5
    assert verify._probe_size(set()) == 3
    model, _ = family_network("nn.MultiheadAttention batch_first")
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64)
    timings = {}
    engine._entk(model, x, None, 2.0, torch.float64, None, False, False, timings)
    p = timings["schedule"].plan.probe_size
    assert p == 5  # 3 input channels, width 8, 16 tokens, 2 heads, 4x4 patches: 5 is free
    assert verify._probe_inputs(x[:2], None, 5, "cpu", torch.float64).unique(dim=0).shape[0] == 5


def test_per_sample_check_catches_what_the_sum_check_missed(monkeypatch):
    """Planted bug: the single-op VJP gives every sample the batch-summed gradient.
    The sum over the probe is still right; the per-sample check must reject it."""
    original = pieces._generic_grads

    def summed(use, plan, params, n, chunk_bytes):
        out = original(use, plan, params, n, chunk_bytes)
        return {k: v.sum(0, keepdim=True).expand_as(v) / n for k, v in out.items()}

    monkeypatch.setattr(pieces, "_generic_grads", summed)
    torch.manual_seed(0)
    model = BatchTwoLookalike().eval()
    x = torch.randn(N, 4, dtype=torch.float64)
    timings = {}
    K = engine._entk(model, x, None, 2.0, torch.float64, None, False, False, timings)
    assert "p" in timings["schedule"].plan.fallback  # rejected, recomputed exactly
    assert rel_err(K, jacobian_kernel(model, x)) < 1e-10


def test_per_sample_check_catches_a_swap_within_a_pass(monkeypatch):
    """Planted bug: the single-op VJP swaps the gradients of the first two samples of
    every pass; sums over a pass are unchanged, the check must reject it."""
    original = pieces._generic_grads

    def swapped(use, plan, params, n, chunk_bytes):
        out = original(use, plan, params, n, chunk_bytes)
        return {k: v[[1, 0] + list(range(2, n))] if n >= 2 else v for k, v in out.items()}

    monkeypatch.setattr(pieces, "_generic_grads", swapped)
    torch.manual_seed(0)
    model = BatchTwoLookalike().eval()
    x = torch.randn(N, 4, dtype=torch.float64)
    timings = {}
    K = engine._entk(model, x, None, 2.0, torch.float64, None, False, False, timings)
    assert "p" in timings["schedule"].plan.fallback  # rejected, recomputed exactly
    assert rel_err(K, jacobian_kernel(model, x)) < 1e-10


def test_unfed_site_fails_loudly(monkeypatch):
    """Planted bug: the capture loses one recorded call of a layer on the main pass."""
    model, size = family_network("nn.MultiheadAttention batch_first")
    x = torch.randn(N, 3, size, size, dtype=torch.float64)
    armed = {"main pass": False}
    verified, finish = engine._verified_plan, capture._Capture.finish

    def arm_after_self_check(*args, **kwargs):
        plan = verified(*args, **kwargs)
        armed["main pass"] = True
        return plan

    def drop_one(self):
        if armed["main pass"] and self.structured:
            self.structured.pop()
        finish(self)

    monkeypatch.setattr(engine, "_verified_plan", arm_after_self_check)
    monkeypatch.setattr(capture._Capture, "finish", drop_one)
    with pytest.raises(RuntimeError, match="did not receive every recorded call"):
        entk(model, x)


def test_batch_dependent_uses_fail_loudly():
    class Switch(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 1)
            self.b = nn.Linear(4, 1)

        def forward(self, x):  # control flow on the batch size: the probe sees only `a`
            h = x.flatten(1)[:, :4]
            return (self.a(h) if x.shape[0] < N else self.b(h)).squeeze(-1)

    torch.manual_seed(0)
    with pytest.raises(RuntimeError, match="did not on the probe batch"):
        entk(Switch().eval(), torch.randn(N, 4, dtype=torch.float64))

    class Repeat(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 4)
            self.head = nn.Linear(4, 1)

        def forward(self, x):  # one more use of `a` at the main pass's batch size
            h = self.a(x.flatten(1)[:, :4])
            if x.shape[0] == N:
                h = self.a(h)
            return self.head(h).squeeze(-1)

    with pytest.raises(RuntimeError, match="differs from the plan"):
        entk(Repeat().eval(), torch.randn(N, 4, dtype=torch.float64))


def test_out_of_memory_names_the_budget(monkeypatch):
    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 GiB")

    monkeypatch.setattr(engine, "contract", oom)
    model, size = family_network("nn.MultiheadAttention batch_first")
    x = torch.randn(4, 3, size, size, dtype=torch.float64)
    with pytest.raises(MemoryError, match="entk.memory_gb"):
        entk(model, x)


def test_other_errors_are_not_taken_for_missing_vmap_rules(monkeypatch):
    """Only a RuntimeError that is no allocation failure selects the per-sample loop."""
    from torch import func

    def no_memory(*args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(func, "vmap", lambda *a, **k: no_memory)
    torch.manual_seed(0)
    model = SampleMixing().eval()  # q goes to the whole-network fallback
    with pytest.raises(RuntimeError, match="can't allocate memory"):
        entk(model, torch.randn(N, 4, dtype=torch.float64))


def test_pass_batches_never_leave_one_sample():
    for n in range(2, 40):
        for b in range(1, 12):
            bounds = pieces._pass_batches(n, b)
            assert bounds[0][0] == 0 and bounds[-1][1] == n
            assert all(s1 == s0 for (_, s1), (s0, _) in zip(bounds, bounds[1:]))
            if b >= 2:
                assert all(stop - start >= 2 for start, stop in bounds)
