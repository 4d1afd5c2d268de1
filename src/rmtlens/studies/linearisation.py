"""Networks versus their linearisation (SPEC §7, E8; [OJ21]).

A small seeded CNN ``f(x; θ)`` with a scalar output is trained by SGD on binary
±1 tasks next to two linear models trained by the very same loop:

``linearised_init``
    the first-order Taylor model around the initialisation θ0,
    ``f_lin(x; θ) = f(x; θ0) + J_θ0(x) (θ − θ0)``;
``linearised_end``
    the end-of-training eNTK used as a fixed feature map,
    ``g_w(x) = J_θT(x) w`` with ``w`` started at 0 (θT: the network's final weights).

Both are evaluated with ``torch.func.jvp`` (forward-mode Jacobian-vector product of
``functional_call``); the Jacobian is never formed.

Tasks: (a) two super-classes, ``y = +1`` for the classes of a given set, ``-1``
otherwise; (b) eNTK eigenfunction tasks, ``y = sign(v_j)`` with ``v_j`` the j-th
eigenvector (descending eigenvalues, 0-based) of the initial network's eNTK on
pool + test. Measurements: test/train accuracy of the three models and the
normalised kernel-target alignment ``A(K, y) = yᵀKy / (||y||² tr K)`` of the
network's evolving eNTK at checkpoints, on seeded train and test subsets.

Longer than 600 lines because the three models share one training loop and one
recipe, which read best next to each other.

Inputs are preprocessed float tensors ``(N, 3, H, W)``; the convention of this
module is pixels in [0, 1] standardised with mean and std 0.5 per channel (range
[-1, 1]): ``rmtlens.inputs.backbones.preprocess(images, 32, IMAGE_MEAN, IMAGE_STD)``.

Training recipe (shared by all three models)
--------------------------------------------
Loss: the logistic loss ``mean softplus(−y f)`` (binary cross-entropy on the logit
``f``), the standard loss of a binary classifier whose metric is the sign of ``f``;
with it the linear models are logistic regressions on the fixed features ``J(x)``,
so all three models are compared as classifiers under one loss. Optimiser: SGD with
momentum 0.9, no weight decay, learning rate decayed by a cosine from ``lr`` to 0
over all steps, mini-batches from a seeded permutation of the training set per
epoch (the same batches, in the same order, for the three models of a task).
"""

from __future__ import annotations

import copy
import math
import warnings
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.func import functional_call, jvp

from rmtlens.kernels.ntk import entk, scalar_network

IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.5, 0.5, 0.5)
MODELS = ("network", "linearised_init", "linearised_end")
MOMENTUM = 0.9


# --------------------------------------------------------------------------------------
# models


def small_cnn(width: int, depth: int, seed: int, in_channels: int = 3) -> nn.Module:
    """A small seeded CNN with a scalar output, in eval mode.

    Architecture: ``depth`` blocks of ``Conv2d(3x3, padding 1) → ReLU``, the first
    convolution with stride 2 (a 4x cheaper stem on 32 px inputs), each block but
    the last followed by ``AvgPool2d(2)``; then global average pooling and the
    ``Linear(width, 1)`` head of ``rmtlens.kernels.ntk.scalar_network``. No normalisation
    or dropout layers, so train and eval mode compute the same function and the
    eNTK of ``rmtlens.kernels.ntk.entk`` is that of the trained function.

    Parameters
    ----------
    width : channels of every convolution.
    depth : number of convolutions; the input side must be at least ``2**depth``.
    seed : seeds the weights (local RNG fork; the global RNG is untouched).
        Convolutions: He-normal weights (fan-in, ReLU gain), zero biases; head:
        PyTorch's default ``Linear`` initialisation.
    in_channels : input channels.

    Returns
    -------
    ``ScalarNetwork`` (float32, CPU, eval mode) mapping ``(B, C, H, W)`` to ``(B,)``.
    """
    width, depth = _positive_int(width, "width"), _positive_int(depth, "depth")
    in_channels = _positive_int(in_channels, "in_channels")
    backbone_seed, head_seed = np.random.SeedSequence(int(seed)).generate_state(2)
    layers: list[nn.Module] = []
    channels = in_channels
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(backbone_seed))
        for layer in range(depth):
            conv = nn.Conv2d(channels, width, kernel_size=3, stride=2 if layer == 0 else 1, padding=1)
            nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
            layers += [conv, nn.ReLU()]
            if layer < depth - 1:
                layers.append(nn.AvgPool2d(2))
            channels = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return scalar_network(nn.Sequential(*layers), width, int(head_seed))


