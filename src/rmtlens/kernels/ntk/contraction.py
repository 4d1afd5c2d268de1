"""Step 4, contraction: kernel blocks ``Σ_params J_r J_cᵀ`` from the stored pieces.

The interface: :func:`contract` adds the kernel block of two sets of pieces (rows,
columns) made with one plan; :func:`blocks` splits a range into sample blocks.
"""

from __future__ import annotations

import math
import os
import time
from contextlib import contextmanager, nullcontext
from typing import Any, Callable

import numpy as np
import torch

from rmtlens.kernels.ntk.pieces import Pieces, Workspace, form, gram_pair, gram_piece, patches, patches_bytes
from rmtlens.kernels.ntk.plan import Plan


class _Operand:
    """One contraction term: how to get a block's piece and how to pair two pieces.

    ``whole`` (optional) contracts the term over all samples at once,
    ``whole(pr, pc, symmetric, K, budget, ws) -> bool``; it returns False, having
    done nothing, when its transients do not fit ``budget`` (then the sample-block
    path runs).
    """

    def __init__(self, piece: Callable, pair: Callable, piece_bytes: float, temp_bytes: float, pair_bytes, flops,
                 whole: Callable | None = None, label: str = ""):
        self.label = label  # the site's weight name, or "formed"
        self.whole = whole
        self.piece = piece  # (pieces, start, stop, workspace, role) -> block piece
        self.pair = pair  # (piece_r, piece_c, workspace) -> (r, c) block in compute dtype
        self.piece_bytes = piece_bytes  # per sample, kept while a piece is alive
        self.temp_bytes = temp_bytes  # per sample, only while a piece is being made
        self.pair_bytes = pair_bytes  # (r, c) -> transient bytes of one pair
        self.flops = flops  # (r, c) -> flops of one pair


# --------------------------------------------------------------------------------------
# products J Jᵀ and Aᵀ A: which BLAS, and symmetric rank-k halving

_BLAS_CHOICE: dict[str, str] = {}


