"""The public API of ``import rmtlens``: light import, documented names, the notebook-level
wrappers against direct computations, and the README's "Use from Python" example run as is."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO

import rmtlens


def test_import_is_light_and_every_name_resolves():
    code = (
        "import sys, rmtlens; "
        "assert not {'torch', 'timm', 'pandas', 'torchvision'} & set(sys.modules), sorted(sys.modules); "
        "print(len(rmtlens.__all__))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout) == len(rmtlens.__all__) >= 25
    wanted = {"backbone_entk", "entk", "backbone_feature_kernel", "feature_kernel", "ridge_path_table", "ridge_path",
              "gcv", "loo", "solve_kappa", "deterministic_equivalent", "fit_power_law", "fit_spectrum_power_laws",
              "fit_scaling_exponent", "gradient_flow_path"}
    assert wanted <= set(rmtlens.__all__)
    for name in rmtlens.__all__:
        obj = getattr(rmtlens, name)
        doc = obj.__doc__ or ""
        assert len(doc) > 60, f"rmtlens.{name} has no real docstring"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        rmtlens.nope


def kernel_problem(seed=0, n=40, m=25, p=12, C=3):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n + m, p))
    # linear plus Gaussian kernel: symmetric positive definite
    K_all = X @ X.T / p + np.exp(-np.sum((X[:, None] - X[None]) ** 2, -1) / (2 * p))
    Y = rng.standard_normal((n + m, C))
    return K_all[:n, :n], Y[:n], K_all[n:, :n], Y[n:]


def direct_solves(K, Y, Ks, Ys, lam):
    """Risks, GCV and LOO at one absolute ridge by explicit inverses and leave-one-out refits."""
    n = len(K)
    alpha = np.linalg.solve(K + n * lam * np.eye(n), Y)
    S = K @ np.linalg.inv(K + n * lam * np.eye(n))
    train = np.sum((Y - K @ alpha) ** 2) / n
    loo = 0.0
    for i in range(n):
        keep = np.arange(n) != i
        a = np.linalg.solve(K[np.ix_(keep, keep)] + n * lam * np.eye(n - 1), Y[keep])  # same absolute ridge nλ
        loo += np.sum((K[i, keep] @ a - Y[i]) ** 2) / n
    pred = Ks @ alpha
    wrong = np.sign(pred[:, 0]) != np.sign(Ys[:, 0]) if Y.shape[1] == 1 else pred.argmax(1) != Ys.argmax(1)
    return dict(test_risk=np.mean(np.sum((pred - Ys) ** 2, 1)), train_risk=train,
                gcv=train / (1 - np.trace(S) / n) ** 2, loo=loo, dof=np.trace(S), test_error=np.mean(wrong))


def test_ridge_path_table_matches_direct_solves():
    K, Y, Ks, Ys = kernel_problem()
    scale = np.trace(K) / len(K)
    lambdas_rel = np.array([1e-4, 1e-2, 0.3, 5.0])
    table = rmtlens.ridge_path_table(K, Y, Ks, Ys, lambdas_rel, relative=True)
    assert list(table.columns) == ["lambda", "lambda_rel", "test_risk", "test_error", "train_risk", "gcv", "loo", "dof"]
    assert len(table) == 4 and (table.dtypes == np.float64).all()
    np.testing.assert_allclose(table["lambda"], lambdas_rel * scale, rtol=1e-15)
    np.testing.assert_allclose(table["lambda_rel"], lambdas_rel, rtol=1e-14)
    for row in table.to_dict("records"):
        ref = direct_solves(K, Y, Ks, Ys, row["lambda"])
        for key, value in ref.items():
            assert row[key] == pytest.approx(value, rel=1e-8, abs=1e-12), key
        assert rmtlens.gcv(K, Y, row["lambda"]) == pytest.approx(ref["gcv"], rel=1e-8)
        assert rmtlens.loo(K, Y, row["lambda"]) == pytest.approx(ref["loo"], rel=1e-8)
    absolute = rmtlens.ridge_path_table(K, Y, Ks, Ys, lambdas_rel * scale)
    np.testing.assert_allclose(absolute.to_numpy(), table.to_numpy(), rtol=1e-12)


def test_one_output_targets_and_errors_name_the_argument():
    K, Y, Ks, Ys = kernel_problem(C=1)
    one = rmtlens.ridge_path_table(K, Y[:, 0], Ks, Ys[:, 0], [0.1])  # (n,) targets
    for key, value in direct_solves(K, Y, Ks, Ys, 0.1).items():
        assert one[key][0] == pytest.approx(value, rel=1e-8, abs=1e-12), key
    bad = K.copy()
    bad[0, 1] += 1.0
    with pytest.raises(ValueError, match="k_train is not symmetric"):
        rmtlens.ridge_path_table(bad, Y, Ks, Ys, [0.1])
    with pytest.raises(ValueError, match="k_train must be a square"):
        rmtlens.gcv(K[:, :5], Y, 0.1)
    with pytest.raises(ValueError, match="k_test must have shape"):
        rmtlens.ridge_path_table(K, Y, Ks[:, :5], Ys, [0.1])
    with pytest.raises(ValueError, match="lam must be a finite ridge"):
        rmtlens.loo(K, Y, -1.0)


def tiny_backbone():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        net = torch.nn.Sequential(
            torch.nn.Conv2d(3, 4, 3, stride=2), torch.nn.ReLU(), torch.nn.Conv2d(4, 5, 3),
            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
        )
    return net.double().eval()


def test_backbone_entk_equals_jacobian_products():
    backbone = tiny_backbone()
    x = torch.randn(7, 3, 12, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    K = rmtlens.backbone_entk(backbone, x, x[:4], head_seed=5)
    assert K.shape == (7, 4) and K.dtype == np.float64
    # reference: torch.func Jacobians of the same scalar network (head seeded as documented)
    model = rmtlens.scalar_network(backbone, 5, head_seed=5)
    params = {k: v.detach() for k, v in model.named_parameters()}

    def f(p, xi):
        return torch.func.functional_call(model, p, (xi[None],))[0]

    J = torch.func.vmap(torch.func.jacrev(f), in_dims=(None, 0))(params, x)
    J = torch.cat([j.reshape(len(x), -1) for j in J.values()], dim=1).numpy()
    np.testing.assert_allclose(K, J @ J[:4].T, rtol=1e-10, atol=1e-12)
    sym = rmtlens.backbone_entk(backbone, x[:4], head_seed=5)
    np.testing.assert_allclose(sym, J[:4] @ J[:4].T, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="x_rows must be a float tensor"):
        rmtlens.backbone_entk(backbone, x.numpy())


def test_backbone_feature_kernel_equals_features_product():
    backbone = tiny_backbone()
    x = torch.randn(9, 3, 12, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        phi = backbone(x).numpy().astype(np.float32).astype(np.float64)
    K = rmtlens.backbone_feature_kernel(backbone, x[:6], x[6:], batch_size=4)
    np.testing.assert_allclose(K, phi[:6] @ phi[6:].T / 5, rtol=1e-12)
    sym = rmtlens.backbone_feature_kernel(backbone, x, batch_size=2)
    assert np.array_equal(sym, sym.T)
    np.testing.assert_allclose(sym, phi @ phi.T / 5, rtol=1e-12)


def readme_python_example() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("## Use from Python", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the 'Use from Python' section must hold exactly one python block"
    return blocks[0]


def test_readme_example_runs_as_is(capsys):
    code = readme_python_example()
    assert "backbone_entk" in code and "ridge_path_table" in code and "assert" in code
    exec(compile(code, "README.md (Use from Python)", "exec"), {"__name__": "readme_example"})
    out = capsys.readouterr().out
    assert "GCV picks" in out and "test_risk" in out
