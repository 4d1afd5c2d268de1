"""Step 4, contraction: kernel blocks ``Σ_params J_r J_cᵀ`` from the stored pieces.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from rmtlens.kernels.ntk.pieces import (
    _form,
    _gram_pair,
    _gram_piece,
    _Pieces,
    _Workspace,
)
from rmtlens.kernels.ntk.plan import _Plan


class _Operand:
    """One contraction term: how to get a block's piece and how to pair two pieces."""

    def __init__(self, piece: Callable, pair: Callable, piece_bytes: float, temp_bytes: float, pair_bytes, flops):
        self.piece = piece  # (pieces, start, stop, workspace, role) -> block piece
        self.pair = pair  # (piece_r, piece_c, workspace) -> (r, c) block in compute dtype
        self.piece_bytes = piece_bytes  # per sample, kept while a piece is alive
        self.temp_bytes = temp_bytes  # per sample, only while a piece is being made
        self.pair_bytes = pair_bytes  # (r, c) -> transient bytes of one pair
        self.flops = flops  # (r, c) -> flops of one pair


def _operands(plan: _Plan, itemsize: int) -> list[_Operand]:
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
            )
        )

    def explicit_piece(pc, a, b, ws, role, i, site):
        raw = [[t[a:b] for t in call] for call in pc.raw[i]]
        ref = raw[0][0]
        out = ws.get(role, (b - a, site.n_params), ref.dtype, ref.device)
        return _form(site, raw, out, ws)

    def gram_piece(pc, a, b, ws, role, i, site):
        return _gram_piece(site, [[t[a:b] for t in call] for call in pc.raw[i]], ws, role)

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
                    flops=lambda r, c, s=site: r * c * s.pair_flops("explicit"),
                )
            )
        else:
            ops.append(
                _Operand(
                    piece=lambda pc, a, b, ws, role, i=i, s=site: gram_piece(pc, a, b, ws, role, i, s),
                    pair=_gram_pair,
                    piece_bytes=S * G * (site.d_a + site.d_g) * itemsize,
                    temp_bytes=0.0,
                    pair_bytes=lambda r, c, S=S, G=G: 2 * G * r * S * c * S * itemsize + r * c * 8,
                    flops=lambda r, c, s=site: r * c * s.gram_flops(),
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


def _blocks(n: int, b: int) -> list[tuple[int, int]]:
    return [(s, min(n, s + b)) for s in range(0, n, b)]


def _contract(
    ops: list[_Operand], pr: _Pieces, pc: _Pieces, symmetric: bool, K: torch.Tensor,
    budget: float, target: int, progress,
) -> None:
    """``K += Σ_terms pair(piece(rows), piece(cols))`` over sample blocks.

    With ``symmetric`` (``pr is pc``) only blocks on and above the diagonal are
    computed; the lower triangle is mirrored at the end.
    """
    n_r, n_c = pr.n, pc.n
    sizes = [_block_size(op, n_r, n_c, budget, target) for op in ops]
    b_sym = min((b for b, _ in sizes), default=1)  # one block grid for the mirror
    for op, (b, cache_cols) in zip(ops, sizes):
        if symmetric:
            b = b_sym
        rows, cols = _blocks(n_r, b), _blocks(n_c, b)
        cache: dict[int, Any] = {}
        ws = _Workspace()  # per term: its buffers are sized for it
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
    if symmetric:  # mirror the upper triangle: the result is exactly symmetric
        blocks = _blocks(n_r, b_sym)
        for bi, (r0, r1) in enumerate(blocks):
            diag = K[r0:r1, r0:r1]
            diag.copy_(torch.triu(diag) + torch.triu(diag, 1).T)
            for c0, c1 in blocks[bi + 1 :]:
                K[c0:c1, r0:r1] = K[r0:r1, c0:c1].T
