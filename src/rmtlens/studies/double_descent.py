"""Double descent (SPEC §7, E6): random-features ridge and linear ridge on embeddings.

Conventions follow :mod:`rmtlens.estimators.ridge`: ridges ``λ`` are absolute and the system
solved for ``q`` features ``Φ`` (n x q) is ``(Φ Φᵀ / q + nλ I)``, i.e. kernel ridge
regression with the kernel ``Φ Φᵀ / q``. Risks are squared errors summed over the
``C`` outputs and averaged over rows.

Longer than 600 lines because the random-features sweep, its closed-form expected
kernels and its deterministic equivalent are one study and share its conventions.

Random features of inputs ``x ∈ R^d`` are ``φ(x) = σ(W x / √d)`` with ``W``
(N_rf x d) standard Gaussian; their expected kernel
``k(x, x') = E_w σ(w·x/√d) σ(w·x'/√d)`` has closed forms (:func:`expected_kernel`).

Deterministic equivalent
------------------------
The pool (uniform measure on the given inputs) is the population, as in SPEC §3:
eigendecompose the pool kernel ``K_pool = V diag(D) Vᵀ`` (N_pool x N_pool), set
``μ_k = D_k / N_pool`` and ``||β_k||² = ||V_kᵀ Y_pool||² / N_pool``. With
``df1(κ) = Σ_k μ_k/(μ_k + κ)`` and ``df2(κ) = Σ_k μ_k²/(μ_k + κ)²``, random-features
ridge with ``n`` samples, ``N`` features and ridge ``λ`` has the renormalised
ridge ``κ``, the unique root above the point where a factor vanishes of

    λ = κ (1 − df1(κ)/n) (1 − df1(κ)/N),

(at ``λ = 0``: ``df1(κ) = min(n, N)``, or ``κ = 0`` when the spectrum's rank is at
most ``min(n, N)``), and

    γ     = [df2 + (df1 − df2)² / (N − df2)] / n
    R_pop = κ² Σ_k ||β_k||²/(μ_k + κ)²  +  κ (df1 − df2)/(N − df2) · Σ_k μ_k ||β_k||²/(μ_k + κ)²
    E     = R_pop / (1 − γ),         train risk  (1 − df1/n)² E.

The equations are the two coupled self-consistent equations of random-features
ridge (Bach 2023, SIAM J. Math. Data Sci., "High-dimensional analysis of double
descent for linear regression with random projections"; Atanasov, Zavatone-Veth
and Pehlevan 2024, arXiv 2405.00592, §"linear random features"; Defilippis,
Loureiro and Misiakiewicz 2024, arXiv 2405.15699) written with one unknown:
conditional on ``W`` the model is linear ridge on features of covariance
``Σ_W = F Σ Fᵀ/N`` (``Σ = diag(μ)``, ``F_jk = g_k(w_j)`` the loadings of feature
``j`` on eigenfunction ``k``, unit variance) whose own ridge ``κ_W`` solves ``κ_W = λ + (κ_W/n) tr Σ_W(Σ_W + κ_W)⁻¹``;
over ``W`` (Gaussian equivalence of the features' eigen-expansion),
``Σ_W(Σ_W + κ_W)⁻¹`` is equivalent to ``Σ(Σ + κ)⁻¹`` with ``κ_W = κ (1 − df1(κ)/N)``.
The risk is the population risk of the ridge-``κ_W`` predictor given ``W`` (its
bias, with the part of the target the features cannot express acting as noise)
inflated by ``1/(1 − γ_W)``, each evaluated through the derivative of these
equivalents in ``κ_W`` (``dκ_W/dκ = 1 − df2(κ)/N``). With ``N = ∞`` all of this is
exactly the SPEC §3 formula, which is what :func:`linear_ridge_sweep` uses.

Where it is exact and where it is not: for Gaussian covariates and Gaussian
``F`` (linear random features) it is the asymptotically exact risk. For
non-linear ``σ`` it rests on Gaussian equivalence of ``F``; with Gaussian ``W``
the feature norms ``‖w‖/√d`` fluctuate by about ``√(2/d)``, an effect the
equivalent ignores and which is small for embedding or pixel inputs. The pool is
the population: the prediction is the risk on the pool's own measure; on a
held-out test set it is optimistic when the pool is too small to represent the
target (label noise on the pool is partly "learnable" within the pool).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.optimize
import scipy.special

from rmtlens.estimators.accuracy import DEFAULT_SAFETY, accuracy_floor, apply_floor
from rmtlens.estimators.grids import subsample_indices
from rmtlens.estimators.ridge import ridge_path
from rmtlens.estimators.spectra import eigh_descending
from rmtlens.estimators.theory import population_from_pool

ACTIVATIONS = ("relu", "erf", "linear")


def _check_activation(activation: str) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")


def _as_matrix(name: str, array) -> np.ndarray:
    out = np.asarray(array, dtype=np.float64)
    if out.ndim != 2:
        raise ValueError(f"{name} must be 2-dimensional, got shape {out.shape}")
    if not np.all(np.isfinite(out)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return out


def _as_targets(name: str, array) -> np.ndarray:
    """Targets as an (n, C) matrix; a 1-d array is one output."""
    out = np.asarray(array, dtype=np.float64)
    return _as_matrix(name, out[:, None] if out.ndim == 1 else out)


def random_features(x: np.ndarray, weights: np.ndarray, activation: str = "relu") -> np.ndarray:
    """Random features ``σ(x Wᵀ / √d)``.

    Parameters
    ----------
    x : (n, d) inputs.
    weights : (N_rf, d) weights ``W``, standard Gaussian for the expected kernel of
        :func:`expected_kernel`.
    activation : one of ``ACTIVATIONS``.

    Returns
    -------
    (n, N_rf) float64 features.
    """
    _check_activation(activation)
    x = _as_matrix("x", x)
    W = _as_matrix("weights", weights)
    if W.shape[1] != x.shape[1]:
        raise ValueError(f"weights must have {x.shape[1]} columns (the input dimension), got {W.shape[1]}")
    pre = x @ W.T / np.sqrt(x.shape[1])
    if activation == "relu":
        return np.maximum(pre, 0.0)
    if activation == "erf":
        return scipy.special.erf(pre)
    return pre


def expected_kernel(x1: np.ndarray, x2: np.ndarray | None = None, activation: str = "relu") -> np.ndarray:
    """Closed-form ``k(x, x') = E_w σ(w·x/√d) σ(w·x'/√d)`` for ``w ~ N(0, I_d)``.

    - ``relu``: arc-cosine kernel of order 1 (Cho & Saul 2009),
      ``‖a‖‖b‖ (sin θ + (π − θ) cos θ) / (2π)`` with ``a = x/√d``, ``b = x'/√d``
      and ``θ`` their angle.
    - ``erf``: Williams' (1997) arcsine kernel without bias,
      ``(2/π) arcsin(2 a·b / √((1 + 2‖a‖²)(1 + 2‖b‖²)))``.
    - ``linear``: ``a·b``.

    Parameters
    ----------
    x1 : (n1, d) inputs.
    x2 : (n2, d) inputs, default ``x1``.
    activation : one of ``ACTIVATIONS``.

    Returns
    -------
    (n1, n2) float64 kernel matrix.
    """
    _check_activation(activation)
    a = _as_matrix("x1", x1)
    b = a if x2 is None else _as_matrix("x2", x2)
    if b.shape[1] != a.shape[1]:
        raise ValueError(f"x2 must have {a.shape[1]} columns like x1, got {b.shape[1]}")
    d = a.shape[1]
    dot = a @ b.T / d
    na = np.einsum("ij,ij->i", a, a) / d
    nb = na if x2 is None else np.einsum("ij,ij->i", b, b) / d
    if activation == "linear":
        return dot
    if activation == "erf":
        scale = np.sqrt(np.outer(1.0 + 2.0 * na, 1.0 + 2.0 * nb))
        return (2.0 / np.pi) * np.arcsin(np.clip(2.0 * dot / scale, -1.0, 1.0))
    norms = np.sqrt(np.outer(na, nb))
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = np.where(norms > 0, dot / norms, 1.0)
    cos = np.clip(cos, -1.0, 1.0)
    theta = np.arccos(cos)
    return norms * (np.sqrt(1.0 - cos**2) + (np.pi - theta) * cos) / (2.0 * np.pi)


def gram_floor(eigvals, dot_length: int, trace: float, rcond: float | None = None, safety: float = DEFAULT_SAFETY):
    """Accuracy floor (SPEC §2) of a float64 Gram matrix whose entries are dot products of
    length ``dot_length``: relative error ``γ_len · tr / λ_max`` (as for feature kernels,
    :func:`rmtlens.kernels.accuracy.feature_kernel_accuracy`); ``rcond`` overrides it."""
    from rmtlens.kernels.accuracy import gamma

    d = np.asarray(eigvals, dtype=np.float64)
    lam_max = max(float(d.max()), np.finfo(np.float64).tiny)
    return accuracy_floor(d, gamma(dot_length) * max(float(trace), 0.0) / lam_max, safety, rcond=rcond)


def spectrum_from_kernel(
    kernel_pool: np.ndarray, y_pool: np.ndarray, rcond: float | None = 1e-10, safety: float = DEFAULT_SAFETY,
    dot_length: int = 1,
):
    """Population spectrum and target coefficients of a pool kernel (SPEC §3).

    Parameters
    ----------
    kernel_pool : (P, P) symmetric PSD kernel on the pool.
    y_pool : (P, C) or (P,) targets on the pool.
    rcond : relative eigenvalue cutoff; None: the accuracy floor (:func:`gram_floor`).
    safety, dot_length : of the accuracy floor (``dot_length``: of the dot products
        the kernel's entries were computed from).

    Returns
    -------
    mu : (P,) eigenvalues ``D_k / P`` (descending, clipped).
    beta_sq : (P,) target power ``||V_kᵀ Y||² / P`` per eigen-direction.
    """
    K = _as_matrix("kernel_pool", kernel_pool)
    Y = _as_targets("y_pool", y_pool)
    P = K.shape[0]
    if K.shape != (P, P):
        raise ValueError(f"kernel_pool must be square, got shape {K.shape}")
    if Y.shape[0] != P:
        raise ValueError(f"y_pool has {Y.shape[0]} rows, kernel_pool has {P}")
    D, V = eigh_descending(K)
    pop = population_from_pool(D, V.T @ Y, floor=gram_floor(D, dot_length, np.trace(K), rcond, safety))
    return pop["mu"], pop["beta_sq"]


def spectrum_from_features(
    features_pool: np.ndarray, y_pool: np.ndarray, rcond: float | None = 1e-10, safety: float = DEFAULT_SAFETY
):
    """Population spectrum of the linear kernel ``Φ Φᵀ / p`` from a thin SVD of ``Φ``.

    The pool kernel has rank at most ``p``; its null space is summarised by one
    final entry with ``mu = 0`` that holds all the target power outside the
    features' span, which is all the deterministic equivalent needs of it.

    Parameters
    ----------
    features_pool : (P, p) features of the pool.
    y_pool : (P, C) or (P,) targets on the pool.
    rcond : relative eigenvalue cutoff; None: the accuracy floor (:func:`gram_floor`).
    safety : of the accuracy floor.

    Returns
    -------
    mu : (min(P, p) + 1,) eigenvalues ``D_k / P`` (descending), last entry 0.
    beta_sq : (min(P, p) + 1,) target power per direction, last entry the null part.
    """
    F = _as_matrix("features_pool", features_pool)
    Y = _as_targets("y_pool", y_pool)
    P, p = F.shape
    if Y.shape[0] != P:
        raise ValueError(f"y_pool has {Y.shape[0]} rows, features_pool has {P}")
    A, s, _ = np.linalg.svd(F / np.sqrt(p), full_matrices=False)
    mu = apply_floor(s**2, gram_floor(s**2, p, np.sum(s**2), rcond, safety)) / P
    coef = A.T @ Y
    beta_sq = np.einsum("kc,kc->k", coef, coef) / P
    null_power = max(float(np.sum(Y**2)) / P - float(beta_sq.sum()), 0.0)
    return np.append(mu, 0.0), np.append(beta_sq, null_power)


def _degrees_of_freedom(mu: np.ndarray, kappa: float) -> tuple[float, float]:
    r = mu / (mu + kappa)
    return float(r.sum()), float(np.dot(r, r))


def _log_root(func, lo: float, hi: float) -> float:
    """Root of ``func`` on ``[lo, hi]`` (``func(lo) < 0 < func(hi)``), bracketed in log space."""
    s = scipy.optimize.brentq(lambda t: func(np.exp(t)), np.log(lo), np.log(hi), xtol=1e-13, rtol=1e-14)
    return float(np.exp(s))


def rf_effective_ridge(mu: np.ndarray, n: int, n_features: float, lam: float) -> float:
    """Renormalised ridge ``κ`` of random-features ridge (module docstring).

    Parameters
    ----------
    mu : (K,) non-negative population eigenvalues.
    n : number of training samples.
    n_features : number of random features ``N`` (``np.inf`` for kernel ridge).
    lam : absolute ridge ``λ ≥ 0``.

    Returns
    -------
    κ ≥ 0 solving ``λ = κ (1 − df1(κ)/n)(1 − df1(κ)/N)`` on the branch where both
    factors are non-negative.
    """
    mu = np.asarray(mu, dtype=np.float64)
    if n < 1:
        raise ValueError(f"n must be a positive integer, got {n}")
    if not n_features >= 1:
        raise ValueError(f"n_features must be >= 1 (or inf), got {n_features}")
    if not (np.isfinite(lam) and lam >= 0):
        raise ValueError(f"lam must be finite and non-negative, got {lam}")
    if mu.ndim != 1 or np.any(mu < 0) or not np.all(np.isfinite(mu)):
        raise ValueError("mu must be a 1-d array of finite non-negative eigenvalues")
    capacity = min(float(n), float(n_features))
    total = float(mu.sum())
    rank = int(np.count_nonzero(mu))
    if total == 0.0:
        return float(lam)
    kappa_floor = 0.0
    if rank > capacity:  # some factor vanishes at κ_floor > 0: df1(κ_floor) = min(n, N)
        lo = total / capacity
        while _degrees_of_freedom(mu, lo)[0] <= capacity:
            lo /= 256.0
        kappa_floor = _log_root(lambda k: capacity - _degrees_of_freedom(mu, k)[0], lo, 2.0 * total / capacity)
    if lam == 0.0:
        return kappa_floor

    def excess(kappa: float) -> float:
        df1 = _degrees_of_freedom(mu, kappa)[0]
        return kappa * (1.0 - df1 / n) * (1.0 - df1 / n_features) - lam

    hi = 2.0 * lam + 4.0 * total / capacity  # both factors ≥ 3/4 there, so excess > 0
    lo = kappa_floor if kappa_floor > 0 else 0.5 * lam
    if excess(lo) >= 0:  # λ below round-off of the floor's vanishing factor
        return lo
    return _log_root(excess, lo, hi)


def rf_deterministic_equivalent(
    mu: np.ndarray,
    beta_sq: np.ndarray,
    n: int,
    n_features: float,
    lam: float,
) -> dict[str, float]:
    """Deterministic equivalent of random-features ridge risk (module docstring).

    Parameters
    ----------
    mu : (K,) population eigenvalues (``D_k / N_pool``), zeros allowed.
    beta_sq : (K,) target power ``||β_k||²`` per direction (summed over outputs).
    n : number of training samples.
    n_features : number of random features ``N``; ``np.inf`` gives kernel ridge
        with the population kernel, i.e. the SPEC §3 formula.
    lam : absolute ridge ``λ ≥ 0`` (system ``Φ Φᵀ/N + nλ I``).

    Returns
    -------
    dict of floats: ``kappa``, ``gamma``, ``test_risk`` (inf at the interpolation
    threshold), ``train_risk``, ``df1``.
    """
    mu = np.asarray(mu, dtype=np.float64)
    b = np.asarray(beta_sq, dtype=np.float64)
    if b.shape != mu.shape:
        raise ValueError(f"beta_sq must have the shape of mu {mu.shape}, got {b.shape}")
    if np.any(b < 0) or not np.all(np.isfinite(b)):
        raise ValueError("beta_sq must be finite and non-negative")
    kappa = rf_effective_ridge(mu, n, n_features, lam)
    N = float(n_features)
    if kappa == 0.0:  # ridgeless with rank ≤ min(n, N): only the null space is unlearnt
        rank = float(np.count_nonzero(mu))
        df1 = df2 = rank
        bias = float(b[mu == 0].sum())
        feature_variance = 0.0
    else:
        df1, df2 = _degrees_of_freedom(mu, kappa)
        w = 1.0 / (mu + kappa) ** 2
        bias = kappa**2 * float(np.dot(w, b))
        spread = df1 - df2
        feature_variance = kappa * spread / (N - df2) * float(np.dot(w * mu, b)) if N > df2 else 0.0
    spread = df1 - df2
    gamma = (df2 + (spread**2 / (N - df2) if N > df2 else 0.0)) / n
    r_pop = bias + feature_variance
    train_factor = max(1.0 - df1 / n, 0.0) ** 2
    if gamma < 1.0:
        test = r_pop / (1.0 - gamma)
        train = train_factor * test
    else:  # interpolation threshold: the test risk diverges, the fit interpolates
        test, train = np.inf, 0.0 if train_factor == 0.0 else np.inf
    return dict(kappa=kappa, gamma=gamma, test_risk=float(test), train_risk=float(train), df1=df1)


def feature_ridge(
    features_train: np.ndarray,
    features_test: np.ndarray,
    y_train: np.ndarray,
    y_test: np.ndarray,
    lambdas: Sequence[float],
    rcond: float | None = 1e-10,
    safety: float = DEFAULT_SAFETY,
) -> dict[str, np.ndarray]:
    """Ridge regression on features, as kernel ridge with the kernel ``Φ Φᵀ / q``.

    Parameters
    ----------
    features_train : (n, q) training features.
    features_test : (m, q) test features.
    y_train, y_test : (n, C) and (m, C) targets (1-d allowed).
    lambdas : (L,) absolute ridges (system ``Φ Φᵀ/q + nλ I``).
    rcond : relative eigenvalue cutoff of :func:`rmtlens.estimators.ridge.ridge_path`;
        None: the kernel's accuracy floor (:func:`gram_floor`).
    safety : of the accuracy floor.

    Returns
    -------
    The :func:`rmtlens.estimators.ridge.ridge_path` dict of (L,) arrays (``resolved`` by the
    floor rule alone).
    """
    Ft = _as_matrix("features_train", features_train)
    Fs = _as_matrix("features_test", features_test)
    if Fs.shape[1] != Ft.shape[1]:
        raise ValueError(f"features_test must have {Ft.shape[1]} columns like features_train, got {Fs.shape[1]}")
    q = Ft.shape[1]
    K = Ft @ Ft.T / q
    d, U = np.linalg.eigh(K)
    floor = gram_floor(d, q, np.trace(K), rcond, safety)
    # E6 reports no resolution flags: the floor-sensitivity solves (SPEC §2) would be wasted
    return ridge_path(d, U, y_train, Fs @ Ft.T / q, y_test, lambdas, floor=floor, safety=safety, floor_tolerance=None)


def _check_sweep_args(n_pool: int, n_train: Sequence[int], ratios, seeds, ridge: float):
    sizes = np.atleast_1d(np.asarray(n_train))
    if sizes.size == 0 or np.any(sizes < 1) or np.any(sizes > n_pool) or np.any(sizes != np.round(sizes)):
        raise ValueError(f"n_train must hold integers in [1, {n_pool}] (the pool size), got {n_train}")
    r = np.atleast_1d(np.asarray(ratios, dtype=np.float64))
    if r.size == 0 or np.any(~np.isfinite(r)) or np.any(r <= 0):
        raise ValueError(f"ratios must be finite and positive, got {ratios}")
    s = list(seeds)
    if not s:
        raise ValueError("seeds must hold at least one seed")
    if not (np.isfinite(ridge) and ridge >= 0):
        raise ValueError(f"ridge must be finite and non-negative, got {ridge}")
    return sizes.astype(int), r, s


def _pool_targets(x_pool, y_pool, x_test, y_test, x_name: str):
    X = _as_matrix(x_name + "_pool", x_pool)
    Y = _as_targets("y_pool", y_pool)
    Xs = _as_matrix(x_name + "_test", x_test)
    Ys = _as_targets("y_test", y_test)
    if Y.shape[0] != X.shape[0]:
        raise ValueError(f"y_pool has {Y.shape[0]} rows, {x_name}_pool has {X.shape[0]}")
    if Xs.shape[1] != X.shape[1]:
        raise ValueError(f"{x_name}_test must have {X.shape[1]} columns like {x_name}_pool, got {Xs.shape[1]}")
    if Ys.shape != (Xs.shape[0], Y.shape[1]):
        raise ValueError(f"y_test must have shape {(Xs.shape[0], Y.shape[1])}, got {Ys.shape}")
    return X, Y, Xs, Ys


def _rows_to_arrays(rows: list[dict]) -> dict[str, np.ndarray]:
    return {key: np.array([row[key] for row in rows]) for key in rows[0]}


def random_features_sweep(
    x_pool: np.ndarray,
    y_pool: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    n_train: Sequence[int],
    ratios: Sequence[float],
    seeds: Sequence[int],
    ridge: float,
    activation: str = "relu",
    rcond: float | None = 1e-10,
    kernel_pool: np.ndarray | None = None,
    safety: float = DEFAULT_SAFETY,
) -> dict[str, np.ndarray]:
    """Random-features ridge test risk versus ``N_rf / n`` with its deterministic equivalent.

    For every seed the training set of size ``n`` is the first ``n`` entries of
    ``default_rng(seed).permutation(P)`` (nested in ``n``, SPEC §1) and the weights
    are the first ``N_rf`` rows of one Gaussian draw from ``default_rng([seed, 1])``
    (nested in ``N_rf``). The deterministic equivalent uses the closed-form
    expected kernel on the whole pool as the population.

    Parameters
    ----------
    x_pool : (P, d) pool inputs (embeddings or flattened pixels).
    y_pool : (P, C) or (P,) pool targets.
    x_test : (m, d) test inputs.
    y_test : (m, C) or (m,) test targets.
    n_train : sample sizes ``n`` (each at most ``P``).
    ratios : feature ratios ``N_rf / n``; ``N_rf = max(1, round(ratio · n))``.
    seeds : integer seeds, one row per (seed, n, ratio).
    ridge : absolute ridge ``λ ≥ 0`` (system ``Φ Φᵀ/N_rf + nλ I``).
    activation : one of ``ACTIVATIONS``.
    rcond : relative eigenvalue cutoff; None: each kernel's accuracy floor (:func:`gram_floor`).
    kernel_pool : (P, P) ``expected_kernel(x_pool, activation=activation)`` when the
        caller already has it (it costs P²d); computed here otherwise.
    safety : of the accuracy floors.

    Returns
    -------
    dict of equal-length arrays (one row per seed, n, ratio): ``seed``, ``n``,
    ``n_features``, ``ratio`` (realised ``N_rf/n``), ``lambda``, ``test_mse``,
    ``test_error``, ``train_mse``, ``gcv``, ``de_mse``, ``de_train_mse``, ``de_kappa``.
    """
    _check_activation(activation)
    X, Y, Xs, Ys = _pool_targets(x_pool, y_pool, x_test, y_test, "x")
    sizes, r, seed_list = _check_sweep_args(X.shape[0], n_train, ratios, seeds, ridge)
    if kernel_pool is None:
        kernel_pool = expected_kernel(X, activation=activation)
    elif np.shape(kernel_pool) != (X.shape[0], X.shape[0]):
        raise ValueError(f"kernel_pool must have shape {(X.shape[0], X.shape[0])}, got {np.shape(kernel_pool)}")
    mu, beta_sq = spectrum_from_kernel(kernel_pool, Y, rcond, safety, dot_length=X.shape[1])
    features_for = {int(n): sorted({max(1, int(round(q * n))) for q in r}) for n in sizes}
    theory = {
        (n, N): rf_deterministic_equivalent(mu, beta_sq, n, N, ridge) for n in features_for for N in features_for[n]
    }
    n_max = int(sizes.max())
    N_max = max(max(v) for v in features_for.values())
    rows = []
    for seed in seed_list:
        order = subsample_indices(X.shape[0], n_max, seed)
        W = np.random.default_rng([seed, 1]).standard_normal((N_max, X.shape[1]))
        phi_train = random_features(X[order], W, activation)
        phi_test = random_features(Xs, W, activation)
        for n in features_for:
            for N in features_for[n]:
                path = feature_ridge(phi_train[:n, :N], phi_test[:, :N], Y[order[:n]], Ys, [ridge], rcond, safety)
                de = theory[(n, N)]
                rows.append(
                    dict(
                        seed=seed, n=n, n_features=N, ratio=N / n, **{"lambda": ridge},
                        test_mse=path["test_risk"][0], test_error=path["test_error"][0],
                        train_mse=path["train_risk"][0], gcv=path["gcv"][0],
                        de_mse=de["test_risk"], de_train_mse=de["train_risk"], de_kappa=de["kappa"],
                    )
                )
    return _rows_to_arrays(rows)


def linear_ridge_sweep(
    features_pool: np.ndarray,
    y_pool: np.ndarray,
    features_test: np.ndarray,
    y_test: np.ndarray,
    ratios: Sequence[float],
    seeds: Sequence[int],
    ridge: float,
    rcond: float | None = 1e-10,
    safety: float = DEFAULT_SAFETY,
) -> dict[str, np.ndarray]:
    """Linear ridge on fixed features (embeddings) versus ``n / p``, with the SPEC §3 equivalent.

    The kernel is ``Φ Φᵀ / p`` (SPEC §1 ``features``); the deterministic equivalent
    uses the pool's feature spectrum (:func:`spectrum_from_features`) and
    ``N = ∞`` in :func:`rf_deterministic_equivalent`. Training sets are nested
    seeded subsamples of the pool as in :func:`random_features_sweep`.

    Parameters
    ----------
    features_pool : (P, p) pool features.
    y_pool : (P, C) or (P,) pool targets.
    features_test : (m, p) test features.
    y_test : (m, C) or (m,) test targets.
    ratios : sample ratios ``n / p``; ``n = max(1, round(ratio · p))`` must not exceed ``P``.
    seeds : integer seeds.
    ridge : absolute ridge ``λ ≥ 0``.
    rcond : relative eigenvalue cutoff; None: the accuracy floor (:func:`gram_floor`).
    safety : of the accuracy floors.

    Returns
    -------
    dict of equal-length arrays (one row per seed, ratio): ``seed``, ``n``, ``p``,
    ``ratio`` (realised ``n/p``), ``lambda``, ``test_mse``, ``test_error``,
    ``train_mse``, ``gcv``, ``de_mse``, ``de_train_mse``, ``de_kappa``.
    """
    F, Y, Fs, Ys = _pool_targets(features_pool, y_pool, features_test, y_test, "features")
    P, p = F.shape
    r = np.atleast_1d(np.asarray(ratios, dtype=np.float64))
    if r.size == 0 or np.any(~np.isfinite(r)) or np.any(r <= 0):
        raise ValueError(f"ratios must be finite and positive, got {ratios}")
    sizes = sorted({max(1, int(round(q * p))) for q in r})
    if sizes[-1] > P:
        raise ValueError(f"ratios ask for n = {sizes[-1]} samples, more than the pool's {P} (p = {p})")
    sizes, _, seed_list = _check_sweep_args(P, sizes, r, seeds, ridge)
    mu, beta_sq = spectrum_from_features(F, Y, rcond, safety)
    theory = {int(n): rf_deterministic_equivalent(mu, beta_sq, int(n), np.inf, ridge) for n in sizes}
    rows = []
    for seed in seed_list:
        order = subsample_indices(P, P, seed)
        for n in sizes:
            idx = order[:n]
            path = feature_ridge(F[idx], Fs, Y[idx], Ys, [ridge], rcond, safety)
            de = theory[int(n)]
            rows.append(
                dict(
                    seed=seed, n=int(n), p=p, ratio=n / p, **{"lambda": ridge},
                    test_mse=path["test_risk"][0], test_error=path["test_error"][0],
                    train_mse=path["train_risk"][0], gcv=path["gcv"][0],
                    de_mse=de["test_risk"], de_train_mse=de["train_risk"], de_kappa=de["kappa"],
                )
            )
    return _rows_to_arrays(rows)


def standardise_inputs(x: np.ndarray, n_pool: int) -> np.ndarray:
    """Flatten rows to float64, centre by the pool mean and scale so that the pool's
    mean squared norm equals the dimension d (then ``w·x/√d`` has unit variance on
    average). Shape (N, d); the first ``n_pool`` rows are the pool."""
    flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    if not 1 <= n_pool <= len(flat):
        raise ValueError(f"n_pool must lie in [1, {len(flat)}], got {n_pool}")
    centred = flat - flat[:n_pool].mean(axis=0)
    rms = np.sqrt(np.mean(np.sum(centred[:n_pool] ** 2, axis=1)) / flat.shape[1])
    if not rms > 0:
        raise ValueError("the pool's inputs are all equal: nothing to standardise")
    return centred / rms


def double_descent_study(
    inputs: np.ndarray,
    targets: np.ndarray,
    n_pool: int,
    embeddings: np.ndarray,
    *,
    n: int,
    ratios: Sequence[float],
    activations: Sequence[str],
    ridge_rel: float,
    seeds: Sequence[int],
    linear_ratios: Sequence[float],
    linear_label: str,
    rcond: float | None = 1e-10,
    safety: float = DEFAULT_SAFETY,
):
    """E6 in one table: random-features sweeps per activation and a linear-ridge sweep.

    Parameters
    ----------
    inputs : (N_pool + m, ...) random-features inputs (pixels or embeddings), pool first;
        standardised with :func:`standardise_inputs`.
    targets : (N_pool + m, C) targets.
    n_pool : pool rows (training candidates; the rest is the test set).
    embeddings : (N_pool + m, p) features of the linear-ridge sweep.
    n, ratios : training size and ``N_rf / n`` values of the random-features sweeps.
    activations, seeds : as for :func:`random_features_sweep`.
    ridge_rel : ridge relative to each model's kernel scale (the expected kernel's
        mean diagonal, or ``mean ||φ||² / p`` for the embeddings).
    linear_ratios : ``n / p`` values; those above ``n_pool / p`` are lowered to it.
    linear_label : name of the embedding, for the ``model`` column.
    rcond, safety : eigenvalue cutoff of every kernel: ``rcond · λ_max``, or with
        ``rcond`` None each kernel's accuracy floor (:func:`gram_floor`, SPEC §2).

    Returns
    -------
    DataFrame with the sweep rows plus ``model`` and ``sweep`` (the swept ratio's name).
    """
    import pandas as pd

    N = n_pool
    x = standardise_inputs(inputs, N)
    Y = np.asarray(targets, dtype=np.float64)
    parts = []
    for activation in activations:
        kernel_pool = expected_kernel(x[:N], activation=activation)
        scale = float(np.mean(np.diag(kernel_pool)))
        rows = random_features_sweep(x[:N], Y[:N], x[N:], Y[N:], [n], ratios, seeds, ridge_rel * scale,
                                     activation, rcond, kernel_pool=kernel_pool, safety=safety)
        parts.append(pd.DataFrame(rows).assign(model=f"random features ({activation})", sweep="N_rf / n"))
    features = np.asarray(embeddings, dtype=np.float64)
    p = features.shape[1]
    lin_ratios = np.unique(np.minimum(np.asarray(linear_ratios, dtype=np.float64), N / p))
    lin_scale = float(np.mean(np.sum(features[:N] ** 2, axis=1)) / p)
    rows = linear_ridge_sweep(features[:N], Y[:N], features[N:], Y[N:], lin_ratios, seeds, ridge_rel * lin_scale, rcond,
                              safety)
    parts.append(pd.DataFrame(rows).rename(columns={"p": "n_features"})
                 .assign(model=f"linear ridge ({linear_label})", sweep="n / p"))
    return pd.concat(parts, ignore_index=True)
