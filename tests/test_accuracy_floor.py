"""Accuracy floors, resolved ridge rows and the ridgeless LOO limit (SPEC §2), against
independent computations: exact leave-one-out refits, numpy eigvalsh, float64 kernels."""

import itertools

import numpy as np
import pytest

from rmtlens.estimators import (
    accuracy_floor,
    null_mask,
    resolved_ridges,
    ridge_path,
)
from rmtlens.estimators.accuracy import ROUNDOFF


def rank_deficient_features(seed=0):
    """30 x 6 features of rank 6 with duplicate rows, and one point that alone spans a direction."""
    rng = np.random.default_rng(seed)
    phi = rng.standard_normal((30, 6))
    phi[:5] = phi[5:10]  # five duplicated feature vectors
    phi[:, 5] = 0.0
    phi[29, 5] = 1.3  # point 29 alone has a component along the sixth feature
    y = np.eye(3)[rng.integers(0, 3, 30)] - 1 / 3
    return phi, y


def exact_ridgeless_loo(phi, y):
    """Mean squared leave-one-out residual of the minimum-norm interpolant, refitted per point
    in feature space (lstsq), never through the kernel's eigendecomposition."""
    terms = []
    for i in range(len(phi)):
        keep = np.arange(len(phi)) != i
        w = np.linalg.lstsq(phi[keep], y[keep], rcond=None)[0]
        terms.append(np.sum((y[i] - phi[i] @ w) ** 2))
    return float(np.mean(terms)), np.array(terms)


def test_ridgeless_loo_on_a_rank_deficient_kernel_with_duplicates_equals_exact_refits():
    phi, y = rank_deficient_features()
    K = phi @ phi.T / phi.shape[1]
    d, U = np.linalg.eigh(K)
    expected, terms = exact_ridgeless_loo(phi, y)
    assert np.all(np.isfinite(terms)) and terms[29] > 0  # the lone point is predicted from the others
    for floor in (None, accuracy_floor(d, 1e-7)):  # rcond default, and a float32-like floor
        path = ridge_path(d, U, y, K[:4], y[:4], [0.0], floor=floor)
        assert np.isfinite(path["loo"][0])
        assert path["loo"][0] == pytest.approx(expected, rel=1e-8)


def test_ridgeless_loo_of_a_full_rank_kernel_equals_exact_refits():
    rng = np.random.default_rng(3)
    phi = rng.standard_normal((25, 40))
    y = rng.standard_normal((25, 2))
    K = phi @ phi.T / 40
    d, U = np.linalg.eigh(K)
    expected, _ = exact_ridgeless_loo(phi, y)
    path = ridge_path(d, U, y, K[:3], y[:3], [0.0, 1e-9])
    assert path["loo"][0] == pytest.approx(expected, rel=1e-8)
    assert path["loo"][1] == pytest.approx(expected, rel=1e-5)  # continuous in λ → 0⁺


def test_floor_and_resolved_rows_against_an_independent_computation():
    rng = np.random.default_rng(1)
    n = 50
    phi = rng.standard_normal((n, n)) * np.arange(1, n + 1) ** -2.0  # eigenvalues from ~1 to ~1e-13
    K = phi @ phi.T
    d_np = np.linalg.eigvalsh(K)
    eps, safety = 1e-8, 10.0
    floor = accuracy_floor(d_np[::-1], eps, safety)
    expected_floor = safety * (eps + n * 2.0**-53) * d_np.max()
    assert floor == pytest.approx(expected_floor, rel=1e-12)
    assert np.array_equal(null_mask(d_np, floor), d_np <= expected_floor)
    assert accuracy_floor(d_np, eps, safety, rcond=1e-3) == pytest.approx(1e-3 * d_np.max())
    lambdas = np.geomspace(1e-14, 1e-2, 25) * d_np.max() / n
    band = np.any((d_np > expected_floor / safety) & (d_np <= expected_floor * safety))
    assert band  # this spectrum decays through its floor: small ridges are not resolved
    expected = n * lambdas >= expected_floor
    assert np.array_equal(resolved_ridges(d_np, n, lambdas, floor, safety), expected)
    assert not resolved_ridges(d_np, n, [0.0], floor, safety)[0]
    # a spectrum with a gap of more than safety² around the floor: every row is resolved
    gapped = np.concatenate([np.geomspace(1.0, 1e-3, 20), np.full(5, 1e-12)])
    f = accuracy_floor(gapped, 1e-8, safety)
    assert np.all(resolved_ridges(gapped, 25, [0.0, 1e-20, 1.0], f, safety))
    assert null_mask(gapped, f).sum() == 5