def _numpy_blas_core() -> str | None:
    """Kernel family of numpy's OpenBLAS (threadpoolctl), or None when unknown."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    for info in threadpool_info():
        if info.get("internal_api") == "openblas" and "numpy" in str(info.get("filepath", "")).lower():
            return str(info.get("architecture") or "").lower() or None
    return None


def _numpy_blas_verified(dtype: torch.dtype) -> bool:
    """numpy's product of a fixed random matrix with its transpose agrees with float64.

    Guards against BLAS builds that compute wrong results on this CPU (the reason
    some machines pin ``OPENBLAS_CORETYPE``).
    """
    g = torch.Generator().manual_seed(0)
    a = torch.randn(96, 700, generator=g, dtype=torch.float64)
    ref = a @ a.T
    b = a.to(dtype).numpy()
    c = a[:40].to(dtype).numpy()
    got_syrk = torch.from_numpy(b @ b.T).double()
    got_gemm = torch.from_numpy(c @ b.T).double()
    tol = 1e-4 if dtype == torch.float32 else 1e-11
    scale = float(ref.abs().max())
    return bool(
        float((got_syrk - ref).abs().max()) <= tol * scale
        and float((got_gemm - ref[:40]).abs().max()) <= tol * scale
    )


def _blas(device: torch.device, dtype: torch.dtype) -> str:
    """``"numpy"`` or ``"torch"``: which library runs the large CPU products.

    ``RMTLENS_ENTK_BLAS`` = ``torch`` | ``numpy`` | ``auto`` (default). ``auto``
    takes numpy whenever its BLAS is an OpenBLAS with a known kernel that passes a
    numerical check: its ``a @ a.T`` is a symmetric rank-k update (half the flops of
    the product, where PyTorch's halving path does 5/8 of them at N = 1024), and on
    CPUs where PyTorch's MKL takes its AVX2 path an AVX-512 OpenBLAS is about twice as
    fast besides. The choice depends on the environment only, never on timings, so the
    same environment gives bit-identical kernels. Results agree to rounding either way.
    """
    if device.type != "cpu":
        return "torch"
    key = f"{dtype}"
    if key not in _BLAS_CHOICE:
        want = os.environ.get("RMTLENS_ENTK_BLAS", "auto").strip().lower()
        if want not in ("auto", "torch", "numpy"):
            raise ValueError(f"RMTLENS_ENTK_BLAS must be auto, torch or numpy, got {want!r}")
        choice = "torch"
        if want == "numpy" or (want == "auto" and _numpy_blas_core() is not None):
            if _numpy_blas_verified(dtype):
                choice = "numpy"
            elif want == "numpy":
                raise RuntimeError("RMTLENS_ENTK_BLAS=numpy: numpy's BLAS fails the numerical check on this machine")
        _BLAS_CHOICE[key] = choice
    return _BLAS_CHOICE[key]


def _blas_threads(choice: str):
    """numpy's BLAS limited to PyTorch's thread count while the products run."""
    if choice != "numpy":
        return nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return nullcontext()
    return threadpool_limits(limits=torch.get_num_threads(), user_api="blas")


@contextmanager
def _torch_single_thread(choice: str):
    """PyTorch on one thread while numpy's BLAS runs the products: between its short
    operations (piece formation, float64 accumulation) PyTorch's OpenMP threads would
    spin and take cores from numpy's BLAS threads. Measured on resnet18, N = 1,024, 2
    threads: contraction 8.6-9.1 s -> 7.5-8.1 s, the kernel bit-identical (bench/README)."""
    if choice != "numpy" or torch.get_num_threads() == 1:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


_LEAF = 256  # diagonal blocks of the PyTorch symmetric product (MKL's GEMMs lose speed below)


def _self_product(J: torch.Tensor, out: torch.Tensor, blas: str, transposed: bool = False, align: int = 1) -> None:
    """``out = J Jᵀ`` (or ``Jᵀ J``), on and above the diagonal at least.

    numpy's matmul runs a symmetric rank-k update (syrk, half the flops) for a
    matrix times its own transpose and fills both triangles. The PyTorch path halves
    the rows recursively: two diagonal halves, recursively, and the upper off-diagonal
    block by one GEMM, down to diagonal blocks of about ``_LEAF`` rows computed whole
    (5/8 of the full product's flops at N = 1024); the strict lower triangle outside
    those blocks is left untouched. Splits fall on multiples of ``align``, so aligned
    diagonal blocks are complete.
    """
    if blas == "numpy":
        a = J.numpy()
        np.matmul(a.T, a, out=out.numpy()) if transposed else np.matmul(a, a.T, out=out.numpy())
        return
    M = J.T if transposed else J

    def half(i0: int, n: int) -> None:
        h = align * math.ceil(n / 2 / align)
        if n <= _LEAF or h >= n:
            torch.mm(M[i0 : i0 + n], M[i0 : i0 + n].T, out=out[i0 : i0 + n, i0 : i0 + n])
            return
        half(i0, h)
        half(i0 + h, n - h)
        torch.mm(M[i0 : i0 + h], M[i0 + h : i0 + n].T, out=out[i0 : i0 + h, i0 + h : i0 + n])

    half(0, M.shape[0])


def _cross_product(Jr: torch.Tensor, Jc: torch.Tensor, out: torch.Tensor, blas: str) -> None:
    """``out = Jr Jcᵀ``."""
    if blas == "numpy":
        np.matmul(Jr.numpy(), Jc.numpy().T, out=out.numpy())
    else:
        torch.mm(Jr, Jc.T, out=out)


# --------------------------------------------------------------------------------------
# whole-pool contraction: every sample at once, parameters in chunks


def _explicit_whole(fill, width: int, unit: int, pr, pc, symmetric: bool, K, budget: float, ws):
    """``K += J_r J_cᵀ`` of an explicit term, formed for all samples a column chunk at a time.

    ``fill(pieces, s0, s1, c0, c1, out)`` writes columns ``c0:c1`` of samples
    ``s0:s1`` of the per-sample gradient into ``out``; chunks are multiples of
    ``unit`` columns. Each sample's gradient is formed once, and the symmetric case
    runs a rank-k update on the whole pool, so no sample block is paired twice.
    Returns False (nothing done) when not even one unit fits ``budget``.
    """
    n_r, n_c = pr.n, pc.n
    ref = pr.formed
    itemsize = ref.element_size()
    out_bytes = n_r * n_c * itemsize
    rows_held = n_r if symmetric else n_r + n_c
    avail = budget - out_bytes - 32 * 2**20  # patches of the formation and slack
    units = int(min(avail / 2, 256 * 2**20) // (rows_held * unit * itemsize))
    if units < 1:
        return False
    w = min(width, units * unit)
    shared = 0  # several chunks: what they can share (conv patches), if it fits
    if w < width and hasattr(fill, "shared_bytes"):
        shared = fill.shared_bytes(pr.n, itemsize) + (0 if symmetric else fill.shared_bytes(pc.n, itemsize))
        shared = shared if shared <= avail - rows_held * w * itemsize else 0
        fill.share = shared > 0
    ws.reserve(out_bytes + rows_held * w * itemsize + 32 * 2**20 + shared, budget)
    blas = _blas(ref.device, ref.dtype)
    prod = ws.get("whole_out", (n_r, n_c), ref.dtype, ref.device)
    if symmetric and blas != "numpy":
        prod.zero_()  # the strict lower triangle is never written: keep it zero
    for c0 in range(0, width, w):
        c1 = min(width, c0 + w)
        Jr = fill(pr, "whole_r", c0, c1, ws)
        if symmetric:
            _self_product(Jr, prod, blas)
        else:
            Jc = fill(pc, "whole_c", c0, c1, ws)
            _cross_product(Jr, Jc, prod, blas)
        K += prod
    return True


def _structured_whole(site, i, pr, pc, symmetric: bool, K, budget: float, ws):
    """``K += Σ_{s,t} (A_s A'_tᵀ) ∘ (G_s G'_tᵀ)`` of a structured site over all samples at once.

    One ``n_r x n_c`` product of patches and one of output gradients per position pair
    ``(s, t)``; symmetric: the pairs ``s ≤ t`` only, a rank-k update for ``s = t`` and
    ``M + Mᵀ`` for ``s < t`` (exact flops of the upper triangle, every product large).
    """
    n_r, n_c, S, G = pr.n, pc.n, site.positions, site.groups
    ref = pr.formed
    itemsize = ref.element_size()
    pieces_bytes = (n_r + (0 if symmetric else n_c)) * S * G * (site.d_a + site.d_g) * itemsize
    need = 3 * n_r * n_c * itemsize + pieces_bytes
    if G != 1 or need > budget:
        return False
    ws.reserve(need, budget)
    blas = _blas(ref.device, ref.dtype)
    Ar, Gr, _, _ = gram_piece(site, pr.raw[i], ws, "whole_r")
    Ac, Gc = (Ar, Gr) if symmetric else gram_piece(site, pc.raw[i], ws, "whole_c")[:2]
    ga = ws.get("whole_ga", (n_r, n_c), ref.dtype, ref.device)
    gg = ws.get("whole_gg", (n_r, n_c), ref.dtype, ref.device)
    acc = ws.get("whole_acc", (n_r, n_c), ref.dtype, ref.device)
    acc.zero_()
    for s in range(S):
        for t in range(s if symmetric else 0, S):
            if symmetric and t == s:  # upper triangle (at least) of a rank-k update
                _self_product(Ar[0, s], ga, blas)
                _self_product(Gr[0, s], gg, blas)
                acc.addcmul_(ga, gg)
                continue
            _cross_product(Ar[0, s], Ac[0, t], ga, blas)
            _cross_product(Gr[0, s], Gc[0, t], gg, blas)
            ga.mul_(gg)
            acc.add_(ga)
            if symmetric:  # the pair (t, s) is this one's transpose
                acc.add_(ga.T)
    K += acc  # symmetric: only the upper triangle is kept (mirrored at the end)
    return True


def _fill_formed(pieces, key, c0, c1, ws):
    return pieces.formed[:, c0:c1]


class _FillExplicit:
    """Columns ``c0:c1`` of an explicit site's gradient for all samples, formed in sample
    blocks; with ``share`` set, a conv site's patches of all samples are computed once
    and kept for every column chunk (``shared_bytes``: their size)."""

    def __init__(self, site, i: int):
        self.site, self.i = site, i  # site: also read when profiling
        self.share = False
        self.patched: dict = {}

    def shared_bytes(self, n: int, itemsize: int) -> int:
        return patches_bytes(self.site, n, itemsize)

    def __call__(self, pieces, key, c0, c1, ws):
        site = self.site
        n = pieces.n
        d_a = site.d_a
        out = ws.get(key, (n, c1 - c0), pieces.formed.dtype, pieces.formed.device)
        raw = pieces.raw[self.i]
        rows = None if site.groups != 1 else (c0 // d_a, c1 // d_a)
        if self.share and site.kind == "conv":
            if key not in self.patched:
                self.patched[key] = patches(site, raw, ws, key + "_patches")
            form(site, raw, out, ws, rows, patched=self.patched[key])
            return out
        S = site.positions
        step = max(1, min(n, int(32 * 2**20 // max(1, S * d_a * site.groups * out.element_size()))))
        for s0 in range(0, n, step):
            s1 = min(n, s0 + step)
            sub = [[t[s0:s1] for t in call] for call in raw]
            form(site, sub, out[s0:s1], ws, rows)
        return out


def _operands(plan: Plan, itemsize: int) -> list[_Operand]:
    """The contraction terms: all formed gradients together, then each raw site."""
    ops = []
    if plan.n_formed:
        P = plan.n_formed
        ops.append(
            _Operand(
                piece=lambda pc, a, b, ws, role: pc.formed[a:b],
                pair=lambda r, c, ws: r @ c.T,
                piece_bytes=0.0,  # a view of the resident buffer
                temp_bytes=0.0,
                pair_bytes=lambda r, c: r * c * (itemsize + 8),
                flops=lambda r, c, P=P: 2.0 * r * c * P,
                whole=lambda pr, pc, sym, K, budget, ws, P=P: _explicit_whole(
                    _fill_formed, P, 1, pr, pc, sym, K, budget, ws
                ),
                label="formed",
            )
        )

    def explicit_piece(pc, a, b, ws, role, i, site):
        raw = [[t[a:b] for t in call] for call in pc.raw[i]]
        ref = raw[0][0]
        out = ws.get(role, (b - a, site.n_params), ref.dtype, ref.device)
        return form(site, raw, out, ws)

    def gram_block_piece(pc, a, b, ws, role, i, site):
        return gram_piece(site, [[t[a:b] for t in call] for call in pc.raw[i]], ws, role)

    for i, site in enumerate(plan.sites):
        if site.store != "raw":
            continue
        S, G = site.positions, site.groups
        patches = S * G * site.d_a * itemsize
        if site.method == "explicit":
            ops.append(
                _Operand(
                    piece=lambda pc, a, b, ws, role, i=i, s=site: explicit_piece(pc, a, b, ws, role, i, s),
                    pair=lambda r, c, ws: r @ c.T,
                    piece_bytes=site.n_params * itemsize,
                    temp_bytes=patches,
                    pair_bytes=lambda r, c: r * c * (itemsize + 8),
                    flops=lambda r, c, s=site: r * c * s.explicit_pair_flops,
                    whole=lambda pr, pc, sym, K, budget, ws, i=i, s=site: _explicit_whole(
                        _FillExplicit(s, i), s.n_params, s.d_a if s.groups == 1 else s.n_params,
                        pr, pc, sym, K, budget, ws,
                    ),
                    label=site.weight,
                )
            )
        else:
            ops.append(
                _Operand(
                    piece=lambda pc, a, b, ws, role, i=i, s=site: gram_block_piece(pc, a, b, ws, role, i, s),
                    pair=gram_pair,
                    piece_bytes=S * G * (site.d_a + site.d_g) * itemsize,
                    temp_bytes=0.0,
                    pair_bytes=lambda r, c, G=G: (2 * G + 1) * r * c * itemsize + r * c * 8,
                    flops=lambda r, c, s=site: r * c * s.gram_flops,
                    whole=lambda pr, pc, sym, K, budget, ws, i=i, s=site: _structured_whole(
                        s, i, pr, pc, sym, K, budget, ws
                    ),
                    label=site.weight,
                )
            )
    return ops


def _block_size(op: _Operand, n_rows: int, n_cols: int, budget: float, target: int) -> tuple[int, bool]:
    """Sample block size and whether all column pieces can stay cached."""
    b = max(1, min(target, max(n_rows, n_cols)))
    per_sample = op.piece_bytes + op.temp_bytes
    while b > 1 and 2 * b * per_sample + op.pair_bytes(b, b) > budget:
        b = (b + 1) // 2
    cache = (n_cols + b) * op.piece_bytes + b * op.temp_bytes + op.pair_bytes(b, b) <= budget
    return b, cache


def blocks(n: int, b: int) -> list[tuple[int, int]]:
    return [(s, min(n, s + b)) for s in range(0, n, b)]


def _contract_blocks(op: _Operand, b: int, cache_cols: bool, pr: Pieces, pc: Pieces, symmetric: bool, K,
                     progress) -> None:
    """One term over sample blocks (pieces recomputed per block pair unless cached)."""
    n_r, n_c = pr.n, pc.n
    rows, cols = blocks(n_r, b), blocks(n_c, b)
    cache: dict[int, Any] = {}
    ws = Workspace()  # per term: its buffers are sized for it
    for bi, (r0, r1) in enumerate(rows):
        p_row = cache.get(bi) if symmetric else None
        if p_row is None:
            p_row = op.piece(pr, r0, r1, ws, None if symmetric and cache_cols else "row")
        for bj, (c0, c1) in enumerate(cols):
            if symmetric and bj < bi:
                continue
            if symmetric and bj == bi:
                p_col = p_row
            elif bj in cache:
                p_col = cache[bj]
            else:
                p_col = op.piece(pc, c0, c1, ws, None if cache_cols else "col")
                if cache_cols:
                    cache[bj] = p_col
            K[r0:r1, c0:c1] += op.pair(p_row, p_col, ws)
            if progress is not None:
                progress.update(op.flops(r1 - r0, c1 - c0))
        if symmetric:
            cache.pop(bi, None)


def contract(
    plan: Plan, pr: Pieces, pc: Pieces, symmetric: bool, K: torch.Tensor,
    budget: float, target: int, progress, terms: list | None = None,
) -> None:
    """``K += Σ_terms pair(piece(rows), piece(cols))`` over the terms of ``plan``.

    ``pr``, ``pc``: pieces of the row and column samples (the same object when
    ``symmetric``); ``K``: ``(pr.n, pc.n)`` float64, accumulated in place; ``budget``:
    bytes for transients; ``target``: sample block size aimed at; ``progress``: None
    or an object with ``update(flops)``; ``terms``: None, or a list that receives
    ``(label, seconds)`` per term (label: the site's weight name, ``formed`` for the
    formed gradients, ``mirror`` for the symmetric fill).

    Terms whose whole-pool transients fit ``budget`` are contracted over all samples
    at once (``_Operand.whole``); the others over sample blocks. With ``symmetric``
    (``pr is pc``) only entries on and above the diagonal are computed; the lower
    triangle is mirrored at the end.
    """
    n_r, n_c = pr.n, pc.n
    ops = _operands(plan, plan.itemsize)
    sizes = [_block_size(op, n_r, n_c, budget, target) for op in ops]
    b_sym = min((b for b, _ in sizes), default=1)  # one block grid for the mirror
    blas = _blas(K.device, pr.formed.dtype)
    clock = _Clock(K.device, terms)
    with _blas_threads(blas), _torch_single_thread(blas):
        # whole-pool terms first (each sample's pieces formed once, no block pairs)
        ws_whole = Workspace()
        rest = []
        for op, size in zip(ops, sizes):
            if op.whole is not None and op.whole(pr, pc, symmetric, K, budget, ws_whole):
                clock.lap(op.label)
                if progress is not None:
                    progress.update(op.flops(n_r, n_c) * (0.5 if symmetric else 1.0))
            else:
                rest.append((op, size))
        del ws_whole
        for op, (b, cache_cols) in rest:
            _contract_blocks(op, b_sym if symmetric else b, cache_cols, pr, pc, symmetric, K, progress)
            clock.lap(op.label)
    if symmetric:  # mirror the upper triangle: the result is exactly symmetric
        grid = blocks(n_r, b_sym)
        for bi, (r0, r1) in enumerate(grid):
            diag = K[r0:r1, r0:r1]
            diag.copy_(torch.triu(diag) + torch.triu(diag, 1).T)
            for c0, c1 in grid[bi + 1 :]:
                K[c0:c1, r0:r1] = K[r0:r1, c0:c1].T
        clock.lap("mirror")


class _Clock:
    """Seconds since the last lap, appended to ``terms`` (nothing when it is None)."""

    def __init__(self, device: torch.device, terms: list | None):
        self.device, self.terms = device, terms
        self.last = time.perf_counter() if terms is not None else 0.0

    def lap(self, label: str) -> None:
        if self.terms is None:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        self.terms.append((label, now - self.last))
        self.last = now