class Linearisation(nn.Module):
    """First-order model of a network around fixed weights θc, trainable displacement δ.

    ``forward(x) = f(x; θc) + J_θc(x) δ`` when ``offset`` is True (the linearisation
    ``f_lin(x; θ)`` at ``θ = θc + δ``), ``J_θc(x) δ`` when it is False (the eNTK at
    θc as a fixed feature map with weights ``w = δ``). ``δ`` starts at 0 and is the
    only trainable tensor; ``J_θc(x) δ`` is a ``torch.func.jvp`` of
    ``functional_call`` and gradients flow to ``δ`` through it.

    Parameters
    ----------
    network : scalar network ``(B, ...) → (B,)``; a frozen deep copy holds θc
        (later changes to ``network`` do not affect this model).
    offset : include ``f(x; θc)``.
    """

    def __init__(self, network: nn.Module, *, offset: bool = True):
        super().__init__()
        self.centre = copy.deepcopy(network)
        self.centre.requires_grad_(False)
        self.offset = bool(offset)
        self._names = [name for name, _ in self.centre.named_parameters()]
        self.delta = nn.ParameterList(
            [nn.Parameter(torch.zeros_like(p)) for _, p in self.centre.named_parameters()]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        params = dict(self.centre.named_parameters())
        buffers = dict(self.centre.named_buffers())

        def f(p):
            return functional_call(self.centre, (p, buffers), (x,))

        value, tangent = jvp(f, (params,), (dict(zip(self._names, self.delta)),))
        return value + tangent if self.offset else tangent

    def weights(self) -> dict[str, torch.Tensor]:
        """``θ = θc + δ`` by parameter name (detached)."""
        return {
            name: (p + d).detach()
            for (name, p), d in zip(self.centre.named_parameters(), self.delta)
        }


# --------------------------------------------------------------------------------------
# training


def logistic_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``mean softplus(−y f)`` for outputs ``f`` and ±1 targets ``y`` (both ``(B,)``)."""
    return nn.functional.softplus(-targets * outputs).mean()


def train_sgd(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: np.ndarray | torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    checkpoint: Callable[[int], None] | None = None,
    on_epoch: Callable[[], None] | None = None,
) -> np.ndarray:
    """Train ``model`` in place with the module's SGD recipe (logistic loss).

    Parameters
    ----------
    model : scalar model ``(B, ...) → (B,)``; every parameter with
        ``requires_grad`` is trained.
    inputs : ``(N, ...)`` float tensor on the model's device (cast to its dtype).
    targets : ``(N,)`` ±1 labels.
    epochs, batch_size : passes over the data and mini-batch size (the last batch
        of an epoch may be smaller).
    lr : peak learning rate; step ``t`` of ``T`` uses ``lr · (1 + cos(π t / T)) / 2``.
    seed : seeds the per-epoch permutations (``np.random.default_rng(seed)``), so
        two calls with one seed see the same batches in the same order.
    checkpoint : called as ``checkpoint(e)`` before training (``e = 0``) and after
        every epoch ``e = 1..epochs``, with the model as it is then.
    on_epoch : called after every epoch (progress reporting).

    Returns
    -------
    ``(epochs,)`` float64 mean training loss over the batches of each epoch.
    """
    epochs = _positive_int(epochs, "epochs")
    batch_size = _positive_int(batch_size, "batch_size")
    lr = _positive_float(lr, "lr")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters")
    dtype, device = params[0].dtype, params[0].device
    x = inputs.to(device=device, dtype=dtype)
    y = torch.tensor(np.asarray(targets, dtype=np.float64), dtype=dtype, device=device)
    n = x.shape[0]
    if y.shape != (n,):
        raise ValueError(f"targets must have shape ({n},), got {tuple(y.shape)}")
    optimiser = torch.optim.SGD(params, lr=lr, momentum=MOMENTUM)
    rng = np.random.default_rng(seed)
    steps_per_epoch = math.ceil(n / batch_size)
    total, step = epochs * steps_per_epoch, 0
    losses = np.zeros(epochs)
    if checkpoint is not None:
        checkpoint(0)
    for epoch in range(epochs):
        order = torch.as_tensor(rng.permutation(n), device=device)
        for start in range(0, n, batch_size):
            batch = order[start : start + batch_size]
            for group in optimiser.param_groups:
                group["lr"] = lr * 0.5 * (1.0 + math.cos(math.pi * step / total))
            optimiser.zero_grad(set_to_none=True)
            loss = logistic_loss(model(x[batch]), y[batch])
            loss.backward()
            optimiser.step()
            losses[epoch] += loss.item() / steps_per_epoch
            step += 1
        if checkpoint is not None:
            checkpoint(epoch + 1)
        if on_epoch is not None:
            on_epoch()
    return losses


def predict(model: nn.Module, inputs: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """``(N,)`` float64 outputs of a scalar model, computed without autograd graphs."""
    ref = next(model.parameters())
    with torch.no_grad():
        out = [
            model(inputs[i : i + batch_size].to(device=ref.device, dtype=ref.dtype))
            for i in range(0, inputs.shape[0], batch_size)
        ]
    return torch.cat(out).double().cpu().numpy()


def sign_accuracy(outputs: np.ndarray, targets: np.ndarray) -> float:
    """Fraction of ``sign(f) == y`` (``f = 0`` counts as +1)."""
    pred = np.where(np.asarray(outputs) >= 0, 1.0, -1.0)
    return float(np.mean(pred == np.asarray(targets)))


# --------------------------------------------------------------------------------------
# tasks and alignment


def superclass_labels(labels: np.ndarray, positive_classes: Iterable[int]) -> np.ndarray:
    """``(N,)`` float64 ±1: ``+1`` where ``labels`` is in ``positive_classes``."""
    classes = np.asarray(sorted({int(c) for c in positive_classes}))
    if classes.size == 0:
        raise ValueError("super_classes must name at least one class")
    return np.where(np.isin(np.asarray(labels), classes), 1.0, -1.0)


def eigenfunction_labels(
    kernel: np.ndarray, indices: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Sign labels of the eigenvectors of a symmetric kernel.

    Eigenvectors come from ``numpy.linalg.eigh`` in float64, ordered by descending
    eigenvalue (index 0 = largest). Each is oriented so that its entry of largest
    magnitude is positive (an eigenvector's sign is arbitrary; a near-degenerate
    eigenvalue makes the vector itself ill-defined, which the eigenvalues returned
    let the caller see). Labels are ``sign(v_j)`` with zeros sent to ``+1``.

    Parameters
    ----------
    kernel : ``(N, N)`` symmetric kernel (symmetrised as ``(K + Kᵀ)/2``).
    indices : eigen-indices ``j``, each in ``[0, N)``.

    Returns
    -------
    labels : ``(len(indices), N)`` float64 ±1.
    eigenvalues : ``(len(indices),)`` float64, the eigenvalues of those indices.
    """
    K = np.asarray(kernel, dtype=np.float64)
    if K.ndim != 2 or K.shape[0] != K.shape[1]:
        raise ValueError(f"kernel must be square (N, N), got {K.shape}")
    n = K.shape[0]
    idx = [int(j) for j in indices]
    if any(j < 0 or j >= n for j in idx):
        raise ValueError(f"eigen_indices must lie in [0, {n}), got {idx}")
    d, U = np.linalg.eigh(0.5 * (K + K.T))
    d, U = d[::-1], U[:, ::-1]
    V = U[:, idx]
    V = V * np.sign(V[np.argmax(np.abs(V), axis=0), np.arange(len(idx))])
    return np.where(V >= 0, 1.0, -1.0).T, d[idx].copy()


def kernel_target_alignment(kernel: np.ndarray, targets: np.ndarray) -> float:
    """Normalised kernel-target alignment ``A(K, y) = yᵀKy / (||y||² tr K)``.

    For a PSD kernel it lies in ``[λ_min, λ_max] / tr K ⊂ [0, 1]``.
    """
    K = np.asarray(kernel, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    if K.ndim != 2 or K.shape[0] != K.shape[1]:
        raise ValueError(f"kernel must be square (N, N), got {K.shape}")
    if y.shape != (K.shape[0],):
        raise ValueError(f"targets must have shape ({K.shape[0]},), got {y.shape}")
    trace, norm2 = float(np.trace(K)), float(y @ y)
    if not trace > 0:
        raise ValueError(f"kernel must have a positive trace, got {trace}")
    if not norm2 > 0:
        raise ValueError("targets must not be all zero")
    return float(y @ K @ y) / (norm2 * trace)


# --------------------------------------------------------------------------------------
# the study


def run_linearisation_study(
    train_images: torch.Tensor,
    train_labels: np.ndarray,
    test_images: torch.Tensor,
    test_labels: np.ndarray,
    *,
    super_classes: Iterable[int] | None,
    eigen_indices: Sequence[int],
    width: int,
    depth: int,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    alignment_points: int,
    checkpoints: Sequence[int],
    memory_gb: float,
    device: torch.device | str = "cpu",
    progress: Callable[[], None] | None = None,
) -> dict[str, pd.DataFrame]:
    """Networks versus their linearisations on super-class and eigenfunction tasks.

    One network ``small_cnn(width, depth, seed)`` (θ0) is shared by all tasks. Per
    task, three models are trained on the pool with ``train_sgd`` (same seed, so the
    same batches): the network from θ0, its linearisation at θ0, and the
    linearisation at the network's final weights θT without offset, started at 0.

    Parameters
    ----------
    train_images, test_images : ``(N_pool, C, H, W)`` and ``(N_test, C, H, W)``
        float tensors, preprocessed (see the module docstring: mean/std 0.5).
    train_labels, test_labels : ``(N_pool,)``, ``(N_test,)`` integer class labels
        (used by the super-class task only).
    super_classes : classes labelled +1 in the super-class task (e.g. ``range(5)``),
        or None for no super-class task.
    eigen_indices : 0-based indices ``j`` (descending eigenvalue order) of the
        eigenfunction tasks, each in ``[0, N_pool + N_test)``; may be empty.
    width, depth : CNN size (``small_cnn``).
    epochs, batch_size, lr : SGD recipe (``train_sgd``).
    seed : seeds the weights, the batch order and the alignment subsets.
    alignment_points : size of the seeded train and test subsets on which the
        eNTK alignment is measured (capped at ``N_pool`` and ``N_test``).
    checkpoints : epochs in ``[0, epochs]`` at which the network's eNTK alignment
        is measured (0 = initialisation).
    memory_gb : memory bound passed to ``rmtlens.kernels.ntk.entk``.
    device : where to train and compute kernels.
    progress : called after every training epoch: ``3 × epochs`` calls per task
        (network, linearised at init, linearised at the end); the tasks are the
        super-class task, if any, and one per eigen-index.

    Returns
    -------
    Tidy tables (``j`` is ``<NA>`` for the super-class task):

    ``accuracy``: task, j, model ∈ MODELS, train_accuracy, test_accuracy,
        final_loss (mean training loss of the last epoch).
    ``alignment``: task, j, epoch, split ∈ {train, test}, alignment (of the
        network's eNTK; float64 kernels).
    ``loss``: task, j, model, epoch (1..epochs), train_loss.
    ``tasks``: task, j, eigenvalue (of the initial eNTK on pool + test, float64;
        NaN for the super-class task), positive_fraction_train,
        positive_fraction_test.
    ``labels``: task, j, split ∈ {train, test}, index (row within its split), label.
    ``alignment_points``: split, index (rows of the seeded alignment subsets).

    Notes
    -----
    Models and inputs are float32 for training; every eNTK is computed in float64.
    The initial eNTK of this ReLU CNN is dominated by one near-constant mode
    (about 87% of the trace on CIFAR-10, 99% on digits), so alignments are small
    numbers and ``j = 0`` labels nearly every point alike; use ``j ≥ 1``. The same
    mode bounds the stable ``lr`` (0.1 trains all three models on digits and
    CIFAR-10 with width 16, depth 3, batch 32; 0.5 already destabilises the network).
    """
    x_train, x_test = _check_images(train_images, "train_images"), _check_images(
        test_images, "test_images"
    )
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(
            f"test_images must have the shape of train_images per image, "
            f"{tuple(x_test.shape[1:])} != {tuple(x_train.shape[1:])}"
        )
    n_train, n_test = x_train.shape[0], x_test.shape[0]
    train_labels = _check_labels(train_labels, n_train, "train_labels")
    test_labels = _check_labels(test_labels, n_test, "test_labels")
    eigen_indices = [int(j) for j in eigen_indices]
    if any(j < 0 or j >= n_train + n_test for j in eigen_indices):
        raise ValueError(
            f"eigen_indices must lie in [0, N_pool + N_test) = [0, {n_train + n_test}), "
            f"got {eigen_indices}"
        )
    if super_classes is None and not eigen_indices:
        raise ValueError("no task: give super_classes or a non-empty eigen_indices")
    epochs = _positive_int(epochs, "epochs")
    _positive_int(batch_size, "batch_size")
    _positive_float(lr, "lr")
    alignment_points = _positive_int(alignment_points, "alignment_points")
    checkpoints = sorted({int(e) for e in checkpoints})
    if any(e < 0 or e > epochs for e in checkpoints):
        raise ValueError(f"checkpoints must lie in [0, epochs={epochs}], got {checkpoints}")
    _positive_float(memory_gb, "memory_gb")
    min_side = 2 ** _positive_int(depth, "depth")
    if min(x_train.shape[-2:]) < min_side:
        raise ValueError(f"images must be at least {min_side} px for depth={depth}")

    device = torch.device(device)
    x_train = x_train.to(device=device, dtype=torch.float32)
    x_test = x_test.to(device=device, dtype=torch.float32)
    net0 = small_cnn(width, depth, seed, in_channels=x_train.shape[1]).to(device)

    def kernel(model, x):
        return entk(model, x, memory_gb=memory_gb, dtype=torch.float64, device=device)

    rng = np.random.default_rng(seed)
    subsets = {
        "train": np.sort(rng.choice(n_train, size=min(alignment_points, n_train), replace=False)),
        "test": np.sort(rng.choice(n_test, size=min(alignment_points, n_test), replace=False)),
    }
    inputs = {"train": x_train, "test": x_test}

    tasks: list[tuple[str, int | None, np.ndarray, np.ndarray, float]] = []
    if super_classes is not None:
        y_all = superclass_labels(np.concatenate([train_labels, test_labels]), super_classes)
        tasks.append(("superclass", None, y_all[:n_train], y_all[n_train:], math.nan))
    init_blocks = None
    if eigen_indices:
        K0 = kernel(net0, torch.cat([x_train, x_test]))
        labels, eigenvalues = eigenfunction_labels(K0, eigen_indices)
        for j, y_all, lam in zip(eigen_indices, labels, eigenvalues):
            tasks.append(("eigenfunction", j, y_all[:n_train], y_all[n_train:], float(lam)))
        rows = {"train": subsets["train"], "test": n_train + subsets["test"]}
        init_blocks = {s: K0[np.ix_(r, r)] for s, r in rows.items()}
        del K0

    accuracy, alignment, losses, task_rows, label_rows = [], [], [], [], []
    for name, j, y_train, y_test, lam in tasks:
        key = dict(task=name, j=j)
        task_rows.append(
            dict(
                **key,
                eigenvalue=lam,
                positive_fraction_train=float(np.mean(y_train > 0)),
                positive_fraction_test=float(np.mean(y_test > 0)),
            )
        )
        for split, y in (("train", y_train), ("test", y_test)):
            label_rows.append(
                pd.DataFrame(dict(task=name, j=j, split=split, index=np.arange(y.size), label=y))
            )

        network = copy.deepcopy(net0)

        def measure(epoch, network=network, y_train=y_train, y_test=y_test, key=key):
            if epoch not in checkpoints:
                return
            for split, y in (("train", y_train), ("test", y_test)):
                idx = subsets[split]
                if epoch == 0 and init_blocks is not None:
                    K = init_blocks[split]
                else:
                    K = kernel(network, inputs[split][idx])
                a = kernel_target_alignment(K, y[idx])
                alignment.append(dict(**key, epoch=epoch, split=split, alignment=a))

        models = {"network": network}
        recipe = dict(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, on_epoch=progress)
        curves = {"network": train_sgd(network, x_train, y_train, checkpoint=measure, **recipe)}
        models["linearised_init"] = Linearisation(net0, offset=True)
        curves["linearised_init"] = train_sgd(models["linearised_init"], x_train, y_train, **recipe)
        models["linearised_end"] = Linearisation(network, offset=False)
        curves["linearised_end"] = train_sgd(models["linearised_end"], x_train, y_train, **recipe)
        for model_name in MODELS:
            model = models[model_name]
            accuracy.append(
                dict(
                    **key,
                    model=model_name,
                    train_accuracy=sign_accuracy(predict(model, x_train), y_train),
                    test_accuracy=sign_accuracy(predict(model, x_test), y_test),
                    final_loss=float(curves[model_name][-1]),
                )
            )
            losses.append(
                pd.DataFrame(
                    dict(**key, model=model_name, epoch=np.arange(1, epochs + 1),
                         train_loss=curves[model_name])
                )
            )

    def tidy(frame: pd.DataFrame) -> pd.DataFrame:
        frame["j"] = pd.array(frame["j"], dtype="Int64")
        return frame.reset_index(drop=True)

    return dict(
        accuracy=tidy(pd.DataFrame(accuracy)),
        alignment=tidy(pd.DataFrame(alignment)),
        loss=tidy(pd.concat(losses)),
        tasks=tidy(pd.DataFrame(task_rows)),
        labels=tidy(pd.concat(label_rows)),
        alignment_points=pd.concat(
            [pd.DataFrame(dict(split=s, index=idx)) for s, idx in subsets.items()]
        ).reset_index(drop=True),
    )


# --------------------------------------------------------------------------------------
# [OJ21]'s claims as numbers


def linearisation_claims(
    accuracy: pd.DataFrame, alignment: pd.DataFrame
) -> dict[str, pd.DataFrame]:
    """Numbers behind [OJ21]'s three claims, from the study's tables.

    Parameters
    ----------
    accuracy, alignment : the ``accuracy`` and ``alignment`` tables of
        ``run_linearisation_study``.

    Returns
    -------
    ``ranking``: per linear model, Spearman ρ (and p-value) between its test
        accuracy and the network's over all tasks, and the number of tasks
        (claim i: linear models rank task difficulty).
    ``difficulty_trend``: per model, Spearman ρ (and p-value) between ``j`` and
        test accuracy over the eigenfunction tasks (negative: accuracy falls with j).
    ``gap``: per task and linear model, network test accuracy minus the linear
        model's (claim ii: positive where the network wins).
    ``alignment_change``: per task and split, alignment at the first and last
        checkpoint, their difference and ratio (claim iii: rises during training).
    NaN where a correlation is undefined (fewer than 2 tasks or constant input).
    """
    from scipy.stats import spearmanr

    for name, frame, columns in (
        ("accuracy", accuracy, {"task", "j", "model", "test_accuracy"}),
        ("alignment", alignment, {"task", "j", "epoch", "split", "alignment"}),
    ):
        missing = columns - set(frame.columns)
        if missing:
            raise ValueError(f"{name} lacks the columns {sorted(missing)}")

    def rho(a, b):
        if len(a) < 2:
            return math.nan, math.nan
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = spearmanr(a, b)
        return float(result.statistic), float(result.pvalue)

    wide = accuracy.pivot_table(
        index=["task", "j"], columns="model", values="test_accuracy", dropna=False
    ).dropna(how="all")
    ranking, gap = [], []
    for model in MODELS[1:]:
        if model not in wide or "network" not in wide:
            continue
        pair = wide[["network", model]].dropna()
        r, p = rho(pair["network"].to_numpy(), pair[model].to_numpy())
        ranking.append(dict(model=model, spearman=r, p_value=p, n_tasks=len(pair)))
        for (task, j), row in pair.iterrows():
            gap.append(dict(task=task, j=j, model=model, network_minus_model=row["network"] - row[model]))

    trend = []
    eigen = accuracy[accuracy["task"] == "eigenfunction"]
    for model, group in eigen.groupby("model", sort=False):
        r, p = rho(group["j"].to_numpy(dtype=float), group["test_accuracy"].to_numpy())
        trend.append(dict(model=model, spearman=r, p_value=p, n_tasks=len(group)))

    change = []
    for (task, j, split), group in alignment.groupby(["task", "j", "split"], sort=False, dropna=False):
        group = group.sort_values("epoch")
        first, last = group.iloc[0], group.iloc[-1]
        change.append(
            dict(
                task=task, j=j, split=split,
                first_epoch=int(first["epoch"]), last_epoch=int(last["epoch"]),
                first=float(first["alignment"]), last=float(last["alignment"]),
                change=float(last["alignment"] - first["alignment"]),
                ratio=float(last["alignment"] / first["alignment"]),
            )
        )

    def frame(rows, columns):
        out = pd.DataFrame(rows, columns=columns)
        if "j" in out:
            out["j"] = pd.array(out["j"], dtype="Int64")
        return out

    return dict(
        ranking=frame(ranking, ["model", "spearman", "p_value", "n_tasks"]),
        difficulty_trend=frame(trend, ["model", "spearman", "p_value", "n_tasks"]),
        gap=frame(gap, ["task", "j", "model", "network_minus_model"]),
        alignment_change=frame(
            change,
            ["task", "j", "split", "first_epoch", "last_epoch", "first", "last", "change", "ratio"],
        ),
    )


# --------------------------------------------------------------------------------------
# validation


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _positive_float(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    if not (math.isfinite(float(value)) and float(value) > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def _check_images(images, name: str) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] < 1:
        raise ValueError(
            f"{name} must be a float tensor (N, C, H, W) with N >= 1, "
            f"got {getattr(images, 'shape', type(images).__name__)!r}"
        )
    if not images.is_floating_point():
        raise ValueError(
            f"{name} must be floating point (preprocessed, mean/std 0.5), got {images.dtype}"
        )
    return images


def _check_labels(labels, n: int, name: str) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.shape != (n,) or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be an integer array of shape ({n},), got {arr.dtype} {arr.shape}")
    return arr