def test_ridge_table_has_resolved_flags_and_no_nan():
    phi, y = rank_deficient_features(2)
    K = phi @ phi.T / 6
    d, U = np.linalg.eigh(K)
    lambdas = np.concatenate([[0.0], np.geomspace(1e-12, 1.0, 9)])
    path = ridge_path(d, U, y, K[:7], y[:7], lambdas, floor=accuracy_floor(d, 0.0))
    assert path["resolved"].dtype == bool and path["resolved"].all()  # rank 6 of 30: a clean gap
    for key, values in path.items():
        assert not np.any(np.isnan(np.asarray(values, dtype=float))), key


def test_floor_includes_the_eigendecomposition_roundoff():
    d = np.array([2.0, 1.0, 0.5])
    assert accuracy_floor(d, 0.0, 4.0) == pytest.approx(4.0 * 3 * ROUNDOFF * 2.0)
    with pytest.raises(ValueError, match="relative_error"):
        accuracy_floor(d, -1.0)
    with pytest.raises(ValueError, match="safety"):
        accuracy_floor(d, 1e-8, safety=0.5)


def digits_inputs(count):
    """The first ``count`` of a seeded permutation of scikit-learn's digits, upsampled to 32 px,
    with centred one-hot targets (the workflow's default images)."""
    import torch
    from sklearn.datasets import load_digits

    digits = load_digits()
    idx = np.random.default_rng(0).permutation(len(digits.images))[:count]
    img = np.kron(digits.images[idx], np.ones((4, 4))) / 16.0 - 0.5
    x = torch.tensor(np.repeat(img[:, None], 3, axis=1), dtype=torch.float32)
    return x, np.eye(10)[digits.target[idx]] - 0.1


@pytest.fixture(scope="module")
def float32_and_float64_entk():
    """The eNTK of one small network on 60 pool + 20 test digits, in float32 and float64,
    and the float32 kernel's accuracy record (probe: the first 32 pool images)."""
    import torch

    from rmtlens.inputs import create_backbone, feature_dim
    from rmtlens.kernels import entk, entk_accuracy, scalar_network

    backbone = create_backbone("test_vit", 32, 0)
    model = scalar_network(backbone, feature_dim(backbone, 32), head_seed=1)
    x, y = digits_inputs(80)
    K64 = entk(model, x, x[:60], dtype=torch.float64)
    K32 = entk(model, x, x[:60], dtype=torch.float32)
    return K32, K64, entk_accuracy(model, x[:32], torch.float32), y


