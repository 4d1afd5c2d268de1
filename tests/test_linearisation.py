"""Networks versus their linearisation (E8) against explicit torch.func Jacobians."""

import copy

import numpy as np
import pandas as pd
import pytest
import torch
from torch.func import functional_call, jacrev

from rmtlens.inputs import digits_images, preprocess
from rmtlens.studies import (
    IMAGE_MEAN,
    IMAGE_STD,
    MODELS,
    Linearisation,
    eigenfunction_labels,
    kernel_target_alignment,
    linearisation_claims,
    predict,
    run_linearisation_study,
    small_cnn,
    train_sgd,
)

TINY = dict(width=3, depth=2)


def jacobian(model, x):
    """``(N, P)`` float64 Jacobian of a scalar model by ``jacrev`` (parameter order)."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    J = jacrev(lambda p: functional_call(model, p, (x,)))(params)
    return torch.cat([J[k].reshape(x.shape[0], -1) for k in params], dim=1)


def tiny_data(seed=0, n_train=14, n_test=8, side=8):
    g = torch.Generator().manual_seed(seed)
    x_train = torch.randn(n_train, 3, side, side, generator=g)
    x_test = torch.randn(n_test, 3, side, side, generator=g)
    rng = np.random.default_rng(seed)
    return x_train, rng.integers(0, 4, n_train), x_test, rng.integers(0, 4, n_test)


def tiny_study(seed=0, **overrides):
    x_train, y_train, x_test, y_test = tiny_data()
    kwargs = dict(
        super_classes=[0, 1], eigen_indices=[1, 3], epochs=2, batch_size=5, lr=0.05,
        seed=seed, alignment_points=6, checkpoints=[0, 1, 2], memory_gb=0.5, device="cpu", **TINY,
    )
    kwargs.update(overrides)
    return run_linearisation_study(x_train, y_train, x_test, y_test, **kwargs)


def same_up_to_sign(a, b):
    return np.array_equal(a, b) or np.array_equal(a, -b)


# --------------------------------------------------------------------------------------
# the linear models


@pytest.mark.parametrize("offset", [True, False])
def test_linearisation_equals_explicit_taylor_model(offset):
    net = small_cnn(**TINY, seed=1).double()
    x = torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    lin = Linearisation(net, offset=offset)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for d in lin.delta:
            d.copy_(0.3 * torch.randn(d.shape, generator=g, dtype=d.dtype))
    delta = torch.cat([d.detach().reshape(-1) for d in lin.delta])
    theta0 = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    theta = torch.cat([w.reshape(-1) for w in lin.weights().values()])
    expected = jacobian(net, x) @ (theta - theta0)
    if offset:
        expected = expected + net(x).detach()
    np.testing.assert_allclose(predict(lin, x), expected.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(theta - theta0, delta, rtol=0, atol=1e-15)
    # the linear model is not the network at the displaced weights
    at_theta = functional_call(net, lin.weights(), (x,)).detach().numpy()
    assert np.max(np.abs(at_theta - predict(lin, x))) > 1e-3


def test_linearisation_is_frozen_copy_and_only_delta_trains():
    net = small_cnn(**TINY, seed=4)
    lin = Linearisation(net)
    trainable = [p for p in lin.parameters() if p.requires_grad]
    assert len(trainable) == len(list(net.parameters()))
    assert all(torch.count_nonzero(p) == 0 for p in trainable)
    before = predict(lin, torch.ones(2, 3, 8, 8))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    np.testing.assert_array_equal(predict(lin, torch.ones(2, 3, 8, 8)), before)


def test_small_lr_training_of_linearisation_matches_first_order_change_of_network():
    x_train, _, x_test, _ = tiny_data(seed=5)
    x_train, x_test = x_train.double(), x_test.double()
    y = np.where(np.arange(x_train.shape[0]) % 2 == 0, 1.0, -1.0)
    net0 = small_cnn(**TINY, seed=6).double()
    gaps = []
    for lr in (1e-2, 1e-3):
        net, lin = small_cnn(**TINY, seed=6).double(), Linearisation(net0)
        recipe = dict(epochs=2, batch_size=4, lr=lr, seed=7)
        train_sgd(net, x_train, y, **recipe)
        train_sgd(lin, x_train, y, **recipe)
        change_net = predict(net, x_test) - predict(net0, x_test)
        change_lin = predict(lin, x_test) - predict(net0, x_test)
        assert np.linalg.norm(change_net) > 0
        gaps.append(np.linalg.norm(change_net - change_lin) / np.linalg.norm(change_net))
    assert gaps[0] < 0.05
    assert gaps[1] < gaps[0] / 5  # the mismatch is second order in the step size


def test_train_sgd_uses_seeded_batches_and_logistic_loss():
    x_train, _, _, _ = tiny_data(seed=8)
    y = np.where(np.arange(x_train.shape[0]) < 7, 1.0, -1.0)
    curves, outputs = [], []
    for seed in (0, 0, 1):
        net = small_cnn(**TINY, seed=9)
        curves.append(train_sgd(net, x_train, y, epochs=3, batch_size=4, lr=0.05, seed=seed))
        outputs.append(predict(net, x_train))
    np.testing.assert_array_equal(outputs[0], outputs[1])  # exact: the same seeded run twice
    assert not np.array_equal(outputs[0], outputs[2])
    # one full-batch step from the same weights: loss is softplus(-y f) at those weights
    net = small_cnn(**TINY, seed=9)
    f0 = predict(net, x_train)
    loss = train_sgd(net, x_train, y, epochs=1, batch_size=x_train.shape[0], lr=1e-3, seed=0)
    np.testing.assert_allclose(loss[0], np.mean(np.logaddexp(0, -y * f0)), rtol=1e-5)


# --------------------------------------------------------------------------------------
# tasks and alignment


def test_kernel_target_alignment_definition_and_closed_forms():
    rng = np.random.default_rng(10)
    phi = rng.standard_normal((9, 4))
    K = phi @ phi.T
    y = rng.choice([-1.0, 1.0], 9)
    expected = sum(y[i] * K[i, j] * y[j] for i in range(9) for j in range(9)) / (9 * np.trace(K))
    assert kernel_target_alignment(K, y) == pytest.approx(expected, rel=1e-12)
    assert kernel_target_alignment(np.outer(y, y), y) == pytest.approx(1.0)
    assert kernel_target_alignment(np.eye(9), y) == pytest.approx(1 / 9)


def test_eigenfunction_labels_orientation_and_zero_breaking():
    rng = np.random.default_rng(11)
    Q, _ = np.linalg.qr(rng.standard_normal((7, 7)))
    d = np.array([5.0, 4.0, 3.0, 2.0, 1.5, 1.0, 0.5])
    labels, eigenvalues = eigenfunction_labels(Q @ np.diag(d) @ Q.T, [0, 2, 6])
    np.testing.assert_allclose(eigenvalues, d[[0, 2, 6]])
    for row, k in zip(labels, [0, 2, 6]):
        v = Q[:, k] * np.sign(Q[np.argmax(np.abs(Q[:, k])), k])
        np.testing.assert_array_equal(row, np.where(v >= 0, 1.0, -1.0))
    # eigenvectors with exact zeros: e_0 of diag(1, 3, 2) is the second index
    labels, eigenvalues = eigenfunction_labels(np.diag([1.0, 3.0, 2.0]), [0, 2])
    np.testing.assert_array_equal(labels, np.ones((2, 3)))
    np.testing.assert_array_equal(eigenvalues, [3.0, 1.0])


def test_study_labels_and_initial_alignment_match_explicit_kernel():
    out = tiny_study()
    x_train, y_class_train, x_test, y_class_test = tiny_data()
    net0 = small_cnn(**TINY, seed=0).double()
    x_all = torch.cat([x_train, x_test]).double()
    J = jacobian(net0, x_all).numpy()
    K = J @ J.T
    d, U = np.linalg.eigh(K)
    d, U = d[::-1], U[:, ::-1]
    n_train = x_train.shape[0]
    labels = out["labels"]
    tasks = out["tasks"].set_index("j", drop=False)
    for j in (1, 3):
        assert min(d[j - 1] - d[j], d[j] - d[j + 1]) > 1e-6 * d[0]  # non-degenerate
        got = labels[labels["j"] == j].sort_values(["split", "index"], ascending=[False, True])
        assert same_up_to_sign(got["label"].to_numpy(), np.where(U[:, j] >= 0, 1.0, -1.0))
        assert tasks.loc[j, "eigenvalue"] == pytest.approx(d[j], rel=1e-8)
    sc = labels[labels["task"] == "superclass"]
    expected = np.where(np.isin(np.concatenate([y_class_train, y_class_test]), [0, 1]), 1.0, -1.0)
    np.testing.assert_array_equal(
        sc.sort_values(["split", "index"], ascending=[False, True])["label"], expected
    )
    points = out["alignment_points"]
    rows = {
        "train": points[points["split"] == "train"]["index"].to_numpy(),
        "test": n_train + points[points["split"] == "test"]["index"].to_numpy(),
    }
    align = out["alignment"]
    for (task, j), group in labels.groupby(["task", "j"], dropna=False):
        y_all = group.sort_values(["split", "index"], ascending=[False, True])["label"].to_numpy()
        for split, r in rows.items():
            expected = (y_all[r] @ K[np.ix_(r, r)] @ y_all[r]) / (r.size * np.trace(K[np.ix_(r, r)]))
            mask = (align["task"] == task) & (align["epoch"] == 0) & (align["split"] == split)
            mask &= align["j"].isna() if pd.isna(j) else align["j"] == j
            assert align.loc[mask, "alignment"].item() == pytest.approx(expected, rel=1e-8)


def test_study_alignment_follows_the_trained_network():
    out = tiny_study()
    x_train, _, _, _ = tiny_data()
    labels = out["labels"]
    y = labels[(labels["j"] == 3) & (labels["split"] == "train")].sort_values("index")["label"]
    net, snapshots = small_cnn(**TINY, seed=0), {}

    def keep(epoch):
        snapshots[epoch] = copy.deepcopy(net).double()

    train_sgd(net, x_train, y.to_numpy(), epochs=2, batch_size=5, lr=0.05, seed=0, checkpoint=keep)
    points = out["alignment_points"]
    r = points[points["split"] == "train"]["index"].to_numpy().copy()
    align = out["alignment"]
    expected = {}
    for epoch in (0, 1, 2):
        J = jacobian(snapshots[epoch], x_train[r].double()).numpy()
        expected[epoch] = kernel_target_alignment(J @ J.T, y.to_numpy()[r])
        got = align[(align["j"] == 3) & (align["epoch"] == epoch) & (align["split"] == "train")]
        assert got["alignment"].item() == pytest.approx(expected[epoch], rel=1e-8)
    assert expected[2] != pytest.approx(expected[0], rel=1e-6)


def test_study_is_deterministic_for_a_seed():
    calls = []
    first, second, other = tiny_study(seed=0, progress=lambda: calls.append(1)), tiny_study(seed=0), tiny_study(seed=1)
    assert len(calls) == 3 * 2 * 3  # three models x two epochs x three tasks (super-class, j = 1, 3)
    assert first.keys() == second.keys()
    for name in first:
        pd.testing.assert_frame_equal(first[name], second[name])
    assert not np.allclose(first["alignment"]["alignment"], other["alignment"]["alignment"])


# --------------------------------------------------------------------------------------
# smoke run on real images: invariants only


def test_study_on_digits_satisfies_invariants():
    images, classes, _ = digits_images()
    rng = np.random.default_rng(12)
    rows = rng.permutation(len(classes))[:100]
    x = preprocess(images[rows], 32, IMAGE_MEAN, IMAGE_STD)
    n_train, epochs, checkpoints = 60, 2, [0, 2]
    out = run_linearisation_study(
        x[:n_train], classes[rows[:n_train]], x[n_train:], classes[rows[n_train:]],
        super_classes=range(5), eigen_indices=[1, 4], width=4, depth=3, epochs=epochs,
        batch_size=16, lr=0.05, seed=0, alignment_points=30, checkpoints=checkpoints,
        memory_gb=0.5, device="cpu",
    )
    acc, align, tasks, labels = out["accuracy"], out["alignment"], out["tasks"], out["labels"]
    assert len(acc) == 3 * 3 and set(acc["model"]) == set(MODELS)
    for col, n in (("train_accuracy", n_train), ("test_accuracy", 40)):
        values = acc[col].to_numpy() * n
        np.testing.assert_allclose(values, np.round(values), atol=1e-9)
        assert acc[col].between(0, 1).all()
    assert np.isfinite(out["loss"]["train_loss"]).all() and len(out["loss"]) == 9 * epochs
    assert len(align) == 3 * 2 * len(checkpoints) and align["alignment"].between(0, 1).all()
    eig = tasks.dropna(subset=["j"]).sort_values("j")["eigenvalue"].to_numpy()
    assert eig[0] >= eig[1] > 0
    assert set(labels["label"]) == {-1.0, 1.0} and len(labels) == 3 * 100
    sc = labels[labels["task"] == "superclass"].sort_values(["split", "index"], ascending=[False, True])
    np.testing.assert_array_equal(sc["label"] > 0, classes[rows] < 5)
    for _, task in tasks.iterrows():
        mask = (labels["task"] == task["task"]) & (labels["split"] == "test")
        mask &= labels["j"].isna() if pd.isna(task["j"]) else labels["j"] == task["j"]
        assert task["positive_fraction_test"] == pytest.approx(np.mean(labels.loc[mask, "label"] > 0))
    claims = linearisation_claims(acc, align)
    gap = claims["gap"].merge(acc, on=["task", "j", "model"])
    network = acc[acc["model"] == "network"][["task", "j", "test_accuracy"]]
    gap = gap.merge(network, on=["task", "j"], suffixes=("", "_network"))
    np.testing.assert_allclose(
        gap["network_minus_model"], gap["test_accuracy_network"] - gap["test_accuracy"]
    )
    change = claims["alignment_change"]
    assert len(change) == 6 and (change["first_epoch"] == 0).all() and (change["last_epoch"] == 2).all()
    assert set(claims["ranking"]["model"]) == {"linearised_init", "linearised_end"}


def test_claims_on_constructed_tables():
    rows = []
    for j, (net, init, end) in enumerate([(0.9, 0.8, 0.95), (0.8, 0.7, 0.6), (0.7, 0.75, 0.5)], start=1):
        for model, value in zip(MODELS, (net, init, end)):
            rows.append(dict(task="eigenfunction", j=j, model=model, test_accuracy=value))
    accuracy = pd.DataFrame(rows)
    alignment = pd.DataFrame(
        [dict(task="eigenfunction", j=1, epoch=e, split="train", alignment=a)
         for e, a in [(5, 0.3), (0, 0.1), (10, 0.4)]]
    )
    claims = linearisation_claims(accuracy, alignment)
    ranking = claims["ranking"].set_index("model")
    assert ranking.loc["linearised_init", "spearman"] == pytest.approx(0.5)
    assert ranking.loc["linearised_end", "spearman"] == pytest.approx(1.0)
    trend = claims["difficulty_trend"].set_index("model")
    assert trend.loc["network", "spearman"] == pytest.approx(-1.0)
    gap = claims["gap"].set_index(["model", "j"])["network_minus_model"]
    assert gap[("linearised_init", 3)] == pytest.approx(-0.05)
    change = claims["alignment_change"].iloc[0]
    assert (change["first"], change["last"], change["first_epoch"]) == (0.1, 0.4, 0)
    assert change["ratio"] == pytest.approx(4.0)


# --------------------------------------------------------------------------------------
# validation


@pytest.mark.parametrize(
    "overrides, name",
    [
        (dict(width=0), "width"),
        (dict(depth=4), "depth"),
        (dict(epochs=0), "epochs"),
        (dict(batch_size=0), "batch_size"),
        (dict(lr=-0.1), "lr"),
        (dict(lr=float("nan")), "lr"),
        (dict(alignment_points=0), "alignment_points"),
        (dict(checkpoints=[0, 3]), "checkpoints"),
        (dict(eigen_indices=[22]), "eigen_indices"),
        (dict(super_classes=None, eigen_indices=[]), "super_classes"),
        (dict(super_classes=[]), "super_classes"),
        (dict(memory_gb=0), "memory_gb"),
    ],
)
def test_study_validation_names_the_argument(overrides, name):
    with pytest.raises(ValueError, match=name):
        tiny_study(**overrides)


def test_study_validation_of_arrays_names_the_argument():
    x_train, y_train, x_test, y_test = tiny_data()
    kw = dict(
        super_classes=[0], eigen_indices=[], epochs=1, batch_size=4, lr=0.1, seed=0,
        alignment_points=4, checkpoints=[0], memory_gb=0.5, **TINY,
    )
    with pytest.raises(ValueError, match="train_images"):
        run_linearisation_study(x_train.to(torch.uint8), y_train, x_test, y_test, **kw)
    with pytest.raises(ValueError, match="test_images"):
        run_linearisation_study(x_train, y_train, x_test[:, :, :4], y_test, **kw)
    with pytest.raises(ValueError, match="train_labels"):
        run_linearisation_study(x_train, y_train[:-1], x_test, y_test, **kw)
    with pytest.raises(ValueError, match="test_labels"):
        run_linearisation_study(x_train, y_train, x_test, y_test.astype(float), **kw)
    with pytest.raises(ValueError, match="targets"):
        kernel_target_alignment(np.eye(3), np.ones(4))
    with pytest.raises(ValueError, match="kernel"):
        kernel_target_alignment(np.ones((3, 2)), np.ones(3))
    with pytest.raises(ValueError, match="eigen_indices"):
        eigenfunction_labels(np.eye(3), [3])