def test_the_probe_measures_the_error_seen_by_the_low_eigen_directions(float32_and_float64_entk):
    """Recomputed with numpy on the probe, and extrapolated to the whole 60-image pool block
    within the safety factor; the float32 kernel's negative eigenvalues lie within it."""
    K32, K64, record, _ = float32_and_float64_entk
    assert record["dtype"] == "float32" and record["probe_size"] == 32
    for size, factor in ((32, 1.0 + 1e-6), (60, 10.0)):
        a, b = K64[:size, :size], K32[:size, :size]
        d, V = np.linalg.eigh(0.5 * (a + a.T))
        E = 0.5 * (b - a + (b - a).T)
        low = V[:, : size // 2]
        low_error = np.linalg.norm(low.T @ E @ low, 2) / d[-1]
        assert 0 < low_error <= factor * record["relative_error"]
        assert -np.linalg.eigvalsh(0.5 * (b + b.T)).min() <= factor * record["relative_error"] * d[-1]
    assert record["low_subspace_difference"] < record["spectral_difference"]
    assert record["entrywise_difference"] == pytest.approx(np.abs(K32[:32, :32] - K64[:32, :32]).max()
                                                           / np.abs(K64[:32, :32]).max(), rel=1e-9)


def test_float32_and_float64_ridge_tables_agree_on_every_resolved_row(float32_and_float64_entk):
    """Both kernels nulled at the float32 kernel's floor: every row flagged resolved (λ = 0 rows
    included) agrees to 1/safety (each filter value 1/(d + nλ) is then off by at most
    σ/(d + nλ) ≤ 1/safety), and the flags are exactly nλ ≥ floor or a gap around it
    (recomputed with numpy's eigvalsh)."""
    K32, K64, record, y = float32_and_float64_entk
    safety = 10.0
    lambdas_rel = np.concatenate([[0.0], np.geomspace(1e-9, 1.0, 10)])
    kept_ridgeless = dropped_ridgeless = 0
    # the measured error, and a 1e4 times larger one (a cruder kernel): the floor rule must
    # hold for both, and between them the ridgeless rows are seen both kept and dropped
    for eps, n in itertools.product((record["relative_error"], 1e4 * record["relative_error"]), (12, 24, 60)):
        train = np.arange(n)
        paths, floors = {}, {}
        for name, K in (("32", K32), ("64", K64)):
            d, U = np.linalg.eigh(K[:n, :n])
            floors[name] = accuracy_floor(d, eps, safety)
            scale = np.mean(np.diag(K[:60]))
            paths[name] = ridge_path(d, U, y[train], K[60:, :n], y[60:], lambdas_rel * scale, floor=floors[name],
                                     safety=safety)
        d = np.linalg.eigvalsh(0.5 * (K32[:n, :n] + K32[:n, :n].T))
        floor = safety * (eps + n * 2.0**-53) * d.max()
        assert floors["32"] == pytest.approx(floor, rel=1e-9)
        gap = not np.any((d > floor / safety) & (d <= floor * safety))
        flags = (n * paths["32"]["lambda"] >= floor) | gap
        assert np.array_equal(paths["32"]["resolved_floor"], flags)
        # the cutoff rule can only remove rows (recomputed at half and twice the floor in
        # test_resolved_rows_survive_their_own_cutoff)
        assert np.array_equal(paths["32"]["resolved"], flags & (paths["32"]["floor_change"] < 0.01))
        for key in ("test_risk", "train_risk", "gcv", "loo", "dof"):
            a, b = paths["32"][key], paths["64"][key]
            diff = np.where(a == b, 0.0, np.abs(a - b) / np.where(b == 0, 1.0, np.abs(b)))  # exact 0 = 0 (interpolation)
            assert np.all(diff[flags] <= 1 / safety), (n, key, diff)
        kept_ridgeless += int(flags[0])
        dropped_ridgeless += int(not flags[0])
    assert kept_ridgeless and dropped_ridgeless  # the test sees both kinds of ridgeless rows


def crowded_problem(gapped, seed=0, n=60, m=30, C=2):
    """``K = Q diag(d) Qᵀ`` with ``K* = R diag(d) Qᵀ`` and targets of equal power in every
    eigen-direction (``Y = Q c``, ``Y* = R c``), so the directions at the floor carry as much
    of the target as any. ``d`` decays through the floor of ε = 1e-7 (a factor 1.42 apart: four
    eigenvalues within a factor 2 of it), or has a gap of 1e9 around it (``gapped``)."""
    rng = np.random.default_rng(seed)
    d = np.concatenate([np.geomspace(1.0, 1e-3, n - 10), np.full(10, 1e-12)]) if gapped else np.geomspace(1.0, 1e-9, n)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    R, c = rng.standard_normal((m, n)), rng.standard_normal((n, C))
    return d, Q, Q @ np.diag(d) @ Q.T, R @ np.diag(d) @ Q.T, Q @ c, R @ c


def brute_force_at_floor(d, Q, K, Ks, Y, Ys, cutoff, lam):
    """Test risk, GCV and LOO of ridge on the kernel with the directions ``d ≤ cutoff`` removed,
    by dense solves and explicit leave-one-out refits (no eigenbasis): ``K_g = Σ_{d > g} d q qᵀ``,
    predictions ``K* P_g (K_g + nλI)⁻¹ Y`` with ``P_g`` the projector on the kept directions."""
    n = len(d)
    keep = d > cutoff
    Kg, P = Q[:, keep] @ np.diag(d[keep]) @ Q[:, keep].T, Q[:, keep] @ Q[:, keep].T
    M = Kg + n * lam * np.eye(n)
    alpha = np.linalg.solve(M, Y)
    dof = np.trace(Kg @ np.linalg.inv(M))
    loo = []
    for i in range(n):
        k = np.arange(n) != i
        a = np.linalg.solve(Kg[np.ix_(k, k)] + n * lam * np.eye(n - 1), Y[k])
        loo.append(np.sum((Y[i] - Kg[i, k] @ a) ** 2))
    return dict(test_risk=np.mean(np.sum((Ks @ P @ alpha - Ys) ** 2, axis=1)),
                gcv=np.sum((Y - Kg @ alpha) ** 2) / n / (1 - dof / n) ** 2, loo=np.mean(loo))


@pytest.mark.parametrize("gapped", [False, True])
def test_resolved_rows_survive_their_own_cutoff(gapped):
    """A row is resolved when the floor rule says so *and* its test risk, GCV and
    LOO move by less than 1% when the floor is halved and doubled. Crowded spectrum: the rows
    with nλ = 3 f and 10 f pass the floor rule but move by 4% and 1.3%; far above the floor
    (nλ ≥ 30 f) they move by < 0.5% and stay. Gapped spectrum: no direction changes side,
    every row stays resolved under both rules. The changes are recomputed by brute force."""
    d, Q, K, Ks, Y, Ys = crowded_problem(gapped)
    n, eps, tol = len(d), 1e-7, 0.01
    floor = 10 * (eps + n * 2.0**-53) * d.max()
    assert np.sum((d > floor / 2) & (d <= 2 * floor)) == (0 if gapped else 4)
    lams = np.geomspace(1e-8, 1e-1, 15) / n
    path = ridge_path(d, Q, Y, Ks, Ys, np.append(0.0, lams), floor=accuracy_floor(d, eps), floor_tolerance=tol)
    # ridgeless: unresolved by the floor rule on the crowded spectrum; on the gapped one resolved,
    # and its LOO (the only number whose limit the floor decides) unmoved at half and twice the floor
    assert path["resolved"][0] == path["resolved_floor"][0] == gapped
    assert path["floor_change"][0] == 0.0 or not gapped
    path = {key: value[1:] for key, value in path.items()}
    old = (n * lams >= floor) | (not np.any((d > floor / 10) & (d <= floor * 10)))
    assert np.array_equal(path["resolved_floor"], old)
    change = np.zeros(lams.size)
    for j, lam in enumerate(lams):
        ref = brute_force_at_floor(d, Q, K, Ks, Y, Ys, floor, lam)
        for key in ("test_risk", "gcv", "loo"):
            # the eigenbasis and the dense solves agree to ~1e-9 at nλ = 1e-8 λ_max (conditioning)
            assert path[key][j] == pytest.approx(ref[key], rel=1e-7), key
        for cutoff in (floor / 2, 2 * floor):
            moved = brute_force_at_floor(d, Q, K, Ks, Y, Ys, cutoff, lam)
            change[j] = max(change[j], *(abs(moved[k] - ref[k]) / abs(ref[k]) for k in ref))
    assert np.all(np.abs(change - tol) > 1e-3)  # no row within rounding distance of the tolerance
    np.testing.assert_allclose(path["floor_change"], change, rtol=1e-5, atol=1e-9)
    expected = old & (change < tol)
    assert np.array_equal(path["resolved"], expected)
    if gapped:
        assert expected.all() and np.all(change < 1e-9)
    else:  # the rule removes rows the floor rule kept, and keeps those far above the floor
        assert np.sum(old & ~expected) == 2 and expected[n * lams >= 30 * floor].all()
    no_rule = ridge_path(d, Q, Y, Ks, Ys, lams, floor=floor, floor_tolerance=None)
    assert np.array_equal(no_rule["resolved"], old) and "floor_change" not in no_rule
    with pytest.raises(ValueError, match="floor tolerance"):
        ridge_path(d, Q, Y, Ks, Ys, lams, floor=floor, floor_tolerance=0.0)
